//! The proof of the in-kernel unwinder (issue 9) on real stacks: fixtures
//! built at test time with `-O2 -fomit-frame-pointer`, as distributions
//! build their binaries, hold still in a call chain at least ten levels deep
//! (through a shared library, through a signal handler, in C++, blocked in
//! libc), and a session on each in every [`StackMode`] counts the share of
//! the fixture's samples (off-CPU: of its time off CPU) whose user stack
//! holds the whole chain, in order, down to `main`. `Dwarf` and `Auto` must
//! reach 95%, and `FramePointers` stays under 25%: a frame-pointer walk of
//! such code stops at the leaf or wanders off, which is what the tables are
//! for. On a kernel that cannot run the unwinder, `Dwarf` must be refused
//! with [`Error::Unsupported`] and `Auto` must walk frame pointers (under
//! 25% too); any other failure to start fails the test. A control builds
//! the same chains with frame pointers: complete in every mode.
//!
//! Each session runs until the fixture has been seen a fixed number of
//! times (samples, or sleeps), not for a fixed time: under emulation (the
//! qemu kernel matrix) a second buys far less work, and only the count
//! matters. The shares are printed as `rover-unwind-share:` lines for the
//! CI logs, every mode's before any assertion.

mod session_fixtures;

use std::time::{Duration, Instant};

use rover_core::profile::{FrameKind, Metric};
use rover_core::{Error, Profile, Profiler, StackLoss, StackMode};
use session_fixtures::{
    DEEP, DEEP_CXX, DEEP_LIBRARY, Fixture, Language, Running, SPIN, Start, WITH_FRAME_POINTERS,
    next_window, profiler,
};

/// The modes compared, the frame-pointer walk first.
const MODES: [StackMode; 3] = [StackMode::FramePointers, StackMode::Dwarf, StackMode::Auto];

/// On-CPU samples of the fixture each session waits for.
const ON_CPU_SAMPLES: u64 = 200;

/// Off-CPU switches of the fixture each session waits for (sleeps of 2 ms).
const OFF_CPU_SWITCHES: u64 = 150;

/// At least this share in `Dwarf` and `Auto` mode (the figure).
const UNWOUND_AT_LEAST: f64 = 0.95;

/// Under this share in `FramePointers` mode.
const FRAME_POINTERS_UNDER: f64 = 0.25;

/// A guard against a hang only: no assertion is about time.
const DEADLINE: Duration = Duration::from_secs(300);

/// What every path of [`DEEP`] has between its leaf and the root, leaf
/// first: two levels of the program called back from four of the library,
/// four of the program and `main`.
const DEEP_TRUNK: [&str; 11] = [
    "level10",
    "level9",
    "lib_level8",
    "lib_level7",
    "lib_level6",
    "lib_level5",
    "level4",
    "level3",
    "level2",
    "level1",
    "main",
];

/// One session's count: how much of the fixture's metric fell on stacks
/// with the whole chain.
#[derive(Debug, Clone, Copy)]
struct Share {
    mode: StackMode,
    matched: u64,
    total: u64,
}

impl Share {
    fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.matched as f64 / self.total as f64
        }
    }
}

/// The share of `metric` in `pid`'s rows of `profile` whose user stack
/// holds `chain` (function names, leaf first, ending with `main`) as a run
/// of consecutive native frames: every level present, in order, nothing in
/// between. Frames toward the leaf before the run (libc's `nanosleep` under
/// a blocking leaf) and toward the root after `main` (libc's start code) are
/// allowed. Every row of the process counts in the total, an empty or lost
/// user stack included.
fn chain_share(profile: &Profile, pid: u32, chain: &[&str], metric: Metric) -> (u64, u64) {
    chain_share_from(profile, pid, chain, None, metric)
}

