//! On-CPU sessions for real in the kernel: a fixture spinning in a known
//! function, its windows consumed from tokio; configuration errors.

mod session_fixtures;

use std::time::{Duration, Instant};

use futures::StreamExt;
use rover_core::ConfigError;
use rover_core::profile::{FrameKind, Metric, ProfileKind};
use rover_core::{Error, Profile};
use session_fixtures::{
    Fixture, SPIN, Start, expect_error, next_window, pids, profiler, unix_nanos, value_through,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_fixture_through_windows_on_tokio() {
    let Some(profiler) = profiler("spinning_fixture_through_windows_on_tokio") else {
        return;
    };
    let fixture = Fixture::build("spin", SPIN);
    let mut spin = fixture.start(&["1500"]);
    let pid = spin.pid();
    let mut session = profiler
        .on_cpu()
        .pids([pid])
        .frequency(99)
        .window(Duration::from_millis(250))
        .start()
        .unwrap();
    let mut windows = session.windows();
    spin.go();
    let mut from_windows = Profile::new();
    let mut window_samples = 0;
    let mut count = 0;
    // Windows arrive on tokio while the fixture runs; then stop collects the
    // last one and the whole profile.
    // The bound is for a hung stream, not the cadence: in the emulated
    // guests, with this binary's other tests running beside it, a window
    // took over 5 s to arrive (the 5.10 guest of a CI run).
    while count < 7 {
        let window = tokio::time::timeout(Duration::from_secs(60), windows.next())
            .await
            .expect("a window within 60 s")
            .expect("the stream stays open while the session runs");
        assert_eq!(window.stats.index, count);
        assert!(window.profile.has_kind(ProfileKind::OnCpu));
        assert_eq!(
            window.stats.samples,
            window.profile.total(Metric::OnCpuSamples)
        );
        window_samples += window.stats.samples;
        from_windows.merge(&window.profile);
        count += 1;
    }
    spin.wait_done();
    let cpu = spin.cpu_seconds();
    let whole = session.stop().await.unwrap();
    // The stream ends after the session's last window.
    while let Some(window) = windows.next().await {
        window_samples += window.stats.samples;
        from_windows.merge(&window.profile);
    }
    let total = whole.total(Metric::OnCpuSamples);
    assert_eq!(
        total, window_samples,
        "the whole profile is the sum of its windows"
    );
    assert_eq!(from_windows.total(Metric::OnCpuSamples), total);
    // 99 Hz of the CPU time it really got (other work shares the CPUs).
    let expected = cpu * 99.0;
    eprintln!("{total} samples for {cpu:.2} CPU seconds ({expected:.0} expected)");
    assert!(cpu > 0.3, "the fixture barely ran ({cpu} s)");
    assert!(
        (total as f64) > expected * 0.75 && (total as f64) < expected * 1.25 + 5.0,
        "{total} samples for {cpu:.2} CPU seconds at 99 Hz"
    );
    assert_eq!(pids(&whole), vec![pid], "samples of other processes");
    let in_spin = value_through(&whole, "spin_here", Metric::OnCpuSamples);
    eprintln!("{in_spin} of {total} samples in spin_here");
    assert!(
        in_spin * 10 >= total * 9,
        "only {in_spin} of {total} samples in spin_here"
    );
    // spin_here's frames are resolved with the fixture's file and line.
    let frame = whole
        .entries()
        .flat_map(|e| whole.stack(e.stack).to_vec())
        .filter_map(|id| whole.frame(id))
        .find(|f| f.name == "spin_here")
        .expect("a spin_here frame");
    assert_eq!(frame.kind, FrameKind::Native);
    assert!(frame.file.is_some_and(|file| file.ends_with("spin.c")));
    // By self samples spin_here leads. (By total it ties with its callers
    // down to _start when every stack is unwound to its root, so a top 3 by
    // total may list only main's callers: the 6.12 guest had 155 of 156 in
    // spin_here and 156 in each of _start and libc's two start functions.)
    let top = whole.top_functions(
        Metric::OnCpuSamples,
        rover_core::profile::TopOrder::SelfValue,
        1,
    );
    assert!(top.iter().any(|f| f.name == "spin_here"), "top: {top:?}");
}

#[test]
fn bad_configurations_are_clear_errors() {
    let Some(profiler) = profiler("bad_configurations_are_clear_errors") else {
        return;
    };
    expect_error(profiler.on_cpu().start(), "no targets", |e| {
        matches!(e, Error::Config(ConfigError::NoTargets))
    });
    expect_error(profiler.off_cpu().start(), "no targets (off-CPU)", |e| {
        matches!(e, Error::Config(ConfigError::NoTargets))
    });
    // Pids are never reused this high: pid_max is at most 2^22.
    expect_error(
        profiler.on_cpu().pids([4_999_999]).start(),
        "no such pid",
        |e| matches!(e, Error::Config(ConfigError::NoSuchProcess(4_999_999))),
    );
    let me = std::process::id();
    expect_error(
        profiler.on_cpu().pids([me]).frequency(0).start(),
        "0 Hz",
        |e| matches!(e, Error::Config(ConfigError::ZeroFrequency)),
    );
    let max = profiler.environment().max_sample_rate;
    expect_error(
        profiler.on_cpu().pids([me]).frequency(max + 1).start(),
        "above the kernel's limit",
        |e| matches!(e, Error::Config(ConfigError::FrequencyTooHigh { .. })),
    );
    expect_error(
        profiler
            .on_cpu()
            .pids([me])
            .window(Duration::from_millis(1))
            .start(),
        "1 ms window",
        |e| matches!(e, Error::Config(ConfigError::WindowTooShort { .. })),
    );
    expect_error(
        profiler
            .off_cpu()
            .pids([me])
            .min_block(Duration::from_millis(10))
            .max_block(Duration::from_millis(1))
            .start(),
        "min above max",
        |e| matches!(e, Error::Config(ConfigError::BlockRange { .. })),
    );
    expect_error(
        profiler.on_cpu().cgroup("/nonexistent/cgroup").start(),
        "missing cgroup",
        |e| matches!(e, Error::Config(ConfigError::Cgroup { .. })),
    );
}

/// An agent following a service: the session moves from one spinning
/// process to another while it runs. Windows that start after the change
/// hold only the new target; the whole profile holds both.
#[test]
fn targets_change_while_the_session_runs() {
    let Some(profiler) = profiler("targets_change_while_the_session_runs") else {
        return;
    };
    let fixture = Fixture::build("spin", SPIN);
    // Both spin until killed (when dropped). The test waits for windows,
    // not for time: in an emulated guest a window can take longer than its
    // period to drain and symbolize, so a fixed sleep holds fewer windows.
    let mut first = fixture.start(&["600000"]);
    let mut second = fixture.start(&["600000"]);
    let (a, b) = (first.pid(), second.pid());
    let mut session = profiler
        .on_cpu()
        .pids([a])
        .window(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut windows = session.windows();
    first.go();
    second.go();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Until a window holds the first target.
    while !pids(&next_window(&mut windows, deadline).profile).contains(&a) {}
    session.set_pids_blocking([b]).unwrap();
    // Taken once the change is applied: the drain thread applies it between
    // two drains, so a window that starts (at the end of a drain) after this
    // began after the change. Taken before the call, a drain already under
    // way when the request came would start a window that still holds the
    // old target's samples.
    let changed = unix_nanos();
    let mut after = Vec::new();
    while after.len() < 2 {
        let window = next_window(&mut windows, deadline);
        let (start, _) = window.profile.time_range().unwrap();
        if start > changed {
            after.push(window);
        }
    }
    let whole = session.stop_blocking().unwrap();
    // The stream still holds the last window, drained at stop.
    after.extend(futures::executor::block_on(windows.collect::<Vec<_>>()));
    assert_eq!(
        pids(&whole),
        vec![a.min(b), a.max(b)],
        "both targets in turn"
    );
    for window in &after {
        let seen = pids(&window.profile);
        assert!(
            seen.is_empty() || seen == vec![b],
            "window {} after the change saw {seen:?}",
            window.stats.index
        );
    }
    assert!(
        after.iter().any(|w| pids(&w.profile) == vec![b]),
        "no window after the change holds the second target"
    );
    assert!(value_through(&whole, "spin_here", Metric::OnCpuSamples) > 0);

    // A session on every process has no pid list to change.
    let all = profiler.on_cpu().all().start().unwrap();
    expect_error(all.set_pids_blocking([a]), "set_pids on --all", |e| {
        matches!(e, Error::Config(ConfigError::NotAPidsSession(_)))
            && e.to_string().contains(".pids(..)")
            && !e.to_string().contains("set_targets")
    });
    drop(all);
}
