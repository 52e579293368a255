"""campaign/jobs.py: jobs.json appended to and read back exactly; a cut-short or malformed file refused in one
sentence."""

from __future__ import annotations

import json

import pytest

from ibsr_nnunet.campaign.jobs import append_job, jobs_file, load_jobs
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace

FIX = r"move it away and run `ibsr-nnunet submit` again \(check `squeue` for jobs it recorded first\)\.$"


def test_appended_records_read_back_in_order(tmp_path):
    ws = Workspace(tmp_path / "ws")
    assert load_jobs(ws) == []
    append_job(ws, {"kind": "fold", "job_id": "11"}, say=lambda _: None)
    assert append_job(ws, {"kind": "final", "job_id": "12"}, say=lambda _: None) == [
        {"kind": "fold", "job_id": "11"}, {"kind": "final", "job_id": "12"}]
    assert json.loads(jobs_file(ws).read_text()) == {"jobs": [{"kind": "fold", "job_id": "11"},
                                                              {"kind": "final", "job_id": "12"}]}


@pytest.mark.parametrize("content, why", [
    ('{"jobs": [{"kind": "fo', r"is not valid JSON \(cut short or edited by hand: .*\)"),
    ("[]", r"is not the campaign's job records \(not a JSON object\)"),
    ('{"jobs": {"kind": "fold"}}', r'holds no list of job records under "jobs"'),
])
def test_a_broken_jobs_file_is_one_sentence(tmp_path, content, why):
    ws = Workspace(tmp_path / "ws")
    ws.slurm.mkdir(parents=True)
    jobs_file(ws).write_text(content)
    with pytest.raises(InputError, match=rf"^{jobs_file(ws)} {why}; {FIX}"):
        load_jobs(ws)
