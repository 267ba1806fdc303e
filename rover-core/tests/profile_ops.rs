//! Merge, filter, top-N and diff on hand-built profiles whose results are
//! worked out by hand in the comments.

mod profile_support;

use profile_support::*;
use rover_core::export::{FoldedOptions, folded_lines};
use rover_core::profile::{
    FrameKind, Metric, OffCpuState, Profile, ProfileBuilder, Sample, SampleValue, TopOrder,
};

fn sample_of(p: &mut ProfileBuilder, pid: u32, tid: u32, comm: &str, u: &[&str], samples: u64) {
    p.add_sample(&Sample {
        pid,
        tid,
        process_name: comm,
        comm,
        kernel: &[],
        user: &user(u),
        value: SampleValue::OnCpu { samples },
    });
}

/// Leaf first:
/// - pid 10 tid 10 app:    work <- main                 5
/// - pid 10 tid 11 worker: fib <- fib <- fib <- main    4   (recursion)
/// - pid 10 tid 11 worker: leafy <- fib <- fib <- main  2
/// - pid 20 tid 20 other:  idle <- main                 3
fn before() -> Profile {
    let mut p = ProfileBuilder::new();
    sample_of(&mut p, 10, 10, "app", &["work", "main"], 5);
    sample_of(&mut p, 10, 11, "worker", &["fib", "fib", "fib", "main"], 4);
    sample_of(
        &mut p,
        10,
        11,
        "worker",
        &["leafy", "fib", "fib", "main"],
        2,
    );
    sample_of(&mut p, 20, 20, "other", &["idle", "main"], 3);
    p.build()
}

fn names(stats: &[rover_core::profile::FunctionStat]) -> Vec<(&str, u64, u64)> {
    stats
        .iter()
        .map(|s| (s.name.as_str(), s.self_value, s.total_value))
        .collect()
}

#[test]
fn top_functions_by_self_and_total_count_recursion_once() {
    let p = before();
    // Self: the leaf of each stack. Total: main is in every stack (5+4+2+3);
    // fib is in two stacks (4+2), however often it recurses in them.
    let by_total = p.top_functions(Metric::OnCpuSamples, TopOrder::TotalValue, 3);
    assert_eq!(
        names(&by_total),
        [("main", 0, 14), ("fib", 4, 6), ("work", 5, 5)]
    );
    let by_self = p.top_functions(Metric::OnCpuSamples, TopOrder::SelfValue, 10);
    assert_eq!(
        names(&by_self),
        [
            ("work", 5, 5),
            ("fib", 4, 6),
            ("idle", 3, 3),
            ("leafy", 2, 2),
            ("main", 0, 14)
        ]
    );
    assert_eq!(by_self[0].module.as_deref(), Some(APP));
    assert_eq!(by_self[0].kind, FrameKind::Native);
    assert!(
        p.top_functions(Metric::OffCpuNanos, TopOrder::TotalValue, 5)
            .is_empty()
    );
}

#[test]
fn inlined_and_outlined_copies_of_a_function_add_up_and_kernel_is_apart() {
    let mut p = ProfileBuilder::new();
    on_cpu(
        &mut p,
        10,
        "app",
        &[],
        &[sym_inlined("outer", APP, &["inner"]), sym("main", APP)],
        1,
    );
    on_cpu(
        &mut p,
        10,
        "app",
        &[],
        &[sym("inner", APP), sym("main", APP)],
        2,
    );
    on_cpu(&mut p, 10, "app", &kernel(&["inner"]), &user(&["main"]), 4);
    let p = p.build();
    let top = p.top_functions(Metric::OnCpuSamples, TopOrder::SelfValue, 10);
    let kinds: Vec<_> = top
        .iter()
        .map(|s| (s.name.as_str(), s.kind, s.self_value, s.total_value))
        .collect();
    assert_eq!(
        kinds,
        [
            ("inner", FrameKind::Kernel, 4, 4),
            ("inner", FrameKind::Native, 3, 3),
            ("main", FrameKind::Native, 0, 7),
            ("outer", FrameKind::Native, 0, 1),
        ]
    );
}

