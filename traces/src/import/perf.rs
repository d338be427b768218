//! `perf script` output of samples with a data address and its physical address
//! (`perf record -d --phys-data`, `perf mem record -p`).
//!
//! The layout is the one `perf script -F comm,tid,time,event,ip,sym,addr,phys_addr` prints
//! (perf 6.1; perf prints `addr` before `ip` whatever the `-F` order):
//!
//! ```text
//!        hashprobe 30057   830.671221: page-faults:     5649ac19feb8 _DYNAMIC     7f7c41901620 dl_main       19f275eb8
//! <comm>           <tid>   <sec.usec>: <event>:         <addr>       <addr sym>   <ip>         <ip sym>      <phys_addr>
//! ```
//!
//! Also accepted: the same without `sym` (`<addr> <ip> <phys_addr>`), and a `[CPU]` field after
//! the tid (`-F comm,tid,cpu,time,…`). A `comm` may contain spaces; a symbol may too, as long
//! as none of its words is a hexadecimal number (the `ip` is the first hexadecimal field after
//! the address's symbol). Samples are a *sample*: each becomes one 1-byte access (perf gives no
//! size) with no time, for validation and statistics, not a complete access stream.

use crate::import::pairs::{LineFormat, Op, PairPlacer, TextImporter, classify, dec, fields, hex};
use sim_core::Record;
use std::io::BufRead;

/// The `perf script` line format (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerfScript;

/// Streams records from `perf script` text.
pub type PerfReader<R> = TextImporter<R, PerfScript>;

impl PerfScript {
    /// A reader of the `perf script` text `r`, placing with `placer`.
    pub fn reader<R: BufRead>(r: R, placer: PairPlacer) -> PerfReader<R> {
        TextImporter::new(r, PerfScript, placer)
    }
}

/// `sec.usec:`: the time field.
fn is_time(s: &[u8]) -> bool {
    let Some(t) = s.strip_suffix(b":") else { return false };
    let mut dot = false;
    !t.is_empty()
        && t.iter().all(|&c| {
            if c == b'.' && !dot {
                dot = true;
                true
            } else {
                c.is_ascii_digit()
            }
        })
        && dot
}

