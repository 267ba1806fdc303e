//! DWARF of one file through `addr2line`: function names, file and line, and
//! the chain of inlined frames. The context borrows the mapped file (and
//! owns decompressed copies of compressed sections) and parses lazily.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use memmap2::Mmap;
use object::{Object, ObjectSection};

use crate::addrmap::AddrMap;
use crate::demangle::{demangle, is_mangled};
use crate::elf::ElfFile;
use crate::frame::Location;
use crate::names::FunctionIndex;

pub(crate) type Slice = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// One frame found in DWARF, innermost first in a lookup's output.
#[derive(Debug, Clone)]
pub(crate) struct DwarfFrame {
    /// Function name, demangled if asked; `None` when DWARF has no function
    /// at the address (only a line-table row).
    pub(crate) name: Option<Arc<str>>,
    /// Whether the name is authoritative: a linkage (mangled) name, or any
    /// name in a language without mangling (C). Otherwise the symbol table's
    /// name is preferred for the innermost frame, as binutils does.
    pub(crate) linkage: bool,
    pub(crate) location: Option<Location>,
}

struct State {
    ctx: addr2line::Context<Slice>,
    /// Names and paths interned by the address of their bytes, which stay put
    /// for the context's life: one allocation per distinct string.
    names: AddrMap<(usize, usize), (Arc<str>, bool)>,
    files: AddrMap<(usize, usize), Arc<str>>,
    /// Per function start: whether the first instruction is outside any
    /// inlined function (see [`Lookup::starts_uninlined`]).
    starts: AddrMap<u64, bool>,
}

/// The DWARF of one file, ready for lookups.
pub(crate) struct Dwarf {
    state: Mutex<State>,
    sections: Arc<gimli::Dwarf<Slice>>,
    /// Built on the first `Detail::Names` lookup.
    functions: OnceLock<FunctionIndex>,
    demangle: bool,
    owned_bytes: usize,
    // Owners of the bytes `state` borrows; fields drop in declaration order,
    // so these outlive the context.
    _owned: Vec<Box<[u8]>>,
    _map: Arc<Mmap>,
}

impl Dwarf {
    /// Loads the DWARF sections of `file` (decompressing compressed ones)
    /// and builds a lazy context. `None` when the file has no usable DWARF.
    pub(crate) fn load(file: &ElfFile, demangle: bool) -> Option<Dwarf> {
        let obj = object::File::parse(&**file.map).ok()?;
        let endian = if file.little_endian {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let mut owned: Vec<Box<[u8]>> = Vec::new();
        let mut section = |id: gimli::SectionId| -> Result<Slice, gimli::Error> {
            let data: *const [u8] = match obj.section_by_name(id.name()) {
                None => &[],
                Some(s) => match s.uncompressed_data() {
                    Ok(std::borrow::Cow::Borrowed(b)) => b,
                    Ok(std::borrow::Cow::Owned(v)) => {
                        let boxed = v.into_boxed_slice();
                        let at: *const [u8] = &*boxed;
                        owned.push(boxed);
                        at
                    }
                    Err(_) => &[],
                },
            };
            // SAFETY: `data` points into `file.map` or into a boxed slice in
            // `owned`; both are moved into the returned `Dwarf` (the Arc and
            // the boxes keep their heap addresses) and dropped after the
            // context that holds these slices.
            let data: &'static [u8] = unsafe { &*data };
            Ok(gimli::EndianSlice::new(data, endian))
        };
        let dwarf = Arc::new(gimli::Dwarf::load(&mut section).ok()?);
        let ctx = addr2line::Context::from_arc_dwarf(Arc::clone(&dwarf)).ok()?;
        let owned_bytes = owned.iter().map(|b| b.len()).sum();
        Some(Dwarf {
            state: Mutex::new(State {
                ctx,
                names: AddrMap::default(),
                files: AddrMap::default(),
                starts: AddrMap::default(),
            }),
            sections: dwarf,
            functions: OnceLock::new(),
            demangle,
            owned_bytes,
            _owned: owned,
            _map: Arc::clone(&file.map),
        })
    }

    /// Bytes this DWARF owns beyond the mapped file (decompressed sections,
    /// the function index).
    pub(crate) fn owned_bytes(&self) -> usize {
        self.owned_bytes + self.functions.get().map_or(0, FunctionIndex::heap_bytes)
    }

    /// The innermost DWARF function at `addr`, without line tables.
    pub(crate) fn function_name(&self, addr: u64, out: &mut Vec<DwarfFrame>) -> bool {
        let index = self
            .functions
            .get_or_init(|| FunctionIndex::build(&self.sections, self.demangle));
        match index.find(addr) {
            Some((name, linkage)) => {
                out.push(DwarfFrame {
                    name: Some(Arc::clone(name)),
                    linkage: *linkage,
                    location: None,
                });
                true
            }
            None => false,
        }
    }

    /// Locks the context for a run of lookups (one lock per batch).
    pub(crate) fn lock(&self) -> Lookup<'_> {
        let guard = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Lookup {
            state: guard,
            demangle: self.demangle,
        }
    }
}

