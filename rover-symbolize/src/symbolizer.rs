//! The `Symbolizer`: configuration, the sources of addresses, and batch
//! symbolization over the module cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::build_id::BuildId;
use crate::cache::{FileCache, LoadOptions};
use crate::debuginfo::{BinaryDir, DEFAULT_DEBUG_DIR};
use crate::elf::OpenError;
use crate::error::Error;
use crate::frame::{Module, Origin, Reason, Symbolized, Unknown};
use crate::kernel::KernelCache;
use crate::module::{LoadedFile, Place};
use crate::process::ProcessCache;
use crate::source::Source;

/// How much detail to resolve. Each level includes the ones before it and
/// costs more memory and time on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Level {
    /// Names from the ELF symbol tables (`.symtab`, `.dynsym`) only; DWARF is
    /// never read.
    SymbolTable,
    /// Function names from DWARF (falling back to the symbol tables),
    /// without line programs or inlined subroutines.
    Names,
    /// Names plus file and line. The location is the line-table row for the
    /// address, which lies in the innermost inlined function, as
    /// `addr2line` without `-i` prints it. Inlined subroutines are not
    /// parsed.
    Lines,
    /// Names, file and line, and the chain of inlined functions.
    #[default]
    Inlined,
}

/// What the symbolizer loaded for an ELF file: its build id, debug file and
/// how much it can tell. A description for users asking about a file
/// ([`Symbolizer::module_info`]); a result names its module with the
/// lighter [`Module`](crate::Module).
///
/// ```no_run
/// use rover_symbolize::Symbolizer;
///
/// let info = Symbolizer::default().module_info("/usr/bin/ls".as_ref())?;
/// if let Some(id) = &info.build_id {
///     println!("{} has build id {id}", info.path.display());
/// }
/// # Ok::<(), rover_symbolize::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The path it was opened through.
    pub path: PathBuf,
    /// Its GNU build id, if it has one.
    pub build_id: Option<BuildId>,
    /// The separate debug file found for it, if any.
    pub debug_file: Option<PathBuf>,
    /// Number of distinct function symbols (both files' symbol tables).
    pub symbols: usize,
    /// Whether DWARF is available (in the file or its debug file).
    pub has_dwarf: bool,
}

/// Configures a [`Symbolizer`].
#[derive(Debug, Clone)]
pub struct Builder {
    level: Level,
    demangle: bool,
    debug_dirs: Vec<PathBuf>,
    max_open_files: usize,
    max_cache_bytes: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            level: Level::default(),
            demangle: true,
            debug_dirs: Vec::new(),
            max_open_files: 512,
            max_cache_bytes: 1 << 30,
        }
    }
}

impl Builder {
    /// Level of detail (default [`Level::Inlined`]).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Demangle Rust and C++ names (default true).
    pub fn demangle(mut self, demangle: bool) -> Self {
        self.demangle = demangle;
        self
    }

    /// Extra directories searched for separate debug files, before
    /// `/usr/lib/debug`: by build id under `DIR/.build-id/`, and by debug
    /// link under `DIR/<binary's directory>/` and `DIR/`.
    pub fn debug_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.debug_dirs = dirs;
        self
    }

    /// Most modules kept loaded at once (default 512). Each holds one or two
    /// read-only file mappings, no file descriptor.
    pub fn max_open_files(mut self, n: usize) -> Self {
        self.max_open_files = n;
        self
    }

    /// Bound on the estimated memory of loaded modules (symbol tables,
    /// decompressed debug sections), default 1 GiB. Least recently used
    /// modules are evicted past it.
    pub fn max_cache_bytes(mut self, bytes: usize) -> Self {
        self.max_cache_bytes = bytes;
        self
    }

    /// Builds the symbolizer.
    pub fn build(self) -> Symbolizer {
        let mut debug_dirs = self.debug_dirs;
        debug_dirs.push(PathBuf::from(DEFAULT_DEBUG_DIR));
        Symbolizer {
            level: self.level,
            demangle: self.demangle,
            debug_dirs,
            files: FileCache::new(self.max_open_files, self.max_cache_bytes),
            processes: ProcessCache::default(),
            kernel: KernelCache::default(),
        }
    }
}

/// Turns addresses into frames. `Send + Sync`: share one through an `Arc`.
///
/// ```no_run
/// use rover_symbolize::{Level, Source, Symbolizer, Symbolized};
///
/// let symbolizer = Symbolizer::builder().level(Level::Lines).build();
/// let results = symbolizer.symbolize(&Source::elf("/usr/bin/ls"), &[0x4a20])?;
/// for result in &results {
///     println!("{result}");
/// }
/// # Ok::<(), rover_symbolize::Error>(())
/// ```
pub struct Symbolizer {
    level: Level,
    demangle: bool,
    debug_dirs: Vec<PathBuf>,
    pub(crate) files: FileCache,
    pub(crate) processes: ProcessCache,
    pub(crate) kernel: KernelCache,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Builder::default().build()
    }
}

