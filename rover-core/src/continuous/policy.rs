//! A continuous-profiling policy: which processes to watch, what to check
//! on them, when a run of breaches triggers a session, and what that
//! session is.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::proc::online_cpus;
use super::select::{Matches, ProcessMeta, RegexMatch};
use crate::profile::ProfileKind;
use crate::session::{OffCpuBuilder, OnCpuBuilder};

/// The shortest check interval: each check reads `/proc` for every process.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The longest window (`period`) a policy may keep per process.
pub const MAX_PERIOD: u32 = 86_400;

/// The default check interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// A value a policy reads from a process (or the machine) at every check,
/// compared with the policy's threshold: the check breaches when the value
/// is strictly above it.
#[derive(Clone)]
#[non_exhaustive]
pub enum Check {
    /// The process's CPU use over the last check interval, in percent of
    /// one CPU (above 100 for a process running on several CPUs): the
    /// growth of `utime + stime` (`/proc/PID/stat` fields 14 and 15, in
    /// clock ticks) divided by the wall time between the two reads. The
    /// first check of a process has no earlier reading and so no value.
    ///
    /// This is the current rate. Apache SkyWalking Rover's
    /// `PROCESS_CPU` reports the lifetime average (CPU time since the
    /// process started over its age), which a long-idle process that starts
    /// burning crosses late, and a process that burned and went idle keeps
    /// crossing long after.
    CpuPercent,
    /// The process's thread count (`/proc/PID/stat` field 20, the value
    /// `/proc/PID/status` shows as `Threads`).
    Threads,
    /// The machine's 1-minute load average (`/proc/loadavg`): the same
    /// value for every process the policy watches.
    LoadAverage,
    /// A check of the caller's (see [`ProcessCheck`] and [`Check::custom`]).
    Custom(Arc<dyn ProcessCheck>),
}

/// A check of the caller's: a named value per process. Return `None` when
/// there is no value (it then counts as no breach).
///
/// ```
/// use rover_core::continuous::{Check, ProcessCheck};
///
/// struct OpenFiles;
/// impl ProcessCheck for OpenFiles {
///     fn name(&self) -> &str {
///         "open_files"
///     }
///     fn value(&self, pid: u32) -> Option<f64> {
///         let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
///         Some(entries.count() as f64)
///     }
/// }
/// let check = Check::Custom(std::sync::Arc::new(OpenFiles));
/// assert_eq!(check.name(), "open_files");
/// ```
pub trait ProcessCheck: Send + Sync {
    /// The check's name, as triggers report it.
    fn name(&self) -> &str;
    /// The value for process `pid` now, or `None` when there is none.
    fn value(&self, pid: u32) -> Option<f64>;
}

struct FnCheck<F> {
    name: String,
    value: F,
}

impl<F: Fn(u32) -> Option<f64> + Send + Sync> ProcessCheck for FnCheck<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn value(&self, pid: u32) -> Option<f64> {
        (self.value)(pid)
    }
}

impl Check {
    /// A custom check from a closure of the pid.
    ///
    /// ```
    /// use rover_core::continuous::Check;
    /// let rss_pages = Check::custom("rss_pages", |pid| {
    ///     let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    ///     statm.split_whitespace().nth(1)?.parse().ok()
    /// });
    /// assert_eq!(rss_pages.name(), "rss_pages");
    /// ```
    pub fn custom(
        name: impl Into<String>,
        value: impl Fn(u32) -> Option<f64> + Send + Sync + 'static,
    ) -> Check {
        Check::Custom(Arc::new(FnCheck {
            name: name.into(),
            value,
        }))
    }

    /// The check's name: `cpu_percent`, `threads`, `load_average`, or the
    /// custom check's own.
    pub fn name(&self) -> &str {
        match self {
            Check::CpuPercent => "cpu_percent",
            Check::Threads => "threads",
            Check::LoadAverage => "load_average",
            Check::Custom(check) => check.name(),
        }
    }

