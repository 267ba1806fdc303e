//! One window of a session: its profile and its statistics.

use crate::profile::Profile;
use crate::stats::WindowStats;

/// What a session recorded during one window, symbolized and aggregated.
#[derive(Debug, Clone)]
pub struct Window {
    /// The window's profile; merge windows with [`Profile::merge`].
    pub profile: Profile,
    /// Samples taken and lost, stacks, symbolization misses, drain time.
    pub stats: WindowStats,
}
