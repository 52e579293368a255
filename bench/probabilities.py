"""What `segment`'s QC confidence costs: seconds per scan of a trained model's prediction with and without its
class probabilities, side by side in one run (alternating, best of --repeats each).

`segment` always asks for the probabilities (the confidence in `qc_score`); nnU-Net then writes its softmax as
.npz and `segment` reads it back, the baselines sum theirs in memory. Each timing is the model's own prediction
of one scan in a fresh scratch folder, the model loaded once (the same work `segment` does per scan, without its
writing of the outputs).

    python bench/probabilities.py --workspace DIR --model nnunet_2d [--scan FILE] [--repeats 2]

DIR is a workspace with the model trained (bench/robustness.py's, with `ensemble` run for nnU-Net models).
Numbers: bench/README.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SCAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ibsr18" / "Test_Set" / "IBSR_02" / \
    "IBSR_02.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--scan", type=Path, default=SCAN)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from ibsr_nnunet.core.oriented import predict_oriented
    from ibsr_nnunet.core.workspace import Workspace
    from ibsr_nnunet.data.preprocess import apply
    from ibsr_nnunet.data.volumes import read_volume
    from ibsr_nnunet.models.protocol import PredictSettings
    from ibsr_nnunet.models.registry import load_model
    from ibsr_nnunet.nnunet.environment import configure

    ws = Workspace.open(args.workspace)
    configure(ws, 2)
    model = load_model(ws, args.model)
    if why := model.refusal("measure it"):
        raise SystemExit(why)
    best: dict[bool, float] = {}
    for _ in range(args.repeats):
        for probabilities in (False, True):
            with tempfile.TemporaryDirectory() as scratch:
                settings = PredictSettings(device="cpu", probabilities=probabilities, scratch=Path(scratch))
                started = time.perf_counter()
                [carried] = predict_oriented([("scan", lambda: read_volume(args.scan))], model.axcodes,
                                             lambda turned: model.predict(turned, settings),
                                             prepare=lambda key, volume: apply(volume, model.preprocessing))
                spent = time.perf_counter() - started
            if carried.error or carried.prediction.error:
                raise SystemExit(f"the prediction failed: {carried.error or carried.prediction.error}")
            best[probabilities] = min(best.get(probabilities, spent), spent)
            print(f"probabilities {'on ' if probabilities else 'off'}: {spent:.1f} s", flush=True)
    print(f"\n{args.model} on {args.scan.name}: {best[False]:.1f} s without probabilities, {best[True]:.1f} s with "
          f"them (best of {args.repeats}): ratio {best[True] / best[False]:.3f}, "
          f"+{best[True] - best[False]:.1f} s per scan")


if __name__ == "__main__":
    main()
