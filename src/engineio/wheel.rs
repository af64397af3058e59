//! The heartbeat deadlines of an engine's WebSocket sessions, on one shared timer wheel.
//!
//! A tokio `Sleep` per connection costs 112 bytes inside every connection's task, and an entry in
//! tokio's timer that moves at every ping and pong. Heartbeats need no such precision: a ping sent a
//! fraction of a second late costs nothing (the client allows pingInterval + pingTimeout), and
//! neither does a dead peer noticed that much later. So sessions share one wheel of coarse ticks
//! ([`tick_for`]: 1/16 of the shorter of pingInterval and pingTimeout, at most 1 s, at least 1 ms),
//! turned by one task per engine. When a session's tick comes, the wheel only wakes it (its outbox
//! notification); the session's own loop runs its heartbeat, as before, and tells the wheel its next
//! deadline. The wheel holds 24 bytes per session (an arena entry) plus 8 per scheduled slot entry,
//! and never keeps a closed session's memory: removal is immediate, by key.
//!
//! [`Wheel`] is the data structure alone (ticks are plain numbers, no clock, no tasks), unit-tested
//! here; [`HeartbeatWheel`] puts it under a mutex, maps instants to ticks and runs the task.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::session::Session;

/// Slots of the wheel. A deadline further than this many ticks away waits in the last slot it
/// reaches and is placed again from there.
const SLOTS: usize = 128;

/// A scheduled item's handle: its arena index and the generation that index had when it was
/// inserted, so a stale key (its item removed, the index reused) changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    index: u32,
    generation: u32,
}

struct Entry<T> {
    generation: u32,
    /// The tick the item is due at.
    due: u64,
    /// The tick whose slot holds the item's live reference ([`UNPLACED`] once it fired): any other
    /// reference to it is stale.
    placed: u64,
    item: Option<T>,
}

const UNPLACED: u64 = u64::MAX;

/// A hashed timer wheel over item handles: slot `t % SLOTS` lists the items due at tick `t` (and
/// stale references to items that moved or left, dropped when their slot comes).
pub(crate) struct Wheel<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    slots: Vec<Vec<Key>>,
    /// The next tick to fire; no live item is due before it.
    next: u64,
    live: usize,
}

impl<T: Clone> Wheel<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            next: 0,
            live: 0,
        }
    }

    /// Whether no item is scheduled.
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The next tick to fire.
    pub(crate) fn next_tick(&self) -> u64 {
        self.next
    }

    /// Adds `item`, due at tick `due`, at `now` (a tick). An empty wheel skips the ticks that
    /// passed while nothing was scheduled.
    pub(crate) fn insert(&mut self, item: T, due: u64, now: u64) -> Key {
        if self.live == 0 {
            self.next = self.next.max(now);
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    due: 0,
                    placed: UNPLACED,
                    item: None,
                });
                u32::try_from(self.entries.len() - 1).expect("fewer than 2^32 sessions")
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.item = Some(item);
        let key = Key {
            index,
            generation: entry.generation,
        };
        self.live += 1;
        self.place(key, due);
        key
    }

    /// Moves the item of `key` to tick `due` (a stale key, or an unchanged tick, changes nothing).
    pub(crate) fn schedule(&mut self, key: Key, due: u64) {
        if self
            .get(key)
            .is_some_and(|entry| entry.due != due || entry.placed == UNPLACED)
        {
            self.place(key, due);
        }
    }

    /// Removes the item of `key` (a stale key changes nothing), returning it.
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        self.get(key)?;
        let entry = &mut self.entries[key.index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(key.index);
        self.live -= 1;
        entry.item.take()
    }

    /// Fires the next tick: appends the items due at it to `due` and moves on to the next tick.
    /// An item stays scheduled at the tick that fired until it is moved or removed.
    pub(crate) fn fire(&mut self, due: &mut Vec<T>) {
        let tick = self.next;
        let mut slot = std::mem::take(&mut self.slots[tick as usize % SLOTS]);
        for &key in &slot {
            let Some(entry) = self.get(key) else { continue };
            if entry.placed != tick {
                // The item moved (or fired already): a stale reference.
                continue;
            }
            if entry.due == tick {
                due.extend(entry.item.clone());
                self.entries[key.index as usize].placed = UNPLACED;
            } else {
                // Due beyond the wheel's span when it was placed: placed again from here.
                let again = entry.due;
                self.place(key, again);
            }
        }
        // Nothing was placed in this slot meanwhile (everything placed is due after `tick`, and
        // at most `SLOTS - 1` ticks after it): it goes back empty, keeping its capacity.
        slot.clear();
        self.slots[tick as usize % SLOTS] = slot;
        self.next = tick + 1;
    }

    fn get(&self, key: Key) -> Option<&Entry<T>> {
        self.entries
            .get(key.index as usize)
            .filter(|entry| entry.generation == key.generation && entry.item.is_some())
    }

    fn place(&mut self, key: Key, due: u64) {
        let due = due.max(self.next);
        // Beyond the wheel's span, the reference waits in the slot it reaches last and is placed
        // again when that one fires (see `fire`).
        let placed = due.min(self.next + SLOTS as u64 - 1);
        let entry = &mut self.entries[key.index as usize];
        entry.due = due;
        entry.placed = placed;
        let slot = &mut self.slots[placed as usize % SLOTS];
        if slot.last() != Some(&key) {
            slot.push(key);
        }
    }
}

