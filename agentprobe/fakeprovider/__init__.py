"""A fake LLM provider speaking the OpenAI, Anthropic and Gemini wire formats.

See `directives` for how a request scripts the reply (errors, delays, cut
streams, encodings, tool calls).
"""

from .server import FakeProvider

__all__ = ["FakeProvider"]
