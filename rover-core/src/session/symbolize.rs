//! Symbolizing a window drained with the low-level loader, for tools that
//! drive `rover_core::loader` themselves (and for the drain benchmark).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rover_symbolize::Symbolizer;

use super::assemble::Assembler;
use super::program::RawWindow;
use super::window::Window;
use crate::loader::{OffCpuWindow, OnCpuWindow};
use crate::profile::ProfileKind;
use crate::stats::WindowStats;

/// Turns loader windows into symbolized [`Window`]s, exactly as a session's
/// drain thread does: each distinct stack symbolized once, user stacks per
/// process, every frame but the leaf at address − 1.
///
/// ```no_run
/// use rover_core::loader::{OnCpuConfig, OnCpuProgram};
/// use rover_core::session::WindowSymbolizer;
///
/// let mut program = OnCpuProgram::attach(&OnCpuConfig::default())?;
/// let mut symbolizer = WindowSymbolizer::new(Default::default());
/// std::thread::sleep(std::time::Duration::from_secs(1));
/// let window = symbolizer.on_cpu(program.drain()?);
/// println!("{} stacks", window.profile.stack_count());
/// # Ok::<(), rover_core::loader::LoaderError>(())
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
    pub fn on_cpu(&mut self, window: OnCpuWindow) -> Window {
        let raw = RawWindow::from_on_cpu(window);
        Self::build(&mut self.on_cpu, &mut self.index, &raw)
    }

    /// Symbolizes an off-CPU window.
    pub fn off_cpu(&mut self, window: OffCpuWindow) -> Window {
        let raw = RawWindow::from_off_cpu(window);
        Self::build(&mut self.off_cpu, &mut self.index, &raw)
    }

    fn build(assembler: &mut Assembler, index: &mut u64, raw: &RawWindow) -> Window {
        let started = Instant::now();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut stats = WindowStats {
            index: *index,
            ..WindowStats::default()
        };
        *index += 1;
        let profile = assembler.assemble(raw, now, now, &mut stats);
        stats.symbolize_time = started.elapsed();
        Window { profile, stats }
    }
}
