//! Folded-stack export: line by line against a hand-built profile, and read
//! back by `inferno`'s flame graph renderer.

mod profile_support;

use profile_support::*;
use rover_core::export::{FoldedOptions, FoldedPrefix, folded_lines, write_folded};
use rover_core::profile::{Metric, OffCpuState, Profile, ProfileBuilder, Sample, SampleValue};

fn on_cpu_profile() -> Profile {
    let mut p = ProfileBuilder::new();
    on_cpu(&mut p, 10, "app", &[], &user(&["work", "main"]), 5);
    // Same comm on two threads: one line, values added.
    let k = kernel(&["clear_page", "do_syscall_64"]);
    on_cpu(&mut p, 11, "worker", &k, &user(&["write", "main"]), 2);
    on_cpu(&mut p, 12, "worker", &k, &user(&["write", "main"]), 1);
    let inl = [sym_inlined("outer", APP, &["inner"]), sym("main", APP)];
    on_cpu(&mut p, 10, "app", &[], &inl, 3);
    on_cpu(
        &mut p,
        10,
        "app",
        &[],
        &[
            unknown(Some("/lib/libx.so"), 0x1234),
            unknown(None, 7),
            sym("main", APP),
        ],
        1,
    );
    on_cpu(&mut p, 10, "app", &[], &user(&["ops;x\ny", "main"]), 6);
    let jit = [jit("LazyCompile:*fib"), sym("main", APP)];
    p.add_sample(&Sample {
        pid: 10,
        tid: 13,
        process_name: "app",
        comm: "node;js",
        kernel: &[],
        user: &jit,
        value: SampleValue::OnCpu { samples: 4 },
    });
    // Off-CPU values in the same profile must not leak into on-CPU lines.
    off_cpu(
        &mut p,
        10,
        "app",
        &kernel(&["schedule"]),
        &user(&["read", "main"]),
        (OffCpuState::Interruptible, 1, 10),
    );
    p.build()
}

#[test]
fn on_cpu_lines_are_root_first_with_suffixes_and_sanitized_names() {
    let lines = folded_lines(&on_cpu_profile(), &FoldedOptions::on_cpu());
    let expected = [
        "app;main;[unknown];[/lib/libx.so+0x1234] 1",
        "app;main;ops:x y 6",
        "app;main;outer;inner_[i] 3",
        "app;main;work 5",
        "node:js;main;LazyCompile:*fib_[j] 4",
        "worker;main;write;do_syscall_64_[k];clear_page_[k] 3",
    ];
    assert_eq!(lines, expected);
}

#[test]
fn prefixes_can_be_process_pid_or_none() {
    let p = on_cpu_profile();
    let lines = folded_lines(
        &p,
        &FoldedOptions {
            metric: Metric::OnCpuSamples,
            prefix: FoldedPrefix::ProcessPid,
        },
    );
    assert!(
        lines.contains(&"app-10;main;work 5".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"app-10;main;write;do_syscall_64_[k];clear_page_[k] 3".to_string()));
    let lines = folded_lines(
        &p,
        &FoldedOptions {
            metric: Metric::OnCpuSamples,
            prefix: FoldedPrefix::None,
        },
    );
    assert!(lines.contains(&"main;work 5".to_string()), "{lines:?}");
    let lines = folded_lines(
        &p,
        &FoldedOptions {
            metric: Metric::OnCpuSamples,
            prefix: FoldedPrefix::Process,
        },
    );
    assert!(
        lines.contains(&"app;main;LazyCompile:*fib_[j] 4".to_string()),
        "{lines:?}"
    );
}

