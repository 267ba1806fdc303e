//! A stream of process events: new processes, execs, exits and executable
//! code mapped into a process, from kernel tracepoints through a BPF ring
//! buffer ([`EventSource::Kernel`]), or from scans of /proc
//! ([`EventSource::Poll`]) where the programs cannot load.
//!
//! [`ProcessEvents`] is a `futures` [`Stream`] fed by a thread of its own
//! (no executor is assumed), with blocking and non-blocking reads for code
//! without one. See `docs/process-events.md` for the ordering guarantees,
//! what is lost when the ring buffer is full, and the poll source's limits.
//!
//! ```no_run
//! use rover_core::process::events::{ProcessEventKind, ProcessEvents};
//!
//! let mut events = ProcessEvents::start()?;
//! println!("source: {:?}", events.source());
//! while let Some(event) = events.next_blocking() {
//!     match event.kind {
//!         ProcessEventKind::Exec { filename } => println!("{} ran {}", event.pid, filename.display()),
//!         ProcessEventKind::Exit { status } => println!("{} exited: {status:?}", event.pid),
//!         _ => {}
//!     }
//! }
//! # Ok::<(), rover_core::Error>(())
//! ```

mod poll;
mod queue;
mod sys;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use futures::Stream;

use super::ProcessInfo;
use super::info::Host;
pub use crate::loader::{DEFAULT_RING_SIZE, ProcessHook};
use crate::loader::{Environment, ProcEventsConfig, ProcEventsProgram};
use crate::{Error, Profiler};
use queue::{Full, Queue};
use sys::{StopSignal, Wake};

/// The default interval of [`EventSource::Poll`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Events a stream holds for a consumer that is behind, by default. When
/// it is full the source waits: the kernel's ring buffer fills, and what
/// does not fit there is dropped and counted ([`ProcessEvents::dropped`]).
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// One thing that happened to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessEvent {
    /// What happened.
    pub kind: ProcessEventKind,
    /// The process (its tgid, what /proc lists).
    pub pid: u32,
    /// The thread it happened on: the child itself for a fork, the thread
    /// that called execve (its id before the exec) for an exec, the last
    /// thread for an exit, the thread that mapped for a map. The poll
    /// source knows no threads and gives `pid`.
    pub tid: u32,
    /// The process's command name (its main thread's, at most 15 bytes): the
    /// parent's for a fork, the new program's for an exec.
    pub comm: String,
    /// When, in nanoseconds of `CLOCK_BOOTTIME`. The poll source dates a
    /// fork by the process's start time (10 ms resolution) and other events
    /// by the scan that saw them.
    pub boot_ns: u64,
    /// [`boot_ns`](Self::boot_ns) as wall-clock time, with the offset
    /// between the clocks taken when the stream started.
    pub time: SystemTime,
    /// The process's start time in clock ticks since boot, as field 22 of
    /// `/proc/PID/stat` says it: with `pid`, the identity of a process,
    /// which a pid given again does not share. `None` when unknown (a fork
    /// seen by the classic hook whose child was made a sibling with
    /// `CLONE_PARENT`).
    pub start_ticks: Option<u64>,
    /// What [`processes`](super::processes) lists of the process, read
    /// when the event was received: for a fork or an exec read then (the
    /// new program's, for an exec), for a mapping the last read, for an
    /// exit the last read while it lived. `None` when it could not be read
    /// (gone already, or no permission), for processes met first at their
    /// exit, and when turned off ([`ProcessEventsBuilder::process_info`]).
    pub info: Option<Arc<ProcessInfo>>,
}

/// What happened to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessEventKind {
    /// A new process (not a new thread) was created.
    Fork {
        /// The process that forked it (its tgid).
        parent: u32,
    },
    /// The process runs a new program.
    Exec {
        /// The file execve was given, as given (possibly relative; at most
        /// 255 bytes from the kernel). The poll source gives the target of
        /// `/proc/PID/exe`, or an empty path for a process it may not look into.
        filename: PathBuf,
    },
    /// The process's last thread exited.
    Exit {
        /// How it ended; `None` from the poll source, which cannot know.
        status: Option<ExitStatus>,
    },
    /// The process mapped executable code (a library loaded, `dlopen`, JIT
    /// code): its `/proc/PID/maps` changed. Kernel source only.
    MapExec {
        /// The mapping's address.
        addr: u64,
        /// Its length in bytes.
        len: u64,
        /// How it was mapped.
        mapping: ExecMapping,
    },
}

