"""Read a JSON file a user named on the command line, failing in one line that names it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_file(path: Path, what: str, error: type[Exception], *, invalid_hint: str = "") -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {what} {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON{invalid_hint}: {e.msg} at line {e.lineno} column {e.colno}") \
            from None
