#!/usr/bin/env bash
# slurm-cluster.sh — a throwaway one-node Slurm cluster on localhost, for
# testing ccsim's Slurm scale-out end to end (used by scripts/slurm-test.sh
# and CI). Runs as root, needs no systemd and no cgroups.
#
#   scripts/slurm-cluster.sh start STATE_DIR
#       Installs Slurm + MUNGE with apt if missing, creates /etc/munge/munge.key
#       if missing, then starts — all in the background, all state, logs,
#       sockets and pid files under STATE_DIR — a private munged, slurmctld and
#       slurmd with a generated STATE_DIR/slurm.conf, and waits (timeout
#       SLURM_START_TIMEOUT, default 60 s) until the node is idle.
#       On success the only line on stdout is
#           export SLURM_CONF=STATE_DIR/slurm.conf
#       so a caller can  eval "$(scripts/slurm-cluster.sh start DIR)"
#       (progress goes to stderr). Phase timings are written to
#       STATE_DIR/timings as KEY=SECONDS lines (install, start).
#   scripts/slurm-cluster.sh stop STATE_DIR
#       Cancels the jobs of this private cluster, then stops exactly the
#       processes recorded in STATE_DIR/pids (TERM, then KILL after
#       SLURM_STOP_GRACE seconds, default 5). Idempotent. Nothing else on the
#       machine is touched.
#
# Environment: SLURMCTLD_PORT (default 6817), SLURMD_PORT (default 6818),
# SLURM_START_TIMEOUT (60), SLURM_STOP_GRACE (5).
#
# Slurm version: 22.05.8 (Debian 12 packages slurmctld slurmd slurm-client,
# munge 0.5.15).
# Measured on the 2-core CI machine kind:
#   install, apt package lists present .............................. 4.6 s
#   install on a fresh machine (install fails, apt-get update, retry)  9.2 s
#   start when installed (munged, slurmctld, slurmd up; node idle) 0.1-1.4 s
#   stop (cancel jobs, TERM the three daemons) ..................... ~0.3 s
#
# Slurm quirks handled here (see the comments in write_conf):
#   - slurmctld refuses to run unless SlurmctldHost names this host, so
#     `hostname -s` is used, with the address 127.0.0.1 so no DNS is needed.
#   - the node's CPUs/topology/RealMemory come from `slurmd -C`; a RealMemory
#     above what slurmd measures (e.g. computed from `free`) drains the node.
#   - the private munged socket is named in AuthInfo=socket=..., which daemons
#     and client commands all read from slurm.conf; no /run/munge is needed and
#     a system munged, if any, is left alone.
#   - DependencyParameters=kill_invalid_depend: otherwise a job depending
#     (afterok) on a failed job stays PENDING forever instead of being
#     cancelled, and the test would only notice at its timeout.
#   - MinJobAge=3600: finished jobs stay visible to `scontrol show job` (no
#     sacct without slurmdbd) long after the 300 s default.
#   - SchedulerParameters=batch_sched_delay=0: with the default 3 s every
#     wave of jobs (array tasks beyond the 2 cores, then the merge) waited
#     ~3 s. slurmctld's very first scheduling pass still comes ~3 s after it
#     starts, whatever the config; that is in the test's "jobs" time.
#   - MailProg=/bin/true: the default /bin/mail is not installed (log error).
#   - no cgroups: proctrack/linuxproc, task/none, jobacct_gather/none.
#   - slurmd logs "can not load PMIx library" errors at start: harmless, it
#     probes every MPI plugin; MpiDefault=none is what jobs use.
#   - apt: the packages' init scripts would start a system munged/slurmctld
#     on install; a temporary /usr/sbin/policy-rc.d (exit 101) prevents that
#     when the image has none.
#   - in this sandbox PID 1 does not reap orphans at once, so after stop
#     `pgrep -a slurm` may list our daemons briefly as "<defunct>" zombies:
#     dead, holding nothing; the script treats zombies as stopped.
set -euo pipefail

PROG=slurm-cluster
die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

