//! A sorted, compact table of function symbols (from `.symtab` and `.dynsym`
//! of a file and of its separate debug file) searched by binary search.
//! Names stay in the mapped files and become shared strings on first use.

use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

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

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    end: u64,
    name_off: u32,
    name_len: u32,
    file: u32,
    src: u8,
}

/// A symbol found for an address.
pub(crate) struct Found<'a> {
    pub(crate) addr: u64,
    pub(crate) name: &'a Arc<str>,
    /// Source file named by a preceding `STT_FILE` symbol (local symbols).
    pub(crate) file: Option<&'a Arc<str>>,
}

/// Function symbols sorted by address, one per address.
pub(crate) struct SymbolTable {
    entries: Vec<Entry>,
    names: Vec<OnceLock<Arc<str>>>,
    files: Vec<Arc<str>>,
    maps: Vec<Arc<Mmap>>,
    demangle: bool,
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
            entries.push(Entry {
                addr: s.addr,
                end,
                name_off: s.name_off,
                name_len: s.name_len,
                file: s.file,
                src: s.src,
            });
        }
        entries.shrink_to_fit();
        let names = (0..entries.len()).map(|_| OnceLock::new()).collect();
        SymbolTable {
            entries,
            names,
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
        self.entries.capacity() * size_of::<Entry>()
            + self.names.capacity() * size_of::<OnceLock<Arc<str>>>()
    }

    /// The symbol whose `[start, end)` holds `addr`.
    pub(crate) fn find(&self, addr: u64) -> Option<Found<'_>> {
        let idx = self.entries.partition_point(|e| e.addr <= addr);
        let lo = idx.saturating_sub(NESTING);
        let i = (lo..idx).rev().find(|&i| self.entries[i].end > addr)?;
        let e = &self.entries[i];
        Some(Found {
            addr: e.addr,
            name: self.name(i),
            file: self.files.get(e.file as usize),
        })
    }

    fn name(&self, i: usize) -> &Arc<str> {
        self.names[i].get_or_init(|| {
            let e = &self.entries[i];
            let start = e.name_off as usize;
            let bytes = self
                .maps
                .get(e.src as usize)
                .and_then(|m| m.get(start..start + e.name_len as usize))
                .unwrap_or_default();
            let text = String::from_utf8_lossy(bytes);
            if self.demangle {
                Arc::from(demangle(&text))
            } else {
                Arc::from(text)
            }
        })
    }
}
