"""Reading the JSON files one step hands to the next, with one sentence when one is missing or cut short."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .errors import InputError


def read_json(path: Path, fix: str, *, missing_ok: bool = False) -> Any:
    """The file's content (None for a missing file when `missing_ok`); InputError naming the file, what is wrong and
    `fix` when it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError):  # a file where a folder of the path should be: none either
        if missing_ok:
            return None
        raise InputError(f"{path} does not exist; {fix}.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON (cut short or edited by hand: {err}); {fix}.") from None
    except OSError as err:
        raise InputError(f"cannot read {path} ({err.strerror or err}); {fix}.") from None


def read_json_object(path: Path, fix: str, what: str, *, missing_ok: bool = False) -> Optional[dict]:
    """Like `read_json`, and refused in one sentence unless the file holds a JSON object (`what` it should be)."""
    content = read_json(path, fix, missing_ok=missing_ok)
    if content is None and missing_ok:
        return None
    if not isinstance(content, dict):
        raise InputError(f"{path} is not {what} (not a JSON object); {fix}.")
    return content


def parse_json(text: bytes | str, where: str, fix: str) -> Any:
    """JSON read from elsewhere than a file of its own (a member of a zip); InputError naming `where` and `fix`
    when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{where} is not valid JSON (cut short or edited by hand: {err}); {fix}.") from None


def read_json_or_none(path: Path) -> Any:
    """The file's content, or None when it is missing, unreadable or not JSON: for records whose loss only means
    that what they describe is taken as unknown (and redone), never as current."""
    try:
        return read_json(path, "", missing_ok=True)
    except InputError:
        return None
