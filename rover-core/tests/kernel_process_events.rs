//! Process events through the public API, against the running kernel: every
//! short-lived child is seen to fork, exec and exit in that order, with its
//! exit code (with the BTF tracepoints and with the classic ones); a
//! dynamically linked program's library mappings arrive between its exec
//! and its exit; threads are not processes and a process exits once; a full
//! ring buffer is counted; and the poll source sees children that live
//! longer than its interval.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rover_core::process::events::{
    EventSource, ExecMapping, ProcessEvent, ProcessEventKind, ProcessEvents, ProcessHook,
};
use support::{Fixture, kernel};

/// Emulated guests run children slowly: what "soon" means in these tests.
const PATIENCE: Duration = Duration::from_secs(60);

/// Reads a stream on a thread of its own while the test spawns children,
/// noting when each event arrived, until every pid it was told to wait for
/// has exited (or PATIENCE ran out after [`Collector::finish`]).
struct Collector {
    waiting: Arc<Mutex<HashSet<u32>>>,
    spawned: Arc<AtomicBool>,
    thread: JoinHandle<(ProcessEvents, Vec<(ProcessEvent, SystemTime)>)>,
}

impl Collector {
    fn start(mut events: ProcessEvents) -> Self {
        let waiting = Arc::new(Mutex::new(HashSet::new()));
        let spawned = Arc::new(AtomicBool::new(false));
        let (thread_waiting, thread_spawned) = (Arc::clone(&waiting), Arc::clone(&spawned));
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut exited = HashSet::new();
            let mut deadline = None;
            loop {
                if let Some(event) = events.next_timeout(Duration::from_millis(50)) {
                    if matches!(event.kind, ProcessEventKind::Exit { .. }) {
                        exited.insert(event.pid);
                    }
                    seen.push((event, SystemTime::now()));
                }
                if thread_spawned.load(Ordering::SeqCst) {
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + PATIENCE);
                    let waiting = thread_waiting.lock().unwrap();
                    if waiting.is_subset(&exited) || Instant::now() > deadline {
                        break;
                    }
                }
            }
            (events, seen)
        });
        Collector {
            waiting,
            spawned,
            thread,
        }
    }

    fn wait_for(&self, pid: u32) {
        self.waiting.lock().unwrap().insert(pid);
    }

    fn finish(self) -> (ProcessEvents, Vec<(ProcessEvent, SystemTime)>) {
        self.spawned.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The events of each pid, in the order they came.
fn by_pid<'a>(
    events: impl IntoIterator<Item = &'a ProcessEvent>,
) -> HashMap<u32, Vec<&'a ProcessEvent>> {
    let mut map: HashMap<u32, Vec<&ProcessEvent>> = HashMap::new();
    for event in events {
        map.entry(event.pid).or_default().push(event);
    }
    map
}

fn kernel_events(hook: ProcessHook) -> ProcessEvents {
    let events = ProcessEvents::builder()
        .source(EventSource::Kernel)
        .hook(hook)
        .start()
        .unwrap_or_else(|error| panic!("the kernel source with {hook:?}: {error}"));
    assert_eq!(events.source(), EventSource::Kernel);
    assert_eq!(events.hook(), Some(hook));
    events
}

/// The ids of the process events programs loaded in the kernel (their
/// names, cut to 15 bytes, start `rover_proc_`; the feature probes that
/// other tests run meanwhile are `rover_probe_*`).
fn proc_program_ids() -> HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| n.starts_with("rover_proc_"))
        })
        .map(|p| p.id())
        .collect()
}

/// Field 22 of /proc/PID/stat, read while the process lives.
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn is_map(event: &ProcessEvent) -> bool {
    matches!(event.kind, ProcessEventKind::MapExec { .. })
}

/// `pid`'s events are its Fork (by this process), one Exec of `program`
/// and its Exit, in that order, with mappings only between the exec and
/// the exit; returns the exit code.
fn check_lifecycle(pid: u32, events: &[&ProcessEvent], program: &str) -> i32 {
    let me = std::process::id();
    let kinds: Vec<&ProcessEventKind> = events
        .iter()
        .filter(|e| !is_map(e))
        .map(|e| &e.kind)
        .collect();
    let [fork, exec, exit] = kinds[..] else {
        panic!("pid {pid}: expected fork, exec, exit; got {kinds:?}");
    };
    assert_eq!(fork, &ProcessEventKind::Fork { parent: me }, "pid {pid}");
    assert_eq!(
        exec,
        &ProcessEventKind::Exec {
            filename: program.into()
        },
        "pid {pid}"
    );
    let ProcessEventKind::Exit {
        status: Some(status),
    } = exit
    else {
        panic!("pid {pid}: {exit:?}");
    };
    assert!(!is_map(events[0]), "pid {pid}: a mapping before its fork");
    assert!(
        !is_map(events[events.len() - 1]),
        "pid {pid}: a mapping after its exit"
    );
    // One process throughout: the same start time on every event, and
    // times that do not go back.
    let start = events[0].start_ticks;
    assert!(start.is_some(), "pid {pid}: no start time");
    assert!(
        events.iter().all(|e| e.start_ticks == start),
        "pid {pid}: {events:?}"
    );
    assert!(
        events.windows(2).all(|w| w[0].boot_ns <= w[1].boot_ns),
        "pid {pid}: {events:?}"
    );
    status
        .code()
        .unwrap_or_else(|| panic!("pid {pid} was killed: {status:?}"))
}

