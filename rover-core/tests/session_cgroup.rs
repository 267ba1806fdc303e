//! A cgroup v2 target through a session: only the tasks of the cgroup are
//! sampled.

mod session_fixtures;

use std::path::PathBuf;
use std::time::Duration;

use rover_core::profile::Metric;
use session_fixtures::{Fixture, SPIN, Start, pids, profiler, value_through};

/// A fresh cgroup, removed when dropped (once its processes are gone).
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_cgroup_session_samples_only_its_tasks() {
    let Some(profiler) = profiler("a_cgroup_session_samples_only_its_tasks") else {
        return;
    };
    let Some(mount) = testkit::cgroup2_mount() else {
        testkit::skip(
            "a_cgroup_session_samples_only_its_tasks",
            "no cgroup v2 mount",
        );
        return;
    };
    let cgroup = Cgroup(mount.join(format!("rover-session-test-{}", std::process::id())));
    std::fs::create_dir(&cgroup.0).unwrap();
    let fixture = Fixture::build("spin", SPIN);
    let mut inside = fixture.start(&["600"]);
    let mut outside = fixture.start(&["600"]);
    std::fs::write(cgroup.0.join("cgroup.procs"), inside.pid().to_string()).unwrap();
    let session = profiler
        .on_cpu()
        .cgroup(&cgroup.0)
        .window(Duration::from_millis(200))
        .start()
        .unwrap();
    inside.go();
    outside.go();
    inside.wait_done();
    outside.wait_done();
    let cpu = inside.cpu_seconds();
    // Stopped while both live, so every window is symbolized.
    let whole = session.stop_blocking().unwrap();
    let in_spin = value_through(&whole, "spin_here", Metric::OnCpuSamples);
    eprintln!("cgroup session: {in_spin} samples in spin_here for {cpu:.2} CPU seconds");
    assert_eq!(
        pids(&whole),
        vec![inside.pid()],
        "samples from outside the cgroup"
    );
    assert!(
        in_spin as f64 > cpu * 99.0 * 0.6,
        "{in_spin} samples for {cpu:.2} s"
    );
}
