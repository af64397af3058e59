//! What a room membership costs in the room registry, in resident memory (many memberships, so the
//! page granularity does not matter): the figure the README's sizing uses, and a bound that keeps
//! it from growing. One test in this binary, so nothing else allocates meanwhile.

use std::sync::Arc;

use tidings::rooms::{Room, Rooms};

/// This process's resident memory, in bytes (Linux).
fn rss() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: isize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

const MEMBERS: usize = 20_000;

#[test]
fn a_room_membership_costs_a_bounded_few_bytes() {
    // Socket ids as Tidings makes them (20 characters), handles standing in for `Arc<Socket>`.
    let ids: Vec<Arc<str>> = (0..MEMBERS)
        .map(|i| Arc::from(format!("{i:0>20}").as_str()))
        .collect();
    let handle = Arc::new(0u64);
    let rooms = Rooms::<Arc<u64>>::new();

    let start = rss();
    for id in &ids {
        rooms.join_shared(id, &handle, [Room::from(id.as_ref())]);
    }
    let own = (rss() - start) as f64 / MEMBERS as f64;

    let before = rss();
    let shared: Vec<Room> = (0..10).map(|k| Room::from(format!("org:{k}"))).collect();
    for id in &ids {
        rooms.join_shared(id, &handle, shared.iter().cloned());
    }
    let per_shared = (rss() - before) as f64 / (MEMBERS * shared.len()) as f64;
    eprintln!(
        "room registry: {own:.0} B per member in its own room (its member entry), \
         {per_shared:.0} B per membership of a shared room"
    );
    // ~160 B: the own room is a flag of the member's entry (in both indexes it was ~300 B).
    assert!(own < 240.0, "own room: {own:.0} B per member");
    assert!(
        per_shared < 192.0,
        "shared room: {per_shared:.0} B per membership"
    );

    for id in &ids {
        rooms.leave_all(id);
    }
    assert!(
        rooms.all_rooms().is_empty(),
        "every room is gone once its members left"
    );
}
