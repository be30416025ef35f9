"""Files a user names on the command line: regular files only, and no bigger than a cap.

`scan --config /dev/zero` used to read until memory ran out, and a named pipe with no writer
blocked forever. Every file a command reads on a user's behalf is opened here: a FIFO is opened
without blocking and refused, as are devices, directories and sockets; a file over its cap is
refused before a byte is read, and one that grows past the cap while being read is refused then.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

MB = 1024 * 1024
# Agent configs, system prompt files, analyze's --architecture/--scenario/--answer, --upstream-ca:
# hand-written or pasted text, read whole into memory.
TEXT_LIMIT = 16 * MB
# Trace and HAR files: streamed, so memory does not grow with them; the cap bounds the time an
# import can take and keeps a disk image passed by mistake out.
TRACE_LIMIT = 1024 * MB


def size_text(n: int) -> str:
    if n >= MB:
        return f"{n / MB:,.0f} MB" if n % MB == 0 else f"{n / MB:,.1f} MB"
    return f"{n:,} bytes"


_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class CappedReader(io.RawIOBase):
    """A binary file that raises `error` once more than `limit` bytes have been read from it
    (a file the size check passed can still grow while it is read, as /proc files do)."""

    def __init__(self, raw, limit: int, on_overflow) -> None:
        self._raw = raw
        self._limit = limit
        self._read = 0
        self._on_overflow = on_overflow

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        pos = self._raw.seek(offset, whence)
        self._read = pos
        return pos

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        self._read += n or 0
        if self._read > self._limit:
            raise self._on_overflow()
        return n

    def read(self, size: int = -1) -> bytes:
        # Never more than one byte past the cap at once, whatever the caller asked for.
        room = self._limit - self._read + 1
        data = self._raw.read(room if size is None or size < 0 else min(size, room))
        self._read += len(data)
        if self._read > self._limit:
            raise self._on_overflow()
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_user_file(path: str | os.PathLike, what: str, error: type[Exception], *, limit: int = TEXT_LIMIT,
                   hint: str = "") -> CappedReader:
    """`path` opened for binary reading, or `error` with one line that names it and says what to do.

    `what` names the kind of file in messages ("config file", "trace file"); `hint` is added to the
    message about a file over the cap.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer before we can refuse it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is {_kind(st.st_mode)}, not a regular file: give the path of a file"
                        " (copy what a pipe or device gives into one first)")
        if st.st_size > limit:
            raise error(f"{what} {path} is {size_text(st.st_size)}, over the {size_text(limit)} limit for a {what}"
                        + (f": {hint}" if hint else ""))
        os.set_blocking(fd, True)
        raw = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    return CappedReader(raw, limit, lambda: error(
        f"{what} {path} grew past the {size_text(limit)} limit for a {what} while it was read"))


def read_user_file(path: str | os.PathLike, what: str, error: type[Exception], *, limit: int = TEXT_LIMIT,
                   hint: str = "") -> bytes:
    """The whole content of a user-named regular file of at most `limit` bytes."""
    with open_user_file(path, what, error, limit=limit, hint=hint) as f:
        chunks = []
        while chunk := f.read(1024 * 1024):
            chunks.append(chunk)
    return b"".join(chunks)


def read_user_text(path: str | os.PathLike, what: str, error: type[Exception], *, limit: int = TEXT_LIMIT,
                   hint: str = "") -> str:
    data = read_user_file(path, what, error, limit=limit, hint=hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start} is {data[e.start:e.start + 1]!r})") from None
