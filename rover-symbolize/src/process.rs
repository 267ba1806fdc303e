//! Symbolizing absolute addresses of a live process: its memory maps
//! (cached per pid, re-read when an address is not found, kept after the
//! process exits until forgotten), file-backed modules opened through
//! `/proc/PID/map_files` or `/proc/PID/root`, the vDSO from memory, and
//! perf-map symbols for anonymous (JIT) code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::debuginfo::BinaryDir;
use crate::elf::{ElfFile, OpenError};
use crate::error::Error;
use crate::frame::{Module, Origin, Reason, Sym, Symbolized, Unknown};
use crate::maps::{MapEntry, MapPath, ProcessMaps, read_vdso};
use crate::module::{LoadedFile, Place, unknown};
use crate::perfmap::{PerfMap, PerfMapCache, perf_map_path};
use crate::source::Process;
use crate::symbolizer::{Symbolizer, unmapped};

/// A perf map and the module its symbols carry.
type NamedPerfMap = (Arc<PerfMap>, Module);

/// Process maps by pid, the modules opened for their mappings, and their
/// perf maps.
#[derive(Default)]
pub(crate) struct ProcessCache {
    maps: Mutex<HashMap<u32, Arc<ProcessMaps>>>,
    /// By (pid, mapping start, inode): kept so that a process that exited
    /// (its `/proc` entries gone) still resolves until forgotten.
    opened: Mutex<HashMap<(u32, u64, u64), Arc<LoadedFile>>>,
    /// The last perf map seen per pid and its module name, for the same
    /// reason.
    last_perf_maps: Mutex<HashMap<u32, NamedPerfMap>>,
    pub(crate) perf_maps: PerfMapCache,
}

impl ProcessCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Arc<ProcessMaps>>> {
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The maps of `pid`: cached, or read (and cached) on first use.
    pub(crate) fn maps_for(&self, pid: u32) -> Result<Arc<ProcessMaps>, Error> {
        if let Some(maps) = self.lock().get(&pid) {
            return Ok(Arc::clone(maps));
        }
        self.reread(pid)
    }

    /// Reads the maps of `pid` anew (the process mapped something since).
    fn reread(&self, pid: u32) -> Result<Arc<ProcessMaps>, Error> {
        let maps = Arc::new(ProcessMaps::read(pid)?);
        self.lock().insert(pid, Arc::clone(&maps));
        Ok(maps)
    }

    fn opened(&self) -> MutexGuard<'_, HashMap<(u32, u64, u64), Arc<LoadedFile>>> {
        self.opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn last_perf_maps(&self) -> MutexGuard<'_, HashMap<u32, NamedPerfMap>> {
        self.last_perf_maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The perf map of `pid`: reloaded if its file changed, else the last one
    /// seen (the process may have exited).
    fn perf_map(&self, pid: u32) -> Option<NamedPerfMap> {
        let fresh = self.perf_maps.get(pid).zip(perf_map_path(pid).ok());
        match fresh {
            Some((map, path)) => {
                // Shown as the process sees it: /tmp/perf-NSPID.map.
                let shown = path.to_string_lossy().into_owned();
                let shown = shown
                    .find("/root/")
                    .map_or(shown.as_str(), |at| &shown[at + 5..]);
                let found = (map, Module::new(shown, None));
                self.last_perf_maps().insert(pid, found.clone());
                Some(found)
            }
            None => self.last_perf_maps().get(&pid).cloned(),
        }
    }

    /// The module kept for the mapping at `start` of file `inode` in `pid`
    /// by a capture, if any.
    fn captured(&self, pid: u32, start: u64, inode: u64) -> Option<Arc<LoadedFile>> {
        self.opened().get(&(pid, start, inode)).cloned()
    }

