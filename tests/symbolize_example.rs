//! The `symbolize` example against binutils `addr2line`: the same output,
//! byte for byte (discriminator suffixes aside), for the same flags, with
//! addresses as arguments and on standard input; clear failures for a
//! missing file or process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const C_SOURCE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
static inline long sq(long v) { return v * v; }
static inline long cube(long v) { return sq(v) * v; }
__attribute__((noinline)) long sum(const long *a, int n) {
    long s = 0;
    for (int i = 0; i < n; i++) s += cube(a[i]) - sq(a[i] >> 1);
    return s;
}
__attribute__((noinline)) static long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int main(int argc, char **argv) {
    long a[4] = {1, 2, 3, argc};
    printf("%ld %ld\n", sum(a, 4), fib(argc + 10));
    return 0;
}
"#;

fn example() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/symbolize
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("symbolize");
    assert!(path.exists(), "{} is built by `cargo test`", path.display());
    path
}

fn fixture(dir: &Path) -> PathBuf {
    let src = dir.join("fixture.c");
    std::fs::write(&src, C_SOURCE).unwrap();
    let bin = dir.join("fixture");
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    bin
}

/// Every text symbol's first, middle and last byte, and two addresses in
/// no function.
fn addresses(bin: &Path) -> Vec<String> {
    let nm = Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(bin)
        .output()
        .unwrap();
    let mut addrs = vec!["0x0".to_string(), "ffffffff".to_string()];
    for line in String::from_utf8_lossy(&nm.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 4 && matches!(f[2], "t" | "T") {
            let (start, size) = (
                u64::from_str_radix(f[0], 16).unwrap(),
                u64::from_str_radix(f[1], 16).unwrap(),
            );
            for a in [start, start + size / 2, start + size - 1] {
                addrs.push(format!("{a:#x}"));
            }
        }
    }
    addrs
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Written from another thread: the child's output fills its pipe long
    // before all input is in.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn without_discriminators(text: &str) -> String {
    text.lines()
        .map(|l| l.find(" (discriminator ").map_or(l, |at| &l[..at]))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn output_matches_addr2line() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fixture(dir.path());
    let addrs = addresses(&bin);
    for flags in [
        &["-a", "-f", "-i", "-C"][..],
        &["-f", "-i"],
        &["-f"],
        &["-a"],
        &[],
    ] {
        let theirs = Command::new("addr2line")
            .args(flags)
            .arg("-e")
            .arg(&bin)
            .args(&addrs)
            .output()
            .unwrap();
        let ours = Command::new(example())
            .args(flags)
            .arg("-e")
            .arg(&bin)
            .args(&addrs)
            .output()
            .unwrap();
        assert!(
            ours.status.success(),
            "{}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let theirs = without_discriminators(&String::from_utf8_lossy(&theirs.stdout));
        let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
        assert_eq!(ours, theirs, "flags {flags:?}");
        println!(
            "flags {flags:?}: {} addresses, identical output",
            addrs.len()
        );
    }
}

#[test]
fn reads_addresses_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fixture(dir.path());
    let addrs = addresses(&bin);
    // Many times over, to pass the example's batch boundary.
    let input: String = addrs
        .iter()
        .cycle()
        .take(70_000)
        .map(|a| format!("{a}\n"))
        .collect();
    let mut theirs = Command::new("addr2line");
    let theirs = run_with_stdin(theirs.args(["-a", "-f", "-i"]).arg("-e").arg(&bin), &input);
    let mut ours = Command::new(example());
    let ours = run_with_stdin(ours.args(["-a", "-f", "-i"]).arg("-e").arg(&bin), &input);
    assert!(ours.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        without_discriminators(&String::from_utf8_lossy(&theirs.stdout))
    );
}

#[test]
fn missing_file_or_process_fails_clearly() {
    let out = Command::new(example())
        .args(["-e", "/nonexistent/binary", "0x10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/binary"), "{err}");

    let out = Command::new(example())
        .args(["--pid", "4194321", "0x10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("4194321"));

    let out = Command::new(example()).arg("0x10").output().unwrap();
    assert!(!out.status.success(), "a source is required");
}

#[test]
fn kernel_and_process_sources() {
    let me = std::process::id();
    let out = Command::new(example())
        .args(["-f", "--pid", &me.to_string(), "0x10"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "??\n??:0\n");

    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let line = kallsyms
        .lines()
        .find(|l| l.ends_with(" T schedule"))
        .expect("schedule");
    let addr = line.split_whitespace().next().unwrap();
    let out = Command::new(example())
        .args(["-f", "--kernel", addr])
        .output()
        .unwrap();
    assert!(out.status.success());
    if u64::from_str_radix(addr, 16).unwrap() != 0 {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "schedule\n??:0\n");
    }
}
