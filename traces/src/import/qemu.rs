//! QEMU TCG plugin traces: the `memtrace` plugin (`shared/traces/tools/memtrace.c`, also built
//! by `scripts/capture-qemu.sh`).
//!
//! Line forms (hexadecimal without `0x`, except the decimal CPU and size):
//!
//! ```text
//! # memtrace qemu-plugin target=x86_64 system=1     header, trigger and trailer: comments
//! 0 S 8 ffffffff819f69b7 ffff8880069399c0 69399c0    cpu, L|S, size, pc, vaddr, paddr
//! 0 L 4 401000 7ffd1000 -                            no physical address (qemu-user)
//! 0 L 4 ffffffff81000000 ffffc90000000000 fe000000 io  device memory (MMIO)
//! 0 I 0 ffffffff819f69b7                             an instruction executed (insn=on)
//! ```
//!
//! Each data line is one access with its guest-virtual and guest-physical address; a
//! [`PairPlacer`] turns the pair into the role's `map` and access records. `I` lines become
//! `work 1`: they carry no physical address of the code nor its length. Field mapping per role:
//! `docs/importers.md`.

use crate::import::pairs::{LineFormat, Op, PairPlacer, TextImporter, classify, dec, fields, hex};
use sim_core::CpuId;
use sim_core::Record;
use std::io::BufRead;

/// The memtrace line format (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Memtrace;

/// Streams records from a memtrace log.
pub type MemtraceReader<R> = TextImporter<R, Memtrace>;

impl Memtrace {
    /// A reader of the memtrace log `r`, placing with `placer`.
    pub fn reader<R: BufRead>(r: R, placer: PairPlacer) -> MemtraceReader<R> {
        TextImporter::new(r, Memtrace, placer)
    }
}

impl LineFormat for Memtrace {
    fn parse(
        &mut self,
        l: &[u8],
        pl: &mut PairPlacer,
        out: &mut Vec<Record>,
    ) -> Result<bool, (usize, &'static str)> {
        let mut f = fields(l);
        let Some((c0, cpu)) = f.next() else { return Ok(false) };
        if cpu[0] == b'#' {
            return Ok(false);
        }
        let cpu = dec(cpu).ok_or((c0, "a decimal CPU number or a `#` comment"))?;
        let (ck, kind) = f.next().ok_or((l.len(), "`L`, `S` or `I` after the CPU"))?;
        let (cs, size) = f.next().ok_or((l.len(), "a decimal size"))?;
        let size = dec(size).ok_or((cs, "a decimal size"))?;
        let (cp, pc) = f.next().ok_or((l.len(), "a hexadecimal pc"))?;
        let pc = hex(pc).ok_or((cp, "a hexadecimal pc of at most 16 digits"))?;
        let op = match kind {
            b"I" => {
                if let Some((c, _)) = f.next() {
                    return Err((c, "end of line after an `I` line's pc"));
                }
                pl.instruction(cpu, pc, out);
                return Ok(true);
            }
            b"L" => Op::Load,
            b"S" => Op::Store,
            _ => return Err((ck, "`L`, `S` or `I`")),
        };
        let (cv, va) = f.next().ok_or((l.len(), "a hexadecimal vaddr"))?;
        let va = hex(va).ok_or((cv, "a hexadecimal vaddr of at most 16 digits"))?;
        let (ca, pa) = f.next().ok_or((l.len(), "a hexadecimal paddr or `-`"))?;
        let pa = match pa {
            b"-" => None,
            p => Some(hex(p).ok_or((ca, "a hexadecimal paddr or `-`"))?),
        };
        let io = match f.next() {
            None => false,
            Some((_, b"io")) => true,
            Some((c, _)) => return Err((c, "`io` or end of line after the paddr")),
        };
        if let Some((c, _)) = f.next() {
            return Err((c, "end of line after `io`"));
        }
        if size == 0 {
            return Err((cs, "a data size of at least 1"));
        }
        if classify(va).is_none() {
            return Err((cv, "a canonical 4-level virtual address"));
        }
        if va.checked_add(u64::from(size) - 1).is_none() {
            return Err((cv, "an access that does not wrap past 2^64"));
        }
        if pa.is_some_and(|p| p >> 52 != 0) {
            return Err((ca, "a physical address below 2^52"));
        }
        if io {
            pl.skip_io();
            return Ok(true);
        }
        pl.access(cpu, op, va, pa, size, out);
        Ok(true)
    }
}

