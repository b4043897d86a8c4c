//! Virtual handles and their mapping to members' real handles.
//!
//! A virtual handle is `(generation << 20) | (index + 1)`: never 0
//! (`CK_INVALID_HANDLE`), at most 31 bits (it fits a 32-bit `CK_ULONG` and
//! survives applications that keep handles in a signed int), and a handle
//! whose table entry was freed and reused is refused until the 11-bit
//! generation wraps.
//!
//! The object table exists in WLD and HA mode, where one virtual object may
//! be served by several members, each with its own real handle. Token
//! objects carry their identity (class, key type, `CKA_ID`, `CKA_LABEL`) so
//! that they can be found again on a member that has not served them yet.
//! Session objects of a virtual slot all live on one member, the slot's
//! *home*, which the table records (and, in HA mode, are re-created on the
//! next home after a failover).

use heapless::Vec;

use crate::ck::Rv;
use crate::config::MAX_WLD_SLOTS;
use crate::error::{Error, Result};

const INDEX_BITS: u32 = 20;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const GEN_MASK: u16 = (1 << 11) - 1;

/// The largest table a virtual handle can index.
pub const MAX_TABLE: usize = (INDEX_MASK - 1) as usize;

/// Encodes a table index and generation as a virtual handle.
pub fn encode(index: usize, generation: u16) -> u64 {
    (u64::from(generation & GEN_MASK) << INDEX_BITS) | (index as u64 + 1)
}

/// Splits a virtual handle into index and generation; `None` for values no
/// table entry could have produced.
pub fn decode(handle: u64) -> Option<(usize, u16)> {
    if handle == 0 || handle >> (INDEX_BITS + 11) != 0 {
        return None;
    }
    let index = (handle & INDEX_MASK).checked_sub(1)?;
    Some((index as usize, (handle >> INDEX_BITS) as u16))
}

/// The next generation of a reused entry.
pub fn next_generation(generation: u16) -> u16 {
    generation.wrapping_add(1) & GEN_MASK
}

/// The longest `CKA_ID` and `CKA_LABEL` an identity keeps. Objects with
/// longer ones stay usable, but only on the member that returned them.
pub const MAX_IDENTITY_BYTES: usize = 64;

/// How many members' real handles one object entry remembers. A token
/// object used on more members than this forgets the oldest mapping and
/// finds the object again by identity when it is next used there.
pub const REAL_HANDLES_PER_OBJECT: usize = 4;

/// The attributes by which a token object is found on another member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// `CKA_CLASS`.
    pub class: u64,
    /// `CKA_KEY_TYPE` for keys.
    pub key_type: Option<u64>,
    /// `CKA_ID`, if the object has one.
    pub id: Option<Vec<u8, MAX_IDENTITY_BYTES>>,
    /// `CKA_LABEL`, if the object has one.
    pub label: Option<Vec<u8, MAX_IDENTITY_BYTES>>,
}

/// What kind of object an entry stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ObjectKind {
    /// A free entry.
    #[default]
    Free,
    /// A token object that can be found on every member by its identity.
    Token(Identity),
    /// A session object made through the session at this table index.
    Session {
        /// Index of the owning session in the session table.
        owner: usize,
        /// The randomly generated key this object's value comes from (itself
        /// for a generated key, the private key for both halves of a pair,
        /// the source's root for a copy), if any: such an object can be
        /// re-created on another member only while that key was never used.
        root: Option<u64>,
        /// For a root: it was used in a cryptographic operation (or its
        /// value read), so a re-created key would differ.
        used: bool,
    },
    /// An object that lives on one member only and cannot be found on
    /// another (a session object of unknown origin, or a token object whose
    /// identity is not unique or too long to keep).
    Local,
}

/// One entry of the object table.
#[derive(Clone, Debug, Default)]
pub struct ObjectEntry {
    generation: u16,
    slot: usize,
    kind: ObjectKind,
    /// (member index, real handle), newest last.
    real: Vec<(u16, u64), REAL_HANDLES_PER_OBJECT>,
}

