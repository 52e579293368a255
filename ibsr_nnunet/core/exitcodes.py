"""Exit codes shared by every long-running command and the sbatch scripts that read them."""

EXIT_REFUSED = 1  # bad input or state the user can fix (core/errors.InputError), or a crash
EXIT_REQUEUE = 75  # EX_TEMPFAIL: "interrupted after saving, requeue me"; distinct from 128+N of an unhandled signal
EXIT_LOCKED = 73  # EX_CANTCREAT: another live writer holds the lock on what this command would write; not requeued
EXIT_STALLED = 76  # two consecutive runs stopped by USR1 without finishing an epoch: requeueing again would loop
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it: the run stopped where it was, resumable
