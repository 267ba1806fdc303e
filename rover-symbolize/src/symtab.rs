//! A table of function symbols sorted by address, searched by binary search.
//! It copies nothing from the files: it keeps one `u32` a symbol, saying
//! which symbol table (`.symtab` or `.dynsym`, of the file or of its separate
//! debug file) and which entry of it, and reads addresses, sizes and names
//! from the mapped files when sorting and searching. Names become shared
//! strings on first use.

use std::ffi::CStr;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use memmap2::Mmap;
use object::elf::{
    SHN_LORESERVE, SHN_UNDEF, SHN_XINDEX, STB_LOCAL, STT_FILE, STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE,
    Sym32, Sym64,
};
use object::endian::{Endianness, U32};
use object::pod::slice_from_all_bytes;

use crate::addrmap::AddrMap;
use crate::demangle::demangle;
use crate::elf::strip_version;

/// The width of an ELF file's symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Elf32,
    Elf64,
}

/// Where one symbol table (`.symtab` or `.dynsym`) and what it refers to lie
/// in a mapped file, found once when the file is opened.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Which of the table's mappings holds it.
    pub(crate) map: usize,
    pub(crate) class: Class,
    pub(crate) endian: Endianness,
    /// A `.dynsym` (whose names lose to a `.symtab`'s when nothing else
    /// tells two symbols at one address apart).
    pub(crate) dynamic: bool,
    /// The symbol entries, in bytes of the mapping.
    pub(crate) syms: Range<usize>,
    /// Its string table.
    pub(crate) strs: Range<usize>,
    /// Its `SHT_SYMTAB_SHNDX` section (extended section indices), if any.
    pub(crate) shndx: Range<usize>,
    /// End address of each executable section, by section index: bounds a
    /// zero-size symbol, and says which symbols are code.
    pub(crate) code_ends: Box<[Option<u64>]>,
}

/// One source table: where it is, and the indices of its `STT_FILE`
/// symbols, in order, for the source file of local symbols.
struct Source {
    layout: Layout,
    files: Box<[u32]>,
}

/// At most this many source tables: `.symtab` and `.dynsym` of a file and of
/// its debug file.
const MAX_TABLES: usize = 4;
/// A symbol id is `table << INDEX_BITS | index`.
const INDEX_BITS: u32 = 30;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// A symbol found for an address.
pub(crate) struct Found {
    pub(crate) addr: u64,
    /// Its id, for [`Reader::name`] and [`Reader::file`].
    pub(crate) id: u32,
}

/// Function symbols sorted by address, one per address.
pub(crate) struct SymbolTable {
    /// Symbol ids, sorted by address; at one address only the symbol whose
    /// name binutils would print.
    order: Vec<u32>,
    /// The address of every [`STRIDE`]th symbol of `order`, less `base`:
    /// a lookup binary searches this, then reads the symbols of one stride
    /// from the files. Empty if the addresses span more than 4 GiB; lookups
    /// then search `order` reading the files.
    coarse: Vec<u32>,
    /// The lowest address of `order`.
    base: u64,
    sources: Vec<Source>,
    maps: Vec<Arc<Mmap>>,
    /// Names made into shared strings, only for symbols resolved so far.
    cache: Mutex<Cache>,
    demangle: bool,
}

/// Strings made so far, by symbol id.
#[derive(Default)]
struct Cache {
    names: AddrMap<u32, Arc<str>>,
    /// Source file names, by the id of their `STT_FILE` symbol.
    files: AddrMap<u32, Arc<str>>,
    /// Heap bytes of the strings of both maps.
    string_bytes: usize,
}

impl Cache {
    fn insert_counted(map: &mut AddrMap<u32, Arc<str>>, bytes: &mut usize, id: u32, s: &Arc<str>) {
        // An `Arc<str>` allocation: two counts, then the bytes.
        *bytes += 2 * size_of::<usize>() + s.len();
        map.insert(id, Arc::clone(s));
    }
}

