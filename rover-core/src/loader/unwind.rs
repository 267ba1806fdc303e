//! The kernel side of in-kernel unwinding, as the loader sees it: which
//! stack mode a session runs in, the unwinder's maps (the rows user space
//! writes through a shared mapping, the processes' mappings, the requests
//! the programs leave, the user stacks they store), and how a drained key's
//! user stack is read back.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData, MapError, ProgramArray};
use aya::programs::ProgramFd;
use aya::{Ebpf, EbpfLoader};
use rover_ebpf::abi::{self, KernelStack, UnwindMapping, UnwindProc, UnwindRow};
use rover_unwind::{
    MappingEntry, Priority, ProcessSink, Row, RowSink, TableCache, Unwinder, UnwinderConfig,
};

use super::buffer::{StackResolver, clear_except};
use super::object::{missing_in_object, take_map};
use super::window::{StackSlot, UserWalk, WalkStop};
use super::{Error, KernelFeature, KernelFeatures, KernelVersion, MapSizes, StackMode};

pub(crate) const ROWS: &str = "unwind_rows";
pub(crate) const PROCS: &str = "unwind_procs";
pub(crate) const GENERATION: &str = "unwind_generation";
pub(crate) const REQUESTS: &str = "unwind_requests";
pub(crate) const PROGS: &str = "unwind_progs";
pub(crate) const USTACKS: [&str; 2] = ["ustacks0", "ustacks1"];

/// The most rows `unwind_rows` may have: the programs' binary search takes
/// 23 steps, enough for 2^22.
pub const MAX_UNWIND_ROWS: u32 = 1 << 22;

/// What the unwinder needs of the kernel, beyond what each program needs:
/// BTF (CO-RE reads of the task), `bpf_probe_read_user` (5.5, with
/// `bpf_probe_read_kernel`), mmapable arrays (5.5)...
const NEEDS: [KernelFeature; 2] = [KernelFeature::Btf, KernelFeature::ProbeReadKernel];
/// ... and tail calls from programs with BPF-to-BPF calls (its binary
/// searches are global functions), which x86-64 has from Linux 5.10.
pub const MIN_UNWIND_KERNEL: KernelVersion = KernelVersion::new(5, 10);

/// The error (or fallback reason) of a kernel older than the unwinder needs.
fn too_old(
    features: &KernelFeatures,
    needed_by: &'static str,
    instead: Option<&'static str>,
) -> Option<Error> {
    let version = features.version()?;
    (version < MIN_UNWIND_KERNEL).then(|| Error::KernelTooOld {
        needed_by,
        needs: MIN_UNWIND_KERNEL,
        why: "tail calls from programs with BPF-to-BPF calls",
        instead,
        release: features.release().to_owned(),
    })
}

/// The stack mode a session runs in, once the kernel is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Whether the unwinder runs.
    pub(crate) dwarf: bool,
    /// Why `Auto` walks frame pointers, when it does.
    pub(crate) fallback: Option<String>,
}

/// Resolves `mode` on a kernel with `features`: `Dwarf` where the kernel
/// lacks something is the error naming it, `Auto` falls back with a reason.
pub(crate) fn resolve(
    mode: StackMode,
    features: &KernelFeatures,
    needed_by: &'static str,
) -> Result<Resolved, Error> {
    match mode {
        StackMode::FramePointers => Ok(Resolved {
            dwarf: false,
            fallback: None,
        }),
        StackMode::Dwarf => {
            let instead = Some("use StackMode::FramePointers");
            for feature in NEEDS {
                features.require(feature, needed_by, instead)?;
            }
            if let Some(error) = too_old(features, needed_by, instead) {
                return Err(error);
            }
            Ok(Resolved {
                dwarf: true,
                fallback: None,
            })
        }
        StackMode::Auto => {
            for feature in NEEDS {
                if let Err(error) = features.require(feature, needed_by, None) {
                    return Ok(Resolved {
                        dwarf: false,
                        fallback: Some(error.to_string()),
                    });
                }
            }
            if let Some(error) = too_old(features, needed_by, None) {
                return Ok(Resolved {
                    dwarf: false,
                    fallback: Some(error.to_string()),
                });
            }
            Ok(Resolved {
                dwarf: true,
                fallback: None,
            })
        }
    }
}

