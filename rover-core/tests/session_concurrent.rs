//! Sessions side by side and a target that exits mid-session, for real in
//! the kernel.

mod session_fixtures;

use std::time::{Duration, Instant};

use rover_core::profile::{Metric, ProfileKind};
use session_fixtures::{
    BLOCK, Fixture, SPIN, Start, next_window, pids, profiler, sleeps_through, unix_nanos,
    value_through,
};

#[test]
fn concurrent_sessions_see_only_their_targets() {
    let Some(profiler) = profiler("concurrent_sessions_see_only_their_targets") else {
        return;
    };
    let spin_fixture = Fixture::build("spin", SPIN);
    let block_fixture = Fixture::build("block", BLOCK);
    let mut spin = spin_fixture.start(&["1000"]);
    let mut block = block_fixture.start(&[]);
    let on_cpu = profiler
        .on_cpu()
        .pids([spin.pid()])
        .window(Duration::from_millis(300))
        .start()
        .unwrap();
    // A second on-CPU session on the same machine, for the blocking fixture:
    // it must not receive the spinning fixture's samples.
    let on_cpu_other = profiler
        .on_cpu()
        .pids([block.pid()])
        .window(Duration::from_millis(300))
        .start()
        .unwrap();
    let off_cpu = profiler
        .off_cpu()
        .pids([block.pid()])
        .min_block(Duration::from_millis(1))
        .window(Duration::from_millis(300))
        .start()
        .unwrap();
    spin.go();
    block.go();
    assert_eq!(block.line(), "done");
    spin.wait_done();
    let spin_cpu = spin.cpu_seconds();
    let cpu = on_cpu.stop_blocking().unwrap();
    let cpu_other = on_cpu_other.stop_blocking().unwrap();
    let blocked = off_cpu.stop_blocking().unwrap();

    assert!(cpu.has_kind(ProfileKind::OnCpu) && !cpu.has_kind(ProfileKind::OffCpu));
    assert!(blocked.has_kind(ProfileKind::OffCpu) && !blocked.has_kind(ProfileKind::OnCpu));
    assert_eq!(pids(&cpu), vec![spin.pid()]);
    let in_spin = value_through(&cpu, "spin_here", Metric::OnCpuSamples);
    assert!(
        in_spin > 0 && in_spin as f64 > spin_cpu * 99.0 * 0.7,
        "{in_spin} samples in spin_here for {spin_cpu:.2} CPU seconds"
    );
    assert_eq!(pids(&blocked), vec![block.pid()]);
    let options = rover_core::export::FoldedOptions::off_cpu_switches();
    for line in rover_core::export::folded_lines(&blocked, &options) {
        eprintln!("{line}");
    }
    // Its 20 sleeps; a slow machine may also preempt it in block_here.
    assert_eq!(sleeps_through(&blocked, "block_here").0, 20);
    assert_eq!(
        value_through(&blocked, "spin_here", Metric::OffCpuSwitches),
        0
    );
    // The sleeper barely runs: a few samples at most, none of the spinner.
    assert!(pids(&cpu_other).iter().all(|pid| *pid == block.pid()));
    assert_eq!(
        value_through(&cpu_other, "spin_here", Metric::OnCpuSamples),
        0
    );
}

/// A target that exits while the session goes on keeps its symbolized
/// samples and its name. The fixture spins, then waits alive until a window
/// that began after its work has been drained, so every one of its samples
/// was symbolized while it lived; then it exits and a window passes without
/// it. (A process that exits before its samples are symbolized is another
/// matter: its memory map is gone with it.)
#[test]
fn target_exiting_mid_session_keeps_symbolized_samples() {
    let Some(profiler) = profiler("target_exiting_mid_session_keeps_symbolized_samples") else {
        return;
    };
    let fixture = Fixture::build("spin", SPIN);
    let mut spin = fixture.start(&["600"]);
    let pid = spin.pid();
    let mut session = profiler
        .on_cpu()
        .pids([pid])
        .window(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut windows = session.windows();
    let deadline = Instant::now() + Duration::from_secs(120);
    spin.go();
    spin.wait_done();
    let cpu = spin.cpu_seconds();
    let done = unix_nanos();
    while next_window(&mut windows, deadline)
        .profile
        .time_range()
        .unwrap()
        .0
        <= done
    {}
    spin.finish();
    // The process is gone (reaped) well before the session ends.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let exited = unix_nanos();
    while next_window(&mut windows, deadline)
        .profile
        .time_range()
        .unwrap()
        .0
        <= exited
    {}
    let whole = session.stop_blocking().unwrap();
    let total = whole.total(Metric::OnCpuSamples);
    let in_spin = value_through(&whole, "spin_here", Metric::OnCpuSamples);
    eprintln!("exited target: {in_spin} of {total} samples in spin_here");
    assert!(
        total as f64 > cpu * 99.0 * 0.6,
        "only {total} samples for {cpu:.2} CPU seconds"
    );
    assert!(
        in_spin * 10 >= total * 9,
        "{in_spin} of {total} in spin_here"
    );
    let names: Vec<&str> = whole
        .processes()
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    assert_eq!(names, vec!["spin"], "the exited process keeps its name");
}
