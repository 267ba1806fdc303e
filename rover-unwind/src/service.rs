//! The unwinder service: a [`TableStore`] and a worker thread that builds
//! tables off the caller's thread and writes rows and process entries into
//! two sinks (BPF maps in rover-core, in-memory fakes in tests).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rover_symbolize::maps::MapPath;

use crate::cache::TableCache;
use crate::process::{ElfImage, MappedCode, ProcessError, ProcessMappings, TableKey};
use crate::row::Row;
use crate::store::{Failure, MappingEntry, StoreStats, TableRef, TableStore};

/// Where table rows go: the kernel's row array (`unwind_rows`).
pub trait RowSink: Send + 'static {
    /// Writes `rows` at indices `start..start + rows.len()`.
    fn write(&mut self, start: u32, rows: &[Row]) -> Result<(), String>;
}

/// Where process entries go: the kernel's per-process map
/// (`unwind_procs`, keyed by tgid).
pub trait ProcessSink: Send + 'static {
    /// Sets the entry of `tgid`: its mappings, sorted by address, at most
    /// [`MAX_MAPPINGS`](crate::MAX_MAPPINGS).
    fn set(&mut self, tgid: u32, mappings: &[MappingEntry]) -> Result<(), String>;
    /// Removes the entry of `tgid` (no entry is not an error).
    fn remove(&mut self, tgid: u32) -> Result<(), String>;
}

/// Why a request to the [`Unwinder`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnwinderError {
    /// The process's mappings could not be read.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The process sink refused an entry.
    #[error("the process sink failed for pid {pid}: {reason}")]
    Sink {
        /// The process.
        pid: u32,
        /// What the sink said.
        reason: String,
    },
}

/// The settings of an [`Unwinder`].
#[derive(Debug, Clone)]
pub struct UnwinderConfig {
    capacity_rows: u32,
    queue_limit: usize,
    cache: Option<TableCache>,
}

impl Default for UnwinderConfig {
    /// 2^20 rows (16 MiB, rover-core's default row array), 1024 queued
    /// builds.
    fn default() -> Self {
        UnwinderConfig {
            capacity_rows: 1 << 20,
            queue_limit: 1024,
            cache: None,
        }
    }
}

impl UnwinderConfig {
    /// The row array's size, in rows.
    pub fn capacity_rows(mut self, rows: u32) -> Self {
        self.capacity_rows = rows;
        self
    }

    /// The most table builds waiting at once. A table asked for past it is
    /// not built (counted in [`UnwinderStats::builds_dropped`]); its
    /// mappings stay pending until the process is refreshed.
    pub fn queue_limit(mut self, builds: usize) -> Self {
        self.queue_limit = builds;
        self
    }

    /// Built tables to take rather than build again, and to keep what is
    /// built (shared with other services given the same cache).
    pub fn cache(mut self, cache: TableCache) -> Self {
        self.cache = Some(cache);
        self
    }
}

/// What [`Unwinder::add_process`] and [`Unwinder::refresh`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessReport {
    /// Executable mappings in the entry.
    pub mappings: usize,
    /// Mappings whose table was already loaded.
    pub ready: usize,
    /// Mappings whose table is pending.
    pub pending: usize,
    /// Mappings with no table (frame pointers).
    pub no_table: usize,
    /// Executable mappings left out past
    /// [`MAX_MAPPINGS`](crate::MAX_MAPPINGS).
    pub dropped: usize,
    /// Table builds queued for it.
    pub queued: usize,
}

/// The service's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnwinderStats {
    /// The store's.
    pub store: StoreStats,
    /// Builds waiting or under way.
    pub queued: usize,
    /// Builds not queued because the queue was full.
    pub builds_dropped: u64,
    /// Writes a sink refused.
    pub sink_errors: u64,
    /// The last thing a sink said when it refused.
    pub last_sink_error: Option<String>,
}

/// A table to build.
struct Job {
    key: TableKey,
    image: ElfImage,
    what: String,
}