# Seconds elapsed since $1 (an $EPOCHREALTIME value), with 1 decimal.
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

usage() { echo "usage: $0 start|stop STATE_DIR" >&2; exit 2; }

[[ $# -eq 2 ]] || usage
ACTION=$1
[[ $ACTION == start || $ACTION == stop ]] || usage
if [[ $ACTION == stop && ! -d $2 ]]; then
  log "nothing to stop: no state dir $2"
  exit 0
fi
mkdir -p -- "$2" || die "cannot create state dir $2"
STATE_DIR=$(cd -- "$2" && pwd -P)
CONF=$STATE_DIR/slurm.conf
PIDS=$STATE_DIR/pids
LOGS=$STATE_DIR/log
MUNGE_SOCKET=$STATE_DIR/munge/munge.socket.2
START_TIMEOUT=${SLURM_START_TIMEOUT:-60}
STOP_GRACE=${SLURM_STOP_GRACE:-5}
export SLURM_CONF=$CONF

# Field 22 of /proc/PID/stat (start time in clock ticks since boot), so that a
# recorded PID reused by an unrelated process after ours died is never killed.
# Fails if PID does not exist or is a zombie (dead, not yet reaped).
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }                 # drop "pid (comm) ", comm may hold spaces
  # shellcheck disable=SC2086
  set -- $stat
  [[ $1 != Z && $1 != X ]] || return 1  # field 3: state
  echo "${20}"                      # field 22 overall = 20th after comm
}

# True if PID is alive and is the very process we recorded (same start time).
is_ours() {
  local pid=$1 start=$2 now
  now=$(proc_start "$pid") || return 1
  [[ $now == "$start" ]]
}

# Start a daemon in the background, detached from our stdin/stdout/stderr (so
# a caller reading our output through a pipe or $(...) does not hang on it),
# and record "NAME PID STARTTIME" in STATE_DIR/pids.
spawn() {
  local name=$1; shift
  "$@" </dev/null >>"$LOGS/$name.out" 2>&1 &
  local pid=$!
  local start
  if ! start=$(proc_start "$pid"); then
    print_logs
    die "$name exited at once (logs above)"
  fi
  echo "$name $pid $start" >>"$PIDS"
  log "started $name (pid $pid)"
}

