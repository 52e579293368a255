"""ibsr-nnunet: IBSR18 brain-tissue segmentation with nnU-Net v2 on SLURM."""

__version__ = "0.1.0"