/// One address of `order` in `coarse` for this many symbols: a byte a
/// symbol. A lookup then reads at most `STRIDE - 1` symbols from the files,
/// independent reads the processor overlaps, where a binary search of the
/// files waits for each of its reads in turn (on `librustc_driver`, 17 of
/// them). Measured on the `names` level of libpython, which looks a symbol up
/// per address: a stride of 16 is about 6% slower, one of 1 (4 bytes a
/// symbol) about 5% faster.
const STRIDE: usize = 4;

/// How many preceding symbols to try when the nearest one ends before the
/// address: enough for symbols nested in a larger one (aliases, local labels).
const NESTING: usize = 8;

impl SymbolTable {
    /// Indexes the function symbols of `tables`, which lie in `maps`.
    pub(crate) fn new(
        mut tables: Vec<Layout>,
        maps: Vec<Arc<Mmap>>,
        demangle: bool,
    ) -> SymbolTable {
        // Table ids in this order: `.symtab`s first, so that the last
        // tie-break (the lower id) prefers them.
        tables.sort_by_key(|t| t.dynamic);
        tables.truncate(MAX_TABLES);
        let mut sources: Vec<Source> = tables
            .into_iter()
            .map(|layout| Source {
                layout,
                files: Box::default(),
            })
            .collect();
        // First pass: count the candidates, to size the table exactly, and
        // list the `STT_FILE` symbols.
        let (count, files) = {
            let view = View::new(&sources, &maps);
            let mut count = 0usize;
            let mut files = Vec::with_capacity(sources.len());
            for table in view.tables.iter().take(sources.len()) {
                let mut these = Vec::new();
                if let Some(table) = table {
                    for i in 1..table.len() {
                        let Some(s) = table.get(i) else { break };
                        if s.kind() == STT_FILE {
                            these.extend(u32::try_from(i).ok());
                        } else if table.is_code(i, &s) {
                            count += 1;
                        }
                    }
                }
                files.push(these.into_boxed_slice());
            }
            (count, files)
        };
        for (source, files) in sources.iter_mut().zip(files) {
            source.files = files;
        }
        let (order, coarse, base) = {
            let view = View::new(&sources, &maps);
            // Sorted as (address, id) pairs, which compare without reading
            // the files: faster than sorting the ids by reading their symbols,
            // and the pairs are gone before any lookup.
            let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(count);
            for (tag, table) in (0u32..).zip(&view.tables) {
                let Some(table) = table else { continue };
                for i in 1..table.len() {
                    let Some(s) = table.get(i) else { break };
                    if table.is_code(i, &s)
                        && let Ok(i) = u32::try_from(i)
                    {
                        pairs.push((s.addr, tag << INDEX_BITS | i));
                    }
                }
            }
            pairs.sort_unstable();
            keep_best_named(&view, &mut pairs);
            // Collected in place: the pairs' buffer becomes the ids'.
            let mut order: Vec<u32> = pairs.into_iter().map(|(_, id)| id).collect();
            order.shrink_to_fit();
            let addr = |id: u32| view.symbol(id).map_or(u64::MAX, |s| s.addr);
            let base = order.first().map_or(0, |&id| addr(id));
            let mut coarse = Vec::with_capacity(order.len().div_ceil(STRIDE));
            for &id in order.iter().step_by(STRIDE) {
                match addr(id).checked_sub(base).map(u32::try_from) {
                    Some(Ok(offset)) => coarse.push(offset),
                    _ => {
                        coarse = Vec::new();
                        break;
                    }
                }
            }
            (order, coarse, base)
        };
        SymbolTable {
            order,
            coarse,
            base,
            sources,
            maps,
            cache: Mutex::default(),
            demangle,
        }
    }

    /// Number of symbols in the table.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Approximate heap bytes held by the table.
    pub(crate) fn heap_bytes(&self) -> usize {
        let sources: usize = self
            .sources
            .iter()
            .map(|s| {
                s.layout.code_ends.len() * size_of::<Option<u64>>()
                    + s.files.len() * size_of::<u32>()
            })
            .sum();
        let cache = self.cache.lock().map_or(0, |c| {
            // A hash map's slot is its entry plus a control byte.
            (c.names.capacity() + c.files.capacity()) * (size_of::<(u32, Arc<str>)>() + 1)
                + c.string_bytes
        });
        self.order.capacity() * size_of::<u32>()
            + self.coarse.capacity() * size_of::<u32>()
            + self.sources.capacity() * size_of::<Source>()
            + sources
            + self.maps.capacity() * size_of::<Arc<Mmap>>()
            + cache
    }

