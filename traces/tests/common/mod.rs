//! Proptest strategies for arbitrary [`Record`]s, shared by the integration tests of both
//! formats (`.ccs` text, `.cct` binary).
//!
//! - [`arb_record`]: any one record of any kind, every field over its whole domain (physical
//!   addresses within 52 bits, aligned where the text form requires it; `Option`s both ways;
//!   flags both ways; lists empty and not; every agent kind; time present or not).
//! - [`arb_records`]: a stream the text grammar accepts in that order (header, then events with
//!   their expectations, final expectations and uniquely named programs), so that
//!   records → text → records and records → binary → records are both identities.
//!
//! Every keyword of [`Event`], [`StateItem`] and [`Check`] has a generator; a keyword without
//! one panics, so a vocabulary addition fails the coverage test until it gets one.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use sim_core::codec::Hex;
use sim_core::event::{
    AllocKind, CpaOp, Disposition, FaultKind, InvpcidKind, IommuCmd, MemType, MemslotOp, PamtType,
    PscOp, SeptStateName, SnpFwCmd, Space, TdState, VmKind,
};
use sim_core::{
    Address, Agent, Check, Context, Cycles, Event, Firmware, Gpa, Gva, Hva, Iova, PageSize,
    PrivLevel, Record, Setting, Spa, StateItem, TimedEvent,
};

const PHYS_LIMIT: u64 = 1 << 52;

/// A raw 52-bit physical value: edges, page-aligned and unaligned.
fn phys_raw() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(PHYS_LIMIT - 1),
        0..PHYS_LIMIT,
        (0..PHYS_LIMIT >> 12).prop_map(|p| p << 12),
    ]
}

/// A raw 64-bit virtual value: edges, canonical-looking and arbitrary.
fn virt_raw() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        any::<u64>(),
        (0..1u64 << 47).prop_map(|v| v & !0xfff),
        (0..1u64 << 47).prop_map(|v| v | 0xffff_8000_0000_0000),
    ]
}

/// A physical value aligned to `size`.
fn phys_aligned(size: PageSize) -> impl Strategy<Value = u64> {
    (0..PHYS_LIMIT >> size.shift()).prop_map(move |p| p << size.shift())
}

/// A virtual value aligned to `size`.
fn virt_aligned(size: PageSize) -> impl Strategy<Value = u64> {
    virt_raw().prop_map(move |v| v & !(size.bytes() - 1))
}

pub fn spa() -> impl Strategy<Value = Spa> {
    phys_raw().prop_map(Spa::new)
}

pub fn gpa() -> impl Strategy<Value = Gpa> {
    phys_raw().prop_map(Gpa::new)
}

pub fn hva() -> impl Strategy<Value = Hva> {
    virt_raw().prop_map(Hva::new)
}

pub fn iova() -> impl Strategy<Value = Iova> {
    virt_raw().prop_map(Iova::new)
}

/// An address of any of the five kinds.
pub fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        virt_raw().prop_map(|v| Address::Hva(Hva::new(v))),
        virt_raw().prop_map(|v| Address::Gva(Gva::new(v))),
        phys_raw().prop_map(|v| Address::Gpa(Gpa::new(v))),
        phys_raw().prop_map(|v| Address::Spa(Spa::new(v))),
        virt_raw().prop_map(|v| Address::Iova(Iova::new(v))),
    ]
}

/// An address of any kind aligned to `size`.
pub fn address_aligned(size: PageSize) -> impl Strategy<Value = Address> {
    prop_oneof![
        virt_aligned(size).prop_map(|v| Address::Hva(Hva::new(v))),
        virt_aligned(size).prop_map(|v| Address::Gva(Gva::new(v))),
        phys_aligned(size).prop_map(|v| Address::Gpa(Gpa::new(v))),
        phys_aligned(size).prop_map(|v| Address::Spa(Spa::new(v))),
        virt_aligned(size).prop_map(|v| Address::Iova(Iova::new(v))),
    ]
}

pub fn page_size() -> impl Strategy<Value = PageSize> {
    select(PageSize::ALL.to_vec())
}

/// The sizes an RMP entry can have.
pub fn rmp_size() -> impl Strategy<Value = PageSize> {
    select(vec![PageSize::K4, PageSize::M2])
}

pub fn hex() -> impl Strategy<Value = Hex> {
    prop_oneof![Just(Hex(0)), any::<u64>().prop_map(Hex)]
}