/// How executable code was mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExecMapping {
    /// `mmap` of a file with `PROT_EXEC`.
    File,
    /// `mmap` of anonymous memory with `PROT_EXEC`.
    Anonymous,
    /// `mprotect` adding `PROT_EXEC` to memory mapped before.
    Mprotect,
}

/// A process's exit status as the kernel keeps it (a wait status).
///
/// ```
/// use rover_core::process::events::ExitStatus;
/// let status = ExitStatus::from_raw(7 << 8);
/// assert_eq!((status.code(), status.signal()), (Some(7), None));
/// let killed = ExitStatus::from_raw(9);
/// assert_eq!((killed.code(), killed.signal()), (None, Some(9)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus(i32);

impl ExitStatus {
    /// The status from its raw wait-status value.
    pub const fn from_raw(raw: i32) -> Self {
        ExitStatus(raw)
    }

    /// The raw wait status (`code << 8`, or the signal and the core-dump bit).
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The exit code, when the process exited rather than being killed.
    pub const fn code(self) -> Option<i32> {
        if self.0 & 0x7f == 0 {
            Some((self.0 >> 8) & 0xff)
        } else {
            None
        }
    }

    /// The signal that killed the process, when one did.
    pub const fn signal(self) -> Option<i32> {
        match self.0 & 0x7f {
            0 => None,
            signal => Some(signal),
        }
    }

    /// Whether the process dumped core.
    pub const fn core_dumped(self) -> bool {
        self.signal().is_some() && self.0 & 0x80 != 0
    }
}

/// Where process events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EventSource {
    /// The kernel source, or the poll source when the programs cannot load
    /// ([`ProcessEvents::fallback`] says why).
    #[default]
    Auto,
    /// Kernel tracepoints through a BPF ring buffer: every process, with
    /// exit statuses and executable mappings. Needs root (or CAP_BPF with
    /// CAP_PERFMON), BTF and ring buffers (Linux 5.8).
    Kernel,
    /// Scans of /proc every interval. Misses processes that live shorter
    /// than the interval, and gives no exit status or mappings.
    Poll,
}

/// Records lost because the kernel's ring buffer was full, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DroppedEvents {
    /// Fork records.
    pub fork: u64,
    /// Exec records.
    pub exec: u64,
    /// Exit records.
    pub exit: u64,
    /// Map records.
    pub map_exec: u64,
}

impl DroppedEvents {
    /// Every record lost.
    pub fn total(&self) -> u64 {
        self.fork + self.exec + self.exit + self.map_exec
    }
}

/// Configures and starts [`ProcessEvents`].
///
/// ```no_run
/// use std::time::Duration;
/// use rover_core::process::events::{EventSource, ProcessEvents};
///
/// let events = ProcessEvents::builder()
///     .source(EventSource::Poll)
///     .poll_interval(Duration::from_millis(50))
///     .start()?;
/// # Ok::<(), rover_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProcessEventsBuilder {
    source: EventSource,
    poll_interval: Duration,
    kernel: ProcEventsConfig,
    queue_capacity: usize,
    environment: Option<Environment>,
    proc: PathBuf,
    process_info: bool,
}

impl Default for ProcessEventsBuilder {
    fn default() -> Self {
        ProcessEventsBuilder {
            source: EventSource::Auto,
            poll_interval: DEFAULT_POLL_INTERVAL,
            kernel: ProcEventsConfig::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            environment: None,
            proc: PathBuf::from("/proc"),
            process_info: true,
        }
    }
}

impl ProcessEventsBuilder {
    /// Whether events carry the process's [`ProcessInfo`]
    /// ([`ProcessEvent::info`]; default yes). Reading it costs a few `/proc`
    /// reads per fork and exec, on the stream's thread.
    pub fn process_info(mut self, read: bool) -> Self {
        self.process_info = read;
        self
    }

