"""What the demo's model "says": the question, a tiny corpus, and the scripted assistant turns.

Why scripted: no model weights are available offline, but everything around the text is real (tokenizer,
chat template, server, client, tracing). The scripted turns contain exactly the things real agents fix
before using model output: a ``<think>`` block, a hedge, sentences in the wrong order, broken tool JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL = "Qwen/Qwen2.5-7B-Instruct"

QUESTION = "When was the Eiffel Tower completed, and how tall is it today?"

#: Gold facts the reward checks in the final answer.
GOLD_FACTS = ("1889", "330")

#: The search corpus (id, text).
CORPUS: tuple[tuple[str, str], ...] = (
    ("eiffel-history", "The Eiffel Tower was completed on 31 March 1889 as the entrance arch to the World's Fair."),
    ("eiffel-height", "After a new antenna was added in 2022, the Eiffel Tower is 330 metres tall."),
    ("louvre", "The Louvre is the world's most-visited museum and holds the Mona Lisa."),
    ("statue-liberty", "The Statue of Liberty was dedicated in 1886 and stands 93 metres tall with its pedestal."),
)

SYSTEM_PROMPT = (
    "You are a research assistant. Think inside <think></think>, then either call the search tool as "
    '<tool_call>{"name": "search", "arguments": {"query": "..."}}</tool_call> or answer in two sentences.'
)


@dataclass(frozen=True)
class Turn:
    """One scripted assistant response and the words (each one token) the server samples as two tokens."""

    text: str
    split_words: tuple[str, ...] = ()


#: Turn 1: think, then a tool call whose JSON has a trailing comma (a classic small-model slip).
TURN_SEARCH = Turn(
    "<think>\nThe user asks for a date and a height. I should not trust my memory for the height, "
    "since antennas changed it. Let me search.\n</think>\n"
    '<tool_call>\n{"name": "search", "arguments": {"query": "Eiffel Tower completed height",}}\n</tool_call>'
)

#: Turn 2: think, then an answer with a hedge and the two facts in the opposite order of the question.
#: Some words are sampled as non-canonical splits, as real models do (e.g. ``[' Marc', 'h']`` for ``' March'``).
TURN_ANSWER = Turn(
    "<think>\nThe first result gives the completion date, the second the current height. "
    "Both answer the question.\n</think>\n"
    "The tower is, as far as I can tell, 330 metres tall today. "
    "The Eiffel Tower was completed on 31 March 1889 for the World's Fair.",
    split_words=(" March", " metres", " completed", " Fair"),
)

TURNS: tuple[Turn, ...] = (TURN_SEARCH, TURN_ANSWER)

#: The hedge the agent deletes from the answer.
HEDGE = ", as far as I can tell,"