/// A locked DWARF context.
pub(crate) struct Lookup<'a> {
    state: MutexGuard<'a, State>,
    demangle: bool,
}

impl Lookup<'_> {
    /// Whether the instruction at `start` belongs to no inlined function.
    /// binutils names a function by its symbol when it looks up such a
    /// start; matching its output needs the same test.
    pub(crate) fn starts_uninlined(&mut self, start: u64) -> bool {
        if let Some(&known) = self.state.starts.get(&start) {
            return known;
        }
        let plain = match self.state.ctx.find_frames(start).skip_all_loads() {
            Ok(mut iter) => {
                let mut count = 0;
                while let Ok(Some(_)) = iter.next() {
                    count += 1;
                }
                count == 1
            }
            Err(_) => false,
        };
        self.state.starts.insert(start, plain);
        plain
    }

    /// The line-table location of `addr`, without function or inlined
    /// frames.
    pub(crate) fn location(&mut self, addr: u64) -> Option<Location> {
        let State { ctx, files, .. } = &mut *self.state;
        let loc = ctx.find_location(addr).ok().flatten()?;
        intern_location(files, &loc)
    }

    /// Appends the frames at `addr` to `out`, innermost first. Returns false
    /// when DWARF knows nothing about the address.
    pub(crate) fn frames(&mut self, addr: u64, out: &mut Vec<DwarfFrame>) -> bool {
        let State {
            ctx, names, files, ..
        } = &mut *self.state;
        let Ok(mut iter) = ctx.find_frames(addr).skip_all_loads() else {
            return false;
        };
        let start = out.len();
        while let Ok(Some(frame)) = iter.next() {
            let name = frame.function.as_ref().map(|f| {
                let mangling = f.language.is_some_and(has_mangling);
                let raw = f.name.slice();
                let key = (raw.as_ptr() as usize, raw.len());
                names
                    .entry(key)
                    .or_insert_with(|| {
                        let text = String::from_utf8_lossy(raw);
                        let linkage = !mangling || is_mangled(&text);
                        let shown: Arc<str> = if self.demangle {
                            Arc::from(demangle(&text))
                        } else {
                            Arc::from(text)
                        };
                        (shown, linkage)
                    })
                    .clone()
            });
            let location = frame
                .location
                .as_ref()
                .and_then(|loc| intern_location(files, loc));
            let (name, linkage) = match name {
                Some((n, l)) => (Some(n), l),
                None => (None, false),
            };
            out.push(DwarfFrame {
                name,
                linkage,
                location,
            });
        }
        out.len() > start
    }
}

/// Languages whose DWARF names are plain names beside a mangled linkage name.
pub(crate) fn has_mangling(lang: gimli::DwLang) -> bool {
    matches!(
        lang,
        gimli::DW_LANG_C_plus_plus
            | gimli::DW_LANG_C_plus_plus_03
            | gimli::DW_LANG_C_plus_plus_11
            | gimli::DW_LANG_C_plus_plus_14
            | gimli::DW_LANG_Rust
            | gimli::DW_LANG_D
            | gimli::DW_LANG_Java
            | gimli::DW_LANG_Ada83
            | gimli::DW_LANG_Ada95
    )
}

/// A location whose file is interned by the address of its bytes.
fn intern_location(
    files: &mut AddrMap<(usize, usize), Arc<str>>,
    loc: &addr2line::Location<'_>,
) -> Option<Location> {
    let file = loc.file?;
    let key = (file.as_ptr() as usize, file.len());
    let file = files.entry(key).or_insert_with(|| Arc::from(file)).clone();
    Some(Location {
        file,
        line: loc.line,
        column: loc.column,
    })
}
