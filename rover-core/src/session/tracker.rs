//! The process tracker: what symbolization needs, captured while processes
//! live, and released once every session has symbolized their last window.
//!
//! One per [`Profiler`](crate::Profiler), shared by its sessions, running
//! while any session does. It follows process events (exec, executable
//! code mapped, exit) and:
//! - at exec and at each mapping of code, captures the process for the
//!   symbolizer ([`Symbolizer::capture_process`]: its maps and the modules
//!   of its executable mappings) and tells the sessions' unwind-table
//!   services, so a process living 200 ms is symbolized and unwound after
//!   it is gone;
//! - at exit, waits until every session has drained a window that began
//!   after it, then releases what the symbolizer kept for it (captured or
//!   cached while symbolizing), so churn does not grow memory.
//!
//! Captures are bounded ([`MAX_CAPTURED`]); past the bound, processes that
//! exited are released first and new ones are not captured (counted).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rover_symbolize::Symbolizer;

use crate::loader::unwind::TableNotifier;
use crate::loader::{Environment, Targets};
use crate::process::ProcessInfo;
use crate::process::events::{ExecMapping, ProcessEventKind, ProcessEvents};
use crate::process::info::Host;
use crate::profile::ProcessIdentity;

/// Processes captured at once, at most. Each holds its maps (a few KiB)
/// and references to modules the symbolizer's cache shares.
pub const MAX_CAPTURED: usize = 4096;

/// A process event the tracker acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The process exec'd (or forked): a new image, and what the event
    /// read of the process.
    Exec(u32, Option<Arc<ProcessInfo>>),
    /// The process mapped executable code (a library, `dlopen`).
    MappedCode(u32, Option<Arc<ProcessInfo>>),
    /// The process (its whole thread group) exited.
    Exit(u32),
}

/// Which processes a session records, for deciding what to capture.
#[derive(Debug, Clone)]
enum Interest {
    All,
    Pids(HashSet<u32>),
    /// A cgroup v2 directory, as `/proc/PID/cgroup` names it (relative to
    /// the cgroup2 mount).
    Cgroup(String),
}

impl Interest {
    fn of(targets: &Targets) -> Interest {
        match targets {
            Targets::All => Interest::All,
            Targets::Pids(pids) => Interest::Pids(pids.iter().copied().collect()),
            Targets::Cgroup(path) => Interest::Cgroup(cgroup_name(path)),
        }
    }
}

/// `/sys/fs/cgroup/a/b` as `/proc/PID/cgroup` writes it: `/a/b`.
fn cgroup_name(path: &std::path::Path) -> String {
    let text = path.to_string_lossy();
    let name = text.strip_prefix("/sys/fs/cgroup").unwrap_or(&text);
    let name = name.trim_end_matches('/');
    if name.is_empty() {
        "/".to_string()
    } else {
        name.to_string()
    }
}

fn in_cgroup(pid: u32, cgroup: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("0::"))
        .any(|own| {
            own == cgroup
                || (own.starts_with(cgroup)
                    && (cgroup == "/" || own.as_bytes().get(cgroup.len()) == Some(&b'/')))
        })
}

struct Subscriber {
    interest: Interest,
    notifier: Option<TableNotifier>,
    /// When the buffer of the last window this session symbolized was
    /// swapped: samples of a process that exited before it are all in
    /// windows already symbolized.
    drained: Instant,
}

use crate::stats::ProcessTracking as TrackerCounts;

#[derive(Default)]
struct State {
    subscribers: HashMap<u64, Subscriber>,
    next_id: u64,
    /// Processes captured and not yet released.
    captured: HashSet<u32>,
    /// Their identities, read at capture.
    identities: HashMap<u32, Arc<ProcessIdentity>>,
    /// Boot time, clock ticks and users, for reading identities; read once.
    host: Option<Host>,
    /// Processes that exited, with when the tracker learnt it, oldest first.
    exited: VecDeque<(u32, Instant)>,
    counts: TrackerCounts,
}

/// Where the tracker's events come from: called on the tracker's thread
/// until the last session ends, each call returning the events that
/// arrived within about `timeout` (an empty batch is fine).
pub(crate) trait EventSource: Send {
    fn next_batch(&mut self, timeout: std::time::Duration) -> Vec<Seen>;

    /// Closes the source, returning once its kernel programs are detached
    /// and its fds closed.
    fn close(self: Box<Self>);
}

/// Opens the event source when the first session starts; `None` when no
/// source can run (the tracker then only captures pid targets, and
/// releases exited processes when the last session ends).
pub(crate) type OpenSource = Arc<dyn Fn() -> Option<Box<dyn EventSource>> + Send + Sync>;