/// [`chain_share`] of the samples whose leaf (the first user frame, which
/// comes from the sampled address, not from the walk) is one of `leaves`
/// (all of them with `None`): the walks that start in that code, however
/// they end.
fn chain_share_from(
    profile: &Profile,
    pid: u32,
    chain: &[&str],
    leaves: Option<&[&str]>,
    metric: Metric,
) -> (u64, u64) {
    let mut matched = 0;
    let mut total = 0;
    for entry in profile.entries() {
        if profile.thread(entry.thread).map(|t| t.pid) != Some(pid) {
            continue;
        }
        // Kernel frames come first in a stack, leaf first.
        let user: Vec<_> = profile
            .stack(entry.stack)
            .iter()
            .filter_map(|&id| profile.frame(id))
            .filter(|frame| frame.kind != FrameKind::Kernel)
            .collect();
        if let Some(leaves) = leaves
            && !user
                .first()
                .is_some_and(|leaf| leaves.iter().any(|name| leaf.display_name() == *name))
        {
            continue;
        }
        let value = entry.value.get(metric);
        total += value;
        let holds = user.windows(chain.len()).any(|run| {
            run.iter().zip(chain).all(|(frame, name)| {
                frame.kind == FrameKind::Native && !frame.inlined && frame.display_name() == *name
            })
        });
        if holds {
            matched += value;
        }
    }
    (matched, total)
}

/// The heaviest stack of `pid`, root first as in folded stacks (kernel
/// frames marked `_[k]`), for the logs.
fn heaviest_stack(profile: &Profile, pid: u32, metric: Metric) -> String {
    let Some(entry) = profile
        .entries()
        .filter(|e| profile.thread(e.thread).map(|t| t.pid) == Some(pid))
        .max_by_key(|e| e.value.get(metric))
    else {
        return "(none)".to_string();
    };
    let mut names: Vec<String> = profile
        .stack(entry.stack)
        .iter()
        .filter_map(|&id| profile.frame(id))
        .map(|frame| match frame.kind {
            FrameKind::Kernel => format!("{}_[k]", frame.display_name()),
            _ => frame.display_name().into_owned(),
        })
        .collect();
    names.reverse();
    format!("{} {}", names.join(";"), entry.value.get(metric))
}

/// Which session to run on a fixture.
#[derive(Clone, Copy)]
enum Kind {
    OnCpu,
    OffCpu,
}

impl Kind {
    /// What the session waits for and the share is taken of.
    fn metric(self) -> Metric {
        match self {
            Kind::OnCpu => Metric::OnCpuSamples,
            Kind::OffCpu => Metric::OffCpuNanos,
        }
    }
}

/// Profiles a fresh instance of `fixture` (started with `args`, already in
/// its chain once it said `ready`) in `mode` until it has been seen enough,
/// and returns its share of full chains, or `None` when a `Dwarf` session
/// was refused with [`Error::Unsupported`], the clear error a kernel that
/// cannot run the unwinder gives.
fn session_share(
    profiler: &Profiler,
    name: &str,
    fixture: &Fixture,
    args: &[&str],
    kind: Kind,
    mode: StackMode,
    chain: &[&str],
) -> Option<Share> {
    let running: Running = fixture.start(args);
    let pid = running.pid();
    let window = Duration::from_millis(250);
    let started = match kind {
        Kind::OnCpu => profiler
            .on_cpu()
            .pids([pid])
            .frequency(199)
            .window(window)
            .stack_mode(mode)
            .start(),
        Kind::OffCpu => profiler
            .off_cpu()
            .pids([pid])
            .min_block(Duration::from_millis(1))
            .window(window)
            .stack_mode(mode)
            .start(),
    };
    let mut session = match started {
        Ok(session) => session,
        Err(error @ Error::Unsupported { .. }) if mode == StackMode::Dwarf => {
            println!("rover-unwind-share: {name} {mode:?}: unsupported on this kernel: {error}");
            return None;
        }
        Err(error) => panic!("{name}: a session in {mode:?} mode did not start: {error}"),
    };
    let mut windows = session.windows();
    let (wanted, wait_metric) = match kind {
        Kind::OnCpu => (ON_CPU_SAMPLES, Metric::OnCpuSamples),
        Kind::OffCpu => (OFF_CPU_SWITCHES, Metric::OffCpuSwitches),
    };
    let deadline = Instant::now() + DEADLINE;
    let mut seen = 0;
    let mut lost: Vec<(StackLoss, u64)> = Vec::new();
    while seen < wanted {
        let window = next_window(&mut windows, deadline);
        seen += window.profile.filter_pids(&[pid]).total(wait_metric);
        lost.extend(window.stats.lost_stacks.iter().copied());
    }
    let whole = session
        .stop_blocking()
        .unwrap_or_else(|e| panic!("{name}: stopping the {mode:?} session: {e}"));
    drop(running);
    let (matched, total) = chain_share(&whole, pid, chain, kind.metric());
    let share = Share {
        mode,
        matched,
        total,
    };
    println!(
        "rover-unwind-share: {name} {mode:?}: {:.1}% ({matched} of {total} {}) with the full chain",
        share.fraction() * 100.0,
        match kind {
            Kind::OnCpu => "samples",
            Kind::OffCpu => "ns off CPU",
        }
    );
    println!(
        "rover-unwind-top: {name} {mode:?}: {}",
        heaviest_stack(&whole, pid, kind.metric())
    );
    if !lost.is_empty() {
        println!("rover-unwind-lost: {name} {mode:?}: {lost:?}");
    }
    Some(share)
}

