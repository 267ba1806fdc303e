//! Controlling a running session: pid changes that never hold up `stop()`
//! nor block the executor, streams asked for twice, and the profiler's own
//! process left out of every-process sessions.

mod session_fixtures;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::executor::{LocalPool, block_on};
use futures::task::LocalSpawnExt;
use futures::{FutureExt, StreamExt};
use rover_core::MapSizes;
use rover_core::profile::{Metric, ProfileKind};
use session_fixtures::{Fixture, SPIN, Start, pids, profiler, value_through};

/// `set_pids` futures dropped after they queued their requests, then
/// `stop()`: the stop must still drain the last window. The window is long,
/// so that last window is the only one and holds every sample.
#[test]
fn a_dropped_set_pids_never_costs_the_last_window() {
    let Some(profiler) = profiler("a_dropped_set_pids_never_costs_the_last_window") else {
        return;
    };
    let fixture = Fixture::build("spin", SPIN);
    // Long enough that the drain thread is still checking the first list in
    // /proc when the second request and the stop arrive: both wait behind it.
    const LONG: usize = 20_000;
    // Five rounds on the host; two in the emulated guests, where each
    // round's long pid lists take most of a minute to check in /proc (five
    // took 184 s of the 6.12 guest's run).
    let rounds = if testkit::in_guest() { 2 } else { 5 };
    for round in 0..rounds {
        // Spins until killed (when dropped): it must still be alive when the
        // last window is symbolized, after the drain thread got through the
        // long pid lists, which takes seconds in an emulated guest.
        let mut spinner = fixture.start(&["600000"]);
        let pid = spinner.pid();
        let mut session = profiler
            .on_cpu()
            .pids([pid])
            .window(Duration::from_secs(60))
            .map_sizes(MapSizes {
                pids: LONG as u32,
                ..MapSizes::default()
            })
            .start()
            .unwrap();
        let windows = session.windows();
        spinner.go();
        std::thread::sleep(Duration::from_millis(300));
        // Each polled once, so its request is queued, then dropped; whether
        // it was applied by then does not matter.
        drop(session.set_pids(vec![pid; LONG]).now_or_never());
        drop(session.set_pids(vec![pid; LONG]).now_or_never());
        let whole = session.stop_blocking().unwrap();
        let windows: Vec<_> = block_on(windows.collect());
        assert_eq!(windows.len(), 1, "round {round}: no last window");
        let streamed = windows[0].profile.total(Metric::OnCpuSamples);
        assert!(streamed > 0, "round {round}: an empty last window");
        assert_eq!(whole.total(Metric::OnCpuSamples), streamed, "round {round}");
        assert!(
            value_through(&whole, "spin_here", Metric::OnCpuSamples) > 0,
            "round {round}: no sample in spin_here; the profile:\n{}",
            rover_core::export::folded_lines(&whole, &rover_core::export::FoldedOptions::on_cpu())
                .join("\n")
        );
    }
}

/// Three `set_pids` on one current-thread executor while the drain thread
/// is busy applying the first (a long pid list, each pid checked in
/// `/proc`): queueing the others must not block the thread, so a timer
/// future on the same executor fires on time.
#[test]
fn set_pids_never_blocks_a_current_thread_executor() {
    let Some(profiler) = profiler("set_pids_never_blocks_a_current_thread_executor") else {
        return;
    };
    let fixture = Fixture::build("spin", SPIN);
    let spinner = fixture.start(&["600000"]);
    let pid = spinner.pid();
    const LONG: usize = 100_000;
    let session = Rc::new(
        profiler
            .on_cpu()
            .pids([pid])
            .map_sizes(MapSizes {
                pids: LONG as u32,
                ..MapSizes::default()
            })
            .start()
            .unwrap(),
    );
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    let applied: Rc<RefCell<Vec<Instant>>> = Rc::default();
    for _ in 0..3 {
        let session = Rc::clone(&session);
        let applied = Rc::clone(&applied);
        spawner
            .spawn_local(async move {
                session.set_pids(vec![pid; LONG]).await.unwrap();
                applied.borrow_mut().push(Instant::now());
            })
            .unwrap();
    }
    let (fire, fired) = futures::channel::oneshot::channel::<Instant>();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let _ = fire.send(Instant::now());
    });
    let late: Rc<Cell<Option<(Instant, Duration)>>> = Rc::default();
    let seen = Rc::clone(&late);
    spawner
        .spawn_local(async move {
            let at = fired.await.unwrap();
            seen.set(Some((Instant::now(), at.elapsed())));
        })
        .unwrap();
    pool.run();
    let (seen_at, late) = late.get().unwrap();
    let applied = applied.borrow();
    println!(
        "timer seen {late:?} after it fired; pid lists applied after {:?}",
        applied
            .iter()
            .map(|t| t.duration_since(seen_at))
            .collect::<Vec<_>>()
    );
    assert_eq!(applied.len(), 3);
    assert!(
        late < Duration::from_millis(300),
        "the executor was blocked for {late:?}"
    );
    assert!(
        applied.iter().all(|t| *t > seen_at),
        "the timer waited for a pid change"
    );
    drop(spinner);
    let session = Rc::try_unwrap(session).unwrap();
    session.stop_blocking().unwrap();
}

/// A second `windows()` does not end the first: both streams see every
/// window, each says its kind, and both end when the session stops.
#[test]
fn every_stream_sees_every_window() {
    let Some(profiler) = profiler("every_stream_sees_every_window") else {
        return;
    };
    let mut session = profiler
        .off_cpu()
        .pids([std::process::id()])
        .window(Duration::from_millis(50))
        .start()
        .unwrap();
    let first = session.windows();
    let second = session.windows();
    std::thread::sleep(Duration::from_millis(600));
    session.stop_blocking().unwrap();
    let first: Vec<_> = block_on(first.collect());
    let second: Vec<_> = block_on(second.collect());
    assert!(first.len() >= 2, "{} windows", first.len());
    let indices = |windows: &[rover_core::Window]| -> Vec<u64> {
        windows.iter().map(|w| w.stats.index).collect()
    };
    assert_eq!(indices(&first), indices(&second));
    assert!(
        first
            .iter()
            .chain(&second)
            .all(|w| w.kind == ProfileKind::OffCpu)
    );
}

/// `.all()` leaves the profiler's own process out unless asked; a thread of
/// this test spinning meanwhile shows which. A spinning fixture process is
/// what every round must see: in a minimal guest little else runs, so an
/// empty profile would otherwise prove nothing (and did fail on 5.10).
#[test]
fn all_leaves_the_profiler_out_unless_included() {
    let Some(profiler) = profiler("all_leaves_the_profiler_out_unless_included") else {
        return;
    };
    let me = std::process::id();
    let fixture = Fixture::build("spin", SPIN);
    let mut spinner = fixture.start(&["600000"]);
    let other = spinner.pid();
    spinner.go();
    for include in [false, true] {
        let session = profiler
            .on_cpu()
            .all()
            .include_self(include)
            .frequency(199)
            .start()
            .unwrap();
        let end = Instant::now() + Duration::from_millis(600);
        let mut x = 0u64;
        while Instant::now() < end {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let whole = session.stop_blocking().unwrap();
        let seen = pids(&whole);
        assert!(
            seen.contains(&other),
            "include_self({include}): the spinning fixture {other} is missing from {seen:?}"
        );
        assert_eq!(
            seen.contains(&me),
            include,
            "include_self({include}): pids {seen:?}"
        );
    }
}
