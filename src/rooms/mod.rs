//! The room registry of one Socket.IO namespace.
//!
//! # What it owns
//!
//! Two indexes over the same set of (member, room) pairs:
//!
//! - the **member index**, member id → the member's handle and the set of rooms it is in. It answers
//!   [`Rooms::rooms_of`] and [`Rooms::contains`], and it is what [`Rooms::leave_all`] walks on
//!   disconnect;
//! - the **room index**, room → its members (member id → handle). It answers broadcasts
//!   ([`Rooms::members_of`]) without touching the member index: a room's members are found in one
//!   shard, and their handles are copied out in one pass.
//!
//! A member's **own room** (the room named by its id, which every Socket.IO socket is in) is kept in
//! the member index only, as a flag on the member's entry: it never has another member of its own
//! kind, and a second entry for every connection in the room index would cost more than the rest of
//! the registry put together. Every answer includes it as if it were an ordinary room (a broadcast to
//! it, `rooms_of`, `contains`, `room_len`, `all_rooms`); others may still join a room of that name,
//! which is then an ordinary room too, in the room index, and the answers take the union.
//!
//! A member is in the member index exactly when it is in at least one room (its own included), and a
//! room is in the room index exactly when it has at least one member other than the one it is named
//! after: the last member to leave removes the room, and leaving the last room removes the member.
//!
//! Memory: a member id is allocated once, as an `Arc<str>`, and that one allocation is shared by the
//! member index and every room the member is in. A room name is likewise shared by the room index and
//! every member's room set (the first `Arc` to create the room is kept; later joins reuse it).
//!
//! # Shards
//!
//! Each index is split into [`SHARDS`] (a power of two) shards chosen by a hash of the key, the member
//! index under `std::sync::Mutex`es and the room index under `std::sync::RwLock`s, so concurrent
//! broadcasts to the same room do not serialise each other. Each shard sits on its own cache line.
//! The shard hash uses its own random seed, independent of the seeds of the maps inside the shards,
//! so the keys of one shard do not cluster inside its map.
//!
//! # Lock order, and why it cannot deadlock
//!
//! 1. A **member shard** is always taken before any room shard, and a thread holds at most one
//!    member shard (the consistency check in tests takes all of them, in ascending order, before any
//!    room shard).
//! 2. **Room shards** are taken one at a time, each released before the next is taken (again except
//!    the test check, which takes them in ascending order after all member shards).
//!
//! Every thread therefore acquires locks along one global order (member shards by index, then room
//! shards by index), and no thread ever waits for a lock that precedes one it holds: a cycle of waits
//! is impossible. Readers that only read the room index (broadcast) never hold more than one lock.
//!
//! Every change to a member's rooms (join, leave, leave_all) is made while holding that member's
//! shard lock, and it updates both indexes before releasing it. A member's changes are therefore
//! serialised, and whenever its member shard is unlocked the two indexes agree about it exactly. A
//! broadcast that reads several room shards one after the other may see a member that is changing
//! rooms at that moment in some of its old rooms and some of its new ones; it never sees a member in
//! a room the member was not in at some point during the call.
//!
//! # What it must never do
//!
//! - Hold a lock while sending, while `.await`ing, or while calling caller code: [`Rooms::members_of`]
//!   copies handles out and returns after unlocking; [`Rooms::for_each_member`] calls its closure
//!   only after every lock is released. The only foreign code run under a lock is `V::clone`, which
//!   for a socket handle (`Arc<Socket>`) is a reference-count increment.
//! - Run a socket's destructor under a lock: handles removed from the room index are clones of the
//!   member's own handle, and that one is dropped only after all locks are released, so for an `Arc`
//!   handle the last reference is never released under a lock.
//! - Use an async mutex: every critical section is short and synchronous.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

mod small;

use small::SmallMap;

/// A room name. Cloning is a reference-count increment.
pub type Room = Arc<str>;

/// The number of shards in each index. A power of two, so a shard is picked by masking a hash.
pub const SHARDS: usize = 32;

const _: () = assert!(SHARDS.is_power_of_two());

/// A member id, allocated once and shared by both indexes.
type Id = Arc<str>;

/// One member's entry in the member index.
struct Member<V> {
    /// The handle given on the member's first join; every room entry holds a clone of it.
    handle: V,
    /// The rooms the member is in other than its own; never empty while the entry exists unless
    /// `own` is set. The first is kept inline.
    rooms: SmallMap<Room, ()>,
    /// Whether the member is in its own room (the room named by its id).
    own: bool,
}

