//! Sessions leave nothing behind: stopping or dropping a session detaches
//! its program and closes every fd it opened.

mod session_fixtures;

use std::time::{Duration, Instant};

use session_fixtures::profiler;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn stopped_and_dropped_sessions_close_every_fd() {
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
    for round in 0..10 {
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
