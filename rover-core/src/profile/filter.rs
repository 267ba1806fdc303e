//! Filtering a profile by process, thread or frame: the result is a new,
//! compact profile holding only the kept rows and what they reference.

use super::frame::Frame;
use super::import::Importer;
use super::model::{Entry, Profile, Thread};
use super::value::{OffCpuState, OffCpuValue};

impl Profile {
    /// A profile of the rows for which `keep` returns true. `keep` sees the
    /// row's thread and its frames (leaf first).
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// use rover_core::profile::FrameKind;
    /// // Worker threads' stacks that are in the kernel at the leaf.
    /// let in_kernel = profile.filter(|thread, frames| {
    ///     thread.comm.starts_with("worker")
    ///         && frames.next().is_some_and(|leaf| leaf.kind == FrameKind::Kernel)
    /// });
    /// # }
    /// ```
    pub fn filter<F>(&self, mut keep: F) -> Profile
    where
        F: FnMut(&Thread<'_>, &mut dyn Iterator<Item = Frame<'_>>) -> bool,
    {
        self.filter_entries(|p, e| {
            let Some(thread) = p.thread(e.thread) else {
                return false;
            };
            let mut frames = p.stack(e.stack).iter().filter_map(|&f| p.frame(f));
            keep(&thread, &mut frames)
        })
    }

    /// A profile of the rows for which `keep(self, row)` returns true: the
    /// general form, which also sees the row's value.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// use rover_core::profile::Metric;
    /// let hot = profile.filter_entries(|_, row| row.value.get(Metric::OnCpuSamples) >= 10);
    /// # }
    /// ```
    pub fn filter_entries(&self, mut keep: impl FnMut(&Profile, &Entry) -> bool) -> Profile {
        let mut out = Profile::new();
        let mut importer = Importer::new(self);
        for entry in self.entries() {
            if keep(self, &entry) {
                let thread = importer.thread(&mut out, entry.thread);
                let stack = importer.stack(&mut out, entry.stack);
                out.add_value(thread, stack, &entry.value);
            }
        }
        out.merge_metadata(self);
        out
    }

    /// The rows of the processes in `pids`.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// let one = profile.filter_pids(&[1234]);
    /// # }
    /// ```
    pub fn filter_pids(&self, pids: &[u32]) -> Profile {
        self.filter(|t, _| pids.contains(&t.pid))
    }

    /// The rows of the threads in `tids`.
    pub fn filter_tids(&self, tids: &[u32]) -> Profile {
        self.filter(|t, _| tids.contains(&t.tid))
    }

    /// The rows whose stack has at least one frame matching `matches`.
    pub fn filter_frames(&self, mut matches: impl FnMut(&Frame<'_>) -> bool) -> Profile {
        self.filter(|_, mut frames| Iterator::any(&mut frames, |f| matches(&f)))
    }

    /// The rows whose stack calls the function `name` (exact match; unknown
    /// frames match by their `[module+0xOFFSET]` name).
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// use rover_core::profile::Metric;
    /// let gc = profile.filter_function("GC_collect").total(Metric::OnCpuSamples);
    /// # }
    /// ```
    pub fn filter_function(&self, name: &str) -> Profile {
        self.filter_frames(|f| f.display_name() == name)
    }

    /// The profile with off-CPU values kept only for `states` (say, only
    /// uninterruptible waits to see disk I/O); on-CPU samples are kept as
    /// they are, and rows left empty are dropped.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// use rover_core::profile::{Metric, OffCpuState};
    /// let disk = profile.filter_states(&[OffCpuState::Uninterruptible]);
    /// println!("{} ns waiting on disk", disk.total(Metric::OffCpuNanos));
    /// # }
    /// ```
    pub fn filter_states(&self, states: &[OffCpuState]) -> Profile {
        let mut out = Profile::new();
        let mut importer = Importer::new(self);
        for entry in self.entries() {
            let mut value = entry.value;
            for state in OffCpuState::ALL {
                if !states.contains(&state) {
                    value.off_cpu[state.index()] = OffCpuValue::default();
                }
            }
            if value.is_zero() {
                continue;
            }
            let thread = importer.thread(&mut out, entry.thread);
            let stack = importer.stack(&mut out, entry.stack);
            out.add_value(thread, stack, &value);
        }
        out.merge_metadata(self);
        out
    }
}

#[cfg(test)]
mod tests {
    use rover_symbolize::{Origin, Symbolized};

    use crate::profile::test_frames::sym;
    use crate::profile::{Profile, Sample, SampleValue};

    fn add(p: &mut Profile, pid: u32, comm: &str, names: &[&str]) {
        let user: Vec<Symbolized> = names
            .iter()
            .map(|n| sym(n, "/usr/bin/app", Origin::File))
            .collect();
        p.add_sample(&Sample {
            pid,
            tid: pid,
            process_name: comm,
            comm,
            kernel: &[],
            user: &user,
            value: SampleValue::OnCpu { samples: 1 },
        });
    }

    #[test]
    fn filters_keep_only_the_strings_kept_rows_reference() {
        let mut p = Profile::new();
        add(&mut p, 10, "app", &["work", "main"]);
        add(&mut p, 20, "other", &["idle", "main"]);
        let pid20 = p.filter_pids(&[20]);
        assert_eq!(
            pid20.strings.len(),
            5,
            "\"\", other, idle, main and the module"
        );
    }
}
