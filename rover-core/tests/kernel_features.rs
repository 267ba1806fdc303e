//! The kernel's eBPF features as rover probes them, held against the
//! kernel's version, and what each session mode does on this kernel: works,
//! falls back, or is refused by name, with BTF and with BTF hidden.
//!
//! Both tests print greppable lines, which the VM runs on each kernel
//! collect (run with `--nocapture` to see them):
//!
//! - `rover-kernel: <release>`
//! - `rover-feature: <name>: <yes|no|unknown: reason>`, one per
//!   [`KernelFeature`], named by [`KernelFeature::name`]
//! - `rover-mode: <mode>: <works|falls back to X|refused: message>` for
//!   `on-CPU`, `off-CPU hook auto` (`works, with tp_btf` when it picked that hook),
//!   `off-CPU hook tp_btf`, `off-CPU hook tracepoint`, and the same four
//!   with ` (BTF hidden)`; `unwinder on-CPU Dwarf`, `unwinder on-CPU Auto`,
//!   `unwinder off-CPU hook tp_btf`, `unwinder off-CPU hook tracepoint`.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rover_core::loader::{
    Environment, OffCpuConfig, OffCpuProgram, OnCpuConfig, OnCpuProgram, Targets,
};
use rover_core::profile::{Metric, SampleValue};
use rover_core::{Error, KernelFeature, KernelFeatures, OffCpuHook, StackMode, Support};
use support::kernel;