/// What a fixture's build lets a frame-pointer walk do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    /// `-fomit-frame-pointer`: the walk must fail, the tables succeed.
    NoFramePointers,
    /// The control, with frame pointers: every mode must succeed.
    FramePointers,
}

/// Runs a session in every mode on `fixture`, prints every share, then
/// asserts the figures.
fn prove(name: &str, fixture: &Fixture, args: &[&str], kind: Kind, chain: &[&str], build: Build) {
    let Some(profiler) = profiler(name) else {
        return;
    };
    if build == Build::NoFramePointers {
        assert_no_frame_pointers(fixture);
    }
    let shares: Vec<Option<Share>> = MODES
        .iter()
        .map(|&mode| session_share(&profiler, name, fixture, args, kind, mode, chain))
        .collect();
    // A kernel that cannot run the unwinder refuses Dwarf with a clear
    // error; Auto then walks frame pointers (and the profiler says so), so
    // the tables' figure is not asked of it.
    let unsupported = shares.iter().any(Option::is_none);
    if unsupported {
        println!(
            "rover-unwind-share: {name}: no in-kernel unwinder here; profiler warnings: {:?}",
            profiler.warnings()
        );
    }
    for share in shares.iter().flatten() {
        assert!(share.total > 0, "{name}: nothing counted in {share:?}");
        let fraction = share.fraction();
        let walks_frame_pointers = share.mode == StackMode::FramePointers
            || (unsupported && share.mode == StackMode::Auto);
        if build == Build::NoFramePointers && walks_frame_pointers {
            assert!(
                fraction < FRAME_POINTERS_UNDER,
                "{name}: a frame-pointer walk found the full chain in {:.1}% of {share:?}: \
                 the fixture has frames a frame-pointer walk can follow",
                fraction * 100.0
            );
        } else {
            assert!(
                fraction >= UNWOUND_AT_LEAST,
                "{name}: only {:.1}% full chains in {share:?} (at least {:.0}% wanted)",
                fraction * 100.0,
                UNWOUND_AT_LEAST * 100.0
            );
        }
    }
}

fn assert_no_frame_pointers(fixture: &Fixture) {
    let found = fixture.frame_pointer_functions();
    assert!(
        found.is_empty(),
        "functions with a frame-pointer prologue in a fixture built without: {found:?}"
    );
}

fn deep() -> Fixture {
    Fixture::build_without_frame_pointers("deep", Language::C, DEEP, Some(DEEP_LIBRARY))
}

#[test]
fn c_chain_through_a_shared_library_on_cpu() {
    let chain: Vec<&str> = std::iter::once("spin_here").chain(DEEP_TRUNK).collect();
    prove(
        "c_chain_through_a_shared_library_on_cpu",
        &deep(),
        &["cpu"],
        Kind::OnCpu,
        &chain,
        Build::NoFramePointers,
    );
}

