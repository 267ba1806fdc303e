//! Configuring and starting an off-CPU session.

use std::path::PathBuf;
use std::time::Duration;

use super::targeting::TargetChoice;
use super::{DEFAULT_WINDOW, Session, check_window, spawn};
use crate::loader::{MapSizes, OffCpuConfig, OffCpuHook, OffCpuProgram, Targets, TaskStates};
use crate::{Error, Profiler};

/// Configures an off-CPU session: at each context switch, how long threads
/// stay off CPU, per stack where they blocked and per task state.
///
/// ```no_run
/// # fn run(profiler: &rover_core::Profiler) -> Result<(), rover_core::Error> {
/// use rover_core::loader::TaskStates;
/// use std::time::Duration;
/// let session = profiler
///     .off_cpu()
///     .pids([1234])
///     .min_block(Duration::from_micros(100))
///     .states(TaskStates::INTERRUPTIBLE | TaskStates::UNINTERRUPTIBLE)
///     .start()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OffCpuBuilder {
    profiler: Profiler,
    targets: TargetChoice,
    config: OffCpuConfig,
    window: Duration,
}

impl OffCpuBuilder {
    pub(crate) fn new(profiler: Profiler) -> Self {
        OffCpuBuilder {
            profiler,
            targets: TargetChoice::default(),
            config: OffCpuConfig::default(),
            window: DEFAULT_WINDOW,
        }
    }

    /// Follows these processes (all their threads); adds to earlier pids.
    pub fn pids(mut self, pids: impl IntoIterator<Item = u32>) -> Self {
        self.targets.add_pids(pids);
        self
    }

    /// Follows the tasks of a cgroup v2 directory.
    pub fn cgroup(mut self, path: impl Into<PathBuf>) -> Self {
        self.targets.cgroup(path.into());
        self
    }

    /// Follows every process on the machine.
    pub fn all(mut self) -> Self {
        self.targets.set(Targets::All);
        self
    }

    /// Sets the targets at once.
    pub fn targets(mut self, targets: Targets) -> Self {
        self.targets.set(targets);
        self
    }

    /// Blocks shorter than this are not counted (default 1 µs).
    pub fn min_block(mut self, min: Duration) -> Self {
        self.config.min_block = min;
        self
    }

    /// Blocks longer than this are not counted (default: no limit).
    pub fn max_block(mut self, max: Duration) -> Self {
        self.config.max_block = Some(max);
        self
    }

    /// Task states to count (default: all).
    pub fn states(mut self, states: TaskStates) -> Self {
        self.config.states = states;
        self
    }

    /// Forces the `sched_switch` hook (default: BTF tracepoint, falling back
    /// to the classic tracepoint).
    pub fn hook(mut self, hook: OffCpuHook) -> Self {
        self.config.hook = Some(hook);
        self
    }

    /// Whether to follow the idle task (pid 0) when following all processes.
    pub fn include_idle(mut self, include: bool) -> Self {
        self.config.include_idle = include;
        self
    }

    /// How often a window is drained and published (default 1 s, minimum 10 ms).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Capacities of the kernel maps.
    pub fn map_sizes(mut self, sizes: MapSizes) -> Self {
        self.config.map_sizes = sizes;
        self
    }

    /// Validates the configuration, attaches the program and starts the
    /// drain thread.
    pub fn start(mut self) -> Result<Session, Error> {
        self.config.targets = self.targets.resolve()?;
        check_window(self.window)?;
        let program = OffCpuProgram::attach(&self.config)?;
        spawn(
            super::program::Program::OffCpu(Box::new(program)),
            self.profiler.symbolizer().clone(),
            None,
            self.window,
        )
    }
}