pub fn space() -> impl Strategy<Value = Space> {
    prop_oneof![
        Just(Space::Kernel),
        any::<u32>().prop_map(Space::Process),
        any::<u32>().prop_map(Space::Guest),
        any::<u32>().prop_map(Space::Stage2),
        any::<u32>().prop_map(Space::IoDomain),
    ]
}

fn all<T: Clone + std::fmt::Debug + 'static>(values: &'static [T]) -> impl Strategy<Value = T> {
    select(values.to_vec())
}

/// A name as counters and programs spell them.
pub fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:/+-]{1,16}"
}

pub fn agent() -> impl Strategy<Value = Agent> {
    let level = prop_oneof![(0u8..4).prop_map(PrivLevel::Vmpl), (0u8..16).prop_map(PrivLevel::Vtl)];
    let ctx = prop_oneof![
        Just(Context::HostKernel),
        any::<u32>().prop_map(Context::HostProcess),
        (any::<u32>(), any::<u32>(), level).prop_map(|(vm, vcpu, level)| Context::Guest {
            vm,
            vcpu,
            level
        }),
    ];
    prop_oneof![
        3 => (any::<u32>(), ctx).prop_map(|(cpu, ctx)| Agent::Cpu { cpu, ctx }),
        1 => any::<u32>().prop_map(Agent::Device),
        1 => prop_oneof![Just(Firmware::AmdSp), Just(Firmware::TdxModule)].prop_map(Agent::Firmware),
    ]
}