    /// Why `threshold` cannot be this check's, if it cannot.
    fn refuse(&self, threshold: f64) -> Option<String> {
        if !threshold.is_finite() {
            return Some("it is not a finite number".into());
        }
        match self {
            Check::CpuPercent => {
                let cpus = online_cpus();
                let max = 100.0 * f64::from(cpus);
                if threshold < 0.0 {
                    Some("a CPU percentage cannot be negative".into())
                } else if threshold >= max {
                    Some(format!(
                        "no process can exceed {max} % ({cpus} online CPUs × 100 %)"
                    ))
                } else {
                    None
                }
            }
            Check::Threads if threshold < 0.0 => Some("a thread count cannot be negative".into()),
            Check::LoadAverage if threshold < 0.0 => {
                Some("a load average cannot be negative".into())
            }
            _ => None,
        }
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Custom(check) => write!(f, "Custom({:?})", check.name()),
            other => f.write_str(other.name()),
        }
    }
}

/// What a triggered session records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// An on-CPU session (timer samples of the running threads).
    #[default]
    OnCpu,
    /// An off-CPU session (where the threads block, and how long).
    OffCpu,
}

impl Mode {
    /// The kind of profile the session records.
    pub fn kind(self) -> ProfileKind {
        match self {
            Mode::OnCpu => ProfileKind::OnCpu,
            Mode::OffCpu => ProfileKind::OffCpu,
        }
    }
}

type OnCpuOptions = Arc<dyn Fn(OnCpuBuilder) -> OnCpuBuilder + Send + Sync>;
type OffCpuOptions = Arc<dyn Fn(OffCpuBuilder) -> OffCpuBuilder + Send + Sync>;

/// What is wrong with a policy (from [`PolicyBuilder::build`]) or a set of
/// them (from [`ContinuousProfiler::start`](super::ContinuousProfiler::start)).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// `count` was 0: every check would trigger.
    #[error("count must be at least 1 (.count(..)): with 0 every check would trigger")]
    ZeroCount,
    /// More breaches needed than checks kept.
    #[error(
        "count {count} is above period {period}: {count} breaches never fit in {period} checks"
    )]
    CountAbovePeriod {
        /// `count`.
        count: u32,
        /// `period`.
        period: u32,
    },
    /// A window longer than [`MAX_PERIOD`] checks.
    #[error("period {period} is above the maximum of {max} checks (.period(..))")]
    PeriodTooLong {
        /// `period`.
        period: u32,
        /// [`MAX_PERIOD`].
        max: u32,
    },
    /// The threshold cannot be the check's.
    #[error("threshold {threshold} for {check} is invalid: {reason} (.threshold(..))")]
    Threshold {
        /// The check's name.
        check: String,
        /// The threshold given.
        threshold: f64,
        /// Why it cannot be.
        reason: String,
    },
    /// The session would record nothing.
    #[error("the execute duration must be above zero (.execute(..))")]
    ZeroExecute,
    /// Checks too close together.
    #[error("check interval {interval:?} is shorter than the minimum of {min:?} (.interval(..))")]
    IntervalTooShort {
        /// The interval given.
        interval: Duration,
        /// [`MIN_INTERVAL`].
        min: Duration,
    },
    /// A process pattern that is not a regular expression.
    #[error("pattern {pattern:?} is not a valid regular expression: {reason}")]
    Pattern {
        /// The pattern given.
        pattern: String,
        /// The regex crate's message.
        reason: String,
    },
    /// A continuous profiler started without any policy.
    #[error("no policies: add at least one with .policy(..)")]
    NoPolicies,
    /// A cap of zero concurrent sessions: nothing could ever be profiled.
    #[error("max_sessions must be at least 1 (.max_sessions(..))")]
    ZeroMaxSessions,
}

