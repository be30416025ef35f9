"""What the fake model answers, independent of any wire format.

Dialects turn a request body into an `Ask` and a `Reply` into bytes; everything
a test may want to predict (text, finish, token counts) is decided here, once.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

from .directives import DirectiveError, Directives, strip

DEFAULT_WORDS = 12
PROMPT_ECHO_WORDS = 5
TOKENS_PER_MESSAGE = 3
TOKENS_PER_TOOL_CALL = 5

# Replies built from these are obviously fake in a transcript yet still vary.
_VOCABULARY = (
    "amber basil cedar delta ember fjord garnet harbor indigo juniper kestrel lagoon "
    "meadow nectar onyx pepper quartz raven saffron tundra umber velvet willow xenon "
    "yarrow zephyr anchor beacon canyon dune echo falcon glacier horizon island jade "
    "kiln lantern mosaic north orbit prairie quill ridge summit timber upland valley"
).split()


@dataclass
class Ask:
    """The parts of a request that decide the reply."""

    model: str
    stream: bool = False
    texts: list[str] = field(default_factory=list)  # every text in the request, for token counts
    messages: int = 0  # system prompt included
    last_user_text: str = ""  # raw, directives still inside
    ends_with_tool_result: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    tool_name: str | None = None  # the first tool offered
    tool_names: list[str] = field(default_factory=list)  # every tool offered, by name
    include_usage: bool = False  # OpenAI chat streams only
    body: dict[str, Any] = field(default_factory=dict)
    held_tokens: int = 0  # context the provider keeps for this request (Responses previous_response_id)

    def __post_init__(self):
        # Bodies are untrusted JSON: a string max_tokens must not crash the reply.
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            self.max_tokens = None
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            self.temperature = None
        if not isinstance(self.model, str):
            self.model = str(self.model)

    @property
    def input_tokens(self) -> int:
        """About what a real provider reports: ~4 characters a token, tool definitions included.

        Counting words instead undercounted by 2-3x on tool-using requests, so agentprobe's own
        (tiktoken) count flagged every demo call as a usage mismatch.
        """
        tools = self.body.get("tools") if isinstance(self.body, dict) else None
        schema_chars = len(json.dumps(tools, separators=(",", ":"))) if tools else 0
        chars = sum(len(text) for text in self.texts) + schema_chars
        return (chars + 3) // 4 + TOKENS_PER_MESSAGE * self.messages + self.held_tokens


@dataclass
class ToolCall:
    index: int  # 1-based, so ids read call_1, toolu_1, ...
    name: str
    given_args: dict | None = None  # scripted with tool_args_b64

    @property
    def args(self) -> dict:
        return self.given_args if self.given_args is not None else {"i": self.index}

    @property
    def arguments(self) -> str:
        return json.dumps(self.args)


@dataclass
class Reply:
    ask: Ask
    words: list[str]
    tool_calls: list[ToolCall]
    finish: str  # stop | length | tool_calls; dialects spell it their way
    usage: bool = True
    created: int = field(default_factory=lambda: int(time.time()))
    delta_chars: int | None = None

    @property
    def model(self) -> str:
        return self.ask.model

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def deltas(self) -> list[str]:
        """Stream pieces, one per word (or per delta_chars characters), that concatenate to `text`."""
        if self.delta_chars:
            return fragments(self.text, self.delta_chars) if self.words else []
        return [word if i == 0 else " " + word for i, word in enumerate(self.words)]

    @property
    def input_tokens(self) -> int:
        return self.ask.input_tokens

    @property
    def output_tokens(self) -> int:
        return len(self.words) + TOKENS_PER_TOOL_CALL * len(self.tool_calls)


def texts_of(content: Any) -> list[str]:
    """Every text inside a message content, whatever the dialect nests it in."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [text for part in content for text in texts_of(part)]
    if isinstance(content, dict):
        found = []
        for key in ("text", "content", "output", "input_text"):
            value = content.get(key)
            if isinstance(value, (str, list)):
                found.extend(texts_of(value))
        return found
    return []


def _varies(vary: bool, temperature: float | None) -> bool:
    return vary and (temperature is None or temperature > 0)


def compose(ask: Ask, directives: Directives, vary: bool = False, words: int | None = None) -> Reply:
    """The reply for `ask`; `words` overrides the length (used to hit body_kb)."""
    wanted = words if words is not None else directives.words if directives.words is not None else DEFAULT_WORDS
    # Without this guard an agent looping on tool results would be asked for
    # tools forever, because the directive stays in its first user message.
    if directives.tool_calls and ask.tool_name and not ask.ends_with_tool_result:
        names = directives.tool_names or [ask.tool_name]
        calls = [ToolCall(k, names[(k - 1) % len(names)], directives.tool_args(k))
                 for k in range(1, directives.tool_calls + 1)]
        return Reply(ask, [], calls, "tool_calls", usage=not directives.no_usage)

    if directives.reply is not None:
        chosen = directives.reply.split()
        if words is not None:
            chosen += [f"word{i}" for i in range(len(chosen) + 1, wanted + 1)]
    else:
        prefix = ["Fake", "reply", "to:"] + strip(ask.last_user_text).split()[:PROMPT_ECHO_WORDS]
        chosen = (prefix + [f"word{i}" for i in range(len(prefix) + 1, wanted + 1)])[:wanted]
        if _varies(vary, ask.temperature) and chosen:
            rng = random.Random(secrets.randbits(64))
            first_free = min(len(prefix), len(chosen) - 1)
            chosen[first_free:] = [rng.choice(_VOCABULARY) for _ in chosen[first_free:]]

    finish = "stop"
    if ask.max_tokens is not None and len(chosen) > ask.max_tokens:
        chosen = chosen[: ask.max_tokens]
        finish = "length"
    return Reply(ask, chosen, [], finish, usage=not directives.no_usage, delta_chars=directives.delta_chars)


def check(ask: Ask, directives: Directives) -> None:
    """Directives that contradict the request: a tool name it does not offer."""
    unknown = [name for name in directives.tool_names or () if name not in ask.tool_names]
    if unknown:
        raise DirectiveError(f"fake directive tool_names asks for {', '.join(unknown)}, which the request"
                             f" does not offer (tools: {', '.join(ask.tool_names) or 'none'})")


def random_id(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def fragments(text: str, size: int = 4) -> list[str]:
    """Tool-call arguments split the way providers stream them: mid-token."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
