//! The aggregated profile: interned strings, frames, stacks and threads, and
//! one [`Value`] per (thread, stack), built incrementally from samples.

use rover_symbolize::Symbolized;

use super::frame::{
    Frame, FrameId, FrameRecord, FrameTables, frame_view, push_symbolized, push_truncated,
};
use super::intern::{Interner, SliceInterner, StringTable};
use super::value::{Metric, OffCpuValue, ProfileKind, SampleValue, Value, add_states};

/// Dense id of an interned stack within one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub(crate) u32);

/// Dense id of an interned thread within one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(pub(crate) u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ThreadRecord {
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    pub(crate) process: u32,
    pub(crate) comm: u32,
}

/// A thread of a profile: its process and its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thread<'a> {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Process name (the main thread's comm, or the executable's name).
    pub process_name: &'a str,
    /// The thread's own name (`comm`).
    pub comm: &'a str,
}

/// One aggregated row: a thread, a stack and what was counted for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The thread.
    pub thread: ThreadId,
    /// The stack, leaf first.
    pub stack: StackId,
    /// Counts and times.
    pub value: Value,
}

/// One observation for [`ProfileBuilder::add_sample`](super::ProfileBuilder::add_sample):
/// who, where, and how much.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Process name.
    pub process_name: &'a str,
    /// Thread name (`comm`).
    pub comm: &'a str,
    /// Kernel frames, leaf first.
    pub kernel: &'a [Symbolized],
    /// User frames, leaf first. Each frame's kind (native, JIT, kernel)
    /// is its result's [`Origin`](rover_symbolize::Origin).
    pub user: &'a [Symbolized],
    /// What was observed.
    pub value: SampleValue,
}

/// An aggregated, symbolized profile, for reading: sessions return one
/// (from [`Session::stop`](crate::Session::stop) and in every
/// [`Window`](crate::Window)), [`ProfileBuilder`](super::ProfileBuilder)
/// builds one by hand.
///
/// Stacks are stored **leaf first**: index 0 is the innermost frame (where
/// the CPU was, or where the thread blocked), kernel frames before user
/// frames, and an address in inlined code expands to the inlined functions
/// (innermost first, marked [`Frame::inlined`]) followed by the function they
/// were inlined into. Strings, frames, stacks and threads are interned once.
///
/// ```
/// # fn demo(profile: &rover_core::Profile) {
/// use rover_core::profile::Metric;
/// println!("{} samples over {} stacks", profile.total(Metric::OnCpuSamples), profile.stack_count());
/// for entry in profile.entries() {
///     let Some(thread) = profile.thread(entry.thread) else { continue };
///     let leaf = profile.stack(entry.stack).first().and_then(|&f| profile.frame(f));
///     if let Some(leaf) = leaf {
///         println!("{} {}: {} {}", thread.pid, thread.comm, leaf.display_name(), entry.value.samples);
///     }
/// }
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Profile {
    pub(crate) strings: StringTable,
    pub(crate) frames: Interner<FrameRecord>,
    pub(crate) stacks: SliceInterner<FrameId>,
    pub(crate) threads: Interner<ThreadRecord>,
    keys: Interner<(ThreadId, StackId)>,
    /// On-CPU samples, one per row.
    samples: Vec<u64>,
    /// Off-CPU values, one per row once any off-CPU value arrived and empty
    /// until then: an on-CPU profile pays 8 bytes per row, not 72.
    off_cpu_values: Vec<[OffCpuValue; 4]>,
    build_ids: Vec<(u32, u32)>,
    on_cpu: bool,
    off_cpu: bool,
    time_range: Option<(u64, u64)>,
    sampling_hz: Option<u64>,
    /// By (pid, start ticks).
    pub(crate) identities: Vec<std::sync::Arc<super::ProcessIdentity>>,
    scratch: Vec<FrameId>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("entries", &self.len())
            .field("threads", &self.threads.len())
            .field("stacks", &self.stacks.len())
            .field("frames", &self.frames.len())
            .field("strings", &self.strings.len())
            .field("on_cpu", &self.on_cpu)
            .field("off_cpu", &self.off_cpu)
            .finish()
    }
}

