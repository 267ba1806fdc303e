//! Turns a drained window (thread keys and raw instruction pointers) into a
//! symbolized [`Profile`]: each distinct stack symbolized once per window,
//! kernel stacks through kallsyms and user stacks per process.

use std::collections::HashMap;
use std::sync::Arc;

use rover_symbolize::{Reason, Source, Symbolized, Symbolizer, Unknown};

use rover_ebpf::abi::UNWIND_FP_FRAME;

use super::tracker::Tracker;
use crate::loader::{RawWindow, StackLoss, StackSlot, UserWalk, WalkStop};
use crate::process::ProcessInfo;
use crate::profile::{FrameId, ProcessIdentity, Profile, ProfileKind, SampleValue, StackId};
use crate::stats::{SymbolizationStats, WindowStats};

/// Builds window profiles; lives on the drain thread for the whole session
/// and remembers process names, so processes that exited keep theirs.
pub(crate) struct Assembler {
    symbolizer: Arc<Symbolizer>,
    kind: ProfileKind,
    frequency_hz: Option<u64>,
    process_names: HashMap<u32, Arc<str>>,
    /// Identities of the processes of the last window, as names are kept.
    identities: HashMap<u32, Option<Arc<ProcessIdentity>>>,
    tracker: Option<Arc<Tracker>>,
}

/// The frames of one window's stacks, symbolized once each.
#[derive(Default)]
struct WindowFrames {
    /// Kernel stacks by index into the window's stacks.
    kernel: HashMap<usize, Vec<FrameId>>,
    /// User stacks by (process, index): the same addresses mean different
    /// code in different processes.
    user: HashMap<(u32, usize), Vec<FrameId>>,
}

impl Assembler {
    pub fn new(symbolizer: Arc<Symbolizer>, kind: ProfileKind, frequency_hz: Option<u64>) -> Self {
        Assembler {
            symbolizer,
            kind,
            frequency_hz,
            process_names: HashMap::new(),
            identities: HashMap::new(),
            tracker: None,
        }
    }