fn every_child_forks_execs_and_exits(test: &str, hook: ProcessHook) {
    let Some(_kernel) = kernel(test) else { return };
    let before = proc_program_ids();
    let collector = Collector::start(kernel_events(hook));
    let mut children = Vec::new();
    let started = Instant::now();
    for i in 0..101 {
        let (program, args, code) = if i == 100 {
            ("/bin/sh", &["-c", "exit 7"][..], 7)
        } else {
            ("/bin/true", &[][..], 0)
        };
        let mut child = Command::new(program).args(args).spawn().unwrap();
        collector.wait_for(child.id());
        assert_eq!(child.wait().unwrap().code(), Some(code));
        children.push((child.id(), program, code));
    }
    let spawning = started.elapsed();
    let (events, seen) = collector.finish();
    let pids = by_pid(seen.iter().map(|(event, _)| event));
    for (pid, program, code) in &children {
        let Some(events) = pids.get(pid) else {
            panic!("no event of child {pid} among {} events", seen.len());
        };
        assert_eq!(check_lifecycle(*pid, events, program), *code, "pid {pid}");
    }
    // From the kernel's record to the consumer's hands.
    let mut latencies: Vec<Duration> = seen
        .iter()
        .filter(|(event, _)| {
            matches!(event.kind, ProcessEventKind::Fork { .. })
                && children.iter().any(|(pid, ..)| *pid == event.pid)
        })
        .map(|(event, received)| received.duration_since(event.time).unwrap_or_default())
        .collect();
    latencies.sort();
    println!(
        "{test}: {} children in {spawning:?}, {} events; fork-to-receipt latency median {:?}, \
         max {:?}",
        children.len(),
        seen.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(events.dropped().total(), 0, "{:?}", events.dropped());
    // The fork, exec, exit and four syscall programs run...
    let running: HashSet<u32> = &proc_program_ids() - &before;
    assert!(running.len() >= 3, "{running:?}");
    events.stop().unwrap();
    // ... and are gone once stop returned (the kernel frees an id once the
    // last reference, the link's or the fd's, is dropped: soon after).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proc_program_ids().is_disjoint(&running) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = &proc_program_ids() & &running;
    assert!(left.is_empty(), "still loaded after stop: {left:?}");
}

#[test]
fn every_child_forks_execs_and_exits_btf() {
    every_child_forks_execs_and_exits(
        "every_child_forks_execs_and_exits_btf",
        ProcessHook::BtfTracepoint,
    );
}

#[test]
fn every_child_forks_execs_and_exits_classic() {
    every_child_forks_execs_and_exits(
        "every_child_forks_execs_and_exits_classic",
        ProcessHook::Tracepoint,
    );
}

/// Auto picks the kernel where it loads; its start time is /proc's.
#[test]
fn libraries_map_between_exec_and_exit() {
    let test = "libraries_map_between_exec_and_exit";
    let Some(_kernel) = kernel(test) else { return };
    let events = ProcessEvents::start().unwrap();
    assert_eq!(
        events.source(),
        EventSource::Kernel,
        "{:?}",
        events.fallback()
    );
    assert!(events.fallback().is_none());
    if let Some(why) = events.map_exec_unavailable() {
        testkit::skip(test, why);
        return;
    }
    let collector = Collector::start(events);
    // /bin/sleep is dynamically linked: ld.so maps libc's code with mmap.
    let mut child = Command::new("/bin/sleep").arg("0.3").spawn().unwrap();
    let pid = child.id();
    collector.wait_for(pid);
    let ticks = start_ticks(pid);
    assert!(child.wait().unwrap().success());
    let (events, seen) = collector.finish();
    let pids = by_pid(seen.iter().map(|(event, _)| event));
    let mine = pids.get(&pid).expect("no event of the child");
    check_lifecycle(pid, mine, "/bin/sleep");
    assert_eq!(
        mine[0].start_ticks,
        Some(ticks),
        "/proc/{pid}/stat says {ticks}"
    );
    let maps: Vec<_> = mine.iter().filter(|e| is_map(e)).collect();
    assert!(
        maps.iter().any(|e| matches!(
            e.kind,
            ProcessEventKind::MapExec {
                mapping: ExecMapping::File,
                addr,
                len,
            } if addr != 0 && len > 0
        )),
        "no file mapped executable by {pid}: {mine:?}"
    );
    // Events carry what the listing carries: the exec's is the new
    // program's, read then; the exit's the last read while it lived.
    let exec = mine
        .iter()
        .find(|e| matches!(e.kind, ProcessEventKind::Exec { .. }))
        .and_then(|e| e.info.clone())
        .expect("the exec event carries the process's info");
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    assert_eq!(exec.pid, pid);
    assert_eq!(exec.exe.as_deref(), Some(sleep.as_path()), "{exec:?}");
    assert_eq!(exec.cmdline, ["/bin/sleep", "0.3"], "{exec:?}");
    assert_eq!(exec.start_ticks, ticks);
    assert_eq!(exec.ppid, std::process::id());
    let exit = mine
        .last()
        .and_then(|e| e.info.clone())
        .expect("the exit event carries the last info read");
    assert_eq!(exit.cmdline, exec.cmdline);
    events.stop().unwrap();
}

const THREADS: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

static pthread_barrier_t ready;

static void *worker(void *arg)
{
	printf("tid %ld\n", (long)syscall(SYS_gettid));
	fflush(stdout);
	pthread_barrier_wait(&ready);
	for (;;)
		pause();
	return arg;
}

int main(void)
{
	pthread_t threads[4];

	pthread_barrier_init(&ready, 0, 5);
	for (int i = 0; i < 4; i++)
		pthread_create(&threads[i], 0, worker, 0);
	pthread_barrier_wait(&ready);
	/* exit_group: every thread dies at once. */
	exit(3);
}
"#;

/// Threads are no processes: no Fork of their own, and one Exit for the
/// process however many threads die with it.
#[test]
fn threads_do_not_fork_and_a_process_exits_once() {
    let test = "threads_do_not_fork_and_a_process_exits_once";
    let Some(_kernel) = kernel(test) else { return };
    let fixture = Fixture::build("threads", THREADS);
    for hook in [ProcessHook::BtfTracepoint, ProcessHook::Tracepoint] {
        let collector = Collector::start(kernel_events(hook));
        let child = Command::new(&fixture.path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        collector.wait_for(pid);
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(3));
        let tids: HashSet<u32> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("tid ")?.parse().ok())
            .collect();
        assert_eq!(tids.len(), 4, "{output:?}");
        let (events, seen) = collector.finish();
        let seen: Vec<&ProcessEvent> = seen.iter().map(|(event, _)| event).collect();
        let forks_of = |pid: u32| {
            seen.iter()
                .filter(|e| e.pid == pid && matches!(e.kind, ProcessEventKind::Fork { .. }))
                .count()
        };
        assert_eq!(forks_of(pid), 1, "{hook:?}");
        for tid in &tids {
            assert_eq!(
                forks_of(*tid),
                0,
                "{hook:?}: thread {tid} reported as a process"
            );
            assert!(
                seen.iter().all(|e| e.pid != *tid),
                "{hook:?}: an event names thread {tid} as a process"
            );
        }
        let exits: Vec<_> = seen
            .iter()
            .filter(|e| e.pid == pid && matches!(e.kind, ProcessEventKind::Exit { .. }))
            .collect();
        assert_eq!(exits.len(), 1, "{hook:?}: {exits:?}");
        let ProcessEventKind::Exit {
            status: Some(status),
        } = exits[0].kind
        else {
            panic!("{exits:?}");
        };
        assert_eq!(status.code(), Some(3), "{hook:?}");
        events.stop().unwrap();
    }
}