/// Events of one keyword, every field over its domain.
///
/// # Panics
/// For a keyword with no generator (a vocabulary addition this file has not caught up with).
pub fn event_of(keyword: &str) -> BoxedStrategy<Event> {
    let access = || (address(), any::<u32>());
    match keyword {
        "load" => access().prop_map(|(addr, size)| Event::Load { addr, size }).boxed(),
        "store" => (address(), any::<u32>(), all(MemType::ALL))
            .prop_map(|(addr, size, mt)| Event::Store { addr, size, mt })
            .boxed(),
        "fetch" => access().prop_map(|(addr, size)| Event::Fetch { addr, size }).boxed(),
        "dma-read" => access().prop_map(|(addr, size)| Event::DmaRead { addr, size }).boxed(),
        "dma-write" => access().prop_map(|(addr, size)| Event::DmaWrite { addr, size }).boxed(),
        "work" => any::<u64>().prop_map(|count| Event::Work { count }).boxed(),
        "cr3" => (address(), any::<u16>(), any::<bool>())
            .prop_map(|(root, pcid, noflush)| Event::Cr3Load { root, pcid, noflush })
            .boxed(),
        "map" => page_size()
            .prop_flat_map(|size| {
                (
                    address_aligned(size),
                    address_aligned(size),
                    Just(size),
                    space(),
                    any::<[bool; 4]>(),
                )
            })
            .prop_map(|(va, pa, size, space, [w, x, user, enc])| Event::Map {
                va,
                pa,
                size,
                space,
                w,
                x,
                user,
                enc,
            })
            .boxed(),
        "unmap" => page_size()
            .prop_flat_map(|size| (address_aligned(size), Just(size), space()))
            .prop_map(|(va, size, space)| Event::Unmap { va, size, space })
            .boxed(),
        "protect" => page_size()
            .prop_flat_map(|size| (address_aligned(size), Just(size), space(), any::<[bool; 3]>()))
            .prop_map(|(va, size, space, [w, x, user])| Event::Protect {
                va,
                size,
                space,
                w,
                x,
                user,
            })
            .boxed(),
        "thp-collapse" => (address_aligned(PageSize::M2), space())
            .prop_map(|(va, space)| Event::ThpCollapse { va, space })
            .boxed(),
        "thp-split" => (address_aligned(PageSize::M2), space())
            .prop_map(|(va, space)| Event::ThpSplit { va, space })
            .boxed(),
        "cpa" => (all(CpaOp::ALL), address(), any::<u64>())
            .prop_map(|(op, addr, pages)| Event::Cpa { op, addr, pages })
            .boxed(),
        "page-alloc" => (spa(), any::<u8>(), all(AllocKind::ALL))
            .prop_map(|(spa, order, kind)| Event::PageAlloc { spa, order, kind })
            .boxed(),
        "page-free" => {
            (spa(), any::<u8>()).prop_map(|(spa, order)| Event::PageFree { spa, order }).boxed()
        }
        "obj-alloc" => {
            (spa(), any::<u32>()).prop_map(|(spa, size)| Event::ObjAlloc { spa, size }).boxed()
        }
        "obj-free" => spa().prop_map(|spa| Event::ObjFree { spa }).boxed(),
        "gmem-alloc" => (gpa(), spa(), any::<u32>(), any::<u8>())
            .prop_map(|(gpa, spa, vm, order)| Event::GmemAlloc { gpa, spa, vm, order })
            .boxed(),
        "gmem-free" => (gpa(), any::<u32>(), any::<u8>())
            .prop_map(|(gpa, vm, order)| Event::GmemFree { gpa, vm, order })
            .boxed(),
        "invlpg" => address().prop_map(|addr| Event::Invlpg { addr }).boxed(),
        "invpcid" => (all(InvpcidKind::ALL), any::<u16>(), proptest::option::of(address()))
            .prop_map(|(kind, pcid, addr)| Event::Invpcid { kind, pcid, addr })
            .boxed(),
        "flush-asid" => any::<u32>().prop_map(|asid| Event::FlushAsid { asid }).boxed(),
        "flush-vpid" => any::<u16>().prop_map(|vpid| Event::FlushVpid { vpid }).boxed(),
        "flush-all" => Just(Event::FlushAll {}).boxed(),
        "shootdown" => (vec(any::<u32>(), 0..6), proptest::option::of(address()), any::<u64>())
            .prop_map(|(targets, addr, pages)| Event::Shootdown { targets, addr, pages })
            .boxed(),
        "iommu" => (
            all(IommuCmd::ALL),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(iova()),
            any::<u64>(),
        )
            .prop_map(|(cmd, device, domain, addr, pages)| Event::Iommu {
                cmd,
                device,
                domain,
                addr,
                pages,
            })
            .boxed(),
        "invept" => proptest::option::of(any::<u32>()).prop_map(|vm| Event::Invept { vm }).boxed(),
        "vmrun" => {
            (any::<u32>(), any::<u32>()).prop_map(|(vm, vcpu)| Event::VmRun { vm, vcpu }).boxed()
        }
        "vmexit" => (any::<u32>(), any::<u32>(), hex(), hex(), hex())
            .prop_map(|(vm, vcpu, code, info1, info2)| Event::VmExit {
                vm,
                vcpu,
                code,
                info1,
                info2,
            })
            .boxed(),
        "td-enter" => {
            (any::<u32>(), any::<u32>()).prop_map(|(vm, vcpu)| Event::TdEnter { vm, vcpu }).boxed()
        }
        "td-exit" => (any::<u32>(), any::<u32>(), hex())
            .prop_map(|(vm, vcpu, reason)| Event::TdExit { vm, vcpu, reason })
            .boxed(),
        "kick" => {
            (any::<u32>(), any::<u32>()).prop_map(|(vm, vcpu)| Event::VcpuKick { vm, vcpu }).boxed()
        }
        "rmpupdate" => rmp_size()
            .prop_flat_map(|size| {
                (phys_aligned(size), Just(size), any::<bool>(), any::<u32>(), gpa(), any::<bool>())
            })
            .prop_map(|(spa, size, assigned, asid, gpa, immutable)| Event::RmpUpdate {
                spa: Spa::new(spa),
                size,
                assigned,
                asid,
                gpa,
                immutable,
            })
            .boxed(),
        "psmash" => {
            phys_aligned(PageSize::M2).prop_map(|s| Event::Psmash { spa: Spa::new(s) }).boxed()
        }
        "pvalidate" => (address(), page_size(), any::<bool>())
            .prop_map(|(addr, size, validate)| Event::Pvalidate { addr, size, validate })
            .boxed(),
        "rmpadjust" => (address(), page_size(), any::<u8>(), hex(), any::<bool>())
            .prop_map(|(addr, size, vmpl, perms, vmsa)| Event::RmpAdjust {
                addr,
                size,
                vmpl,
                perms,
                vmsa,
            })
            .boxed(),
        "psc" => (all(PscOp::ALL), gpa(), page_size(), any::<u64>())
            .prop_map(|(op, gpa, size, pages)| Event::Psc { op, gpa, size, pages })
            .boxed(),
        "snp-fw" => (
            all(SnpFwCmd::ALL),
            any::<u32>(),
            proptest::option::of(spa()),
            proptest::option::of(gpa()),
            any::<u64>(),
        )
            .prop_map(|(cmd, vm, spa, gpa, pages)| Event::SnpFw { cmd, vm, spa, gpa, pages })
            .boxed(),
        "rmpread" => spa().prop_map(|spa| Event::RmpRead { spa }).boxed(),
        "seamcall" => (any::<u16>(), any::<u8>(), hex(), hex(), hex(), hex(), hex())
            .prop_map(|(leaf, version, rcx, rdx, r8, r9, r10)| Event::Seamcall {
                leaf,
                version,
                rcx,
                rdx,
                r8,
                r9,
                r10,
            })
            .boxed(),
        "tdcall" => (any::<u16>(), hex(), hex(), hex(), hex())
            .prop_map(|(leaf, rcx, rdx, r8, r9)| Event::Tdcall { leaf, rcx, rdx, r8, r9 })
            .boxed(),
        "map-gpa" => (gpa(), any::<u64>(), any::<bool>())
            .prop_map(|(gpa, bytes, shared)| Event::MapGpa { gpa, bytes, shared })
            .boxed(),
        "mem-attrs" => (gpa(), any::<u64>(), any::<u32>(), hex(), any::<u8>())
            .prop_map(|(gpa, bytes, vm, attrs, vtl)| Event::MemAttrs { gpa, bytes, vm, attrs, vtl })
            .boxed(),
        "memslot" => (
            all(MemslotOp::ALL),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            gpa(),
            any::<u64>(),
            hva(),
            hex(),
        )
            .prop_map(|(op, vm, slot, as_id, gpa, bytes, hva, flags)| Event::Memslot {
                op,
                vm,
                slot,
                as_id,
                gpa,
                bytes,
                hva,
                flags,
            })
            .boxed(),
        "vm-create" => (all(VmKind::ALL), any::<u32>(), any::<u32>(), any::<u64>())
            .prop_map(|(kind, vm, asid, memory)| Event::VmCreate { kind, vm, asid, memory })
            .boxed(),
        "vm-destroy" => any::<u32>().prop_map(|vm| Event::VmDestroy { vm }).boxed(),
        "vcpu-create" => (any::<u32>(), any::<u32>())
            .prop_map(|(vm, vcpu)| Event::VcpuCreate { vm, vcpu })
            .boxed(),
        "vcpu-destroy" => (any::<u32>(), any::<u32>())
            .prop_map(|(vm, vcpu)| Event::VcpuDestroy { vm, vcpu })
            .boxed(),
        "vsm-protect" => (gpa(), any::<u32>(), any::<u8>(), any::<u64>(), hex())
            .prop_map(|(gpa, vm, vtl, pages, mask)| Event::VsmProtect { gpa, vm, vtl, pages, mask })
            .boxed(),
        other => panic!("no generator for event `{other}`: add one to tests/common/mod.rs"),
    }
}

