"""Which environment variable holds each provider's API key, for the commands that call providers
themselves (replay, the one-shot trace, analyze). Keys are read from the environment only, never
from a recording."""

KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "openai_compatible": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
}
