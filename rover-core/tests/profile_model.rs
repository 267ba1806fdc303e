//! The profile model through its public builder API: interning, frame
//! conversion from `rover-symbolize` results, values and memory use.

mod profile_support;

use profile_support::*;
use rover_core::profile::{
    FrameKind, Metric, OffCpuState, Profile, ProfileBuilder, ProfileKind, Sample, SampleValue,
};

#[test]
fn samples_aggregate_per_thread_and_stack() {
    let mut p = ProfileBuilder::new();
    let stack = user(&["work", "main"]);
    on_cpu(&mut p, 10, "app", &[], &stack, 2);
    on_cpu(&mut p, 10, "app", &[], &stack, 3);
    on_cpu(&mut p, 11, "worker", &[], &stack, 4);
    let p = p.build();
    assert_eq!(p.len(), 2, "two threads, one stack");
    assert_eq!(p.stack_count(), 1);
    assert_eq!(p.frame_count(), 2);
    assert_eq!(p.total(Metric::OnCpuSamples), 9);
    assert!(p.has_kind(ProfileKind::OnCpu));
    assert!(!p.has_kind(ProfileKind::OffCpu));
    let rows: Vec<_> = p.entries().collect();
    assert_eq!(rows[0].value.samples, 5);
    assert_eq!(rows[1].value.samples, 4);
    let t = p.thread(rows[1].thread).unwrap();
    assert_eq!(
        (t.pid, t.tid, t.comm, t.process_name),
        (10, 11, "worker", "app")
    );
    let names: Vec<_> = p
        .stack(rows[0].stack)
        .iter()
        .map(|&f| p.frame(f).unwrap().name)
        .collect();
    assert_eq!(names, ["work", "main"], "stacks are leaf first");
}

#[test]
fn kernel_frames_come_before_user_frames_and_inlined_frames_expand() {
    let mut p = ProfileBuilder::new();
    let k = kernel(&["clear_page", "do_syscall_64"]);
    let u = vec![
        sym_inlined("outer", APP, &["inner", "middle"]),
        sym_at("main", APP, "main.c", 7),
    ];
    on_cpu(&mut p, 10, "app", &k, &u, 1);
    let p = p.build();
    let e = p.entries().next().unwrap();
    let frames: Vec<_> = p
        .stack(e.stack)
        .iter()
        .map(|&f| p.frame(f).unwrap())
        .collect();
    let names: Vec<_> = frames.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "clear_page",
            "do_syscall_64",
            "inner",
            "middle",
            "outer",
            "main"
        ]
    );
    let kinds: Vec<_> = frames.iter().map(|f| f.kind).collect();
    assert_eq!(kinds[..2], [FrameKind::Kernel, FrameKind::Kernel]);
    assert!(kinds[2..].iter().all(|&k| k == FrameKind::Native));
    let inlined: Vec<_> = frames.iter().map(|f| f.inlined).collect();
    assert_eq!(inlined, [false, false, true, true, false, false]);
    assert_eq!((frames[2].file, frames[2].line), (Some("inl.h"), Some(10)));
    assert_eq!(
        (frames[4].file, frames[4].line),
        (Some("outer.c"), Some(99))
    );
    assert_eq!((frames[5].file, frames[5].line), (Some("main.c"), Some(7)));
    assert_eq!(frames[0].module, Some(KERNEL));
}

#[test]
fn unknown_frames_keep_module_offset_and_reason() {
    let mut p = ProfileBuilder::new();
    on_cpu(
        &mut p,
        10,
        "app",
        &[],
        &[unknown(Some("/lib/libx.so"), 0x1234), unknown(None, 0xdead)],
        1,
    );
    let p = p.build();
    let e = p.entries().next().unwrap();
    let f: Vec<_> = p
        .stack(e.stack)
        .iter()
        .map(|&f| p.frame(f).unwrap())
        .collect();
    assert_eq!(f[0].kind, FrameKind::Unknown);
    assert_eq!(f[0].display_name(), "[/lib/libx.so+0x1234]");
    assert_eq!(f[0].reason, Some("no symbols"));
    assert_eq!(f[1].display_name(), "[unknown]");
    assert_eq!(f[1].reason, Some("unmapped"));
}