impl Profile {
    /// An empty profile, to [`merge`](Profile::merge) others into.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the profile as holding `kind` even if no sample of it arrived
    /// (an on-CPU session that saw nothing still exports `samples/count`).
    pub(crate) fn declare_kind(&mut self, kind: ProfileKind) {
        match kind {
            ProfileKind::OnCpu => self.on_cpu = true,
            ProfileKind::OffCpu => self.off_cpu = true,
        }
    }

    /// Whether the profile holds `kind`: a session's profile holds its
    /// session's kind even when it saw nothing, a merged one both kinds
    /// when it merged both.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// use rover_core::profile::{Metric, ProfileKind};
    /// if profile.has_kind(ProfileKind::OffCpu) {
    ///     println!("{} ns blocked", profile.total(Metric::OffCpuNanos));
    /// }
    /// # }
    /// ```
    pub fn has_kind(&self, kind: ProfileKind) -> bool {
        match kind {
            ProfileKind::OnCpu => self.on_cpu,
            ProfileKind::OffCpu => self.off_cpu,
        }
    }

    /// Records the wall-clock span the profile covers, in nanoseconds since
    /// the Unix epoch.
    pub(crate) fn set_time_range(&mut self, start_unix_nanos: u64, end_unix_nanos: u64) {
        self.time_range = Some((start_unix_nanos, end_unix_nanos.max(start_unix_nanos)));
    }

    /// The wall-clock span, if recorded: `(start, end)` in Unix nanoseconds.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// if let Some((start, end)) = profile.time_range() {
    ///     println!("{:.1} s profiled", (end - start) as f64 / 1e9);
    /// }
    /// # }
    /// ```
    pub fn time_range(&self) -> Option<(u64, u64)> {
        self.time_range
    }

    /// Records the on-CPU sampling frequency, so exports can state the period.
    pub(crate) fn set_sampling_frequency(&mut self, hz: u64) {
        self.sampling_hz = (hz > 0).then_some(hz);
    }

    /// The on-CPU sampling frequency in Hz, if recorded (a session records
    /// the frequency its builder's `frequency(hz)` set). One sample stands
    /// for 1/frequency seconds of CPU; [`Profile::process_summaries`] does
    /// that sum per process.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// use rover_core::profile::Metric;
    /// if let Some(hz) = profile.sampling_frequency() {
    ///     let cpu_s = profile.total(Metric::OnCpuSamples) as f64 / hz as f64;
    ///     println!("{cpu_s:.2} s of CPU");
    /// }
    /// # }
    /// ```
    pub fn sampling_frequency(&self) -> Option<u64> {
        self.sampling_hz
    }

    /// Records the build id (hex) of a module, for exports that carry it.
    pub(crate) fn set_build_id(&mut self, module: &str, build_id: &str) {
        let module = self.strings.intern(module);
        let build_id = self.strings.intern(build_id);
        match self.build_ids.iter_mut().find(|(m, _)| *m == module) {
            Some(slot) => slot.1 = build_id,
            None => self.build_ids.push((module, build_id)),
        }
    }

    /// The build id (hex) recorded for `module`, as a frame's
    /// [`Frame::module`] names it.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile, frame: &rover_core::profile::Frame<'_>) {
    /// if let Some(id) = frame.module.and_then(|m| profile.build_id(m)) {
    ///     println!("{} in build {id}", frame.display_name());
    /// }
    /// # }
    /// ```
    pub fn build_id(&self, module: &str) -> Option<&str> {
        self.build_ids
            .iter()
            .find(|&&(m, _)| self.strings.get(m) == module)
            .map(|&(_, b)| self.strings.get(b))
    }

    /// Every `(module, build id)` pair recorded.
    pub fn build_ids(&self) -> impl Iterator<Item = (&str, &str)> {
        self.build_ids
            .iter()
            .map(|&(m, b)| (self.strings.get(m), self.strings.get(b)))
    }

