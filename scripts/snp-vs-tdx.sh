#!/bin/sh
# The same host-kernel traffic beside converting guests, on an SEV-SNP host and on a TDX host,
# under each physmap policy (issue #8 item 4; docs/snp-vs-tdx.md). Prints a Markdown table.
#   scripts/snp-vs-tdx.sh [CCSIM] [ACCESSES]
set -eu
ccsim=${1:-target/release/ccsim}
n=${2:-50000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common="--param kernel_cpus=2 --param kernel_accesses=$n --param accesses=$n"
echo "| host | policy | RMP violations | fatal faults | direct-map splits | DirectMap4k kB | kernel dTLB misses / 1k kernel accesses | dTLB misses / 1k accesses |"
echo "|---|---|---|---|---|---|---|---|"
for policy in none split-on-assign adjust-direct-map presplit-4k; do
  "$ccsim" run -q --preset zen4 --workload snp-churn --param guests=2 --param guest_cpus=2 $common \
    --set machine.cpus=4 --policy "$policy" --json "$out/snp-$policy.json"
  "$ccsim" run -q --preset spr --workload tdx-churn --param tds=1 --param vcpus=2 $common \
    --set machine.cpus=5 --policy "$policy" --json "$out/tdx-$policy.json"
  for host in snp tdx; do
    python3 - "$out/$host-$policy.json" "$host" "$policy" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d = r["directmap"]
print("| %s | %s | %d | %d | %d | %d | %.2f | %.2f |" % (
    sys.argv[2].upper(), sys.argv[3], sum(r["rmp"]["violations"].values()), r["faults"]["fatal"],
    d["level2_splits"] + d["level3_splits"], d["kb"]["4K"],
    r["derived"]["kernel_dtlb_mpka"], r["derived"]["dtlb_mpka"]))
PY
  done
done
