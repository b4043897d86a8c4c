//! The engine's tables, in storage the platform hands in: the one place
//! where their cells are made, whatever the storage is (boxed slices made
//! once at `C_Initialize` on a host, a static region on a board).
//!
//! A platform says how big each table is ([`Capacity`]) and where a table
//! lives ([`Tables`]: given a length and a maker of each entry, a table of
//! its `Store`); [`Storage::build`] makes every cell, with the platform's
//! locks and journal buffers.

use crate::ck::Rv;
use crate::error::{Error, Result};
use crate::handles::{IndexCell, ObjectEntry};
use crate::journal::Journal;
use crate::port::Platform;

use super::logins::LoginCell;
use super::pool::{MemberCell, SlotCell};
use super::sessions::SessionCell;

/// How many entries each table has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Members (at most [`MAX_MEMBERS`](super::MAX_MEMBERS) are used).
    pub members: usize,
    /// Slots: the virtual slots of WLD and HA mode, one per member in
    /// NORMAL mode.
    pub slots: usize,
    /// Sessions open at once (all slots together), each with its journal.
    pub sessions: usize,
    /// Virtual objects (WLD and HA mode).
    pub objects: usize,
}

impl Capacity {
    /// The objects' reverse index: twice the objects keeps its probes short.
    pub const fn object_index(&self) -> usize {
        2 * self.objects
    }
}

/// Where a platform keeps a table.
pub trait Tables<P: Platform> {
    /// A table of `len` entries, entry `i` made by `init(i)`; the first
    /// error of `init`, or `CKR_HOST_MEMORY` if there is no room for it.
    fn table<T: Send + Sync + 'static>(
        &mut self,
        len: usize,
        init: impl FnMut(usize) -> Result<T>,
    ) -> Result<P::Store<T>>;
}

/// The tables an engine works in. Each table's capacity is the length of
/// its slice.
pub struct Storage<P: Platform> {
    /// Members.
    pub members: P::Store<MemberCell<P::Member>>,
    /// Slots.
    pub slots: P::Store<SlotCell>,
    /// Each slot's login state.
    pub logins: P::Store<LoginCell<P::Lock>>,
    /// Sessions, each with its journal.
    pub sessions: P::Store<SessionCell<P::Lock, P::Journal>>,
    /// Virtual objects.
    pub objects: P::Store<ObjectEntry>,
    /// The objects' reverse index.
    pub object_index: P::Store<IndexCell>,
}

impl<P: Platform> Storage<P> {
    /// The bytes the tables of `capacity` take, with room to align each:
    /// what a platform that carves them out of one region sets aside (a
    /// firmware's static, sized at compile time).
    pub const fn bytes(capacity: &Capacity) -> usize {
        const fn table<T>(len: usize) -> usize {
            core::mem::size_of::<T>() * len + core::mem::align_of::<T>() - 1
        }
        table::<MemberCell<P::Member>>(capacity.members)
            + table::<SlotCell>(capacity.slots)
            + table::<LoginCell<P::Lock>>(capacity.slots)
            + table::<SessionCell<P::Lock, P::Journal>>(capacity.sessions)
            + table::<ObjectEntry>(capacity.objects)
            + table::<IndexCell>(capacity.object_index())
    }

    /// Every table of `capacity`, in `tables`: each lock made by `lock`
    /// (`None`: `CKR_CANT_LOCK`), session `i`'s journal by `journal(i)`.
    pub fn build(
        capacity: &Capacity,
        tables: &mut impl Tables<P>,
        mut lock: impl FnMut() -> Option<P::Lock>,
        mut journal: impl FnMut(usize) -> Journal<P::Journal>,
    ) -> Result<Self> {
        let cant_lock = Error::Rv(Rv::CANT_LOCK);
        Ok(Storage {
            members: tables.table(capacity.members, |_| Ok(MemberCell::new()))?,
            slots: tables.table(capacity.slots, |_| Ok(SlotCell::new()))?,
            logins: tables.table(capacity.slots, |_| {
                lock().map(LoginCell::new).ok_or(cant_lock)
            })?,
            sessions: tables.table(capacity.sessions, |i| {
                let l = lock().ok_or(cant_lock)?;
                Ok(SessionCell::new(l, journal(i)))
            })?,
            objects: tables.table(capacity.objects, |_| Ok(ObjectEntry::default()))?,
            object_index: tables.table(capacity.object_index(), |_| Ok(IndexCell::default()))?,
        })
    }
}
