//! The module's locks as explicit state (spec/tdx.md §1.7; TDX module `tdx_locks.h`,
//! `helpers.c`). Every acquisition is a try-lock: failure is reported to the caller, which
//! returns `TDX_OPERAND_BUSY` (or the host-priority variant) with the lock's operand ID.
//!
//! - Shared/exclusive ("sharex") locks: the TD's S-EPT tree lock, epoch lock and OP_STATE lock
//!   (in the TD state), the KOT lock (in the module), and one per PAMT entry (here). A shared
//!   acquisition fails if the lock is held exclusively; an exclusive one fails if it is held
//!   at all (`acquire_sharex_lock_sh/_ex`).
//! - The per-entry S-EPT lock is the TDEL bit of the entry itself, with the HP bit giving the
//!   host priority over the guest (`sept_lock_acquire_host`, `sept_lock_acquire_guest`): they
//!   live in the entry in simulated memory.

use crate::sept::{bits, spa};
use mmu_model::PhysMemTables;
use sim_core::{PageSize, Spa};

/// How a lock is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Shared with other shared holders.
    Shared,
    /// Exclusive.
    Exclusive,
}

/// A shared/exclusive try-lock (`sharex_lock_t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sharex {
    exclusive: bool,
    shared: u32,
}

impl Sharex {
    /// Try to take the lock; false if it is held incompatibly.
    pub fn try_acquire(&mut self, mode: LockMode) -> bool {
        match mode {
            LockMode::Shared if !self.exclusive => {
                self.shared += 1;
                true
            }
            LockMode::Exclusive if !self.exclusive && self.shared == 0 => {
                self.exclusive = true;
                true
            }
            LockMode::Shared | LockMode::Exclusive => false,
        }
    }

    /// Release a hold taken in `mode` (a release that matches no hold is ignored).
    pub fn release(&mut self, mode: LockMode) {
        match mode {
            LockMode::Shared => self.shared = self.shared.saturating_sub(1),
            LockMode::Exclusive => self.exclusive = false,
        }
    }

    /// Nobody holds it.
    pub fn is_free(&self) -> bool {
        !self.exclusive && self.shared == 0
    }

    /// Held exclusively.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Number of shared holders.
    pub fn shared_holders(&self) -> u32 {
        self.shared
    }
}

/// The PAMT entry locks that are held, as a short list of ((level, page number at that
/// level), lock); an absent key is a free lock, so memory follows the locks held. Only a few
/// locks are held at any time (a handful per call in flight), so a linear scan beats hashing.
#[derive(Clone, Debug, Default)]
pub(crate) struct PamtLocks {
    held: Vec<((u8, u64), Sharex)>,
}

fn pamt_key(hpa: u64, size: PageSize) -> (u8, u64) {
    (crate::sept::size_level(size), hpa >> size.shift())
}

impl PamtLocks {
    /// Try to lock the entry of level `size` covering `hpa`.
    pub(crate) fn try_lock(&mut self, hpa: u64, size: PageSize, mode: LockMode) -> bool {
        let k = pamt_key(hpa, size);
        match self.held.iter_mut().find(|(key, _)| *key == k) {
            Some((_, l)) => l.try_acquire(mode),
            None => {
                let mut l = Sharex::default();
                // A fresh lock is free: always succeeds.
                let ok = l.try_acquire(mode);
                self.held.push((k, l));
                ok
            }
        }
    }

    /// Release a hold.
    pub(crate) fn unlock(&mut self, hpa: u64, size: PageSize, mode: LockMode) {
        let k = pamt_key(hpa, size);
        if let Some(i) = self.held.iter().position(|(key, _)| *key == k) {
            let l = &mut self.held[i].1;
            l.release(mode);
            if l.is_free() {
                self.held.swap_remove(i);
            }
        }
    }

    /// The state of one entry's lock.
    pub(crate) fn get(&self, hpa: u64, size: PageSize) -> Sharex {
        let k = pamt_key(hpa, size);
        self.held.iter().find(|(key, _)| *key == k).map(|(_, l)| *l).unwrap_or_default()
    }
}

/// Host-side entry lock (`sept_lock_acquire_host`): set TDEL if clear (and clear HP);
/// otherwise set HP, so that guest-side acquirers back off, and fail.
pub(crate) fn entry_lock_host(tables: &mut PhysMemTables<Spa>, addr: Spa) -> bool {
    let v = tables.read(addr);
    if v & bits::TDEL != 0 {
        tables.write(addr, v | bits::HP);
        return false;
    }
    tables.write(addr, (v | bits::TDEL) & !bits::HP);
    true
}

/// Why a guest-side entry lock failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuestLockError {
    /// TDEL was set (`TDX_OPERAND_BUSY`).
    Busy,
    /// TDEL was free but HP was set (`TDX_OPERAND_BUSY_HOST_PRIORITY`).
    HostPriority,
}

