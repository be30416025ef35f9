"""An incremental Server-Sent-Events reader that tolerates any chunking and never raises."""

from __future__ import annotations

import codecs

MAX_LINE = 16 * 1024 * 1024


class SSEReader:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._event: str | None = None
        self._data: list[str] = []
        self._started = False
        self._skip_lf = False
        self.max_line = max_line
        self.errors = 0

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        text = self._decoder.decode(data, final=not data)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        self._buf += text
        out: list[tuple[str | None, str]] = []
        while True:
            idx = _line_end(self._buf)
            if idx < 0:
                break
            line = self._buf[:idx]
            sep = self._buf[idx]
            rest = self._buf[idx + 1 :]
            if sep == "\r":
                if rest.startswith("\n"):
                    rest = rest[1:]
                elif not rest:
                    self._skip_lf = True
            self._buf = rest
            self._line(line, out)
        if len(self._buf) > self.max_line:
            self._buf = ""
            self.errors += 1
        if not data and self._buf:  # end of stream: a last line without a newline
            self._line(self._buf, out)
            self._buf = ""
        return out

    def _line(self, line: str, out: list) -> None:
        if line == "":
            if self._data:
                out.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


def _line_end(buf: str) -> int:
    n = buf.find("\n")
    r = buf.find("\r")
    if n < 0:
        return r
    if r < 0:
        return n
    return min(n, r)