/// Where a process's table builds go in the service's queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// After the builds already queued: processes loaded ahead of need
    /// (every process on the machine when a session starts).
    #[default]
    Background,
    /// Before every build queued so far: a process being sampled now (met
    /// by the programs without its tables, started or changed during the
    /// session), whose walks stop until its tables land.
    Urgent,
}

struct State {
    store: TableStore,
    processes: Box<dyn ProcessSink>,
    queue: VecDeque<Job>,
    /// Keys queued or being built.
    queued: HashSet<TableKey>,
    busy: bool,
    shutdown: bool,
    builds_dropped: u64,
    sink_errors: u64,
    last_sink_error: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or shutdown is asked.
    work: Condvar,
    /// Signalled when a job is done.
    done: Condvar,
}

/// Keeps the kernel's unwind maps in step with processes: reads their
/// mappings, writes their entries at once (tables pending), builds the
/// missing tables on its own thread, writes their rows, then the entries
/// again.
///
/// Bounded: rows by the store's capacity (least recently used tables are
/// evicted), queued builds by [`UnwinderConfig::queue_limit`] (each holds a
/// read-only map of its file until it is built), kept failures by a fixed
/// count. The thread stops when the `Unwinder` is dropped (after the build
/// under way, if any).
///
/// ```no_run
/// use rover_unwind::{MappingEntry, ProcessSink, Row, RowSink, Unwinder, UnwinderConfig};
///
/// struct Rows;
/// impl RowSink for Rows {
///     fn write(&mut self, start: u32, rows: &[Row]) -> Result<(), String> {
///         println!("{} rows at {start}", rows.len());
///         Ok(())
///     }
/// }
/// struct Procs;
/// impl ProcessSink for Procs {
///     fn set(&mut self, tgid: u32, mappings: &[MappingEntry]) -> Result<(), String> {
///         println!("{tgid}: {} mappings", mappings.len());
///         Ok(())
///     }
///     fn remove(&mut self, _tgid: u32) -> Result<(), String> {
///         Ok(())
///     }
/// }
///
/// let unwinder = Unwinder::new(UnwinderConfig::default(), Rows, Procs)?;
/// unwinder.add_process(1234)?;
/// unwinder.wait_idle(std::time::Duration::from_secs(5));
/// println!("{:?}", unwinder.stats());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Unwinder {
    shared: Arc<Shared>,
    queue_limit: usize,
    worker: Option<JoinHandle<()>>,
}

