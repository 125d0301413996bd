"""Chat-turn token ids built with the real Qwen tokenizer (what a vLLM server would put in a prompt)."""

from __future__ import annotations

IM_START, IM_END = 151644, 151645


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def user_turn(tok, text: str) -> list[int]:
    return [IM_START, *enc(tok, "user\n" + text), IM_END, *enc(tok, "\n"), IM_START, *enc(tok, "assistant\n")]


def after_assistant(tok, observation: str) -> list[int]:
    """Tokens the template puts after an assistant message: end, newline, next user turn."""
    return [*enc(tok, "\n"), *user_turn(tok, observation)]


def server_prompt(tok, prompt: list[int], assistant_text: str, observation: str) -> list[int]:
    """The next prompt as the server renders it: history + re-tokenized assistant text + observation."""
    return [*prompt, *enc(tok, assistant_text), IM_END, *after_assistant(tok, observation)]
