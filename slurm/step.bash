# -- shared by the training scripts (slurm/step.bash) ------------------------------------------------------------
# run_step CMD...: run CMD in the background so that a trapped USR1/TERM is handled at once (a foreground child
# would delay the trap), forward the signal to it, wait until it is gone, then act on its exit code:
#   0 -> go on;  75 ("saved, requeue me") or any failure after USR1 -> `scontrol requeue` this job, whose next
#   run resumes from the last checkpoint, unless the job was requeued MAX_RESTARTS times already: then it fails;
#   after SIGTERM -> exit: SLURM is cancelling (scancel), requeueing (scontrol requeue, preemption) or ending the
#   job, and it alone decides which (requeueing here would undo a scancel);  73 (another writer holds the lock,
#   named in the step's output) -> the job fails, no requeue;  76 (two runs in a row were stopped by USR1 before
#   finishing an epoch) -> the job fails, no requeue;  anything else -> a real error: the job fails once, no requeue.
log() {
  printf '[ibsr-nnunet %s] job %s%s restart %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${SLURM_JOB_ID:-none}" \
    "${SLURM_ARRAY_JOB_ID:+ (${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-})}" "${SLURM_RESTART_COUNT:-0}" "$*"
}
child=""
signalled=""
forward() {
  if [ "$signalled" != TERM ]; then signalled=$1; fi  # TERM, once seen, wins: the job is ending
  log "received SIG$1; forwarding it to ${child:-no running step}"
  if [ -n "$child" ]; then kill -s "$1" "$child" 2>/dev/null || true; fi
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
requeue() {
  if [ "${SLURM_RESTART_COUNT:-0}" -ge "$MAX_RESTARTS" ]; then
    log "step ended with exit code $1 after SIG${signalled:-NONE}, but this job was requeued" \
      "${SLURM_RESTART_COUNT:-0} times already (--max-restarts $MAX_RESTARTS): not requeued, the job fails; if its" \
      "runs end before they save progress, submit again with a longer --time or a smaller --signal-grace, else" \
      "with a larger --max-restarts"
    exit "$1"
  fi
  log "step ended with exit code $1 after SIG${signalled:-NONE}: requeueing; the next run resumes from its checkpoint"
  if [ -n "${SLURM_JOB_ID:-}" ] && scontrol requeue "$SLURM_JOB_ID"; then exit 0; fi
  log "scontrol requeue failed: leaving the job to fail with exit code $1"
  exit "$1"
}
run_step() {
  local status last
  if [ "$signalled" = TERM ]; then exit "$EXIT_REQUEUE"; fi
  if [ "$signalled" = USR1 ]; then requeue "$EXIT_REQUEUE"; fi
  "$@" &
  child=$!
  while :; do
    wait "$child"; status=$?
    kill -0 "$child" 2>/dev/null || break  # wait was only interrupted by the trap: keep waiting
  done
  wait "$child" 2>/dev/null; last=$?  # the child's real exit code, even if the trap interrupted the last wait
  if [ "$last" -ne 127 ]; then status=$last; fi
  child=""
  if [ "$status" -eq 0 ]; then return 0; fi
  if [ "$status" -eq "$EXIT_LOCKED" ]; then
    log "step refused with exit code $status: another writer holds what it would write (named above); not requeued"
    exit "$status"
  fi
  if [ "$status" -eq "$EXIT_STALLED" ]; then
    log "step stalled (exit code $status): two runs in a row ended at the time-limit warning without finishing an epoch;" \
      "not requeued: submit again with a longer --time or a smaller --signal-grace"
    exit "$status"
  fi
  if [ "$signalled" = TERM ]; then
    log "step ended with exit code $status after SIGTERM: left to SLURM (cancel, requeue or preemption)"
    exit "$status"
  fi
  if [ "$status" -eq "$EXIT_REQUEUE" ] || [ -n "$signalled" ]; then requeue "$status"; fi
  log "step failed with exit code $status: not requeued (fix the cause, then run \`ibsr-nnunet submit\` again)"
  exit "$status"
}
# -- end of slurm/step.bash --------------------------------------------------------------------------------------