/// The tick for heartbeats of `interval` and `timeout`.
pub(crate) fn tick_for(interval: Duration, timeout: Duration) -> Duration {
    (interval.min(timeout) / 16).clamp(Duration::from_millis(1), Duration::from_secs(1))
}

/// An engine's wheel of WebSocket heartbeat deadlines, and the task that turns it.
pub(crate) struct HeartbeatWheel {
    origin: Instant,
    tick: Duration,
    wheel: Mutex<Wheel<Weak<Session>>>,
    /// The next tick to fire, as the task last left it: every earlier tick has fired (read without
    /// the lock by sessions checking whether their deadline has come).
    fired: std::sync::atomic::AtomicU64,
    /// Wakes the task when a session is scheduled in an empty wheel, or when the wheel goes.
    wake: Arc<Notify>,
    /// Whether the task runs: set when it is spawned, cleared when it ends or its runtime drops
    /// it, so that the next session scheduled starts it again on a runtime that is alive.
    running: Arc<std::sync::atomic::AtomicBool>,
}

/// Held by the wheel's task: clears [`HeartbeatWheel::running`] however the task ends.
struct Running(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for HeartbeatWheel {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl HeartbeatWheel {
    pub(crate) fn new(tick: Duration) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            tick,
            wheel: Mutex::new(Wheel::new()),
            fired: std::sync::atomic::AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// The first tick at or after `at`: a deadline is never woken early.
    pub(crate) fn tick_of(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        let tick = self.tick.as_nanos();
        u64::try_from(nanos.div_ceil(tick)).unwrap_or(u64::MAX)
    }

    /// Whether tick `tick` has fired: a deadline at it (or before) has come. One atomic load.
    pub(crate) fn has_fired(&self, tick: u64) -> bool {
        tick < self.fired.load(std::sync::atomic::Ordering::Acquire)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        let nanos = self.tick.as_nanos().saturating_mul(u128::from(tick));
        self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn lock(&self) -> MutexGuard<'_, Wheel<Weak<Session>>> {
        self.wheel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Schedules `session` to be woken at `deadline`, until the returned guard is dropped. Starts
    /// the wheel's task (on the current tokio runtime) if it is not running: the first time, and
    /// again if the runtime it ran on was shut down.
    pub(crate) fn insert(self: &Arc<Self>, session: &Arc<Session>, deadline: Instant) -> Beat<'_> {
        if !self.running.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let running = Running(self.running.clone());
            tokio::spawn(turn(Arc::downgrade(self), self.wake.clone(), running));
        }
        let due = self.tick_of(deadline);
        let now = self.tick_of(Instant::now()).saturating_sub(1);
        let mut wheel = self.lock();
        let was_empty = wheel.is_empty();
        let key = wheel.insert(Arc::downgrade(session), due, now);
        drop(wheel);
        if was_empty {
            self.wake.notify_one();
        }
        Beat {
            wheel: self,
            key,
            due,
            deadline,
        }
    }

    /// Moves the session of `key` to tick `due`.
    fn schedule(&self, key: Key, due: u64) {
        self.lock().schedule(key, due);
    }

    /// Removes the session of `key`.
    fn remove(&self, key: Key) {
        let gone = self.lock().remove(key);
        // Its last reference may be this one: dropped with the lock released.
        drop(gone);
    }
}

/// One session's place on the wheel, held by its loop: follows its heartbeat deadline and tells
/// whether it has come. Dropped, the session leaves the wheel.
pub(crate) struct Beat<'a> {
    wheel: &'a HeartbeatWheel,
    key: Key,
    /// The tick the session is scheduled at, and the deadline it was computed from.
    due: u64,
    deadline: Instant,
}