#[test]
fn off_cpu_lines_are_microseconds_or_switches() {
    let mut p = ProfileBuilder::new();
    let k = kernel(&["schedule", "io_schedule"]);
    let u = user(&["read", "main"]);
    // 20 switches of 50 ms, split over two states: 1 s in total.
    off_cpu(
        &mut p,
        10,
        "app",
        &k,
        &u,
        (OffCpuState::Uninterruptible, 15, 750_000_000),
    );
    off_cpu(
        &mut p,
        10,
        "app",
        &k,
        &u,
        (OffCpuState::Interruptible, 5, 250_000_000),
    );
    // 1.4 us rounds to 1; 0.4 us rounds to 0 and the line is left out.
    off_cpu(
        &mut p,
        10,
        "app",
        &kernel(&["schedule"]),
        &user(&["nanosleep", "main"]),
        (OffCpuState::Interruptible, 1, 1_400),
    );
    off_cpu(
        &mut p,
        10,
        "app",
        &kernel(&["schedule"]),
        &user(&["poll", "main"]),
        (OffCpuState::Preempted, 1, 400),
    );
    on_cpu(&mut p, 10, "app", &[], &u, 99);
    let p = p.build();
    let time = folded_lines(&p, &FoldedOptions::off_cpu());
    assert_eq!(
        time,
        [
            "app;main;nanosleep;schedule_[k] 1",
            "app;main;read;io_schedule_[k];schedule_[k] 1000000"
        ]
    );
    let switches = folded_lines(&p, &FoldedOptions::off_cpu_switches());
    assert_eq!(
        switches,
        [
            "app;main;nanosleep;schedule_[k] 1",
            "app;main;poll;schedule_[k] 1",
            "app;main;read;io_schedule_[k];schedule_[k] 20",
        ]
    );
}

#[test]
fn inferno_renders_the_folded_output() {
    let p = on_cpu_profile();
    let mut folded = Vec::new();
    write_folded(&p, &FoldedOptions::on_cpu(), &mut folded).unwrap();
    let text = String::from_utf8(folded).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.ends_with('\n'));
    let mut options = inferno::flamegraph::Options::default();
    let mut svg = Vec::new();
    inferno::flamegraph::from_reader(&mut options, text.as_bytes(), &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    // inferno reads the `_[k]`/`_[i]`/`_[j]` annotations (for colours) and
    // shows the bare names.
    for name in [
        "work",
        "inner",
        "clear_page",
        "LazyCompile:*fib",
        "[/lib/libx.so+0x1234]",
        "ops:x y",
    ] {
        assert!(
            svg.contains(&format!("<title>{name} (")),
            "{name} missing from the SVG"
        );
    }
    assert!(!svg.contains("_[k]"), "annotations were not recognised");
    // inferno's root frame title counts every sample it parsed.
    assert!(
        svg.contains("all (22 samples, 100%)"),
        "inferno did not read all 22 samples"
    );
}

/// Two instances of one program ("busy", pids 10 and 20, threads of one
/// name), whose stacks differ only in what folded lines do not print.
fn two_instances() -> Profile {
    let mut p = ProfileBuilder::new();
    let mut add = |pid: u32, tid: u32, u: &[rover_symbolize::Symbolized], samples: u64| {
        p.add_sample(&Sample {
            pid,
            tid,
            process_name: "busy",
            comm: "busy",
            kernel: &[],
            user: u,
            value: SampleValue::OnCpu { samples },
        });
    };
    // spin_primes at two lines of one file, then at a line of another
    // build of the program (another module path): one printed stack.
    let at = |line: u32, module: &str| {
        vec![
            sym_at("spin_primes", module, "busy.c", line),
            sym_at("main", module, "busy.c", 40),
        ]
    };
    add(10, 10, &at(12, APP), 119);
    add(10, 11, &at(13, APP), 3);
    add(20, 20, &at(12, "/opt/busy/bin/app"), 7);
    // Another stack of the second instance only.
    add(20, 21, &user(&["idle", "main"]), 2);
    p.build()
}

#[test]
fn rows_that_print_the_same_are_one_line_whatever_the_prefix() {
    let p = two_instances();
    assert_eq!(
        p.stack_count(),
        4,
        "the model keeps lines and modules apart"
    );
    let lines = |prefix| {
        folded_lines(
            &p,
            &FoldedOptions {
                prefix,
                ..FoldedOptions::on_cpu()
            },
        )
    };
    assert_eq!(
        lines(FoldedPrefix::Comm),
        ["busy;main;idle 2", "busy;main;spin_primes 129"]
    );
    assert_eq!(
        lines(FoldedPrefix::Process),
        ["busy;main;idle 2", "busy;main;spin_primes 129"]
    );
    assert_eq!(
        lines(FoldedPrefix::None),
        ["main;idle 2", "main;spin_primes 129"]
    );
    // With the pid printed, the instances are apart, each line once.
    assert_eq!(
        lines(FoldedPrefix::ProcessPid),
        [
            "busy-10;main;spin_primes 122",
            "busy-20;main;idle 2",
            "busy-20;main;spin_primes 7",
        ]
    );
}