/// How long the thread waits for events before looking at its sessions:
/// also how long the last session's stop may wait for the source to close.
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// See the module documentation.
pub(crate) struct Tracker {
    /// Off: [`ProfilerBuilder::track_processes`](crate::ProfilerBuilder::track_processes)`(false)`.
    capture: bool,
    symbolizer: Arc<Symbolizer>,
    state: Mutex<State>,
    open: OpenSource,
    /// Whether the thread reading the source runs.
    running: Mutex<bool>,
    /// Signalled when the thread stops running.
    stopped: std::sync::Condvar,
}

/// A session's registration with the tracker; unregisters when dropped.
pub(crate) struct Subscription {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Subscription {
    /// The tracker this subscription belongs to.
    pub(crate) fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// The session symbolized a window whose buffer was swapped at
    /// `swapped`: processes that exited before it may be released.
    pub(crate) fn drained(&self, swapped: Instant) {
        let mut state = self.tracker.lock();
        if let Some(subscriber) = state.subscribers.get_mut(&self.id) {
            subscriber.drained = swapped;
        }
        self.tracker.release_due(&mut state);
    }
}

impl Subscription {
    /// The session's pid targets changed: capture the new ones.
    pub(crate) fn set_pids(&self, pids: &[u32]) {
        let mut state = self.tracker.lock();
        if let Some(subscriber) = state.subscribers.get_mut(&self.id) {
            subscriber.interest = Interest::Pids(pids.iter().copied().collect());
        }
        for &pid in pids {
            if !state.captured.contains(&pid) {
                self.tracker.capture(&mut state, pid, None);
            }
        }
    }
}

impl Drop for Subscription {
    /// The last session's end also waits (at most about [`BATCH_WAIT`])
    /// for the event source to close, so a stopped session leaves no fd
    /// of the tracker's behind.
    fn drop(&mut self) {
        let mut state = self.tracker.lock();
        state.subscribers.remove(&self.id);
        self.tracker.release_due(&mut state);
        let idle = state.subscribers.is_empty();
        drop(state);
        if idle {
            let mut running = self
                .tracker
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Until the thread stopped, or another session started (and
            // the thread goes on for it).
            while *running && !self.tracker.active() {
                running = match self.tracker.stopped.wait_timeout(running, BATCH_WAIT) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        }
    }
}

impl Tracker {
    /// A tracker whose events come from `open`; one that does not
    /// `capture` only counts sessions (no capture of pid targets either).
    pub(crate) fn new(
        symbolizer: Arc<Symbolizer>,
        open: OpenSource,
        capture: bool,
    ) -> Arc<Tracker> {
        Arc::new(Tracker {
            capture,
            symbolizer,
            state: Mutex::default(),
            open,
            running: Mutex::new(false),
            stopped: std::sync::Condvar::new(),
        })
    }

    /// Opens the event source and starts its thread unless it runs. It
    /// ends by itself once no session is registered (checked, under the `running` lock, after
    /// every batch, so a session registering meanwhile is never missed).
    fn ensure_running(self: &Arc<Self>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if *running || !self.capture {
            return;
        }
        let tracker = Arc::downgrade(self);
        // Opened here, so that the events of every process started after
        // the session's start are seen.
        let mut source = (self.open)();
        let spawned = std::thread::Builder::new()
            .name("rover-processes".into())
            .spawn(move || {
                loop {
                    let batch = match source.as_mut() {
                        Some(source) => source.next_batch(BATCH_WAIT),
                        None => {
                            std::thread::sleep(BATCH_WAIT);
                            Vec::new()
                        }
                    };
                    let Some(tracker) = tracker.upgrade() else {
                        if let Some(source) = source {
                            source.close();
                        }
                        return;
                    };
                    tracker.handle(&batch);
                    let mut running = tracker
                        .running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if !tracker.active() {
                        // Closed under the lock: a session starting now
                        // opens a new source once this one is gone.
                        if let Some(source) = source {
                            source.close();
                        }
                        *running = false;
                        tracker.stopped.notify_all();
                        return;
                    }
                }
            });
        *running = spawned.is_ok();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session recording `targets`, whose unwinder (if any)
    /// `notifier` reaches. The session's pid targets are captured at once.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        targets: &Targets,
        notifier: Option<TableNotifier>,
    ) -> Subscription {
        let interest = Interest::of(targets);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        if let Interest::Pids(pids) = &interest {
            for &pid in pids {
                self.capture(&mut state, pid, None);
            }
        }
        state.subscribers.insert(
            id,
            Subscriber {
                interest,
                notifier,
                drained: Instant::now(),
            },
        );
        drop(state);
        self.ensure_running();
        Subscription {
            tracker: Arc::clone(self),
            id,
        }
    }

    /// The identity of `pid` read when it was last captured.
    pub(crate) fn identity(&self, pid: u32) -> Option<Arc<ProcessIdentity>> {
        self.lock().identities.get(&pid).cloned()
    }

    /// Whether any session is registered (the event source runs only then).
    pub(crate) fn active(&self) -> bool {
        !self.lock().subscribers.is_empty()
    }

    pub(crate) fn counts(&self) -> TrackerCounts {
        let state = self.lock();
        TrackerCounts {
            held: state.captured.len() as u64,
            ..state.counts
        }
    }

    /// Acts on a batch of events, in order.
    pub(crate) fn handle(&self, events: &[Seen]) {
        let mut state = self.lock();
        for (at, event) in events.iter().enumerate() {
            match *event {
                Seen::Exec(pid, ref info) | Seen::MappedCode(pid, ref info) => {
                    // A library load is several mappings: a later event of
                    // the batch for the same process captures its newer
                    // state, unless it exits first.
                    let later = events[at + 1..].iter().find(|e| match e {
                        Seen::Exec(p, _) | Seen::MappedCode(p, _) => *p == pid,
                        Seen::Exit(p) => *p == pid,
                    });
                    if matches!(later, Some(Seen::Exec(..) | Seen::MappedCode(..))) {
                        continue;
                    }
                    let interested: Vec<Option<TableNotifier>> = state
                        .subscribers
                        .values()
                        .filter(|s| match &s.interest {
                            Interest::All => true,
                            Interest::Pids(pids) => pids.contains(&pid),
                            Interest::Cgroup(cgroup) => in_cgroup(pid, cgroup),
                        })
                        .map(|s| s.notifier.clone())
                        .collect();
                    if interested.is_empty() {
                        continue;
                    }
                    // The unwinder first: its thread loads the tables while
                    // this one captures for the symbolizer.
                    for notifier in interested.into_iter().flatten() {
                        notifier.changed(pid);
                    }
                    self.capture(&mut state, pid, info.as_deref());
                }
                Seen::Exit(pid) => state.exited.push_back((pid, Instant::now())),
            }
        }
        self.release_due(&mut state);
    }

    /// Captures `pid`, with `info` read of it already if the caller has it.
    fn capture(&self, state: &mut State, pid: u32, info: Option<&ProcessInfo>) {
        if !self.capture {
            return;
        }
        if !state.captured.contains(&pid) && state.captured.len() >= MAX_CAPTURED {
            self.release_exited(state, usize::MAX);
            if state.captured.len() >= MAX_CAPTURED {
                state.counts.capture_skipped += 1;
                return;
            }
        }
        // The identity first: a few small /proc reads, where the capture
        // loads the process's modules (under emulation, long enough for a
        // short-lived process to exit in between, leaving only a zombie's
        // stat to read, without its executable or command line).
        if state.host.is_none() {
            state.host = Host::read().ok();
        }
        let identity = match (info, &state.host) {
            (Some(info), _) => Some(ProcessIdentity::of(info)),
            (None, Some(host)) => ProcessInfo::read_in(pid, host)
                .ok()
                .map(|i| ProcessIdentity::of(&i)),
            (None, None) => None,
        };
        match self.symbolizer.capture_process(pid) {
            Ok(_) => {
                state.captured.insert(pid);
                state.counts.captured += 1;
                match identity {
                    Some(identity) => {
                        state.identities.insert(pid, Arc::new(identity));
                    }
                    None => {
                        state.identities.remove(&pid);
                    }
                }
            }
            // Gone already: its exit event follows.
            Err(_) => state.counts.capture_failed += 1,
        }
    }

    /// Releases processes that exited before every session's last drained
    /// window (all of them when no session runs).
    fn release_due(&self, state: &mut State) {
        let horizon = state.subscribers.values().map(|s| s.drained).min();
        let due = match horizon {
            Some(horizon) => state
                .exited
                .iter()
                .take_while(|(_, at)| *at < horizon)
                .count(),
            None => state.exited.len(),
        };
        self.release_exited(state, due);
    }

    /// Releases the `n` oldest exited processes.
    fn release_exited(&self, state: &mut State, n: usize) {
        for _ in 0..n {
            let Some((pid, _)) = state.exited.pop_front() else {
                break;
            };
            // Exited again later (the pid was reused): released then. Alive
            // now: a new process under the pid, whose capture replaced the
            // old one's.
            if state.exited.iter().any(|(p, _)| *p == pid) || Self::alive(pid) {
                continue;
            }
            self.symbolizer.evict_process(pid);
            state.captured.remove(&pid);
            state.identities.remove(&pid);
            state.counts.released += 1;
        }
    }

    /// Whether `pid` names a live process (a zombie is not: its memory is
    /// gone).
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| crate::process::info::Stat::parse(&text))
            .is_some_and(|stat| !matches!(stat.state, 'Z' | 'X' | 'x'))
    }
}

/// The process events of `environment`'s kernel ([`ProcessEvents`] with
/// `EventSource::Auto`: `/proc` polling where the programs cannot load), as
/// the tracker's source; `None` if neither can start.
pub(crate) fn open_events(environment: &Environment) -> Option<Box<dyn EventSource>> {
    // Without the stream's own info reads: they would delay every event
    // before the unwinder hears of it; the tracker reads the identity after.
    let events = ProcessEvents::builder()
        .environment(environment.clone())
        .process_info(false)
        .start()
        .ok()?;
    Some(Box::new(TrackedEvents(events)))
}

struct TrackedEvents(ProcessEvents);

/// Events taken per batch at most.
const BATCH_MAX: usize = 4096;

impl EventSource for TrackedEvents {
    fn next_batch(&mut self, timeout: std::time::Duration) -> Vec<Seen> {
        if self.0.is_finished() {
            // The source ended (its thread failed): nothing more will come.
            std::thread::sleep(timeout);
            return Vec::new();
        }
        self.0
            .next_batch(timeout, BATCH_MAX)
            .into_iter()
            .filter_map(|event| match event.kind {
                // A fork is not captured: the child runs its parent's
                // program, whose modules the capture would load on this
                // thread (seconds for a big binary under emulation) while
                // the execs queued behind it exit uncaptured. A child that
                // never execs is symbolized while it lives, as before.
                ProcessEventKind::Fork { .. } => None,
                ProcessEventKind::Exec { .. } => Some(Seen::Exec(event.pid, event.info)),
                ProcessEventKind::MapExec {
                    mapping: ExecMapping::File | ExecMapping::Mprotect,
                    ..
                } => Some(Seen::MappedCode(event.pid, event.info)),
                ProcessEventKind::Exit { .. } => Some(Seen::Exit(event.pid)),
                _ => None,
            })
            .collect()
    }