    /// Uses an environment already checked (no second privilege check or
    /// feature probe).
    pub(crate) fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Where events come from (default [`EventSource::Auto`]).
    pub fn source(mut self, source: EventSource) -> Self {
        self.source = source;
        self
    }

    /// How often the poll source scans /proc (default 100 ms; at least 1 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The kernel ring buffer's size in bytes: a power of two of at least a
    /// page (default [`DEFAULT_RING_SIZE`], 256 KiB).
    pub fn ring_size(mut self, bytes: u32) -> Self {
        self.kernel.ring_size = bytes;
        self
    }

    /// The kernel source's hooks (default: the BTF tracepoints where the
    /// kernel has them, else the classic ones).
    pub fn hook(mut self, hook: ProcessHook) -> Self {
        self.kernel.hook = Some(hook);
        self
    }

    /// Whether the kernel source reports executable mappings (default yes;
    /// they cost a check on every `mmap` and `mprotect` of every process).
    pub fn map_exec(mut self, map_exec: bool) -> Self {
        self.kernel.map_exec = map_exec;
        self
    }

    /// Events held for a consumer that is behind (default
    /// [`DEFAULT_QUEUE_CAPACITY`]); then the source waits for it.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events.max(1);
        self
    }

    /// Starts the stream: the kernel programs are attached, or the first
    /// /proc scan taken, before this returns, so every process created from
    /// then on is reported.
    pub fn start(self) -> Result<ProcessEvents, Error> {
        self.kernel.validate()?;
        match self.source {
            EventSource::Poll => self.start_poll(None),
            EventSource::Kernel => self.start_kernel(),
            EventSource::Auto => match self.clone().start_kernel() {
                Ok(events) => Ok(events),
                Err(error) => self.start_poll(Some(error)),
            },
        }
    }

    fn start_kernel(self) -> Result<ProcessEvents, Error> {
        let environment = match self.environment {
            Some(environment) => environment,
            None => Environment::check()?,
        };
        let program = ProcEventsProgram::attach_checked(&self.kernel, &environment)?;
        let hook = program.hook();
        let map_exec_unavailable = program.map_exec_unavailable().map(str::to_owned);
        let mut enricher = Enricher::new(self.process_info);
        let mut events = ProcessEvents::spawn(self.queue_capacity, move |shared| {
            run_kernel(program, &mut enricher, shared)
        })?;
        events.source = EventSource::Kernel;
        events.hook = Some(hook);
        events.map_exec_unavailable = map_exec_unavailable;
        Ok(events)
    }

    fn start_poll(self, fallback: Option<Error>) -> Result<ProcessEvents, Error> {
        let mut poller = poll::Poller::new(&self.proc)?;
        let interval = self.poll_interval;
        let mut enricher = Enricher::new(self.process_info);
        let mut events = ProcessEvents::spawn(self.queue_capacity, move |shared| {
            run_poll(&mut poller, interval, &mut enricher, shared)
        })?;
        events.source = EventSource::Poll;
        events.fallback = fallback;
        events.map_exec_unavailable = Some("the poll source does not see mappings".into());
        Ok(events)
    }

    /// Reads processes from another /proc (a test's fixture).
    #[cfg(test)]
    fn proc_root(mut self, proc: &std::path::Path) -> Self {
        self.proc = proc.to_owned();
        self
    }
}

/// What the source thread and the handle share.
struct Shared {
    queue: Queue,
    stop: StopSignal,
    dropped: Mutex<DroppedEvents>,
}

/// A running stream of process events: a [`Stream`] of [`ProcessEvent`]s,
/// also read with [`next_blocking`](Self::next_blocking),
/// [`next_timeout`](Self::next_timeout) and [`try_next`](Self::try_next).
///
/// It ends when stopped, or when its source fails ([`ProcessEvents::stop`]
/// returns the error). Dropping it stops the source's thread, which
/// detaches the kernel programs, without waiting; [`stop`](Self::stop)
/// waits until they are detached.
///
/// ```no_run
/// # async fn run() -> Result<(), rover_core::Error> {
/// use futures::StreamExt;
/// let profiler = rover_core::Profiler::new()?;
/// let mut events = profiler.process_events().start()?;
/// while let Some(event) = events.next().await {
///     println!("{} {} {:?}", event.pid, event.comm, event.kind);
/// }
/// # Ok(()) }
/// ```
pub struct ProcessEvents {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), Error>>>,
    source: EventSource,
    hook: Option<ProcessHook>,
    fallback: Option<Error>,
    map_exec_unavailable: Option<String>,
}

