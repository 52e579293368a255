"""Exit codes shared by every long-running command and the sbatch scripts that read them."""

EXIT_REQUEUE = 75  # EX_TEMPFAIL: "interrupted after saving, requeue me"; distinct from 128+N of an unhandled signal