impl Symbolizer {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The configured level of detail.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Symbolizes `addrs` from `source`: one result per address, in order.
    /// Fails only when the source itself is unusable (missing file, process
    /// or kallsyms); a bad address is an [`Unknown`] result.
    pub fn symbolize(&self, source: &Source, addrs: &[u64]) -> Result<Vec<Symbolized>, Error> {
        match source {
            Source::Elf(elf) => self.symbolize_elf(&elf.path, addrs),
            Source::Process(process) => self.symbolize_process(process, addrs),
            Source::Kernel(_) => self.symbolize_kernel(addrs),
        }
    }

    /// Loads (or finds in the cache) the ELF file at `path` and describes it.
    pub fn module_info(&self, path: &Path) -> Result<ModuleInfo, Error> {
        Ok(self.load_elf(path)?.describe())
    }

    /// Forgets everything cached: modules, process maps, perf maps and
    /// kernel symbols.
    pub fn evict_all(&self) {
        self.files.clear();
        self.processes.clear();
        self.kernel.clear();
    }

    /// Forgets the maps, the modules held by [`Symbolizer::capture_process`]
    /// and the perf map cached for `pid` (modules stay in the module cache,
    /// shared with other processes). Until then, addresses of an exited
    /// process still resolve through what was cached.
    pub fn evict_process(&self, pid: u32) {
        self.processes.forget(pid);
    }

    /// Number of processes whose maps are cached.
    pub fn cached_processes(&self) -> usize {
        self.processes.len()
    }

    /// Describes the modules (file-backed executable mappings) of a live or
    /// cached process: path, build id, debug file.
    pub fn process_modules(&self, pid: u32) -> Result<Vec<ModuleInfo>, Error> {
        let maps = self.processes.maps_for(pid)?;
        let mut seen = Vec::new();
        let mut modules = Vec::new();
        for entry in maps.entries().iter().filter(|e| e.is_executable()) {
            if let crate::maps::MapPath::File(path) | crate::maps::MapPath::Deleted(path) =
                &entry.path
                && !seen.contains(path)
            {
                seen.push(path.clone());
                if let Ok(file) = self.open_mapped(pid, entry, path, true) {
                    let mut module = file.describe();
                    module.path = path.clone();
                    modules.push(module);
                }
            }
        }
        Ok(modules)
    }

    /// Forgets the module loaded from `path`; true if one was cached.
    pub fn evict_file(&self, path: &Path) -> bool {
        self.files.evict_path(path)
    }

    /// Number of modules currently cached.
    pub fn cached_modules(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn load_options(&self) -> LoadOptions<'_> {
        LoadOptions {
            debug_dirs: &self.debug_dirs,
            demangle: self.demangle,
        }
    }

    fn load_elf(&self, path: &Path) -> Result<Arc<LoadedFile>, Error> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let at = BinaryDir {
            open_dir: dir,
            logical_dir: dir,
        };
        self.files
            .get(path, &at, &self.load_options())
            .map_err(|e| match e {
                OpenError::Io(source) => Error::Open {
                    path: path.to_path_buf(),
                    source,
                },
                OpenError::Invalid(reason) => Error::InvalidElf {
                    path: path.to_path_buf(),
                    reason,
                },
            })
    }

    fn symbolize_elf(&self, path: &Path, addrs: &[u64]) -> Result<Vec<Symbolized>, Error> {
        let file = self.load_elf(path)?;
        let module = Module::new(path.to_string_lossy(), file.elf.build_id.clone());
        let mut out = unmapped(addrs.len());
        let mut batch: Vec<(Place, usize)> = addrs
            .iter()
            .map(|&vaddr| Place {
                vaddr,
                address: vaddr,
                file_offset: file.elf.vaddr_to_file_offset(vaddr),
            })
            .zip(0..)
            .collect();
        self.resolve_batch(&file, &module, Origin::File, &mut batch, &mut out);
        Ok(out)
    }

    /// Resolves `(place, output index)` pairs of one module, in address
    /// order for locality, with one DWARF lock for the whole batch.
    pub(crate) fn resolve_batch(
        &self,
        file: &LoadedFile,
        module: &Module,
        origin: Origin,
        batch: &mut [(Place, usize)],
        out: &mut [Symbolized],
    ) {
        batch.sort_unstable_by_key(|&(place, _)| place.vaddr);
        let mut state = file.batch(self.level);
        let mut previous: Option<(u64, usize)> = None;
        for &(place, idx) in batch.iter() {
            let result = match previous {
                Some((prev_addr, prev_idx)) if prev_addr == place.vaddr => out[prev_idx].clone(),
                _ => file.resolve(place, module, origin, &mut state),
            };
            out[idx] = result;
            previous = Some((place.vaddr, idx));
        }
    }
}

/// A result vector filled with placeholders, each overwritten by a lookup.
pub(crate) fn unmapped(n: usize) -> Vec<Symbolized> {
    vec![
        Symbolized::Unknown(Unknown {
            module: None,
            origin: None,
            address: 0,
            file_offset: None,
            vaddr: None,
            reason: Reason::Unmapped
        });
        n
    ]
}