impl<V> Member<V> {
    fn is_in_no_room(&self) -> bool {
        !self.own && self.rooms.is_empty()
    }
}

/// One shard of the member index.
type MemberShard<V> = HashMap<Id, Member<V>>;

/// One shard of the room index: room → (member id → handle). No room's member map is ever empty; a
/// room of one member (every socket's own room) keeps it inline.
type RoomShard<V> = HashMap<Room, SmallMap<Id, V>>;

/// Puts each shard on its own cache line, so that threads working on neighbouring shards do not
/// contend for the same line.
#[repr(align(64))]
struct Padded<T>(T);

/// The room registry of one namespace: which members are in which rooms, and their handles.
///
/// `V` is a member's handle (for a socket, an `Arc<Socket>`), keyed by the member's id. It is cloned
/// under a lock, so its `Clone` must be cheap and must not touch this registry.
///
/// All methods take `&self`; share the registry with an `Arc`. See the [module docs](self) for the
/// locking rules.
pub struct Rooms<V: Clone> {
    /// Seeds the hash that picks a shard.
    shard_hasher: RandomState,
    /// The member index: member id → handle and rooms.
    members: Box<[Padded<Mutex<MemberShard<V>>>; SHARDS]>,
    /// The room index: room → member id → handle.
    rooms: Box<[Padded<RwLock<RoomShard<V>>>; SHARDS]>,
}

// ===== impl Rooms =====