impl Unwinder {
    /// Starts the service and its worker thread.
    pub fn new(
        config: UnwinderConfig,
        rows: impl RowSink,
        processes: impl ProcessSink,
    ) -> std::io::Result<Unwinder> {
        let cache = config.cache.clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                store: TableStore::new(config.capacity_rows),
                processes: Box::new(processes),
                queue: VecDeque::new(),
                queued: HashSet::new(),
                busy: false,
                shutdown: false,
                builds_dropped: 0,
                sink_errors: 0,
                last_sink_error: None,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("rover-unwind".into())
                .spawn(move || work(&shared, rows, cache))?
        };
        Ok(Unwinder {
            shared,
            queue_limit: config.queue_limit,
            worker: Some(worker),
        })
    }

    /// Reads the mappings of `pid` (a thread group id) and writes its
    /// entry, with the tables not loaded yet pending, then queues their
    /// builds after those already queued ([`Priority::Background`]).
    /// Returns at once: the builds run on the service's thread, which
    /// writes the entry again as each table lands.
    pub fn add_process(&self, pid: u32) -> Result<ProcessReport, UnwinderError> {
        self.add_process_with(pid, Priority::Background)
    }

    /// [`add_process`](Self::add_process), with its builds queued as
    /// `priority` says: [`Priority::Urgent`] puts them before every build
    /// queued so far, those of its tables already queued included.
    pub fn add_process_with(
        &self,
        pid: u32,
        priority: Priority,
    ) -> Result<ProcessReport, UnwinderError> {
        let mappings = ProcessMappings::read(pid)?;
        let mut state = self.lock();
        let entry = state.store.set_process(&mappings);
        let set = state.processes.set(pid, &entry);
        if let Err(reason) = set {
            state.sink_error(reason.clone());
            return Err(UnwinderError::Sink { pid, reason });
        }
        let mut report = ProcessReport {
            mappings: entry.len(),
            dropped: mappings.dropped(),
            ..ProcessReport::default()
        };
        for mapping in &entry {
            match mapping.table {
                TableRef::Rows { .. } => report.ready += 1,
                TableRef::Pending => report.pending += 1,
                TableRef::NoTable => report.no_table += 1,
            }
        }
        // Urgent builds, in the order of the mappings, to go first.
        let mut first: Vec<Job> = Vec::new();
        for mapping in mappings.mappings() {
            let MappedCode::Table { key, image } = &mapping.code else {
                continue;
            };
            if state.queued.contains(key) {
                // Queued for another process: moved up (unless it is the
                // build under way, which is in no queue).
                if priority == Priority::Urgent
                    && let Some(at) = state.queue.iter().position(|job| job.key == *key)
                    && let Some(job) = state.queue.remove(at)
                {
                    first.push(job);
                }
                continue;
            }
            if !state.store.needs(key) {
                continue;
            }
            if state.queue.len() + first.len() >= self.queue_limit {
                state.builds_dropped += 1;
                continue;
            }
            state.queued.insert(*key);
            let job = Job {
                key: *key,
                image: image.clone(),
                what: describe(&mapping.path),
            };
            match priority {
                Priority::Background => state.queue.push_back(job),
                Priority::Urgent => first.push(job),
            }
            report.queued += 1;
        }
        for job in first.into_iter().rev() {
            state.queue.push_front(job);
        }
        drop(state);
        self.shared.work.notify_one();
        Ok(report)
    }

    /// Reads the mappings of `pid` again, after an `exec` or a `dlopen`,
    /// and writes its entry as [`add_process`](Self::add_process) does,
    /// its builds [`Priority::Urgent`] (a process that changed is one that
    /// runs); tables it no longer maps stay in the store until evicted. A
    /// process that is gone has its entry removed, and the error says so.
    pub fn refresh(&self, pid: u32) -> Result<ProcessReport, UnwinderError> {
        match self.add_process_with(pid, Priority::Urgent) {
            Err(UnwinderError::Process(ProcessError::NoSuchProcess { pid })) => {
                self.remove(pid)?;
                Err(UnwinderError::Process(ProcessError::NoSuchProcess { pid }))
            }
            other => other,
        }
    }

    /// Removes the entry of `pid`. Whether it had one.
    pub fn remove(&self, pid: u32) -> Result<bool, UnwinderError> {
        let mut state = self.lock();
        let had = state.store.remove_process(pid);
        let removed = state.processes.remove(pid);
        if let Err(reason) = removed {
            state.sink_error(reason.clone());
            return Err(UnwinderError::Sink { pid, reason });
        }
        Ok(had)
    }

    /// The entry of `pid` as last written.
    pub fn entry(&self, pid: u32) -> Option<Vec<MappingEntry>> {
        self.lock().store.entry(pid)
    }

    /// The tables that could not be built or stored, with what they were
    /// for and why (the most recent ones are kept).
    pub fn failures(&self) -> Vec<Failure> {
        self.lock()
            .store
            .failures()
            .map(|(_, failure)| failure.clone())
            .collect()
    }

    /// The counters.
    pub fn stats(&self) -> UnwinderStats {
        let state = self.lock();
        UnwinderStats {
            store: state.store.stats(),
            queued: state.queued.len(),
            builds_dropped: state.builds_dropped,
            sink_errors: state.sink_errors,
            last_sink_error: state.last_sink_error.clone(),
        }
    }

    /// Waits until no build is queued or under way, at most `timeout`.
    /// Whether it got there.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let waited = self
            .shared
            .done
            .wait_timeout_while(state, timeout, |state| {
                !state.queue.is_empty() || state.busy
            });
        match waited {
            Ok((_, result)) => !result.timed_out(),
            Err(poisoned) => !poisoned.into_inner().1.timed_out(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }
}

