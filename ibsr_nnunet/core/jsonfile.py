"""Reading the JSON files one step hands to the next, with one sentence when one is missing or cut short."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError


def read_json(path: Path, fix: str) -> Any:
    """The file's content; InputError naming the file, what is wrong and `fix` when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; {fix}.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON (cut short or edited by hand: {err}); {fix}.") from None
