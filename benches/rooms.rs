//! The room registry: join/leave under contention, and the member lookup behind a broadcast.
//!
//! `cargo bench --bench rooms`.
//!
//! - `join_leave/threads-N`: N threads, each with its own members, join and leave rooms shared by
//!   all threads (8 rooms), one join + one leave per element. Time per element is the cost of a
//!   join/leave pair with N threads contending for the same room shards.
//! - `members_of/10000`: copying the handles of a 10 000-member room out (what a broadcast does
//!   before sending), per member; `for_each_member` also copies the ids.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidings::rooms::{Room, Rooms};

/// A stand-in for a socket handle: an `Arc`, cloned under the room lock as `Arc<Socket>` is.
type Handle = Arc<u64>;

fn join_leave(c: &mut Criterion) {
    let mut g = c.benchmark_group("rooms/join_leave");
    let rooms: Vec<Room> = (0..8).map(|k| Room::from(format!("room-{k}"))).collect();
    for threads in [1usize, 2, 4] {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(format!("threads-{threads}"), |b| {
            b.iter_custom(|iters| {
                let registry = Arc::new(Rooms::<Handle>::new());
                let barrier = Arc::new(Barrier::new(threads + 1));
                let workers: Vec<_> = (0..threads)
                    .map(|t| {
                        let (registry, barrier, rooms) =
                            (registry.clone(), barrier.clone(), rooms.clone());
                        std::thread::spawn(move || {
                            let members: Vec<(String, Handle)> = (0..64)
                                .map(|i| (format!("t{t}-m{i}"), Arc::new(i)))
                                .collect();
                            barrier.wait();
                            for n in 0..iters as usize {
                                let (id, handle) = &members[n % members.len()];
                                let room = &rooms[n % rooms.len()];
                                registry.join(id, handle, [room.clone()]);
                                registry.leave(id, room);
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for w in workers {
                    w.join().expect("worker");
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

fn members_of(c: &mut Criterion) {
    let mut g = c.benchmark_group("rooms/lookup");
    const N: usize = 10_000;
    let registry = Rooms::<Handle>::new();
    let big = Room::from("big");
    for i in 0..N {
        registry.join(
            &format!("member-{i:05}"),
            &Arc::new(i as u64),
            [big.clone()],
        );
        // Each member is also in its own room and a small one, as sockets are.
        registry.join(
            &format!("member-{i:05}"),
            &Arc::new(i as u64),
            [Room::from(format!("small-{}", i % 100))],
        );
    }
    assert_eq!(registry.room_len("big"), N);
    g.throughput(Throughput::Elements(N as u64));
    g.measurement_time(Duration::from_secs(3));
    let target = [big.clone()];
    g.bench_function("members_of/10000", |b| {
        b.iter(|| registry.members_of(black_box(&target), &[]))
    });
    g.bench_function("for_each_member/10000", |b| {
        b.iter(|| {
            let mut n = 0u64;
            registry.for_each_member(black_box(&target), &[], |_, h| n += **h);
            n
        })
    });
    let except = [Room::from("small-7")];
    g.bench_function("members_of/10000-except-100", |b| {
        b.iter(|| registry.members_of(black_box(&target), black_box(&except)))
    });
    g.finish();
}

criterion_group!(benches, join_leave, members_of);
criterion_main!(benches);
