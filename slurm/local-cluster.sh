#!/usr/bin/env bash
# A real SLURM cluster of one or more nodes on this machine, for the tests and for trying `ibsr-nnunet submit`.
#
# Usage (as root; needs Debian's slurmctld, slurmd, slurm-client and munge packages, no systemd):
#   slurm/local-cluster.sh start    # munged + slurmctld + one slurmd per node, ready in seconds; idempotent
#   slurm/local-cluster.sh stop     # cancels every job, then stops the daemons (state is kept for the next start)
#   slurm/local-cluster.sh status   # the daemons' pids and sinfo
#   slurm/local-cluster.sh kill-node NAME   # lose node NAME: SIGKILL to its slurmd, its slurmstepds and every
#                                           # process of the jobs SLURM runs there (a cluster of several nodes)
#   export SLURM_CONF=/tmp/ibsr-slurm-local/etc/slurm.conf   # printed by start; needed unless /etc/slurm/slurm.conf
#                                                            # was absent and start linked it there
# Settings (environment):
#   IBSR_SLURM_BASE   folder holding every file of the cluster (default /tmp/ibsr-slurm-local)
#   IBSR_SLURM_NODES  nodes (default 1: one node named `hostname -s`; N > 1: nodes n1..nN, one `slurmd -N nI` each)
#   IBSR_SLURM_CPUS   CPUs the cluster offers to jobs (default: all; fewer makes jobs wait instead of thrash),
#                     shared out between the nodes (at least 1 each)
#   IBSR_SLURM_GPUS   fake GPUs offered as GRES gpu (character devices made with mknod; default 2): one number for
#                     every node, or one per node, e.g. 2,0 (the second node has none)
#   IBSR_SLURM_CLEAN=1  start from an empty state folder (job IDs restart at 1)
#   IBSR_SLURM_PORT   slurmctld's port (default 6817); slurmd listens on the next one, or, with several nodes, node
#                     nI on PORT+10000+I (16818, 16819, ... by default): a second cluster needs another BASE and PORT
# The cluster: partition `debug` (default), partition `urgent` (higher priority, preempts `debug` by requeueing
# its jobs, GraceTime 10 s), cred_expire=5 and a scheduling pass every second, so a requeued job runs again
# ~6 s after it left (SLURM's defaults: 120 s, then up to 30 s more),
# KillWait=5, MinJobAge=3600 (finished jobs stay visible to squeue/scontrol for an hour), no accounting database.
# Several nodes: each has its own node-local scratch folder, $IBSR_SLURM_BASE/scratch/NODE, which its jobs see as
# $SLURM_TMPDIR (set by a TaskProlog, as clusters with node-local disks do); SlurmdTimeout=10, so a node that stops
# answering is DOWN within ~20 s and its --requeue jobs go back to the queue (a real cluster's default is 300 s).
# All nodes share this host's file system, hostname and PIDs: a job tells its node by $SLURMD_NODENAME.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in /usr/sbin, not always on a non-login PATH

BASE=${IBSR_SLURM_BASE:-/tmp/ibsr-slurm-local}
ETC=$BASE/etc
CONF=$ETC/slurm.conf
RUN=$BASE/run
LOG=$BASE/log
MUNGE=$BASE/munge
SOCKET=$MUNGE/munge.socket.2
NODES_FILE=$ETC/nodes  # the node names of the cluster as written, one per line (stop and kill-node read it)
PORT=${IBSR_SLURM_PORT:-6817}
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "local-cluster: IBSR_SLURM_PORT=$PORT is not a port number" >&2; exit 1; }

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

node_names() {  # the names the settings give, one per line
  local n=${IBSR_SLURM_NODES:-1} i
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "IBSR_SLURM_NODES=$n is not a whole number of nodes, 1 or more"
  if [ "$n" = 1 ]; then hostname -s; else for (( i = 1; i <= n; i++ )); do echo "n$i"; done; fi
}

written_nodes() {  # the nodes of the cluster as start wrote it (the settings' when it never started)
  if [ -s "$NODES_FILE" ]; then cat "$NODES_FILE"; else node_names; fi
}

several() { [ "$(written_nodes | wc -l)" -gt 1 ]; }

slurmd_pidfile() {  # slurmd_pidfile NODE
  if several; then echo "$RUN/slurmd-$1.pid"; else echo "$RUN/slurmd.pid"; fi
}