    /// Opens the table for a batch of lookups: views the mapped symbol
    /// tables and locks the name cache.
    pub(crate) fn reader(&self) -> Reader<'_> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Reader {
            table: self,
            view: View::new(&self.sources, &self.maps),
            cache,
        }
    }
}

/// Keeps, of each run of symbols at one address, the one binutils names
/// (see [`View::sort_key`]) among those whose name is usable, and drops the
/// address if none is.
fn keep_best_named(view: &View<'_>, pairs: &mut Vec<(u64, u32)>) {
    let mut kept = 0;
    let mut start = 0;
    while let Some(&(addr, _)) = pairs.get(start) {
        let len = pairs[start..].partition_point(|p| p.0 == addr);
        let run = &mut pairs[start..start + len];
        if run.len() > 1 {
            run.sort_unstable_by_key(|&(_, id)| view.sort_key(id));
        }
        if let Some(&best) = run.iter().find(|&&(_, id)| view.has_usable_name(id)) {
            pairs[kept] = best;
            kept += 1;
        }
        start += len;
    }
    pairs.truncate(kept);
}

/// The symbol table opened for a batch of lookups: the mapped symbol tables
/// viewed once, and the name cache locked.
pub(crate) struct Reader<'a> {
    table: &'a SymbolTable,
    view: View<'a>,
    cache: MutexGuard<'a, Cache>,
}

impl Reader<'_> {
    /// The symbol whose `[start, end)` holds `addr`.
    pub(crate) fn find(&self, addr: u64) -> Option<Found> {
        let order = &self.table.order;
        let view = &self.view;
        // The symbols at or before `addr` are `order[..idx]`: the coarse
        // search narrows `idx` down to one stride, sorted, where it is the
        // count of those at or before `addr`.
        let coarse = &self.table.coarse;
        let at_or_before = |&id: &u32| view.symbol(id).is_some_and(|s| s.addr <= addr);
        let idx = if coarse.is_empty() {
            order.partition_point(at_or_before)
        } else {
            let strides = match addr.checked_sub(self.table.base).map(u32::try_from) {
                None => 0,
                Some(Ok(offset)) => coarse.partition_point(|&a| a <= offset),
                Some(Err(_)) => coarse.len(),
            };
            match strides {
                0 => 0,
                k => {
                    let lo = (k - 1) * STRIDE + 1;
                    let stride = order.get(lo..(k * STRIDE).min(order.len()));
                    lo + stride
                        .unwrap_or_default()
                        .iter()
                        .filter(|id| at_or_before(id))
                        .count()
                }
            }
        };
        let lo = idx.saturating_sub(NESTING);
        for i in (lo..idx).rev() {
            let id = *order.get(i)?;
            let (table, index) = view.table(id)?;
            let s = table.get(index)?;
            let end = if s.size != 0 {
                s.addr.saturating_add(s.size)
            } else {
                // A zero-size symbol (assembly, crt files) reaches to the next
                // symbol, but never past its own section.
                let next = order
                    .get(i + 1)
                    .and_then(|&n| view.symbol(n))
                    .map_or(u64::MAX, |n| n.addr);
                let section_end = table.section_end(index, &s).unwrap_or(u64::MAX);
                next.min(section_end).max(s.addr.saturating_add(1))
            };
            if s.addr <= addr && addr < end {
                return Some(Found { addr: s.addr, id });
            }
        }
        None
    }

    /// The (demangled, if asked) name of symbol `id`.
    pub(crate) fn name(&mut self, id: u32) -> Arc<str> {
        let cache = &mut *self.cache;
        if let Some(name) = cache.names.get(&id) {
            return Arc::clone(name);
        }
        let bytes = self
            .view
            .table(id)
            .and_then(|(t, i)| t.name(&t.get(i)?))
            .map_or(&b"??"[..], strip_version);
        let text = String::from_utf8_lossy(bytes);
        let name: Arc<str> = if self.table.demangle {
            Arc::from(demangle(&text))
        } else {
            Arc::from(text)
        };
        Cache::insert_counted(&mut cache.names, &mut cache.string_bytes, id, &name);
        name
    }

    /// The source file of symbol `id` if it is local: named by the nearest
    /// `STT_FILE` symbol before it in its table.
    pub(crate) fn file(&mut self, id: u32) -> Option<Arc<str>> {
        let (table, index) = self.view.table(id)?;
        if !table.get(index)?.is_local() {
            return None;
        }
        let before = table.files.partition_point(|&f| (f as usize) < index);
        let file = *table.files.get(before.checked_sub(1)?)?;
        let file_id = id & !INDEX_MASK | file;
        let cache = &mut *self.cache;
        if let Some(name) = cache.files.get(&file_id) {
            return Some(Arc::clone(name));
        }
        let name = table.name(&table.get(file as usize)?)?;
        let name: Arc<str> = Arc::from(std::str::from_utf8(name).ok().filter(|n| !n.is_empty())?);
        Cache::insert_counted(&mut cache.files, &mut cache.string_bytes, file_id, &name);
        Some(name)
    }
}

