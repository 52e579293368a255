"""core.vocabulary: the label numbers and tissue names, in order."""

from __future__ import annotations

import pytest

from ibsr_nnunet.core.vocabulary import NNUNET_LABELS, TISSUES


@pytest.mark.parametrize("mapping, expected", [
    (NNUNET_LABELS, {"background": 0, "CSF": 1, "GM": 2, "WM": 3}),
    (TISSUES, {1: "CSF", 2: "GM", 3: "WM"}),
])
def test_vocabulary(mapping, expected):
    assert mapping == expected and list(mapping.items()) == list(expected.items())