/// A ring buffer of one page that nobody reads fills; what did not fit is
/// counted, so what arrived and what was dropped cover every child.
#[test]
fn a_full_ring_buffer_is_counted() {
    let test = "a_full_ring_buffer_is_counted";
    let Some(_kernel) = kernel(test) else { return };
    let mut events = ProcessEvents::builder()
        .source(EventSource::Kernel)
        .ring_size(4096)
        .map_exec(false)
        .queue_capacity(1)
        .start()
        .unwrap();
    let mut pids = HashSet::new();
    for _ in 0..60 {
        let mut child = Command::new("/bin/true").spawn().unwrap();
        pids.insert(child.id());
        assert!(child.wait().unwrap().success());
    }
    let mut ours = 0;
    loop {
        let batch = events.next_batch(Duration::from_millis(500), 64);
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 64);
        ours += batch.iter().filter(|e| pids.contains(&e.pid)).count() as u64;
    }
    let dropped = events.dropped();
    println!("{test}: {ours} events of 180 arrived, {dropped:?} dropped");
    assert!(dropped.total() > 0, "{dropped:?}");
    assert!(ours + dropped.total() >= 3 * 60, "{ours} + {dropped:?}");
    assert_eq!(dropped.map_exec, 0);
    events.stop().unwrap();
}

