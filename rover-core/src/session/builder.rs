//! Configuring and starting a session: one builder whose common settings
//! (targets, window, idle task, the profiler's own process, map sizes) are
//! written once for both kinds, and the settings of each kind.

use std::path::PathBuf;
use std::time::Duration;

use super::{DEFAULT_WINDOW, MIN_WINDOW, Session, spawn};
use crate::error::ConfigError;
use crate::loader::unwind::TableNotifier;
use crate::loader::{
    Limits, MapSizes, OffCpuConfig, OffCpuHook, OffCpuProgram, OnCpuConfig, OnCpuProgram, Program,
    ResolvedTargets, StackMode, Targets, TaskStates,
};
use crate::{Error, Profiler};

/// Configures a session of either kind: [`OnCpuBuilder`] from
/// [`Profiler::on_cpu`], [`OffCpuBuilder`] from [`Profiler::off_cpu`]. The
/// settings below apply to both; each kind adds its own.
///
/// Nothing is profiled until targets are chosen: a forgotten `.pids(..)`
/// is [`ConfigError::NoTargets`], never the whole machine.
///
/// ```no_run
/// # fn run(profiler: &rover_core::Profiler) -> Result<(), rover_core::Error> {
/// use std::time::Duration;
/// let on_cpu = profiler
///     .on_cpu()
///     .all()
///     .frequency(99)
///     .window(Duration::from_secs(10))
///     .start()?;
/// let off_cpu = profiler
///     .off_cpu()
///     .pids([1234])
///     .min_block(Duration::from_micros(100))
///     .start()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SessionBuilder<K> {
    profiler: Profiler,
    targets: Option<Targets>,
    window: Duration,
    include_idle: bool,
    include_self: bool,
    map_sizes: MapSizes,
    stack_mode: StackMode,
    kind: K,
}

/// Configures an on-CPU session: timer samples of the stacks of running
/// threads, from a software cpu-clock event on every CPU.
///
/// ```no_run
/// # fn run(profiler: &rover_core::Profiler) -> Result<(), rover_core::Error> {
/// use std::time::Duration;
/// let session = profiler
///     .on_cpu()
///     .pids([1234, 5678])
///     .frequency(99)
///     .window(Duration::from_secs(10))
///     .start()?;
/// # Ok(()) }
/// ```
pub type OnCpuBuilder = SessionBuilder<OnCpuSettings>;

/// Configures an off-CPU session: at each context switch, how long threads
/// stay off CPU, per stack where they blocked and per task state.
///
/// ```no_run
/// # fn run(profiler: &rover_core::Profiler) -> Result<(), rover_core::Error> {
/// use rover_core::TaskStates;
/// use std::time::Duration;
/// let session = profiler
///     .off_cpu()
///     .pids([1234])
///     .min_block(Duration::from_micros(100))
///     .states(TaskStates::INTERRUPTIBLE | TaskStates::UNINTERRUPTIBLE)
///     .start()?;
/// # Ok(()) }
/// ```
pub type OffCpuBuilder = SessionBuilder<OffCpuSettings>;

/// The settings only an on-CPU session has (see [`OnCpuBuilder`]).
#[derive(Debug, Clone)]
pub struct OnCpuSettings {
    frequency_hz: u64,
}

/// The settings only an off-CPU session has (see [`OffCpuBuilder`]).
#[derive(Debug, Clone)]
pub struct OffCpuSettings {
    min_block: Duration,
    max_block: Option<Duration>,
    states: TaskStates,
    hook: Option<OffCpuHook>,
}

impl<K> SessionBuilder<K> {
    fn with(profiler: Profiler, kind: K) -> Self {
        SessionBuilder {
            profiler,
            targets: None,
            window: DEFAULT_WINDOW,
            include_idle: false,
            include_self: false,
            map_sizes: MapSizes::default(),
            stack_mode: StackMode::Auto,
            kind,
        }
    }

    /// Records these processes (all their threads); adds to earlier pids.
    /// A pids session can change its list while it runs
    /// ([`Session::set_pids`]).
    pub fn pids(mut self, pids: impl IntoIterator<Item = u32>) -> Self {
        match &mut self.targets {
            Some(Targets::Pids(list)) => list.extend(pids),
            other => *other = Some(Targets::Pids(pids.into_iter().collect())),
        }
        self
    }

    /// Records the tasks of a cgroup v2 directory, e.g. a systemd service's
    /// `/sys/fs/cgroup/system.slice/nginx.service`.
    pub fn cgroup(mut self, path: impl Into<PathBuf>) -> Self {
        self.targets = Some(Targets::Cgroup(path.into()));
        self
    }

