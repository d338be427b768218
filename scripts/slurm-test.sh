#!/usr/bin/env bash
# slurm-test.sh — end-to-end test of ccsim's Slurm scale-out, as CI runs it.
#
# Starts a private one-node Slurm cluster on localhost (scripts/slurm-cluster.sh),
# has ccsim write a sharded job array + dependent merge job for a small sweep
# (`ccsim sweep slurm SPEC --shards 3 --out W/cluster`), submits them with the
# generated submit.sh, waits for both jobs to leave the queue, checks they
# COMPLETED with exit code 0:0, then runs the same sweep locally
# (`ccsim sweep SPEC --out W/local`) and checks that results.csv, summary.md,
# runs/*.json and plots/*.svg are byte-identical between the two. Prints the
# time of each phase. The cluster is always stopped on exit.
#
# Run as root (installs Slurm with apt if missing):  scripts/slurm-test.sh
# Environment:
#   CCSIM=PATH          use this ccsim binary instead of building one with
#                       `cargo build --release --quiet` (which respects
#                       CARGO_TARGET_DIR)
#   SPEC=PATH           sweep spec (default tests/data/sweep-small.toml)
#   SHARDS=N            number of array tasks (default 3)
#   SLURM_TEST_TIMEOUT  seconds to wait for the jobs to leave the queue (600)
#   KEEP=1              keep the work dir (cluster state, logs, outputs)
#
# Slurm version: 22.05.8 (Debian 12). Measured on the 2-core CI machine kind:
#   build (cargo build --release, warm target dir) ............... ~73 s
#   install: 0 when installed; 4.6 s with apt lists; 9.2 s on a fresh
#            machine (apt-get update + install)
#   cluster start (node idle) ..................................... 0.1-1.4 s
#   jobs, submit to both out of the queue, 3 shards + merge ....... 4-5.5 s
#     (mostly Slurm: ~3 s to slurmctld's first scheduling pass, ~1 s per wave)
#   local run (ccsim sweep tests/data/sweep-small.toml, 24 runs) .. 0.1 s
#   whole script without build: ~6 s installed, ~15 s fresh machine
# Exits 0 and prints "slurm-test: PASS ..." on success; on failure prints
# what failed (job records and shard logs, or the differing files) and exits 1.
set -euo pipefail

