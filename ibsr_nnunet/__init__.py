"""ibsr-nnunet: IBSR18 brain-tissue segmentation with nnU-Net v2 on SLURM."""

import os

# torch's OpenMP threads spin while they wait; where cores are shared (other jobs, nnU-Net's own data workers) the
# spinning starves everyone. One small nnU-Net prediction on 2 cores: 67 s spinning vs 7 s passive under heavy load,
# 9.7 vs 6.9 s beside one busy process, 5.3 vs 7.3 s on idle cores. Jobs rarely own idle cores, so passive it is;
# set before torch loads OpenMP, and a user's own value (OMP_WAIT_POLICY=ACTIVE) wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