impl Drop for Unwinder {
    fn drop(&mut self) {
        lock(&self.shared).shutdown = true;
        self.shared.work.notify_all();
        if let Some(worker) = self.worker.take() {
            // A worker that panicked has nothing left to clean up.
            let _ = worker.join();
        }
    }
}

/// A sink that panicked leaves the state consistent (every change to the
/// store is made before the sinks are called), so a poisoned lock is
/// taken as it is.
fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn describe(path: &MapPath) -> String {
    match path {
        MapPath::File(path) => path.display().to_string(),
        MapPath::Deleted(path) => format!("{} (deleted)", path.display()),
        MapPath::Vdso => "[vdso]".into(),
        MapPath::Anonymous => "[anon]".into(),
        MapPath::Special(name) => name.clone(),
    }
}

impl State {
    fn sink_error(&mut self, reason: String) {
        self.sink_errors += 1;
        self.last_sink_error = Some(reason);
    }

    /// Writes the entries of `pids` as the store has them now.
    fn write_entries(&mut self, pids: &[u32]) {
        for &pid in pids {
            let Some(entry) = self.store.entry(pid) else {
                continue;
            };
            if let Err(reason) = self.processes.set(pid, &entry) {
                self.sink_error(reason);
            }
        }
    }
}

/// The worker: one build at a time, the lock released while it runs and
/// while the rows are written (only this thread writes rows).
fn work(shared: &Shared, mut rows_sink: impl RowSink, cache: Option<TableCache>) {
    loop {
        let job = {
            let mut state = lock(shared);
            loop {
                if state.shutdown {
                    return;
                }
                if let Some(job) = state.queue.pop_front() {
                    if state.store.needs(&job.key) {
                        state.busy = true;
                        break job;
                    }
                    // Nobody maps it any more, or it landed meanwhile.
                    state.queued.remove(&job.key);
                    shared.done.notify_all();
                    continue;
                }
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let began = Instant::now();
        let kept = cache.as_ref().and_then(|cache| cache.get(&job.key));
        let built = match kept {
            Some(rows) => Ok(rows),
            None => job.image.build().map(|table| match &cache {
                Some(cache) => cache.insert(job.key, &table),
                None => Arc::from(table.rows()),
            }),
        };
        let took = began.elapsed();
        // The file's map is not needed past the build.
        let Job { key, what, .. } = job;
        let table = match built {
            Ok(rows) => Some(rows),
            Err(error) => {
                let mut state = lock(shared);
                let pids = state.store.fail(key, &what, error.to_string(), took);
                state.write_entries(&pids);
                None
            }
        };
        if let Some(rows) = table {
            store(shared, &mut rows_sink, key, &what, &rows, took);
        }
        let mut state = lock(shared);
        state.queued.remove(&key);
        state.busy = false;
        drop(state);
        shared.done.notify_all();
    }
}

/// Places a built table: room (evicted tables' processes rewritten as
/// pending first), the rows, then the entries of the processes that map it.
fn store(
    shared: &Shared,
    sink: &mut impl RowSink,
    key: TableKey,
    what: &str,
    rows: &[Row],
    took: Duration,
) {
    let reservation = {
        let mut state = lock(shared);
        match state.store.reserve(key, rows.len()) {
            Ok(reservation) => {
                state.write_entries(&reservation.affected);
                reservation
            }
            Err(reason) => {
                let pids = state.store.fail(key, what, reason, took);
                state.write_entries(&pids);
                return;
            }
        }
    };
    let written = sink.write(reservation.start, rows);
    let mut state = lock(shared);
    let pids = match written {
        Ok(()) => state.store.commit(&key, took),
        Err(reason) => {
            state.sink_error(reason.clone());
            state
                .store
                .fail(key, what, format!("the row sink failed: {reason}"), took)
        }
    };
    state.write_entries(&pids);
}