/// Sets the unwinder's map sizes and globals on a loader of an `unwind`
/// object.
pub(crate) fn configure<'a, 'b>(
    loader: &'b mut EbpfLoader<'a>,
    sizes: &MapSizes,
    have_task_pt_regs: &'a u8,
) -> &'b mut EbpfLoader<'a> {
    loader
        .override_global("have_task_pt_regs", have_task_pt_regs, true)
        .map_max_entries(ROWS, sizes.unwind_rows.min(MAX_UNWIND_ROWS))
        .map_max_entries(PROCS, sizes.unwind_processes)
        .map_max_entries(USTACKS[0], sizes.stacks)
        .map_max_entries(USTACKS[1], sizes.stacks)
}

/// Whether the programs may call `bpf_task_pt_regs`.
pub(crate) fn task_pt_regs_flag(features: &KernelFeatures) -> u8 {
    u8::from(features.support(KernelFeature::TaskPtRegs).is_yes())
}

/// An mmapable array map, mapped into this process.
struct MappedArray {
    ptr: NonNull<u8>,
    bytes: usize,
    // Keeps the map alive as long as the mapping.
    _map: MapData,
}

impl MappedArray {
    /// Maps the first `bytes` of `map` (rounded up to pages), which must
    /// be no longer than the map's data.
    fn new(map: MapData, name: &str, bytes: usize) -> Result<Self, Error> {
        let page = 4096usize;
        let bytes = bytes.div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of an mmapable array map, no longer
        // than its data (the callers' sizes); checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Io {
                what: format!("mapping the {name} map ({bytes} bytes)"),
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::Io {
            what: format!("mapping the {name} map"),
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(MappedArray {
            ptr,
            bytes,
            _map: map,
        })
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
        }
    }
}

/// `unwind_generation`, mapped into this process: bumped after every
/// change to the rows or the processes, which ends the validity of every
/// frame the programs' caches remember.
struct Generation(MappedArray);

// SAFETY: the mapped word is only accessed atomically (`bump`), and the
// mapping lives as long as the struct.
unsafe impl Send for Generation {}
unsafe impl Sync for Generation {}

impl Generation {
    fn new(map: MapData) -> Result<Self, Error> {
        MappedArray::new(map, GENERATION, std::mem::size_of::<u32>()).map(Generation)
    }

    fn bump(&self) {
        // SAFETY: the mapping holds the map's one u32 at its start, page
        // aligned, and is only accessed atomically from this side.
        let word = unsafe { &*self.0.ptr.as_ptr().cast::<AtomicU32>() };
        word.fetch_add(1, Ordering::Release);
    }
}

/// `unwind_rows`, mapped into this process: rows are written in place.
struct RowsMapping {
    mapping: MappedArray,
    len: usize,
    generation: Arc<Generation>,
}

// SAFETY: the mapping is owned by this struct alone and written only
// through `&mut self`; the kernel's readers take no Rust references.
unsafe impl Send for RowsMapping {}

impl RowsMapping {
    fn new(map: MapData, rows: u32, generation: Arc<Generation>) -> Result<Self, Error> {
        let len = rows as usize;
        Ok(RowsMapping {
            mapping: MappedArray::new(map, ROWS, len * std::mem::size_of::<UnwindRow>())?,
            len,
            generation,
        })
    }

