"""The SLURM campaign: the one sbatch renderer, submit, status, and the job records and SLURM calls behind them."""
