"""``otel-tokenfix demo``: the problem and the fix on a realistic agent, offline, in seconds.

- ``script``: the question, corpus and scripted assistant turns (with their non-canonical splits);
- ``edits`` / ``tools``: what the agent does to model output, and its retriever (pure functions);
- ``agent``: the traced RAG agent (official ``openai`` client, ``record_edit`` / ``record_reward``);
- ``checks``: exactness, provenance and the re-tokenization comparison per triplet (pure);
- ``report``: the rich terminal report; ``runner``: wires server, tracing, agent, checks and report;
- ``vllm_server``: the vLLM-like OpenAI-compatible server (also used by the capture tests).
"""
