"""core.runlog across processes: concurrent appends stay whole lines."""

from __future__ import annotations

import json
import multiprocessing

from ibsr_nnunet.core.runlog import RUNS_FILE, append_line


def lines(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / RUNS_FILE).read_text().splitlines()]


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
    records = lines(tmp_path)  # every line parses
    assert len(records) == 600 and len({r["run"] for r in records}) == 600