impl std::fmt::Debug for ProcessEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessEvents")
            .field("source", &self.source)
            .field("hook", &self.hook)
            .field("fallback", &self.fallback)
            .field("map_exec_unavailable", &self.map_exec_unavailable)
            .finish_non_exhaustive()
    }
}

impl ProcessEvents {
    /// Starts a stream with the defaults: [`EventSource::Auto`], checking
    /// privileges and the kernel itself.
    pub fn start() -> Result<Self, Error> {
        Self::builder().start()
    }

    /// Configures a stream.
    pub fn builder() -> ProcessEventsBuilder {
        ProcessEventsBuilder::default()
    }

    fn spawn(
        capacity: usize,
        run: impl FnOnce(&Shared) -> Result<(), Error> + Send + 'static,
    ) -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            queue: Queue::new(capacity),
            stop: StopSignal::new().map_err(|source| Error::Io {
                what: "creating the process events' stop eventfd".into(),
                source,
            })?,
            dropped: Mutex::new(DroppedEvents::default()),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("rover-procevents".into())
            .spawn(move || {
                let result = run(&thread_shared);
                thread_shared.queue.end();
                result
            })
            .map_err(|source| Error::Io {
                what: "spawning the process events' thread".into(),
                source,
            })?;
        Ok(ProcessEvents {
            shared,
            thread: Some(thread),
            source: EventSource::Poll,
            hook: None,
            fallback: None,
            map_exec_unavailable: None,
        })
    }

    /// The source that runs: [`EventSource::Kernel`] or [`EventSource::Poll`],
    /// never `Auto`.
    pub fn source(&self) -> EventSource {
        self.source
    }

    /// Why an [`EventSource::Auto`] stream polls /proc: the error that kept
    /// the kernel programs from loading.
    pub fn fallback(&self) -> Option<&Error> {
        self.fallback.as_ref()
    }

    /// The kernel source's hooks; `None` for the poll source.
    pub fn hook(&self) -> Option<ProcessHook> {
        self.hook
    }

    /// Why no [`ProcessEventKind::MapExec`] events come, when none can (the
    /// poll source; a kernel without syscall tracepoints; `map_exec(false)`).
    pub fn map_exec_unavailable(&self) -> Option<&str> {
        self.map_exec_unavailable.as_deref()
    }

    /// Records the kernel lost because its ring buffer was full, as of the
    /// source's last look (whenever the ring buffer was empty, every 100 ms
    /// while records keep coming, and when the stream's queue was full). Always zero for the poll source, whose losses (processes
    /// shorter than its interval) cannot be counted.
    pub fn dropped(&self) -> DroppedEvents {
        *self
            .shared
            .dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The next event, blocking the calling thread; `None` once the stream
    /// ended.
    pub fn next_blocking(&mut self) -> Option<ProcessEvent> {
        self.shared.queue.pop(None)
    }

    /// The next event, waiting up to `timeout`; `None` when none came in
    /// time or the stream ended ([`is_finished`](Self::is_finished) tells).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<ProcessEvent> {
        self.shared.queue.pop(Some(timeout))
    }

    /// The events that arrive within `timeout`: waits for the first, then
    /// takes every other one waiting, up to `max` in all; empty when none
    /// came in time or the stream ended. For a consumer that handles events
    /// in batches on a thread of its own.
    pub fn next_batch(&mut self, timeout: Duration, max: usize) -> Vec<ProcessEvent> {
        self.shared.queue.pop_batch(timeout, max)
    }

    /// The next event if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Option<ProcessEvent> {
        self.shared.queue.try_pop()
    }

    /// Whether the stream ended and every event was read.
    pub fn is_finished(&self) -> bool {
        self.shared.queue.is_finished()
    }

    /// Stops the source and waits for its thread: the kernel programs are
    /// detached when this returns. Returns the error that ended the source,
    /// if one did. Events not read yet are discarded.
    pub fn stop(mut self) -> Result<(), Error> {
        self.request_stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) | None => Err(Error::EventThreadLost),
        }
    }

    fn request_stop(&self) {
        self.shared.queue.close();
        self.shared.stop.signal();
    }
}

