//! What rover's tests require of the machine, checked one way everywhere.
//!
//! Kernel and tool tests need root, BPF, a kernel feature or an external
//! program. Where one is missing, a test calls into this crate instead of
//! returning on its own: on a developer's machine it then prints one line,
//! `skipping <test>: <why>`, and the test returns (and passes); when the
//! environment variable `CI` is set (as `.ci/run` sets it), it **fails**
//! with the same reason, so that a CI run can never pass a test that did
//! not run.
//!
//! ```no_run
//! // In a test: `#[test] fn node_writes_a_perf_map() { ... }`.
//! if !testkit::require_root("node_writes_a_perf_map")
//!     || !testkit::require_tool("node_writes_a_perf_map", "node")
//! {
//!     return;
//! }
//! // ... the test proper
//! ```
//!
//! Where the missing piece is found in the middle of a test (an `Option`
//! that is `None`, a `NotFound` from a spawn), [`skip`] says so and the test
//! returns right after it:
//!
//! ```no_run
//! # fn kallsyms_module_symbol() -> Option<u64> { Some(0) }
//! let Some(address) = kallsyms_module_symbol() else {
//!     testkit::skip("live_kallsyms_module_symbol", "no module text symbols in /proc/kallsyms");
//!     return;
//! };
//! # let _ = address;
//! ```
#![warn(missing_docs)]

pub mod http;
pub mod otel;

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether this run is CI: the variable `CI` is set to anything but empty,
/// `0` or `false` (CI services set `CI=true`; `.ci/run` sets `CI=1`).
///
/// ```
/// if testkit::in_ci() {
///     println!("a missing requirement fails this run");
/// }
/// ```
pub fn in_ci() -> bool {
    ci_value(std::env::var_os("CI").as_deref().and_then(|v| v.to_str()))
}

fn ci_value(value: Option<&str>) -> bool {
    !matches!(value.map(str::trim), None | Some("" | "0" | "false"))
}

/// Whether this test runs in one of the kernel matrix's emulated guests
/// (`tests/vm/guest.sh` sets `ROVER_VM_GUEST=1`). There every instruction is
/// emulated, so a test that repeats the same kernel work many times (a leak
/// check over start/stop cycles) does fewer repetitions: what the guest
/// checks is that the kernel accepts and runs the work, which the host's
/// run repeats in full.
///
/// ```
/// let cycles = if testkit::in_guest() { 20 } else { 100 };
/// assert!(cycles > 0);
/// ```
pub fn in_guest() -> bool {
    std::env::var_os("ROVER_VM_GUEST").is_some_and(|v| v == "1")
}

/// Reports that `test` cannot run here because of `why`: panics with the
/// reason in CI, prints `skipping <test>: <why>` otherwise. The caller
/// returns right after it.
///
/// ```no_run
/// # fn node() -> std::io::Result<()> { Ok(()) }
/// if node().is_err() {
///     testkit::skip("node_jit_frames", "node is not installed (Debian package nodejs)");
///     return;
/// }
/// ```
pub fn skip(test: &str, why: impl Display) {
    require(test, false, why);
}

/// Whether `test` may go on: `true` when `met`, else [`skip`] with `why`
/// (a panic in CI) and `false`.
///
/// ```no_run
/// let cgroup2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
/// if !testkit::require("cgroup_session", cgroup2, "no cgroup v2 at /sys/fs/cgroup") {
///     return;
/// }
/// ```
pub fn require(test: &str, met: bool, why: impl Display) -> bool {
    // Straight to stderr, not through `eprintln!`, which libtest captures
    // for passing tests: a skip should show in a plain `cargo test`.
    decide(in_ci(), test, met, why, &mut std::io::stderr())
}

/// [`require`] that the test runs as root (effective uid 0).
///
/// ```no_run
/// if !testkit::require_root("loads_a_program") {
///     return;
/// }
/// ```
pub fn require_root(test: &str) -> bool {
    require(test, is_root(), "needs root")
}

/// [`require`] that `tool` is an executable on `PATH`; the reason names
/// the Debian package that provides it, which `.ci/run` installs.
///
/// ```no_run
/// if !testkit::require_tool("reads_the_pprof_file", "go") {
///     return;
/// }
/// ```
pub fn require_tool(test: &str, tool: &str) -> bool {
    require(test, has_tool(tool), not_installed(tool))
}

/// Why `tool` cannot be run: it is not installed, and which Debian package
/// has it. For a [`skip`] where a spawn found no such program.
///
/// ```no_run
/// match std::process::Command::new("perf").arg("--version").output() {
///     Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
///         testkit::skip("agrees_with_perf", testkit::not_installed("perf"));
///         return;
///     }
///     _ => {}
/// }
/// ```
pub fn not_installed(tool: &str) -> String {
    match package(tool) {
        Some(package) => format!("{tool} is not installed (Debian package {package})"),
        None => format!("{tool} is not installed"),
    }
}