PROG=slurm-test
die() { echo "$PROG: FAIL: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
CLUSTER_SH=$ROOT/scripts/slurm-cluster.sh
SPEC=${SPEC:-$ROOT/tests/data/sweep-small.toml}
SHARDS=${SHARDS:-3}
TIMEOUT=${SLURM_TEST_TIMEOUT:-600}
T_ALL=$EPOCHREALTIME
declare -a TIMINGS=()
timing() { # phase seconds [note]
  TIMINGS+=("$(printf '%-14s %6s s%s' "$1" "$2" "${3:+ $3}")")
  log "$1: $2 s${3:+ $3}"
}

[[ $SHARDS =~ ^[1-9][0-9]*$ ]] || die "SHARDS must be a positive integer, got '$SHARDS'"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "SLURM_TEST_TIMEOUT must be a positive integer, got '$TIMEOUT'"
[[ $(id -u) -eq 0 ]] || die "must run as root (the cluster script installs and runs Slurm)"
[[ -f $SPEC ]] || die "sweep spec not found: $SPEC (set SPEC=...)"
SPEC=$(cd -- "$(dirname -- "$SPEC")" && pwd -P)/$(basename -- "$SPEC")

# --- ccsim binary -------------------------------------------------------------
if [[ -n ${CCSIM:-} ]]; then
  [[ -x $CCSIM ]] || die "CCSIM=$CCSIM is not an executable file"
  CCSIM=$(cd -- "$(dirname -- "$CCSIM")" && pwd -P)/$(basename -- "$CCSIM")
  log "using CCSIM=$CCSIM"
else
  t0=$EPOCHREALTIME
  log "building ccsim (cargo build --release --quiet) ..."
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
  target=${CARGO_TARGET_DIR:-target}
  [[ $target == /* ]] || target=$ROOT/$target
  CCSIM=$target/release/ccsim
  [[ -x $CCSIM ]] || die "built ccsim not found at $CCSIM"
  timing build "$(elapsed "$t0")"
fi

# --- work dir + cluster, torn down on any exit ------------------------------------
W=$(mktemp -d /tmp/ccsim-slurm-test.XXXXXX)
STATE=$W/slurm-state
cleanup() {
  local rc=$?
  trap - EXIT
  bash "$CLUSTER_SH" stop "$STATE" || log "warning: '$CLUSTER_SH stop $STATE' failed"
  if [[ ${KEEP:-0} == 1 ]]; then
    log "KEEP=1: work dir kept at $W"
  else
    rm -rf -- "$W"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export_line=$(bash "$CLUSTER_SH" start "$STATE") || die "could not start the Slurm cluster (see messages above)"
[[ $export_line == "export SLURM_CONF="* ]] || die "unexpected output from slurm-cluster.sh start: $export_line"
export SLURM_CONF=${export_line#export SLURM_CONF=}
# install=SECONDS and start=SECONDS, measured by slurm-cluster.sh.
t_install=$(sed -n 's/^install=//p' "$STATE/timings")
t_start=$(sed -n 's/^start=//p' "$STATE/timings")
if [[ $t_install == 0 ]]; then timing install 0 "(Slurm already installed)"; else timing install "$t_install"; fi
timing cluster-start "$t_start"

# --- sharded sweep on the cluster -----------------------------------------------
t0=$EPOCHREALTIME
CL=$W/cluster
"$CCSIM" sweep slurm "$SPEC" --shards "$SHARDS" --out "$CL" --ccsim "$CCSIM" \
  || die "'ccsim sweep slurm $SPEC --shards $SHARDS --out $CL' failed"
for f in array.sbatch merge.sbatch submit.sh; do
  [[ -s $CL/slurm/$f ]] || die "ccsim sweep slurm did not write $CL/slurm/$f"
done
grep -q -- "--array=0-$((SHARDS - 1))\b" "$CL/slurm/array.sbatch" \
  || die "$CL/slurm/array.sbatch has no '--array=0-$((SHARDS - 1))' line"

submit_out=$(cd "$W" && bash "$CL/slurm/submit.sh") \
  || die "$CL/slurm/submit.sh failed (output: ${submit_out:-none})"
log "submit.sh: $submit_out"
line=$(grep -E '^array=[0-9]+ merge=[0-9]+$' <<<"$submit_out" | tail -n 1) \
  || die "submit.sh did not print a line 'array=<id> merge=<id>'; it printed: $submit_out"
ARRAY_ID=${line#array=}; ARRAY_ID=${ARRAY_ID%% *}
MERGE_ID=${line##*merge=}
log "array job $ARRAY_ID, merge job $MERGE_ID"

# One line per job record: the fields that tell what happened to it.
job_summary() { # id
  timeout 10 scontrol -o show job "$1" 2>&1 \
    | grep -oE '(^JobId|ArrayTaskId|JobName|JobState|Reason|Dependency|ExitCode|RunTime|StdOut)=[^ ]*' \
    | awk -F= '$1 == "JobId" && NR > 1 { printf "\n" } { printf "%s ", $0 } END { printf "\n" }'
}

# Show the jobs' records and logs (the stdout/stderr files scontrol names,
# plus any *.out/*.err/*.log the sweep wrote), then the slurmd log.
show_failure() {
  local id rec path
  declare -A seen=()
  for id in "$ARRAY_ID" "$MERGE_ID"; do
    echo "----- scontrol show job $id -----" >&2
    job_summary "$id" >&2 || true
  done
  while read -r rec; do
    while read -r path; do
      [[ -f $path && -z ${seen[$path]:-} ]] || continue
      seen[$path]=1
      echo "----- $path -----" >&2
      tail -n 100 "$path" >&2 || true
    done < <(grep -oE '(StdOut|StdErr)=[^ ]+' <<<"$rec" | cut -d= -f2-)
  done < <(timeout 10 scontrol -o show job "$ARRAY_ID" 2>/dev/null; timeout 10 scontrol -o show job "$MERGE_ID" 2>/dev/null)
  while IFS= read -r -d '' path; do
    [[ -z ${seen[$path]:-} ]] || continue
    echo "----- $path -----" >&2
    tail -n 100 "$path" >&2 || true
  done < <(find "$W" -maxdepth 6 -path "$STATE" -prune -o -type f \( -name '*.out' -o -name '*.err' -o -name '*.log' \) -print0 2>/dev/null | sort -zu)
  echo "----- $STATE/log/slurmd.log (last 30 lines) -----" >&2
  tail -n 30 "$STATE/log/slurmd.log" >&2 || true
}

# Wait until neither job is in the queue (pending/running/completing).
deadline=$(( ${EPOCHREALTIME%.*} + TIMEOUT ))
last="" fails=0
while :; do
  if q=$(timeout 10 squeue -h -j "$ARRAY_ID,$MERGE_ID" -o '%i %T %r' 2>&1); then
    fails=0
    [[ -z $q ]] && break
    if [[ $q != "$last" ]]; then
      log "queue: $(tr '\n' ';' <<<"$q")"
      last=$q
    fi
  else
    fails=$((fails + 1))
    (( fails < 10 )) || { show_failure; die "squeue -j $ARRAY_ID,$MERGE_ID keeps failing: $q"; }
  fi
  if (( ${EPOCHREALTIME%.*} >= deadline )); then
    show_failure
    die "jobs $ARRAY_ID/$MERGE_ID still queued after ${TIMEOUT}s (SLURM_TEST_TIMEOUT); last queue: $(tr '\n' ';' <<<"$q")"
  fi
  sleep 0.5
done

# Final states. scontrol keeps finished jobs for MinJobAge (1 h in our
# slurm.conf); `scontrol -o show job ARRAY` prints one line per array task.
problems=()
check_job() { # id expected_records what
  local id=$1 want=$2 what=$3 recs n bad
  if ! recs=$(timeout 10 scontrol -o show job "$id" 2>&1); then
    problems+=("scontrol show job $id ($what job) failed: $recs"); return
  fi
  n=$(grep -c 'JobState=' <<<"$recs" || true)
  [[ $n -eq $want ]] || problems+=("$what job $id: expected $want job record(s), scontrol shows $n")
  while read -r bad; do
    [[ -n $bad ]] || continue
    problems+=("$what job $id: $(grep -oE '(^JobId|ArrayTaskId|JobState|Reason|ExitCode)=[^ ]+' <<<"$bad" | tr '\n' ' ')")
  done < <(grep -vE 'JobState=COMPLETED .*ExitCode=0:0( |$)' <<<"$recs" || true)
}
check_job "$ARRAY_ID" "$SHARDS" "array"
check_job "$MERGE_ID" 1 "merge"
if (( ${#problems[@]} > 0 )); then
  show_failure
  for p in "${problems[@]}"; do log "$p"; done
  die "the Slurm jobs did not all end COMPLETED with ExitCode=0:0 (details above)"
fi
timing jobs "$(elapsed "$t0")"
log "array ($SHARDS tasks) and merge jobs COMPLETED with ExitCode=0:0"

# --- the same sweep locally -----------------------------------------------------
t0=$EPOCHREALTIME
LO=$W/local
"$CCSIM" sweep "$SPEC" --out "$LO" || die "local run 'ccsim sweep $SPEC --out $LO' failed"
timing local-run "$(elapsed "$t0")"

# --- compare: results.csv, summary.md, runs/*.json, plots/*.svg -------------------
t0=$EPOCHREALTIME
for d in "$LO" "$CL"; do
  for f in results.csv summary.md; do
    [[ -f $d/$f ]] || die "$d/$f is missing"
  done
done
compgen -G "$LO/runs/*.json" >/dev/null || die "local run wrote no $LO/runs/*.json"
# Every result file present in either tree (union), as paths relative to it.
mapfile -t files < <(
  for d in "$LO" "$CL"; do
    (cd "$d" && find . -path ./slurm -prune -o -path ./shards -prune -o -type f \
      \( -path ./results.csv -o -path ./summary.md -o -path './runs/*.json' -o -path './plots/*.svg' \) -print)
  done | sed 's|^\./||' | LC_ALL=C sort -u)
ndiff=0
for f in "${files[@]}"; do
  if [[ ! -f $CL/$f ]]; then
    log "only in local run: $f"; ndiff=$((ndiff + 1))
  elif [[ ! -f $LO/$f ]]; then
    log "only in cluster run: $f"; ndiff=$((ndiff + 1))
  elif ! cmp -s "$CL/$f" "$LO/$f"; then
    log "differs: $f"
    # The first 3 differing files in full-ish, the rest by name only.
    (( ndiff >= 3 )) || diff -u "$LO/$f" "$CL/$f" | head -n 30 >&2 || true
    ndiff=$((ndiff + 1))
  fi
done
(( ndiff == 0 )) || die "$ndiff of ${#files[@]} result files differ between the cluster run ($CL) and the local run ($LO) (rerun with KEEP=1 to inspect them)"
log "all ${#files[@]} result files (results.csv, summary.md, runs/*.json, plots/*.svg) are byte-identical"
timing compare "$(elapsed "$t0")"
timing total "$(elapsed "$T_ALL")"

echo "== $PROG timings =="
printf '%s\n' "${TIMINGS[@]}"
echo "$PROG: PASS ($SHARDS shards, ${#files[@]} files identical)"
