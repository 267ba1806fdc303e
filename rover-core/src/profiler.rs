//! The entry point: a [`Profiler`] checks privileges and the kernel once,
//! holds the shared symbolizer, and starts typed sessions.

use std::sync::Arc;

use rover_symbolize::{Level, Symbolizer};

use crate::Error;
use crate::loader::{Environment, KernelFeatures, Warning};
use crate::session::tracker::Tracker;
use crate::session::{OffCpuBuilder, OnCpuBuilder};

/// Starts profiling sessions. Cheap to clone; every session of a profiler
/// shares its [`Symbolizer`] and so its caches of parsed files.
///
/// ```no_run
/// # async fn run() -> Result<(), rover_core::Error> {
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// let profiler = rover_core::Profiler::new()?;
/// let mut session = profiler
///     .on_cpu()
///     .pids([1234])
///     .frequency(99)
///     .window(Duration::from_secs(5))
///     .start()?;
/// let mut windows = session.windows();
/// if let Some(window) = windows.next().await {
///     println!("{} samples", window.stats.samples);
/// }
/// let whole = session.stop().await?;
/// println!("{} distinct stacks", whole.stack_count());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Profiler {
    symbolizer: Arc<Symbolizer>,
    environment: Environment,
    /// Captures processes for the symbolizer while they live and releases
    /// them after their last window; shared by this profiler's sessions.
    tracker: Arc<Tracker>,
}

impl std::fmt::Debug for Profiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiler")
            .field("environment", &self.environment)
            .field("symbolizer_level", &self.symbolizer.level())
            .finish()
    }
}

impl Profiler {
    /// Checks that this process may profile (root, or CAP_BPF with
    /// CAP_PERFMON) and probes the kernel's eBPF features
    /// ([`Profiler::kernel_features`]), with a default symbolizer (names,
    /// lines and inlined frames, demangled). A missing feature is refused,
    /// by name, by the session that needs it, or that session falls back.
    /// What would make profiles poorer without stopping them is in
    /// [`Profiler::warnings`].
    pub fn new() -> Result<Self, Error> {
        Profiler::builder().build()
    }

    /// Configures the symbolizer before the checks.
    pub fn builder() -> ProfilerBuilder {
        ProfilerBuilder::default()
    }

    /// Starts configuring an on-CPU session (timer sampling of running threads).
    pub fn on_cpu(&self) -> OnCpuBuilder {
        OnCpuBuilder::new(self.clone())
    }

    /// Starts configuring an off-CPU session (time threads spend blocked).
    pub fn off_cpu(&self) -> OffCpuBuilder {
        OffCpuBuilder::new(self.clone())
    }

    /// The symbolizer every session of this profiler uses.
    pub fn symbolizer(&self) -> &Arc<Symbolizer> {
        &self.symbolizer
    }

    pub(crate) fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// What the checks found: the kernel's features, its sampling-rate limit.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// The eBPF features of the running kernel, probed by [`Profiler::new`]:
    /// what sessions fall back from (the off-CPU hook) or refuse without.
    ///
    /// ```no_run
    /// let profiler = rover_core::Profiler::new()?;
    /// let features = profiler.kernel_features();
    /// print!("Linux {}\n{features}", features.release());
    /// # Ok::<(), rover_core::Error>(())
    /// ```
    pub fn kernel_features(&self) -> &KernelFeatures {
        &self.environment.features
    }

    /// What the checks found that makes profiles poorer without stopping
    /// them, e.g. kernel addresses hidden by `kernel.kptr_restrict` (every
    /// kernel frame unnamed). Each says what to do.
    ///
    /// ```no_run
    /// let profiler = rover_core::Profiler::new()?;
    /// for warning in profiler.warnings() {
    ///     eprintln!("warning: {warning}");
    /// }
    /// # Ok::<(), rover_core::Error>(())
    /// ```
    pub fn warnings(&self) -> &[Warning] {
        &self.environment.warnings
    }

    /// A profiler whose environment was not checked, for unit tests of the
    /// configuration checks, which run without privileges.
    #[cfg(test)]
    pub(crate) fn unchecked_for_tests() -> Self {
        let symbolizer = Arc::new(Symbolizer::default());
        Profiler {
            tracker: Tracker::new(
                symbolizer.clone(),
                Arc::new(|| None) as crate::session::tracker::OpenSource,
                true,
            ),
            symbolizer,
            environment: Environment {
                features: KernelFeatures::all_for_tests(),
                max_sample_rate: 1000,
                warnings: Vec::new(),
            },
        }
    }
}

/// Configures a [`Profiler`].
#[derive(Default)]
pub struct ProfilerBuilder {
    symbolizer: Option<Arc<Symbolizer>>,
    level: Option<Level>,
    demangle: Option<bool>,
    untracked: bool,
}

impl ProfilerBuilder {
    /// Uses this symbolizer (shared, e.g. with other profilers or tools).
    pub fn symbolizer(mut self, symbolizer: Arc<Symbolizer>) -> Self {
        self.symbolizer = Some(symbolizer);
        self
    }

    /// Detail of symbolization for the default symbolizer (default: inlined frames).
    pub fn level(mut self, level: Level) -> Self {
        self.level = Some(level);
        self
    }

    /// Whether the default symbolizer demangles Rust and C++ names (default: yes).
    pub fn demangle(mut self, demangle: bool) -> Self {
        self.demangle = Some(demangle);
        self
    }

    /// Whether sessions follow process events to capture processes while
    /// they live and release them after they exit (default yes; see
    /// docs/processes.md, "Short-lived processes"). Without it, a process
    /// that exits before its window is drained comes out unsymbolized, and
    /// what the symbolizer cached for exited processes is kept until
    /// [`Symbolizer::evict_process`].
    pub fn track_processes(mut self, track: bool) -> Self {
        self.untracked = !track;
        self
    }

    /// Runs the privilege and kernel checks and builds the profiler.
    pub fn build(self) -> Result<Profiler, Error> {
        let environment = Environment::check()?;
        let symbolizer = match self.symbolizer {
            Some(symbolizer) => symbolizer,
            None => Arc::new(
                Symbolizer::builder()
                    .level(self.level.unwrap_or_default())
                    .demangle(self.demangle.unwrap_or(true))
                    .build(),
            ),
        };
        let events_environment = environment.clone();
        let open: crate::session::tracker::OpenSource = if self.untracked {
            Arc::new(|| None)
        } else {
            Arc::new(move || crate::session::tracker::open_events(&events_environment))
        };
        Ok(Profiler {
            tracker: Tracker::new(symbolizer.clone(), open, !self.untracked),
            symbolizer,
            environment,
        })
    }
}