/// Any event.
pub fn event() -> impl Strategy<Value = Event> {
    select(Event::KEYWORDS.to_vec()).prop_flat_map(|(kw, _)| event_of(kw))
}

/// Any event with an agent and, half the time, a cycle stamp.
pub fn timed_event() -> impl Strategy<Value = TimedEvent> {
    (proptest::option::of(any::<u64>().prop_map(Cycles::new)), agent(), event())
        .prop_map(|(time, agent, event)| TimedEvent { time, agent, event })
}

/// State items of one keyword.
///
/// # Panics
/// For a keyword with no generator.
pub fn state_of(keyword: &str) -> BoxedStrategy<StateItem> {
    match keyword {
        "rmp" => rmp_size()
            .prop_flat_map(|size| {
                (phys_aligned(size), Just(size), any::<u32>(), gpa(), any::<[bool; 4]>())
            })
            .prop_map(|(spa, size, asid, gpa, [assigned, validated, immutable, vmsa])| {
                StateItem::Rmp {
                    spa: Spa::new(spa),
                    size,
                    assigned,
                    asid,
                    gpa,
                    validated,
                    immutable,
                    vmsa,
                }
            })
            .boxed(),
        "directmap" => page_size()
            .prop_flat_map(|size| {
                let pages = PHYS_LIMIT >> size.shift();
                (Just(size), 0..pages).prop_flat_map(move |(size, first)| {
                    let room = (pages - first).min(4096);
                    (Just(size), Just(first), proptest::option::of(1..=room))
                })
            })
            .prop_map(|(size, first, n)| StateItem::DirectMap {
                spa: Spa::new(first << size.shift()),
                size,
                len: n.map(|n| n << size.shift()),
            })
            .boxed(),
        "map" => page_size()
            .prop_flat_map(|size| {
                (
                    address_aligned(size),
                    address_aligned(size),
                    Just(size),
                    space(),
                    any::<[bool; 4]>(),
                )
            })
            .prop_map(|(va, pa, size, space, [w, x, user, enc])| StateItem::Map {
                va,
                pa,
                size,
                space,
                w,
                x,
                user,
                enc,
            })
            .boxed(),
        "td" => (
            spa(),
            any::<u32>(),
            any::<u32>(),
            all(TdState::ALL),
            spa(),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(|(tdr, vm, hkid, state, root, gpaw, epoch)| StateItem::Td {
                tdr,
                vm,
                hkid,
                state,
                root,
                gpaw,
                epoch,
            })
            .boxed(),
        "sept" => (spa(), gpa(), any::<u8>(), all(SeptStateName::ALL), proptest::option::of(spa()))
            .prop_map(|(tdr, gpa, level, state, hpa)| StateItem::Sept {
                tdr,
                gpa,
                level,
                state,
                hpa,
            })
            .boxed(),
        "pamt" => {
            (spa(), all(PamtType::ALL), proptest::option::of(spa()), page_size(), any::<u64>())
                .prop_map(|(hpa, pt, owner, size, bepoch)| StateItem::Pamt {
                    hpa,
                    pt,
                    owner,
                    size,
                    bepoch,
                })
                .boxed()
        }
        other => panic!("no generator for state item `{other}`: add one to tests/common/mod.rs"),
    }
}

/// Any state item.
pub fn state_item() -> impl Strategy<Value = StateItem> {
    select(StateItem::KEYWORDS.to_vec()).prop_flat_map(|(kw, _)| state_of(kw))
}

/// Checks of one keyword (only those that check something).
///
/// # Panics
/// For a keyword with no generator.
pub fn check_of(keyword: &str) -> BoxedStrategy<Check> {
    let ob = || proptest::option::of(any::<bool>());
    let ou = || proptest::option::of(any::<u64>());
    match keyword {
        "no-fault" => Just(Check::NoFault {}).boxed(),
        "fault" => (
            all(FaultKind::ALL),
            proptest::option::of(hex()),
            proptest::option::of(hex()),
            proptest::option::of(all(Disposition::ALL)),
        )
            .prop_map(|(kind, code, bits, disposition)| Check::Fault {
                kind,
                code,
                bits,
                disposition,
            })
            .boxed(),
        "rc" => (any::<u64>(), ob()).prop_map(|(code, cf)| Check::Rc { code, cf }).boxed(),
        "rmp" => {
            (
                spa(),
                proptest::option::of(page_size()),
                ob(),
                proptest::option::of(any::<u32>()),
                proptest::option::of(gpa()),
                ob(),
                ob(),
                ob(),
            )
                .prop_map(|(spa, size, assigned, asid, gpa, validated, immutable, vmsa)| {
                    Check::Rmp { spa, size, assigned, asid, gpa, validated, immutable, vmsa }
                })
                .prop_filter("checks something", Check::checks_something)
                .boxed()
        }
        "counter" => (name(), ou(), ou(), ou())
            .prop_map(|(name, eq, min, max)| Check::Counter { name, eq, min, max })
            .prop_filter("checks something", Check::checks_something)
            .boxed(),
        "directmap" => {
            (spa(), page_size()).prop_map(|(spa, size)| Check::DirectMap { spa, size }).boxed()
        }
        "regs" => (
            proptest::option::of(hex()),
            proptest::option::of(hex()),
            proptest::option::of(hex()),
            proptest::option::of(hex()),
            proptest::option::of(hex()),
        )
            .prop_map(|(rax, rcx, rdx, r8, r11)| Check::Regs { rax, rcx, rdx, r8, r11 })
            .prop_filter("checks something", Check::checks_something)
            .boxed(),
        "sept" => (
            spa(),
            gpa(),
            any::<u8>(),
            proptest::option::of(all(SeptStateName::ALL)),
            proptest::option::of(spa()),
        )
            .prop_map(|(tdr, gpa, level, state, hpa)| Check::Sept { tdr, gpa, level, state, hpa })
            .prop_filter("checks something", Check::checks_something)
            .boxed(),
        "pamt" => {
            (spa(), proptest::option::of(all(PamtType::ALL)), proptest::option::of(spa()), ou())
                .prop_map(|(hpa, pt, owner, bepoch)| Check::Pamt { hpa, pt, owner, bepoch })
                .prop_filter("checks something", Check::checks_something)
                .boxed()
        }
        "td" => (spa(), proptest::option::of(all(TdState::ALL)), ou(), ou())
            .prop_map(|(tdr, state, epoch, chldcnt)| Check::Td { tdr, state, epoch, chldcnt })
            .prop_filter("checks something", Check::checks_something)
            .boxed(),
        other => panic!("no generator for check `{other}`: add one to tests/common/mod.rs"),
    }
}

/// Any check that checks something.
pub fn check() -> impl Strategy<Value = Check> {
    select(Check::KEYWORDS.to_vec()).prop_flat_map(|(kw, _)| check_of(kw))
}

/// A setting word: any run of printable characters without whitespace or `#` (a few
/// non-ASCII ones included).
fn setting_value() -> impl Strategy<Value = String> {
    r#"[!-"$-~µé→]{1,12}"#
}

fn setting_key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,7}(\\.[a-z0-9_]{1,7}){0,2}"
}