    /// Records every process on the machine but this one (see
    /// [`include_self`](Self::include_self)).
    pub fn all(mut self) -> Self {
        self.targets = Some(Targets::All);
        self
    }

    /// Sets the targets at once.
    pub fn targets(mut self, targets: Targets) -> Self {
        self.targets = Some(targets);
        self
    }

    /// How often a window is drained and published (default 1 s, minimum 10 ms).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Whether to record the idle task (pid 0) when recording every process
    /// (default: no).
    pub fn include_idle(mut self, include: bool) -> Self {
        self.include_idle = include;
        self
    }

    /// Whether `.all()` and `.cgroup(..)` record this process too, its
    /// drain threads included (default: no, an agent does not profile
    /// itself). `.pids(..)` records exactly the pids given, whatever this says.
    ///
    /// Left out means left out by the id the kernel knows this process by.
    /// A process in a pid namespace of its own, with its own `/proc` (a
    /// container without the host's pid namespace), cannot learn that id,
    /// and is then recorded like any other rather than leaving out the
    /// host process that has its local id.
    pub fn include_self(mut self, include: bool) -> Self {
        self.include_self = include;
        self
    }

    /// Capacities of the kernel maps (distinct keys and stacks per window).
    pub fn map_sizes(mut self, sizes: MapSizes) -> Self {
        self.map_sizes = sizes;
        self
    }

    /// How user stacks are walked (default [`StackMode::Auto`]: unwind
    /// tables from `.eh_frame` where the kernel can run the unwinder, frame
    /// pointers otherwise).
    pub fn stack_mode(mut self, mode: StackMode) -> Self {
        self.stack_mode = mode;
        self
    }

    /// The checks both kinds share that read nothing: targets chosen, window
    /// long enough.
    fn common(&self) -> Result<Targets, ConfigError> {
        let targets = self.targets.clone().ok_or(ConfigError::NoTargets)?;
        if self.window < MIN_WINDOW {
            return Err(ConfigError::WindowTooShort {
                window: self.window,
                min: MIN_WINDOW,
            });
        }
        Ok(targets)
    }

    fn start_program(
        self,
        program: Box<dyn Program>,
        notifier: Option<TableNotifier>,
        targets: &Targets,
        frequency_hz: Option<u64>,
    ) -> Result<Session, Error> {
        let subscription = self.profiler.tracker().subscribe(targets, notifier);
        spawn(
            program,
            self.profiler.symbolizer().clone(),
            subscription,
            frequency_hz,
            self.window,
        )
    }
}

impl OnCpuBuilder {
    pub(crate) fn new(profiler: Profiler) -> Self {
        SessionBuilder::with(profiler, OnCpuSettings { frequency_hz: 99 })
    }

    /// Samples per second on each CPU (default 99 Hz: off the beat of
    /// periodic timers). At most the kernel's `perf_event_max_sample_rate`.
    pub fn frequency(mut self, hz: u64) -> Self {
        self.kind.frequency_hz = hz;
        self
    }

    /// The program's configuration, checked: every [`ConfigError`] is
    /// found here, before any privilege or kernel check.
    fn config(&self, limits: &Limits) -> Result<(OnCpuConfig, ResolvedTargets), ConfigError> {
        let config = OnCpuConfig {
            targets: self.common()?,
            frequency_hz: self.kind.frequency_hz,
            include_idle: self.include_idle,
            include_self: self.include_self,
            stack_mode: self.stack_mode,
            map_sizes: self.map_sizes,
        };
        let targets = config.checked(limits)?;
        Ok((config, targets))
    }

    /// Validates the configuration, then attaches the program and starts
    /// the drain thread.
    pub fn start(self) -> Result<Session, Error> {
        let (config, targets) = self.config(&Limits::read()?)?;
        let program = OnCpuProgram::attach_checked(&config, &targets, self.profiler.environment())?;
        let frequency_hz = config.frequency_hz;
        let notifier = program.table_notifier();
        self.start_program(
            Box::new(program),
            notifier,
            &config.targets,
            Some(frequency_hz),
        )
    }
}

impl OffCpuBuilder {
    pub(crate) fn new(profiler: Profiler) -> Self {
        SessionBuilder::with(
            profiler,
            OffCpuSettings {
                min_block: Duration::from_micros(1),
                max_block: None,
                states: TaskStates::ALL,
                hook: None,
            },
        )
    }

    /// Blocks shorter than this are not counted (default 1 µs).
    pub fn min_block(mut self, min: Duration) -> Self {
        self.kind.min_block = min;
        self
    }