    pub(crate) fn forget(&self, pid: u32) {
        self.lock().remove(&pid);
        self.opened().retain(|&(p, _, _), _| p != pid);
        self.last_perf_maps().remove(&pid);
        self.perf_maps.forget(pid);
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
        self.opened().clear();
        self.last_perf_maps().clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What [`Symbolizer::capture_process`] kept of a live process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capture {
    /// Mappings read from `/proc/PID/maps`.
    pub mappings: usize,
    /// Executable file-backed mappings (and the vDSO) whose module is now
    /// held for the process.
    pub modules: usize,
    /// Executable mappings whose file could not be opened (the process
    /// exited meanwhile, or the file is not a usable ELF); their addresses
    /// will resolve to unknown frames with that reason.
    pub unopened: usize,
}

impl Symbolizer {
    /// Captures, while `pid` lives, everything symbolizing its addresses
    /// needs: its memory map, and the module of every executable mapping
    /// (opened through `/proc/PID/map_files`, so a deleted binary or one in
    /// another mount namespace stays readable), plus its vDSO. After the
    /// process exits its addresses resolve as if it still ran, until
    /// [`Symbolizer::evict_process`] releases what was kept.
    ///
    /// Call it when a process execs and again when it maps more code (a
    /// library, `dlopen`): each call replaces what the last one kept for
    /// `pid`, keeping modules that are still mapped.
    ///
    /// Fails only when the maps cannot be read (the process is gone).
    pub fn capture_process(&self, pid: u32) -> Result<Capture, Error> {
        let maps = self.processes.reread(pid)?;
        let mut capture = Capture {
            mappings: maps.entries().len(),
            ..Capture::default()
        };
        let mut kept: HashMap<(u32, u64, u64), Arc<LoadedFile>> = HashMap::new();
        for entry in maps.entries().iter().filter(|e| e.is_executable()) {
            let key = (pid, entry.start, entry.inode);
            let opened = match &entry.path {
                MapPath::File(path) | MapPath::Deleted(path) => {
                    match self.processes.captured(pid, entry.start, entry.inode) {
                        Some(file) => Ok(file),
                        None => self.open_mapped(pid, entry, path, true),
                    }
                }
                MapPath::Vdso => self.load_vdso(pid, entry),
                MapPath::Anonymous | MapPath::Special(_) => continue,
            };
            match opened {
                Ok(file) => {
                    capture.modules += 1;
                    kept.insert(key, file);
                }
                Err(_) => capture.unopened += 1,
            }
        }
        let mut opened = self.processes.opened();
        opened.retain(|&(p, _, _), _| p != pid);
        opened.extend(kept);
        Ok(capture)
    }

    /// Number of modules held for processes by captures.
    pub fn captured_modules(&self) -> usize {
        self.processes.opened().len()
    }

    pub(crate) fn symbolize_process(
        &self,
        process: &Process,
        addrs: &[u64],
    ) -> Result<Vec<Symbolized>, Error> {
        let pid = process.pid;
        let mut maps = self.processes.maps_for(pid)?;
        if addrs.iter().any(|&a| maps.find(a).is_none()) {
            // New mappings since the maps were cached; an exited process
            // keeps its cached maps.
            if let Ok(fresh) = self.processes.reread(pid) {
                maps = fresh;
            }
        }
        let mut out = unmapped(addrs.len());
        // Group by mapping, so each module is looked up in one batch.
        let mut by_entry: Vec<(usize, u64, usize)> = Vec::with_capacity(addrs.len());
        for (idx, &addr) in addrs.iter().enumerate() {
            match maps.find(addr) {
                Some(entry) => {
                    let entry_idx = maps.entries().partition_point(|e| e.start < entry.start);
                    by_entry.push((entry_idx, addr, idx));
                }
                None => {
                    out[idx] = Symbolized::Unknown(Unknown {
                        module: None,
                        origin: None,
                        address: addr,
                        file_offset: None,
                        vaddr: None,
                        reason: Reason::Unmapped,
                    })
                }
            }
        }
        by_entry.sort_unstable_by_key(|&(e, addr, _)| (e, addr));
        let mut batch: Vec<(u64, usize)> = Vec::new();
        for group in by_entry.chunk_by(|a, b| a.0 == b.0) {
            let entry = &maps.entries()[group[0].0];
            batch.clear();
            batch.extend(group.iter().map(|&(_, addr, idx)| (addr, idx)));
            self.symbolize_mapping(process, entry, &batch, &mut out);
        }
        Ok(out)
    }

    /// Resolves `(absolute address, output index)` pairs inside one mapping.
    fn symbolize_mapping(
        &self,
        process: &Process,
        entry: &MapEntry,
        batch: &[(u64, usize)],
        out: &mut [Symbolized],
    ) {
        let pid = process.pid;
        let (file, module, origin) = match &entry.path {
            MapPath::File(path) | MapPath::Deleted(path) => {
                let captured = self.processes.captured(pid, entry.start, entry.inode);
                let opened = match captured {
                    Some(file) => Ok(file),
                    None => self.open_mapped(pid, entry, path, process.map_files),
                };
                match opened {
                    Ok(file) => {
                        let module = Module::new(path.to_string_lossy(), file.elf.build_id.clone());
                        (file, module, Origin::File)
                    }
                    Err(reason) => {
                        let module = Module::new(path.to_string_lossy(), None);
                        return fill(batch, out, &module, Origin::File, entry, reason);
                    }
                }
            }
            MapPath::Vdso => match self
                .processes
                .captured(pid, entry.start, entry.inode)
                .map_or_else(|| self.load_vdso(pid, entry), Ok)
            {
                Ok(file) => {
                    let module = Module::new("[vdso]", file.elf.build_id.clone());
                    (file, module, Origin::Vdso)
                }
                Err(reason) => {
                    let module = Module::new("[vdso]", None);
                    return fill(batch, out, &module, Origin::Vdso, entry, reason);
                }
            },
            MapPath::Anonymous | MapPath::Special(_) if entry.is_executable() => {
                return self.symbolize_jit(process, batch, out);
            }
            MapPath::Anonymous | MapPath::Special(_) => {
                // Data (heap, stack): mapped, but no code to name.
                let module = Module::new(
                    match &entry.path {
                        MapPath::Special(name) => name.as_str(),
                        _ => "[anon]",
                    },
                    None,
                );
                return fill(
                    batch,
                    out,
                    &module,
                    Origin::Anonymous,
                    entry,
                    Reason::NoSymbols,
                );
            }
        };
        // Absolute address -> offset in the file -> the file's own virtual
        // address, through its PT_LOAD headers.
        let mut resolvable = Vec::with_capacity(batch.len());
        for &(address, idx) in batch {
            let file_offset = entry.file_offset(address);
            match file.elf.file_offset_to_vaddr(file_offset) {
                Some(vaddr) => resolvable.push((
                    Place {
                        vaddr,
                        address,
                        file_offset: Some(file_offset),
                    },
                    idx,
                )),
                None => {
                    out[idx] = unknown(
                        &module,
                        origin,
                        address,
                        Some(file_offset),
                        None,
                        Reason::NoSymbols,
                    )
                }
            }
        }
        self.resolve_batch(&file, &module, origin, &mut resolvable, out);
    }

    /// Opens the file behind a mapping: through `map_files` (deleted files,
    /// other mount namespaces) when `map_files` allows, else through the
    /// process's root, else by its path if that is still the same file.
    pub(crate) fn open_mapped(
        &self,
        pid: u32,
        entry: &MapEntry,
        path: &Path,
        map_files: bool,
    ) -> Result<Arc<LoadedFile>, Reason> {
        let logical_dir = path.parent().unwrap_or(Path::new("/"));
        let root_path = entry.root_path(pid);
        let open_dir_buf: PathBuf = root_path
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| logical_dir.to_path_buf(), Path::to_path_buf);
        let at = BinaryDir {
            open_dir: &open_dir_buf,
            logical_dir,
        };
        let options = self.load_options();
        let mut last = Reason::FileGone;
        let same_inode = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).is_ok_and(|m| m.ino() == entry.inode)
        };
        let plain = same_inode.then(|| path.to_path_buf());
        let through_map_files = map_files.then(|| entry.map_files_path(pid));
        for candidate in through_map_files.into_iter().chain(root_path).chain(plain) {
            match self.files.get(&candidate, &at, &options) {
                Ok(file) => return Ok(file),
                Err(OpenError::Invalid(why)) => return Err(Reason::InvalidFile(Arc::from(why))),
                Err(OpenError::Io(_)) => last = Reason::FileGone,
            }
        }
        Err(last)
    }

    fn load_vdso(&self, pid: u32, entry: &MapEntry) -> Result<Arc<LoadedFile>, Reason> {
        let image = read_vdso(pid, entry).map_err(|_| Reason::FileGone)?;
        let elf = ElfFile::from_bytes(&image).map_err(|e| match e {
            OpenError::Invalid(why) => Reason::InvalidFile(Arc::from(why)),
            OpenError::Io(_) => Reason::FileGone,
        })?;
        Ok(self
            .files
            .get_image(elf, Path::new("[vdso]"), &self.load_options()))
    }

    /// Anonymous executable memory: JIT code named by the perf map, when
    /// the source allows perf maps.
    fn symbolize_jit(&self, process: &Process, batch: &[(u64, usize)], out: &mut [Symbolized]) {
        let perf_map = if process.perf_map {
            self.processes.perf_map(process.pid)
        } else {
            None
        };
        for &(addr, idx) in batch {
            let found = perf_map
                .as_ref()
                .and_then(|(m, module)| Some((m.find(addr)?, module)));
            out[idx] = match found {
                Some((sym, module)) => Symbolized::Sym(Sym::unfiled(
                    sym.name,
                    module.clone(),
                    Origin::PerfMap,
                    addr,
                    sym.start,
                )),
                _ => Symbolized::Unknown(Unknown {
                    module: None,
                    origin: Some(Origin::Anonymous),
                    address: addr,
                    file_offset: None,
                    vaddr: None,
                    reason: Reason::NoPerfMap,
                }),
            };
        }
    }
}

fn fill(
    batch: &[(u64, usize)],
    out: &mut [Symbolized],
    module: &Module,
    origin: Origin,
    entry: &MapEntry,
    reason: Reason,
) {
    for &(addr, idx) in batch {
        out[idx] = unknown(
            module,
            origin,
            addr,
            Some(entry.file_offset(addr)),
            None,
            reason.clone(),
        );
    }
}