/// What a session mode did on this kernel.
enum Outcome {
    Works,
    /// Works, with the hook it picked by itself.
    WorksWith(&'static str),
    FallsBack(&'static str),
    Refused(Error),
    /// Attached, but the program counted nothing: a failure.
    CountedNothing,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Works => f.write_str("works"),
            Outcome::WorksWith(hook) => write!(f, "works, with {hook}"),
            Outcome::FallsBack(to) => write!(f, "falls back to {to}"),
            // One line, however many causes the message has.
            Outcome::Refused(error) => write!(
                f,
                "refused: {}",
                error
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Outcome::CountedNothing => f.write_str("attached, but counted nothing"),
        }
    }
}

/// Prints the mode's line before anything is asserted of it, so that a
/// failing run still reports it.
fn report(mode: &str, outcome: &Outcome) {
    println!("rover-mode: {mode}: {outcome}");
}

/// Runs this thread on CPU for `duration`.
fn spin(duration: Duration) {
    let end = Instant::now() + duration;
    let mut sink = 0u64;
    while Instant::now() < end {
        for i in 0..10_000u64 {
            sink = std::hint::black_box(sink.wrapping_add(i));
        }
    }
}

/// Takes this thread off CPU a few times.
fn block() {
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The on-CPU program on this process while it spins for 200 ms.
fn on_cpu(frequency_hz: u64) -> Outcome {
    let attached = OnCpuProgram::attach(&OnCpuConfig {
        targets: Targets::Pids(vec![std::process::id()]),
        frequency_hz,
        ..OnCpuConfig::default()
    });
    let mut program = match attached {
        Ok(program) => program,
        Err(error) => return Outcome::Refused(error),
    };
    spin(Duration::from_millis(200));
    let window = program.drain().unwrap();
    let samples: u64 = window
        .entries
        .iter()
        .map(|entry| match entry.value {
            SampleValue::OnCpu { samples } => samples,
            SampleValue::OffCpu { .. } => 0,
        })
        .sum();
    println!("on-CPU: {samples} samples in 200 ms at {frequency_hz} Hz");
    if samples == 0 {
        Outcome::CountedNothing
    } else {
        Outcome::Works
    }
}

/// The off-CPU program on this process while it blocks ten times; the hook
/// it attached to, if it did.
fn off_cpu(hook: Option<OffCpuHook>) -> (Option<OffCpuHook>, Outcome) {
    let attached = OffCpuProgram::attach(&OffCpuConfig {
        targets: Targets::Pids(vec![std::process::id()]),
        hook,
        ..OffCpuConfig::default()
    });
    let mut program = match attached {
        Ok(program) => program,
        Err(error) => return (None, Outcome::Refused(error)),
    };
    block();
    let window = program.drain().unwrap();
    let switches: u64 = window
        .entries
        .iter()
        .map(|entry| match entry.value {
            SampleValue::OffCpu { switches, .. } => switches,
            SampleValue::OnCpu { .. } => 0,
        })
        .sum();
    let attached = program.hook();
    println!("off-CPU, hook {hook:?}: attached to {attached:?}, {switches} blocks");
    let outcome = match (switches, attached) {
        (0, _) => Outcome::CountedNothing,
        (_, OffCpuHook::Tracepoint) if hook.is_none() => {
            Outcome::FallsBack("the classic tracepoint")
        }
        (_, OffCpuHook::BtfTracepoint) if hook.is_none() => Outcome::WorksWith("tp_btf"),
        _ => Outcome::Works,
    };
    (Some(attached), outcome)
}

fn has_all(features: &KernelFeatures, needed: &[KernelFeature]) -> bool {
    needed.iter().all(|feature| features.has(*feature))
}

/// What each off-CPU hook needs, in the order the loader checks it.
const BTF_HOOK: [KernelFeature; 5] = [
    KernelFeature::Btf,
    KernelFeature::ProbeReadKernel,
    KernelFeature::GetStackid,
    KernelFeature::BtfTracepoints,
    KernelFeature::GetTaskStack,
];
const CLASSIC_HOOK: [KernelFeature; 6] = [
    KernelFeature::Btf,
    KernelFeature::ProbeReadKernel,
    KernelFeature::GetStackid,
    KernelFeature::TracepointPrograms,
    KernelFeature::GetStack,
    KernelFeature::Tracefs,
];

/// Features whose first upstream kernel is known must be there exactly on
/// the kernels from that one on: Debian's kernels backport no eBPF feature,
/// so on them a mismatch is a wrong probe (on a kernel that does backport,
/// such as RHEL's, this test would rightly complain).
#[test]
fn features_agree_with_the_kernel_version() {
    let Some(_lock) = kernel("features_agree_with_the_kernel_version") else {
        return;
    };
    let features = Environment::check().unwrap().features;
    println!("rover-kernel: {}", features.release());
    let report = features.to_string();
    for line in report.lines() {
        println!("rover-feature: {line}");
    }
    assert_eq!(report.lines().count(), KernelFeature::ALL.len(), "{report}");
    let version = features
        .version()
        .unwrap_or_else(|| panic!("release {:?} has no version", features.release()));
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    assert_eq!(features.has(KernelFeature::Btf), btf);
    let mut wrong = Vec::new();
    for (feature, support) in features.iter() {
        // The versions are x86-64's; other architectures got some later.
        let Some(since) = feature.since().filter(|_| cfg!(target_arch = "x86_64")) else {
            continue;
        };
        let expected = version >= since && (feature != KernelFeature::BtfTracepoints || btf);
        if *support != Support::from(expected) {
            wrong.push(format!("{feature} (Linux {since}+): {support}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "on {} (version {version}) the probes disagree with the version: {wrong:?}",
        features.release()
    );
    // Probed once: a second check finds the same.
    assert_eq!(Environment::check().unwrap().features, features);
}

#[test]
fn each_session_mode_works_falls_back_or_is_refused() {
    let Some(_lock) = kernel("each_session_mode_works_falls_back_or_is_refused") else {
        return;
    };
    let environment = Environment::check().unwrap();
    let features = &environment.features;
    println!("rover-kernel: {}", features.release());

    let outcome = on_cpu(environment.max_sample_rate.min(499));
    report("on-CPU", &outcome);
    let on_cpu_needs = [KernelFeature::PerfEventPrograms, KernelFeature::GetStackid];
    if has_all(features, &on_cpu_needs) {
        assert!(matches!(outcome, Outcome::Works), "{outcome}");
    }

    let (hook, outcome) = off_cpu(None);
    report("off-CPU hook auto", &outcome);
    assert!(!matches!(outcome, Outcome::CountedNothing));
    if has_all(features, &BTF_HOOK) || has_all(features, &CLASSIC_HOOK) {
        assert!(hook.is_some(), "{outcome}");
    }
    if has_all(features, &BTF_HOOK) {
        assert_eq!(
            hook,
            Some(OffCpuHook::BtfTracepoint),
            "features:\n{features}"
        );
    } else if BTF_HOOK.iter().any(|f| features.support(*f).is_no())
        && has_all(features, &CLASSIC_HOOK)
    {
        assert_eq!(hook, Some(OffCpuHook::Tracepoint), "features:\n{features}");
    }

    for (mode, hook, needed) in [
        (
            "off-CPU hook tp_btf",
            OffCpuHook::BtfTracepoint,
            &BTF_HOOK[..],
        ),
        (
            "off-CPU hook tracepoint",
            OffCpuHook::Tracepoint,
            &CLASSIC_HOOK[..],
        ),
    ] {
        let (attached, outcome) = off_cpu(Some(hook));
        report(mode, &outcome);
        assert!(!matches!(outcome, Outcome::CountedNothing));
        assert!(attached.is_none() || attached == Some(hook), "{attached:?}");
        let missing = needed.iter().find(|f| features.support(**f).is_no());
        match (&outcome, missing) {
            (Outcome::Refused(error), _) if has_all(features, needed) => {
                panic!("{mode} refused with every feature it needs: {error}")
            }
            // Refused by the name of what is missing, before loading.
            (Outcome::Refused(error), Some(KernelFeature::Btf)) => {
                assert!(matches!(error, Error::NoBtf), "{error}")
            }
            (Outcome::Refused(error), Some(KernelFeature::Tracefs)) => {
                assert!(matches!(error, Error::NoTracefs), "{error}")
            }
            (Outcome::Refused(error), Some(feature)) => assert!(
                matches!(error, Error::Unsupported { feature: f, .. } if f == feature)
                    && error.to_string().contains(feature.name()),
                "{error}"
            ),
            // Some feature unknown: the load decided.
            (Outcome::Refused(_), None) => {}
            (_, Some(feature)) => panic!("{mode} attached without {feature}"),
            (_, None) => {}
        }
    }
}

/// The in-kernel unwinder on each program and hook: `Dwarf` works exactly
/// where the kernel has what it needs (5.10+, BTF), and `Auto` then runs it
/// too rather than falling back in silence; elsewhere `Dwarf` is refused by
/// name and `Auto` falls back, saying why.
#[test]
fn the_unwinder_runs_wherever_the_kernel_has_what_it_needs() {
    let Some(_lock) = kernel("the_unwinder_runs_wherever_the_kernel_has_what_it_needs") else {
        return;
    };
    let environment = Environment::check().unwrap();
    let features = &environment.features;
    let version = features.version().expect("a kernel version");
    let can = version >= rover_core::loader::MIN_UNWIND_KERNEL
        && has_all(
            features,
            &[KernelFeature::Btf, KernelFeature::ProbeReadKernel],
        );
    let me = std::process::id();
    for stack_mode in [StackMode::Dwarf, StackMode::Auto] {
        let attached = OnCpuProgram::attach(&OnCpuConfig {
            targets: Targets::Pids(vec![me]),
            stack_mode,
            ..OnCpuConfig::default()
        });
        let outcome = match &attached {
            Ok(program) if program.unwinder().is_some() => "works".to_owned(),
            Ok(program) => format!("falls back to frame pointers: {:?}", program.fallback()),
            Err(error) => format!("refused: {error}"),
        };
        println!("rover-mode: unwinder on-CPU {stack_mode:?}: {outcome}");
        assert_eq!(
            attached.as_ref().is_ok_and(|p| p.unwinder().is_some()),
            can,
            "{outcome}"
        );
        if !can {
            assert_eq!(attached.is_ok(), stack_mode == StackMode::Auto, "{outcome}");
        }
    }
    for hook in [OffCpuHook::BtfTracepoint, OffCpuHook::Tracepoint] {
        let attached = OffCpuProgram::attach(&OffCpuConfig {
            targets: Targets::Pids(vec![me]),
            hook: Some(hook),
            stack_mode: StackMode::Dwarf,
            ..OffCpuConfig::default()
        });
        let outcome = match &attached {
            Ok(program) if program.unwinder().is_some() => "works".to_owned(),
            Ok(_) => "attached without the unwinder".to_owned(),
            Err(error) => format!("refused: {error}"),
        };
        let name = match hook {
            OffCpuHook::BtfTracepoint => "tp_btf",
            OffCpuHook::Tracepoint => "tracepoint",
        };
        println!("rover-mode: unwinder off-CPU hook {name}: {outcome}");
        let hook_needs: &[KernelFeature] = match hook {
            OffCpuHook::BtfTracepoint => &BTF_HOOK,
            OffCpuHook::Tracepoint => &CLASSIC_HOOK,
        };
        if can && has_all(features, hook_needs) {
            assert!(
                attached.as_ref().is_ok_and(|p| p.unwinder().is_some()),
                "{outcome}"
            );
        }
        if !can {
            assert!(attached.is_err(), "{outcome}");
        }
    }
}

const HIDDEN_BTF_CHILD: &str = "ROVER_TEST_HIDDEN_BTF_CHILD";

/// Runs `hidden_btf_child` in a copy of this test binary, in a mount
/// namespace of its own where an empty tmpfs covers `/sys/kernel/btf`.
#[test]
fn without_btf_on_cpu_works_and_off_cpu_refuses() {
    let test = "without_btf_on_cpu_works_and_off_cpu_refuses";
    let Some(_lock) = kernel(test) else {
        return;
    };
    let host_btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    // Without BTF there may be no folder to cover, and nothing to hide.
    let hide = Path::new("/sys/kernel/btf").is_dir();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "hidden_btf_child", "--ignored", "--nocapture"])
        .env(HIDDEN_BTF_CHILD, "1");
    // SAFETY: unshare and mount are async-signal-safe, and their arguments
    // are static strings: the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let check = |result: libc::c_int| {
                if result == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Private, so that the tmpfs stays in this namespace.
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            if hide {
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/sys/kernel/btf".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ))?;
            }
            Ok(())
        });
    }
    let output = match command.output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            testkit::skip(
                test,
                format!("cannot hide BTF in a mount namespace: {error}"),
            );
            return;
        }
        Err(error) => panic!("spawning the child: {error}"),
    };
    let stdout = support::child_passed(&output);
    assert!(
        stdout.contains("rover-mode: on-CPU (BTF hidden): works"),
        "{stdout}"
    );
    assert_eq!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        host_btf,
        "the tmpfs came out of the child's mount namespace"
    );
}