    /// Interns a thread and returns its id.
    pub(crate) fn intern_thread(
        &mut self,
        pid: u32,
        tid: u32,
        process_name: &str,
        comm: &str,
    ) -> ThreadId {
        let record = ThreadRecord {
            pid,
            tid,
            process: self.strings.intern(process_name),
            comm: self.strings.intern(comm),
        };
        ThreadId(self.threads.intern(record))
    }

    /// Interns the frames of `symbolized` (leaf first) and appends their ids
    /// to `out`; each address may give several frames (inlined functions).
    /// Each frame's kind comes from its result's origin, and the build id of
    /// each file module it names is recorded (see [`Profile::build_id`]).
    /// The session layer uses this with [`Profile::intern_stack`] to intern a
    /// kernel stack id once per window, however many threads share it.
    pub(crate) fn push_frames(&mut self, out: &mut Vec<FrameId>, symbolized: &[Symbolized]) {
        let mut tables = self.frame_tables();
        for sym in symbolized {
            push_symbolized(&mut tables, out, sym, false);
        }
    }

    /// Interns one frame from a symbolized address (see [`Profile::push_frames`]).
    pub(crate) fn push_frame(&mut self, out: &mut Vec<FrameId>, symbolized: &Symbolized) {
        push_symbolized(&mut self.frame_tables(), out, symbolized, false);
    }

    /// Interns one frame the unwinder found with frame pointers.
    pub(crate) fn push_frame_pointer_frame(
        &mut self,
        out: &mut Vec<FrameId>,
        symbolized: &Symbolized,
    ) {
        push_symbolized(&mut self.frame_tables(), out, symbolized, true);
    }

    /// Interns the marker frame of a user stack whose walk stopped.
    pub(crate) fn push_truncated_frame(&mut self, out: &mut Vec<FrameId>, reason: &str) {
        push_truncated(&mut self.frame_tables(), out, reason);
    }