/// The handler's chain, the kernel's signal frame (`__restore_rt`, libc's
/// `sa_restorer`, whose address the kernel put where a return address would
/// be) and the interrupted chain: the walk steps through the signal frame
/// to the registers saved there.
#[test]
fn signal_handler_chain_through_restore_rt_on_cpu() {
    let handler = [
        "handler_spin",
        "handler_level3",
        "handler_level2",
        "handler_level1",
        "on_signal",
        "__restore_rt",
        "interrupted_here",
    ];
    let chain: Vec<&str> = handler.into_iter().chain(DEEP_TRUNK).collect();
    prove(
        "signal_handler_chain_through_restore_rt_on_cpu",
        &deep(),
        &["signal"],
        Kind::OnCpu,
        &chain,
        Build::NoFramePointers,
    );
}

/// The chain of [`DEEP_CXX`], leaf first, demangled as the symbolizer
/// names functions (`__cxa_demangle`'s full form, with parameters).
fn cxx_chain() -> Vec<String> {
    let stages = (0..=8).map(|n| format!("rover_fixture::engine::Stage<{n}>::run(int)"));
    let rest = [
        "rover_fixture::Worker::operator()(int)",
        "void rover_fixture::detail::dispatch<rover_fixture::Worker>(rover_fixture::Worker&, int)",
        "rover_fixture::Runner::start(int)",
        "main",
    ];
    stages.chain(rest.map(String::from)).collect()
}

#[test]
fn cxx_template_chain_on_cpu() {
    let chain = cxx_chain();
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    let fixture = Fixture::build_without_frame_pointers("deepxx", Language::Cxx, DEEP_CXX, None);
    prove(
        "cxx_template_chain_on_cpu",
        &fixture,
        &[],
        Kind::OnCpu,
        &chain,
        Build::NoFramePointers,
    );
}

/// Blocked in libc's `nanosleep` (built without frame pointers too) under
/// the chain; the share is of the fixture's nanoseconds off CPU.
#[test]
fn blocking_chain_off_cpu() {
    let chain: Vec<&str> = std::iter::once("block_here").chain(DEEP_TRUNK).collect();
    prove(
        "blocking_chain_off_cpu",
        &deep(),
        &["block"],
        Kind::OffCpu,
        &chain,
        Build::NoFramePointers,
    );
}

/// The control: the same C and C++ chains built with frame pointers are
/// complete in every mode, a frame-pointer walk included. This is what
/// checks the expected chains and [`chain_share`] themselves (names,
/// order, the library's levels, demangling) on any kernel.
#[test]
fn frame_pointer_builds_are_complete_in_every_mode() {
    let name = "frame_pointer_builds_are_complete_in_every_mode";
    let c = Fixture::build_with(
        "deepfp",
        Language::C,
        WITH_FRAME_POINTERS,
        DEEP,
        Some(DEEP_LIBRARY),
    );
    assert!(!c.frame_pointer_functions().is_empty());
    let chain: Vec<&str> = std::iter::once("spin_here").chain(DEEP_TRUNK).collect();
    prove(
        name,
        &c,
        &["cpu"],
        Kind::OnCpu,
        &chain,
        Build::FramePointers,
    );
    let cxx = Fixture::build_with(
        "deepxxfp",
        Language::Cxx,
        WITH_FRAME_POINTERS,
        DEEP_CXX,
        None,
    );
    let chain = cxx_chain();
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    prove(name, &cxx, &[], Kind::OnCpu, &chain, Build::FramePointers);
}

/// The prologue check the tests rely on finds frame pointers where they
/// are (the frame-pointer build of [`SPIN`]), and none in the fixtures.
#[test]
fn fixtures_are_built_without_frame_pointers() {
    let with = Fixture::build("spin", SPIN);
    let found = with.frame_pointer_functions();
    assert!(
        found.iter().any(|f| f.ends_with(": spin_here")),
        "no frame-pointer prologue found in a frame-pointer build: {found:?}"
    );
    let c = deep();
    assert!(c.library.is_some());
    assert_no_frame_pointers(&c);
    assert_no_frame_pointers(&Fixture::build_without_frame_pointers(
        "deepxx",
        Language::Cxx,
        DEEP_CXX,
        None,
    ));
}