/// When to profile which process, and how: built with [`Policy::builder`].
///
/// Every `interval`, the policy checks every process its selection matches
/// and keeps, per process, whether each of its last `period` checks
/// breached (a value strictly above `threshold`; a check without a value is
/// no breach). When at least `count` of them did, it triggers: a session of
/// its `mode` on that process for `execute`. After the session ends, the
/// process is silent for `silence` (checked, never triggered), and since
/// the window is cleared at the trigger, the next trigger needs `count`
/// fresh breaches after the silence. See `docs/continuous.md`.
///
/// ```
/// use std::time::Duration;
/// use rover_core::continuous::{Check, Mode, Policy};
///
/// let policy = Policy::builder(Check::CpuPercent, 80.0)
///     .match_regex("^(java|python3?)$")
///     .period(5)
///     .count(3)
///     .execute(Duration::from_secs(10))
///     .silence(Duration::from_secs(300))
///     .mode(Mode::OnCpu)
///     .on_cpu_options(|session| session.frequency(49))
///     .build()?;
/// assert_eq!(policy.check().name(), "cpu_percent");
/// # Ok::<(), rover_core::continuous::PolicyError>(())
/// ```
#[derive(Clone)]
pub struct Policy {
    pub(crate) name: String,
    pub(crate) check: Check,
    pub(crate) threshold: f64,
    pub(crate) period: u32,
    pub(crate) count: u32,
    pub(crate) execute: Duration,
    pub(crate) silence: Duration,
    pub(crate) interval: Duration,
    pub(crate) mode: Mode,
    pub(crate) on_cpu: Option<OnCpuOptions>,
    pub(crate) off_cpu: Option<OffCpuOptions>,
    pub(crate) selectors: Vec<Arc<dyn Matches>>,
    pub(crate) include_self: bool,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("check", &self.check)
            .field("threshold", &self.threshold)
            .field("period", &self.period)
            .field("count", &self.count)
            .field("execute", &self.execute)
            .field("silence", &self.silence)
            .field("interval", &self.interval)
            .field("mode", &self.mode)
            .field("selectors", &self.selectors.len())
            .finish()
    }
}

impl Policy {
    /// Starts a policy on `check` with `threshold`, with the defaults:
    /// every process but this one, `period` 3, `count` 2, `execute` 10 s,
    /// `silence` 60 s, `interval` 1 s, on-CPU at the session's defaults.
    pub fn builder(check: Check, threshold: f64) -> PolicyBuilder {
        PolicyBuilder {
            name: None,
            check,
            threshold,
            period: 3,
            count: 2,
            execute: Duration::from_secs(10),
            silence: Duration::from_secs(60),
            interval: DEFAULT_INTERVAL,
            mode: Mode::OnCpu,
            on_cpu: None,
            off_cpu: None,
            selectors: Vec::new(),
            pattern_error: None,
            include_self: false,
        }
    }

    /// The policy's name (default: `CHECK > THRESHOLD`, e.g. `cpu_percent > 50`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is checked.
    pub fn check(&self) -> &Check {
        &self.check
    }

    /// The value a check must exceed to breach.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// How many of the latest checks are kept per process.
    pub fn period(&self) -> u32 {
        self.period
    }

    /// How many of the kept checks must breach to trigger.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// How long a triggered session runs.
    pub fn execute(&self) -> Duration {
        self.execute
    }

    /// How long a process stays silent after its session ended.
    pub fn silence(&self) -> Duration {
        self.silence
    }

    /// Time between two checks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// What a triggered session records.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the policy watches process `meta`.
    pub(crate) fn selects(&self, meta: &ProcessMeta, own_pid: u32) -> bool {
        (self.include_self || meta.pid != own_pid) && self.selectors.iter().all(|s| s.matches(meta))
    }
}

/// Configures a [`Policy`]; [`build`](Self::build) checks it.
#[must_use]
pub struct PolicyBuilder {
    name: Option<String>,
    check: Check,
    threshold: f64,
    period: u32,
    count: u32,
    execute: Duration,
    silence: Duration,
    interval: Duration,
    mode: Mode,
    on_cpu: Option<OnCpuOptions>,
    off_cpu: Option<OffCpuOptions>,
    selectors: Vec<Arc<dyn Matches>>,
    pattern_error: Option<PolicyError>,
    include_self: bool,
}

