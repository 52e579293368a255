"""The models' unit tests: a workspace of hand-made folders whose dataset fingerprint is FINGERPRINT."""

from __future__ import annotations

import json

import pytest

from ibsr_nnunet.core.provenance import PROVENANCE_FILE
from ibsr_nnunet.core.workspace import Workspace

FINGERPRINT = "f" * 64


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    ws = Workspace.open(tmp_path / "ws")
    monkeypatch.setattr("ibsr_nnunet.models.protocol.dataset_fingerprint", lambda _: FINGERPRINT)
    return ws


@pytest.fixture
def provenance():
    """write(folder, fingerprint=FINGERPRINT): the folder's provenance record, as made from that dataset."""
    def write(folder, fingerprint=FINGERPRINT):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PROVENANCE_FILE).write_text(json.dumps({"dataset_fingerprint": fingerprint}))
    return write