/// Only run by `without_btf_on_cpu_works_and_off_cpu_refuses`, with BTF hidden.
#[test]
#[ignore = "run by without_btf_on_cpu_works_and_off_cpu_refuses with BTF hidden"]
fn hidden_btf_child() {
    assert_eq!(
        std::env::var(HIDDEN_BTF_CHILD).as_deref(),
        Ok("1"),
        "this test only makes sense in the child"
    );
    assert!(!Path::new("/sys/kernel/btf/vmlinux").exists());
    // The checks pass: BTF is no longer the profiler's requirement.
    let profiler = rover_core::Profiler::new().unwrap();
    let features = profiler.kernel_features();
    println!("rover-kernel: {} (BTF hidden)", features.release());
    assert_eq!(features.support(KernelFeature::Btf), &Support::No);
    assert_eq!(
        features.support(KernelFeature::BtfTracepoints),
        &Support::No
    );

    let frequency = profiler.environment().max_sample_rate.min(499);
    let outcome = match profiler
        .on_cpu()
        .pids([std::process::id()])
        .frequency(frequency)
        .start()
    {
        Ok(session) => {
            spin(Duration::from_millis(200));
            let profile = session.stop_blocking().unwrap();
            let samples = profile.total(Metric::OnCpuSamples);
            println!("on-CPU session without BTF: {samples} samples");
            if samples == 0 {
                Outcome::CountedNothing
            } else {
                Outcome::Works
            }
        }
        Err(error) => Outcome::Refused(error),
    };
    report("on-CPU (BTF hidden)", &outcome);
    assert!(matches!(outcome, Outcome::Works), "{outcome}");

    for (mode, hook) in [
        ("off-CPU hook auto (BTF hidden)", None),
        (
            "off-CPU hook tp_btf (BTF hidden)",
            Some(OffCpuHook::BtfTracepoint),
        ),
        (
            "off-CPU hook tracepoint (BTF hidden)",
            Some(OffCpuHook::Tracepoint),
        ),
    ] {
        let mut builder = profiler.off_cpu().pids([std::process::id()]);
        if let Some(hook) = hook {
            builder = builder.hook(hook);
        }
        let outcome = match builder.start() {
            Ok(session) => {
                drop(session);
                Outcome::Works
            }
            Err(error) => Outcome::Refused(error),
        };
        report(mode, &outcome);
        match &outcome {
            Outcome::Refused(error @ Error::NoBtf) => {
                let message = error.to_string();
                assert!(
                    message.contains("BTF") && message.contains("CONFIG_DEBUG_INFO_BTF"),
                    "{message}"
                );
            }
            other => panic!("{mode}: {other}, not refused for want of BTF"),
        }
    }
}