write_config() {
  local host probe cpus mem n share i g name count dev gres_line node_lines="" spool pidfile logfile extra="" list
  local -a names gpus
  host=$(hostname -s)
  probe=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$probe")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$probe")
  cpus=${IBSR_SLURM_CPUS:-$cpus}
  mapfile -t names < <(node_names)
  n=${#names[@]}
  IFS=, read -r -a gpus <<<"${IBSR_SLURM_GPUS:-2}"
  if [ "${#gpus[@]}" -ne 1 ] && [ "${#gpus[@]}" -ne "$n" ]; then
    die "IBSR_SLURM_GPUS=${IBSR_SLURM_GPUS} gives ${#gpus[@]} GPU counts for $n nodes; give one, or one per node"
  fi
  share=$(( cpus / n )); [ "$share" -ge 1 ] || share=1
  mem=$(( mem * 9 / 10 / n ))
  mkdir -p "$BASE/dev"
  : > "$ETC/gres.conf.new"
  echo "AutoDetect=off" >> "$ETC/gres.conf.new"
  for (( i = 0; i < n; i++ )); do
    name=${names[$i]}
    count=${gpus[0]}; [ "${#gpus[@]}" -eq "$n" ] && count=${gpus[$i]}
    [[ "$count" =~ ^[0-9]+$ ]] || die "IBSR_SLURM_GPUS=${IBSR_SLURM_GPUS}: '$count' is not a whole number of GPUs"
    for (( g = 0; g < count; g++ )); do
      # a character device is what SLURM wants (1,3 = /dev/null's numbers); without CAP_MKNOD link /dev/null itself
      dev=$BASE/dev/nvidia$g; [ "$n" = 1 ] || dev=$BASE/dev/$name-nvidia$g
      [ -c "$dev" ] || mknod "$dev" c 1 3 2>/dev/null || ln -sfn /dev/null "$dev"
      echo "NodeName=$name Name=gpu File=$dev" >> "$ETC/gres.conf.new"
    done
    gres_line=""; [ "$count" -gt 0 ] && gres_line=" Gres=gpu:$count"
    if [ "$n" = 1 ]; then
      node_lines+="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres_line State=UNKNOWN"$'\n'
    else
      node_lines+="NodeName=$name NodeHostname=$host NodeAddr=127.0.0.1 Port=$(( PORT + 10001 + i )) CPUs=$share"
      node_lines+=" RealMemory=$mem$gres_line State=UNKNOWN"$'\n'
      mkdir -p "$BASE/scratch/$name" "$BASE/state/d/$name"
    fi
  done
  mv "$ETC/gres.conf.new" "$ETC/gres.conf"
  spool=$BASE/state/d; pidfile=$RUN/slurmd.pid; logfile=$LOG/slurmd.log
  if [ "$n" -gt 1 ]; then
    spool=$BASE/state/d/%n; pidfile=$RUN/slurmd-%n.pid; logfile=$LOG/slurmd-%n.log
    printf '%s\n' '#!/bin/bash' \
      '# every task of a job sees its own node'"'"'s scratch folder, as on clusters with node-local disks' \
      "echo \"export SLURM_TMPDIR=$BASE/scratch/\$SLURMD_NODENAME\"" > "$ETC/task-prolog.sh"
    chmod 755 "$ETC/task-prolog.sh"
    extra="TaskProlog=$ETC/task-prolog.sh"$'\n'"SlurmdTimeout=10"$'\n'
  fi
  list=$(IFS=,; echo "${names[*]}")
  printf '%s\n' "${names[@]}" > "$NODES_FILE"
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
SlurmdSpoolDir=$spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$pidfile
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$logfile
SlurmctldPort=$PORT
SlurmdPort=$(( PORT + 1 ))
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
${extra}${node_lines}PartitionName=debug Nodes=$list Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$list MaxTime=INFINITE State=UP PriorityTier=10 GraceTime=10
EOF
}

start_slurmd() {  # start_slurmd NODE
  local pidfile
  pidfile=$(slurmd_pidfile "$1")
  alive "$pidfile" slurmd && return 0
  if several; then slurmd -f "$CONF" -N "$1"; else slurmd -f "$CONF"; fi
}

wait_idle() {  # wait_idle NODE: up to 30 s for the node to take jobs
  local state="" i
  for i in $(seq 300); do
    state=$(SLURM_CONF=$CONF sinfo -h -N -n "$1" -o %T 2>/dev/null | head -1 || true)
    case $state in idle|mixed|allocated) return 0 ;; esac
    sleep 0.1
  done
  die "node $1 is '${state:-unknown}' after 30 s; see $LOG/slurmctld.log and $LOG/slurmd*.log"
}

