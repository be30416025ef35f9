"""One unified diff of two texts, for every place agentprobe shows a prompt or an answer changing.

Lines are compared without their ends, so a text with no trailing newline never runs its last
line into the next one of the diff (`-You are a helpful…+You are a terse…`).
"""

from __future__ import annotations

import difflib


def diff_lines(old: str, new: str, old_name: str, new_name: str, *, context: int = 3,
               max_lines: int | None = None) -> list[str]:
    lines = list(difflib.unified_diff((old or "").splitlines(), (new or "").splitlines(), old_name, new_name,
                                      lineterm="", n=context))
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... {len(lines) - max_lines} more diff lines"]
    return lines


def unified(old: str, new: str, old_name: str, new_name: str, *, context: int = 3,
            max_lines: int | None = None) -> str:
    return "\n".join(diff_lines(old, new, old_name, new_name, context=context, max_lines=max_lines))