impl Stream for ProcessEvents {
    type Item = ProcessEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProcessEvent>> {
        self.shared.queue.poll_pop(cx)
    }
}

impl Drop for ProcessEvents {
    /// Stops the source's thread, which detaches the programs; nothing
    /// here waits.
    fn drop(&mut self) {
        self.request_stop();
    }
}

impl Profiler {
    /// Starts configuring a stream of process events, with this profiler's
    /// checked environment (no second privilege check or feature probe).
    ///
    /// ```no_run
    /// let profiler = rover_core::Profiler::new()?;
    /// let events = profiler.process_events().start()?;
    /// println!("{:?}, MapExec: {:?}", events.source(), events.map_exec_unavailable());
    /// # Ok::<(), rover_core::Error>(())
    /// ```
    pub fn process_events(&self) -> ProcessEventsBuilder {
        ProcessEventsBuilder {
            environment: Some(self.environment().clone()),
            ..ProcessEventsBuilder::default()
        }
    }
}

/// How long the kernel source may go without refreshing its drop counts
/// while records keep coming.
const DROPS_REFRESH: Duration = Duration::from_millis(100);
/// Records taken from the ring buffer at a time.
const BATCH: usize = 256;

fn run_kernel(
    mut program: ProcEventsProgram,
    enricher: &mut Enricher,
    shared: &Shared,
) -> Result<(), Error> {
    let refresh = |program: &ProcEventsProgram| -> Result<(), Error> {
        let dropped = program.dropped()?;
        *shared
            .dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = dropped;
        Ok(())
    };
    let mut refreshed = Instant::now();
    loop {
        let batch = program.read(BATCH);
        if batch.is_empty() {
            refresh(&program)?;
            refreshed = Instant::now();
            // Woken by the ring buffer's notification; the timeout only
            // bounds a missed one.
            match shared
                .stop
                .wait(Some(program.ring_fd()), Some(Duration::from_secs(1)))
            {
                Wake::Stop => return Ok(()),
                Wake::Ready | Wake::Timeout => continue,
            }
        }
        for mut event in batch {
            enricher.enrich(&mut event);
            match shared.queue.try_push(event) {
                Ok(()) => {}
                Err(Full::Closed) => return Ok(()),
                Err(Full::Full(event)) => {
                    refresh(&program)?;
                    if !shared.queue.push(event) {
                        return Ok(());
                    }
                }
            }
        }
        if refreshed.elapsed() >= DROPS_REFRESH {
            refresh(&program)?;
            refreshed = Instant::now();
        }
    }
}

fn run_poll(
    poller: &mut poll::Poller,
    interval: Duration,
    enricher: &mut Enricher,
    shared: &Shared,
) -> Result<(), Error> {
    let mut next = Instant::now() + interval;
    loop {
        let left = next.saturating_duration_since(Instant::now());
        if shared.stop.wait(None, Some(left)) == Wake::Stop || shared.queue.is_closed() {
            return Ok(());
        }
        next += interval;
        for mut event in poller.poll()? {
            enricher.enrich(&mut event);
            if !shared.queue.push(event) {
                return Ok(());
            }
        }
    }
}

/// Processes known at once, at most; past it, those that are gone are
/// forgotten (their exits were lost with a full ring buffer).
const MAX_KNOWN: usize = 65_536;

/// Fills [`ProcessEvent::info`] on the stream's thread.
struct Enricher {
    enabled: bool,
    /// Boot time, clock ticks and users, read once.
    host: Option<Host>,
    known: std::collections::HashMap<u32, Arc<ProcessInfo>>,
}

