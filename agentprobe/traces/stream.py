"""Trace and HAR files read as a stream: memory stays flat however many calls a file holds.

The file is opened once (a regular file under TRACE_LIMIT, util/userfile.py) and read in passes
with ijson's C parser. The first pass sees the whole document without building it: it checks the
syntax, the nesting depth (MAX_JSON_DEPTH) and the top-level keys, and keeps the small scalar
values (format, version). Each later pass builds one part at a time (a call, a body, a HAR entry),
so only one such part is in memory at once.

ijson is used with use_float=True: its C backend then converts numbers itself, refusing an integer
beyond 64 bits ("integer overflow") instead of handing Python a 5,001-digit string, which crashes
ijson 3.6's C backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ijson

from ..util.jsonfile import MAX_JSON_DEPTH, value_depth
from ..util.userfile import TRACE_LIMIT, CappedReader, open_user_file
from . import TraceError

READ_CHUNK = 256 * 1024


def open_trace(path: Path) -> CappedReader:
    return open_user_file(path, "trace file", TraceError, limit=TRACE_LIMIT,
                          hint="export fewer calls per file, or split the HAR")


def _json_error(path: Path, e: Exception) -> TraceError:
    text = e.args[0] if e.args else str(e)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__
    return TraceError(f"{path} is not valid JSON (truncated?): {first}")


@dataclass
class Skeleton:
    """The top of a JSON document: its top-level keys (and those of the object `log`, for HAR)."""

    kind: str  # of the document: "map", "array" or "scalar"
    top: dict[str, str] = field(default_factory=dict)  # key -> "map" | "array" | "scalar"
    scalars: dict[str, Any] = field(default_factory=dict)  # top-level key -> its scalar value
    log: dict[str, str] = field(default_factory=dict)  # keys of a top-level "log" object -> kind
    duplicates: list[str] = field(default_factory=list)


_OPEN = {"start_map": "map", "start_array": "array"}


def skeleton(f: CappedReader, path: Path, max_depth: int = MAX_JSON_DEPTH) -> Skeleton:
    """One pass over the whole file: syntax, depth, and the top-level keys; nothing is built."""
    f.seek(0)
    depth = 0
    sk: Skeleton | None = None
    key = None  # the top-level key (depth 1) or log's key (depth 2) whose value comes next
    in_log = False
    try:
        for event, value in ijson.basic_parse(f, use_float=True, buf_size=READ_CHUNK):
            if event == "map_key":
                if depth == 1 or (depth == 2 and in_log):
                    key = value
                continue
            if event in _OPEN:
                if sk is None:
                    sk = Skeleton(_OPEN[event])
                elif key is not None:
                    _note(sk, depth, key, _OPEN[event])
                    in_log = in_log or (depth == 1 and key == "log" and event == "start_map")
                    key = None
                depth += 1
                if depth > max_depth:
                    raise TraceError(f"{path} nests arrays and objects more than {max_depth} levels deep;"
                                     f" agentprobe reads at most {max_depth}")
                continue
            if event in ("end_map", "end_array"):
                depth -= 1
                if depth == 1:
                    in_log = False
                continue
            if sk is None:
                sk = Skeleton("scalar")
            elif key is not None:
                _note(sk, depth, key, "scalar")
                if depth == 1:
                    sk.scalars[key] = value
                key = None
    except (ijson.JSONError, ValueError, UnicodeDecodeError) as e:
        raise _json_error(path, e) from None
    if sk is None:
        raise TraceError(f"{path} is empty: export the run again")
    return sk


def _note(sk: Skeleton, depth: int, key: str, kind: str) -> None:
    keys = sk.top if depth == 1 else sk.log
    if key in keys:
        sk.duplicates.append(key if depth == 1 else f"log/{key}")
    keys[key] = kind


def items(f: CappedReader, path: Path, prefix: str, what: str) -> Iterator[Any]:
    """Each value at `prefix`, built one at a time, its depth checked (the skeleton pass checked the
    whole file; this keeps a value honest whatever pass found it)."""
    f.seek(0)
    try:
        for i, value in enumerate(ijson.items(f, prefix, use_float=True, buf_size=READ_CHUNK)):
            if value_depth(value) > MAX_JSON_DEPTH:
                raise TraceError(f"{path}: {what} {i} nests more than {MAX_JSON_DEPTH} levels deep")
            yield value
    except (ijson.JSONError, ValueError, UnicodeDecodeError) as e:
        raise _json_error(path, e) from None


def kvitems(f: CappedReader, path: Path, prefix: str) -> Iterator[tuple[str, Any]]:
    f.seek(0)
    try:
        yield from ijson.kvitems(f, prefix, use_float=True, buf_size=READ_CHUNK)
    except (ijson.JSONError, ValueError, UnicodeDecodeError) as e:
        raise _json_error(path, e) from None
