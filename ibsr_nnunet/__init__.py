"""ibsr-nnunet: IBSR18 brain-tissue segmentation with nnU-Net v2 on SLURM.

Importing the package changes nothing in the process: environment settings happen once, at process entry
(`ibsr_nnunet.core.environment.prepare_process`, called by the command line).
"""

__version__ = "0.1.0"