    fn close(self: Box<Self>) {
        // The error that ended the source, if one did, is of no use now.
        let _ = self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_events() -> Option<Box<dyn EventSource>> {
        None
    }

    /// A real child: captured when a session targets it, kept after it
    /// exits until the session drains a window swapped after the exit,
    /// then released.
    #[test]
    fn exited_processes_are_released_after_the_next_drain() {
        let symbolizer = Arc::new(Symbolizer::default());
        let tracker = Tracker::new(symbolizer.clone(), Arc::new(no_events), true);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = child.id();
        // `spawn` may return while the child is still in exec: wait for
        // the dynamic loader to have mapped libc.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|maps| maps.contains("libc.so"))
        {
            assert!(Instant::now() < deadline, "sleep never mapped libc");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let subscription = tracker.subscribe(&Targets::Pids(vec![pid]), None);
        assert!(symbolizer.captured_modules() > 0);
        assert_eq!(tracker.counts().captured, 1);
        let _ = child.kill();
        let _ = child.wait();
        tracker.handle(&[Seen::Exit(pid)]);
        // The session has not drained since: its last window may hold
        // samples of the process.
        assert!(symbolizer.captured_modules() > 0);
        assert_eq!(tracker.counts().released, 0);
        subscription.drained(Instant::now());
        assert_eq!(symbolizer.captured_modules(), 0);
        assert_eq!(tracker.counts().released, 1);
        // An exec of a process no session wants is not captured.
        tracker.handle(&[Seen::Exec(std::process::id(), None)]);
        assert_eq!(tracker.counts().captured, 1);
        drop(subscription);
        assert!(!tracker.active());
    }

    #[test]
    fn cgroup_names_are_those_of_proc_pid_cgroup() {
        assert_eq!(
            cgroup_name(std::path::Path::new("/sys/fs/cgroup/a/b/")),
            "/a/b"
        );
        assert_eq!(cgroup_name(std::path::Path::new("/sys/fs/cgroup")), "/");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
            assert!(in_cgroup(std::process::id(), path));
            assert!(in_cgroup(std::process::id(), "/"));
            assert!(!in_cgroup(std::process::id(), "/no-such-rover-cgroup"));
        }
    }
}