#[test]
fn merging_windows_interned_in_different_orders_equals_one_profile() {
    let mut w1 = ProfileBuilder::new();
    sample_of(&mut w1, 10, 10, "app", &["work", "main"], 5);
    sample_of(&mut w1, 10, 11, "worker", &["fib", "fib", "main"], 1);
    let mut w2 = ProfileBuilder::new();
    sample_of(&mut w2, 30, 30, "late", &["start"], 7);
    sample_of(&mut w2, 10, 11, "worker", &["fib", "fib", "main"], 2);
    sample_of(&mut w2, 10, 10, "app", &["work", "main"], 1);
    w1.time_range(100, 200);
    w2.time_range(200, 300);
    let (w1, w2) = (w1.build(), w2.build());

    let mut whole = Profile::new();
    whole.merge(&w1);
    whole.merge(&w2);
    let mut direct = ProfileBuilder::new();
    sample_of(&mut direct, 10, 10, "app", &["work", "main"], 6);
    sample_of(&mut direct, 10, 11, "worker", &["fib", "fib", "main"], 3);
    sample_of(&mut direct, 30, 30, "late", &["start"], 7);
    let direct = direct.build();

    let opts = FoldedOptions::on_cpu();
    assert_eq!(folded_lines(&whole, &opts), folded_lines(&direct, &opts));
    assert_eq!(
        folded_lines(&whole, &opts),
        ["app;main;work 6", "late;start 7", "worker;main;fib;fib 3"]
    );
    assert_eq!(whole.len(), 3);
    assert_eq!(whole.stack_count(), 3);
    assert_eq!(whole.frame_count(), 4);
    assert_eq!(whole.time_range(), Some((100, 300)));
    let merged = Profile::merged([&w2, &w1]);
    assert_eq!(folded_lines(&merged, &opts), folded_lines(&direct, &opts));
}

#[test]
fn filters_keep_matching_rows_and_only_what_they_reference() {
    let p = before();
    let pid20 = p.filter_pids(&[20]);
    assert_eq!(
        folded_lines(&pid20, &FoldedOptions::on_cpu()),
        ["other;main;idle 3"]
    );
    // That the strings of other rows go too is checked in the crate's
    // unit tests: the string table is not public.
    assert_eq!(pid20.frame_count(), 2, "frames of other stacks are dropped");
    assert_eq!(p.filter_tids(&[11]).total(Metric::OnCpuSamples), 6);
    assert_eq!(p.filter_function("fib").total(Metric::OnCpuSamples), 6);
    assert_eq!(p.filter_function("main").total(Metric::OnCpuSamples), 14);
    assert!(p.filter_function("absent").is_empty());
    let leafy = p.filter_frames(|f| f.name.starts_with("lea"));
    assert_eq!(
        folded_lines(&leafy, &FoldedOptions::on_cpu()),
        ["worker;main;fib;fib;leafy 2"]
    );
    let both = p.filter(|t, frames| t.comm == "worker" && frames.count() == 4);
    assert_eq!(both.total(Metric::OnCpuSamples), 6);
}