start() {
  [ "$(id -u)" = 0 ] || die "run me as root (the daemons run as root, with no slurm user)"
  for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
  done
  if alive "$RUN/slurmctld.pid" slurmctld && [ "$(written_nodes)" != "$(node_names)" ]; then
    die "the running cluster has nodes $(written_nodes | paste -sd, -); run \`$0 stop\` before starting it with others"
  fi
  if [ "${IBSR_SLURM_CLEAN:-0}" = 1 ] && ! alive "$RUN/slurmctld.pid" slurmctld; then
    rm -rf "$BASE/state" "$BASE/scratch"
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
  local node
  for node in $(written_nodes); do start_slurmd "$node"; done
  for node in $(written_nodes); do
    # a node killed by kill-node and started again comes back DOWN: ReturnToService=2 returns it once it registers
    SLURM_CONF=$CONF scontrol update nodename="$node" state=resume 2>/dev/null || true
    wait_idle "$node"
  done
  echo "local SLURM cluster up: nodes $(written_nodes | paste -sd, -) ($(SLURM_CONF=$CONF sinfo -h -o %T | sort -u | paste -sd, -)); export SLURM_CONF=$CONF"
}

job_processes() {  # job_processes JOBID...: every process whose environment says it belongs to one of the jobs
  local pid environ job
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}; pid=${pid%/environ}
    job=$( { tr '\0' '\n' < "$environ"; } 2>/dev/null | sed -n 's/^SLURM_JOB_ID=//p' | head -1) || continue
    [ -n "$job" ] || continue
    for wanted in "$@"; do [ "$job" = "$wanted" ] && echo "$pid"; done
  done
}

kill_node() {  # kill_node NAME: the node's jobs (from SLURM), their processes and slurmstepds, then its slurmd
  local name=${1:-} jobs pids pid parent stepds="" pidfile
  [ -n "$name" ] || die "usage: $0 kill-node NAME (one of $(written_nodes | paste -sd, -))"
  written_nodes | grep -qx -- "$name" || die "no node $name in this cluster (it has $(written_nodes | paste -sd, -))"
  several || die "kill-node needs a cluster of several nodes (IBSR_SLURM_NODES=3 $0 start): the only node is the cluster"
  pidfile=$(slurmd_pidfile "$name")
  alive "$pidfile" slurmd || die "node $name's slurmd is not running"
  # SLURM's record of what runs on the node: every job (array tasks by their own job ID) with a step there
  jobs=$(SLURM_CONF=$CONF squeue -h -w "$name" -t RUNNING,COMPLETING -o %A 2>/dev/null | sort -u) || jobs=""
  pids=$( [ -z "$jobs" ] || job_processes $jobs)
  for pid in $pids; do  # each process's slurmstepd: the ancestor that started the job's step
    parent=$pid
    while [ -n "$parent" ] && [ "$parent" -gt 1 ]; do
      if [ "$(cat "/proc/$parent/comm" 2>/dev/null)" = slurmstepd ]; then stepds+=" $parent"; break; fi
      parent=$(awk '{print $4}' "/proc/$parent/stat" 2>/dev/null) || break
    done
  done
  kill -KILL "$(cat "$pidfile")" 2>/dev/null || true  # first: nothing on the node reports back or cleans up
  # shellcheck disable=SC2086
  [ -z "$stepds$pids" ] || kill -KILL $stepds $pids 2>/dev/null || true
  rm -f "$pidfile"
  echo "killed node $name: slurmd, $(wc -w <<<"$stepds") slurmstepd(s), $(wc -w <<<"$pids") job process(es) of job(s) $(echo $jobs | tr ' ' ,)"
}

stop() {
  if alive "$RUN/slurmctld.pid" slurmctld; then
    SLURM_CONF=$CONF scancel --full --quiet --user=root 2>/dev/null || true
    for i in $(seq 100); do  # slurmstepd and job processes outlive slurmd: let the jobs end first
      [ -z "$(SLURM_CONF=$CONF squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  local node
  for node in $(written_nodes); do stop_daemon "$(slurmd_pidfile "$node")" slurmd; done
  stop_daemon "$RUN/slurmctld.pid" slurmctld
  stop_daemon "$RUN/munged.pid" munged
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ] && rm -f /etc/slurm/slurm.conf
  [ "$(readlink /etc/slurm/gres.conf 2>/dev/null)" = "$ETC/gres.conf" ] && rm -f /etc/slurm/gres.conf
  rm -f "$NODES_FILE"
  echo "local SLURM cluster stopped (state kept in $BASE)"
}

status() {
  local d node
  for d in munged slurmctld; do
    if alive "$RUN/$d.pid" "$d"; then echo "$d: running (pid $(cat "$RUN/$d.pid"))"; else echo "$d: stopped"; fi
  done
  for node in $(written_nodes); do
    if alive "$(slurmd_pidfile "$node")" slurmd; then echo "slurmd $node: running (pid $(cat "$(slurmd_pidfile "$node")"))"
    else echo "slurmd $node: stopped"; fi
  done
  alive "$RUN/slurmctld.pid" slurmctld && SLURM_CONF=$CONF sinfo
  return 0
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill-node) kill_node "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|kill-node NAME" >&2; exit 2 ;;
esac