# Daemon logs to stderr. NAME.out (the daemon's own stdout/stderr) is shown
# only when there is no non-empty NAME.log, which then holds the same lines.
print_logs() {
  local f
  for f in "$LOGS"/*.log "$LOGS"/*.out; do
    [[ -f $f ]] || continue
    [[ $f == *.out && -s ${f%.out}.log ]] && continue
    echo "----- $f (last 40 lines) -----" >&2
    tail -n 40 "$f" >&2 || true
  done
}

install_slurm() {
  local t0=$EPOCHREALTIME missing=() c
  for c in slurmctld slurmd sbatch squeue sinfo scontrol scancel munged munge unmunge mungekey; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Slurm already installed ($(slurmctld -V))"
    echo "install=0" >>"$STATE_DIR/timings"
    return
  fi
  log "installing Slurm (missing: ${missing[*]}) ..."
  command -v apt-get >/dev/null || die "apt-get not found; install slurmctld slurmd slurm-client munge by hand"
  # Keep the packages' init scripts from starting system-wide munged,
  # slurmctld and slurmd during the install (as Docker-style images do).
  local added_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  local pkgs=(slurmctld slurmd slurm-client munge) rc=0
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >"$LOGS/apt.log" 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    { apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}"; } >>"$LOGS/apt.log" 2>&1 || rc=$?
  fi
  [[ -n $added_policy ]] && rm -f /usr/sbin/policy-rc.d
  if [[ $rc -ne 0 ]]; then
    tail -n 30 "$LOGS/apt.log" >&2
    die "apt-get install ${pkgs[*]} failed (exit $rc); full log in $LOGS/apt.log"
  fi
  for c in "${missing[@]}"; do
    command -v "$c" >/dev/null 2>&1 || die "$c still missing after installing ${pkgs[*]}"
  done
  local dt; dt=$(elapsed "$t0")
  echo "install=$dt" >>"$STATE_DIR/timings"
  log "installed $(slurmctld -V) in ${dt}s"
}

ensure_munge_key() {
  local key=/etc/munge/munge.key
  if [[ ! -s $key ]]; then
    log "creating MUNGE key $key"
    install -d -m 0700 -o munge -g munge /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$key" || die "mungekey --create --keyfile=$key failed"
    else
      dd if=/dev/urandom of="$key" bs=1 count=1024 status=none || die "cannot write $key"
    fi
  fi
  chown munge:munge "$key" || die "cannot chown munge:munge $key"
  chmod 0400 "$key" || die "cannot chmod 0400 $key"
}

start_munged() {
  install -d -m 0755 "$STATE_DIR/munge"
  # Our own munged on our own socket (named in slurm.conf's AuthInfo), so a
  # system munged on /run/munge, if any, is neither needed nor disturbed.
  # It runs as root, which needs --force (it only warns that the key is owned
  # by the munge user rather than by root).
  spawn munged munged --foreground --force \
    --socket="$MUNGE_SOCKET" \
    --pid-file="$STATE_DIR/munge/munged.pid" \
    --seed-file="$STATE_DIR/munge/munged.seed" \
    --log-file="$LOGS/munged.log"
  local i
  for ((i = 0; i < 100; i++)); do
    if munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
      return
    fi
    sleep 0.1
  done
  print_logs
  die "munged did not answer on $MUNGE_SOCKET within 10 s"
}

write_conf() {
  local host node_line
  host=$(hostname -s) || die "hostname -s failed"
  [[ -n $host ]] || die "hostname -s is empty"
  # CPUs, board/socket/core/thread layout and RealMemory exactly as slurmd
  # measures them: a node configured with more memory than slurmd finds is
  # set DRAIN ("Low RealMemory"), so `free`/`/proc/meminfo` would be risky.
  node_line=$(slurmd -C 2>/dev/null | grep '^NodeName=') || die "slurmd -C failed"
  node_line=${node_line#NodeName=* }                 # keep "CPUs=... RealMemory=..."
  local cpus; cpus=$(nproc)
  [[ $node_line == *"CPUs=$cpus "* ]] || log "note: slurmd -C ($node_line) differs from nproc=$cpus; using slurmd -C"
  install -d -m 0755 "$STATE_DIR/ctld-state" "$STATE_DIR/slurmd-spool"
  cat >"$CONF" <<EOF
# Generated by scripts/slurm-cluster.sh — one-node test cluster on localhost.
ClusterName=ccsim-test
# Must name this host (slurmctld checks); the address avoids any DNS lookup.
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Our private munged (see start_munged); read by daemons and client commands.
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE_DIR/ctld-state
SlurmdSpoolDir=$STATE_DIR/slurmd-spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups on this machine: plain /proc process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# Start queued batch jobs as soon as resources free up; the default (3 s)
# adds up to ~3 s per wave (array tasks beyond the 2 cores, then the merge).
SchedulerParameters=batch_sched_delay=0
# A rebooted/restarted node comes back IDLE instead of DOWN.
ReturnToService=2
# Keep finished jobs for 'scontrol show job' (there is no sacct): 1 hour.
MinJobAge=3600
# Cancel a job whose dependency can never be met (e.g. afterok on a failed
# job) instead of leaving it PENDING forever.
DependencyParameters=kill_invalid_depend
KillWait=5
# No mail on this machine; the default /bin/mail is missing and logs an error.
MailProg=/bin/true
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 $node_line State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  NODE=$host
}

check_alive() {
  local name pid start
  while read -r name pid start; do
    is_ours "$pid" "$start" || { print_logs; die "$name (pid $pid) died during start-up (logs above)"; }
  done <"$PIDS"
}

start_cluster() {
  if [[ -s $PIDS ]]; then
    local name pid start
    while read -r name pid start; do
      is_ours "$pid" "$start" && die "a cluster is already running from $STATE_DIR ($name pid $pid); run '$0 stop $STATE_DIR' first"
    done <"$PIDS"
    rm -f "$PIDS"
  fi
  [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, runs slurmd)"
  local port
  for port in "${SLURMCTLD_PORT:-6817}" "${SLURMD_PORT:-6818}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port on 127.0.0.1 is already in use (another Slurm running?); pick free ports with SLURMCTLD_PORT=... SLURMD_PORT=..."
    fi
  done
  mkdir -p "$LOGS"
  rm -f "$LOGS"/*.log "$LOGS"/*.out
  # Whatever goes wrong from here on, stop what was started.
  trap '[[ -n ${STARTED_OK:-} ]] || stop_cluster' EXIT
  : >"$STATE_DIR/timings"
  install_slurm
  local t0=$EPOCHREALTIME
  ensure_munge_key
  start_munged
  write_conf
  spawn slurmctld slurmctld -D -f "$CONF"
  spawn slurmd slurmd -D -f "$CONF"
  local deadline state=""
  deadline=$(awk -v a="$EPOCHREALTIME" -v t="$START_TIMEOUT" 'BEGIN { printf "%d", a + t }')
  while :; do
    check_alive
    state=$(timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null || true)
    [[ $state == idle ]] && break
    if (( ${EPOCHREALTIME%.*} >= deadline )); then
      print_logs
      echo "----- sinfo -----" >&2
      timeout 10 sinfo -N -l >&2 || true
      die "node $NODE not idle after ${START_TIMEOUT}s (last state: '${state:-no answer from slurmctld}'); daemon logs above"
    fi
    sleep 0.2
  done
  local dt; dt=$(elapsed "$t0")
  echo "start=$dt" >>"$STATE_DIR/timings"
  log "cluster up in ${dt}s: node $NODE idle; SLURM_CONF=$CONF"
  STARTED_OK=1
  echo "export SLURM_CONF=$CONF"
}

stop_cluster() {
  if [[ ! -s $PIDS ]]; then
    log "nothing to stop in $STATE_DIR"
    return 0
  fi
  local name pid start ctld_alive=""
  local -a names=() pids=() starts=()
  while read -r name pid start; do
    names+=("$name"); pids+=("$pid"); starts+=("$start")
    [[ $name == slurmctld ]] && is_ours "$pid" "$start" && ctld_alive=1
  done <"$PIDS"

  # Cancel this private cluster's jobs first, so their slurmstepd and job
  # processes end before slurmd does (they are not children we could kill).
  if [[ -n $ctld_alive && -f $CONF ]]; then
    local jobs
    jobs=$(timeout 10 squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [[ -n ${jobs// } ]]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      local i
      for ((i = 0; i < 50; i++)); do
        [[ -z $(timeout 5 squeue -h -t all -o '%A %T' 2>/dev/null | grep -vE ' (CANCELLED|COMPLETED|FAILED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE)$' || true) ]] && break
        sleep 0.2
      done
    fi
  fi

  # Stop in reverse start order: slurmd, slurmctld, munged.
  local k
  for ((k = ${#pids[@]} - 1; k >= 0; k--)); do
    name=${names[k]} pid=${pids[k]} start=${starts[k]}
    if ! is_ours "$pid" "$start"; then
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while is_ours "$pid" "$start" && awk -v w="$waited" -v g="$STOP_GRACE" 'BEGIN { exit !(w < g) }'; do
      sleep 0.1
      waited=$(awk -v w="$waited" 'BEGIN { print w + 0.1 }')
    done
    if is_ours "$pid" "$start"; then
      log "$name (pid $pid) still alive after ${STOP_GRACE}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      is_ours "$pid" "$start" && log "warning: $name (pid $pid) survived SIGKILL"
    else
      log "stopped $name (pid $pid)"
    fi
  done
  mv -f "$PIDS" "$PIDS.stopped"
}

case $ACTION in
  start) start_cluster ;;
  stop) stop_cluster ;;
esac