/// QEMU's upstream `execlog` plugin output (`contrib/plugins/execlog.c`, QEMU 7.2), stateless:
///
/// ```text
/// 0, 0xfe05b, 0x3e83662e, "cmpl $0, %cs:0x61c8", load, 0x11fff61c8, RAM
/// <cpu>, 0x<pc>, 0x<first 4 opcode bytes>, "<disassembly>"[, load|store, 0x<addr>[, <region>]]...
/// ```
///
/// With a region (system mode) the address is physical; without (user mode) it is virtual.
/// Each line is one `work 1`; each access is 1 byte (execlog gives no size).
#[derive(Clone, Copy, Debug, Default)]
pub struct Execlog;

/// Streams records from an execlog log.
pub type ExeclogReader<R> = TextImporter<R, Execlog>;

impl Execlog {
    /// A reader of the execlog output `r`, placing with `placer`.
    pub fn reader<R: BufRead>(r: R, placer: PairPlacer) -> ExeclogReader<R> {
        TextImporter::new(r, Execlog, placer)
    }
}

/// The `", "`-separated item of `l` starting at `at`: (item, index after it and its separator).
fn item(l: &[u8], at: usize) -> (&[u8], usize) {
    let rest = &l[at.min(l.len())..];
    match rest.windows(2).position(|w| w == b", ") {
        Some(p) => (&rest[..p], at + p + 2),
        None => (rest, l.len()),
    }
}