#[test]
fn diff_of_profiles_with_different_interning_orders() {
    let before = before();
    // Built in another order, other pids: stacks match by content only.
    //   tracing <- main                7   (new)
    //   leafy <- fib <- fib <- main    2   (same)
    //   fib <- fib <- fib <- main     10   (+6)
    //   work <- main                   2   (-3)
    //   idle <- main                   -   (-3, gone)
    let mut after = ProfileBuilder::new();
    sample_of(&mut after, 7, 7, "envoy", &["tracing", "main"], 7);
    sample_of(
        &mut after,
        8,
        9,
        "envoy",
        &["leafy", "fib", "fib", "main"],
        2,
    );
    sample_of(
        &mut after,
        8,
        8,
        "envoy",
        &["fib", "fib", "fib", "main"],
        10,
    );
    sample_of(&mut after, 8, 8, "envoy", &["work", "main"], 2);
    let after = after.build();

    let diff = Profile::diff(&before, &after, Metric::OnCpuSamples);
    let stacks: Vec<(Vec<String>, u64, u64)> = diff
        .stacks
        .iter()
        .map(|d| (d.frames.clone(), d.before, d.after))
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        stacks,
        [
            (s(&["tracing", "main"]), 0, 7),
            (s(&["fib", "fib", "fib", "main"]), 4, 10),
            (s(&["work", "main"]), 5, 2),
            (s(&["idle", "main"]), 3, 0),
            (s(&["leafy", "fib", "fib", "main"]), 2, 2),
        ]
    );
    let f = |name: &str| {
        let d = diff.function(name).unwrap();
        (d.self_before, d.self_after, d.total_before, d.total_after)
    };
    assert_eq!(f("main"), (0, 0, 14, 21));
    assert_eq!(f("tracing"), (0, 7, 0, 7));
    assert_eq!(f("fib"), (4, 10, 6, 12));
    assert_eq!(f("work"), (5, 2, 5, 2));
    assert_eq!(f("idle"), (3, 0, 3, 0));
    assert_eq!(f("leafy"), (2, 2, 2, 2));
    assert_eq!(diff.function("fib").unwrap().total_delta(), 6);
    let order: Vec<_> = diff.functions.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(order, ["main", "tracing", "fib", "idle", "work", "leafy"]);
    // Reversed, every delta flips sign.
    let back = Profile::diff(&after, &before, Metric::OnCpuSamples);
    assert_eq!(back.function("main").unwrap().total_delta(), -7);
    assert_eq!(back.stacks.len(), 5);
}

#[test]
fn state_filter_keeps_only_the_chosen_off_cpu_states() {
    use rover_core::profile::OffCpuState::*;
    let mut p = ProfileBuilder::new();
    let k = kernel(&["schedule"]);
    off_cpu(
        &mut p,
        10,
        "app",
        &k,
        &user(&["read", "main"]),
        (Uninterruptible, 4, 4_000),
    );
    off_cpu(
        &mut p,
        10,
        "app",
        &k,
        &user(&["read", "main"]),
        (Interruptible, 1, 1_000),
    );
    off_cpu(
        &mut p,
        10,
        "app",
        &k,
        &user(&["poll", "main"]),
        (Interruptible, 9, 9_000),
    );
    on_cpu(&mut p, 10, "app", &[], &user(&["work", "main"]), 3);
    let p = p.build();
    let disk = p.filter_states(&[Uninterruptible]);
    assert_eq!(disk.total(Metric::OffCpuNanos), 4_000);
    assert_eq!(disk.total(Metric::OffCpuSwitches), 4);
    assert_eq!(
        disk.total(Metric::OnCpuSamples),
        3,
        "on-CPU samples are untouched"
    );
    assert!(
        disk.filter_function("poll").is_empty(),
        "rows left empty are dropped"
    );
    assert_eq!(
        p.filter_states(&OffCpuState::ALL)
            .total(Metric::OffCpuNanos),
        14_000
    );
}

