//! Off-CPU sessions for real in the kernel: a fixture blocking 20 × 50 ms in
//! a known function, its windows consumed with `futures::executor::block_on`.

mod session_fixtures;

use std::time::Duration;

use futures::StreamExt;
use rover_core::profile::{Metric, OffCpuState, ProfileKind};
use session_fixtures::{BLOCK, Fixture, Start, pids, profiler, value_through};

#[test]
fn blocking_fixture_through_windows_on_block_on() {
    let Some(profiler) = profiler("blocking_fixture_through_windows_on_block_on") else {
        return;
    };
    let fixture = Fixture::build("block", BLOCK);
    let mut block = fixture.start(&[]);
    let pid = block.pid();
    let mut session = profiler
        .off_cpu()
        .pids([pid])
        .min_block(Duration::from_millis(1))
        .window(Duration::from_millis(200))
        .start()
        .unwrap();
    let windows = session.windows();
    // The consumer runs on a thread of its own with no runtime but block_on.
    let consumer =
        std::thread::spawn(move || futures::executor::block_on(windows.collect::<Vec<_>>()));
    block.go();
    assert_eq!(block.line(), "done");
    let whole = session.stop_blocking().unwrap();
    let windows = consumer.join().unwrap();
    // Every window reached the block_on consumer, in order, the last one
    // included (how many depends on how busy the machine is).
    assert!(!windows.is_empty());
    for (i, window) in windows.iter().enumerate() {
        assert_eq!(window.stats.index, i as u64);
        assert_eq!(window.stats.windows_skipped, 0);
    }
    assert!(whole.has_kind(ProfileKind::OffCpu));
    let window_nanos: u64 = windows.iter().map(|w| w.stats.off_cpu_nanos).sum();
    assert_eq!(window_nanos, whole.total(Metric::OffCpuNanos));
    assert_eq!(pids(&whole), vec![pid], "blocks of other processes");

    let blocked = whole.filter_function("block_here");
    let (switches, nanos) = session_fixtures::sleeps_through(&whole, "block_here");
    eprintln!(
        "block_here: {switches} sleeps, {:.3} s off CPU",
        nanos as f64 / 1e9
    );
    if switches != 20 {
        // Say where the other blocks went before failing.
        let options = rover_core::export::FoldedOptions::off_cpu_switches();
        for line in rover_core::export::folded_lines(&whole, &options) {
            eprintln!("{line}");
        }
        for w in &windows {
            eprintln!(
                "window {}: lost {:?}, lost stacks {:?}, symbolization {:?}",
                w.stats.index, w.stats.dropped, w.stats.lost_stacks, w.stats.symbolization
            );
        }
    }
    assert_eq!(switches, 20);
    let seconds = nanos as f64 / 1e9;
    assert!(
        (0.9..=1.1).contains(&seconds),
        "{seconds} s asleep in block_here"
    );
    let options = rover_core::export::FoldedOptions::off_cpu_switches();
    for line in rover_core::export::folded_lines(&blocked, &options) {
        eprintln!("{line}");
    }
    // Nearly all sleeps on one stack (a kernel stack may rarely be lost to a
    // stack-map bucket collision).
    let entry = blocked
        .entries()
        .max_by_key(|e| e.value.off_cpu(OffCpuState::Interruptible).switches)
        .unwrap();
    assert!(entry.value.off_cpu(OffCpuState::Interruptible).switches >= 18);
    // The kernel part of the stack was symbolized too.
    let kernel_frames = blocked
        .stack(entry.stack)
        .iter()
        .filter_map(|id| blocked.frame(*id))
        .filter(|f| f.kind == rover_core::profile::FrameKind::Kernel)
        .count();
    assert!(kernel_frames > 0, "no kernel frames on the blocking stack");
}

#[test]
fn blocks_under_the_minimum_are_not_counted() {
    let Some(profiler) = profiler("blocks_under_the_minimum_are_not_counted") else {
        return;
    };
    let fixture = Fixture::build("block", BLOCK);
    let mut block = fixture.start(&[]);
    let pid = block.pid();
    let session = profiler
        .off_cpu()
        .pids([pid])
        .min_block(Duration::from_millis(100))
        .window(Duration::from_millis(200))
        .start()
        .unwrap();
    block.go();
    assert_eq!(block.line(), "done");
    let whole = futures::executor::block_on(session.stop()).unwrap();
    assert_eq!(
        value_through(&whole, "block_here", Metric::OffCpuSwitches),
        0
    );
}
