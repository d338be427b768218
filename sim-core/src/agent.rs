//! Who issues an event: a CPU in a context, a device, or firmware (DESIGN "The event stream").
//!
//! Agents are totally ordered so that the scheduler can break ties between agents at the same
//! cycle deterministically (see [`crate::sched`]).

use crate::codec::{Field, FieldError, get_varint, parse_u64, put_varint};
use std::fmt;

/// A logical CPU of the simulated host.
pub type CpuId = u32;
/// A VM (KVM VM, SNP guest or TD), numbered by the trace or scenario.
pub type VmId = u32;
/// A vCPU index inside its VM.
pub type VcpuId = u32;
/// A device: a PCI requester id (segment << 16 | bus << 8 | dev << 3 | fn) as the IOMMU sees it.
pub type DeviceId = u32;

/// The privilege level inside a guest: an SNP VMPL (AMD APM Vol. 2 §15.36.7) or a Hyper-V VTL.
///
/// VMPL numbers fall with privilege (0 is most privileged); VTL numbers rise with it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum PrivLevel {
    /// SNP VMPL 0–3.
    Vmpl(u8),
    /// Virtual trust level 0–15.
    Vtl(u8),
}

/// What a CPU is running when it issues an event.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Context {
    /// The host kernel (CPL 0, init_mm page tables, direct map).
    HostKernel,
    /// A host user process, by PID.
    HostProcess(u32),
    /// A guest vCPU.
    Guest {
        /// The VM.
        vm: VmId,
        /// The vCPU within the VM.
        vcpu: VcpuId,
        /// Its VMPL or VTL.
        level: PrivLevel,
    },
}

/// Firmware that acts on memory on its own.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Firmware {
    /// The AMD secure processor (AMD-SP / PSP) running SNP firmware.
    AmdSp,
    /// The Intel TDX module (SEAM).
    TdxModule,
}

/// The issuer of an event.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Agent {
    /// A logical CPU in a context.
    Cpu {
        /// The physical CPU.
        cpu: CpuId,
        /// What it runs.
        ctx: Context,
    },
    /// A DMA-capable device.
    Device(DeviceId),
    /// Firmware.
    Firmware(Firmware),
}

impl Agent {
    /// The host kernel on CPU `cpu`.
    pub const fn host(cpu: CpuId) -> Agent {
        Agent::Cpu { cpu, ctx: Context::HostKernel }
    }

    /// Guest `vm` vCPU `vcpu` at VMPL 0 on CPU `cpu`.
    pub const fn guest(cpu: CpuId, vm: VmId, vcpu: VcpuId) -> Agent {
        Agent::Cpu { cpu, ctx: Context::Guest { vm, vcpu, level: PrivLevel::Vmpl(0) } }
    }

    /// The CPU, if the agent is one.
    pub const fn cpu(self) -> Option<CpuId> {
        match self {
            Agent::Cpu { cpu, .. } => Some(cpu),
            Agent::Device(_) | Agent::Firmware(_) => None,
        }
    }

    /// Number of whitespace-separated tokens the text form takes (2 for a CPU, else 1).
    pub const fn text_tokens(self) -> usize {
        match self {
            Agent::Cpu { .. } => 2,
            Agent::Device(_) | Agent::Firmware(_) => 1,
        }
    }

    /// Parse the text form from its first token and, for CPUs, the context token.
    ///
    /// Forms: `c<N> host`, `c<N> proc:<PID>`, `c<N> vm<V>/v<K>[/vmpl<L>|/vtl<L>]`,
    /// `dev:<ID>`, `fw:asp`, `fw:tdx`. Returns how many tokens were used.
    ///
    /// # Errors
    /// [`AgentParseError`] naming the token that is wrong (0 for the first, 1 for the second).
    pub fn parse(first: &str, second: Option<&str>) -> Result<(Agent, usize), AgentParseError> {
        let bad =
            |i, what: &'static str, t: &str| AgentParseError { token: i, what, text: t.into() };
        if let Some(n) = first.strip_prefix('c').filter(|n| n.chars().all(|c| c.is_ascii_digit())) {
            let cpu = n.parse::<u32>().map_err(|_| bad(0, "CPU number", first))?;
            let ctx_text = second.ok_or_else(|| bad(1, "context after CPU", ""))?;
            let ctx = parse_context(ctx_text).ok_or_else(|| {
                bad(1, "context (host, proc:PID, vmN/vK[/vmplL|/vtlL])", ctx_text)
            })?;
            return Ok((Agent::Cpu { cpu, ctx }, 2));
        }
        if let Some(d) = first.strip_prefix("dev:") {
            let id = parse_u64(d).ok().and_then(|v| u32::try_from(v).ok());
            return id.map(|i| (Agent::Device(i), 1)).ok_or_else(|| bad(0, "device id", first));
        }
        match first {
            "fw:asp" => Ok((Agent::Firmware(Firmware::AmdSp), 1)),
            "fw:tdx" => Ok((Agent::Firmware(Firmware::TdxModule), 1)),
            _ => Err(bad(0, "agent (cN CTX, dev:ID, fw:asp, fw:tdx)", first)),
        }
    }
}