impl LineFormat for Execlog {
    fn parse(
        &mut self,
        l: &[u8],
        pl: &mut PairPlacer,
        out: &mut Vec<Record>,
    ) -> Result<bool, (usize, &'static str)> {
        if l.iter().all(u8::is_ascii_whitespace) {
            return Ok(false);
        }
        let (cpu, i) = item(l, 0);
        let cpu: CpuId = dec(cpu).ok_or((0, "`CPU, 0xPC, 0xOPCODE, \"DISASSEMBLY\"`"))?;
        let (pc, j) = item(l, i);
        let pc = pc.strip_prefix(b"0x").and_then(hex).ok_or((i, "a `0x` hexadecimal pc"))?;
        let (op, k) = item(l, j);
        op.strip_prefix(b"0x").and_then(hex).ok_or((j, "`0x` hexadecimal opcode bytes"))?;
        if l.get(k) != Some(&b'"') {
            return Err((k, "a quoted disassembly"));
        }
        let close = l.iter().rposition(|&c| c == b'"').filter(|&c| c > k);
        let close = close.ok_or((k, "a closing `\"` of the disassembly"))?;
        pl.instruction(cpu, pc, out);
        let mut at = close + 1;
        while at < l.len() {
            if l.get(at..at + 2) != Some(b", ") {
                return Err((at, "`, load|store, 0xADDR[, REGION]` or end of line"));
            }
            at += 2;
            let (kind, a) = item(l, at);
            let op = match kind {
                b"load" => Op::Load,
                b"store" => Op::Store,
                _ => return Err((at, "`load` or `store`")),
            };
            let (addr, b) = item(l, a);
            let addr =
                addr.strip_prefix(b"0x").and_then(hex).ok_or((a, "a `0x` hexadecimal address"))?;
            // A region name follows in system mode (the address is then physical).
            let (region, c) = item(l, b);
            let has_region = b < l.len() && region != b"load" && region != b"store";
            if has_region {
                if addr >> 52 != 0 {
                    return Err((a, "a physical address below 2^52"));
                }
                if region == b"RAM" {
                    pl.physical(cpu, op, addr, 1, out);
                } else {
                    pl.skip_io();
                }
                at = if c >= l.len() { l.len() } else { c - 2 };
            } else {
                if classify(addr).is_none() {
                    return Err((a, "a canonical 4-level virtual address"));
                }
                pl.access(cpu, op, addr, None, 1, out);
                at = if b >= l.len() { l.len() } else { b - 2 };
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::pairs::TextError;
    use crate::import::place::Role;
    use sim_core::event::VmKind;

    fn run(role: &str, text: &str) -> (Vec<String>, crate::import::pairs::PairStats) {
        let role: Role = role.parse().unwrap();
        let mut r = Memtrace::reader(text.as_bytes(), PairPlacer::new(role));
        let mut v = Vec::new();
        for rec in r.by_ref() {
            let mut s = String::new();
            crate::ccs::write_record(&rec.unwrap(), &mut s);
            v.push(s.trim_end().to_owned());
        }
        (v, r.stats())
    }

    const T: &str = "# memtrace qemu-plugin target=x86_64 system=1\n\
        0 S 8 ffffffff819f69b7 ffff8880069399c0 69399c0\n\
        0 I 0 ffffffff819f69b7\n\
        0 L 8 401000 7fd4ed001ff8 1234ff8\n\
        0 L 8 401000 7fd4ed001ffc 1234ffc\n\
        0 L 4 401000 ffffc90000001000 fe000000 io\n\
        0 L 4 401000 7fd4ed009000 -\n\
        0 L 4 ffffffff81000000 ffffffff82000010 2000010\n\
        \n";

    #[test]
    fn guest_role_maps_each_pair_once_and_validates_frames() {
        let (v, s) = run("guest:1:snp", T);
        assert_eq!(
            v,
            [
                "c0 vm1/v0 map gva:0xffff888006939000 gpa:0x6939000 4K space=guest:1 w x enc",
                "c0 vm1/v0 pvalidate gva:0xffff888006939000 validate",
                "c0 vm1/v0 store gva:0xffff8880069399c0 8",
                "c0 vm1/v0 work 1",
                "c0 vm1/v0 map gva:0x7fd4ed001000 gpa:0x1234000 4K space=guest:1 w x enc",
                "c0 vm1/v0 pvalidate gva:0x7fd4ed001000 validate",
                "c0 vm1/v0 load gva:0x7fd4ed001ff8 8",
                "c0 vm1/v0 load gva:0x7fd4ed001ffc 4",
                "c0 vm1/v0 map gva:0xffffffff82000000 gpa:0x2000000 4K space=guest:1 w x enc",
                "c0 vm1/v0 pvalidate gva:0xffffffff82000000 validate",
                "c0 vm1/v0 load gva:0xffffffff82000010 4",
            ]
        );
        // The split's second half (page 0x7fd4ed002000) and the `-` line have no frame.
        assert_eq!((s.split, s.skipped_no_pa, s.skipped_io), (1, 2, 1));
        assert_eq!((s.lines, s.comments, s.accesses, s.work), (9, 2, 4, 1));
        assert_eq!(s.records, v.len() as u64);
    }

    #[test]
    fn host_kernel_role_direct_map_to_phys_user_to_process() {
        let (v, s) = run("host-kernel", T);
        assert_eq!(
            v,
            [
                "c0 host store phys:0x69399c0 8",
                "c0 host work 1",
                "c0 proc:1 map hva:0x7fd4ed001000 phys:0x1234000 4K space=proc:1 w x user",
                "c0 proc:1 load hva:0x7fd4ed001ff8 8",
                "c0 proc:1 load hva:0x7fd4ed001ffc 4",
                "c0 proc:1 load hva:0x7fd4ed002000 4",
                "c0 proc:1 load hva:0x7fd4ed009000 4",
                "c0 host load phys:0x2000010 4",
            ]
        );
        assert_eq!((s.direct_map, s.kernel_other, s.user, s.demand_paged), (1, 1, 4, 2));
        assert_eq!(s.skipped(), 1);
    }

    #[test]
    fn host_process_role_skips_kernel_lines_and_remaps_changed_frames() {
        let t = "0 L 8 1 7fd4ed001000 1234000\n0 L 8 1 7fd4ed001000 5678000\n\
                 0 S 8 1 ffff888000001000 1000\n0 I 0 ffffffff81000000\n";
        let (v, s) = run("host-process:7", t);
        assert_eq!(
            v,
            [
                "c0 proc:7 map hva:0x7fd4ed001000 phys:0x1234000 4K space=proc:7 w x user",
                "c0 proc:7 load hva:0x7fd4ed001000 8",
                "c0 proc:7 unmap hva:0x7fd4ed001000 4K space=proc:7",
                "c0 proc:7 map hva:0x7fd4ed001000 phys:0x5678000 4K space=proc:7 w x user",
                "c0 proc:7 load hva:0x7fd4ed001000 8",
            ]
        );
        assert_eq!((s.remaps, s.skipped_kernel), (1, 2));
        let (v, _) = run("guest:2:plain", "3 L 8 1 7fd4ed001000 1234000\n");
        assert_eq!(v[0], "c3 vm2/v3 map gva:0x7fd4ed001000 gpa:0x1234000 4K space=guest:2 w x");
        assert!(matches!(
            "guest:2:plain".parse::<Role>(),
            Ok(Role::Guest { kind: VmKind::Plain, .. })
        ));
    }

    #[test]
    fn execlog_physical_ram_accesses_by_role() {
        let t = "0, 0xfffffff0, 0xe05bea, \"ljmpw $0xf000:$0xe05b\"\n\
                 0, 0xfec23, 0x1e010f2e, \"lidtw %cs:0x61b8\", load, 0x11fff61b8, RAM, store, 0xfee00000, lapic\n\
                 1, 0x401000, 0x8b48, \"movq (%rax), %rcx\", load, 0x7ffd1000\n";
        let run = |role: &str| -> (Vec<String>, crate::import::pairs::PairStats) {
            let mut r = Execlog::reader(t.as_bytes(), PairPlacer::new(role.parse().unwrap()));
            let v = r
                .by_ref()
                .map(|x| {
                    let mut s = String::new();
                    crate::ccs::write_record(&x.unwrap(), &mut s);
                    s.trim_end().to_owned()
                })
                .collect();
            (v, r.stats())
        };
        let (v, s) = run("guest:1:snp");
        assert_eq!(
            v,
            [
                "c0 vm1/v0 work 1",
                "c0 vm1/v0 work 1",
                "c0 vm1/v0 pvalidate gpa:0x11fff6000 validate",
                // Private: the C-bit (bit 51) set, as the guest's page tables would.
                "c0 vm1/v0 load gpa:0x800011fff61b8 1",
                "c1 vm1/v1 work 1",
            ]
        );
        assert_eq!((s.physical, s.skipped_io, s.skipped_no_pa, s.work), (1, 1, 1, 3));
        let (v, _) = run("host-kernel");
        assert_eq!(v[2], "c0 host load phys:0x11fff61b8 1");
        assert_eq!(v[4], "c1 proc:1 load hva:0x7ffd1000 1");
        for (text, col) in [
            ("x, 0x1, 0x2, \"nop\"", 1),
            ("0, 1, 0x2, \"nop\"", 4),
            ("0, 0x1, 0x2, nop", 14),
            ("0, 0x1, 0x2, \"nop\", fetch, 0x1", 21),
            ("0, 0x1, 0x2, \"nop\", load, 12", 27),
            ("0, 0x1, 0x2, \"nop\" load", 19),
        ] {
            let mut r = Execlog::reader(text.as_bytes(), PairPlacer::new(Role::HostKernel));
            let e = r.find_map(Result::err);
            let Some(TextError::Malformed { line: 1, col: c, .. }) = e else {
                panic!("{text:?}: {e:?}")
            };
            assert_eq!(c, col, "{text:?}");
        }
    }

    #[test]
    fn malformed_lines_name_line_and_column() {
        for (text, line, col) in [
            ("0 L 8 1 1000 1000\nx L 8 1 1000 1000\n", 2, 1),
            ("0 Q 8 1 1000 1000\n", 1, 3),
            ("0 L z 1 1000 1000\n", 1, 5),
            ("0 L 8 1 1000\n", 1, 13),
            ("0 L 8 1 10g0 1000\n", 1, 9),
            ("0 L 8 1 1000 10z0\n", 1, 14),
            ("0 L 8 1 1000 1000 mmio\n", 1, 19),
            ("0 L 0 1 1000 1000\n", 1, 5),
            ("0 L 8 1 800000000000 1000\n", 1, 9),
            ("0 L 8 1 fffffffffffffffc 1000\n", 1, 9),
            ("0 L 8 1 1000 10000000000000\n", 1, 14),
            ("0 I 0 1000 2000\n", 1, 12),
        ] {
            let mut r = Memtrace::reader(text.as_bytes(), PairPlacer::new(Role::HostKernel));
            let e = r.find_map(Result::err);
            let Some(TextError::Malformed { line: l, col: c, .. }) = e else {
                panic!("{text:?}: {e:?}")
            };
            assert_eq!((l, c), (line, col), "{text:?}");
            assert!(r.next().is_none(), "stops after an error");
        }
    }
}
