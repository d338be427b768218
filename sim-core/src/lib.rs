//! ccsim's shared vocabulary (DESIGN.md "Layers"): address newtypes, page sizes, time, agents,
//! the event vocabulary and its field codecs, configuration, statistics, the deterministic
//! scheduler, the seeded RNG and the memory-services trait. It knows no hardware block.
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod addr;
pub mod agent;
pub mod codec;
pub mod config;
pub mod event;
pub mod memsvc;
pub mod page;
pub mod reuse;
pub mod rng;
pub mod sched;
pub mod stats;
pub mod time;
pub mod vocab;

pub use addr::{Gpa, Gva, Hva, Iova, Spa};
pub use agent::{Agent, Context, CpuId, DeviceId, Firmware, PrivLevel, VcpuId, VmId};
pub use event::{Address, Check, Event, Record, Setting, StateItem, TimedEvent};
pub use memsvc::MemoryServices;
pub use page::PageSize;
pub use rng::Rng;
pub use time::Cycles;

/// Major version of the event vocabulary and of both formats built on it.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor version: raised by every added tag or enum value (see [`event`] "Versioning rule").
pub const FORMAT_MINOR: u16 = 1;
