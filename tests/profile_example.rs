//! The README's first command, the `profile` example, run as a user would:
//! the demo end to end, and its one-line errors.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `cargo test` builds the examples next to the test binaries' folder.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join("profile");
    assert!(path.exists(), "{} not built", path.display());
    path
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn demo_writes_flame_graphs_and_finds_the_demo_functions() {
    if !testkit::require_root("demo_writes_flame_graphs_and_finds_the_demo_functions") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(example())
        .args(["--duration", "3"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}\n{stdout}");
    assert!(output.status.success());
    for name in ["rover-demo-on-cpu.svg", "rover-demo-off-cpu.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(svg.starts_with("<?xml"), "{name} is not an SVG");
        assert!(stdout.contains(&format!("wrote {}", dir.path().join(name).display())));
    }
    // The burning functions lead on-CPU; the blocking ones show off-CPU.
    assert!(stdout.contains("profile::demo::count_primes"));
    assert!(stdout.contains("profile::demo::hash_round"));
    assert!(stdout.contains("profile::demo::timer_wait"));
    assert!(stdout.contains("profile::demo::pipe_read"));
    assert!(stdout.contains("summary: profiled"));
    assert!(
        stderr.contains("on-CPU") && stderr.contains("samples"),
        "no progress line"
    );
}

#[test]
fn ctrl_c_stops_early_and_still_writes_the_files() {
    if !testkit::require_root("ctrl_c_stops_early_and_still_writes_the_files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(example())
        .args(["--duration", "60"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run: once the progress line shows on-CPU samples (start-up, which
    // verifies the programs, takes seconds under emulation).
    let mut stderr_pipe = child.stderr.take().unwrap();
    let (progress, seen) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stderr_pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
            let _ = progress.send(String::from_utf8_lossy(&all).into_owned());
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let running = |text: &str| {
        text.split("on-CPU ")
            .skip(1)
            .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
            .any(|samples| samples > 0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let text = seen
            .recv_timeout(left)
            .expect("no progress with on-CPU samples");
        if running(&text) {
            break;
        }
    }
    // As a terminal's Ctrl-C: SIGINT to the example (its demo child gets
    // one too from a terminal; here the example stops it itself).
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let started = std::time::Instant::now();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = reader.join().unwrap();
    eprintln!("{stderr}\n{stdout}");
    assert!(output.status.success(), "{:?}", output.status);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "did not stop on SIGINT"
    );
    assert!(stderr.contains("interrupted"));
    assert!(stdout.contains("summary: profiled"));
    for name in ["rover-demo-on-cpu.svg", "rover-demo-off-cpu.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(svg.starts_with("<?xml"), "{name} is not an SVG");
    }
    // The demo child was stopped and its scratch file removed.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    for args in [
        &["--bogus"][..],
        &["--mode", "sideways"],
        &["--pid", "12", "--all"],
        &["--frequency", "many"],
        &["--stack-mode", "guess"],
    ] {
        let output = Command::new(example()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let lines = stderr_lines(&output);
        eprintln!("{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].starts_with("error:"));
    }
    if !testkit::require_root("bad_arguments_are_one_line_errors") {
        return;
    }
    for (args, expected) in [
        (&["--pid", "4999999"][..], "process 4999999 does not exist"),
        (&["--pid", "1", "--frequency", "0"], "at least 1 Hz"),
        (&["--duration", "0"], "--duration"),
    ] {
        let output = Command::new(example()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let lines = stderr_lines(&output);
        eprintln!("{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].contains(expected), "{args:?}: {lines:?}");
    }
}

#[test]
fn without_privileges_a_one_line_error() {
    if !testkit::require(
        "without_privileges_a_one_line_error",
        testkit::is_root(),
        "needs root to drop privileges",
    ) {
        return;
    }
    // setpriv (util-linux) runs the example as nobody with no capabilities.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(example())
        .args(["--pid", "1"])
        .output()
        .unwrap();
    let lines = stderr_lines(&output);
    eprintln!("{lines:?}");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("missing privileges"), "{lines:?}");
}
