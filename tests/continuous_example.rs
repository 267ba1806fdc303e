//! The `continuous` example run as a user would: a process that starts
//! burning CPU is profiled by itself, its files written and a line printed
//! per trigger; bad policies are one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// `cargo test` builds the examples next to the test binaries' folder.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join("continuous");
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// Idles for a second, then burns in `hot_loop` for argv[1] seconds.
const HOT: &str = r#"
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long hot_loop(double until) {
    volatile unsigned long x = 0;
    while (now() < until) {
        for (int i = 0; i < 100000; i++) x += i;
    }
    return x;
}

int main(int argc, char **argv) {
    sleep(1);
    hot_loop(now() + (argc > 1 ? atof(argv[1]) : 60));
    return 0;
}
"#;

fn build_hot(dir: &Path) -> PathBuf {
    let source = dir.join("rover_hot.c");
    std::fs::write(&source, HOT).unwrap();
    let binary = dir.join("rover_hot");
    let status = Command::new("gcc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("gcc is needed to build the test fixture");
    assert!(status.success(), "gcc failed on rover_hot.c");
    binary
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_hot_process_is_profiled_and_its_files_written() {
    if !testkit::require_root("a_hot_process_is_profiled_and_its_files_written") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hot = build_hot(dir.path());
    let out = dir.path().join("profiles");
    let fixture = Killed(Command::new(&hot).arg("120").spawn().unwrap());
    let pid = fixture.0.id();
    let output = Command::new(example())
        .arg("--match")
        .arg(format!("^{}", hot.display()))
        .args(["--cpu-percent", "30", "--period", "3", "--count", "2"])
        .args(["--execute", "2", "--silence", "600", "--for", "25"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    drop(fixture);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}\n{stdout}");
    assert!(output.status.success(), "{:?}", output.status);
    let lines =
        |prefix: &str| -> Vec<&str> { stdout.lines().filter(|l| l.starts_with(prefix)).collect() };
    // One trigger (the silence outlasts the run), about the fixture.
    let triggered = lines("triggered: ");
    assert_eq!(triggered.len(), 1, "{stdout}");
    assert!(
        triggered[0].starts_with(&format!("triggered: pid {pid} (rover_hot): cpu_percent [")),
        "{}",
        triggered[0]
    );
    let profiled = lines("profiled: ");
    assert_eq!(profiled.len(), 1, "one profile per trigger: {stdout}");
    assert!(lines("failed: ").is_empty(), "{stdout}");
    // PID-COMM-UNIXTIME.folded and .svg, as the line names them.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    let stem = names[0].strip_suffix(".folded").unwrap();
    assert_eq!(names[1], format!("{stem}.svg"));
    let mut parts = stem.splitn(3, '-');
    assert_eq!(parts.next(), Some(pid.to_string().as_str()));
    assert_eq!(parts.next(), Some("rover_hot"));
    let unix: u64 = parts.next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(unix <= now && unix + 600 > now, "{unix} vs {now}");
    for name in &names {
        assert!(
            profiled[0].contains(&out.join(name).display().to_string()),
            "{} does not name {name}",
            profiled[0]
        );
    }
    let folded = std::fs::read_to_string(out.join(&names[0])).unwrap();
    let (through, total) = folded.lines().fold((0u64, 0u64), |(through, total), line| {
        let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let hot = line.contains(";hot_loop");
        (through + if hot { count } else { 0 }, total + count)
    });
    eprintln!("{through} of {total} samples through hot_loop");
    assert!(
        total > 0 && through * 10 >= total * 8,
        "{through} of {total}"
    );
    let svg = std::fs::read_to_string(out.join(&names[1])).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("hot_loop"));
    assert!(stdout.contains("summary: "), "{stdout}");
}

fn run(args: &[&str]) -> Output {
    Command::new(example()).args(args).output().unwrap()
}

#[test]
fn bad_policies_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--cpu-percent", "50", "--count", "4"],
            "count 4 is above period 3",
        ),
        (
            &["--cpu-percent", "50", "--count", "0"],
            "count must be at least 1",
        ),
        (&["--cpu-percent", "-5"], "cannot be negative"),
        (&["--cpu-percent", "1e9"], "no process can exceed"),
        (
            &["--cpu-percent", "50", "--execute", "0"],
            "execute duration must be above zero",
        ),
        (
            &["--cpu-percent", "50", "--interval", "0"],
            "check interval 0ns",
        ),
        (
            &["--cpu-percent", "50", "--silence", "-1"],
            "--silence must be a number",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--match", "x", "--out", out];
        all.extend_from_slice(args);
        let output = run(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let output = run(&["--match", "(", "--cpu-percent", "50", "--out", out]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not a valid regular expression"),
        "{stderr}"
    );
    // A missing argument is clap's, on one line, with the usual status 2.
    let output = run(&["--match", "x", "--out", out]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--cpu-percent"), "{stderr}");
}
