//! Short-lived processes inside an every-process session: each lives about
//! 200 ms (400 ms in an emulated guest), execs, works and exits long before
//! the window it ran in is drained; its samples must still come out
//! symbolized down to `main`.

mod session_fixtures;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use rover_core::Profile;
use rover_core::profile::FrameKind;
use session_fixtures::{Fixture, Language, profiler};

/// Works `argv[1]` ms of its own CPU time in `short_work`, then exits: no
/// handshake, so nothing of it lives past its work.
const SHORT: &str = r#"
#include <stdlib.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long short_work(double until) {
    volatile unsigned long x = 0;
    while (cpu_now() < until) {
        for (int i = 0; i < 20000; i++) x += i * 7;
    }
    return x;
}

int main(int argc, char **argv) {
    double ms = argc > 1 ? atof(argv[1]) : 200;
    return short_work(cpu_now() + ms / 1000.0) == 1;
}
"#;

const PROCESSES: usize = 50;

/// What the samples of the short processes were.
#[derive(Debug, Default)]
struct Counts {
    /// Taken in user code.
    user: u64,
    /// Of those, in the dynamic loader before `main` ran: every frame in
    /// ld.so. Natively about 1 ms of a process's 200 ms; under emulation
    /// ld.so's work is relatively far slower, about 10% of the samples.
    loader: u64,
    /// The others symbolized from the leaf down to `main`, every frame
    /// between named.
    to_main: u64,
}

/// Counts the samples of `pids`, and prints why those not down to `main`
/// are not.
fn symbolized_to_main(profile: &Profile, pids: &HashSet<u32>) -> Counts {
    let mut counts = Counts::default();
    // Why the others are not, for the log.
    let mut misses: std::collections::BTreeMap<String, u64> = Default::default();
    let mut stacks: std::collections::HashMap<String, u64> = Default::default();
    for entry in profile.entries() {
        let Some(thread) = profile.thread(entry.thread) else {
            continue;
        };
        if !pids.contains(&thread.pid) {
            continue;
        }
        let frames: Vec<_> = profile
            .stack(entry.stack)
            .iter()
            .filter_map(|&id| profile.frame(id))
            .collect();
        if frames.first().is_none_or(|f| f.kind == FrameKind::Kernel) {
            continue;
        }
        counts.user += entry.value.samples;
        let in_loader = frames
            .iter()
            .filter(|f| f.kind != FrameKind::Truncated)
            .all(|f| f.module.is_some_and(|m| m.contains("/ld-linux")));
        let to_main = frames.iter().position(|f| f.name == "main");
        if in_loader {
            counts.loader += entry.value.samples;
        } else if to_main.is_some_and(|at| frames[..at].iter().all(|f| f.kind == FrameKind::Native))
        {
            counts.to_main += entry.value.samples;
        } else {
            let why = if let Some(stop) = frames.iter().find(|f| f.kind == FrameKind::Truncated) {
                stop.display_name().to_string()
            } else if frames.iter().any(|f| f.kind == FrameKind::Unknown) {
                "an unknown frame".to_string()
            } else {
                "complete, before main (the dynamic loader)".to_string()
            };
            *misses.entry(why).or_default() += entry.value.samples;
            let names: Vec<_> = frames
                .iter()
                .map(|f| format!("{}@{}", f.display_name(), f.module.unwrap_or("?")))
                .collect();
            *stacks.entry(names.join(";")).or_default() += entry.value.samples;
        }
    }
    for (why, samples) in &misses {
        eprintln!("not to main: {samples} samples: {why}");
    }
    let mut stacks: Vec<_> = stacks.into_iter().collect();
    stacks.sort_by_key(|s| std::cmp::Reverse(s.1));
    for (stack, samples) in stacks.iter().take(8) {
        eprintln!("  {samples:>5} {stack}");
    }
    counts
}

#[test]
fn short_lived_processes_come_out_symbolized() {
    let Some(profiler) = profiler("short_lived_processes_come_out_symbolized") else {
        return;
    };
    // Production builds: no frame pointers, so the walk needs tables too.
    let fixture = Fixture::build_without_frame_pointers("short", Language::C, SHORT, None);
    let session = profiler
        .on_cpu()
        .all()
        .frequency(499)
        .window(Duration::from_secs(1))
        .start()
        .unwrap();
    let mut pids = HashSet::new();
    // One at a time: a CPU stays free for the profiler's own threads (the
    // tracker, the table service), as on any machine not saturated. With
    // two at a time on the two vCPUs of an emulated guest, the tables of
    // each new process loaded late enough that 88% came out to main.
    // In an emulated guest, fewer and longer: the fixture's 200 ms are
    // CPU time, which the emulated CPU spends at its own pace, while the
    // profiler's work for each new process (its identity, its modules, its
    // tables) is emulated too. A 6.1 guest in CI read one process's
    // identity only after it had exited (no executable, no command line).
    // 400 ms there is still far shorter, in the profiler's emulated
    // instructions, than 200 ms on the host.
    let (processes, millis) = if testkit::in_guest() {
        (PROCESSES / 2, 400)
    } else {
        (PROCESSES, 200)
    };
    for _ in 0..processes {
        let mut child = Command::new(&fixture.path)
            .arg(millis.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        pids.insert(child.id());
        assert!(child.wait().unwrap().success());
    }
    let whole = session.stop_blocking().unwrap();
    let counts = symbolized_to_main(&whole, &pids);
    let program = counts.user - counts.loader;
    let share = counts.to_main as f64 / program.max(1) as f64;
    eprintln!(
        "{processes} processes of {millis} ms: {} user-mode samples, {} of them in the dynamic \
         loader before main; of the {program} others, {} symbolized down to main ({:.1}%)",
        counts.user,
        counts.loader,
        counts.to_main,
        share * 100.0
    );
    assert!(
        program >= processes as u64,
        "only {program} user-mode samples"
    );
    assert!(share >= 0.9, "{:.1}% symbolized to main", share * 100.0);
    // Each carries the identity read while it lived: its executable and
    // command line, and a start time of its own.
    let path = fixture.path.to_string_lossy().into_owned();
    let mut seen = 0;
    for &pid in &pids {
        let Some(identity) = whole.process_identity(pid) else {
            if std::env::var_os("ROVER_SHOW_MISSES").is_some() {
                let part = whole.filter_pids(&[pid]);
                eprintln!(
                    "no identity for {pid}: {} samples",
                    part.total(rover_core::profile::Metric::OnCpuSamples)
                );
            }
            continue;
        };
        seen += 1;
        assert_eq!(identity.exe.as_deref(), Some(path.as_str()), "{identity:?}");
        assert_eq!(
            identity.cmdline,
            [path.clone(), millis.to_string()],
            "{identity:?}"
        );
    }
    let sampled: HashSet<u32> = whole
        .processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| pids.contains(pid))
        .collect();
    assert_eq!(
        seen,
        sampled.len(),
        "identities of {seen} of {} processes",
        sampled.len()
    );
}
