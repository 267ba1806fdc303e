//! pprof export read back by the real `go tool pprof`.

mod profile_support;

use std::path::Path;
use std::process::Command;

use profile_support::*;
use rover_core::export::write_pprof;
use rover_core::profile::{OffCpuState, Profile, ProfileBuilder};

/// Runs `go tool pprof ARGS FILE` with a private HOME and GOCACHE; `None`
/// (with a printed reason) only when `go` is not installed.
fn pprof(dir: &Path, args: &[&str], file: &Path) -> Option<String> {
    let out = match Command::new("go")
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(file)
        .env("HOME", dir)
        .env("GOCACHE", dir.join("gocache"))
        .env("PPROF_TMPDIR", dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            testkit::skip(&testkit::current_test(), testkit::not_installed("go"));
            return None;
        }
        Err(e) => panic!("running go tool pprof: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go tool pprof failed: {stderr}\n{stdout}"
    );
    println!("go tool pprof {args:?}:\n{stdout}");
    Some(stdout)
}

/// The `-top` row of `name`: (flat, cum) as printed.
fn row<'a>(top: &'a str, name: &str) -> (&'a str, &'a str) {
    let line = top
        .lines()
        .find(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ") == name)
        .unwrap_or_else(|| panic!("{name} not in:\n{top}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    (cols[0], cols[3])
}

fn mixed_profile() -> Profile {
    let mut p = ProfileBuilder::new();
    // On-CPU: 22 samples. Recursion (fib twice) counts once in cum.
    on_cpu(&mut p, 10, "app", &[], &user(&["work", "main"]), 5);
    on_cpu(
        &mut p,
        11,
        "worker",
        &kernel(&["clear_page"]),
        &user(&["fib", "fib", "main"]),
        7,
    );
    on_cpu(
        &mut p,
        12,
        "worker",
        &[],
        &[sym_inlined("outer", APP, &["inner"]), sym("main", APP)],
        10,
    );
    // Off-CPU: 1.5 s over 30 switches, two states.
    let k = kernel(&["schedule", "io_schedule"]);
    off_cpu(
        &mut p,
        10,
        "app",
        &k,
        &user(&["read", "main"]),
        (OffCpuState::Uninterruptible, 20, 1_000_000_000),
    );
    off_cpu(
        &mut p,
        10,
        "app",
        &kernel(&["schedule"]),
        &user(&["sleep", "main"]),
        (OffCpuState::Interruptible, 10, 500_000_000),
    );
    p.sampling_frequency(99)
        .time_range(1_700_000_000_000_000_000, 1_700_000_002_000_000_000);
    p.build()
}

#[test]
fn go_tool_pprof_reads_mappings_build_ids_jit_and_unknown_frames() {
    let mut p = ProfileBuilder::new();
    let jit = [jit("LazyCompile:*fib"), sym("main", APP)];
    p.add_sample(&rover_core::profile::Sample {
        pid: 10,
        tid: 10,
        process_name: "node",
        comm: "node",
        kernel: &[],
        user: &jit,
        value: rover_core::profile::SampleValue::OnCpu { samples: 3 },
    });
    on_cpu(
        &mut p,
        10,
        "node",
        &[],
        &[unknown(Some("/lib/libx.so"), 0x1234), sym("main", APP)],
        2,
    );
    p.build_id(APP, "0123456789abcdef");
    let p = p.build();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jit.pb.gz");
    write_pprof(&p, std::fs::File::create(&file).unwrap()).unwrap();

    let Some(top) = pprof(dir.path(), &["-top"], &file) else {
        return;
    };
    assert!(top.contains("of 5 total"), "{top}");
    assert_eq!(row(&top, "LazyCompile:*fib"), ("3", "3"));
    assert_eq!(row(&top, "[/lib/libx.so+0x1234]"), ("2", "2"));
    assert_eq!(row(&top, "main"), ("0", "5"));
    // -raw lists the mappings: the modules, and the build id where recorded.
    let Some(raw) = pprof(dir.path(), &["-raw"], &file) else {
        return;
    };
    let mappings = &raw[raw.find("Mappings").expect("no Mappings section")..];
    assert!(
        mappings.contains(APP) && mappings.contains("0123456789abcdef"),
        "{mappings}"
    );
    assert!(
        mappings.contains(PERF_MAP) && mappings.contains("/lib/libx.so"),
        "{mappings}"
    );
}

#[test]
fn go_tool_pprof_reads_on_cpu_and_off_cpu_samples() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rover.pb.gz");
    write_pprof(&mixed_profile(), std::fs::File::create(&file).unwrap()).unwrap();
    let gz = std::fs::read(&file).unwrap();
    assert_eq!(gz[..2], [0x1f, 0x8b], "gzip magic");

    let Some(top) = pprof(dir.path(), &["-top", "-sample_index=samples"], &file) else {
        return;
    };
    assert!(top.contains("of 22 total"), "{top}");
    assert_eq!(row(&top, "work"), ("5", "5"));
    assert_eq!(row(&top, "clear_page"), ("7", "7"));
    assert_eq!(row(&top, "fib"), ("0", "7"));
    // pprof read the inlined frame as such from the Location's lines.
    assert_eq!(row(&top, "inner (inline)"), ("10", "10"));
    assert_eq!(row(&top, "outer"), ("0", "10"));
    assert_eq!(row(&top, "main"), ("0", "22"));

    let Some(off) = pprof(
        dir.path(),
        &["-top", "-sample_index=off_cpu", "-unit=ms"],
        &file,
    ) else {
        return;
    };
    assert!(off.contains("of 1500ms total"), "{off}");
    // schedule is the leaf of both off-CPU stacks; io_schedule calls it.
    assert_eq!(row(&off, "schedule"), ("1500ms", "1500ms"));
    assert_eq!(row(&off, "io_schedule"), ("0", "1000ms"));
    assert_eq!(row(&off, "sleep"), ("0", "500ms"));

    let Some(sw) = pprof(dir.path(), &["-top", "-sample_index=switches"], &file) else {
        return;
    };
    assert!(sw.contains("of 30 total"), "{sw}");

    // Labels: only the disk waits (uninterruptible) of pid 10.
    let Some(d) = pprof(
        dir.path(),
        &[
            "-top",
            "-sample_index=switches",
            "-tagfocus=state=uninterruptible",
        ],
        &file,
    ) else {
        return;
    };
    assert!(d.contains("accounting for 20, 66.67% of 30 total"), "{d}");
    assert!(!d.contains("sleep"), "{d}");
    let Some(t) = pprof(
        dir.path(),
        &["-top", "-sample_index=samples", "-tagfocus=tid=12"],
        &file,
    ) else {
        return;
    };
    assert!(t.contains("accounting for 10, 45.45% of 22 total"), "{t}");
}