impl<V: Clone> Rooms<V> {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self {
            shard_hasher: RandomState::new(),
            members: Box::new(std::array::from_fn(|_| Padded(Mutex::default()))),
            rooms: Box::new(std::array::from_fn(|_| Padded(RwLock::default()))),
        }
    }

    /// Adds member `id`, with handle `handle`, to each of `rooms`. Idempotent: joining a room the
    /// member is already in changes nothing.
    ///
    /// The handle is recorded on the member's first join and reused for later joins while the member
    /// is in any room (a member id names one socket); a member that has left every room starts over.
    pub fn join(&self, id: &str, handle: &V, rooms: impl IntoIterator<Item = Room>) {
        self.join_as(id, || Arc::from(id), handle, rooms);
    }

    /// [`join`](Self::join) for a caller that holds its id as an `Arc` already: a new member's
    /// entry shares it instead of allocating a copy.
    pub fn join_shared(&self, id: &Arc<str>, handle: &V, rooms: impl IntoIterator<Item = Room>) {
        self.join_as(id, || Arc::clone(id), handle, rooms);
    }

    fn join_as(
        &self,
        id: &str,
        new_key: impl FnOnce() -> Id,
        handle: &V,
        rooms: impl IntoIterator<Item = Room>,
    ) {
        let mut rooms = rooms.into_iter().peekable();
        if rooms.peek().is_none() {
            // No rooms, no entry: a member exists only while it is in a room.
            return;
        }
        let mut members = lock(&self.member_shard(id).0);
        let key: Id = members
            .get_key_value(id)
            .map_or_else(new_key, |(key, _)| Arc::clone(key));
        let member = members.entry(Arc::clone(&key)).or_insert_with(|| Member {
            handle: handle.clone(),
            rooms: SmallMap::default(),
            own: false,
        });
        for room in rooms {
            if *room == *key {
                member.own = true;
                continue;
            }
            if member.rooms.contains_key(&room) {
                continue;
            }
            // Clone before touching either index, so a panicking clone leaves them consistent.
            let handle = member.handle.clone();
            let room = {
                let mut shard = write(&self.room_shard(&room).0);
                let room = shard
                    .get_key_value(&room)
                    .map_or(room, |(existing, _)| Arc::clone(existing));
                shard
                    .entry(Arc::clone(&room))
                    .or_default()
                    .insert(Arc::clone(&key), handle);
                room
            };
            member.rooms.insert(room, ());
        }
    }

    /// Removes member `id` from `room`. Does nothing if it is not in that room. Removes the room if
    /// it becomes empty.
    pub fn leave(&self, id: &str, room: &str) {
        let mut members = lock(&self.member_shard(id).0);
        let Some(member) = members.get_mut(id) else {
            return;
        };
        if room == id {
            if !member.own {
                return;
            }
            member.own = false;
        } else {
            if member.rooms.remove(room).is_none() {
                return;
            }
            remove_from_room(&mut write(&self.room_shard(room).0), room, id);
        }
        let gone = if member.is_in_no_room() {
            members.remove(id)
        } else {
            None
        };
        drop(members);
        // The member's own handle, if it left its last room, is dropped here: after unlocking.
        drop(gone);
    }

    /// Removes member `id` from every room it is in, as on disconnect, and returns those rooms (in
    /// no particular order; empty if it was in none). Rooms left empty are removed.
    pub fn leave_all(&self, id: &str) -> Vec<Room> {
        let mut members = lock(&self.member_shard(id).0);
        let Some((key, mut member)) = members.remove_entry(id) else {
            return Vec::new();
        };
        let mut rooms: Vec<Room> = member.rooms.take_keys();
        for room in &rooms {
            remove_from_room(&mut write(&self.room_shard(room).0), room, id);
        }
        drop(members);
        if member.own {
            rooms.push(key);
        }
        // The member's own handle is dropped here: after unlocking.
        drop(member);
        rooms
    }

    /// The rooms member `id` is in, in no particular order (empty if it is in none).
    pub fn rooms_of(&self, id: &str) -> Vec<Room> {
        let members = lock(&self.member_shard(id).0);
        let Some((key, member)) = members.get_key_value(id) else {
            return Vec::new();
        };
        let mut rooms: Vec<Room> = Vec::with_capacity(member.rooms.len() + 1);
        if member.own {
            rooms.push(Arc::clone(key));
        }
        rooms.extend(member.rooms.keys().cloned());
        rooms
    }

    /// Whether member `id` is in `room`.
    pub fn contains(&self, id: &str, room: &str) -> bool {
        let members = lock(&self.member_shard(id).0);
        members.get(id).is_some_and(|member| {
            if room == id {
                member.own
            } else {
                member.rooms.contains_key(room)
            }
        })
    }

    /// The number of members in `room` (0 if the room does not exist).
    pub fn room_len(&self, room: &str) -> usize {
        let others = read(&self.room_shard(room).0)
            .get(room)
            .map_or(0, SmallMap::len);
        others + usize::from(self.owner_of(room).is_some())
    }

    /// Every room with at least one member, in no particular order.
    pub fn all_rooms(&self) -> Vec<Room> {
        let mut out = Vec::new();
        for shard in self.rooms.iter() {
            let shard = read(&shard.0);
            out.extend(shard.keys().cloned());
        }
        // Own rooms, but those that others joined too are listed above already.
        let mut own = Vec::new();
        for shard in self.members.iter() {
            let shard = lock(&shard.0);
            own.extend(
                shard
                    .iter()
                    .filter(|(_, m)| m.own)
                    .map(|(id, _)| Arc::clone(id)),
            );
        }
        own.retain(|id| !read(&self.room_shard(id).0).contains_key(id));
        out.extend(own);
        out
    }

    /// The id of the member whose own room `room` is, if it is in it.
    fn owner_of(&self, room: &str) -> Option<Id> {
        let members = lock(&self.member_shard(room).0);
        members
            .get_key_value(room)
            .filter(|(_, member)| member.own)
            .map(|(id, _)| Arc::clone(id))
    }

    /// The handles of the members of any of `rooms`, minus the members of any of `except`: the
    /// recipients of a broadcast. A member in several of `rooms` appears once. An empty `rooms`
    /// means every member of the registry, as a Socket.IO broadcast without rooms reaches the whole
    /// namespace (each socket is in the room named by its own id).
    ///
    /// Handles are copied out under the room locks, one room at a time; the call returns after
    /// unlocking, so the caller sends without holding any lock.
    pub fn members_of(&self, rooms: &[Room], except: &[Room]) -> Vec<V> {
        self.collect(rooms, except, |_, handle| handle.clone())
    }

    /// Calls `f` with the id and handle of each member that [`members_of`](Self::members_of) would
    /// return. The members are copied out first; `f` runs after every lock is released, so it may
    /// send, or call back into this registry.
    pub fn for_each_member(&self, rooms: &[Room], except: &[Room], mut f: impl FnMut(&str, &V)) {
        let recipients = self.collect(rooms, except, |id, handle| (Arc::clone(id), handle.clone()));
        for (id, handle) in &recipients {
            f(id, handle);
        }
    }

    /// Applies `pick` to each recipient of a broadcast to `rooms` except `except` (see
    /// [`members_of`](Self::members_of)) under the lock of the shard it was found in, and returns the
    /// results. `pick` is this module's own code, never the caller's.
    fn collect<T>(
        &self,
        rooms: &[Room],
        except: &[Room],
        mut pick: impl FnMut(&Id, &V) -> T,
    ) -> Vec<T> {
        let excluded = self.ids_in(except);
        let is_excluded = |id: &Id| !excluded.is_empty() && excluded.contains(id);
        let mut out = Vec::new();

        if rooms.is_empty() {
            for shard in self.members.iter() {
                let shard = lock(&shard.0);
                out.reserve(shard.len());
                for (id, member) in shard.iter() {
                    if !is_excluded(id) {
                        out.push(pick(id, &member.handle));
                    }
                }
            }
            return out;
        }

        // With one room its members are distinct already (the member it is named after is never in
        // the room index's entry for it); with more, remember whom we have seen.
        let dedupe = rooms.len() > 1;
        let mut seen: HashSet<Id> = HashSet::new();
        for room in rooms {
            {
                let members = lock(&self.member_shard(room).0);
                if let Some((id, member)) = members.get_key_value(&**room) {
                    if member.own && !is_excluded(id) && (!dedupe || seen.insert(Arc::clone(id))) {
                        out.push(pick(id, &member.handle));
                    }
                }
            }
            let shard = read(&self.room_shard(room).0);
            let Some(room_members) = shard.get(room) else {
                continue;
            };
            out.reserve(room_members.len());
            for (id, handle) in room_members {
                if is_excluded(id) || (dedupe && !seen.insert(Arc::clone(id))) {
                    continue;
                }
                out.push(pick(id, handle));
            }
        }
        out
    }

    /// The ids of the members of any of `rooms` (no allocation when `rooms` is empty).
    fn ids_in(&self, rooms: &[Room]) -> HashSet<Id> {
        let mut ids = HashSet::new();
        for room in rooms {
            if let Some(id) = self.owner_of(room) {
                ids.insert(id);
            }
            let shard = read(&self.room_shard(room).0);
            if let Some(room_members) = shard.get(room) {
                ids.extend(room_members.keys().cloned());
            }
        }
        ids
    }

    fn member_shard(&self, id: &str) -> &Padded<Mutex<MemberShard<V>>> {
        &self.members[self.shard_index(id)]
    }

    fn room_shard(&self, room: &str) -> &Padded<RwLock<RoomShard<V>>> {
        &self.rooms[self.shard_index(room)]
    }

    fn shard_index(&self, key: &str) -> usize {
        // Truncating the hash is fine: only its low bits are used.
        (self.shard_hasher.hash_one(key) as usize) & (SHARDS - 1)
    }
}

