//! Sessions side by side and a target that exits mid-session, for real in
//! the kernel.

mod session_fixtures;

use std::time::Duration;

use rover_core::profile::{Metric, ProfileKind};
use session_fixtures::{BLOCK, Fixture, SPIN, Start, pids, profiler, value_through};

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
    let spin_cpu = session_fixtures::cpu_seconds_at_exit(spin.pid());
    spin.wait();
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
    assert_eq!(
        value_through(&blocked, "block_here", Metric::OffCpuSwitches),
        20
    );
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

#[test]
fn target_exiting_mid_session_keeps_symbolized_samples() {
    let Some(profiler) = profiler("target_exiting_mid_session_keeps_symbolized_samples") else {
        return;
    };
    let fixture = Fixture::build("spin", SPIN);
    let mut spin = fixture.start(&["600"]);
    let pid = spin.pid();
    let session = profiler
        .on_cpu()
        .pids([pid])
        .window(Duration::from_millis(200))
        .start()
        .unwrap();
    spin.go();
    let cpu = session_fixtures::cpu_seconds_at_exit(pid);
    spin.wait();
    // The process is gone (reaped) well before the session ends.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    std::thread::sleep(Duration::from_millis(800));
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
