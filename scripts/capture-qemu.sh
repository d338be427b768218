#!/bin/sh
# Boot a kernel under QEMU TCG with the memtrace plugin and write its access log, in the format
# `ccsim trace import --from qemu-memtrace` reads (docs/importers.md).
#
#   scripts/capture-qemu.sh OUTDIR KERNEL INITRD [PLUGIN_ARG,...] [-- EXTRA QEMU ARGS...]
#
# Writes OUTDIR/libmemtrace.so (built here), OUTDIR/memtrace.txt.zst and OUTDIR/qemu.log.
# PLUGIN_ARG are the plugin's options, comma-separated: limit=N, skip=N, insn=on,
# trig_lo=0x...,trig_hi=0x... (start logging when the guest first executes in [lo,hi)).
# Debian's qemu-system-x86 (7.2) accepts -plugin but ships no plugin and no qemu-plugin.h: the
# header is taken from $QEMU_SRC/include/qemu if set, else from `apt-get source qemu` (the
# system's deb-src lines, else a private deb-src list for deb.debian.org; the orig tarball is
# ~90 MB), else from QEMU's git tag of that version on gitlab.com.
# The guest runs with -cpu max,la57=off,erms=off: 4-level paging (direct map at
# 0xffff888000000000, what the importer classifies) and clear_page by 8-byte stores.
# Keep -m at 1G or less: QEMU 7.2 reports ramblock offsets, not GPAs, above 3 GiB.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 OUTDIR KERNEL INITRD [PLUGIN_ARGS] [-- QEMU ARGS...]" >&2; exit 2; }
out=$1; kernel=$2; initrd=$3; shift 3
pargs=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then pargs=",$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
command -v qemu-system-x86_64 >/dev/null || { echo "$0: qemu-system-x86_64 not found (apt-get install qemu-system-x86)" >&2; exit 2; }
command -v gcc >/dev/null || { echo "$0: gcc not found" >&2; exit 2; }
command -v zstd >/dev/null || { echo "$0: zstd not found" >&2; exit 2; }

# QEMU's version, e.g. 7.2.0 from "QEMU emulator version 7.2.11 (Debian 1:7.2+dfsg-7+deb12u18)".
ver=$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\.[0-9]*\).*/\1/p')
[ -n "$ver" ] || { echo "$0: cannot read the QEMU version" >&2; exit 2; }
inc=""
if [ -n "${QEMU_SRC:-}" ] && [ -f "$QEMU_SRC/include/qemu/qemu-plugin.h" ]; then
    inc=$QEMU_SRC/include/qemu
elif [ -f "$out/src/qemu-plugin.h" ]; then
    inc=$out/src
else
    mkdir -p "$out/src/apt/lists/partial"
    # deb-src lines in a private list, so the system's apt configuration is left alone.
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    printf 'deb-src http://deb.debian.org/debian %s main\ndeb-src http://deb.debian.org/debian-security %s-security main\n' \
        "$codename" "$codename" > "$out/src/apt/sources.list"
    aptsrc="-o Dir::Etc::SourceList=$out/src/apt/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$out/src/apt/lists"
    if (cd "$out/src" && { apt-get source --download-only qemu >/dev/null 2>&1 ||
            { apt-get $aptsrc update >/dev/null 2>&1 &&
              apt-get $aptsrc source --download-only qemu >/dev/null 2>&1; }; }); then
        tarball=$(ls "$out"/src/qemu_*.orig.tar.* | head -n 1)
        member=$(tar -tf "$tarball" | grep '/include/qemu/qemu-plugin.h$' | head -n 1)
        tar -xf "$tarball" -O "$member" > "$out/src/qemu-plugin.h"
    else
        url="https://gitlab.com/qemu-project/qemu/-/raw/v$ver.0/include/qemu/qemu-plugin.h"
        echo "$0: apt-get source qemu failed (no deb-src?); fetching $url" >&2
        curl -fsSL -o "$out/src/qemu-plugin.h" "$url"
    fi
    inc=$out/src
fi
gcc -O2 -fPIC -shared -I"$inc" -o "$out/libmemtrace.so" "$here/qemu-memtrace.c"

# The plugin writes the log itself (out=); a FIFO lets zstd compress it as it is written.
fifo=$out/memtrace.fifo
rm -f "$fifo"; mkfifo "$fifo"
zstd -q -T1 -3 -o "$out/memtrace.txt.zst" -f < "$fifo" &
zpid=$!
status=0
qemu-system-x86_64 -accel tcg -cpu max,la57=off,erms=off -m 1G -smp 1 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 quiet panic=-1 nokaslr transparent_hugepage=madvise" \
    -plugin "$out/libmemtrace.so,out=$fifo$pargs" "$@" > "$out/qemu.log" 2>&1 || status=$?
wait "$zpid" || status=$?
rm -f "$fifo"
[ "$status" -eq 0 ] || { echo "$0: qemu or zstd failed ($status); see $out/qemu.log" >&2; exit "$status"; }
echo "wrote $out/memtrace.txt.zst; import with: ccsim trace import --from qemu-memtrace $out/memtrace.txt.zst --as guest:1:snp -o guest.cct" >&2