    fn frame_tables(&mut self) -> FrameTables<'_> {
        FrameTables {
            strings: &mut self.strings,
            frames: &mut self.frames,
            build_ids: &mut self.build_ids,
        }
    }

    /// Interns a stack of frame ids (leaf first) and returns its id.
    pub(crate) fn intern_stack(&mut self, frames: &[FrameId]) -> StackId {
        StackId(self.stacks.intern(frames))
    }

    /// Adds an observation to the (thread, stack) row.
    pub(crate) fn add(&mut self, thread: ThreadId, stack: StackId, value: SampleValue) {
        self.declare_kind(value.kind());
        let row = self.row(thread, stack);
        match value {
            SampleValue::OnCpu { samples } => {
                if let Some(slot) = self.samples.get_mut(row) {
                    *slot = slot.saturating_add(samples);
                }
            }
            SampleValue::OffCpu {
                state,
                switches,
                nanos,
            } => {
                if let Some(slot) = self.off_cpu_row(row) {
                    slot[state.index()].add(switches, nanos);
                }
            }
        }
    }

    /// Adds a whole [`Value`] to the (thread, stack) row.
    pub(crate) fn add_value(&mut self, thread: ThreadId, stack: StackId, value: &Value) {
        let row = self.row(thread, stack);
        if value.samples > 0 {
            self.on_cpu = true;
            if let Some(slot) = self.samples.get_mut(row) {
                *slot = slot.saturating_add(value.samples);
            }
        }
        if value.off_cpu.iter().any(|v| v.switches > 0 || v.nanos > 0) {
            self.off_cpu = true;
            if let Some(slot) = self.off_cpu_row(row) {
                add_states(slot, &value.off_cpu);
            }
        }
    }

    /// The index of the (thread, stack) row, created empty if new.
    fn row(&mut self, thread: ThreadId, stack: StackId) -> usize {
        let (index, new) = self.keys.intern_with_flag((thread, stack));
        if new {
            self.samples.push(0);
            if !self.off_cpu_values.is_empty() {
                self.off_cpu_values.push(Default::default());
            }
        }
        index as usize
    }

    /// The off-CPU slot of a row, allocating the off-CPU column on first use.
    fn off_cpu_row(&mut self, row: usize) -> Option<&mut [OffCpuValue; 4]> {
        if self.off_cpu_values.len() < self.samples.len() {
            self.off_cpu_values
                .resize(self.samples.len(), Default::default());
        }
        self.off_cpu_values.get_mut(row)
    }

    fn value_at(&self, row: usize) -> Value {
        Value {
            samples: self.samples.get(row).copied().unwrap_or(0),
            off_cpu: self.off_cpu_values.get(row).copied().unwrap_or_default(),
        }
    }

    /// Adds one sample: interns its thread and frames (kernel frames first,
    /// then user frames, both leaf first) and adds its value.
    pub(crate) fn add_sample(&mut self, sample: &Sample<'_>) {
        let thread = self.intern_thread(sample.pid, sample.tid, sample.process_name, sample.comm);
        let mut frames = std::mem::take(&mut self.scratch);
        frames.clear();
        self.push_frames(&mut frames, sample.kernel);
        self.push_frames(&mut frames, sample.user);
        let stack = self.intern_stack(&frames);
        self.scratch = frames;
        self.add(thread, stack, sample.value);
    }

    /// Number of (thread, stack) rows.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when the profile has no rows.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Every (thread, stack) row, in insertion order; see the example on
    /// [`Profile`].
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Entry> + '_ {
        self.keys
            .items()
            .iter()
            .enumerate()
            .map(|(row, &(thread, stack))| Entry {
                thread,
                stack,
                value: self.value_at(row),
            })
    }

    /// The thread for an id, or `None` for an id from another profile.
    pub fn thread(&self, id: ThreadId) -> Option<Thread<'_>> {
        self.threads.get(id.0).map(|t| Thread {
            pid: t.pid,
            tid: t.tid,
            process_name: self.strings.get(t.process),
            comm: self.strings.get(t.comm),
        })
    }

    /// Every process of the profile as `(pid, process name)`, sorted by pid
    /// (a pid seen under two names, e.g. after `exec`, appears twice). For
    /// their totals, see [`Profile::process_summaries`].
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// for (pid, name) in profile.processes() {
    ///     println!("{pid} {name}");
    /// }
    /// # }
    /// ```
    pub fn processes(&self) -> Vec<(u32, &str)> {
        let mut out: Vec<(u32, &str)> = self
            .threads
            .items()
            .iter()
            .map(|t| (t.pid, self.strings.get(t.process)))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Ids of every thread of the profile, for [`Profile::thread`].
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// let threads = profile.thread_ids().filter_map(|id| profile.thread(id));
    /// for t in threads.filter(|t| t.comm.starts_with("worker")) {
    ///     println!("{} {}", t.tid, t.comm);
    /// }
    /// # }
    /// ```
    pub fn thread_ids(&self) -> impl ExactSizeIterator<Item = ThreadId> {
        (0..self.threads.len() as u32).map(ThreadId)
    }

    /// The frames of a stack, leaf first, for [`Profile::frame`]; empty for
    /// an id from another profile. See the example on [`Profile`].
    pub fn stack(&self, id: StackId) -> &[FrameId] {
        self.stacks.get(id.0).unwrap_or(&[])
    }

    /// A stack's frames grouped by address, leaf first: each group is the
    /// functions inlined at one address (innermost first) followed by the
    /// function they were inlined into, as pprof and OTLP locations hold
    /// them.
    pub(crate) fn address_groups(&self, id: StackId) -> impl Iterator<Item = &[FrameId]> + '_ {
        let frames = self.stack(id);
        let mut start = 0;
        std::iter::from_fn(move || {
            let rest = frames.get(start..).filter(|rest| !rest.is_empty())?;
            // The first frame not inlined ends the group; the last frame
            // ends it in any case.
            let len = rest
                .iter()
                .position(|&f| !self.frame(f).is_some_and(|f| f.inlined))
                .map_or(rest.len(), |i| i + 1);
            start += len;
            Some(&rest[..len])
        })
    }

    /// Number of distinct stacks.
    pub fn stack_count(&self) -> usize {
        self.stacks.len()
    }

    /// A frame by id, or `None` for an id from another profile. See the
    /// example on [`Profile`].
    pub fn frame(&self, id: FrameId) -> Option<Frame<'_>> {
        self.frames.get(id.0).map(|r| frame_view(&self.strings, r))
    }

    /// Number of distinct frames.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// Sum of `metric` over every row (see [`Metric`] for an example).
    pub fn total(&self, metric: Metric) -> u64 {
        match metric {
            Metric::OnCpuSamples => self.samples.iter().copied().fold(0, u64::saturating_add),
            Metric::OffCpuNanos | Metric::OffCpuSwitches => (0..self.off_cpu_values.len())
                .map(|row| self.value_at(row).get(metric))
                .fold(0, u64::saturating_add),
        }
    }

    /// An estimate of the heap bytes the profile holds (tables, arenas and
    /// indexes, by capacity).
    pub fn memory_bytes(&self) -> usize {
        self.strings.memory_bytes()
            + self.frames.memory_bytes()
            + self.stacks.memory_bytes()
            + self.threads.memory_bytes()
            + self.keys.memory_bytes()
            + self.samples.capacity() * size_of::<u64>()
            + self.off_cpu_values.capacity() * size_of::<[OffCpuValue; 4]>()
            + self.build_ids.capacity() * size_of::<(u32, u32)>()
            + self.scratch.capacity() * size_of::<FrameId>()
    }

    pub(crate) fn merge_metadata(&mut self, other: &Profile) {
        self.on_cpu |= other.on_cpu;
        self.off_cpu |= other.off_cpu;
        self.time_range = match (self.time_range, other.time_range) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (mine, theirs) => mine.or(theirs),
        };
        self.sampling_hz = self.sampling_hz.or(other.sampling_hz);
        for (module, build_id) in other.build_ids() {
            if self.build_id(module).is_none() {
                self.set_build_id(module, build_id);
            }
        }
        for identity in &other.identities {
            self.add_identity(identity.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use rover_symbolize::{Origin, Symbolized};

    use super::*;
    use crate::profile::OffCpuState;
    use crate::profile::test_frames::sym;

    fn syms(module: &str, origin: Origin, names: &[&str]) -> Vec<Symbolized> {
        names.iter().map(|n| sym(n, module, origin)).collect()
    }

    /// The calls the session layer makes: a kernel stack interned once per
    /// window, however many threads share it.
    #[test]
    fn low_level_api_interns_a_stack_once_for_many_threads() {
        let mut p = Profile::new();
        let mut frames = Vec::new();
        let kernel = syms("[kernel.kallsyms]", Origin::Kernel, &["schedule"]);
        p.push_frames(&mut frames, &kernel);
        let user = syms("/usr/bin/app", Origin::File, &["read", "main"]);
        p.push_frames(&mut frames, &user);
        let stack = p.intern_stack(&frames);
        for tid in 0..8 {
            let t = p.intern_thread(10, 100 + tid, "app", "io");
            p.add(
                t,
                stack,
                SampleValue::OffCpu {
                    state: OffCpuState::Uninterruptible,
                    switches: 2,
                    nanos: 1_000,
                },
            );
        }
        assert_eq!(p.stack_count(), 1);
        assert_eq!(p.len(), 8);
        assert_eq!(p.total(Metric::OffCpuSwitches), 16);
        assert_eq!(p.total(Metric::OffCpuNanos), 8_000);
        assert!(p.has_kind(ProfileKind::OffCpu));
        let v = p.entries().next().unwrap().value;
        assert_eq!(v.off_cpu(OffCpuState::Uninterruptible).nanos, 1_000);
        assert_eq!(v.off_cpu(OffCpuState::Interruptible).nanos, 0);
    }
}
