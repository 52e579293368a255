"""ibsr-nnunet: IBSR18 brain-tissue segmentation with nnU-Net v2 on SLURM."""

import os

# torch's OpenMP threads spin while they wait; where cores are shared (other jobs, nnU-Net's own data workers) the
# spinning starves everyone: one nnU-Net prediction took 67 s instead of 7 s on a loaded 2-core machine. Set before
# torch loads OpenMP; a user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
