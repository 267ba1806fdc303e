//! A loaded module: an ELF file, its separate debug file if any, its symbol
//! table and (lazily) its DWARF; and the lookup of one address in it at a
//! level of detail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::debuginfo::{BinaryDir, find_debug_file};
use crate::dwarf::{Dwarf, DwarfFrame, Lookup};
use crate::elf::ElfFile;
use crate::frame::{InlinedFrame, Location, Module, Origin, Reason, Sym, Symbolized, Unknown};
use crate::symtab::{Reader, SymbolTable};
use crate::{Level, ModuleInfo};

/// Where one address to resolve lies: the file's virtual address it is
/// looked up at, and the address and file offset its result reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    pub(crate) vaddr: u64,
    pub(crate) address: u64,
    pub(crate) file_offset: Option<u64>,
}

/// What one batch of lookups in a module holds: its locks and scratch
/// space, taken once for the whole batch.
pub(crate) struct Batch<'a> {
    level: Level,
    dwarf: Option<&'a Dwarf>,
    lookup: Option<Lookup<'a>>,
    symbols: Reader<'a>,
    scratch: Vec<DwarfFrame>,
}

/// A module ready for lookups, shared by every process that maps it.
pub(crate) struct LoadedFile {
    pub(crate) elf: ElfFile,
    pub(crate) path: PathBuf,
    debug: Option<(PathBuf, ElfFile)>,
    symbols: SymbolTable,
    dwarf: OnceLock<Option<Dwarf>>,
    demangle: bool,
    pub(crate) last_used: AtomicU64,
}

impl LoadedFile {
    /// Loads `elf` (already mapped from `path`), finds its debug file and
    /// reads its symbols. DWARF waits for the first lookup that needs it.
    pub(crate) fn load(
        elf: ElfFile,
        path: &Path,
        at: &BinaryDir<'_>,
        debug_dirs: &[PathBuf],
        demangle: bool,
    ) -> LoadedFile {
        let debug = if elf.has_dwarf {
            None
        } else {
            find_debug_file(&elf, at, debug_dirs)
        };
        let mut tables = elf.symbol_tables(0);
        let mut maps = vec![Arc::clone(&elf.map)];
        if let Some((_, d)) = &debug {
            tables.extend(d.symbol_tables(maps.len()));
            maps.push(Arc::clone(&d.map));
        }
        let symbols = SymbolTable::new(tables, maps, demangle);
        LoadedFile {
            elf,
            path: path.to_path_buf(),
            debug,
            symbols,
            dwarf: OnceLock::new(),
            demangle,
            last_used: AtomicU64::new(0),
        }
    }

    /// What the module is, for users.
    pub(crate) fn describe(&self) -> ModuleInfo {
        ModuleInfo {
            path: self.path.clone(),
            build_id: self.elf.build_id.clone(),
            debug_file: self.debug.as_ref().map(|(p, _)| p.clone()),
            symbols: self.symbols.len(),
            has_dwarf: self.has_dwarf(),
        }
    }

