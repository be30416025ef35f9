"""Reading response headers the same way everywhere they are read."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable


def retry_after(header: Callable[[str], str | None], now: float | None = None) -> float | None:
    """Seconds the server asked the client to wait: retry-after-ms, else retry-after (seconds or an HTTP date)."""
    ms = header("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = header("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, round(when - (time.time() if now is None else now), 3))