impl<V: Clone> Default for Rooms<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> fmt::Debug for Rooms<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Takes no lock: a Debug print must not block on, or deadlock with, the registry.
        f.debug_struct("Rooms")
            .field("shards", &SHARDS)
            .finish_non_exhaustive()
    }
}

/// Removes `id` from `room` in a room shard, and the room if it is left empty.
fn remove_from_room<V>(shard: &mut RoomShard<V>, room: &str, id: &str) {
    if let Some(room_members) = shard.get_mut(room) {
        room_members.remove(id);
        if room_members.is_empty() {
            shard.remove(room);
        }
    }
}

// Poisoning is ignored: a panic under one of these locks can only come from `V::clone`, which runs
// before either index is changed (see `Rooms::join`), or from an allocation failure, which aborts.
// The maps are consistent whenever a guard is released, so the data is still good.

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

// ===== test support =====

#[cfg(test)]
impl<V: Clone> Rooms<V> {
    /// Checks that the two indexes agree exactly, with every shard locked (member shards in order,
    /// then room shards in order, which follows the lock order), so it may run while other threads
    /// change the registry. Also checks that no room and no member is empty, that every key lives in
    /// the shard its hash picks, and that ids and room names are shared between the indexes.
    pub(crate) fn check_consistency(&self) -> Result<(), String> {
        let members: Vec<_> = self.members.iter().map(|shard| lock(&shard.0)).collect();
        let rooms: Vec<_> = self.rooms.iter().map(|shard| read(&shard.0)).collect();

        let mut pairs = 0usize;
        for (index, shard) in members.iter().enumerate() {
            for (id, member) in shard.iter() {
                if self.shard_index(id) != index {
                    return Err(format!("member {id} in member shard {index}"));
                }
                if member.is_in_no_room() {
                    return Err(format!("member {id} is in no room but has an entry"));
                }
                for room in member.rooms.keys() {
                    if room == id {
                        return Err(format!("member {id} lists its own room as another"));
                    }
                    let shard = &rooms[self.shard_index(room)];
                    let Some((room_key, room_members)) = shard.get_key_value(room) else {
                        return Err(format!("member {id} lists {room}, which does not exist"));
                    };
                    let Some((id_key, _)) = room_members.get_key_value(id) else {
                        return Err(format!("member {id} lists {room}, which lacks it"));
                    };
                    if !Arc::ptr_eq(room_key, room) {
                        return Err(format!("room name {room} not shared"));
                    }
                    if !Arc::ptr_eq(id_key, id) {
                        return Err(format!("member id {id} not shared in {room}"));
                    }
                    pairs += 1;
                }
            }
        }

        let mut room_pairs = 0usize;
        for (index, shard) in rooms.iter().enumerate() {
            for (room, room_members) in shard.iter() {
                if self.shard_index(room) != index {
                    return Err(format!("room {room} in room shard {index}"));
                }
                if room_members.is_empty() {
                    return Err(format!("room {room} is empty but exists"));
                }
                for id in room_members.keys() {
                    if id == room {
                        return Err(format!("room {room} lists the member it is named after"));
                    }
                    let in_member_index = members[self.shard_index(id)]
                        .get(id)
                        .is_some_and(|member| member.rooms.contains_key(room));
                    if !in_member_index {
                        return Err(format!("room {room} has {id}, whose entry lacks it"));
                    }
                    room_pairs += 1;
                }
            }
        }
        if pairs != room_pairs {
            return Err(format!(
                "{pairs} member→room pairs, {room_pairs} room→member"
            ));
        }
        Ok(())
    }