    fn write_rows(&mut self, start: u32, rows: &[Row]) -> Result<(), String> {
        let start = start as usize;
        let end = start
            .checked_add(rows.len())
            .filter(|end| *end <= self.len)
            .ok_or_else(|| {
                format!(
                    "rows {start}..{} are past the {} rows of {ROWS}",
                    start + rows.len(),
                    self.len
                )
            })?;
        // SAFETY: `start..end` is inside the mapping (checked above), which
        // holds `len` rows; nothing else in this process aliases it.
        let slots = unsafe {
            std::slice::from_raw_parts_mut(
                self.mapping.ptr.as_ptr().cast::<UnwindRow>().add(start),
                end - start,
            )
        };
        for (slot, row) in slots.iter_mut().zip(rows) {
            *slot = abi_row(row);
        }
        self.generation.bump();
        Ok(())
    }
}

impl RowSink for RowsMapping {
    fn write(&mut self, start: u32, rows: &[Row]) -> Result<(), String> {
        self.write_rows(start, rows)
    }
}

/// A row in the ABI's struct: the same 16 bytes.
fn abi_row(row: &Row) -> UnwindRow {
    let b = row.to_bytes();
    UnwindRow {
        pc: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        cfa_offset: i32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        rbp_offset: i16::from_le_bytes([b[12], b[13]]),
        cfa_kind: b[14],
        rbp_kind: b[15],
    }
}

/// `unwind_procs`, as the service's process sink.
struct ProcMap {
    map: HashMap<MapData, u32, UnwindProc>,
    generation: Arc<Generation>,
}

impl ProcessSink for ProcMap {
    fn set(&mut self, tgid: u32, mappings: &[MappingEntry]) -> Result<(), String> {
        let mut proc = UnwindProc::default();
        let count = mappings.len().min(abi::UNWIND_MAX_MAPPINGS);
        for (slot, entry) in proc.mappings.iter_mut().zip(&mappings[..count]) {
            *slot = UnwindMapping {
                start: entry.start,
                end: entry.end,
                bias: entry.bias,
                table_start: entry.table.table_start(),
                table_len: entry.table.table_len(),
            };
        }
        proc.count = count as u32;
        let set = self
            .map
            .insert(tgid, proc, 0)
            .map_err(|error| format!("{PROCS}: {error}"));
        // Bumped even after a failed update, which may have left a part.
        self.generation.bump();
        set
    }

    fn remove(&mut self, tgid: u32) -> Result<(), String> {
        let removed = match self.map.remove(&tgid) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(error) => Err(format!("{PROCS}: {error}")),
        };
        self.generation.bump();
        removed
    }
}

/// The unwinder of a loaded `unwind` object: the table service writing
/// into its maps, the thread that answers the programs' requests, and the
/// user stacks the programs store.
pub(crate) struct KernelTables {
    unwinder: Arc<Unwinder>,
    pub(crate) ustacks: [HashMap<MapData, u64, KernelStack>; 2],
    poller: Option<Poller>,
    // Holds the step program in the array: the kernel empties a program
    // array when its last user-space reference is closed.
    _progs: ProgramArray<MapData>,
}

/// Bytes of built table rows this process keeps across sessions, so that
/// session after session (continuous profiling, start/stop cycles) does not
/// parse the same `.eh_frame`s again: 64 MiB (4 Mi rows).
pub const TABLE_CACHE_BYTES: usize = 64 << 20;

/// The tables every session of this process shares.
fn table_cache() -> &'static TableCache {
    static CACHE: OnceLock<TableCache> = OnceLock::new();
    CACHE.get_or_init(|| TableCache::new(TABLE_CACHE_BYTES))
}

/// Which processes the unwinder loads at once; others are loaded when the
/// programs first meet them.
#[derive(Clone)]
pub(crate) enum Preload<'a> {
    Pids(&'a [u32]),
    /// Every process in /proc but `skip`.
    Everything {
        skip: Option<u32>,
    },
    None,
}