/// The poll source needs no BPF: children that live longer than its
/// interval are seen to start (running another program than this one) and
/// to exit, with /proc's start time.
#[test]
fn the_poll_source_sees_longer_lived_children() {
    let mut events = ProcessEvents::builder()
        .source(EventSource::Poll)
        .poll_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    assert_eq!(events.source(), EventSource::Poll);
    assert!(events.fallback().is_none());
    let mut children: Vec<_> = (0..5)
        .map(|_| Command::new("/bin/sleep").arg("0.5").spawn().unwrap())
        .collect();
    let ticks: HashMap<u32, u64> = children
        .iter()
        .map(|child| (child.id(), start_ticks(child.id())))
        .collect();
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let exited = |seen: &[ProcessEvent]| {
        ticks.keys().all(|pid| {
            seen.iter()
                .any(|e| e.pid == *pid && matches!(e.kind, ProcessEventKind::Exit { .. }))
        })
    };
    while !exited(&seen) && Instant::now() < deadline {
        if let Some(event) = events.next_timeout(Duration::from_millis(100)) {
            seen.push(event);
        }
    }
    let pids = by_pid(&seen);
    let me = std::process::id();
    for (pid, start) in &ticks {
        let mine = pids.get(pid).unwrap_or_else(|| panic!("nothing of {pid}"));
        let kinds: Vec<_> = mine.iter().map(|e| e.kind.clone()).collect();
        let [
            ProcessEventKind::Fork { parent },
            ProcessEventKind::Exec { filename },
            ProcessEventKind::Exit { status: None },
        ] = &kinds[..]
        else {
            panic!("pid {pid}: {kinds:?}");
        };
        assert_eq!(*parent, me);
        assert_eq!(filename.file_name().unwrap(), "sleep", "{filename:?}");
        assert!(
            mine.iter().all(|e| e.start_ticks == Some(*start)),
            "{mine:?}"
        );
        // A scan between the child's fork and its exec sees this thread's
        // name on the Fork (as the kernel source would); the Exec has the new one.
        assert_eq!(mine[1].comm, "sleep", "{mine:?}");
    }
    events.stop().unwrap();
}

const NO_CAPS_CHILD: &str = "ROVER_TEST_NO_CAPS_CHILD";

/// Runs `no_caps_child` in a copy of this test binary that keeps uid 0 but
/// holds no capability (every one dropped from its bounding set before the
/// exec), where the kernel source cannot load.
#[test]
fn without_privileges_auto_polls_and_says_why() {
    let test = "without_privileges_auto_polls_and_says_why";
    if !testkit::require_root(test) {
        return;
    }
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "no_caps_child", "--ignored", "--nocapture"])
        .env(NO_CAPS_CHILD, "1");
    // SAFETY: prctl is async-signal-safe and the closure allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            for cap in 0..64 {
                // Capabilities this kernel does not know fail with EINVAL.
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    let stdout = support::child_passed(&output);
    assert!(
        stdout.contains("no_caps_child: polling because"),
        "{stdout}"
    );
}

#[test]
#[ignore = "run by without_privileges_auto_polls_and_says_why"]
fn no_caps_child() {
    if std::env::var_os(NO_CAPS_CHILD).is_none() {
        return;
    }
    let mut events = ProcessEvents::start().unwrap();
    assert_eq!(events.source(), EventSource::Poll);
    let fallback = events.fallback().expect("no reason for the fallback");
    assert!(fallback.is_privileges(), "{fallback}");
    println!("no_caps_child: polling because {fallback}");
    assert_eq!(events.hook(), None);
    assert!(events.map_exec_unavailable().is_some());
    let mut child = Command::new("/bin/sleep").arg("0.5").spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let deadline = Instant::now() + PATIENCE;
    let mut kinds = Vec::new();
    while !matches!(kinds.last(), Some(ProcessEventKind::Exit { .. })) && Instant::now() < deadline
    {
        if let Some(event) = events.next_timeout(Duration::from_millis(100))
            && event.pid == pid
        {
            kinds.push(event.kind);
        }
    }
    assert!(
        matches!(
            kinds[..],
            [
                ProcessEventKind::Fork { .. },
                ProcessEventKind::Exec { .. },
                ProcessEventKind::Exit { status: None }
            ]
        ),
        "{kinds:?}"
    );
    events.stop().unwrap();
}
