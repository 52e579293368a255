"""`segment`'s output tables: volumes.csv (a row a scan) and segment.json (what each map was made from, so that a
re-run reuses what matches)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pandas as pd

from ..core.atomic import atomic_path, write_json
from ..core.jsonfile import read_json_or_none
from .inputs import input_signature, stem
from .options import SegmentOptions
from .scans import Scan, ScanOutcome, brain_mask_path

MEASURES = ["CSF_ml", "GM_ml", "WM_ml", "total_ml", "GM_fraction", "WM_fraction", "BPF", "CSF_ml_soft", "GM_ml_soft",
            "WM_ml_soft", "tiv_ml"]  # tiv_ml: deepbet's intracranial volume, with --strip
VOLUME_COLUMNS = ["scan", "status", "input", "output", "model", "input_axcodes", "tta", "step_size", "strip",
                  "resample", *MEASURES, "qc_score", "qc_flags", "qc", "seconds", "warnings", "error"]


def write_volumes_csv(outcomes: list[ScanOutcome], model: str, output: Path, options: SegmentOptions) -> Path:
    """output/volumes.csv: one row a scan (reused rows as they were), status "ok" or "failed" with its error."""
    rows = []
    for s in outcomes:
        if s.reused is not None:
            rows.append({**s.reused, "status": "ok"})
            continue
        rows.append({"scan": stem(s.input), "status": "failed" if s.error else "ok", "input": str(s.input),
                     "output": "" if s.error else str(s.output), "model": model, "input_axcodes": s.input_axcodes,
                     "tta": options.tta, "step_size": options.step_size, "strip": options.strip,
                     "resample": options.resample, **{c: s.volumes.get(c, math.nan) for c in MEASURES},
                     "qc_score": s.quality_score,
                     "qc_flags": "; ".join(s.quality.flags) if s.quality else "", "qc": str(s.qc) if s.qc else "",
                     "seconds": round(s.seconds, 3), "warnings": "; ".join(s.warnings), "error": s.error or ""})
    csv = output / "volumes.csv"
    with atomic_path(csv) as tmp:
        pd.DataFrame(rows, columns=VOLUME_COLUMNS).to_csv(tmp, index=False)
    return csv


class SegmentRecord:
    """output/segment.json: for each output name, the input, its bytes' hash, the model's signature and the options
    it was made with; a re-run reuses what matches and redoes the rest."""

    FILE = "segment.json"

    def __init__(self, entries: dict[str, dict], rows: dict[str, dict]):
        self.entries, self.rows = entries, rows

    @classmethod
    def load(cls, output: Path) -> "SegmentRecord":
        entries = read_json_or_none(output / cls.FILE)
        if not isinstance(entries, dict):
            return cls({}, {})
        try:
            table = pd.read_csv(output / "volumes.csv", keep_default_na=False, dtype={"input_axcodes": str})
            rows = {row["output"]: row for row in table.to_dict(orient="records") if row.get("output")}
        except (OSError, ValueError):
            return cls({}, {})
        return cls(entries, rows)

    def _wanted(self, scan: Scan, signature: str, options: SegmentOptions) -> dict:
        return {"input": str(scan.input.absolute()), "input_sha256": input_signature(scan.input), "model": signature,
                "tta": options.tta, "step_size": options.step_size, "soft_volumes": options.soft_volumes,
                "qc": options.qc, "strip": options.strip, "resample": options.resample}

    def reusable(self, scan: Scan, signature: str, options: SegmentOptions) -> Optional[dict]:
        entry = self.entries.get(scan.name)
        row = self.rows.get(str(scan.output))
        if entry is None or row is None or not scan.output.is_file():
            return None
        if options.qc and not scan.output.with_name(f"{scan.name}_qc.png").is_file():
            return None
        if options.strip and not brain_mask_path(scan).is_file():
            return None
        if str(row.get("qc_score", "")) in ("", "nan"):  # written before the QC score existed: score it now
            return None
        return row if entry == self._wanted(scan, signature, options) else None

    def update(self, outcomes: list[ScanOutcome], signature: str, options: SegmentOptions) -> None:
        for outcome in outcomes:
            if outcome.error:
                self.entries.pop(outcome.name, None)
            elif outcome.reused is None:
                self.entries[outcome.name] = self._wanted(outcome.scan, signature, options)

    def save(self, output: Path) -> None:
        write_json(output / self.FILE, self.entries)
