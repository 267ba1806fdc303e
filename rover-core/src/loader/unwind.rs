//! The kernel side of in-kernel unwinding, as the loader sees it: which
//! stack mode a session runs in, the unwinder's maps (the rows user space
//! writes through a shared mapping, the processes' mappings, the requests
//! the programs leave, the user stacks they store), and how a drained key's
//! user stack is read back.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;

use aya::maps::{HashMap, Map, MapData, MapError, ProgramArray};
use aya::programs::ProgramFd;
use aya::{Ebpf, EbpfLoader};
use rover_ebpf::abi::{self, KernelStack, UnwindMapping, UnwindProc, UnwindRow};

use super::buffer::{StackResolver, clear_except};
use super::object::{missing_in_object, take_map};
use super::window::{StackSlot, UserWalk, WalkStop};
use super::{Error, KernelFeature, KernelFeatures, MapSizes, StackMode};

pub(crate) const ROWS: &str = "unwind_rows";
pub(crate) const PROCS: &str = "unwind_procs";
pub(crate) const REQUESTS: &str = "unwind_requests";
pub(crate) const PROGS: &str = "unwind_progs";
pub(crate) const USTACKS: [&str; 2] = ["ustacks0", "ustacks1"];

/// The most rows `unwind_rows` may have: the programs' binary search takes
/// 23 steps, enough for 2^22.
pub const MAX_UNWIND_ROWS: u32 = 1 << 22;

/// What the unwinder needs of the kernel, beyond what each program needs.
const NEEDS: [KernelFeature; 2] = [KernelFeature::Btf, KernelFeature::ProbeReadKernel];

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
            for feature in NEEDS {
                features.require(feature, needed_by, Some("use StackMode::FramePointers"))?;
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

/// `unwind_rows`, mapped into this process: rows are written in place.
struct RowsMapping {
    ptr: NonNull<UnwindRow>,
    len: usize,
    bytes: usize,
    // Keeps the map alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is owned by this struct alone and written only
// through `&mut self`; the kernel's readers take no Rust references.
unsafe impl Send for RowsMapping {}

impl RowsMapping {
    fn new(map: MapData, rows: u32) -> Result<Self, Error> {
        let len = rows as usize;
        let page = 4096usize;
        let bytes = (len * std::mem::size_of::<UnwindRow>()).div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of an mmapable array map of `rows`
        // 16-byte values, no longer than the map's data; checked below.
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
                what: format!("mapping the {ROWS} map ({bytes} bytes)"),
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(ptr.cast::<UnwindRow>()).ok_or_else(|| Error::Io {
            what: format!("mapping the {ROWS} map"),
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(RowsMapping {
            ptr,
            len,
            bytes,
            _map: map,
        })
    }

    fn write(&mut self, start: u32, rows: &[UnwindRow]) -> Result<(), String> {
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
        let slots = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), end - start) };
        slots.copy_from_slice(rows);
        Ok(())
    }
}

impl Drop for RowsMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
        }
    }
}

/// The unwinder's maps in a loaded `unwind` object.
pub struct KernelTables {
    rows: RowsMapping,
    procs: HashMap<MapData, u32, UnwindProc>,
    requests: HashMap<MapData, u32, u32>,
    pub(crate) ustacks: [HashMap<MapData, u64, KernelStack>; 2],
    // Holds the step program in the array: the kernel empties a program
    // array when its last user-space reference is closed.
    _progs: ProgramArray<MapData>,
}

impl KernelTables {
    /// Takes the unwinder's maps out of `ebpf` and puts `step` (the step
    /// program, loaded) in the program array.
    pub(crate) fn take(ebpf: &mut Ebpf, step: &ProgramFd, rows: u32) -> Result<Self, Error> {
        let map = ebpf.take_map(ROWS).ok_or_else(|| missing_in_object(ROWS))?;
        let Map::Array(data) = map else {
            return Err(missing_in_object(ROWS));
        };
        let rows = RowsMapping::new(data, rows.min(MAX_UNWIND_ROWS))?;
        let mut progs: ProgramArray<MapData> = take_map(ebpf, PROGS, ProgramArray::try_from)?;
        progs.set(0, step, 0).map_err(Error::map(PROGS))?;
        Ok(KernelTables {
            rows,
            procs: take_map(ebpf, PROCS, HashMap::try_from)?,
            requests: take_map(ebpf, REQUESTS, HashMap::try_from)?,
            ustacks: [
                take_map(ebpf, USTACKS[0], HashMap::try_from)?,
                take_map(ebpf, USTACKS[1], HashMap::try_from)?,
            ],
            _progs: progs,
        })
    }

    /// Rows `unwind_rows` holds.
    pub fn capacity(&self) -> u32 {
        u32::try_from(self.rows.len).unwrap_or(u32::MAX)
    }

    /// Writes `rows` at `start` of `unwind_rows`.
    pub fn write_rows(&mut self, start: u32, rows: &[UnwindRow]) -> Result<(), String> {
        self.rows.write(start, rows)
    }

    /// Sets the executable mappings of process `tgid` (sorted by start; at
    /// most [`abi::UNWIND_MAX_MAPPINGS`] are kept).
    pub fn set_process(&mut self, tgid: u32, mappings: &[UnwindMapping]) -> Result<(), String> {
        let mut proc = UnwindProc::default();
        let count = mappings.len().min(abi::UNWIND_MAX_MAPPINGS);
        proc.mappings[..count].copy_from_slice(&mappings[..count]);
        proc.count = count as u32;
        self.procs
            .insert(tgid, proc, 0)
            .map_err(|error| format!("{PROCS}: {error}"))
    }

    /// Forgets process `tgid`.
    pub fn remove_process(&mut self, tgid: u32) -> Result<(), String> {
        match self.procs.remove(&tgid) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(error) => Err(format!("{PROCS}: {error}")),
        }
    }

    /// Processes the programs asked about (unknown, or met at an address
    /// in none of their mappings), with the `USTACK_*` reason; each is
    /// removed from the requests.
    pub fn take_requests(&mut self) -> Result<Vec<(u32, u32)>, String> {
        let taken: Vec<(u32, u32)> = self
            .requests
            .iter()
            .filter_map(Result::ok)
            .collect();
        for (tgid, _) in &taken {
            let _ = self.requests.remove(tgid);
        }
        Ok(taken)
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
    }
}
