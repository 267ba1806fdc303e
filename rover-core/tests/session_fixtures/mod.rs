//! Shared pieces of the session tests: a profiler (or the reason there is
//! none), C fixtures built with gcc at test time, and profile queries.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::Child;

use rover_core::profile::{Metric, Profile};
use rover_core::{Error, Profiler};

/// A profiler, or `None` after printing why eBPF cannot run here (not root,
/// no BTF): the only reasons a kernel test may skip, and never when `CI` is
/// set (see `testkit`).
pub fn profiler(test: &str) -> Option<Profiler> {
    match Profiler::new() {
        Ok(profiler) => Some(profiler),
        Err(error) if error.is_privileges() || error.is_kernel_feature() => {
            testkit::skip(test, error);
            None
        }
        Err(error) => panic!("profiler checks failed: {error}"),
    }
}

/// Spins in `spin_here` for argv[1] milliseconds of its own CPU time once
/// told to go, prints `done`, and exits when told again (or killed): CPU
/// time, not wall time, so a busy machine delays it but does not shorten
/// the work the profiler should see. It stays alive after its work so that
/// the session symbolizes it while it lives, however slow the machine (in an
/// emulated guest a window's drain lags by seconds).
pub const SPIN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long spin_here(double until) {
    volatile unsigned long x = 0;
    while (now() < until) {
        for (int i = 0; i < 100000; i++) x += i;
    }
    return x;
}

int main(int argc, char **argv) {
    double ms = argc > 1 ? atof(argv[1]) : 1000;
    char go;
    printf("ready\n");
    fflush(stdout);
    if (read(0, &go, 1) != 1) return 1;
    spin_here(now() + ms / 1000.0);
    printf("done\n");
    fflush(stdout);
    if (read(0, &go, 1) != 1) return 1;
    return 0;
}
"#;

/// Blocks 20 times for 50 ms in `block_here` once told to go. The sleep is
/// a raw syscall so the user stack's leaf is `block_here` itself (libc's
/// wrapper has no frame pointer and would hide its caller).
pub const BLOCK: &str = r#"
#include <stdio.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) void block_here(void) {
    struct timespec ts = { 0, 50 * 1000 * 1000 };
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(35), "D"(&ts), "S"(0) : "rcx", "r11", "memory");
}

int main(void) {
    char go;
    printf("ready\n");
    fflush(stdout);
    if (read(0, &go, 1) != 1) return 1;
    for (int i = 0; i < 20; i++) block_here();
    printf("done\n");
    fflush(stdout);
    if (read(0, &go, 1) != 1) return 1;
    return 0;
}
"#;

/// The unwinder's C fixture (see its header): one call chain twelve levels
/// deep through [`DEEP_LIBRARY`], ending by `argv[1]` in a spin (`cpu`), a
/// sleep (`block`) or a signal handler that spins (`signal`). Built with
/// [`Fixture::build_without_frame_pointers`]; `benches/unwind_vs_perf.sh`
/// builds the same files.
pub const DEEP: &str = include_str!("unwind/deep.c");

/// The shared library of [`DEEP`]: four levels of its chain.
pub const DEEP_LIBRARY: &str = include_str!("unwind/libdeep.c");

/// The unwinder's C++ fixture: thirteen levels of namespaces, templates, a
/// member function and a call operator, down to a spin.
pub const DEEP_CXX: &str = include_str!("unwind/deep.cpp");

/// The kernel tests' fixture builder: `build` compiles, `spawn` starts and
/// waits for the `ready` line. [`Start::start`] wraps the child in a
/// [`Running`] that the session tests drive.
#[path = "../support/mod.rs"]
mod support;

pub use support::Fixture;
#[allow(unused_imports, reason = "only the unwinder tests build these")]
pub use support::{Language, NO_FRAME_POINTERS, WITH_FRAME_POINTERS};

/// Starts a fixture as a [`Running`] (its binary mapped before a session
/// starts, as [`Fixture::spawn`] waits for `ready`).
pub trait Start {
    fn start(&self, args: &[&str]) -> Running;
}

impl Start for Fixture {
    fn start(&self, args: &[&str]) -> Running {
        Running {
            child: self.spawn(args),
        }
    }
}

/// A running fixture; killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the fixture start its work.
    pub fn go(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    }

    /// Waits for the fixture's next output line.
    pub fn line(&mut self) -> String {
        read_line(&mut self.child)
    }

    /// Waits for the fixture's `done`: its work is over, and it waits
    /// (alive) to be told to exit.
    pub fn wait_done(&mut self) {
        assert_eq!(self.line(), "done");
    }

    /// CPU seconds (user + system) the fixture has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks = 100.0; // USER_HZ on Linux
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields[11].parse().unwrap();
        let stime: f64 = fields[12].parse().unwrap();
        (utime + stime) / ticks
    }

    /// Tells a fixture waiting after its `done` to exit, and reaps it.
    pub fn finish(&mut self) {
        self.go();
        self.wait();
    }

    pub fn wait(&mut self) {
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_line(child: &mut Child) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// The value of the rows whose stack passes through function `name`.
pub fn value_through(profile: &Profile, name: &str, metric: Metric) -> u64 {
    profile.filter_function(name).total(metric)
}

/// Every distinct pid in the profile.
pub fn pids(profile: &Profile) -> Vec<u32> {
    let mut pids: Vec<u32> = profile
        .processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Fails unless `result` is the error `matches` accepts; prints the message.
pub fn expect_error<T>(result: Result<T, Error>, what: &str, matches: impl Fn(&Error) -> bool) {
    match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(error) => {
            eprintln!("{what}: {error}");
            assert!(matches(&error), "{what}: unexpected error {error:?}");
        }
    }
}

/// The session's next window, failing after `deadline`: tests wait for
/// windows, not for time, since under emulation a window can take longer
/// than its period to drain and symbolize.
pub fn next_window(
    windows: &mut (impl futures::Stream<Item = rover_core::Window> + Unpin),
    deadline: std::time::Instant,
) -> rover_core::Window {
    use futures::StreamExt;
    assert!(
        std::time::Instant::now() < deadline,
        "the windows stopped coming"
    );
    futures::executor::block_on(windows.next()).expect("the session ended early")
}

/// Now, in nanoseconds since the Unix epoch (as windows' time ranges).
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Switches and nanoseconds of interruptible sleeps on stacks through
/// `name`: the fixture's own sleeps, without the preemptions that may also
/// hit the thread inside the same function on a busy machine.
pub fn sleeps_through(profile: &Profile, name: &str) -> (u64, u64) {
    use rover_core::profile::OffCpuState;
    let through = profile.filter_function(name);
    through
        .entries()
        .map(|e| e.value.off_cpu(OffCpuState::Interruptible))
        .fold((0, 0), |(s, n), v| (s + v.switches, n + v.nanos))
}
