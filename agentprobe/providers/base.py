"""What every dialect parser produces: normalized request and response facts.

The recorder never looks at a provider's raw JSON itself; it asks the dialect for
these two records, so adding a dialect never touches the recorder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

PROVIDERS = ("openai", "anthropic", "gemini", "openai_compatible", "unknown")
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "error")


class ParseError(ValueError):
    """A body the dialect cannot read. The only exception a parser may raise."""


@dataclass
class ParsedRequest:
    provider: str  # one of PROVIDERS
    # chat.completions | responses | messages | generateContent | streamGenerateContent, the APIs that generate;
    # embeddings | embedContent | batchEmbedContents | countTokens | messages.count_tokens, the ones that do not
    api: str | None
    model: str | None = None
    stream: bool = False
    # Parameters exactly as sent: None when the body does not carry them.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None  # max_tokens / max_completion_tokens / max_output_tokens / maxOutputTokens
    seed: int | None = None
    parallel_tool_calls: bool | None = None
    include_usage: bool | None = None  # OpenAI chat streams: stream_options.include_usage
    system_prompt: str | None = None  # all system/developer text joined with "\n\n"
    # Normalized conversation: [{"role": str, "content": str, "tool_calls": [...]?, "tool_call_id": str?}]
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[Any] | None = None  # tool schemas as sent, None when absent
    # Tool result ids in the order the request sends them back (trailing tool results only).
    tool_result_ids: list[str] = field(default_factory=list)
    # History the provider keeps instead of the request. The request alone then no longer shows
    # how large the context is. previous_response_id / conversation_ref chain Responses API calls
    # into one conversation; server_context names what was held ("previous_response_id",
    # "conversation", "cachedContent") and goes to calls.server_context.
    previous_response_id: str | None = None
    conversation_ref: str | None = None
    server_context: str | None = None
    # False for the APIs that sample nothing (embeddings, token counting): their calls take no part in
    # conversations, and the rules about sampling, truncation and prompts leave them alone.
    generates: bool = True
    # Embedding inputs, one per vector: a text, or token ids sent already tokenized. Each is counted on
    # its own (providers bill them that way) and `messages` stays empty: a batch of texts is no conversation.
    inputs: list[str | list[int]] = field(default_factory=list)


@dataclass
class ParsedResponse:
    response_model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None  # normalized, one of FINISH_REASONS
    raw_finish_reason: str | None = None  # as the provider spelled it
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_source: str | None = None  # "provider" when the body carried usage, else None
    output_text: str = ""
    # [{"id": str|None, "name": str, "arguments": str}] in the order the model issued them
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    error_type: str | None = None
    error_message: str | None = None
    complete: bool = True  # streams: False until the dialect's final event was seen


class StreamParser(Protocol):
    def feed(self, data: bytes) -> None:
        """Decoded (not content-encoded) body bytes, in arbitrary chunk boundaries."""

    def result(self) -> ParsedResponse:
        """Everything seen so far; complete=False if the stream ended early."""


class Dialect(Protocol):
    name: str  # the api recorded when the request cannot be parsed
    APIS: tuple[str, ...]  # every api name parse_request can give
    FAMILY: str  # openai | anthropic | gemini: which provider names its calls (see providers.provider_for)
    GENERATES: bool  # whether its APIs sample an answer from a model

    def parse_request(self, body: Any, path: str, host: str) -> ParsedRequest: ...

    def parse_response(self, status: int, body: Any) -> ParsedResponse: ...

    def stream_parser(self) -> StreamParser: ...