fn setting_pairs(min: usize) -> impl Strategy<Value = Vec<(String, String)>> {
    vec((setting_key(), setting_value()), min..5).prop_map(|mut pairs| {
        let mut seen = std::collections::BTreeSet::new();
        pairs.retain(|(k, _)| seen.insert(k.clone()));
        pairs
    })
}

/// A header setting the text form accepts: `machine`/`host` with pairs, `vm N KIND` with pairs.
pub fn setting() -> impl Strategy<Value = Setting> {
    let vm_number = prop_oneof![
        any::<u32>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| format!("{n:#x}")),
    ];
    prop_oneof![
        (select(vec!["machine", "host"]), setting_pairs(1)).prop_map(|(section, pairs)| Setting {
            section: section.into(),
            args: Vec::new(),
            pairs
        }),
        (vm_number, all(VmKind::ALL), setting_pairs(0)).prop_map(|(n, kind, pairs)| Setting {
            section: "vm".into(),
            args: vec![n, kind.name().into()],
            pairs
        }),
    ]
}

/// Any one record of any kind (on its own; see [`arb_records`] for a stream in grammar order).
pub fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        6 => timed_event().prop_map(Record::Event),
        1 => setting().prop_map(Record::Setting),
        1 => state_item().prop_map(Record::State),
        2 => (any::<bool>(), check()).prop_map(|(at_end, check)| Record::Expect { at_end, check }),
        1 => name().prop_map(Record::ProgramBegin),
        1 => Just(Record::ProgramEnd),
    ]
}

