"""The models' unit tests: a workspace of hand-made folders whose dataset fingerprint is FINGERPRINT."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ibsr_nnunet.core.provenance import PROVENANCE_FILE
from ibsr_nnunet.core.workspace import Workspace

FINGERPRINT = "f" * 64


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    ws = Workspace.open(tmp_path / "ws")
    manifest = SimpleNamespace(fingerprint=FINGERPRINT)  # all a model reads of the manifest here
    monkeypatch.setattr("ibsr_nnunet.models.protocol.read_manifest", lambda _: manifest)
    return ws


@pytest.fixture
def provenance():
    """write(folder, fingerprint=FINGERPRINT): the folder's provenance record, as made from that dataset."""
    def write(folder, fingerprint=FINGERPRINT):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PROVENANCE_FILE).write_text(json.dumps({"dataset_fingerprint": fingerprint}))
    return write