    /// Takes process identities from `tracker` (captured while processes
    /// lived) before reading `/proc`.
    pub fn with_tracker(mut self, tracker: Arc<Tracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Symbolizes `raw` into a profile covering `[start, end)` (Unix
    /// nanoseconds), filling the counting and symbolization fields of `stats`.
    pub fn assemble(
        &mut self,
        raw: &RawWindow,
        start: u64,
        end: u64,
        stats: &mut WindowStats,
    ) -> Profile {
        let mut profile = Profile::new();
        profile.declare_kind(self.kind);
        if let Some(hz) = self.frequency_hz {
            profile.set_sampling_frequency(hz);
        }
        profile.set_time_range(start, end);

        stats.keys = raw.entries.len();
        stats.distinct_stacks = raw.stacks.len();
        stats.dropped = raw.dropped();
        self.refresh_process_names(raw);
        for identity in self.identities.values().flatten() {
            profile.add_identity(identity.clone());
        }

        let frames = self.symbolize_stacks(raw, &mut profile, &mut stats.symbolization);
        let mut stacks: HashMap<(Option<usize>, u32, Option<usize>, UserWalk), StackId> =
            HashMap::new();
        let mut scratch = Vec::new();
        for entry in &raw.entries {
            let weight = match entry.value {
                SampleValue::OnCpu { samples } => samples,
                SampleValue::OffCpu {
                    switches, nanos, ..
                } => {
                    stats.off_cpu_nanos += nanos;
                    switches
                }
            };
            stats.samples += weight;
            for slot in [entry.user_stack, entry.kernel_stack] {
                if let StackSlot::Lost(loss) = slot {
                    count_loss(&mut stats.lost_stacks, loss, weight);
                }
            }
            count_walk(&mut stats.user_walks, entry.user_walk, weight);
            let kernel = stack_index(entry.kernel_stack);
            let user = stack_index(entry.user_stack);
            let walk = entry.user_walk;
            let stack = *stacks
                .entry((kernel, entry.tgid, user, walk))
                .or_insert_with(|| {
                    scratch.clear();
                    if let Some(ids) = kernel.and_then(|k| frames.kernel.get(&k)) {
                        scratch.extend_from_slice(ids);
                    }
                    if let Some(ids) = user.and_then(|u| frames.user.get(&(entry.tgid, u))) {
                        scratch.extend_from_slice(ids);
                    }
                    // An unwound stack that stopped early says so, outermost.
                    if let UserWalk::Stopped(stop) = walk
                        && stop != WalkStop::NoRegisters
                    {
                        profile.push_truncated_frame(&mut scratch, stop.describe());
                    }
                    profile.intern_stack(&scratch)
                });
            let process = self
                .process_names
                .get(&entry.tgid)
                .cloned()
                .unwrap_or_else(|| Arc::from(entry.comm.as_str()));
            let thread = profile.intern_thread(entry.tgid, entry.tid, &process, &entry.comm);
            profile.add(thread, stack, entry.value);
        }
        profile
    }

    /// Reads the name of each process seen for the first time, and forgets
    /// processes not in this window so the table stays bounded.
    fn refresh_process_names(&mut self, raw: &RawWindow) {
        let mut seen: HashMap<u32, Arc<str>> = HashMap::with_capacity(self.process_names.len());
        for entry in &raw.entries {
            if seen.contains_key(&entry.tgid) {
                continue;
            }
            let name = match self.process_names.get(&entry.tgid) {
                Some(name) => name.clone(),
                None => match std::fs::read_to_string(format!("/proc/{}/comm", entry.tgid)) {
                    Ok(comm) => Arc::from(comm.trim_end()),
                    // Gone already: its main thread's name is the next best.
                    Err(_) => raw
                        .entries
                        .iter()
                        .find(|e| e.tgid == entry.tgid && e.tid == e.tgid)
                        .map_or_else(
                            || Arc::from(entry.comm.as_str()),
                            |e| Arc::from(e.comm.as_str()),
                        ),
                },
            };
            seen.insert(entry.tgid, name);
        }
        self.process_names = seen;
        let mut identities = HashMap::with_capacity(self.process_names.len());
        for &pid in self.process_names.keys() {
            // The tracker's is the freshest: it is replaced at every exec.
            let identity = self
                .tracker
                .as_ref()
                .and_then(|tracker| tracker.identity(pid))
                .or_else(|| self.identities.get(&pid).cloned().flatten())
                .or_else(|| {
                    ProcessInfo::read(pid)
                        .ok()
                        .map(|info| Arc::new(ProcessIdentity::of(&info)))
                });
            identities.insert(pid, identity);
        }
        self.identities = identities;
    }

    fn symbolize_stacks(
        &self,
        raw: &RawWindow,
        profile: &mut Profile,
        stats: &mut SymbolizationStats,
    ) -> WindowFrames {
        let mut kernel: Vec<usize> = Vec::new();
        let mut user: HashMap<u32, Vec<usize>> = HashMap::new();
        for entry in &raw.entries {
            if let Some(k) = stack_index(entry.kernel_stack) {
                kernel.push(k);
            }
            if let Some(u) = stack_index(entry.user_stack) {
                user.entry(entry.tgid).or_default().push(u);
            }
        }
        let mut frames = WindowFrames::default();
        kernel.sort_unstable();
        kernel.dedup();
        for (index, ids) in
            self.symbolize_group(&Source::kernel(), &kernel, &raw.stacks, profile, stats)
        {
            frames.kernel.insert(index, ids);
        }
        let mut pids: Vec<_> = user.into_iter().collect();
        pids.sort_unstable_by_key(|(pid, _)| *pid);
        for (pid, mut indices) in pids {
            indices.sort_unstable();
            indices.dedup();
            for (index, ids) in
                self.symbolize_group(&Source::process(pid), &indices, &raw.stacks, profile, stats)
            {
                frames.user.insert((pid, index), ids);
            }
        }
        frames
    }

    /// Symbolizes the stacks `indices` from one source in a single batch.
    /// Every frame but the leaf is a return address, looked up at
    /// address − 1 so its line and inlined frames are those of the call.
    fn symbolize_group(
        &self,
        source: &Source,
        indices: &[usize],
        stacks: &[Vec<u64>],
        profile: &mut Profile,
        stats: &mut SymbolizationStats,
    ) -> Vec<(usize, Vec<FrameId>)> {
        let mut addrs = Vec::new();
        // User addresses the unwinder found with frame pointers carry a
        // mark (kernel addresses have that bit set by nature).
        let kernel = matches!(source, Source::Kernel(_));
        let mark = if kernel { 0 } else { UNWIND_FP_FRAME };
        let mut frame_pointer = Vec::new();
        for &index in indices {
            let stack = stacks.get(index).map_or(&[][..], Vec::as_slice);
            addrs.extend(stack.iter().enumerate().map(|(depth, ip)| {
                let ip = ip & !mark;
                if depth == 0 { ip } else { ip.saturating_sub(1) }
            }));
            frame_pointer.extend(stack.iter().map(|ip| ip & mark != 0));
        }
        if addrs.is_empty() {
            return Vec::new();
        }
        stats.addresses += addrs.len() as u64;
        let symbolized = match self.symbolizer.symbolize(source, &addrs) {
            Ok(symbolized) => symbolized,
            Err(error) => {
                stats
                    .failed_sources
                    .push((source_name(source), error.to_string()));
                addrs
                    .iter()
                    .map(|&address| {
                        Symbolized::Unknown(Unknown {
                            module: None,
                            origin: None,
                            address,
                            file_offset: None,
                            vaddr: None,
                            reason: Reason::Unmapped,
                        })
                    })
                    .collect()
            }
        };
        // Rover's own probe frames are at the leaf of kernel stacks only.
        let mut out = Vec::with_capacity(indices.len());
        let mut results = symbolized.iter().zip(frame_pointer);
        for &index in indices {
            let depth = stacks.get(index).map_or(0, Vec::len);
            let mut ids = Vec::with_capacity(depth);
            let mut leaf = true;
            for (symbolized, frame_pointer) in results.by_ref().take(depth) {
                if leaf && kernel && is_probe_frame(symbolized) {
                    continue;
                }
                leaf = false;
                if let Symbolized::Unknown(unknown) = symbolized {
                    stats.count_miss(&unknown.reason);
                }
                if frame_pointer {
                    profile.push_frame_pointer_frame(&mut ids, symbolized);
                } else {
                    profile.push_frame(&mut ids, symbolized);
                }
            }
            out.push((index, ids));
        }
        out
    }
}

fn stack_index(slot: StackSlot) -> Option<usize> {
    match slot {
        StackSlot::Stack(index) => Some(index),
        StackSlot::Empty | StackSlot::Lost(_) => None,
    }
}

fn count_walk(walks: &mut Vec<(UserWalk, u64)>, walk: UserWalk, weight: u64) {
    match walks.iter_mut().find(|(w, _)| *w == walk) {
        Some((_, n)) => *n += weight,
        None => walks.push((walk, weight)),
    }
}

fn count_loss(losses: &mut Vec<(StackLoss, u64)>, loss: StackLoss, weight: u64) {
    match losses.iter_mut().find(|(l, _)| *l == loss) {
        Some((_, n)) => *n += weight,
        None => losses.push((loss, weight)),
    }
}

fn source_name(source: &Source) -> String {
    match source {
        Source::Process(process) => format!("process {}", process.pid),
        Source::Kernel(_) => "kernel".to_owned(),
        Source::Elf(elf) => elf.path.display().to_string(),
        // Sources this crate does not use.
        _ => format!("{source:?}"),
    }
}

/// The frames of rover's own probe at the leaf of a kernel stack taken from
/// a tracepoint (the BPF program, the trace glue calling it): they say where
/// the stack was taken, not where the thread was, so they are left out.
fn is_probe_frame(symbolized: &Symbolized) -> bool {
    match symbolized {
        Symbolized::Sym(sym) => {
            let name = &*sym.name;
            name.starts_with("bpf_prog_")
                || name.starts_with("bpf_trace_run")
                || name.starts_with("__traceiter_")
                || name.starts_with("__bpf_trace_")
        }
        Symbolized::Unknown(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::RawEntry;
    use crate::profile::{FrameKind, Metric};

    #[inline(never)]
    fn marker_function() -> u64 {
        std::hint::black_box(7)
    }

    fn window(stacks: Vec<Vec<u64>>, entries: Vec<RawEntry>) -> RawWindow {
        RawWindow {
            entries,
            stacks,
            errors: Vec::new(),
            unwinder: None,
        }
    }

    fn entry(user: StackSlot, kernel: StackSlot, samples: u64) -> RawEntry {
        let pid = std::process::id();
        RawEntry {
            tgid: pid,
            tid: pid,
            comm: "tester".into(),
            user_stack: user,
            user_walk: UserWalk::FramePointers,
            kernel_stack: kernel,
            value: SampleValue::OnCpu { samples },
        }
    }

    fn names(profile: &Profile) -> Vec<Vec<String>> {
        profile
            .entries()
            .map(|e| {
                profile
                    .stack(e.stack)
                    .iter()
                    .filter_map(|id| profile.frame(*id))
                    .map(|f| f.name.to_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_leaf_is_looked_up_at_its_address_and_callers_one_byte_before() {
        let start = marker_function as *const () as u64;
        // The same address as leaf and as a caller: a return address equal to
        // a function's first byte belongs to the call at the end of the
        // function before it.
        let raw = window(
            vec![vec![start, start], vec![start + 1]],
            vec![
                entry(StackSlot::Stack(0), StackSlot::Empty, 3),
                entry(StackSlot::Stack(1), StackSlot::Empty, 2),
            ],
        );
        let mut assembler = Assembler::new(
            Arc::new(Symbolizer::default()),
            ProfileKind::OnCpu,
            Some(99),
        );
        let mut stats = WindowStats::default();
        let profile = assembler.assemble(&raw, 1, 2, &mut stats);
        let stacks = names(&profile);
        let two_frames = stacks
            .iter()
            .find(|s| s.len() == 2)
            .expect("a two-frame stack");
        assert!(two_frames[0].contains("marker_function"), "{two_frames:?}");
        assert!(!two_frames[1].contains("marker_function"), "{two_frames:?}");
        assert_eq!(stats.samples, 5);
        assert_eq!(stats.symbolization.addresses, 3);
        assert_eq!(profile.total(Metric::OnCpuSamples), 5);
        assert_eq!(profile.sampling_frequency(), Some(99));
        assert_eq!(profile.time_range(), Some((1, 2)));
    }

    #[test]
    fn unwound_stacks_mark_frame_pointer_frames_and_where_the_walk_stopped() {
        let start = marker_function as *const () as u64;
        let mut stopped = entry(StackSlot::Stack(0), StackSlot::Empty, 4);
        stopped.user_walk = UserWalk::Stopped(WalkStop::TablePending);
        let mut complete = entry(StackSlot::Stack(0), StackSlot::Empty, 1);
        complete.user_walk = UserWalk::Complete;
        // The caller was found with frame pointers: its address has the mark.
        let raw = window(
            vec![vec![start + 1, (start + 2) | UNWIND_FP_FRAME]],
            vec![stopped, complete],
        );
        let mut assembler = Assembler::new(
            Arc::new(Symbolizer::default()),
            ProfileKind::OnCpu,
            Some(99),
        );
        let mut stats = WindowStats::default();
        let profile = assembler.assemble(&raw, 1, 2, &mut stats);
        let mut seen = 0;
        for entry in profile.entries() {
            let frames: Vec<_> = profile
                .stack(entry.stack)
                .iter()
                .filter_map(|id| profile.frame(*id))
                .collect();
            assert!(frames[0].name.contains("marker_function"), "{frames:?}");
            assert!(
                !frames[0].frame_pointer && frames[1].frame_pointer,
                "{frames:?}"
            );
            assert!(
                frames[1].name.contains("marker_function"),
                "mark stripped: {frames:?}"
            );
            if entry.value.samples == 4 {
                let outer = frames.last().unwrap();
                assert_eq!(outer.kind, FrameKind::Truncated);
                assert_eq!(outer.name, "[unwind stopped: table not loaded yet]");
                assert_eq!(outer.reason, Some("table not loaded yet"));
            } else {
                assert_eq!(frames.len(), 2, "a complete stack has no marker");
            }
            seen += 1;
        }
        assert_eq!(seen, 2);
        assert_eq!(stats.stopped_walks(WalkStop::TablePending), 4);
        assert!(stats.user_walks.contains(&(UserWalk::Complete, 1)));
    }

    #[test]
    fn a_stack_shared_by_threads_is_interned_once_and_losses_are_counted() {
        let start = marker_function as *const () as u64;
        let pid = std::process::id();
        let mut entries = vec![
            entry(StackSlot::Stack(0), StackSlot::Empty, 1),
            entry(
                StackSlot::Stack(0),
                StackSlot::Lost(StackLoss::Collision),
                4,
            ),
        ];
        entries[1].tid = pid + 1;
        let raw = window(vec![vec![start + 2]], entries);
        let mut assembler =
            Assembler::new(Arc::new(Symbolizer::default()), ProfileKind::OnCpu, None);
        let mut stats = WindowStats::default();
        let profile = assembler.assemble(&raw, 0, 0, &mut stats);
        assert_eq!(profile.stack_count(), 1);
        assert_eq!(profile.len(), 2);
        assert_eq!(stats.lost_stacks, vec![(StackLoss::Collision, 4)]);
        assert_eq!(
            stats.symbolization.addresses, 1,
            "one lookup for the shared stack"
        );
        let frame = profile
            .frame(profile.stack(profile.entries().next().unwrap().stack)[0])
            .unwrap();
        assert_eq!(frame.kind, FrameKind::Native);
    }

    #[test]
    fn a_process_that_cannot_be_read_gives_unknown_frames_and_a_failed_source() {
        // Pids are never this high (pid_max is at most 2^22).
        let mut gone = entry(StackSlot::Stack(0), StackSlot::Empty, 1);
        gone.tgid = 4_999_999;
        gone.tid = 4_999_999;
        let raw = window(vec![vec![0x1000, 0x2000]], vec![gone]);
        let mut assembler =
            Assembler::new(Arc::new(Symbolizer::default()), ProfileKind::OnCpu, None);
        let mut stats = WindowStats::default();
        let profile = assembler.assemble(&raw, 0, 0, &mut stats);
        assert_eq!(stats.symbolization.missed(), 2);
        assert_eq!(stats.symbolization.failed_sources.len(), 1);
        assert_eq!(stats.symbolization.failed_sources[0].0, "process 4999999");
        let names: Vec<(u32, &str)> = profile.processes();
        assert_eq!(
            names,
            vec![(4_999_999, "tester")],
            "the thread's name stands in"
        );
    }

    #[test]
    fn probe_frames_are_recognised() {
        let sym = |name: &str| {
            crate::profile::test_frames::sym(
                name,
                "[kernel.kallsyms]",
                rover_symbolize::Origin::Kernel,
            )
        };
        assert!(is_probe_frame(&sym(
            "bpf_prog_f0d5c25973793402_rover_offcpu_btf"
        )));
        assert!(is_probe_frame(&sym("bpf_trace_run4")));
        assert!(is_probe_frame(&sym("__traceiter_sched_switch")));
        assert!(!is_probe_frame(&sym("__schedule")));
    }

    #[test]
    fn a_file_module_s_build_id_comes_with_its_frames() {
        use object::Object;
        let start = marker_function as *const () as u64;
        let raw = window(
            vec![vec![start + 1]],
            vec![entry(StackSlot::Stack(0), StackSlot::Empty, 1)],
        );
        let mut assembler =
            Assembler::new(Arc::new(Symbolizer::default()), ProfileKind::OnCpu, None);
        let profile = assembler.assemble(&raw, 0, 0, &mut WindowStats::default());
        let frame = profile
            .frame(profile.stack(profile.entries().next().unwrap().stack)[0])
            .unwrap();
        assert_eq!(frame.kind, FrameKind::Native);
        let module = frame.module.expect("the test binary's path");
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let note = object::File::parse(&*exe).unwrap().build_id().unwrap();
        let Some(note) = note else {
            println!("skipped: the test binary has no build id note");
            return;
        };
        let hex: String = note.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(profile.build_id(module), Some(hex.as_str()));
        assert_eq!(profile.build_ids().count(), 1);
    }

    #[test]
    fn a_frame_named_by_the_perf_map_is_jit() {
        let pid = std::process::id();
        // SAFETY: a fresh private anonymous mapping, unmapped below; nothing
        // runs in it, it only has to be executable anonymous memory.
        let code = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(code, libc::MAP_FAILED);
        let addr = code as u64;
        let map = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
        std::fs::write(&map, format!("{addr:x} 40 jitted::hot\n")).unwrap();
        let raw = window(
            vec![vec![addr + 4]],
            vec![entry(StackSlot::Stack(0), StackSlot::Empty, 1)],
        );
        let mut assembler =
            Assembler::new(Arc::new(Symbolizer::default()), ProfileKind::OnCpu, None);
        let profile = assembler.assemble(&raw, 0, 0, &mut WindowStats::default());
        std::fs::remove_file(&map).unwrap();
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(code, 4096) };
        let frame = profile
            .frame(profile.stack(profile.entries().next().unwrap().stack)[0])
            .unwrap();
        assert_eq!(frame.kind, FrameKind::Jit, "{frame:?}");
        assert_eq!(frame.name, "jitted::hot");
        assert_eq!(profile.build_ids().count(), 0, "a perf map has no build id");
    }
}