fn parse_context(t: &str) -> Option<Context> {
    if t == "host" {
        return Some(Context::HostKernel);
    }
    if let Some(p) = t.strip_prefix("proc:") {
        return p.parse().ok().map(Context::HostProcess);
    }
    let rest = t.strip_prefix("vm")?;
    let mut parts = rest.split('/');
    let vm = parts.next()?.parse().ok()?;
    let vcpu = parts.next()?.strip_prefix('v')?.parse().ok()?;
    let level = match parts.next() {
        None => PrivLevel::Vmpl(0),
        Some(l) => {
            if let Some(n) = l.strip_prefix("vmpl") {
                PrivLevel::Vmpl(n.parse().ok().filter(|&n: &u8| n < 4)?)
            } else {
                PrivLevel::Vtl(l.strip_prefix("vtl")?.parse().ok().filter(|&n: &u8| n < 16)?)
            }
        }
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Context::Guest { vm, vcpu, level })
}

/// An agent's text form was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {what}, found {text:?}")]
pub struct AgentParseError {
    /// Which token (0 or 1) was wrong.
    pub token: usize,
    /// What was expected.
    pub what: &'static str,
    /// What was found.
    pub text: String,
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Agent::Cpu { cpu, ctx } => {
                write!(f, "c{cpu} ")?;
                match ctx {
                    Context::HostKernel => f.write_str("host"),
                    Context::HostProcess(p) => write!(f, "proc:{p}"),
                    Context::Guest { vm, vcpu, level } => {
                        write!(f, "vm{vm}/v{vcpu}")?;
                        match level {
                            PrivLevel::Vmpl(0) => Ok(()),
                            PrivLevel::Vmpl(l) => write!(f, "/vmpl{l}"),
                            PrivLevel::Vtl(l) => write!(f, "/vtl{l}"),
                        }
                    }
                }
            }
            Agent::Device(d) => write!(f, "dev:{d:#x}"),
            Agent::Firmware(Firmware::AmdSp) => f.write_str("fw:asp"),
            Agent::Firmware(Firmware::TdxModule) => f.write_str("fw:tdx"),
        }
    }
}

/// Binary form: a kind byte, then varints.
impl Field for Agent {
    fn write_text(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
    fn parse_text(s: &str, _: &crate::codec::TextCtx) -> Result<Self, FieldError> {
        let mut it = s.split_whitespace();
        let first = it.next().unwrap_or("");
        Agent::parse(first, it.next())
            .map(|(a, _)| a)
            .map_err(|_| FieldError::Malformed { what: "agent", text: s.to_owned() })
    }
    fn put(&self, out: &mut Vec<u8>) {
        match *self {
            Agent::Cpu { cpu, ctx: Context::HostKernel } => {
                out.push(0);
                put_varint(out, cpu.into());
            }
            Agent::Cpu { cpu, ctx: Context::HostProcess(p) } => {
                out.push(1);
                put_varint(out, cpu.into());
                put_varint(out, p.into());
            }
            Agent::Cpu { cpu, ctx: Context::Guest { vm, vcpu, level } } => {
                let (k, l) = match level {
                    PrivLevel::Vmpl(l) => (2, l),
                    PrivLevel::Vtl(l) => (3, l),
                };
                out.push(k);
                put_varint(out, cpu.into());
                put_varint(out, vm.into());
                put_varint(out, vcpu.into());
                out.push(l);
            }
            Agent::Device(d) => {
                out.push(4);
                put_varint(out, d.into());
            }
            Agent::Firmware(Firmware::AmdSp) => out.push(5),
            Agent::Firmware(Firmware::TdxModule) => out.push(6),
        }
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        let k = u8::get(inp)?;
        let u32_of = |inp: &mut &[u8]| -> Result<u32, FieldError> {
            let v = get_varint(inp)?;
            u32::try_from(v)
                .map_err(|_| FieldError::OutOfRange { what: "u32", text: v.to_string() })
        };
        Ok(match k {
            0 => Agent::host(u32_of(inp)?),
            1 => Agent::Cpu { cpu: u32_of(inp)?, ctx: Context::HostProcess(u32_of(inp)?) },
            2 | 3 => {
                let cpu = u32_of(inp)?;
                let vm = u32_of(inp)?;
                let vcpu = u32_of(inp)?;
                let l = u8::get(inp)?;
                let level = match (k, l) {
                    (2, 0..=3) => PrivLevel::Vmpl(l),
                    (3, 0..=15) => PrivLevel::Vtl(l),
                    _ => {
                        return Err(FieldError::UnknownCode {
                            what: "privilege level",
                            code: l.into(),
                        });
                    }
                };
                Agent::Cpu { cpu, ctx: Context::Guest { vm, vcpu, level } }
            }
            4 => Agent::Device(u32_of(inp)?),
            5 => Agent::Firmware(Firmware::AmdSp),
            6 => Agent::Firmware(Firmware::TdxModule),
            c => return Err(FieldError::UnknownCode { what: "agent kind", code: c.into() }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        for t in [
            "c0 host",
            "c3 proc:77",
            "c1 vm2/v0",
            "c1 vm2/v3/vmpl2",
            "c0 vm1/v0/vtl1",
            "dev:0x100",
            "fw:asp",
            "fw:tdx",
        ] {
            let mut it = t.split(' ');
            let (a, n) = Agent::parse(it.next().unwrap(), it.next()).unwrap();
            assert_eq!(n, a.text_tokens());
            assert_eq!(a.to_string(), t);
            let mut b = Vec::new();
            a.put(&mut b);
            assert_eq!(Agent::get(&mut b.as_slice()).unwrap(), a);
        }
        assert!(Agent::parse("c0", Some("vm1/v0/vmpl4")).is_err());
        assert!(Agent::parse("x0", None).is_err());
        assert!(Agent::parse("c0", None).is_err());
    }
}
