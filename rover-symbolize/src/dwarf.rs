//! DWARF of one file through `addr2line`: function names, file and line, and
//! the chain of inlined frames. The context borrows the mapped file (and
//! owns decompressed copies of compressed sections) and parses lazily.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use memmap2::Mmap;
use object::{Object, ObjectSection};

use crate::demangle::{demangle, is_mangled};
use crate::elf::ElfFile;
use crate::frame::Location;

type Slice = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// One frame found in DWARF, innermost first in a lookup's output.
#[derive(Debug, Clone)]
pub(crate) struct DwarfFrame {
    /// Function name, demangled if asked; `None` when DWARF has no function
    /// at the address (only a line-table row).
    pub(crate) name: Option<Arc<str>>,
    /// Whether the name came from a linkage (mangled) name.
    pub(crate) linkage: bool,
    pub(crate) location: Option<Location>,
}

/// How much of the DWARF a lookup needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Outer function name only.
    Names,
    /// Outer function name and the line-table location.
    Lines,
    /// Every frame, inlined ones included.
    Inlined,
}

struct State {
    ctx: addr2line::Context<Slice>,
    /// Names and paths interned by the address of their bytes, which stay put
    /// for the context's life: one allocation per distinct string.
    names: HashMap<(usize, usize), (Arc<str>, bool)>,
    files: HashMap<(usize, usize), Arc<str>>,
}

/// The DWARF of one file, ready for lookups.
pub(crate) struct Dwarf {
    state: Mutex<State>,
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
        let dwarf = gimli::Dwarf::load(&mut section).ok()?;
        let ctx = addr2line::Context::from_dwarf(dwarf).ok()?;
        let owned_bytes = owned.iter().map(|b| b.len()).sum();
        Some(Dwarf {
            state: Mutex::new(State {
                ctx,
                names: HashMap::new(),
                files: HashMap::new(),
            }),
            demangle,
            owned_bytes,
            _owned: owned,
            _map: Arc::clone(&file.map),
        })
    }

    /// Bytes this DWARF owns beyond the mapped file (decompressed sections).
    pub(crate) fn owned_bytes(&self) -> usize {
        self.owned_bytes
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
    /// Appends the frames at `addr` to `out`, innermost first. Returns false
    /// when DWARF knows nothing about the address.
    pub(crate) fn frames(&mut self, addr: u64, detail: Detail, out: &mut Vec<DwarfFrame>) -> bool {
        let State { ctx, names, files } = &mut *self.state;
        let Ok(mut iter) = ctx.find_frames(addr).skip_all_loads() else {
            return false;
        };
        let start = out.len();
        let mut first = true;
        while let Ok(Some(frame)) = iter.next() {
            let name = frame.function.as_ref().map(|f| {
                let raw = f.name.slice();
                let key = (raw.as_ptr() as usize, raw.len());
                names
                    .entry(key)
                    .or_insert_with(|| {
                        let text = String::from_utf8_lossy(raw);
                        let linkage = is_mangled(&text);
                        let shown: Arc<str> = if self.demangle {
                            Arc::from(demangle(&text))
                        } else {
                            Arc::from(text)
                        };
                        (shown, linkage)
                    })
                    .clone()
            });
            let wants_location = match detail {
                Detail::Names => false,
                Detail::Lines => first,
                Detail::Inlined => true,
            };
            let location = if wants_location {
                frame.location.as_ref().and_then(|loc| {
                    let file = loc.file?;
                    let key = (file.as_ptr() as usize, file.len());
                    let file = files.entry(key).or_insert_with(|| Arc::from(file)).clone();
                    Some(Location {
                        file,
                        line: loc.line,
                        column: loc.column,
                    })
                })
            } else {
                None
            };
            first = false;
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
        if detail != Detail::Inlined && out.len() > start + 1 {
            // Keep the outer function's name with the innermost location.
            let location = out[start].location.take();
            let outer = out.pop().map(|mut f| {
                f.location = location;
                f
            });
            out.truncate(start);
            out.extend(outer);
        }
        out.len() > start
    }
}
