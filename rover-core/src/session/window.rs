//! One window of a session: its kind, its profile and its statistics.

use crate::profile::{Profile, ProfileKind};
use crate::stats::WindowStats;

/// What a session recorded during one window, symbolized and aggregated.
///
/// ```no_run
/// # fn show(window: rover_core::Window) {
/// use rover_core::profile::{Metric, ProfileKind};
/// let total = match window.kind {
///     ProfileKind::OnCpu => window.profile.total(Metric::OnCpuSamples),
///     ProfileKind::OffCpu => window.profile.total(Metric::OffCpuNanos),
/// };
/// println!("window {}: {total}", window.stats.index);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Window {
    /// On-CPU or off-CPU, as the session that recorded it.
    pub kind: ProfileKind,
    /// The window's profile; merge windows with [`Profile::merge`].
    pub profile: Profile,
    /// Samples taken and dropped, stacks, symbolization misses, drain time.
    pub stats: WindowStats,
}
