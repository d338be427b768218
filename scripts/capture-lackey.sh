#!/bin/sh
# Capture a Valgrind lackey trace of a command together with its VA->PA page map, in the
# formats `ccsim trace import --from lackey --vapa` reads (docs/importers.md).
#
#   scripts/capture-lackey.sh OUTDIR INTERVAL_S -- COMMAND [ARGS...]
#
# Writes OUTDIR/trace.lackey.zst (the lackey log; Valgrind's own lines start with `==`) and
# OUTDIR/vapa.txt (`<va_page> <pfn> <pagemap bits 63..55> <kpageflags> <first> <last>`, hex but
# the snapshot indices), from /proc/PID/pagemap and /proc/kpageflags sampled every INTERVAL_S
# seconds while the command runs, plus OUTDIR/snapshots.txt. PFNs read as 0 without
# CAP_SYS_ADMIN (run as root); the script then stops with an error rather than write a map of
# zeros. The last snapshot is taken whenever the process is last seen, so pages mapped and
# unmapped between two samples are missing from the map (ccsim reports them).
set -eu
[ $# -ge 4 ] && [ "$3" = "--" ] || { echo "usage: $0 OUTDIR INTERVAL_S -- COMMAND [ARGS...]" >&2; exit 2; }
out=$1; interval=$2; shift 3
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "$0: valgrind not found" >&2; exit 2; }
command -v zstd >/dev/null || { echo "$0: zstd not found" >&2; exit 2; }
# The trace goes to fd 3 so that the program's own stderr stays apart.
valgrind --tool=lackey --trace-mem=yes --log-fd=3 "$@" 3>"$out/trace.lackey.fifo.tmp" &
vpid=$!
: > "$out/snapshots.txt"
python3 - "$vpid" "$interval" "$out" <<'PY'
import os, struct, sys, time
pid, interval, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
seen, snap = {}, 0
def dump():
    global snap
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        pm = open(f"/proc/{pid}/pagemap", "rb")
    except OSError:
        return False
    try:
        kpf = open("/proc/kpageflags", "rb")
    except OSError:
        kpf = None
    for line in maps:
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo >= 1 << 47:
            continue  # [vsyscall]
        try:
            pm.seek((lo >> 12) * 8)
            data = pm.read(((hi - lo) >> 12) * 8)
        except OSError:
            continue
        for i in range(len(data) // 8):
            (e,) = struct.unpack_from("<Q", data, i * 8)
            if not e >> 63:
                continue
            pfn = e & ((1 << 55) - 1)
            if pfn == 0:
                sys.exit(f"{sys.argv[0]}: pagemap PFNs read as 0: run as root (CAP_SYS_ADMIN)")
            flags = 0
            if kpf:
                kpf.seek(pfn * 8)
                b = kpf.read(8)
                flags = struct.unpack("<Q", b)[0] if len(b) == 8 else 0
            key = (lo + (i << 12), pfn)
            if key not in seen:
                seen[key] = [e >> 55, flags, snap, snap]
            seen[key][3] = snap
    with open(f"{out}/snapshots.txt", "a") as f:
        f.write(f"{snap} s{snap} {time.monotonic_ns()}\n")
    snap += 1
    return True
while dump():
    time.sleep(interval)
with open(f"{out}/vapa.txt", "w") as f:
    f.write("# va_page pfn pagemap_bits63..55 kpageflags first_snapshot last_snapshot (all hex except snapshots)\n")
    for (va, pfn), (pm, fl, a, b) in sorted(seen.items()):
        f.write(f"{va:x} {pfn:x} {pm:x} {fl:x} {a} {b}\n")
PY
wait "$vpid" || true
zstd -q -f "$out/trace.lackey.fifo.tmp" -o "$out/trace.lackey.zst" && rm -f "$out/trace.lackey.fifo.tmp"
echo "wrote $out/trace.lackey.zst $out/vapa.txt ($(($(wc -l < "$out/vapa.txt") - 1)) pages)" >&2