impl PolicyBuilder {
    /// Names the policy in its triggers (default: `CHECK > THRESHOLD`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many of the latest checks are kept per process (default 3).
    pub fn period(mut self, period: u32) -> Self {
        self.period = period;
        self
    }

    /// How many of the kept checks must breach to trigger (default 2, at
    /// least 1, at most `period`).
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// How long a triggered session runs (default 10 s).
    pub fn execute(mut self, execute: Duration) -> Self {
        self.execute = execute;
        self
    }

    /// How long a process is not triggered again after its session ended
    /// (default 60 s).
    pub fn silence(mut self, silence: Duration) -> Self {
        self.silence = silence;
        self
    }

    /// Time between two checks (default 1 s, at least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// What a triggered session records (default on-CPU).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Settings of the on-CPU sessions this policy starts (frequency, stack
    /// mode, window, map sizes). Their targets are always the one process
    /// that triggered: targets set here are replaced.
    pub fn on_cpu_options(
        mut self,
        options: impl Fn(OnCpuBuilder) -> OnCpuBuilder + Send + Sync + 'static,
    ) -> Self {
        self.on_cpu = Some(Arc::new(options));
        self
    }

    /// Settings of the off-CPU sessions this policy starts (`min_block`,
    /// states, hook, ...), as [`on_cpu_options`](Self::on_cpu_options).
    pub fn off_cpu_options(
        mut self,
        options: impl Fn(OffCpuBuilder) -> OffCpuBuilder + Send + Sync + 'static,
    ) -> Self {
        self.off_cpu = Some(Arc::new(options));
        self
    }

    /// Watches only the processes `matcher` accepts. Several selections
    /// must all accept a process. Without any, every process is watched
    /// (but this one: see [`include_self`](Self::include_self)).
    ///
    /// ```
    /// use rover_core::continuous::{Check, Policy, ProcessMeta};
    /// let policy = Policy::builder(Check::Threads, 500.0)
    ///     .select(|process: &ProcessMeta| process.cmdline.contains("--worker"))
    ///     .build()?;
    /// # Ok::<(), rover_core::continuous::PolicyError>(())
    /// ```
    pub fn select(mut self, matcher: impl Matches + 'static) -> Self {
        self.selectors.push(Arc::new(matcher));
        self
    }

    /// Watches only the processes whose command name (`comm`) or command
    /// line matches the regular expression `pattern` (anywhere in it, unless
    /// anchored). A bad pattern is [`PolicyError::Pattern`] at
    /// [`build`](Self::build).
    pub fn match_regex(mut self, pattern: &str) -> Self {
        match RegexMatch::new(pattern) {
            Ok(matcher) => self.select(matcher),
            Err(error) => {
                self.pattern_error.get_or_insert(error);
                self
            }
        }
    }

    /// Whether the policy may watch the process that runs it (default: no,
    /// a profiling agent does not profile itself).
    pub fn include_self(mut self, include: bool) -> Self {
        self.include_self = include;
        self
    }