    /// Whether no shard is locked, checked with `try_lock` so that it never blocks (it is called
    /// from a handle's destructor to catch a drop under a lock).
    fn is_unlocked(&self) -> bool {
        self.members.iter().all(|shard| shard.0.try_lock().is_ok())
            && self.rooms.iter().all(|shard| shard.0.try_write().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Weak;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    fn room(name: &str) -> Room {
        Arc::from(name)
    }

    fn rooms(names: &[&str]) -> Vec<Room> {
        names.iter().map(|name| room(name)).collect()
    }

    fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
        items.sort();
        items
    }

    fn names(rooms: Vec<Room>) -> Vec<String> {
        sorted(rooms.iter().map(|room| room.to_string()).collect())
    }

    fn check(registry: &Rooms<u32>) {
        registry.check_consistency().unwrap();
    }

    #[test]
    fn join_is_idempotent() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["r1", "r2"]));
        registry.join("a", &1, rooms(&["r1", "r2", "r1"]));
        assert_eq!(names(registry.rooms_of("a")), ["r1", "r2"]);
        assert_eq!(registry.room_len("r1"), 1);
        assert_eq!(registry.members_of(&rooms(&["r1"]), &[]), [1]);
        check(&registry);
    }

    #[test]
    fn join_keeps_the_first_handle_until_the_member_leaves_everything() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["r1"]));
        registry.join("a", &2, rooms(&["r2"]));
        assert_eq!(registry.members_of(&rooms(&["r1", "r2"]), &[]), [1]);
        registry.leave_all("a");
        registry.join("a", &3, rooms(&["r1"]));
        assert_eq!(registry.members_of(&rooms(&["r1"]), &[]), [3]);
        check(&registry);
    }

    #[test]
    fn join_without_rooms_creates_nothing() {
        let registry = Rooms::new();
        registry.join("a", &1, Vec::new());
        assert!(registry.rooms_of("a").is_empty());
        assert!(registry.members_of(&[], &[]).is_empty());
        check(&registry);
    }

    #[test]
    fn join_shares_room_names_and_ids() {
        let registry = Rooms::new();
        let first = room("r");
        registry.join("a", &1, [Arc::clone(&first)]);
        // A second, separately allocated name for the same room: the first allocation is kept.
        registry.join("b", &2, [room("r")]);
        assert!(Arc::ptr_eq(&registry.rooms_of("b")[0], &first));
        check(&registry); // also checks that ids are shared between the indexes
    }

    #[test]
    fn leave_removes_one_room() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["r1", "r2"]));
        registry.join("b", &2, rooms(&["r1"]));
        registry.leave("a", "r1");
        assert!(!registry.contains("a", "r1"));
        assert!(registry.contains("a", "r2"));
        assert!(registry.contains("b", "r1"));
        assert_eq!(registry.room_len("r1"), 1);
        // Leaving a room one is not in, or as an unknown member, changes nothing.
        registry.leave("a", "r1");
        registry.leave("a", "nowhere");
        registry.leave("nobody", "r2");
        assert_eq!(names(registry.rooms_of("a")), ["r2"]);
        check(&registry);
    }

    #[test]
    fn empty_rooms_and_members_are_removed() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["r1", "r2"]));
        registry.join("b", &2, rooms(&["r2"]));
        registry.leave("a", "r1");
        assert_eq!(registry.room_len("r1"), 0);
        assert_eq!(names(registry.all_rooms()), ["r2"]);
        registry.leave("a", "r2");
        registry.leave("b", "r2");
        assert!(registry.all_rooms().is_empty());
        assert!(registry.rooms_of("a").is_empty());
        assert!(registry.members_of(&[], &[]).is_empty());
        check(&registry);
    }

    #[test]
    fn leave_all_returns_the_rooms_and_clears_the_member() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["a", "r1", "r2"]));
        registry.join("b", &2, rooms(&["b", "r2"]));
        assert_eq!(names(registry.leave_all("a")), ["a", "r1", "r2"]);
        assert!(registry.rooms_of("a").is_empty());
        assert!(!registry.contains("a", "r2"));
        assert_eq!(names(registry.all_rooms()), ["b", "r2"]);
        assert_eq!(registry.room_len("r2"), 1);
        assert!(registry.leave_all("a").is_empty());
        assert!(registry.leave_all("nobody").is_empty());
        check(&registry);
    }

    #[test]
    fn members_of_dedupes_across_rooms() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["r1", "r2", "r3"]));
        registry.join("b", &2, rooms(&["r2"]));
        registry.join("c", &3, rooms(&["r3"]));
        registry.join("d", &4, rooms(&["elsewhere"]));
        let all = rooms(&["r1", "r2", "r3", "r2", "missing"]);
        assert_eq!(sorted(registry.members_of(&all, &[])), [1, 2, 3]);
        assert_eq!(sorted(registry.members_of(&rooms(&["r3"]), &[])), [1, 3]);
        assert!(registry.members_of(&rooms(&["missing"]), &[]).is_empty());
    }

    #[test]
    fn members_of_leaves_out_the_except_rooms() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["r1", "muted"]));
        registry.join("b", &2, rooms(&["r1", "r2"]));
        registry.join("c", &3, rooms(&["r2", "banned"]));
        registry.join("d", &4, rooms(&["r2"]));
        let to = rooms(&["r1", "r2"]);
        assert_eq!(
            sorted(registry.members_of(&to, &rooms(&["muted", "banned"]))),
            [2, 4]
        );
        assert_eq!(
            sorted(registry.members_of(&to[..1], &rooms(&["muted"]))),
            [2]
        );
        // Excluding a target room itself leaves no one from it.
        assert!(registry.members_of(&to[..1], &to[..1]).is_empty());
        assert_eq!(
            sorted(registry.members_of(&to, &rooms(&["missing"]))),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn an_own_room_answers_as_any_room_but_lives_in_the_member_entry() {
        let registry: Rooms<u32> = Rooms::new();
        registry.join("a", &1, rooms(&["a", "lobby"]));
        // Another member joins a room named as `a` is: an ordinary room of that name.
        registry.join("b", &2, rooms(&["b", "a"]));
        check(&registry);
        // `a`'s own room is no entry of the room index: only `b` is listed under "a" there.
        assert_eq!(
            read(&registry.room_shard("a").0)
                .get("a")
                .map(SmallMap::len),
            Some(1)
        );
        assert!(!read(&registry.room_shard("b").0).contains_key("b"));
        assert_eq!(sorted(registry.members_of(&rooms(&["a"]), &[])), [1, 2]);
        assert_eq!(sorted(registry.members_of(&rooms(&["b"]), &[])), [2]);
        assert_eq!(
            sorted(registry.members_of(&[], &rooms(&["a"]))),
            Vec::<u32>::new()
        );
        assert_eq!(
            sorted(registry.members_of(&rooms(&["lobby", "b"]), &rooms(&["b"]))),
            [1]
        );
        assert_eq!(registry.room_len("a"), 2);
        assert_eq!(registry.room_len("b"), 1);
        assert!(registry.contains("a", "a") && registry.contains("b", "a"));
        assert_eq!(names(sorted(registry.rooms_of("a"))), ["a", "lobby"]);
        assert_eq!(names(sorted(registry.all_rooms())), ["a", "b", "lobby"]);
        // Leaving its own room keeps the member while it is in another.
        registry.leave("a", "a");
        check(&registry);
        assert_eq!(sorted(registry.members_of(&rooms(&["a"]), &[])), [2]);
        assert_eq!(names(registry.rooms_of("a")), ["lobby"]);
        assert_eq!(names(sorted(registry.leave_all("b"))), ["a", "b"]);
        registry.join("c", &3, rooms(&["c"]));
        assert_eq!(names(registry.leave_all("c")), ["c"]);
        registry.leave("a", "lobby");
        check(&registry);
        assert!(registry.all_rooms().is_empty());
        assert!(registry.members_of(&[], &[]).is_empty());
    }

    #[test]
    fn members_of_no_rooms_is_everyone() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["a"]));
        registry.join("b", &2, rooms(&["b", "r"]));
        registry.join("c", &3, rooms(&["c", "r"]));
        assert_eq!(sorted(registry.members_of(&[], &[])), [1, 2, 3]);
        assert_eq!(sorted(registry.members_of(&[], &rooms(&["b"]))), [1, 3]);
        assert_eq!(sorted(registry.members_of(&[], &rooms(&["r"]))), [1]);
    }

    #[test]
    fn for_each_member_sees_ids_and_may_reenter() {
        let registry = Rooms::new();
        registry.join("a", &1, rooms(&["r1"]));
        registry.join("b", &2, rooms(&["r1", "r2"]));
        let mut seen = Vec::new();
        registry.for_each_member(&rooms(&["r1", "r2"]), &[], |id, handle| {
            // Calling back into the registry (even to change it) must not deadlock.
            registry.leave(id, "r1");
            seen.push((id.to_owned(), *handle));
        });
        assert_eq!(sorted(seen), [("a".to_owned(), 1), ("b".to_owned(), 2)]);
        assert_eq!(registry.room_len("r1"), 0);
        check(&registry);
    }

    /// A handle whose destructor records whether any registry lock was held when it ran.
    struct Probe {
        registry: Weak<Rooms<Arc<Self>>>,
        dropped_unlocked: Arc<AtomicBool>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            if let Some(registry) = self.registry.upgrade() {
                let unlocked = registry.is_unlocked();
                self.dropped_unlocked.store(unlocked, Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn the_last_handle_is_dropped_outside_the_locks() {
        let registry: Arc<Rooms<Arc<Probe>>> = Arc::new(Rooms::new());
        let mut flags = Vec::new();
        for id in ["via_leave_all", "via_leave"] {
            let flag = Arc::new(AtomicBool::new(false));
            let probe = Arc::new(Probe {
                registry: Arc::downgrade(&registry),
                dropped_unlocked: Arc::clone(&flag),
            });
            registry.join(id, &probe, rooms(&["r1", "r2"]));
            flags.push(flag);
        } // the registry now holds the only references
        registry.leave_all("via_leave_all");
        assert!(flags[0].load(Ordering::SeqCst));
        registry.leave("via_leave", "r1");
        registry.leave("via_leave", "r2");
        assert!(flags[1].load(Ordering::SeqCst));
    }

    #[test]
    fn stress_concurrent_changes_keep_the_indexes_consistent() {
        const THREADS: usize = 8;
        const ITERATIONS: usize = 20_000;
        const IDS: u64 = 50;
        const ROOMS: u64 = 20;
        let ids: Vec<String> = (0..IDS).map(|i| format!("socket-id-{i:010}")).collect();
        let room_names: Vec<Room> = (0..ROOMS).map(|r| room(&format!("room:{r}"))).collect();
        let registry: Rooms<u32> = Rooms::new();
        let done = AtomicBool::new(false);
        let checks = AtomicUsize::new(0);

        thread::scope(|scope| {
            // A checker that takes the whole registry while the writers run.
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    registry.check_consistency().unwrap();
                    checks.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(1));
                }
            });
            let writers: Vec<_> = (0..THREADS as u64)
                .map(|t| {
                    let (ids, room_names, registry) = (&ids, &room_names, &registry);
                    scope.spawn(move || {
                        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
                        let pick_room =
                            |rng: &mut XorShift| Arc::clone(&room_names[rng.below(ROOMS) as usize]);
                        for _ in 0..ITERATIONS {
                            let member = rng.below(IDS);
                            let id = &ids[member as usize];
                            match rng.below(100) {
                                0..=39 => {
                                    let to: Vec<Room> = (0..1 + rng.below(3))
                                        .map(|_| pick_room(&mut rng))
                                        .collect();
                                    registry.join(id, &(member as u32), to);
                                }
                                40..=64 => registry.leave(id, &pick_room(&mut rng)),
                                65..=69 => {
                                    registry.leave_all(id);
                                }
                                _ => {
                                    let to: Vec<Room> = (0..1 + rng.below(4))
                                        .map(|_| pick_room(&mut rng))
                                        .collect();
                                    let except: Vec<Room> =
                                        (0..rng.below(2)).map(|_| pick_room(&mut rng)).collect();
                                    let got = sorted(registry.members_of(&to, &except));
                                    assert!(got.windows(2).all(|w| w[0] != w[1]), "{got:?}");
                                    assert!(got.iter().all(|&h| u64::from(h) < IDS));
                                }
                            }
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
        });

        registry.check_consistency().unwrap();
        assert!(checks.load(Ordering::Relaxed) > 0);
        for id in &ids {
            let before = sorted(registry.rooms_of(id));
            assert_eq!(sorted(registry.leave_all(id)), before);
        }
        assert!(registry.all_rooms().is_empty());
        registry.check_consistency().unwrap();
    }

    /// A tiny deterministic generator, so the stress test needs no extra crate.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Join(u8, Vec<u8>),
            Leave(u8, u8),
            LeaveAll(u8),
            MembersOf(Vec<u8>, Vec<u8>),
        }

        fn op() -> impl Strategy<Value = Op> {
            let id = 0u8..6;
            let room = 0u8..5;
            let rooms = proptest::collection::vec(0u8..5, 0..4);
            prop_oneof![
                (id.clone(), rooms.clone()).prop_map(|(i, r)| Op::Join(i, r)),
                (id.clone(), room).prop_map(|(i, r)| Op::Leave(i, r)),
                id.prop_map(Op::LeaveAll),
                (rooms.clone(), rooms).prop_map(|(r, e)| Op::MembersOf(r, e)),
            ]
        }

        /// Rooms 3 and 4 are named as members 0 and 1 are: member 0 joining room 3 joins its own
        /// room, member 2 joining it joins another member's (an ordinary room of that name).
        fn room_name(r: u8) -> Room {
            match r {
                3 | 4 => room(&format!("id{}", r - 3)),
                _ => room(&format!("r{r}")),
            }
        }

        proptest! {
            /// Runs random operations against the registry and a plain map, comparing every answer.
            #[test]
            fn agrees_with_a_plain_map(ops in proptest::collection::vec(op(), 1..60)) {
                let registry: Rooms<u32> = Rooms::new();
                let mut model: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Join(i, rs) => {
                            registry.join(&format!("id{i}"), &u32::from(i), rs.iter().map(|&r| room_name(r)));
                            if !rs.is_empty() {
                                model.entry(i).or_default().extend(rs);
                            }
                        }
                        Op::Leave(i, r) => {
                            registry.leave(&format!("id{i}"), &room_name(r));
                            if let Some(set) = model.get_mut(&i) {
                                set.remove(&r);
                                if set.is_empty() {
                                    model.remove(&i);
                                }
                            }
                        }
                        Op::LeaveAll(i) => {
                            let got = sorted(registry.leave_all(&format!("id{i}")));
                            let want: Vec<Room> = model.remove(&i).unwrap_or_default().into_iter().map(room_name).collect();
                            prop_assert_eq!(got, sorted(want));
                        }
                        Op::MembersOf(to, except) => {
                            let got = sorted(registry.members_of(
                                &to.iter().map(|&r| room_name(r)).collect::<Vec<_>>(),
                                &except.iter().map(|&r| room_name(r)).collect::<Vec<_>>(),
                            ));
                            let want: Vec<u32> = model
                                .iter()
                                .filter(|(_, rs)| to.is_empty() || to.iter().any(|r| rs.contains(r)))
                                .filter(|(_, rs)| !except.iter().any(|r| rs.contains(r)))
                                .map(|(&i, _)| u32::from(i))
                                .collect();
                            prop_assert_eq!(got, want);
                        }
                    }
                    prop_assert_eq!(registry.check_consistency(), Ok(()));
                }
                for r in 0u8..5 {
                    let want = model.values().filter(|rs| rs.contains(&r)).count();
                    prop_assert_eq!(registry.room_len(&room_name(r)), want);
                }
                let occupied: BTreeSet<u8> = model.values().flatten().copied().collect();
                prop_assert_eq!(
                    sorted(registry.all_rooms()),
                    sorted(occupied.into_iter().map(room_name).collect())
                );
                for i in 0u8..6 {
                    let want: Vec<Room> = model.get(&i).into_iter().flatten().map(|&r| room_name(r)).collect();
                    prop_assert_eq!(sorted(registry.rooms_of(&format!("id{i}"))), sorted(want));
                    prop_assert_eq!(registry.contains(&format!("id{i}"), "r0"), model.get(&i).is_some_and(|rs| rs.contains(&0)));
                }
            }
        }
    }
}
