#!/usr/bin/env bash
# Build ccsim with profile-guided optimisation (PGO) under the `pgo` profile (fat LTO, one
# code-generation unit): an instrumented build runs a fixed set of built-in workloads,
# scenarios and a trace replay, and the final build uses that profile to lay out and inline the
# hot paths. Same source, same results: PGO and LTO change code layout and inlining, never what
# the code computes (this script checks a report against the instrumented build's). On issue
# #4's snp-churn case about a sixth faster than `cargo build --release` (docs/performance.md
# "Profile-guided build").
#
# Usage: scripts/build-pgo.sh    The binary is target/pgo/ccsim (under $CARGO_TARGET_DIR if
# set). About 5 minutes on 2 cores. Needs the llvm-profdata of the toolchain's LLVM: installed
# with `rustup component add llvm-tools` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  rustup component add llvm-tools
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/raw"

# 1. An instrumented build, in a directory of its own (its objects differ from the final ones).
RUSTFLAGS="-Cprofile-generate=$work/raw" \
  cargo build --profile pgo --quiet --target-dir "$target/pgo-instrumented" -p ccsim
inst="$target/pgo-instrumented/pgo/ccsim"

# 2. Training: every family of input the simulator runs. The default run's report is kept to
#    check the final binary against.
train() { "$inst" "$@" >/dev/null; }
"$inst" run --quiet --json "$work/default.json"
train run --quiet --policy split-on-assign
train run --quiet --workload snp-churn --param guests=16 --param guest_memory=4G \
  --set machine.memory=256G
train run --quiet --workload snp-churn --policy adjust-direct-map
train run --quiet --workload multi-tenant
train run --quiet --workload host-kernel
train run --quiet --workload qemu-process
train run --quiet --workload dma-streams
train run --quiet --workload vsm-boot
train run --quiet --workload tdx-churn --preset spr
train run --quiet --workload tdx-boot --preset spr
train run --quiet --workload snp-launch --preset zen5
train check --quiet traces/scenarios
for race in traces/scenarios/tdx/races/*.ccs; do
  train explore "$race"
  train explore "$race" --protocol naive --no-retry || true  # finds the race: exit 1
done
train trace import --from lackey traces/samples/lackey-sort/trace.lackey.zst \
  --vapa traces/samples/lackey-sort/vapa.txt --as host-process:1 -o "$work/sort.cct"
train run --quiet "$work/sort.cct"

# 3. The optimised build from the merged profile.
"$profdata" merge -o "$work/merged.profdata" "$work/raw"
RUSTFLAGS="-Cprofile-use=$work/merged.profdata" \
  cargo build --profile pgo --quiet --target-dir "$target" -p ccsim
bin="$target/pgo/ccsim"

# 4. Same results.
"$bin" run --quiet --json "$work/default-pgo.json"
if ! cmp -s "$work/default.json" "$work/default-pgo.json"; then
  echo "build-pgo: the PGO binary's default report differs from the instrumented build's" >&2
  exit 1
fi
echo "$bin"