impl Enricher {
    fn new(enabled: bool) -> Self {
        Enricher {
            enabled,
            host: if enabled { Host::read().ok() } else { None },
            known: std::collections::HashMap::new(),
        }
    }

    fn read(&mut self, pid: u32) -> Option<Arc<ProcessInfo>> {
        let host = self.host.as_ref()?;
        let info = Arc::new(ProcessInfo::read_in(pid, host).ok()?);
        if self.known.len() >= MAX_KNOWN {
            self.known
                .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
        self.known.insert(pid, info.clone());
        Some(info)
    }

    fn enrich(&mut self, event: &mut ProcessEvent) {
        if !self.enabled {
            return;
        }
        let pid = event.pid;
        event.info = match event.kind {
            ProcessEventKind::Fork { .. } | ProcessEventKind::Exec { .. } => self.read(pid),
            ProcessEventKind::MapExec { .. } => match self.known.get(&pid) {
                Some(info) => Some(info.clone()),
                None => self.read(pid),
            },
            ProcessEventKind::Exit { .. } => self.known.remove(&pid),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn streams_cross_threads() {
        fn send_unpin<T: Send + Unpin>() {}
        send_unpin::<ProcessEvents>();
        send_unpin::<ProcessEvent>();
    }

    #[test]
    fn a_bad_ring_size_is_refused_before_anything_runs() {
        let error = ProcessEvents::builder()
            .source(EventSource::Poll)
            .ring_size(1000)
            .start()
            .unwrap_err();
        assert!(matches!(error, Error::Config(_)), "{error}");
    }

    /// The poll source over a fake /proc: a process appears, then goes.
    #[test]
    fn the_poll_source_reports_a_fake_proc() {
        let proc = tempfile::tempdir().unwrap();
        let add = |pid: u32, ppid: u32, start: u64| {
            let dir = proc.path().join(pid.to_string());
            fs::create_dir(&dir).unwrap();
            let stat =
                format!("{pid} (fake) S {ppid} 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
            fs::write(dir.join("stat"), stat).unwrap();
        };
        add(1, 0, 5);
        let mut events = ProcessEvents::builder()
            .source(EventSource::Poll)
            .poll_interval(Duration::from_millis(5))
            .proc_root(proc.path())
            .start()
            .unwrap();
        assert_eq!(events.source(), EventSource::Poll);
        assert!(events.map_exec_unavailable().is_some());
        add(77, 1, 9);
        let batch = events.next_batch(Duration::from_secs(5), 10);
        let [fork] = &batch[..] else {
            panic!("{batch:?}");
        };
        assert_eq!(
            (fork.pid, fork.kind.clone()),
            (77, ProcessEventKind::Fork { parent: 1 })
        );
        assert_eq!(fork.start_ticks, Some(9));
        fs::remove_dir_all(proc.path().join("77")).unwrap();
        let exit = events.next_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (exit.pid, exit.kind),
            (77, ProcessEventKind::Exit { status: None })
        );
        assert_eq!(events.try_next(), None);
        assert_eq!(events.dropped().total(), 0);
        // Through the Stream: pending first, then woken by the source thread.
        let later = {
            let dir = proc.path().join("78");
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                fs::create_dir(&dir).unwrap();
                fs::write(
                    dir.join("stat"),
                    "78 (late) S 1 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12 0 0",
                )
                .unwrap();
            })
        };
        let fork = futures::executor::block_on(futures::StreamExt::next(&mut events)).unwrap();
        later.join().unwrap();
        assert_eq!((fork.pid, fork.comm.as_str()), (78, "late"));
        assert!(!events.is_finished());
        events.stop().unwrap();
    }

    #[test]
    fn a_stopped_stream_ends() {
        let proc = tempfile::tempdir().unwrap();
        let mut events = ProcessEvents::builder()
            .source(EventSource::Poll)
            .proc_root(proc.path())
            .start()
            .unwrap();
        events.request_stop();
        assert_eq!(
            futures::executor::block_on(futures::StreamExt::next(&mut events)),
            None
        );
        assert!(events.is_finished());
        assert_eq!(events.next_blocking(), None);
        events.stop().unwrap();
    }
}
