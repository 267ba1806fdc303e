//! The running continuous profiler: the check thread that applies the
//! policies to every process, and one thread per triggered session.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use futures::channel::oneshot;

use super::events::{Ended, Event, Events, Trigger};
use super::policy::{Check, Mode, Policy, PolicyError};
use super::proc::{self, CpuReading, Stat};
use super::select::ProcessMeta;
use super::window::{CheckWindow, Rules};
use crate::{Error, Profiler, Targets};

/// The default cap on sessions running at once.
pub const DEFAULT_MAX_SESSIONS: usize = 4;

/// How often a session checks that its process still lives.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

/// Configures and starts continuous profiling: policies applied to every
/// process at each of their check intervals, a session started on a
/// process whenever one fires.
///
/// ```no_run
/// use std::time::Duration;
/// use rover_core::continuous::{Check, ContinuousProfiler, Event, Policy};
///
/// let profiler = rover_core::Profiler::new()?;
/// let policy = Policy::builder(Check::CpuPercent, 80.0)
///     .match_regex("^nginx$")
///     .execute(Duration::from_secs(5))
///     .build()?;
/// let continuous = ContinuousProfiler::new(&profiler).policy(policy).start()?;
/// for event in continuous.events().iter_blocking() {
///     match event {
///         Event::Triggered(t) => println!("{} ({}) crossed {}: {:?}", t.pid, t.comm, t.threshold, t.values),
///         Event::Profiled { trigger, profile, .. } => {
///             println!("{}: {} distinct stacks", trigger.pid, profile.stack_count())
///         }
///         Event::Failed { trigger, error } => eprintln!("{}: {error}", trigger.pid),
///         _ => {}
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ContinuousProfiler {
    profiler: Profiler,
    policies: Vec<Policy>,
    max_sessions: usize,
}

impl ContinuousProfiler {
    /// Continuous profiling with `profiler`'s sessions (a cheap clone of it
    /// is kept), without policies yet, at most [`DEFAULT_MAX_SESSIONS`]
    /// sessions at once.
    pub fn new(profiler: &Profiler) -> Self {
        ContinuousProfiler {
            profiler: profiler.clone(),
            policies: Vec::new(),
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }

    /// Adds a policy; triggers name it by its index in the order added.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// Adds policies, as [`policy`](Self::policy).
    pub fn policies(mut self, policies: impl IntoIterator<Item = Policy>) -> Self {
        self.policies.extend(policies);
        self
    }

    /// How many sessions may run at once, over all policies (default 4). A
    /// policy that fires while that many run starts none: the trigger is
    /// reported as [`Event::Skipped`], counted in
    /// [`ContinuousStats::skipped`], and the process is watched again from
    /// an empty window.
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// Starts the check thread. The first checks run at once; a
    /// [`Check::CpuPercent`] policy has its first values one interval later.
    ///
    /// Fails with [`Error::Policy`] without policies or with a cap of 0,
    /// and with [`Error::Thread`] if the thread cannot be spawned.
    pub fn start(self) -> Result<Continuous, Error> {
        if self.policies.is_empty() {
            return Err(PolicyError::NoPolicies.into());
        }
        if self.max_sessions == 0 {
            return Err(PolicyError::ZeroMaxSessions.into());
        }
        let counters = Arc::new(Counters::new(self.policies.len()));
        let events = Events::new();
        let (control, messages) = std::sync::mpsc::channel();
        let (done_tx, done) = oneshot::channel();
        let now = Instant::now();
        let checker = Checker {
            profiler: self.profiler,
            next_due: vec![now; self.policies.len()],
            watches: self.policies.iter().map(|_| HashMap::new()).collect(),
            policies: self.policies.into_iter().map(Arc::new).collect(),
            max_sessions: self.max_sessions,
            processes: HashMap::new(),
            messages,
            control: control.clone(),
            events: CloseOnDrop(events.clone()),
            counters: counters.clone(),
            sessions: Vec::new(),
            own_pid: std::process::id(),
        };
        std::thread::Builder::new()
            .name("rover-continuous".into())
            .spawn(move || {
                let stats = checker.run();
                let _ = done_tx.send(stats);
            })
            .map_err(Error::Thread)?;
        Ok(Continuous {
            control,
            events,
            counters,
            done: Some(done),
        })
    }
}

/// Totals of a continuous-profiling run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ContinuousStats {
    /// Check rounds started, per policy (in the order the policies were given).
    pub rounds: Vec<u64>,
    /// Times a policy fired (sessions started, failed or skipped).
    pub triggered: u64,
    /// Triggers that started no session because `max_sessions` were running.
    pub skipped: u64,
    /// Sessions that ended with a profile.
    pub profiled: u64,
    /// Sessions that could not start or failed.
    pub failed: u64,
    /// Sessions running now.
    pub running: usize,
}