impl LineFormat for PerfScript {
    fn parse(
        &mut self,
        l: &[u8],
        pl: &mut PairPlacer,
        out: &mut Vec<Record>,
    ) -> Result<bool, (usize, &'static str)> {
        let mut f: [(usize, &[u8]); 24] = [(0, &[]); 24];
        let mut n = 0;
        for x in fields(l) {
            if n == f.len() {
                return Err((x.0, "at most 24 fields"));
            }
            f[n] = x;
            n += 1;
        }
        let f = &f[..n];
        if n == 0 || f[0].1[0] == b'#' {
            return Ok(false);
        }
        let t = f
            .iter()
            .position(|x| is_time(x.1))
            .ok_or((0, "`COMM TID [CPU] SEC.USEC: EVENT: …` (perf script -F comm,tid,time,event,ip,sym,addr,phys_addr)"))?;
        // The tid, then an optional `[CPU]`, come right before the time.
        let (tid_at, cpu) = match f[..t].last() {
            Some(&(c, s)) if s.first() == Some(&b'[') && s.last() == Some(&b']') => {
                let cpu = dec(&s[1..s.len() - 1]).ok_or((c, "a decimal CPU in `[…]`"))?;
                (t.checked_sub(2), cpu)
            }
            _ => (t.checked_sub(1), 0),
        };
        let tid_at = tid_at.filter(|&i| i >= 1).ok_or((f[t].0, "`COMM TID` before the time"))?;
        dec(f[tid_at].1).ok_or((f[tid_at].0, "a decimal TID"))?;
        let (ce, event) = *f.get(t + 1).ok_or((l.len(), "`EVENT:` after the time"))?;
        let event = event.strip_suffix(b":").ok_or((ce, "`EVENT:` after the time"))?;
        let rest = &f[t + 2..];
        let (addr, ip, phys) = match rest {
            [a, i, p] => (a, i, p),
            [a, .., p] if rest.len() >= 5 => {
                let ip = rest[2..rest.len() - 2]
                    .iter()
                    .find(|x| hex(x.1).is_some())
                    .ok_or((rest[2].0, "a hexadecimal ip after the address's symbol"))?;
                (a, ip, p)
            }
            _ => {
                let c = rest.first().map_or(l.len(), |x| x.0);
                return Err((c, "`ADDR ADDR-SYM IP IP-SYM PHYS_ADDR` or `ADDR IP PHYS_ADDR`"));
            }
        };
        let va = hex(addr.1).ok_or((addr.0, "a hexadecimal data address"))?;
        hex(ip.1).ok_or((ip.0, "a hexadecimal ip"))?;
        let pa = hex(phys.1).ok_or((phys.0, "a hexadecimal phys_addr"))?;
        if classify(va).is_none() {
            return Err((addr.0, "a canonical 4-level virtual address"));
        }
        if pa >> 52 != 0 {
            return Err((phys.0, "a physical address below 2^52"));
        }
        let is_store = event.windows(5).any(|w| w.eq_ignore_ascii_case(b"store"));
        let op = if is_store { Op::Store } else { Op::Load };
        // perf prints 0 when it had no physical address (a fault not yet resolved).
        let pa = (pa != 0).then_some(pa);
        pl.access(cpu, op, va, pa, 1, out);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::pairs::TextError;
    use crate::import::place::Role;

    fn run(role: &str, text: &str) -> Vec<String> {
        let role: Role = role.parse().unwrap();
        PerfScript::reader(text.as_bytes(), PairPlacer::new(role))
            .map(|r| {
                let mut s = String::new();
                crate::ccs::write_record(&r.unwrap(), &mut s);
                s.trim_end().to_owned()
            })
            .collect()
    }

    const T: &str = "       hashprobe 30057   830.671220: page-faults:     5649ac19fde0 _DYNAMIC     7f7c418ffbd1 dl_main               0\n\
       hashprobe 30057   830.671221: page-faults:     5649ac19feb8 _DYNAMIC     7f7c41901620 dl_main       19f275eb8\n\
       my comm 1 [001] 1.5: cpu/mem-stores/P: ffff888000123008 [unknown] ffffffff81000000 operator new(unsigned long) 123008\n\
       kw 1 1.5: mem-loads: ffffc90000001000 ffffffff81000000 0\n";

    #[test]
    fn fields_by_role() {
        assert_eq!(
            run("host-kernel", T),
            [
                "c0 proc:1 load hva:0x5649ac19fde0 1",
                "c0 proc:1 unmap hva:0x5649ac19f000 4K space=proc:1",
                "c0 proc:1 map hva:0x5649ac19f000 phys:0x19f275000 4K space=proc:1 w x user",
                "c0 proc:1 load hva:0x5649ac19feb8 1",
                "c1 host store phys:0x123008 1",
            ]
        );
        assert_eq!(
            run("guest:1:plain", T),
            [
                "c0 vm1/v0 map gva:0x5649ac19f000 gpa:0x19f275000 4K space=guest:1 w x",
                "c0 vm1/v0 load gva:0x5649ac19feb8 1",
                "c1 vm1/v1 map gva:0xffff888000123000 gpa:0x123000 4K space=guest:1 w x",
                "c1 vm1/v1 store gva:0xffff888000123008 1",
            ]
        );
        let mut r = PerfScript::reader(T.as_bytes(), PairPlacer::new(Role::HostProcess { pid: 5 }));
        assert_eq!(r.by_ref().count(), 4, "load (demand-paged), unmap, map, load");
        let s = r.stats();
        assert_eq!((s.lines, s.accesses, s.demand_paged, s.skipped_kernel), (4, 2, 1, 2));
        assert_eq!(s.remaps, 1);
    }

    #[test]
    fn malformed_lines_name_line_and_column() {
        for (text, line, col) in [
            ("a 1 1.5: e: 1000 s 2000 s 0\nno time here\n", 2, 1),
            ("a x 1.5: e: 1000 s 2000 s 0\n", 1, 3),
            ("a 1 1.5: e 1000 s 2000 s 0\n", 1, 10),
            ("a 1 1.5: e: 1000 s 2000\n", 1, 18),
            ("a 1 1.5: e: 10z0 s 2000 s 0\n", 1, 13),
            ("a 1 1.5: e: 1000 s t s 0\n", 1, 20),
            ("a 1 1.5: e: 1000 s 2000 s 0x\n", 1, 27),
            ("a 1 1.5: e: 800000000000 2000 0\n", 1, 13),
            ("a 1 [x] 1.5: e: 1000 2000 0\n", 1, 5),
        ] {
            let mut r = PerfScript::reader(text.as_bytes(), PairPlacer::new(Role::HostKernel));
            let e = r.find_map(Result::err);
            let Some(TextError::Malformed { line: l, col: c, .. }) = e else {
                panic!("{text:?}: {e:?}")
            };
            assert_eq!((l, c), (line, col), "{text:?}");
        }
    }
}
