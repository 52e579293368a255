"""`python -m ibsr_nnunet` runs the command line (what tests and sbatch scripts use without the console script)."""

from .cli import main

if __name__ == "__main__":
    main()