/// The same instructions at the same addresses of one process with other
/// unwind rules: [`SWAP`]'s libraries, built from one source with frames of
/// 4 and 8 KiB around the same call (`outer_1000` and `outer_2000`).
const SWAP: &str = include_str!("session_fixtures/unwind/swap.c");
const SWAP_LIBRARY: &str = include_str!("session_fixtures/unwind/swap.S");

/// Windows (of 250 ms) the unwinder may take to learn of a new mapping and
/// load its table: a bound for a clear failure, far above the few it takes.
const SWAP_WINDOWS: usize = 120;

/// The programs remember the rules each (process, address) was found to
/// have. When a process maps other code where it had code, what they
/// remember must be forgotten: the fixture runs a function with a 4 KiB
/// frame, then maps in its place a library whose code is the same bytes
/// with an 8 KiB frame. After the swap, once the unwinder has read the new
/// mapping, the walks must follow the new rules (the full chain to `main`),
/// not the remembered ones, which would read the return address inside the
/// new frame and lose the chain.
#[test]
fn remembered_rules_are_forgotten_when_other_code_is_mapped_at_their_address() {
    let name = "remembered_rules_are_forgotten";
    let Some(profiler) = profiler(name) else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("rover-swap-")
        .tempdir()
        .unwrap();
    let source = dir.path().join("swap.S");
    std::fs::write(&source, SWAP_LIBRARY).unwrap();
    let mut offsets = Vec::new();
    for frame in ["1000", "2000"] {
        let library = dir.path().join(format!("lib{frame}.so"));
        let status = std::process::Command::new("gcc")
            .args(["-nostdlib", "-shared"])
            .arg(format!("-DFRAME=0x{frame}"))
            .arg(format!("-DOUTER=outer_{frame}"))
            .arg(format!("-DINNER=inner_{frame}"))
            .arg("-o")
            .arg(&library)
            .arg(&source)
            .status()
            .expect("gcc is needed to build the test fixtures");
        assert!(status.success(), "gcc failed on swap.S");
        let nm = std::process::Command::new("nm")
            .arg(&library)
            .output()
            .expect("nm is needed to read the fixture's symbols");
        let symbols = String::from_utf8_lossy(&nm.stdout).into_owned();
        let offset = symbols
            .lines()
            .find(|line| line.ends_with(&format!(" outer_{frame}")))
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or_else(|| panic!("no outer_{frame} in {symbols}"))
            .to_string();
        offsets.push(offset);
    }
    // The point of the fixture: the same code at the same offset.
    assert_eq!(offsets[0], offsets[1], "outer_* moved between the builds");
    let program = dir.path().join("swap");
    let c = dir.path().join("swap.c");
    std::fs::write(&c, SWAP).unwrap();
    let status = std::process::Command::new("gcc")
        .args(session_fixtures::NO_FRAME_POINTERS)
        .arg("-o")
        .arg(&program)
        .arg(&c)
        .status()
        .expect("gcc is needed to build the test fixtures");
    assert!(status.success(), "gcc failed on swap.c");
    let child = std::process::Command::new(&program)
        .arg(dir.path().join("lib1000.so"))
        .arg(dir.path().join("lib2000.so"))
        .arg(format!("0x{}", offsets[0]))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running { child };
    assert_eq!(running.line(), "ready");
    let pid = running.pid();
    let session = profiler
        .on_cpu()
        .pids([pid])
        .frequency(199)
        .window(Duration::from_millis(250))
        .stack_mode(StackMode::Dwarf)
        .start();
    let mut session = match session {
        Ok(session) => session,
        Err(error @ Error::Unsupported { .. }) => {
            // Only where kernel_features says the unwinder cannot run,
            // which that test checks against the kernel's features.
            println!("rover-unwind-share: {name}: unsupported on this kernel: {error}");
            return;
        }
        Err(error) => panic!("{name}: a Dwarf session did not start: {error}"),
    };
    let mut windows = session.windows();
    let deadline = Instant::now() + DEADLINE;
    let before = ["inner_1000", "outer_1000", "call_outer", "main"];
    let after = ["inner_2000", "outer_2000", "call_outer", "main"];
    // The first code, until its walks are complete (and remembered).
    let (mut matched, mut total) = (0, 0);
    let mut windows_before = 0;
    while matched < ON_CPU_SAMPLES {
        let window = next_window(&mut windows, deadline);
        windows_before += 1;
        let (m, t) = chain_share(&window.profile, pid, &before, Metric::OnCpuSamples);
        matched += m;
        total += t;
        if windows_before % 20 == 0 {
            println!(
                "rover-unwind-top: {name}: window {windows_before} before the swap: \
                 {matched} of {total} complete; {}; walks {:?}",
                heaviest_stack(&window.profile, pid, Metric::OnCpuSamples),
                window.stats.user_walks
            );
        }
    }
    println!("rover-unwind-share: {name}: before the swap {matched} of {total} samples complete");
    assert!(
        matched as f64 >= UNWOUND_AT_LEAST * total as f64,
        "{name}: only {matched} of {total} samples of the first code complete"
    );
    // SAFETY: kill(2) with a signal the fixture handles, to its pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    assert_eq!(running.line(), "swapped");
    let swapped = Instant::now();
    // Windows that began before the swap hold both codes; then the
    // unwinder learns of the new mapping (asynchronously: until it does,
    // the kernel walks the new code with the old mapping's rules, and
    // those walks stop, marked) and loads its table (the walks stop,
    // marked, meanwhile). The first window with complete walks of the new
    // code is where the table arrived, and holds walks from before as
    // well (one `Stopped(Unmapped)` on the host and in 5.10); from the
    // window after it, the walks must stay complete: the remembered rules
    // of the old code would break every one of them.
    let mut seen = 0;
    let mut arrived = false;
    let mut windows_seen = 0;
    let (mut matched, mut total) = (0, 0);
    while matched < ON_CPU_SAMPLES {
        assert!(
            seen > 0 || windows_seen < SWAP_WINDOWS,
            "{name}: {SWAP_WINDOWS} windows after the swap and no complete walk of the new code"
        );
        let window = next_window(&mut windows, deadline);
        windows_seen += 1;
        // Only the walks that start in the new code are what the old rules
        // would break; samples elsewhere in the fixture (its loop in
        // `main`, the swap itself) say nothing of them.
        let (m, t) = chain_share_from(
            &window.profile,
            pid,
            &after,
            Some(&after[..2]),
            Metric::OnCpuSamples,
        );
        let (old, _) = chain_share(&window.profile, pid, &before, Metric::OnCpuSamples);
        if !arrived {
            arrived = m > 0 && old == 0;
            println!(
                "rover-unwind-top: {name}: window {windows_seen} after the swap, {:.1} s{}: \
                 {m} new, {old} old of {t}; {}; walks {:?}; lost {:?}",
                swapped.elapsed().as_secs_f64(),
                if arrived { " (the table arrived)" } else { "" },
                heaviest_stack(&window.profile, pid, Metric::OnCpuSamples),
                window.stats.user_walks,
                window.stats.lost_stacks
            );
            continue;
        }
        seen += 1;
        matched += m;
        total += t;
        if m < t {
            println!(
                "rover-unwind-top: {name}: window {windows_seen} after the swap: {m} of {t} \
                 complete; walks {:?}",
                window.stats.user_walks
            );
        }
    }
    println!(
        "rover-unwind-share: {name}: after the swap {matched} of {total} samples in the new \
         code complete (from window {} of {windows_seen})",
        windows_seen - seen + 1
    );
    assert!(
        matched as f64 >= UNWOUND_AT_LEAST * total as f64,
        "{name}: only {matched} of {total} samples of the new code complete after the swap"
    );
    drop(running);
}
