"""core/jsonfile.py: one sentence naming the file, what is wrong and the fix, for a missing, cut-short or
unreadable JSON file; None where the caller takes a lost record as unknown."""

from __future__ import annotations

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.jsonfile import read_json, read_json_object, read_json_or_none

FIX = "run the step that writes it again"


def test_content_read_back(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2.5, null]}')
    assert read_json(tmp_path / "a.json", FIX) == {"x": [1, 2.5, None]}
    assert read_json_object(tmp_path / "a.json", FIX, "a record") == {"x": [1, 2.5, None]}


def test_missing(tmp_path):
    with pytest.raises(InputError, match=rf"^{tmp_path / 'a.json'} does not exist; {FIX}\.$"):
        read_json(tmp_path / "a.json", FIX)
    assert read_json(tmp_path / "a.json", FIX, missing_ok=True) is None
    assert read_json_object(tmp_path / "a.json", FIX, "a record", missing_ok=True) is None
    (tmp_path / "file").write_text("")
    assert read_json(tmp_path / "file" / "a.json", FIX, missing_ok=True) is None  # a file where a folder should be


def test_cut_short_is_refused_even_when_a_missing_file_is_fine(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2')
    with pytest.raises(InputError, match=rf"^{tmp_path / 'a.json'} is not valid JSON \(cut short or edited by hand: "
                                         rf".*\); {FIX}\.$"):
        read_json(tmp_path / "a.json", FIX, missing_ok=True)
    assert read_json_or_none(tmp_path / "a.json") is None


def test_not_an_object(tmp_path):
    (tmp_path / "a.json").write_text("[1]")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'a.json'} is not a record \(not a JSON object\); {FIX}\.$"):
        read_json_object(tmp_path / "a.json", FIX, "a record")


def test_a_folder_in_its_place(tmp_path):
    (tmp_path / "a.json").mkdir()
    with pytest.raises(InputError, match=rf"^cannot read {tmp_path / 'a.json'} \(Is a directory\); {FIX}\.$"):
        read_json(tmp_path / "a.json", FIX)
    assert read_json_or_none(tmp_path / "a.json") is None