/// What to load at once for `targets` (whose pids resolved to `pids`);
/// `include_self` false leaves this process out of an every-process
/// preload (the programs do not record it: building its tables would only
/// hold up the table worker).
pub(crate) fn preload<'a>(
    targets: &super::Targets,
    pids: &'a [u32],
    include_self: bool,
) -> Preload<'a> {
    match targets {
        super::Targets::Pids(_) => Preload::Pids(pids),
        super::Targets::All => Preload::Everything {
            skip: (!include_self).then(std::process::id),
        },
        _ => Preload::None,
    }
}

impl KernelTables {
    /// Takes the unwinder's maps out of `ebpf`, puts `step` (the step
    /// program, loaded) in the program array, and starts the table service
    /// with `preload`'s processes.
    pub(crate) fn take(
        ebpf: &mut Ebpf,
        step: &ProgramFd,
        sizes: &MapSizes,
        preload: Preload<'_>,
    ) -> Result<Self, Error> {
        let rows = sizes.unwind_rows.min(MAX_UNWIND_ROWS);
        let map = ebpf.take_map(ROWS).ok_or_else(|| missing_in_object(ROWS))?;
        let Map::Array(data) = map else {
            return Err(missing_in_object(ROWS));
        };
        let generation = match ebpf.take_map(GENERATION) {
            Some(Map::Array(data)) => Arc::new(Generation::new(data)?),
            _ => return Err(missing_in_object(GENERATION)),
        };
        let mapping = RowsMapping::new(data, rows, generation.clone())?;
        let mut progs: ProgramArray<MapData> = take_map(ebpf, PROGS, ProgramArray::try_from)?;
        progs.set(0, step, 0).map_err(Error::map(PROGS))?;
        let procs = ProcMap {
            map: take_map(ebpf, PROCS, HashMap::try_from)?,
            generation,
        };
        let requests = take_map(ebpf, REQUESTS, HashMap::try_from)?;
        let unwinder = Arc::new(
            Unwinder::new(
                UnwinderConfig::default()
                    .capacity_rows(rows)
                    .cache(table_cache().clone()),
                mapping,
                procs,
            )
            .map_err(|source| Error::Io {
                what: "starting the unwinder's table service".into(),
                source,
            })?,
        );
        let mut known = Known::new();
        let (preload_all, skip) = match preload {
            Preload::Everything { skip } => (true, skip),
            _ => (false, None),
        };
        if let Preload::Pids(pids) = preload {
            for pid in pids.iter().copied().collect::<HashSet<u32>>() {
                add(&unwinder, pid, &mut known, Priority::Background);
            }
        }
        let poller = Poller::start(unwinder.clone(), requests, known, preload_all, skip)?;
        Ok(KernelTables {
            unwinder,
            ustacks: [
                take_map(ebpf, USTACKS[0], HashMap::try_from)?,
                take_map(ebpf, USTACKS[1], HashMap::try_from)?,
            ],
            poller: Some(poller),
            _progs: progs,
        })
    }

    /// The table service.
    pub(crate) fn unwinder(&self) -> &Unwinder {
        &self.unwinder
    }

    /// A handle that tells the table service about process changes.
    pub(crate) fn notifier(&self) -> Option<TableNotifier> {
        self.poller
            .as_ref()
            .map(|poller| TableNotifier(poller.send.clone()))
    }

    /// Loads the tables of processes added to the targets (on the request
    /// thread: this returns at once).
    pub(crate) fn add_processes(&self, pids: &[u32]) {
        if let Some(poller) = &self.poller {
            let mut pids = pids.to_vec();
            pids.sort_unstable();
            pids.dedup();
            let _ = poller.send.send(Command::Add(pids));
        }
    }

