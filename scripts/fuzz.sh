#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 15: the four targets in a minute, for CI).
# Usage: scripts/fuzz.sh [SECONDS]
# Needs cargo-fuzz (installed here from crates.io if missing). Runs on the stable toolchain:
# `-s none` builds without a sanitizer, which is what needs nightly; panics, hangs
# (-timeout) and runaway allocations (-rss_limit_mb) are still caught.
# A crash leaves its input under fuzz/artifacts/TARGET/; reproduce it with
#   cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-…
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-15}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Seed the scenario corpus with the example scenarios (the corpus itself is not committed).
mkdir -p fuzz/corpus/scenario_parser fuzz/corpus/cct_reader fuzz/corpus/importers fuzz/corpus/sweep_spec
# Seed the sweep-spec corpus with the committed specs.
cp tests/data/sweep-*.toml examples/*.toml fuzz/corpus/sweep_spec/
find traces/scenarios -name '*.ccs' -exec cp {} fuzz/corpus/scenario_parser/ \;
# Seed the binary corpus with the same scenarios converted to .cct (when ccsim is built).
if [ -x target/release/ccsim ]; then
    for f in traces/scenarios/*/*.ccs; do
        target/release/ccsim trace convert "$f" "fuzz/corpus/cct_reader/$(basename "$f" .ccs).cct" 2>/dev/null || true
    done
fi

run() {
    local target="$1"
    shift
    echo "== fuzz ${target} for ${secs}s"
    cargo fuzz run -s none "${target}" "fuzz/corpus/${target}" -- \
        -max_total_time="${secs}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"
}

# Seed the importers' corpus with the head of each real sample, prefixed by the selector byte
# of its format (fuzz/fuzz_targets/importers.rs).
seed() { { printf "\\x$1"; head -c 4096; } > "fuzz/corpus/importers/$2"; }
zstd -dc traces/samples/lackey-sort/trace.lackey.zst 2>/dev/null | seed 00 lackey || true
zstd -dc traces/samples/qemu/memtrace.txt.zst 2>/dev/null | seed 22 memtrace || true
seed 13 execlog < traces/samples/qemu/execlog_head2000.txt || true
cat traces/samples/perf/*.txt 2>/dev/null | seed 14 perf || true
seed 45 kvm < traces/samples/kvm/kvm_trace_pipe_head400.txt || true
xz -dc traces/samples/champsim/lackey-sort.champsimtrace.xz 2>/dev/null | seed 06 champsim || true

run scenario_parser -dict=fuzz/scenario_parser.dict
run cct_reader
run importers
run sweep_spec