#[derive(Debug)]
struct Counters {
    rounds: Vec<AtomicU64>,
    triggered: AtomicU64,
    skipped: AtomicU64,
    profiled: AtomicU64,
    failed: AtomicU64,
    running: AtomicUsize,
}

impl Counters {
    fn new(policies: usize) -> Self {
        Counters {
            rounds: (0..policies).map(|_| AtomicU64::new(0)).collect(),
            triggered: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            profiled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn snapshot(&self) -> ContinuousStats {
        ContinuousStats {
            rounds: self
                .rounds
                .iter()
                .map(|r| r.load(Ordering::SeqCst))
                .collect(),
            triggered: self.triggered.load(Ordering::SeqCst),
            skipped: self.skipped.load(Ordering::SeqCst),
            profiled: self.profiled.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            running: self.running.load(Ordering::SeqCst),
        }
    }
}

/// A running continuous profiler (from [`ContinuousProfiler::start`]).
///
/// Its [`events`](Self::events) report each trigger and each session's
/// profile; [`stop`](Self::stop) ends the sessions still running (their
/// profiles are reported, [`Ended::Stopped`]) and the check thread.
/// Dropping it stops it the same way without waiting.
#[derive(Debug)]
pub struct Continuous {
    control: Sender<Message>,
    events: Events,
    counters: Arc<Counters>,
    done: Option<oneshot::Receiver<ContinuousStats>>,
}

impl Continuous {
    /// The run's events (a handle on its one queue: see [`Events`]).
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    /// How many check rounds policy `policy` (its index) has started, or
    /// `None` for no such policy. A trigger's [`Trigger::round`] is one of
    /// these rounds.
    pub fn rounds(&self, policy: usize) -> Option<u64> {
        self.counters
            .rounds
            .get(policy)
            .map(|r| r.load(Ordering::SeqCst))
    }

    /// The totals so far.
    pub fn stats(&self) -> ContinuousStats {
        self.counters.snapshot()
    }

    /// Stops: the sessions running are stopped and their profiles reported,
    /// then the check thread ends and the event queue closes (events still
    /// in it can be taken). Resolves once every session has handed back its
    /// profile (each stop drains and symbolizes one last window), with the
    /// run's totals. The future only waits on a channel.
    pub async fn stop(mut self) -> ContinuousStats {
        let _ = self.control.send(Message::Stop);
        let stats = match self.done.take() {
            Some(done) => done.await.ok(),
            None => None,
        };
        stats.unwrap_or_else(|| self.counters.snapshot())
    }

    /// [`Continuous::stop`] for code without an executor.
    pub fn stop_blocking(self) -> ContinuousStats {
        futures::executor::block_on(self.stop())
    }
}

impl Drop for Continuous {
    fn drop(&mut self) {
        let _ = self.control.send(Message::Stop);
    }
}

enum Message {
    Stop,
    /// A session ended: its process is silent from `at`.
    Ended {
        policy: usize,
        pid: u32,
        start_time: u64,
        at: Instant,
    },
}

/// A process as last read.
struct Known {
    start_time: u64,
    meta: ProcessMeta,
}

/// One policy's state of one process.
struct Watch {
    start_time: u64,
    window: CheckWindow,
    last_cpu: Option<CpuReading>,
}

/// A trigger found in a round, acted on after it.
struct Fired {
    policy: usize,
    meta: ProcessMeta,
    start_time: u64,
    values: Vec<Option<f64>>,
    round: u64,
}

struct SessionThread {
    /// Dropped to stop the session early.
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

/// Closes the event queue however the check thread ends, so that no
/// consumer waits forever (a custom check may panic).
struct CloseOnDrop(Events);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct Checker {
    profiler: Profiler,
    policies: Vec<Arc<Policy>>,
    max_sessions: usize,
    next_due: Vec<Instant>,
    watches: Vec<HashMap<u32, Watch>>,
    processes: HashMap<u32, Known>,
    messages: Receiver<Message>,
    control: Sender<Message>,
    events: CloseOnDrop,
    counters: Arc<Counters>,
    sessions: Vec<SessionThread>,
    own_pid: u32,
}

impl Checker {
    fn run(mut self) -> ContinuousStats {
        loop {
            let now = Instant::now();
            let due: Vec<usize> = (0..self.policies.len())
                .filter(|&i| self.next_due[i] <= now)
                .collect();
            if !due.is_empty() {
                self.round(&due);
                let after = Instant::now();
                for &i in &due {
                    self.next_due[i] = next_due(self.next_due[i], self.policies[i].interval, after);
                }
            }
            self.sessions.retain(|s| !s.thread.is_finished());
            let wake = self.next_due.iter().min().copied().unwrap_or(now);
            match self
                .messages
                .recv_timeout(wake.saturating_duration_since(Instant::now()))
            {
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Message::Ended {
                    policy,
                    pid,
                    start_time,
                    at,
                }) => self.ended(policy, pid, start_time, at),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        // Dropping each stop sender ends its session's wait, all at once.
        let threads: Vec<JoinHandle<()>> = self
            .sessions
            .drain(..)
            .map(|SessionThread { stop, thread }| {
                drop(stop);
                thread
            })
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
        self.counters.snapshot()
    }

    fn ended(&mut self, policy: usize, pid: u32, start_time: u64, at: Instant) {
        let Some(rules) = self.policies.get(policy).map(|p| rules(p)) else {
            return;
        };
        if let Some(watch) = self.watches[policy].get_mut(&pid)
            && watch.start_time == start_time
        {
            watch.window.ended(at, &rules);
        }
    }

    /// Checks every process against the policies `due`, then acts on what
    /// fired.
    fn round(&mut self, due: &[usize]) {
        let rounds: Vec<u64> = due
            .iter()
            .map(|&i| self.counters.rounds[i].fetch_add(1, Ordering::SeqCst) + 1)
            .collect();
        // Without /proc there is nothing to check; the next round retries.
        let Ok(pids) = proc::pids() else { return };
        let load = due
            .iter()
            .any(|&i| matches!(self.policies[i].check, Check::LoadAverage))
            .then(proc::load_average)
            .flatten();
        let mut processes = HashMap::with_capacity(pids.len());
        let mut fired = Vec::new();
        for pid in pids {
            // Gone since the listing, or unreadable: as if gone.
            let Ok(stat) = Stat::read(pid) else { continue };
            let at = Instant::now();
            let known = match self.processes.remove(&pid) {
                Some(known)
                    if known.start_time == stat.start_time && known.meta.comm == stat.comm =>
                {
                    known
                }
                // New, reused, or exec'd (a new name): read its command line.
                _ => Known {
                    start_time: stat.start_time,
                    meta: ProcessMeta::new(pid, stat.comm.clone(), proc::cmdline(pid)),
                },
            };
            for (&i, &round) in due.iter().zip(&rounds) {
                let policy = &self.policies[i];
                if !policy.selects(&known.meta, self.own_pid) {
                    self.watches[i].remove(&pid);
                    continue;
                }
                let watch = self.watches[i].entry(pid).or_insert_with(|| Watch {
                    start_time: stat.start_time,
                    window: CheckWindow::new(),
                    last_cpu: None,
                });
                if watch.start_time != stat.start_time {
                    *watch = Watch {
                        start_time: stat.start_time,
                        window: CheckWindow::new(),
                        last_cpu: None,
                    };
                }
                let value = match &policy.check {
                    Check::CpuPercent => {
                        let reading = CpuReading::of(pid, &stat, at);
                        let earlier = watch.last_cpu.replace(reading);
                        earlier.and_then(|earlier| reading.percent_since(&earlier))
                    }
                    Check::Threads => Some(stat.threads as f64),
                    Check::LoadAverage => load,
                    Check::Custom(check) => check.value(pid),
                };
                if let Some(values) = watch.window.record(value, Instant::now(), &rules(policy)) {
                    fired.push(Fired {
                        policy: i,
                        meta: known.meta.clone(),
                        start_time: stat.start_time,
                        values,
                        round,
                    });
                }
            }
            processes.insert(pid, known);
        }
        // Processes that exited are forgotten.
        self.processes = processes;
        for &i in due {
            let processes = &self.processes;
            self.watches[i].retain(|pid, watch| {
                processes
                    .get(pid)
                    .is_some_and(|known| known.start_time == watch.start_time)
            });
        }
        for fired in fired {
            self.act(fired);
        }
    }

    /// Starts the session of a trigger, or reports it skipped.
    fn act(&mut self, fired: Fired) {
        let policy = self.policies[fired.policy].clone();
        let trigger = Trigger {
            pid: fired.meta.pid,
            comm: fired.meta.comm,
            cmdline: fired.meta.cmdline,
            policy: fired.policy,
            policy_name: policy.name.clone(),
            check: policy.check.name().to_owned(),
            values: fired.values,
            threshold: policy.threshold,
            kind: policy.mode.kind(),
            round: fired.round,
            started_at: SystemTime::now(),
        };
        self.counters.triggered.fetch_add(1, Ordering::SeqCst);
        let running = self.counters.running.load(Ordering::SeqCst);
        if running >= self.max_sessions {
            self.counters.skipped.fetch_add(1, Ordering::SeqCst);
            if let Some(watch) = self.watches[fired.policy].get_mut(&trigger.pid) {
                watch.window.skipped();
            }
            self.events.0.push(Event::Skipped { trigger, running });
            return;
        }
        self.events.0.push(Event::Triggered(trigger.clone()));
        self.counters.running.fetch_add(1, Ordering::SeqCst);
        let (stop, stopped) = std::sync::mpsc::channel();
        let run = SessionRun {
            profiler: self.profiler.clone(),
            policy,
            trigger: trigger.clone(),
            start_time: fired.start_time,
            stopped,
            events: self.events.0.clone(),
            counters: self.counters.clone(),
            report: self.control.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("rover-continuous-{}", trigger.pid))
            .spawn(move || run.run());
        match spawned {
            Ok(thread) => self.sessions.push(SessionThread { stop, thread }),
            Err(error) => {
                self.counters.running.fetch_sub(1, Ordering::SeqCst);
                self.counters.failed.fetch_add(1, Ordering::SeqCst);
                let rules = rules(&self.policies[fired.policy]);
                if let Some(watch) = self.watches[fired.policy].get_mut(&trigger.pid) {
                    watch.window.ended(Instant::now(), &rules);
                }
                self.events.0.push(Event::Failed {
                    trigger,
                    error: Error::Thread(error),
                });
            }
        }
    }
}

fn rules(policy: &Policy) -> Rules {
    Rules {
        threshold: policy.threshold,
        period: policy.period,
        count: policy.count,
        silence: policy.silence,
    }
}

/// The next check after one due at `due`: one interval on, or one interval
/// from `now` when the round ran past it (missed checks are not made up
/// in a burst, which would measure rates over a sliver of time).
fn next_due(due: Instant, interval: Duration, now: Instant) -> Instant {
    match due.checked_add(interval) {
        Some(next) if next > now => next,
        _ => now + interval,
    }
}

/// One triggered session, on a thread of its own: starting a session
/// (loading and verifying its program) and stopping it (a last drain and
/// symbolization) take long enough to hold up the checks otherwise.
struct SessionRun {
    profiler: Profiler,
    policy: Arc<Policy>,
    trigger: Trigger,
    start_time: u64,
    stopped: Receiver<()>,
    events: Events,
    counters: Arc<Counters>,
    report: Sender<Message>,
}

impl SessionRun {
    fn run(self) {
        let pid = self.trigger.pid;
        let policy = self.trigger.policy;
        let targets = Targets::Pids(vec![pid]);
        let started = match self.policy.mode {
            Mode::OnCpu => {
                let builder = self.profiler.on_cpu();
                let builder = match &self.policy.on_cpu {
                    Some(options) => options(builder),
                    None => builder,
                };
                builder.targets(targets).start()
            }
            Mode::OffCpu => {
                let builder = self.profiler.off_cpu();
                let builder = match &self.policy.off_cpu {
                    Some(options) => options(builder),
                    None => builder,
                };
                builder.targets(targets).start()
            }
        };
        let event = match started {
            Err(error) => Event::Failed {
                trigger: self.trigger,
                error,
            },
            Ok(session) => {
                let began = Instant::now();
                let ended = self.wait(began);
                let ran = began.elapsed();
                match session.stop_blocking() {
                    Ok(profile) => Event::Profiled {
                        trigger: self.trigger,
                        profile: Box::new(profile),
                        ran,
                        ended,
                    },
                    Err(error) => Event::Failed {
                        trigger: self.trigger,
                        error,
                    },
                }
            }
        };
        let counter = match &event {
            Event::Profiled { .. } => &self.counters.profiled,
            _ => &self.counters.failed,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.events.push(event);
        self.counters.running.fetch_sub(1, Ordering::SeqCst);
        let _ = self.report.send(Message::Ended {
            policy,
            pid,
            start_time: self.start_time,
            at: Instant::now(),
        });
    }

    /// Waits out `execute`, or less: until the profiler stops or the
    /// process exits.
    fn wait(&self, began: Instant) -> Ended {
        let deadline = began.checked_add(self.policy.execute);
        loop {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ended::Completed;
            }
            match self.stopped.recv_timeout(left.min(LIVENESS_POLL)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ended::Stopped,
                Err(RecvTimeoutError::Timeout) => {
                    if !proc::alive(self.trigger.pid, self.start_time) {
                        return Ended::ProcessExited;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_checks_are_not_made_up() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(next_due(t0, second, t0), t0 + second);
        let late = t0 + Duration::from_millis(2500);
        assert_eq!(next_due(t0, second, late), late + second);
    }

    #[test]
    fn the_run_handle_crosses_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Continuous>();
        send_sync::<ContinuousProfiler>();
    }
}