    /// The user stack of a drained key.
    pub(crate) fn user_stack(
        &self,
        resolver: &mut StackResolver,
        buffer: u32,
        hash: u64,
        status: u32,
    ) -> Result<(StackSlot, UserWalk), Error> {
        let walk = UserWalk::from_status(status);
        if hash == 0 {
            let slot = match walk {
                UserWalk::Stopped(WalkStop::StoreFull) => {
                    StackSlot::Lost(super::window::StackLoss::MapFull)
                }
                _ => StackSlot::Empty,
            };
            return Ok((slot, walk));
        }
        let index = (buffer & 1) as usize;
        let slot = resolver.kernel_stack(&self.ustacks[index], USTACKS[index], hash, 0)?;
        Ok((slot, walk))
    }

    /// Empties user stack map `idle` but for the stacks in `keep`.
    pub(crate) fn clear_idle(&mut self, idle: usize, keep: &HashSet<u64>) -> Result<(), Error> {
        clear_except(&mut self.ustacks[idle], keep, USTACKS[idle])
    }
}

impl Drop for KernelTables {
    fn drop(&mut self) {
        if let Some(poller) = self.poller.take() {
            let _ = poller.send.send(Command::Stop);
            let _ = poller.thread.join();
        }
    }
}

/// The processes the service holds, by the identity of their executable
/// when they were read: an `exec` changes it.
type Known = StdHashMap<u32, Option<(u64, u64)>>;