    /// Blocks longer than this are not counted (default: no limit).
    pub fn max_block(mut self, max: Duration) -> Self {
        self.kind.max_block = Some(max);
        self
    }

    /// Task states to count (default: all).
    pub fn states(mut self, states: TaskStates) -> Self {
        self.kind.states = states;
        self
    }

    /// Forces the `sched_switch` hook (default: the BTF tracepoint where the
    /// kernel has what it needs, else the classic tracepoint; see
    /// [`OffCpuHook`]). A hook the kernel cannot run is
    /// [`Error::Unsupported`] (or [`Error::NoTracefs`]), naming what it lacks.
    pub fn hook(mut self, hook: OffCpuHook) -> Self {
        self.kind.hook = Some(hook);
        self
    }

    /// The program's configuration, checked: every [`ConfigError`] is
    /// found here, before any privilege or kernel check.
    fn config(&self) -> Result<(OffCpuConfig, ResolvedTargets), ConfigError> {
        let config = OffCpuConfig {
            targets: self.common()?,
            min_block: self.kind.min_block,
            max_block: self.kind.max_block,
            states: self.kind.states,
            include_idle: self.include_idle,
            include_self: self.include_self,
            hook: self.kind.hook,
            stack_mode: self.stack_mode,
            map_sizes: self.map_sizes,
        };
        let targets = config.checked()?;
        Ok((config, targets))
    }

    /// Validates the configuration, then attaches the program and starts
    /// the drain thread.
    pub fn start(self) -> Result<Session, Error> {
        let (config, targets) = self.config()?;
        let program =
            OffCpuProgram::attach_checked(&config, &targets, self.profiler.environment())?;
        let notifier = program.table_notifier();
        self.start_program(Box::new(program), notifier, &config.targets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_sample_rate: 1000,
    };

    /// Every configuration error of a session comes from `config`, which
    /// reads no privileged file: these run without root.
    #[test]
    fn session_mistakes_are_config_errors_before_any_privilege_check() {
        let profiler = Profiler::unchecked_for_tests();
        let me = std::process::id();
        let on = |b: OnCpuBuilder| b.config(&LIMITS).map(|_| ());
        let off = |b: OffCpuBuilder| b.config().map(|_| ());
        assert_eq!(on(profiler.on_cpu()), Err(ConfigError::NoTargets));
        assert_eq!(off(profiler.off_cpu()), Err(ConfigError::NoTargets));
        assert_eq!(on(profiler.on_cpu().pids([me])), Ok(()));
        assert_eq!(
            on(profiler
                .on_cpu()
                .pids([me])
                .window(Duration::from_millis(1))),
            Err(ConfigError::WindowTooShort {
                window: Duration::from_millis(1),
                min: MIN_WINDOW
            })
        );
        assert_eq!(
            on(profiler.on_cpu().pids([me]).frequency(0)),
            Err(ConfigError::ZeroFrequency)
        );
        assert_eq!(
            on(profiler.on_cpu().pids([me]).frequency(1001)),
            Err(ConfigError::FrequencyTooHigh {
                requested: 1001,
                max: 1000
            })
        );
        assert_eq!(
            on(profiler.on_cpu().pids([4_999_999])),
            Err(ConfigError::NoSuchProcess(4_999_999))
        );
        assert_eq!(
            off(profiler
                .off_cpu()
                .pids([me])
                .min_block(Duration::from_millis(10))
                .max_block(Duration::from_millis(1))),
            Err(ConfigError::BlockRange {
                min: Duration::from_millis(10),
                max: Duration::from_millis(1)
            })
        );
        assert_eq!(
            off(profiler.off_cpu().pids([me]).map_sizes(MapSizes {
                pids: 0,
                ..MapSizes::default()
            })),
            Err(ConfigError::ZeroMapSize("pids"))
        );
        assert!(matches!(
            on(profiler.on_cpu().cgroup("/nonexistent/cgroup")),
            Err(ConfigError::Cgroup { .. })
        ));
    }

    #[test]
    fn common_settings_are_shared_and_pids_add_up() {
        let profiler = Profiler::unchecked_for_tests();
        let on = profiler
            .on_cpu()
            .pids([1])
            .pids([2])
            .include_self(true)
            .include_idle(true);
        assert_eq!(on.targets, Some(Targets::Pids(vec![1, 2])));
        assert!(on.include_self && on.include_idle);
        let off = profiler.off_cpu().pids([1]).all();
        assert_eq!(off.targets, Some(Targets::All));
        assert!(!off.include_self, "the profiler is left out by default");
    }
}
