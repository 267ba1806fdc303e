//! Symbolizing a window drained with the low-level loader exactly as a
//! session does, for the drain benchmark. Behind the `unstable-loader`
//! feature: not part of rover-core's supported API.

use std::sync::Arc;
use std::time::Instant;

use rover_symbolize::Symbolizer;

use super::assemble::Assembler;
use super::unix_nanos;
use super::window::Window;
use crate::loader::RawWindow;
use crate::profile::ProfileKind;
use crate::stats::WindowStats;

/// Turns loader windows into symbolized [`Window`]s, exactly as a session's
/// drain thread does: each distinct stack symbolized once, user stacks per
/// process, every frame but the leaf at address − 1.
///
/// Unstable: compiled only with the `unstable-loader` feature, for
/// `benches/drain.rs`; it may change or go in any release.
///
/// ```no_run
/// use rover_core::loader::{OnCpuConfig, OnCpuProgram};
/// use rover_core::session::WindowSymbolizer;
///
/// let mut program = OnCpuProgram::attach(&OnCpuConfig::default())?;
/// let mut symbolizer = WindowSymbolizer::new(Default::default());
/// std::thread::sleep(std::time::Duration::from_secs(1));
/// let window = symbolizer.on_cpu(&program.drain()?);
/// println!("{} stacks", window.profile.stack_count());
/// # Ok::<(), rover_core::Error>(())
/// ```
pub struct WindowSymbolizer {
    on_cpu: Assembler,
    off_cpu: Assembler,
    index: u64,
}

impl WindowSymbolizer {
    /// Uses `symbolizer` (and its caches) for every window.
    pub fn new(symbolizer: Arc<Symbolizer>) -> Self {
        WindowSymbolizer {
            on_cpu: Assembler::new(symbolizer.clone(), ProfileKind::OnCpu, None),
            off_cpu: Assembler::new(symbolizer, ProfileKind::OffCpu, None),
            index: 0,
        }
    }

    /// Symbolizes an on-CPU window.
    pub fn on_cpu(&mut self, window: &RawWindow) -> Window {
        Self::build(
            &mut self.on_cpu,
            ProfileKind::OnCpu,
            &mut self.index,
            window,
        )
    }

    /// Symbolizes an off-CPU window.
    pub fn off_cpu(&mut self, window: &RawWindow) -> Window {
        Self::build(
            &mut self.off_cpu,
            ProfileKind::OffCpu,
            &mut self.index,
            window,
        )
    }

    fn build(
        assembler: &mut Assembler,
        kind: ProfileKind,
        index: &mut u64,
        raw: &RawWindow,
    ) -> Window {
        let started = Instant::now();
        let now = unix_nanos();
        let mut stats = WindowStats {
            index: *index,
            ..WindowStats::default()
        };
        *index += 1;
        let profile = assembler.assemble(raw, now, now, &mut stats);
        stats.symbolize_time = started.elapsed();
        Window {
            kind,
            profile,
            stats,
        }
    }
}