#[test]
fn jit_frames_are_told_by_their_origin() {
    let mut p = ProfileBuilder::new();
    let jitted = vec![jit("LazyCompile:*fib"), sym("main", APP)];
    // The same name and module, but found as native code.
    let native = vec![sym("LazyCompile:*fib", PERF_MAP), sym("main", APP)];
    let sample = |user| Sample {
        pid: 10,
        tid: 10,
        process_name: "node",
        comm: "node",
        kernel: &[],
        user,
        value: SampleValue::OnCpu { samples: 1 },
    };
    p.add_sample(&sample(&jitted));
    p.add_sample(&sample(&jitted));
    p.add_sample(&sample(&native));
    let p = p.build();
    let kinds: Vec<Vec<FrameKind>> = p
        .entries()
        .map(|e| {
            p.stack(e.stack)
                .iter()
                .map(|&f| p.frame(f).unwrap().kind)
                .collect()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            vec![FrameKind::Jit, FrameKind::Native],
            vec![FrameKind::Native, FrameKind::Native]
        ]
    );
    assert_eq!(
        p.entries().next().unwrap().value.samples,
        2,
        "the two JIT samples share a row"
    );
}

#[test]
fn one_stack_shared_by_many_threads_is_interned_once() {
    let mut p = ProfileBuilder::new();
    let k = kernel(&["schedule"]);
    let u = user(&["read", "main"]);
    for tid in 0..8 {
        p.add_sample(&Sample {
            pid: 10,
            tid: 100 + tid,
            process_name: "app",
            comm: "io",
            kernel: &k,
            user: &u,
            value: SampleValue::OffCpu {
                state: OffCpuState::Uninterruptible,
                switches: 2,
                nanos: 1_000,
            },
        });
    }
    let p = p.build();
    assert_eq!(p.stack_count(), 1);
    assert_eq!(p.len(), 8);
    assert_eq!(p.total(Metric::OffCpuSwitches), 16);
    assert_eq!(p.total(Metric::OffCpuNanos), 8_000);
    assert!(p.has_kind(ProfileKind::OffCpu));
    let v = p.entries().next().unwrap().value;
    assert_eq!(v.off_cpu(OffCpuState::Uninterruptible).nanos, 1_000);
    assert_eq!(v.off_cpu(OffCpuState::Interruptible).nanos, 0);
}

#[test]
fn a_built_profile_keeps_its_kind_time_range_frequency_and_build_ids() {
    let mut b = ProfileBuilder::new();
    b.kind(ProfileKind::OnCpu)
        .time_range(300, 200)
        .sampling_frequency(0)
        .build_id(APP, "beef");
    let p = b.build();
    assert!(p.is_empty());
    assert!(p.has_kind(ProfileKind::OnCpu) && !p.has_kind(ProfileKind::OffCpu));
    assert_eq!(
        p.time_range(),
        Some((300, 300)),
        "an end before the start reads as the start"
    );
    assert_eq!(p.sampling_frequency(), None, "0 Hz means unknown");
    assert_eq!(p.build_id(APP), Some("beef"));
    assert_eq!(p.build_ids().collect::<Vec<_>>(), [(APP, "beef")]);
    let mut b = ProfileBuilder::new();
    b.sampling_frequency(99);
    assert_eq!(b.build().sampling_frequency(), Some(99));
}

#[test]
fn hundred_thousand_samples_over_two_thousand_stacks_stay_small() {
    // 2k distinct stacks of depth 6..=25 over 40 functions in 4 modules,
    // 100k samples spread over 16 threads: realistic for a busy window.
    let modules = [
        "/usr/bin/app",
        "/usr/lib/libc.so.6",
        "/usr/lib/libssl.so.3",
        "[kernel.kallsyms]",
    ];
    let funcs: Vec<String> = (0..40)
        .map(|i| format!("namespace::module::function_number_{i}"))
        .collect();
    let stacks: Vec<Vec<rover_symbolize::Symbolized>> = (0..2000u64)
        .map(|s| {
            let depth = 6 + (s % 20) as usize;
            (0..depth)
                .map(|d| {
                    // The three leaf frames spell `s` in base 40, so stacks are distinct.
                    let f = match d {
                        0 => s % 40,
                        1 => s / 40 % 40,
                        2 => s / 1600,
                        _ => (s * 7 + d as u64 * 13) % 40,
                    } as usize;
                    sym(&funcs[f], modules[(f + d) % 3])
                })
                .collect()
        })
        .collect();
    let mut p = ProfileBuilder::new();
    for i in 0..100_000u64 {
        let s = &stacks[(i * 7919 % 2000) as usize];
        let tid = 10 + (i / 7 % 16) as u32;
        on_cpu(&mut p, tid, "app", &[], s, 1);
    }
    let p = p.build();
    assert_eq!(p.total(Metric::OnCpuSamples), 100_000);
    let bytes = p.memory_bytes();
    println!(
        "100k samples: {} rows, {} stacks, {} frames, {} bytes ({:.1} bytes/sample)",
        p.len(),
        p.stack_count(),
        p.frame_count(),
        bytes,
        bytes as f64 / 100_000.0
    );
    assert_eq!(p.stack_count(), 2000);
    // Each stack's ids (~16 * 4 B) plus a row per (thread, stack) pair
    // (8 B of samples and ~13 B of key and index): about 0.5 MB. A model
    // storing strings per frame would need tens of megabytes.
    assert!(bytes < 1 << 20, "profile uses {bytes} bytes");
}