/// The source tables as slices of the mappings, for reading symbols.
struct View<'a> {
    tables: [Option<Table<'a>>; MAX_TABLES],
}

impl<'a> View<'a> {
    fn new(sources: &'a [Source], maps: &'a [Arc<Mmap>]) -> View<'a> {
        let mut tables = [None; MAX_TABLES];
        for (slot, source) in tables.iter_mut().zip(sources) {
            *slot = maps
                .get(source.layout.map)
                .and_then(|map| Table::new(source, map));
        }
        View { tables }
    }

    /// The table of symbol `id` and the symbol's index in it.
    #[inline]
    fn table(&self, id: u32) -> Option<(&Table<'a>, usize)> {
        let table = self.tables.get((id >> INDEX_BITS) as usize)?.as_ref()?;
        Some((table, (id & INDEX_MASK) as usize))
    }

    #[inline]
    fn symbol(&self, id: u32) -> Option<Symbol> {
        let (table, index) = self.table(id)?;
        table.get(index)
    }

    /// Orders symbols by address, then at one address the best name first:
    /// a sized symbol, then a global one, then the larger size (as binutils
    /// picks), then the lower id (the first in its table, as binutils keeps;
    /// a `.symtab`'s before a `.dynsym`'s).
    fn sort_key(&self, id: u32) -> (u64, bool, bool, std::cmp::Reverse<u64>, u32) {
        match self.symbol(id) {
            Some(s) => (
                s.addr,
                s.size == 0,
                s.is_local(),
                std::cmp::Reverse(s.size),
                id,
            ),
            None => (u64::MAX, true, true, std::cmp::Reverse(0), id),
        }
    }

    /// Whether the symbol has a name worth printing: present, not empty, and
    /// not an ARM/AArch64 mapping symbol (`$x`, `$d`).
    fn has_usable_name(&self, id: u32) -> bool {
        let Some((table, index)) = self.table(id) else {
            return false;
        };
        let Some(s) = table.get(index) else {
            return false;
        };
        // A version suffix never empties a name (one starting with `@` is
        // kept whole), so the name stripped of it is empty only if it is.
        match table.first_name_byte(&s) {
            None | Some(0) => false,
            Some(b'$') => s.kind() != STT_NOTYPE,
            Some(_) => true,
        }
    }
}

/// The entries of a symbol table, as the file's class has them.
#[derive(Clone, Copy)]
enum Syms<'a> {
    Elf32(&'a [Sym32<Endianness>]),
    Elf64(&'a [Sym64<Endianness>]),
}

/// One source table, viewed in its mapping.
#[derive(Clone, Copy)]
struct Table<'a> {
    syms: Syms<'a>,
    endian: Endianness,
    strs: &'a [u8],
    shndx: &'a [U32<Endianness>],
    code_ends: &'a [Option<u64>],
    files: &'a [u32],
}

