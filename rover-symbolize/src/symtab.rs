//! A sorted, compact table of function symbols (from `.symtab` and `.dynsym`
//! of a file and of its separate debug file) searched by binary search.
//! Names stay in the mapped files and become shared strings on first use.

use std::sync::{Arc, Mutex, MutexGuard};

use memmap2::Mmap;

use crate::addrmap::AddrMap;
use crate::demangle::demangle;

/// A function symbol as read from one file, before sorting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawSymbol {
    pub(crate) addr: u64,
    pub(crate) size: u64,
    /// End of the symbol's section: bounds a zero-size symbol.
    pub(crate) section_end: u64,
    pub(crate) name_off: u32,
    pub(crate) name_len: u32,
    /// Which mapped file the name is in.
    pub(crate) src: u8,
    /// Index of the `STT_FILE` name for local symbols, `u32::MAX` otherwise.
    pub(crate) file: u32,
    pub(crate) global: bool,
}

/// 24 bytes a symbol: sizes past 4 GiB are clamped, names are at most
/// 2 GiB long, and the top bit of `name_len` says which file holds the name.
#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    size: u32,
    name_off: u32,
    name_len: u32,
    file: u32,
}

const SRC_BIT: u32 = 1 << 31;

/// A symbol found for an address.
pub(crate) struct Found<'a> {
    pub(crate) addr: u64,
    /// Its index, for [`Names::get`].
    pub(crate) index: u32,
    /// Source file named by a preceding `STT_FILE` symbol (local symbols).
    pub(crate) file: Option<&'a Arc<str>>,
}

/// Function symbols sorted by address, one per address.
pub(crate) struct SymbolTable {
    entries: Vec<Entry>,
    /// Names made into shared strings, only for symbols resolved so far.
    names: Mutex<AddrMap<u32, Arc<str>>>,
    files: Vec<Arc<str>>,
    maps: Vec<Arc<Mmap>>,
    demangle: bool,
}

/// The locked name cache of a table, held for a batch.
pub(crate) struct Names<'a> {
    table: &'a SymbolTable,
    cache: MutexGuard<'a, AddrMap<u32, Arc<str>>>,
}

impl Names<'_> {
    /// The (demangled, if asked) name of symbol `index`.
    pub(crate) fn get(&mut self, index: u32) -> Arc<str> {
        let table = self.table;
        Arc::clone(
            self.cache
                .entry(index)
                .or_insert_with(|| table.make_name(index)),
        )
    }
}

/// How many preceding symbols to try when the nearest one ends before the
/// address: enough for symbols nested in a larger one (aliases, local labels).
const NESTING: usize = 8;

impl SymbolTable {
    pub(crate) fn new(
        mut raw: Vec<RawSymbol>,
        files: Vec<Arc<str>>,
        maps: Vec<Arc<Mmap>>,
        demangle: bool,
    ) -> SymbolTable {
        // At one address the best name comes first: a sized symbol, then a
        // global one, then the larger size (as binutils picks).
        raw.sort_unstable_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then((b.size != 0).cmp(&(a.size != 0)))
                .then(b.global.cmp(&a.global))
                .then(b.size.cmp(&a.size))
        });
        raw.dedup_by_key(|s| s.addr);
        let mut entries = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            let end = if s.size != 0 {
                s.addr.saturating_add(s.size)
            } else {
                // A zero-size symbol (assembly, crt files) reaches to the next
                // symbol, but never past its own section.
                let next = raw.get(i + 1).map_or(u64::MAX, |n| n.addr);
                next.min(s.section_end).max(s.addr.saturating_add(1))
            };
            if s.name_len & SRC_BIT != 0 {
                continue;
            }
            entries.push(Entry {
                addr: s.addr,
                size: u32::try_from(end - s.addr).unwrap_or(u32::MAX),
                name_off: s.name_off,
                name_len: s.name_len | if s.src != 0 { SRC_BIT } else { 0 },
                file: s.file,
            });
        }
        drop(raw);
        entries.shrink_to_fit();
        SymbolTable {
            entries,
            names: Mutex::default(),
            files,
            maps,
            demangle,
        }
    }

    /// Number of symbols in the table.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Approximate heap bytes held by the table.
    pub(crate) fn heap_bytes(&self) -> usize {
        let names = self
            .names
            .lock()
            .map_or(0, |n| n.capacity() * (size_of::<(u32, Arc<str>)>() + 24));
        self.entries.capacity() * size_of::<Entry>() + names
    }

    /// Locks the name cache for a batch of lookups.
    pub(crate) fn names(&self) -> Names<'_> {
        let cache = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Names { table: self, cache }
    }

    /// The symbol whose `[start, end)` holds `addr`.
    pub(crate) fn find(&self, addr: u64) -> Option<Found<'_>> {
        let idx = self.entries.partition_point(|e| e.addr <= addr);
        let lo = idx.saturating_sub(NESTING);
        let i = (lo..idx).rev().find(|&i| {
            let e = &self.entries[i];
            addr - e.addr < u64::from(e.size)
        })?;
        let e = &self.entries[i];
        Some(Found {
            addr: e.addr,
            index: u32::try_from(i).ok()?,
            file: self.files.get(e.file as usize),
        })
    }

    fn make_name(&self, index: u32) -> Arc<str> {
        let Some(e) = self.entries.get(index as usize) else {
            return Arc::from("??");
        };
        let src = usize::from(e.name_len & SRC_BIT != 0);
        let start = e.name_off as usize;
        let len = (e.name_len & !SRC_BIT) as usize;
        let bytes = self
            .maps
            .get(src)
            .and_then(|m| m.get(start..start + len))
            .unwrap_or_default();
        let text = String::from_utf8_lossy(bytes);
        if self.demangle {
            Arc::from(demangle(&text))
        } else {
            Arc::from(text)
        }
    }
}
