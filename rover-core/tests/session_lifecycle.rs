//! Sessions leave nothing behind: stopping or dropping a session detaches
//! its program and closes every fd it opened.

mod session_fixtures;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_fixtures::profiler;

/// The fd count is process-wide: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn stopped_and_dropped_sessions_close_every_fd() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let Some(profiler) = profiler("stopped_and_dropped_sessions_close_every_fd") else {
        return;
    };
    let me = std::process::id();
    // One session first, so lazily opened files (the symbolizer's, tokio-free
    // runtime bits) are counted in the baseline.
    profiler
        .on_cpu()
        .pids([me])
        .start()
        .unwrap()
        .stop_blocking()
        .unwrap();
    let baseline = open_fds();
    // Ten rounds on the host; four (two stopped, two dropped) in the
    // emulated guests, where ten took 92 s of the 6.12 guest's run.
    let rounds = if testkit::in_guest() { 4 } else { 10 };
    for round in 0..rounds {
        let on_cpu = profiler
            .on_cpu()
            .pids([me])
            .window(Duration::from_millis(20))
            .start()
            .unwrap();
        let off_cpu = profiler.off_cpu().pids([me]).start().unwrap();
        assert!(
            open_fds() > baseline,
            "round {round}: sessions hold no fds?"
        );
        if round % 2 == 0 {
            // stop() returns after the program is dropped.
            on_cpu.stop_blocking().unwrap();
            off_cpu.stop_blocking().unwrap();
            assert_eq!(open_fds(), baseline, "round {round}: fds left after stop");
        } else {
            // Dropping detaches on the drain thread, without waiting.
            drop(on_cpu);
            drop(off_cpu);
            let deadline = Instant::now() + Duration::from_secs(5);
            while open_fds() != baseline && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(open_fds(), baseline, "round {round}: fds left after drop");
        }
    }
}

#[test]
fn a_slow_consumer_is_told_how_many_windows_it_missed() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let Some(profiler) = profiler("a_slow_consumer_is_told_how_many_windows_it_missed") else {
        return;
    };
    let mut session = profiler
        .on_cpu()
        .pids([std::process::id()])
        .window(Duration::from_millis(10))
        .start()
        .unwrap();
    let windows = session.windows();
    // A second, prompt consumer counts the windows the session drains, so
    // the test waits for windows, not for time (under emulation a guest
    // drains a few windows a second, not a hundred).
    let drained = std::sync::Arc::new(AtomicU64::new(0));
    let counter = {
        let drained = drained.clone();
        let mut prompt = session.windows();
        std::thread::spawn(move || {
            while futures::executor::block_on(futures::StreamExt::next(&mut prompt)).is_some() {
                drained.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let wait_for = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(300);
        while drained.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "fewer than {n} windows in 300 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Far more than the stream's 16 buffered windows are drained meanwhile.
    wait_for(40);
    let (reading, started) = std::sync::mpsc::channel();
    let consumer = std::thread::spawn(move || {
        let mut windows = windows;
        let mut delivered = Vec::new();
        while let Some(window) = futures::executor::block_on(futures::StreamExt::next(&mut windows))
        {
            if delivered.is_empty() {
                let _ = reading.send(());
            }
            delivered.push(window);
        }
        delivered
    });
    // And some more once the slow consumer reads.
    started.recv_timeout(Duration::from_secs(300)).unwrap();
    let now = drained.load(Ordering::SeqCst);
    wait_for(now + 5);
    let whole = session.stop_blocking().unwrap();
    counter.join().unwrap();
    let delivered = consumer.join().unwrap();
    let mut next = 0;
    let mut skipped = 0;
    for window in &delivered {
        // Each delivered window says how many were left out just before it.
        assert_eq!(window.stats.index, next + window.stats.windows_skipped);
        skipped += window.stats.windows_skipped;
        next = window.stats.index + 1;
    }
    eprintln!("{} windows delivered, {skipped} skipped", delivered.len());
    assert!(skipped > 0, "no window was skipped");
    assert!(delivered.len() >= 17);
    assert!(whole.has_kind(rover_core::profile::ProfileKind::OnCpu));
}
