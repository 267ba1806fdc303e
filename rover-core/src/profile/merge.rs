//! Merging profiles: windows of one session into its whole, or profiles of
//! different sessions into one, whatever order their tables were built in.

use super::import::Importer;
use super::model::Profile;

impl Profile {
    /// Adds every row of `other` into this profile. Rows with the same
    /// thread and the same stack (compared by content, not by id) add up.
    ///
    /// ```
    /// # fn demo(windows: Vec<rover_core::profile::Profile>) {
    /// let mut whole = rover_core::profile::Profile::new();
    /// for window in &windows {
    ///     whole.merge(window);
    /// }
    /// # }
    /// ```
    pub fn merge(&mut self, other: &Profile) {
        let mut importer = Importer::new(other);
        for entry in other.entries() {
            let thread = importer.thread(self, entry.thread);
            let stack = importer.stack(self, entry.stack);
            self.add_value(thread, stack, &entry.value);
        }
        self.merge_metadata(other);
    }

    /// One profile holding every row of `profiles`.
    pub fn merged<'a>(profiles: impl IntoIterator<Item = &'a Profile>) -> Profile {
        let mut out = Profile::new();
        for p in profiles {
            out.merge(p);
        }
        out
    }
}
