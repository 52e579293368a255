#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests and for trying `ibsr-nnunet submit` locally.
#
# Usage (as root; needs Debian's slurmctld, slurmd, slurm-client and munge packages, no systemd):
#   slurm/local-cluster.sh start    # munged + slurmctld + slurmd, ready in a few seconds; idempotent
#   slurm/local-cluster.sh stop     # cancels every job, then stops the daemons (state is kept for the next start)
#   slurm/local-cluster.sh status   # the daemons' pids and sinfo
#   export SLURM_CONF=/tmp/ibsr-slurm-local/etc/slurm.conf   # printed by start; needed unless /etc/slurm/slurm.conf
#                                                            # was absent and start linked it there
# Settings (environment):
#   IBSR_SLURM_BASE   folder holding every file of the cluster (default /tmp/ibsr-slurm-local)
#   IBSR_SLURM_CPUS   CPUs the node offers to jobs (default: all; fewer makes jobs wait instead of thrash)
#   IBSR_SLURM_GPUS   fake GPUs offered as GRES gpu (character devices made with mknod; default 2)
#   IBSR_SLURM_CLEAN=1  start from an empty state folder (job IDs restart at 1)
# The cluster: partition `debug` (default), partition `urgent` (higher priority, preempts `debug` by requeueing
# its jobs, GraceTime 10 s), cred_expire=5 and a scheduling pass every second, so a requeued job runs again
# ~6 s after it left (SLURM's defaults: 120 s, then up to 30 s more),
# KillWait=5, MinJobAge=3600 (finished jobs stay visible to squeue/scontrol for an hour), no accounting database.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in /usr/sbin, not always on a non-login PATH

BASE=${IBSR_SLURM_BASE:-/tmp/ibsr-slurm-local}
ETC=$BASE/etc
CONF=$ETC/slurm.conf
RUN=$BASE/run
LOG=$BASE/log
MUNGE=$BASE/munge
SOCKET=$MUNGE/munge.socket.2

die() { echo "local-cluster: $*" >&2; exit 1; }

alive() {  # alive PIDFILE NAME: the pid in PIDFILE is a running NAME
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1  # the daemon may remove its pid file as it exits
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

stop_daemon() {  # stop_daemon PIDFILE NAME: TERM, then KILL after 15 s
  local pid i
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do
    alive "$1" "$2" || { rm -f "$1"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$1"
}

write_config() {
  local host node cpus mem gpus gres_line="" i
  host=$(hostname -s)
  node=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  cpus=${IBSR_SLURM_CPUS:-$cpus}
  mem=$(( mem * 9 / 10 ))
  gpus=${IBSR_SLURM_GPUS:-2}
  mkdir -p "$BASE/dev"
  : > "$ETC/gres.conf.new"
  echo "AutoDetect=off" >> "$ETC/gres.conf.new"
  for (( i = 0; i < gpus; i++ )); do
    # a character device is what SLURM wants (1,3 = /dev/null's numbers); without CAP_MKNOD link /dev/null itself
    [ -c "$BASE/dev/nvidia$i" ] || mknod "$BASE/dev/nvidia$i" c 1 3 2>/dev/null || ln -sfn /dev/null "$BASE/dev/nvidia$i"
    echo "NodeName=$host Name=gpu File=$BASE/dev/nvidia$i" >> "$ETC/gres.conf.new"
  done
  [ "$gpus" -gt 0 ] && gres_line="Gres=gpu:$gpus"
  mv "$ETC/gres.conf.new" "$ETC/gres.conf"
  cat > "$CONF" <<EOF
# written by ibsr-nnunet slurm/local-cluster.sh
ClusterName=ibsrlocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=5
StateSaveLocation=$BASE/state/ctld
SlurmdSpoolDir=$BASE/state/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
JobRequeue=1
ReturnToService=2
MinJobAge=3600
KillWait=5
SchedulerType=sched/backfill
# a requeued job becomes eligible after cred_expire, and is started by the next scheduling pass: make them frequent
SchedulerParameters=bf_interval=1,sched_interval=1
GresTypes=gpu
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10 GraceTime=10
EOF
}

start() {
  [ "$(id -u)" = 0 ] || die "run me as root (the daemons run as root, with no slurm user)"
  for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
  done
  if [ "${IBSR_SLURM_CLEAN:-0}" = 1 ] && ! alive "$RUN/slurmctld.pid" slurmctld; then
    rm -rf "$BASE/state"
  fi
  mkdir -p "$ETC" "$RUN" "$LOG" "$MUNGE" "$BASE/state/ctld" "$BASE/state/d"
  chmod 755 "$BASE" "$MUNGE"  # munged refuses a socket folder that others cannot enter
  [ -s "$MUNGE/munge.key" ] || { head -c 1024 /dev/urandom > "$MUNGE/munge.key"; }
  chmod 600 "$MUNGE/munge.key"
  write_config
  if [ ! -e /etc/slurm/slurm.conf ]; then  # clients then need no SLURM_CONF; stop removes the link
    mkdir -p /etc/slurm
    ln -s "$CONF" /etc/slurm/slurm.conf
    ln -sfn "$ETC/gres.conf" /etc/slurm/gres.conf 2>/dev/null || true
  fi
  alive "$RUN/munged.pid" munged || munged --force --key-file="$MUNGE/munge.key" --socket="$SOCKET" \
      --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" --seed-file="$MUNGE/munge.seed"
  for i in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
  if alive "$RUN/slurmctld.pid" slurmctld; then
    SLURM_CONF=$CONF scontrol reconfigure || true  # already running: take up a changed slurm.conf
  else
    slurmctld -f "$CONF" -i
  fi
  alive "$RUN/slurmd.pid" slurmd || slurmd -f "$CONF"
  local host state=""
  host=$(hostname -s)
  for i in $(seq 300); do
    state=$(SLURM_CONF=$CONF sinfo -h -N -n "$host" -o %T 2>/dev/null | head -1 || true)
    case $state in idle|mixed|allocated) break ;; esac
    sleep 0.1
  done
  case $state in
    idle|mixed|allocated) ;;
    *) die "node $host is '${state:-unknown}' after 30 s; see $LOG/slurmctld.log and $LOG/slurmd.log" ;;
  esac
  echo "local SLURM cluster up: node $host ($state); export SLURM_CONF=$CONF"
}

stop() {
  if alive "$RUN/slurmctld.pid" slurmctld; then
    SLURM_CONF=$CONF scancel --full --quiet --user=root 2>/dev/null || true
    for i in $(seq 100); do  # slurmstepd and job processes outlive slurmd: let the jobs end first
      [ -z "$(SLURM_CONF=$CONF squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_daemon "$RUN/slurmd.pid" slurmd
  stop_daemon "$RUN/slurmctld.pid" slurmctld
  stop_daemon "$RUN/munged.pid" munged
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ] && rm -f /etc/slurm/slurm.conf
  [ "$(readlink /etc/slurm/gres.conf 2>/dev/null)" = "$ETC/gres.conf" ] && rm -f /etc/slurm/gres.conf
  echo "local SLURM cluster stopped (state kept in $BASE)"
}

status() {
  local d
  for d in munged slurmctld slurmd; do
    if alive "$RUN/$d.pid" "$d"; then echo "$d: running (pid $(cat "$RUN/$d.pid"))"; else echo "$d: stopped"; fi
  done
  alive "$RUN/slurmctld.pid" slurmctld && SLURM_CONF=$CONF sinfo
  return 0
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