#[test]
fn diff_lists_each_printed_stack_once_and_debug_shows_names() {
    // Before: spin at two lines (4 + 1) and in kernel; after: spin at a
    // third line, 8. The printed stacks: main;spin and main;spin;tick_[k].
    let at = |line: u32| [sym_at("spin", APP, "busy.c", line), sym("main", APP)];
    let mut before = ProfileBuilder::new();
    on_cpu(&mut before, 10, "busy", &[], &at(1), 4);
    on_cpu(&mut before, 11, "busy", &[], &at(2), 1);
    on_cpu(&mut before, 11, "busy", &kernel(&["tick"]), &at(2), 2);
    let mut after = ProfileBuilder::new();
    on_cpu(&mut after, 20, "busy", &[], &at(3), 8);
    let (before, after) = (before.build(), after.build());
    let diff = Profile::diff(&before, &after, Metric::OnCpuSamples);
    let stacks: Vec<(Vec<&str>, u64, u64)> = diff
        .stacks
        .iter()
        .map(|d| {
            (
                d.frames.iter().map(String::as_str).collect(),
                d.before,
                d.after,
            )
        })
        .collect();
    assert_eq!(
        stacks,
        [
            (vec!["spin", "main"], 5, 8),
            (vec!["tick_[k]", "spin", "main"], 2, 0),
        ]
    );
    let f = diff.function("spin").unwrap();
    assert_eq!(
        (f.self_before, f.self_after, f.total_before, f.total_after),
        (5, 8, 7, 8)
    );
    let debug = format!("{diff:?}");
    assert!(
        debug.contains("\"tick_[k]\", \"spin\", \"main\""),
        "{debug}"
    );
    assert!(
        !debug.contains("tables") && !debug.contains("StackId"),
        "{debug}"
    );
}

#[test]
fn process_summaries_add_up_per_process_most_first() {
    use rover_core::profile::{OffCpuState::*, ProcessSummary};
    let mut p = ProfileBuilder::new();
    p.sampling_frequency(100);
    // pid 10 "app": 5 + 2 samples on two threads, and 1.5 ms blocked
    // over 3 switches in two states.
    sample_of(&mut p, 10, 10, "app", &["work", "main"], 5);
    sample_of(&mut p, 10, 11, "app", &["fib", "main"], 2);
    off_cpu(
        &mut p,
        10,
        "app",
        &[],
        &user(&["read"]),
        (Interruptible, 2, 1_000_000),
    );
    off_cpu(
        &mut p,
        11,
        "app",
        &[],
        &user(&["read"]),
        (Uninterruptible, 1, 500_000),
    );
    // pid 20 "db": 9 samples, nothing blocked.
    sample_of(&mut p, 20, 20, "db", &["scan"], 9);
    // pid 30 "idle": no samples, 4 ms blocked once.
    p.add_sample(&Sample {
        pid: 30,
        tid: 30,
        process_name: "idle",
        comm: "idle",
        kernel: &[],
        user: &user(&["poll"]),
        value: SampleValue::OffCpu {
            state: Interruptible,
            switches: 1,
            nanos: 4_000_000,
        },
    });
    let p = p.build();
    let summary = |pid, name: &str, samples, cpu, nanos, switches| ProcessSummary {
        pid,
        name: name.to_string(),
        on_cpu_samples: samples,
        on_cpu_nanos: cpu,
        off_cpu_nanos: nanos,
        off_cpu_switches: switches,
    };
    // At 100 Hz a sample is 10 ms of CPU.
    assert_eq!(
        p.process_summaries(),
        [
            summary(20, "db", 9, Some(90_000_000), 0, 0),
            summary(10, "app", 7, Some(70_000_000), 1_500_000, 3),
            summary(30, "idle", 0, Some(0), 4_000_000, 1),
        ]
    );
    // Only off-CPU rows left: no CPU time, ranked by time blocked.
    let blocked = p.filter_states(&OffCpuState::ALL).filter_function("read");
    let mut idle = ProfileBuilder::new();
    off_cpu(
        &mut idle,
        12,
        "app",
        &[],
        &user(&["poll"]),
        (Preempted, 5, 100),
    );
    let merged = Profile::merged([&blocked, &idle.build()]);
    let s = merged.process_summaries();
    assert_eq!(s, [summary(10, "app", 0, Some(0), 1_500_100, 8)]);
    let mut no_hz = ProfileBuilder::new();
    sample_of(&mut no_hz, 10, 10, "app", &["work"], 3);
    assert_eq!(no_hz.build().process_summaries()[0].on_cpu_nanos, None);
}
