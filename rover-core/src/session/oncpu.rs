//! Configuring and starting an on-CPU session.

use std::path::PathBuf;
use std::time::Duration;

use super::targeting::TargetChoice;
use super::{DEFAULT_WINDOW, Session, check_window, spawn};
use crate::loader::{MapSizes, OnCpuConfig, OnCpuProgram, Targets};
use crate::{Error, Profiler};

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
#[derive(Debug, Clone)]
pub struct OnCpuBuilder {
    profiler: Profiler,
    targets: TargetChoice,
    frequency_hz: u64,
    window: Duration,
    include_idle: bool,
    map_sizes: MapSizes,
}

impl OnCpuBuilder {
    pub(crate) fn new(profiler: Profiler) -> Self {
        OnCpuBuilder {
            profiler,
            targets: TargetChoice::default(),
            frequency_hz: 99,
            window: DEFAULT_WINDOW,
            include_idle: false,
            map_sizes: MapSizes::default(),
        }
    }

    /// Profiles these processes (all their threads); adds to earlier pids.
    pub fn pids(mut self, pids: impl IntoIterator<Item = u32>) -> Self {
        self.targets.add_pids(pids);
        self
    }

    /// Profiles the tasks of a cgroup v2 directory, e.g. a systemd service's
    /// `/sys/fs/cgroup/system.slice/nginx.service`.
    pub fn cgroup(mut self, path: impl Into<PathBuf>) -> Self {
        self.targets.cgroup(path.into());
        self
    }

    /// Profiles every process on the machine.
    pub fn all(mut self) -> Self {
        self.targets.set(Targets::All);
        self
    }

    /// Sets the targets at once.
    pub fn targets(mut self, targets: Targets) -> Self {
        self.targets.set(targets);
        self
    }

    /// Samples per second on each CPU (default 99 Hz: off the beat of
    /// periodic timers). At most the kernel's `perf_event_max_sample_rate`.
    pub fn frequency(mut self, hz: u64) -> Self {
        self.frequency_hz = hz;
        self
    }

    /// How often a window is drained and published (default 1 s, minimum 10 ms).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Whether to count the idle task (pid 0) when profiling all processes.
    pub fn include_idle(mut self, include: bool) -> Self {
        self.include_idle = include;
        self
    }

    /// Capacities of the kernel maps (distinct keys and stacks per window).
    pub fn map_sizes(mut self, sizes: MapSizes) -> Self {
        self.map_sizes = sizes;
        self
    }

    /// Validates the configuration, attaches the program and starts the
    /// drain thread.
    pub fn start(self) -> Result<Session, Error> {
        let targets = self.targets.resolve()?;
        check_window(self.window)?;
        let program = OnCpuProgram::attach(&OnCpuConfig {
            targets,
            frequency_hz: self.frequency_hz,
            include_idle: self.include_idle,
            map_sizes: self.map_sizes,
        })?;
        spawn(
            super::program::Program::OnCpu(Box::new(program)),
            self.profiler.symbolizer().clone(),
            Some(self.frequency_hz),
            self.window,
        )
    }
}