/// The fields of a symbol that sorting and searching read.
#[derive(Clone, Copy)]
struct Symbol {
    addr: u64,
    size: u64,
    name: u32,
    info: u8,
    shndx: u16,
}

impl Symbol {
    fn read<S: object::read::elf::Sym<Endian = Endianness>>(endian: Endianness, s: &S) -> Symbol {
        Symbol {
            addr: s.st_value(endian).into(),
            size: s.st_size(endian).into(),
            name: s.st_name(endian),
            info: s.st_info(),
            shndx: s.st_shndx(endian),
        }
    }

    fn kind(&self) -> u8 {
        self.info & 0xf
    }

    fn is_local(&self) -> bool {
        self.info >> 4 == STB_LOCAL
    }
}

impl<'a> Table<'a> {
    /// Views `source` in `map`; `None` if it does not lie there as recorded.
    fn new(source: &'a Source, map: &'a [u8]) -> Option<Table<'a>> {
        let layout = &source.layout;
        let bytes = map.get(layout.syms.clone())?;
        let syms = match layout.class {
            Class::Elf32 => Syms::Elf32(slice_from_all_bytes(bytes).ok()?),
            Class::Elf64 => Syms::Elf64(slice_from_all_bytes(bytes).ok()?),
        };
        Some(Table {
            syms,
            endian: layout.endian,
            strs: map.get(layout.strs.clone()).unwrap_or_default(),
            shndx: map
                .get(layout.shndx.clone())
                .and_then(|b| slice_from_all_bytes(b).ok())
                .unwrap_or_default(),
            code_ends: &layout.code_ends,
            files: &source.files,
        })
    }

    /// Number of entries, the null symbol at 0 included; at most what a
    /// symbol id can address.
    fn len(&self) -> usize {
        let len = match self.syms {
            Syms::Elf32(s) => s.len(),
            Syms::Elf64(s) => s.len(),
        };
        len.min(INDEX_MASK as usize + 1)
    }

    #[inline]
    fn get(&self, index: usize) -> Option<Symbol> {
        match self.syms {
            Syms::Elf32(s) => s.get(index).map(|s| Symbol::read(self.endian, s)),
            Syms::Elf64(s) => s.get(index).map(|s| Symbol::read(self.endian, s)),
        }
    }

    /// The end of the executable section symbol `index` is defined in, if
    /// it is defined in one.
    fn section_end(&self, index: usize, s: &Symbol) -> Option<u64> {
        let section = match s.shndx {
            SHN_UNDEF => return None,
            SHN_XINDEX => match self.shndx.get(index)?.get(self.endian) {
                0 => return None,
                n => usize::try_from(n).ok()?,
            },
            n if n < SHN_LORESERVE => usize::from(n),
            _ => return None,
        };
        self.code_ends.get(section).copied().flatten()
    }

    /// Whether the symbol can name code: a function (or untyped) symbol
    /// defined in an executable section.
    fn is_code(&self, index: usize, s: &Symbol) -> bool {
        matches!(s.kind(), STT_FUNC | STT_GNU_IFUNC | STT_NOTYPE)
            && self.section_end(index, s).is_some()
    }

    /// The first byte of the symbol's name (0 if it is empty), if its string
    /// lies in the string table: a single byte read when the table ends in a
    /// NUL, as it always does but in a broken file.
    fn first_name_byte(&self, s: &Symbol) -> Option<u8> {
        if self.strs.last() == Some(&0) {
            self.strs.get(usize::try_from(s.name).ok()?).copied()
        } else {
            Some(self.name(s)?.first().copied().unwrap_or(0))
        }
    }

    /// The symbol's name as stored (version suffix included), if its string
    /// lies in the string table.
    fn name(&self, s: &Symbol) -> Option<&'a [u8]> {
        let tail = self.strs.get(usize::try_from(s.name).ok()?..)?;
        Some(CStr::from_bytes_until_nul(tail).ok()?.to_bytes())
    }
}