/// Whether the process runs with effective uid 0.
///
/// ```
/// let drop_privileges_too = testkit::is_root();
/// ```
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Whether `tool` is an executable file in one of `PATH`'s folders.
///
/// ```
/// let compare_with_perf = testkit::has_tool("perf");
/// ```
pub fn has_tool(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(tool))))
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on a unified hierarchy,
/// `/sys/fs/cgroup/unified` on a hybrid one, as `/proc/self/mountinfo` says.
///
/// ```
/// match testkit::cgroup2_mount() {
///     Some(root) => println!("cgroup v2 at {}", root.display()),
///     None => println!("no cgroup v2 here"),
/// }
/// ```
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        before.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The name of the running test: libtest runs each test on a thread named
/// after it. For helpers shared by several tests that find a requirement
/// missing deep inside (an external tool's `NotFound`).
///
/// ```no_run
/// fn run_pprof() -> Option<String> {
///     if !testkit::require_tool(&testkit::current_test(), "go") {
///         return None;
///     }
///     Some(String::new())
/// }
/// # let _ = run_pprof();
/// ```
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned()
}

/// The decision, with CI given: pass on when `met`, else fail in CI or say
/// on `out` what is skipped.
fn decide(ci: bool, test: &str, met: bool, why: impl Display, out: &mut dyn Write) -> bool {
    if met {
        return true;
    }
    assert!(
        !ci,
        "{test}: {why} (CI is set, so a test may not skip: install or enable it, or unset CI)"
    );
    let _ = writeln!(out, "skipping {test}: {why}");
    false
}

/// Debian packages of the tools the workspace's tests run (the list
/// `.ci/run` installs).
fn package(tool: &str) -> Option<&'static str> {
    Some(match tool {
        "go" => "golang-go",
        "node" => "nodejs",
        "perf" => "linux-perf",
        "bpftrace" => "bpftrace",
        "bpftool" => "bpftool",
        "unshare" | "setpriv" | "mount" => "util-linux",
        "gcc" => "gcc",
        "g++" => "g++",
        "nm" | "readelf" | "objcopy" | "addr2line" => "binutils",
        _ => return None,
    })
}

/// Where `.ci/run` installs the Python environment with the official
/// OpenTelemetry classes (`opentelemetry-proto`, `grpcio` from PyPI) that
/// the OTLP tests decode and receive with.
pub const OTEL_PYTHON_DEFAULT: &str = "/var/cache/rover-venv/bin/python3";

/// A Python interpreter that can import the official OpenTelemetry profile
/// classes and their gRPC service (`opentelemetry-proto`, `grpcio`): the
/// one `ROVER_OTEL_PYTHON` names, else [`OTEL_PYTHON_DEFAULT`]. `None`
/// (after a [`skip`], or a panic under CI) when there is none; the reason
/// says how to make one.
///
/// ```no_run
/// let Some(python) = testkit::otel_python("python_decodes_the_request") else {
///     return;
/// };
/// ```
pub fn otel_python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("ROVER_OTEL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(OTEL_PYTHON_DEFAULT));
    let probe = std::process::Command::new(&python)
        .args([
            "-c",
            "import grpc\nfrom opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2_grpc",
        ])
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => format!(
            "{} cannot import the OpenTelemetry classes: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("{} cannot run: {e}", python.display()),
    };
    skip(
        test,
        format!(
            "{why} (make it with: python3 -m venv /var/cache/rover-venv && \
             /var/cache/rover-venv/bin/pip install opentelemetry-proto grpcio, as .ci/run does; \
             or set ROVER_OTEL_PYTHON)"
        ),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(
        expected = "a_test: bpftrace is not installed (Debian package bpftrace) (CI is set"
    )]
    fn in_ci_a_missing_requirement_fails_with_the_reason() {
        decide(
            true,
            "a_test",
            false,
            not_installed("bpftrace"),
            &mut Vec::new(),
        );
    }

    #[test]
    fn outside_ci_a_missing_requirement_skips_with_one_line() {
        let mut out = Vec::new();
        assert!(!decide(false, "a_test", false, "needs root", &mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "skipping a_test: needs root\n"
        );
    }

    #[test]
    fn a_met_requirement_passes_in_and_out_of_ci_silently() {
        let mut out = Vec::new();
        assert!(decide(true, "a_test", true, "unused", &mut out));
        assert!(decide(false, "a_test", true, "unused", &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn ci_is_any_value_but_empty_zero_or_false() {
        for on in ["1", "true", "yes", "github"] {
            assert!(ci_value(Some(on)), "{on}");
        }
        for off in [None, Some(""), Some("0"), Some("false")] {
            assert!(!ci_value(off), "{off:?}");
        }
    }

    #[test]
    fn tools_are_found_on_path() {
        assert!(has_tool("sh"));
        assert!(!has_tool("rover-no-such-tool"));
        assert_eq!(
            not_installed("node"),
            "node is not installed (Debian package nodejs)"
        );
        assert_eq!(
            not_installed("rover-no-such-tool"),
            "rover-no-such-tool is not installed"
        );
    }

    #[test]
    fn cgroup2_is_found_where_mountinfo_says() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        match cgroup2_mount() {
            Some(root) => {
                assert!(root.join("cgroup.procs").exists(), "{}", root.display());
                assert!(mountinfo.contains(&format!(" {} ", root.display())));
            }
            None => assert!(!mountinfo.contains(" - cgroup2 ")),
        }
    }

    #[test]
    fn the_current_test_is_named_after_its_thread() {
        assert!(
            current_test().ends_with("the_current_test_is_named_after_its_thread"),
            "{}",
            current_test()
        );
    }
}