    /// Takes what a batch of lookups at `level` needs: the DWARF (loaded on
    /// first need), its lock (not for names, which need none) and the symbol
    /// table's reader (its names cache locked).
    pub(crate) fn batch(&self, level: Level) -> Batch<'_> {
        let dwarf = self.dwarf(level);
        Batch {
            level,
            dwarf,
            lookup: dwarf
                .filter(|_| level >= Level::Lines)
                .and_then(Dwarf::lock),
            symbols: self.symbols.reader(),
            scratch: Vec::new(),
        }
    }

    /// Whether DWARF is available, in the file or its debug file.
    pub(crate) fn has_dwarf(&self) -> bool {
        self.elf.has_dwarf || self.debug.is_some()
    }

    /// Approximate memory the module holds beyond the page cache.
    pub(crate) fn cost_bytes(&self) -> usize {
        let dwarf = self
            .dwarf
            .get()
            .and_then(Option::as_ref)
            .map_or(0, |d| d.owned_bytes());
        self.symbols.heap_bytes() + dwarf + size_of::<Self>()
    }

    /// Marks the module as used at `tick` (for least-recently-used eviction).
    pub(crate) fn touch(&self, tick: u64) {
        self.last_used.store(tick, Ordering::Relaxed);
    }

    /// The DWARF to use at `level`, loaded on first need.
    pub(crate) fn dwarf(&self, level: Level) -> Option<&Dwarf> {
        if level == Level::SymbolTable {
            return None;
        }
        self.dwarf
            .get_or_init(|| {
                let file = self.debug.as_ref().map_or(&self.elf, |(_, d)| d);
                if file.has_dwarf {
                    Dwarf::load(file, self.demangle)
                } else {
                    None
                }
            })
            .as_ref()
    }

    /// Resolves one file virtual address.
    pub(crate) fn resolve(
        &self,
        place: Place,
        module: &Module,
        origin: Origin,
        batch: &mut Batch<'_>,
    ) -> Symbolized {
        let addr = place.vaddr;
        // The symbol's start in the space of the address asked about.
        let absolute = |vaddr: u64| place.address.wrapping_sub(addr.wrapping_sub(vaddr));
        let no_symbols = || {
            unknown(
                module,
                origin,
                place.address,
                place.file_offset,
                Some(addr),
                Reason::NoSymbols,
            )
        };
        let Batch {
            level,
            dwarf,
            lookup,
            symbols,
            scratch,
        } = batch;
        let (level, dwarf) = (*level, *dwarf);
        let mut lookup = lookup.as_mut();
        let sym = symbols.find(addr);
        scratch.clear();
        let have_frames = match (level, dwarf, lookup.as_deref_mut()) {
            (Level::Names, Some(dwarf), _) => dwarf.function_name(addr, scratch),
            // The outer function from the index and the line-table row:
            // inlined subroutines are never parsed.
            (Level::Lines, Some(dwarf), Some(lookup)) => {
                let named = dwarf.function_name(addr, scratch);
                let location = lookup.location(addr);
                match scratch.first_mut() {
                    Some(frame) => frame.location = location,
                    None => scratch.extend(location.map(|l| DwarfFrame {
                        name: None,
                        linkage: false,
                        location: Some(l),
                    })),
                }
                named || !scratch.is_empty()
            }
            (Level::Inlined, _, Some(lookup)) => lookup.frames(addr, scratch),
            _ => false,
        };
        if !have_frames {
            return match sym {
                Some(s) => Symbolized::Sym(Sym {
                    name: symbols.name(s.id),
                    module: module.clone(),
                    origin,
                    address: place.address,
                    file_offset: place.file_offset,
                    vaddr: Some(addr),
                    sym_addr: absolute(s.addr),
                    location: symbols.file(s.id).map(|file| Location {
                        file,
                        line: None,
                        column: None,
                    }),
                    inlined: Vec::new(),
                }),
                None => no_symbols(),
            };
        }
        // As binutils does: the innermost frame's name is the DWARF name when
        // that is authoritative (a linkage name, or C), else the symbol
        // table's (which tells clones like `foo.constprop.0` apart). Callers
        // keep their DWARF names, but the outer function takes its symbol's
        // name when the symbol starts it outside any inlined code.
        if let Some(s) = &sym {
            if let Some(first) = scratch.first_mut()
                && !first.linkage
            {
                first.name = Some(symbols.name(s.id));
            }
            if scratch.len() > 1
                && let Some(outer) = scratch.last_mut()
                && !outer.linkage
                && lookup.is_some_and(|l| l.starts_uninlined(s.addr))
            {
                outer.name = Some(symbols.name(s.id));
            }
        }
        let Some(outer) = scratch.pop() else {
            return no_symbols();
        };
        let name = match (outer.name, &sym) {
            (Some(n), _) => n,
            (None, Some(s)) => symbols.name(s.id),
            (None, None) => return no_symbols(),
        };
        let inlined = scratch
            .drain(..)
            .map(|f| InlinedFrame {
                name: f.name.unwrap_or_else(|| Arc::from("??")),
                location: f.location,
            })
            .collect();
        Symbolized::Sym(Sym {
            name,
            module: module.clone(),
            origin,
            address: place.address,
            file_offset: place.file_offset,
            vaddr: Some(addr),
            sym_addr: sym.map_or(place.address, |s| absolute(s.addr)),
            location: outer.location,
            inlined,
        })
    }
}

/// An address in `module` that could not be resolved.
pub(crate) fn unknown(
    module: &Module,
    origin: Origin,
    address: u64,
    file_offset: Option<u64>,
    vaddr: Option<u64>,
    reason: Reason,
) -> Symbolized {
    Symbolized::Unknown(Unknown {
        module: Some(module.clone()),
        origin: Some(origin),
        address,
        file_offset,
        vaddr,
        reason,
    })
}
