"""`segment`'s pictures: each scan and its map turned to R, A, S axes, one QC picture each and a contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..core.orientation import towards
from ..data.volumes import Volume, read_volume
from .measures import tissue_volumes

if TYPE_CHECKING:
    from ..evaluation.qc import Snapshot


def snapshot(name: str, volume: Volume, tissue: np.ndarray, volumes: dict, model: str,
             brain: Optional[np.ndarray] = None, score: Optional[float] = None) -> "Snapshot":
    """The scan and its map (and the brain mask it was stripped with), turned to R, A, S axes for the picture, titled
    with the scan, model and volumes."""
    from ..evaluation.qc import Snapshot

    display = towards(volume.affine, ("R", "A", "S"))
    shown = volume.reoriented(display)
    v = volumes
    title = (f"{name} — {model}" + (f" · QC score {score:.2f}" if score is not None else "") + "\n"
             f"CSF {v['CSF_ml']:.1f} mL · GM {v['GM_ml']:.1f} mL · WM {v['WM_ml']:.1f} mL · "
             f"BPF {v['BPF']:.3f}" + (f" · TIV {v['tiv_ml']:.0f} mL" if "tiv_ml" in v else ""))
    return Snapshot(name, np.asarray(shown.array, dtype=np.float32), display.apply(tissue), shown.spacing, title,
                    None if brain is None else display.apply(brain))


def qc_picture(shot: "Snapshot", target: Path) -> Path:
    from ..evaluation.qc import qc_picture as draw

    return draw(shot, target)


def draw_sheet(done: list[tuple[str, Path, Path, dict]], target: Path, model: str) -> Optional[Path]:
    """One contact sheet of every (name, input, map, volumes) with a map on disk (a row each), redrawn from the
    files."""
    from ..evaluation.qc import qc_sheet

    shots = []
    for name, source, output, volumes in done:
        if not output.is_file():
            continue
        volume = read_volume(source)
        tissue = read_volume(output).array.astype(np.uint8)
        shots.append(snapshot(name, volume, tissue, volumes or tissue_volumes(tissue, volume.spacing), model))
    return qc_sheet(shots, target) if shots else None