/// An event followed by the expectations on it.
fn event_with_expects(max: usize) -> impl Strategy<Value = Vec<Record>> {
    (timed_event(), vec(check(), 0..=max)).prop_map(|(e, checks)| {
        std::iter::once(Record::Event(e))
            .chain(checks.into_iter().map(|check| Record::Expect { at_end: false, check }))
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Item {
    Plain(Vec<Record>),
    Program(String, Vec<Record>),
}

/// A stream in an order the text grammar accepts: settings and state, then events each followed
/// by its expectations, final expectations, and programs (uniquely named) of events and
/// expectations.
pub fn arb_records() -> impl Strategy<Value = Vec<Record>> {
    let header = vec(
        prop_oneof![setting().prop_map(Record::Setting), state_item().prop_map(Record::State)],
        0..5,
    );
    let item = prop_oneof![
        4 => event_with_expects(2).prop_map(Item::Plain),
        1 => check().prop_map(|check| Item::Plain(vec![Record::Expect { at_end: true, check }])),
        1 => (name(), vec(event_with_expects(1), 0..4))
            .prop_map(|(n, body)| Item::Program(n, body.concat())),
    ];
    (header, vec(item, 0..10)).prop_map(|(header, items)| {
        let mut out = header;
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Item::Plain(r) => out.extend(r),
                Item::Program(name, body) => {
                    // The index after the last dot makes every name unique.
                    out.push(Record::ProgramBegin(format!("{name}.{i}")));
                    out.extend(body);
                    out.push(Record::ProgramEnd);
                }
            }
        }
        out
    })
}