/// Guest-side entry lock (`sept_lock_acquire_guest`): fails if TDEL is set, or, having taken
/// it, if HP is set (then it releases it again).
pub(crate) fn entry_lock_guest(
    tables: &mut PhysMemTables<Spa>,
    addr: Spa,
) -> Result<(), GuestLockError> {
    let v = tables.read(addr);
    if v & bits::TDEL != 0 {
        return Err(GuestLockError::Busy);
    }
    if v & bits::HP != 0 {
        return Err(GuestLockError::HostPriority);
    }
    tables.write(addr, v | bits::TDEL);
    Ok(())
}

/// Release an entry lock (`sept_lock_release`): clear TDEL.
pub(crate) fn entry_unlock(tables: &mut PhysMemTables<Spa>, addr: Spa) {
    let v = tables.read(addr);
    if v & bits::TDEL != 0 {
        tables.write(addr, v & !bits::TDEL);
    }
}

/// One lock held by an operation in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum HeldLock {
    /// Placeholder of an unused slot.
    #[default]
    Nothing,
    /// The TD's S-EPT tree lock (TD = TDR HPA).
    Tree(u64, LockMode),
    /// The TD's epoch lock.
    Epoch(u64, LockMode),
    /// The TD's OP_STATE lock.
    OpState(u64, LockMode),
    /// A PAMT entry lock.
    Pamt(u64, PageSize, LockMode),
    /// An S-EPT entry's TDEL (host or guest side).
    Entry(Spa),
    /// The first `n` entries of an S-EPT table page (PROMOTE locks all 512 children).
    Children(Spa, u16),
    /// The KOT lock.
    Kot(LockMode),
}

/// Most locks one operation holds at once (RELOCATE: TDR walk 3, OP_STATE, tree, entry,
/// source page, target walk 3 = 10).
pub(crate) const MAX_HELD: usize = 16;

/// The locks an operation holds, released in reverse order.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Held {
    items: [HeldLock; MAX_HELD],
    len: usize,
}

impl Held {
    pub(crate) fn push(&mut self, l: HeldLock) {
        // The capacity covers every leaf's lock set by construction (see MAX_HELD).
        debug_assert!(self.len < MAX_HELD, "held-lock capacity exceeded");
        if self.len < MAX_HELD {
            self.items[self.len] = l;
            self.len += 1;
        }
    }

    /// Take out the newest lock.
    pub(crate) fn pop(&mut self) -> Option<HeldLock> {
        self.len = self.len.checked_sub(1)?;
        Some(self.items[self.len])
    }
}

/// Release the first `n` entry locks of a table page.
pub(crate) fn unlock_children(tables: &mut PhysMemTables<Spa>, table: Spa, n: u16) {
    for i in 0..u64::from(n) {
        entry_unlock(tables, spa(table.raw() + i * 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharex_rules() {
        let mut l = Sharex::default();
        assert!(l.try_acquire(LockMode::Shared));
        assert!(l.try_acquire(LockMode::Shared));
        assert!(!l.try_acquire(LockMode::Exclusive));
        l.release(LockMode::Shared);
        l.release(LockMode::Shared);
        assert!(l.try_acquire(LockMode::Exclusive));
        assert!(!l.try_acquire(LockMode::Shared));
        assert!(!l.try_acquire(LockMode::Exclusive));
        l.release(LockMode::Exclusive);
        assert!(l.is_free());
    }

    #[test]
    fn entry_locks_and_host_priority() {
        let mut t: PhysMemTables = PhysMemTables::new();
        t.install(Spa::new(0x1000)).unwrap();
        let a = Spa::new(0x1008);
        // Guest holds; a host attempt fails and flags HP.
        assert_eq!(entry_lock_guest(&mut t, a), Ok(()));
        assert!(!entry_lock_host(&mut t, a));
        assert_ne!(t.read(a) & bits::HP, 0);
        entry_unlock(&mut t, a);
        // HP makes the next guest attempt back off until a host acquires.
        assert_eq!(entry_lock_guest(&mut t, a), Err(GuestLockError::HostPriority));
        assert!(entry_lock_host(&mut t, a));
        assert_eq!(t.read(a) & bits::HP, 0);
        assert_eq!(entry_lock_guest(&mut t, a), Err(GuestLockError::Busy));
        entry_unlock(&mut t, a);
        assert_eq!(t.read(a), 0);
    }

    #[test]
    fn pamt_locks_forget_free_entries() {
        let mut p = PamtLocks::default();
        assert!(p.try_lock(0x20_0000, PageSize::M2, LockMode::Shared));
        assert!(!p.try_lock(0x20_1000, PageSize::M2, LockMode::Exclusive));
        assert!(p.try_lock(0x20_1000, PageSize::K4, LockMode::Exclusive));
        p.unlock(0x20_0000, PageSize::M2, LockMode::Shared);
        p.unlock(0x20_1000, PageSize::K4, LockMode::Exclusive);
        assert!(p.held.is_empty());
        assert!(p.get(0, PageSize::K4).is_free());
    }
}