    /// Checks the policy: `count` from 1 to `period`, a `period` up to
    /// [`MAX_PERIOD`], a finite threshold the check can reach (a CPU
    /// percentage from 0 to below 100 × the online CPUs; no negative thread
    /// count or load average), a non-zero `execute`, an interval of at
    /// least [`MIN_INTERVAL`], and valid patterns.
    pub fn build(self) -> Result<Policy, PolicyError> {
        if let Some(error) = self.pattern_error {
            return Err(error);
        }
        if self.count == 0 {
            return Err(PolicyError::ZeroCount);
        }
        if self.period > MAX_PERIOD {
            return Err(PolicyError::PeriodTooLong {
                period: self.period,
                max: MAX_PERIOD,
            });
        }
        if self.count > self.period {
            return Err(PolicyError::CountAbovePeriod {
                count: self.count,
                period: self.period,
            });
        }
        if let Some(reason) = self.check.refuse(self.threshold) {
            return Err(PolicyError::Threshold {
                check: self.check.name().to_owned(),
                threshold: self.threshold,
                reason,
            });
        }
        if self.execute.is_zero() {
            return Err(PolicyError::ZeroExecute);
        }
        if self.interval < MIN_INTERVAL {
            return Err(PolicyError::IntervalTooShort {
                interval: self.interval,
                min: MIN_INTERVAL,
            });
        }
        let name = self
            .name
            .unwrap_or_else(|| format!("{} > {}", self.check.name(), self.threshold));
        Ok(Policy {
            name,
            check: self.check,
            threshold: self.threshold,
            period: self.period,
            count: self.count,
            execute: self.execute,
            silence: self.silence,
            interval: self.interval,
            mode: self.mode,
            on_cpu: self.on_cpu,
            off_cpu: self.off_cpu,
            selectors: self.selectors,
            include_self: self.include_self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(threshold: f64) -> PolicyBuilder {
        Policy::builder(Check::CpuPercent, threshold)
    }

    #[test]
    fn mistakes_are_errors_naming_the_setting() {
        assert_eq!(
            cpu(50.0).count(0).build().err(),
            Some(PolicyError::ZeroCount)
        );
        assert_eq!(
            cpu(50.0).period(3).count(4).build().err(),
            Some(PolicyError::CountAbovePeriod {
                count: 4,
                period: 3
            })
        );
        assert_eq!(
            cpu(50.0).period(0).count(1).build().err(),
            Some(PolicyError::CountAbovePeriod {
                count: 1,
                period: 0
            })
        );
        assert!(matches!(
            cpu(50.0).period(MAX_PERIOD + 1).build(),
            Err(PolicyError::PeriodTooLong { .. })
        ));
        for threshold in [
            -1.0,
            f64::NAN,
            f64::INFINITY,
            100.0 * f64::from(online_cpus()),
        ] {
            let error = cpu(threshold).build().err();
            assert!(
                matches!(&error, Some(PolicyError::Threshold { check, .. }) if check == "cpu_percent"),
                "{threshold}: {error:?}"
            );
        }
        assert!(matches!(
            Policy::builder(Check::Threads, -1.0).build(),
            Err(PolicyError::Threshold { .. })
        ));
        assert!(matches!(
            Policy::builder(Check::LoadAverage, -0.5).build(),
            Err(PolicyError::Threshold { .. })
        ));
        assert!(matches!(
            Policy::builder(Check::custom("x", |_| None), f64::NAN).build(),
            Err(PolicyError::Threshold { .. })
        ));
        assert_eq!(
            cpu(50.0).execute(Duration::ZERO).build().err(),
            Some(PolicyError::ZeroExecute)
        );
        assert_eq!(
            cpu(50.0).interval(Duration::ZERO).build().err(),
            Some(PolicyError::IntervalTooShort {
                interval: Duration::ZERO,
                min: MIN_INTERVAL
            })
        );
        let error = cpu(50.0).match_regex("(unclosed").build().err();
        assert!(
            matches!(&error, Some(PolicyError::Pattern { pattern, .. }) if pattern == "(unclosed"),
            "{error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("not a valid regular expression"),
            "{message}"
        );
    }

    #[test]
    fn valid_policies_keep_their_settings() {
        let policy = cpu(0.0)
            .period(1)
            .count(1)
            .execute(Duration::from_millis(1))
            .interval(MIN_INTERVAL)
            .build();
        assert!(policy.is_ok(), "{policy:?}");
        let policy = Policy::builder(Check::LoadAverage, 4.0)
            .name("busy machine")
            .mode(Mode::OffCpu)
            .build();
        assert!(
            policy.as_ref().is_ok_and(|p| p.name() == "busy machine"
                && p.mode() == Mode::OffCpu
                && p.period() == 3
                && p.count() == 2),
            "{policy:?}"
        );
        let named = cpu(50.0).build().map(|p| p.name().to_owned());
        assert_eq!(named.ok().as_deref(), Some("cpu_percent > 50"));
    }
}