#[test]
fn off_cpu_rows_that_print_the_same_round_once_after_summing() {
    // 0.3 us + 0.3 us on two lines of `read`: 0.6 us rounds to 1 as one
    // line, where two lines would each round to 0 and vanish.
    let mut p = ProfileBuilder::new();
    for line in [1, 2] {
        off_cpu(
            &mut p,
            10 + line,
            "app",
            &kernel(&["schedule"]),
            &[sym_at("read", APP, "io.c", line), sym("main", APP)],
            (OffCpuState::Interruptible, 1, 300),
        );
    }
    let p = p.build();
    assert_eq!(
        folded_lines(&p, &FoldedOptions::off_cpu()),
        ["app;main;read;schedule_[k] 1"]
    );
    assert_eq!(
        folded_lines(&p, &FoldedOptions::off_cpu_switches()),
        ["app;main;read;schedule_[k] 2"]
    );
}

proptest::proptest! {
    /// Whatever mix of threads, processes, lines and modules, no two folded
    /// lines print the same stack, and the values add up to the total.
    #[test]
    fn no_printed_stack_repeats(
        rows in proptest::collection::vec(
            (
                0u32..3,                                          // pid
                0u32..3,                                          // tid
                proptest::collection::vec((0usize..3, 1u32..4, proptest::bool::ANY), 1..4),
                1u64..50,
            ),
            1..20,
        ),
        prefix in proptest::sample::select(vec![
            FoldedPrefix::Comm,
            FoldedPrefix::Process,
            FoldedPrefix::ProcessPid,
            FoldedPrefix::None,
        ]),
    ) {
        let names = ["a", "b", "c"];
        let mut p = ProfileBuilder::new();
        let mut total = 0;
        for (pid, tid, frames, samples) in &rows {
            let u: Vec<_> = frames
                .iter()
                .map(|&(f, line, other)| {
                    sym_at(names[f], if other { "/other/app" } else { APP }, "x.c", line)
                })
                .collect();
            let comm = ["p", "q", "p"][*tid as usize];
            p.add_sample(&Sample {
                pid: *pid,
                tid: pid * 10 + tid,
                process_name: ["busy", "busy", "calm"][*pid as usize],
                comm,
                kernel: &[],
                user: &u,
                    value: SampleValue::OnCpu { samples: *samples },
            });
            total += samples;
        }
        let p = p.build();
        let lines = folded_lines(&p, &FoldedOptions { prefix, ..FoldedOptions::on_cpu() });
        let mut stacks: Vec<&str> = lines.iter().map(|l| l.rsplit_once(' ').unwrap().0).collect();
        let sum: u64 = lines.iter().map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap()).sum();
        proptest::prop_assert_eq!(sum, total);
        let printed = stacks.len();
        stacks.sort_unstable();
        stacks.dedup();
        proptest::prop_assert_eq!(stacks.len(), printed, "a stack printed twice: {:?}", lines);
    }
}

proptest::proptest! {
    /// Whatever the names (`;`, spaces, line breaks, unicode), every folded
    /// line has one frame field per frame and ends in its value, and the
    /// values add up to the profile's total.
    #[test]
    fn any_names_give_parseable_lines(
        comm in "\\PC{0,12}",
        names in proptest::collection::vec("[a-z;\\n\\r :_\\[\\]é]{0,10}", 1..6),
        samples in 1u64..1000,
    ) {
        let mut p = ProfileBuilder::new();
        let u: Vec<_> = names.iter().map(|n| sym(n, APP)).collect();
        on_cpu(&mut p, 10, &comm, &[], &u, samples);
        let p = p.build();
        let lines = folded_lines(&p, &FoldedOptions::on_cpu());
        proptest::prop_assert_eq!(lines.len(), 1);
        let line = &lines[0];
        proptest::prop_assert!(!line.contains('\n') && !line.contains('\r'));
        let (stack, value) = line.rsplit_once(' ').unwrap();
        proptest::prop_assert_eq!(value.parse::<u64>().unwrap(), samples);
        proptest::prop_assert_eq!(stack.split(';').count(), 1 + names.len());
    }
}