impl Beat<'_> {
    /// The heartbeat's deadline is now `deadline`: moves the session on the wheel if its tick
    /// changed (a deadline that did not change costs a comparison).
    pub(crate) fn follow(&mut self, deadline: Instant) {
        if deadline == self.deadline {
            return;
        }
        self.deadline = deadline;
        let due = self.wheel.tick_of(deadline);
        if due != self.due {
            self.wheel.schedule(self.key, due);
            self.due = due;
        }
    }

    /// Whether the deadline last followed has come: the wheel has passed its tick (one atomic
    /// load) and the clock agrees.
    pub(crate) fn has_come(&self) -> bool {
        self.wheel.has_fired(self.due) && self.deadline <= Instant::now()
    }
}

impl Drop for Beat<'_> {
    fn drop(&mut self) {
        self.wheel.remove(self.key);
    }
}

/// Turns the wheel: sleeps until the next tick, wakes the sessions due at it, and parks while the
/// wheel is empty. Ends once the wheel is gone.
async fn turn(wheel: Weak<HeartbeatWheel>, wake: Arc<Notify>, running: Running) {
    let _running = running;
    let mut due = Vec::new();
    loop {
        let at = {
            let Some(wheel) = wheel.upgrade() else { return };
            let state = wheel.lock();
            (!state.is_empty()).then(|| wheel.instant_of(state.next_tick()))
        };
        match at {
            // A permit left by an insert since the look above ends this wait at once.
            None => wake.notified().await,
            Some(at) => {
                tokio::time::sleep_until(at).await;
                let Some(wheel) = wheel.upgrade() else { return };
                let mut state = wheel.lock();
                state.fire(&mut due);
                wheel
                    .fired
                    .store(state.next_tick(), std::sync::atomic::Ordering::Release);
            }
        }
        for session in due.drain(..) {
            if let Some(session) = session.upgrade() {
                session.notify.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(wheel: &mut Wheel<&'static str>) -> Vec<&'static str> {
        let mut due = Vec::new();
        wheel.fire(&mut due);
        due
    }

    #[test]
    fn items_fire_at_their_tick_once_and_stay_until_moved() {
        let mut wheel = Wheel::new();
        let a = wheel.insert("a", 2, 0);
        wheel.insert("b", 3, 0);
        assert_eq!(fire(&mut wheel), Vec::<&str>::new()); // tick 0
        assert_eq!(fire(&mut wheel), Vec::<&str>::new()); // tick 1
        assert_eq!(fire(&mut wheel), ["a"]); // tick 2
        assert_eq!(fire(&mut wheel), ["b"]); // tick 3
        // Nothing fires again until it is moved.
        for _ in 0..SLOTS * 2 {
            assert!(fire(&mut wheel).is_empty());
        }
        let now = wheel.next_tick();
        wheel.schedule(a, now + 1);
        assert!(fire(&mut wheel).is_empty());
        assert_eq!(fire(&mut wheel), ["a"]);
    }

    #[test]
    fn a_moved_item_fires_only_at_its_new_tick() {
        let mut wheel = Wheel::new();
        let a = wheel.insert("a", 5, 0);
        wheel.schedule(a, 2);
        wheel.schedule(a, 7);
        let fired: Vec<_> = (0..10).map(|_| fire(&mut wheel)).collect();
        for (tick, items) in fired.iter().enumerate() {
            assert_eq!(items.is_empty(), tick != 7, "tick {tick}: {items:?}");
        }
    }

    #[test]
    fn a_removed_item_never_fires_and_its_stale_key_touches_nothing() {
        let mut wheel = Wheel::new();
        let a = wheel.insert("a", 1, 0);
        assert_eq!(wheel.remove(a), Some("a"));
        assert!(wheel.is_empty());
        // The index is reused with a new generation: the old key is stale.
        let b = wheel.insert("b", 2, 0);
        assert_ne!(a, b);
        assert_eq!(wheel.remove(a), None);
        wheel.schedule(a, 1);
        assert!(fire(&mut wheel).is_empty()); // 0
        assert!(fire(&mut wheel).is_empty()); // 1
        assert_eq!(fire(&mut wheel), ["b"]); // 2
    }

    #[test]
    fn deadlines_beyond_the_span_and_in_the_past() {
        let mut wheel = Wheel::new();
        let far = SLOTS as u64 * 3 + 5;
        wheel.insert("far", far, 0);
        for tick in 0..far {
            assert!(fire(&mut wheel).is_empty(), "fired early at {tick}");
        }
        assert_eq!(fire(&mut wheel), ["far"]);
        // A tick already passed fires at the next one.
        let now = wheel.next_tick();
        wheel.insert("late", now - 3, now);
        assert_eq!(fire(&mut wheel), ["late"]);
    }

    #[test]
    fn an_empty_wheel_skips_the_ticks_that_passed() {
        let mut wheel = Wheel::new();
        wheel.insert("a", 1_000_000, 999_990);
        assert_eq!(wheel.next_tick(), 999_990);
        for _ in 0..10 {
            assert!(fire(&mut wheel).is_empty());
        }
        assert_eq!(fire(&mut wheel), ["a"]);
    }

    #[test]
    fn ticks_round_up_and_stay_within_bounds() {
        assert_eq!(
            tick_for(Duration::from_secs(25), Duration::from_secs(20)),
            Duration::from_secs(1)
        );
        assert_eq!(
            tick_for(Duration::from_millis(300), Duration::from_millis(200)),
            Duration::from_micros(12_500)
        );
        assert_eq!(
            tick_for(Duration::from_millis(5), Duration::from_millis(5)),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn the_task_starts_again_on_a_live_runtime_when_its_own_is_gone() {
        let ms = Duration::from_millis;
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        };
        let wheel = HeartbeatWheel::new(ms(5));
        let session = Session::for_test(Instant::now(), ms(300), ms(200));
        let first = runtime();
        first.block_on(async {
            let _beat = wheel.insert(&session, Instant::now() + ms(10));
            session.notify.notified().await;
        });
        // The task the first runtime ran is dropped with it.
        drop(first);
        runtime().block_on(async {
            let _beat = wheel.insert(&session, Instant::now() + ms(10));
            let woken = tokio::time::timeout(Duration::from_secs(5), session.notify.notified());
            assert!(woken.await.is_ok(), "no task turns the wheel");
        });
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_wakes_a_session_at_its_deadline_not_before() {
        let session = Session::for_test(
            Instant::now(),
            Duration::from_millis(300),
            Duration::from_millis(200),
        );
        let wheel = HeartbeatWheel::new(Duration::from_millis(10));
        let start = Instant::now();
        let deadline = start + Duration::from_millis(95);
        let mut beat = wheel.insert(&session, deadline);
        assert!(!beat.has_come());
        session.notify.notified().await;
        assert!(beat.has_come());
        let woke = Instant::now();
        assert!(woke >= deadline, "woken {:?} early", deadline - woke);
        assert!(
            woke <= deadline + Duration::from_millis(10),
            "woken late: {woke:?}"
        );
        // Moved later, it sleeps until then.
        let next = Instant::now() + Duration::from_millis(50);
        beat.follow(next);
        assert!(!beat.has_come());
        session.notify.notified().await;
        assert!(Instant::now() >= next && beat.has_come());
        // Dropped, it is not woken again.
        beat.follow(Instant::now() + Duration::from_millis(20));
        drop(beat);
        let waited = tokio::time::timeout(Duration::from_secs(5), session.notify.notified()).await;
        assert!(waited.is_err(), "a session off the wheel was woken");
        // The task holds only a weak reference: the wheel goes with its owner.
        assert_eq!(Arc::strong_count(&wheel), 1);
    }
}
