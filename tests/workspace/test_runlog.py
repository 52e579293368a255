"""core.runlog across processes: concurrent appends stay whole lines."""

from __future__ import annotations

import multiprocessing

from helpers import runs_lines
from ibsr_nnunet.core.runlog import append_line


def _append_many(folder: str, writer: int) -> None:
    from pathlib import Path

    for i in range(150):
        append_line(Path(folder), {"event": "start", "run": f"{writer}-{i}", "pad": "x" * 3000})


def test_concurrent_appends_stay_whole_lines(tmp_path):
    processes = [multiprocessing.get_context("fork").Process(target=_append_many, args=(str(tmp_path), w))
                 for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    records = runs_lines(tmp_path)  # every line parses
    assert len(records) == 600 and len({r["run"] for r in records}) == 600