/// One cell of the reverse index from (member, real handle) to entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct IndexCell {
    state: IndexState,
    member: u16,
    real: u64,
    entry: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum IndexState {
    #[default]
    Empty,
    Used,
    Removed,
}

/// Where a virtual slot's session objects live.
#[derive(Clone, Copy, Debug, Default)]
struct Home {
    /// The member that holds them (meaningful while `count` > 0).
    member: usize,
    /// How many session objects the slot has.
    count: u32,
}

/// The virtual object table over caller-provided storage: `entries` holds
/// the objects, `index` (ideally twice as long) the reverse index.
pub struct ObjectTable<E, I> {
    entries: E,
    index: I,
    /// Per virtual slot (WLD and HA mode have at most [`MAX_WLD_SLOTS`]).
    homes: [Home; MAX_WLD_SLOTS],
    used: usize,
    /// One past the highest entry ever used: scans of the table stop here,
    /// so they cost what the application uses, not the table's capacity.
    high: usize,
    /// Index cells in state Used and Removed: probes end at an Empty one.
    index_used: usize,
    index_removed: usize,
}

impl<E, I> ObjectTable<E, I>
where
    E: core::ops::DerefMut<Target = [ObjectEntry]>,
    I: core::ops::DerefMut<Target = [IndexCell]>,
{
    /// A table over `entries` and `index`, which must be all default.
    pub fn new(entries: E, index: I) -> Self {
        ObjectTable {
            entries,
            index,
            homes: [Home {
                member: 0,
                count: 0,
            }; MAX_WLD_SLOTS],
            used: 0,
            high: 0,
            index_used: 0,
            index_removed: 0,
        }
    }

    /// The number of objects in the table.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether the table has no objects.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    fn entry(&self, handle: u64) -> Option<(usize, &ObjectEntry)> {
        let (i, generation) = decode(handle)?;
        let e = self.entries.get(i)?;
        (e.kind != ObjectKind::Free && e.generation == generation).then_some((i, e))
    }

    /// The kind and virtual slot of `handle`, if it is a live object.
    pub fn kind(&self, handle: u64) -> Option<(&ObjectKind, usize)> {
        self.entry(handle).map(|(_, e)| (&e.kind, e.slot))
    }

    /// The real handle of `handle` on `member`, if known.
    pub fn real(&self, handle: u64, member: usize) -> Option<u64> {
        let (_, e) = self.entry(handle)?;
        e.real
            .iter()
            .find(|(m, _)| usize::from(*m) == member)
            .map(|&(_, r)| r)
    }

    /// The members (and real handles) that serve `handle`.
    pub fn reals(&self, handle: u64) -> &[(u16, u64)] {
        self.entry(handle).map_or(&[], |(_, e)| &e.real[..])
    }

    /// The virtual handle already given to `real` on `member`.
    pub fn lookup(&self, member: usize, real: u64) -> Option<u64> {
        let i = self.index_find(member as u16, real)?;
        let entry = self.index[i].entry as usize;
        Some(encode(entry, self.entries[entry].generation))
    }

    /// A token object of `slot` with exactly this identity.
    pub fn find_identity(&self, slot: usize, identity: &Identity) -> Option<u64> {
        self.entries[..self.high]
            .iter()
            .enumerate()
            .find_map(|(i, e)| match &e.kind {
                ObjectKind::Token(id) if e.slot == slot && id == identity => {
                    Some(encode(i, e.generation))
                }
                _ => None,
            })
    }

    /// The member that holds `slot`'s session objects, if it has any.
    pub fn home(&self, slot: usize) -> Option<usize> {
        self.homes
            .get(slot)
            .filter(|h| h.count > 0)
            .map(|h| h.member)
    }

    /// `slot`'s session objects are (to be) on `member` now: its home moved
    /// there (a failover, or a new object made while the old home is out).
    pub fn set_home(&mut self, slot: usize, member: usize) {
        if let Some(h) = self.homes.get_mut(slot) {
            h.member = member;
        }
    }

    /// The session that made session object `handle`.
    pub fn owner(&self, handle: u64) -> Option<usize> {
        match self.kind(handle) {
            Some((ObjectKind::Session { owner, .. }, _)) => Some(*owner),
            _ => None,
        }
    }

    /// Whether session table index `owner` owns a session object.
    pub fn owns_any(&self, owner: usize) -> bool {
        self.entries[..self.high]
            .iter()
            .any(|e| matches!(e.kind, ObjectKind::Session { owner: o, .. } if o == owner))
    }

    /// Adds an object served by `member` as `real`; returns its new handle.
    /// `CKR_HOST_MEMORY` when the table or its index is full. A session
    /// object counts towards its slot's home (the first one sets it).
    pub fn insert(
        &mut self,
        slot: usize,
        kind: ObjectKind,
        member: usize,
        real: u64,
    ) -> Result<u64> {
        if self.index_free_cells() == 0 {
            return Err(Error::Rv(Rv::HOST_MEMORY));
        }
        let i = self
            .entries
            .iter()
            .position(|e| e.kind == ObjectKind::Free)
            .inspect(|&i| self.high = self.high.max(i + 1))
            .ok_or(Error::Rv(Rv::HOST_MEMORY))?;
        let session = matches!(kind, ObjectKind::Session { .. });
        let e = &mut self.entries[i];
        e.slot = slot;
        e.kind = kind;
        e.real.clear();
        let handle = encode(i, e.generation);
        self.used += 1;
        if session && let Some(h) = self.homes.get_mut(slot) {
            if h.count == 0 {
                h.member = member;
            }
            h.count += 1;
        }
        if let Err(e) = self.add_real(handle, member, real) {
            self.remove(handle);
            return Err(e);
        }
        Ok(handle)
    }

    /// Records that `member` serves `handle` as `real`, forgetting the oldest
    /// member's mapping if the entry is full.
    pub fn add_real(&mut self, handle: u64, member: usize, real: u64) -> Result<()> {
        let (i, _) = self
            .entry(handle)
            .ok_or(Error::Rv(Rv::OBJECT_HANDLE_INVALID))?;
        let member = member as u16;
        if let Some(old) = self.entries[i].real.iter().position(|(m, _)| *m == member) {
            let (_, r) = self.entries[i].real.remove(old);
            self.index_remove(member, r);
        } else if self.entries[i].real.is_full() {
            let (m, r) = self.entries[i].real.remove(0);
            self.index_remove(m, r);
        }
        self.index_insert(member, real, i as u32)?;
        // Room was made above.
        let _ = self.entries[i].real.push((member, real));
        Ok(())
    }

    /// Removes `handle`; its handle is never valid again (until the
    /// generation wraps).
    pub fn remove(&mut self, handle: u64) {
        let Some((i, _)) = self.entry(handle) else {
            return;
        };
        let reals = core::mem::take(&mut self.entries[i].real);
        for (m, r) in reals {
            self.index_remove(m, r);
        }
        let e = &mut self.entries[i];
        let (slot, kind) = (e.slot, core::mem::take(&mut e.kind));
        e.generation = next_generation(e.generation);
        self.used -= 1;
        if matches!(kind, ObjectKind::Session { .. })
            && let Some(h) = self.homes.get_mut(slot)
        {
            h.count = h.count.saturating_sub(1);
        }
    }

    /// Marks the random key behind `handle` (if any) used. Returns whether
    /// this changed it (the first use).
    pub fn mark_used(&mut self, handle: u64) -> bool {
        let root = match self.kind(handle) {
            Some((ObjectKind::Session { root: Some(r), .. }, _)) => *r,
            _ => return false,
        };
        let Some((i, _)) = self.entry(root) else {
            return false;
        };
        match &mut self.entries[i].kind {
            ObjectKind::Session { used, .. } if !*used => {
                *used = true;
                true
            }
            _ => false,
        }
    }

    /// Whether the random key behind `handle` was used (false for objects
    /// with no random root, and when the root no longer exists: then the
    /// object's recipe cannot run anyway).
    pub fn root_used(&self, handle: u64) -> bool {
        let Some((ObjectKind::Session { root: Some(r), .. }, _)) = self.kind(handle) else {
            return false;
        };
        matches!(
            self.kind(*r),
            Some((ObjectKind::Session { used: true, .. }, _))
        )
    }

    /// The random root of `handle`, if it has one.
    pub fn root(&self, handle: u64) -> Option<u64> {
        match self.kind(handle) {
            Some((ObjectKind::Session { root, .. }, _)) => *root,
            _ => None,
        }
    }

    /// Sets the random root of a session object `handle`.
    pub fn set_root(&mut self, handle: u64, new_root: u64) {
        if let Some((i, _)) = self.entry(handle)
            && let ObjectKind::Session { root, .. } = &mut self.entries[i].kind
        {
            *root = Some(new_root);
        }
    }

    /// Removes every session object owned by session table index `owner`.
    pub fn remove_owned_by(&mut self, owner: usize) {
        for i in 0..self.high {
            if matches!(self.entries[i].kind, ObjectKind::Session { owner: o, .. } if o == owner) {
                let handle = encode(i, self.entries[i].generation);
                self.remove(handle);
            }
        }
    }

    /// Forgets every mapping to `member` (its handles are gone: it failed).
    ///
    /// An object that lives on that member alone ([`ObjectKind::Local`]) is
    /// removed with its last mapping: nothing can find it again, and a
    /// search that meets it later gives it a new entry, so keeping the old
    /// one would leak an entry at each failure of its member.
    pub fn forget_member(&mut self, member: usize) {
        let member = member as u16;
        for i in 0..self.high {
            if let Some(at) = self.entries[i].real.iter().position(|(m, _)| *m == member) {
                let (_, r) = self.entries[i].real.remove(at);
                self.index_remove(member, r);
                if self.entries[i].kind == ObjectKind::Local && self.entries[i].real.is_empty() {
                    let handle = encode(i, self.entries[i].generation);
                    self.remove(handle);
                }
            }
        }
    }

    /// Forgets `member`'s mappings of token objects only (after a logout,
    /// when a token may renumber its private objects); they are found
    /// again by identity. Session objects keep theirs: for them the
    /// member's own answer is the right one.
    pub fn forget_token_objects(&mut self, member: usize) {
        let member = member as u16;
        for i in 0..self.high {
            if !matches!(self.entries[i].kind, ObjectKind::Token(_)) {
                continue;
            }
            if let Some(at) = self.entries[i].real.iter().position(|(m, _)| *m == member) {
                let (_, r) = self.entries[i].real.remove(at);
                self.index_remove(member, r);
            }
        }
    }

    /// Removes the session objects owned by `owner` that `member` does not
    /// serve; whether there were any.
    pub fn remove_owned_unmapped(&mut self, owner: usize, member: usize) -> bool {
        let mut any = false;
        for i in 0..self.high {
            let e = &self.entries[i];
            if matches!(e.kind, ObjectKind::Session { owner: o, .. } if o == owner)
                && !e.real.iter().any(|&(m, _)| usize::from(m) == member)
            {
                let handle = encode(i, e.generation);
                self.remove(handle);
                any = true;
            }
        }
        any
    }

    /// Removes every object of virtual slot `slot` (its token was
    /// initialised: they are gone from every member).
    pub fn remove_slot(&mut self, slot: usize) {
        for i in 0..self.high {
            if self.entries[i].kind != ObjectKind::Free && self.entries[i].slot == slot {
                let handle = encode(i, self.entries[i].generation);
                self.remove(handle);
            }
        }
    }

    fn hash(&self, member: u16, real: u64) -> usize {
        // Fibonacci hashing of both parts; real handles are often small
        // sequential numbers, which this spreads.
        let h = (real ^ (u64::from(member) << 48)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 32) as usize % self.index.len().max(1)
    }

    fn index_free_cells(&self) -> usize {
        // Keep one cell empty so that every probe ends.
        self.index.len().saturating_sub(self.index_used + 1)
    }

    /// Rebuilds the index from the entries once removed cells make up a
    /// quarter of it, so that probes stay short.
    fn index_compact(&mut self) {
        if self.index_removed * 4 < self.index.len() {
            return;
        }
        for s in self.index.iter_mut() {
            *s = IndexCell::default();
        }
        self.index_used = 0;
        self.index_removed = 0;
        for i in 0..self.high {
            for k in 0..self.entries[i].real.len() {
                let (m, r) = self.entries[i].real[k];
                // The index held these before, so they fit again.
                let _ = self.index_insert(m, r, i as u32);
            }
        }
    }

    fn index_find(&self, member: u16, real: u64) -> Option<usize> {
        let n = self.index.len();
        let mut i = self.hash(member, real);
        for _ in 0..n {
            let s = &self.index[i];
            match s.state {
                IndexState::Empty => return None,
                IndexState::Used if s.member == member && s.real == real => return Some(i),
                _ => {}
            }
            i = (i + 1) % n;
        }
        None
    }

    fn index_insert(&mut self, member: u16, real: u64, entry: u32) -> Result<()> {
        if let Some(i) = self.index_find(member, real) {
            // The member reused a real handle of a stale entry: repoint it.
            let old = self.index[i].entry as usize;
            if old != entry as usize
                && let Some(at) = self.entries[old]
                    .real
                    .iter()
                    .position(|&(m, r)| m == member && r == real)
            {
                self.entries[old].real.remove(at);
            }
            self.index[i].entry = entry;
            return Ok(());
        }
        if self.index_free_cells() == 0 {
            return Err(Error::Rv(Rv::HOST_MEMORY));
        }
        let n = self.index.len();
        let mut i = self.hash(member, real);
        for _ in 0..n {
            if self.index[i].state != IndexState::Used {
                if self.index[i].state == IndexState::Removed {
                    self.index_removed -= 1;
                }
                self.index_used += 1;
                self.index[i] = IndexCell {
                    state: IndexState::Used,
                    member,
                    real,
                    entry,
                };
                return Ok(());
            }
            i = (i + 1) % n;
        }
        Err(Error::Rv(Rv::HOST_MEMORY))
    }

    fn index_remove(&mut self, member: u16, real: u64) {
        if let Some(i) = self.index_find(member, real) {
            self.index[i].state = IndexState::Removed;
            self.index_used -= 1;
            self.index_removed += 1;
            self.index_compact();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table<'a, const N: usize, const M: usize>(
        entries: &'a mut [ObjectEntry; N],
        index: &'a mut [IndexCell; M],
    ) -> ObjectTable<&'a mut [ObjectEntry], &'a mut [IndexCell]> {
        ObjectTable::new(&mut entries[..], &mut index[..])
    }

    #[test]
    fn handles_round_trip_and_reject_garbage() {
        for (i, g) in [(0, 0), (5, 7), (MAX_TABLE - 1, GEN_MASK)] {
            let h = encode(i, g);
            assert!(h != 0 && h < 1 << 31);
            assert_eq!(decode(h), Some((i, g)));
        }
        assert_eq!(decode(0), None);
        assert_eq!(decode(1 << 40), None);
        assert_eq!(next_generation(GEN_MASK), 0);
    }

    #[test]
    fn objects_map_both_ways_and_stale_handles_die() {
        let mut e: [ObjectEntry; 4] = Default::default();
        let mut ix = [IndexCell::default(); 8];
        let mut t = table(&mut e, &mut ix);
        let h = t.insert(0, ObjectKind::Local, 1, 100).unwrap();
        assert_eq!(t.real(h, 1), Some(100));
        assert_eq!(t.real(h, 2), None);
        assert_eq!(t.lookup(1, 100), Some(h));
        t.add_real(h, 2, 7).unwrap();
        assert_eq!(t.lookup(2, 7), Some(h));
        t.remove(h);
        assert_eq!(t.real(h, 1), None);
        assert_eq!(t.lookup(1, 100), None);
        let h2 = t.insert(0, ObjectKind::Local, 1, 100).unwrap();
        assert_ne!(h, h2, "a reused entry gets a new generation");
        assert!(t.kind(h).is_none());
    }

    #[test]
    fn full_is_an_answer() {
        let mut e: [ObjectEntry; 2] = Default::default();
        let mut ix = [IndexCell::default(); 8];
        let mut t = table(&mut e, &mut ix);
        t.insert(0, ObjectKind::Local, 0, 1).unwrap();
        t.insert(0, ObjectKind::Local, 0, 2).unwrap();
        assert_eq!(
            t.insert(0, ObjectKind::Local, 0, 3),
            Err(Error::Rv(Rv::HOST_MEMORY))
        );
    }

    #[test]
    fn a_local_object_goes_with_its_member_and_nothing_leaks() {
        let mut e: [ObjectEntry; 2] = Default::default();
        let mut ix = [IndexCell::default(); 8];
        let mut t = table(&mut e, &mut ix);
        let token = ObjectKind::Token(Identity::default());
        let kept = t.insert(0, token, 0, 1).unwrap();
        // A member that fails and comes back a hundred times, each time
        // showing its local object anew: the table never fills up.
        for round in 0..100u64 {
            let local = t.insert(0, ObjectKind::Local, 0, 100 + round).unwrap();
            t.forget_member(0);
            assert!(
                t.kind(local).is_none(),
                "round {round}: freed with its mapping"
            );
        }
        assert_eq!(t.len(), 1);
        // A token object stays, to be found again by identity.
        assert!(t.kind(kept).is_some());
        assert_eq!(t.real(kept, 0), None);
    }

    #[test]
    fn a_random_root_is_marked_used_through_its_copies() {
        let mut e: [ObjectEntry; 4] = Default::default();
        let mut ix = [IndexCell::default(); 8];
        let mut t = table(&mut e, &mut ix);
        let kind = ObjectKind::Session {
            owner: 0,
            root: None,
            used: false,
        };
        let key = t.insert(0, kind.clone(), 0, 1).unwrap();
        t.set_root(key, key);
        let copy = t.insert(0, kind.clone(), 0, 2).unwrap();
        t.set_root(copy, key);
        let plain = t.insert(0, kind, 0, 3).unwrap();
        assert!(!t.root_used(copy) && !t.root_used(key));
        assert!(t.mark_used(copy), "the first use");
        assert!(!t.mark_used(key), "already used");
        assert!(t.root_used(key) && t.root_used(copy));
        assert!(!t.mark_used(plain) && !t.root_used(plain));
    }

    #[test]
    fn oldest_member_mapping_is_evicted() {
        let mut e: [ObjectEntry; 2] = Default::default();
        let mut ix = [IndexCell::default(); 16];
        let mut t = table(&mut e, &mut ix);
        let h = t.insert(0, ObjectKind::Local, 0, 10).unwrap();
        for m in 1..=REAL_HANDLES_PER_OBJECT {
            t.add_real(h, m, 10 + m as u64).unwrap();
        }
        assert_eq!(t.real(h, 0), None);
        assert_eq!(t.lookup(0, 10), None);
        assert_eq!(t.real(h, REAL_HANDLES_PER_OBJECT), Some(14));
    }

    #[test]
    fn session_objects_go_with_their_session_and_identity_finds() {
        let mut e: [ObjectEntry; 4] = Default::default();
        let mut ix = [IndexCell::default(); 8];
        let mut t = table(&mut e, &mut ix);
        let id = Identity {
            class: 3,
            key_type: Some(3),
            id: Some(Vec::from_slice(&[1]).unwrap()),
            label: None,
        };
        let tok = t.insert(0, ObjectKind::Token(id.clone()), 0, 1).unwrap();
        let s = t
            .insert(
                0,
                ObjectKind::Session {
                    owner: 3,
                    root: None,
                    used: false,
                },
                0,
                2,
            )
            .unwrap();
        assert_eq!(t.find_identity(0, &id), Some(tok));
        assert_eq!(t.find_identity(1, &id), None);
        t.remove_owned_by(3);
        assert!(t.kind(s).is_none());
        assert!(t.kind(tok).is_some());
        assert_eq!(t.len(), 1);
    }
}