/// The device and inode of `pid`'s executable.
fn exe_identity(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Adds `pid` to the service unless it maps nothing (a kernel thread),
/// its builds queued by `priority`.
fn add(unwinder: &Unwinder, pid: u32, known: &mut Known, priority: Priority) {
    let exe = exe_identity(pid);
    match unwinder.add_process_with(pid, priority) {
        Ok(report) if report.mappings == 0 => {
            let _ = unwinder.remove(pid);
        }
        Ok(_) => {
            known.insert(pid, exe);
        }
        Err(_) => {}
    }
}

enum Command {
    Add(Vec<u32>),
    /// A process exec'd or mapped more code: read again if held, loaded if
    /// the service holds every process.
    Changed(u32),
    Stop,
}

/// Tells a session's table service that processes changed (exec, code
/// mapped), so it reads them at once instead of at the programs' next
/// request. Cheap to clone; outliving the session is harmless.
#[derive(Clone)]
pub(crate) struct TableNotifier(mpsc::Sender<Command>);

impl TableNotifier {
    /// `pid` exec'd or mapped executable code.
    pub(crate) fn changed(&self, pid: u32) {
        let _ = self.0.send(Command::Changed(pid));
    }
}

/// How often the programs' requests are read.
const POLL: Duration = Duration::from_millis(20);
/// A process met at an address outside its mappings is read again at most
/// this often (code it maps later: dlopen; or an address that is no code).
const REFRESH_EVERY: Duration = Duration::from_millis(500);
/// How often processes that exited are forgotten, and those that exec'd
/// another executable read again.
const PRUNE_EVERY: Duration = Duration::from_secs(2);

/// The thread that reads `unwind_requests`: loads processes the programs
/// met first, reads again those met outside their mappings, forgets those
/// that exited.
struct Poller {
    send: mpsc::Sender<Command>,
    thread: JoinHandle<()>,
}

impl Poller {
    fn start(
        unwinder: Arc<Unwinder>,
        mut requests: HashMap<MapData, u32, u32>,
        mut known: Known,
        preload_all: bool,
        skip: Option<u32>,
    ) -> Result<Self, Error> {
        let (send, receive) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("rover-unwind-poll".into())
            .spawn(move || {
                if preload_all {
                    for pid in all_pids().into_iter().filter(|&pid| Some(pid) != skip) {
                        add(&unwinder, pid, &mut known, Priority::Background);
                    }
                }
                let mut refreshed: StdHashMap<u32, Instant> = StdHashMap::new();
                let mut pruned = Instant::now();
                loop {
                    match receive.recv_timeout(POLL) {
                        Ok(Command::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Ok(Command::Add(pids)) => {
                            // A pid list may repeat pids, and name processes
                            // already held.
                            let new: HashSet<u32> = pids
                                .into_iter()
                                .filter(|pid| !known.contains_key(pid))
                                .collect();
                            for pid in new {
                                add(&unwinder, pid, &mut known, Priority::Background);
                            }
                        }
                        Ok(Command::Changed(pid)) => {
                            if let Some(exe) = known.get_mut(&pid) {
                                *exe = exe_identity(pid);
                                refreshed.insert(pid, Instant::now());
                                if unwinder.refresh(pid).is_err() {
                                    known.remove(&pid);
                                }
                            } else if preload_all {
                                // A process started during the session:
                                // before what the start queued.
                                add(&unwinder, pid, &mut known, Priority::Urgent);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                    let taken: Vec<(u32, u32)> = requests.iter().filter_map(Result::ok).collect();
                    for (pid, reason) in taken {
                        let _ = requests.remove(&pid);
                        if !known.contains_key(&pid) {
                            // Met by the programs: sampled now.
                            add(&unwinder, pid, &mut known, Priority::Urgent);
                        } else if reason == abi::USTACK_UNMAPPED
                            && refreshed
                                .get(&pid)
                                .is_none_or(|at| at.elapsed() >= REFRESH_EVERY)
                        {
                            refreshed.insert(pid, Instant::now());
                            if unwinder.refresh(pid).is_err() {
                                known.remove(&pid);
                            }
                        }
                    }
                    if pruned.elapsed() >= PRUNE_EVERY {
                        pruned = Instant::now();
                        // Exited: forgotten. Exec'd (another executable):
                        // read again, its old mappings are gone.
                        known.retain(|&pid, exe| {
                            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                                let _ = unwinder.remove(pid);
                                return false;
                            }
                            let now = exe_identity(pid);
                            if now != *exe {
                                *exe = now;
                                return unwinder.refresh(pid).is_ok();
                            }
                            true
                        });
                        refreshed.retain(|pid, _| known.contains_key(pid));
                    }
                }
            })
            .map_err(|source| Error::Io {
                what: "starting the unwinder's request thread".into(),
                source,
            })?;
        Ok(Poller { send, thread })
    }
}

/// Every process id in /proc.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Support;

    #[test]
    fn auto_falls_back_and_dwarf_refuses_where_the_kernel_lacks_what_it_needs() {
        let all = KernelFeatures::all_for_tests();
        assert!(resolve(StackMode::Auto, &all, "x").unwrap().dwarf);
        assert!(resolve(StackMode::Dwarf, &all, "x").unwrap().dwarf);
        assert!(!resolve(StackMode::FramePointers, &all, "x").unwrap().dwarf);
        let mut old = KernelFeatures::all_for_tests();
        old.set_for_tests(KernelFeature::ProbeReadKernel, Support::No);
        let auto = resolve(StackMode::Auto, &old, "the unwinder").unwrap();
        assert!(!auto.dwarf);
        assert!(
            auto.fallback
                .as_deref()
                .is_some_and(|why| why.contains("bpf_probe_read_kernel")),
            "{auto:?}"
        );
        let error = resolve(StackMode::Dwarf, &old, "the unwinder").unwrap_err();
        assert!(
            error.to_string().contains("use StackMode::FramePointers"),
            "{error}"
        );
        let mut ancient = KernelFeatures::all_for_tests();
        ancient.set_release_for_tests("5.4.0-test");
        let auto = resolve(StackMode::Auto, &ancient, "the unwinder").unwrap();
        assert!(!auto.dwarf);
        assert_eq!(
            resolve(StackMode::Dwarf, &ancient, "the unwinder")
                .unwrap_err()
                .to_string(),
            "the unwinder needs Linux 5.10 or later (tail calls from programs with BPF-to-BPF \
             calls); this kernel is 5.4.0-test: use StackMode::FramePointers"
        );
    }
}