#[test]
fn profiles_cross_threads_and_streams() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Profile>();
}

#[test]
fn ids_from_another_profile_read_as_absent_not_a_panic() {
    let mut big = ProfileBuilder::new();
    on_cpu(&mut big, 10, "app", &[], &user(&["a", "b", "c"]), 1);
    let big = big.build();
    let small = rover_core::Profile::new();
    let e = big.entries().next().unwrap();
    assert!(small.thread(e.thread).is_none());
    assert!(small.stack(e.stack).is_empty());
    assert!(small.frame(big.stack(e.stack)[2]).is_none());
    // Folded export and top-N over an empty profile are empty, not errors.
    assert!(
        rover_core::export::folded_lines(&small, &rover_core::export::FoldedOptions::on_cpu())
            .is_empty()
    );
    assert!(
        small
            .top_functions(
                Metric::OnCpuSamples,
                rover_core::profile::TopOrder::TotalValue,
                5
            )
            .is_empty()
    );
    let mut pprof = Vec::new();
    rover_core::export::write_pprof(&small, &mut pprof).unwrap();
    assert!(!pprof.is_empty());
}

#[test]
fn on_cpu_and_off_cpu_rows_mix_in_any_order() {
    let mut p = ProfileBuilder::new();
    let a = user(&["a", "main"]);
    let b = user(&["b", "main"]);
    let c = user(&["c", "main"]);
    on_cpu(&mut p, 10, "app", &[], &a, 4);
    off_cpu(&mut p, 10, "app", &[], &b, (OffCpuState::Preempted, 2, 300));
    on_cpu(&mut p, 10, "app", &[], &c, 5);
    off_cpu(&mut p, 10, "app", &[], &a, (OffCpuState::Other, 1, 50));
    let p = p.build();
    let rows: Vec<_> = p
        .entries()
        .map(|e| (e.value.samples, e.value.get(Metric::OffCpuNanos)))
        .collect();
    assert_eq!(rows, [(4, 50), (0, 300), (5, 0)]);
    assert_eq!(p.total(Metric::OnCpuSamples), 9);
    assert_eq!(p.total(Metric::OffCpuNanos), 350);
    assert_eq!(p.total(Metric::OffCpuSwitches), 3);
    assert!(p.has_kind(ProfileKind::OnCpu) && p.has_kind(ProfileKind::OffCpu));
}

#[test]
fn file_build_ids_are_recorded_from_the_frames_modules() {
    use rover_symbolize::{BuildId, Module, Origin, Symbolized};
    let with_id = |symbolized: Symbolized, id: &[u8]| {
        let Symbolized::Sym(mut s) = symbolized else {
            unreachable!()
        };
        s.module = Module::new(s.module.name(), Some(BuildId::new(id)));
        Symbolized::Sym(s)
    };
    let mut p = ProfileBuilder::new();
    let u = [with_id(sym("main", APP), &[0xab, 0x01])];
    // A kernel frame's module with a build id is not a file mapping.
    let k = [with_id(sym("schedule", KERNEL), &[0xff])];
    assert!(matches!(&k[0], Symbolized::Sym(s) if s.origin == Origin::Kernel));
    on_cpu(&mut p, 10, "app", &k, &u, 1);
    on_cpu(&mut p, 11, "app", &k, &u, 1);
    let p = p.build();
    assert_eq!(p.build_id(APP), Some("ab01"));
    assert_eq!(p.build_id(KERNEL), None);
    assert_eq!(p.build_ids().collect::<Vec<_>>(), [(APP, "ab01")]);
}
