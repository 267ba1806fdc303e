//! Kernel symbols from `/proc/kallsyms`: the kernel's and its modules' text
//! symbols in one compact sorted table.
//!
//! ```no_run
//! use rover_symbolize::kallsyms::KernelSymbols;
//!
//! let kernel = KernelSymbols::load()?;
//! match kernel.find(0xffff_ffff_8100_0000) {
//!     Ok(sym) => println!("{} in {}", sym.name, sym.module.unwrap_or("vmlinux")),
//!     Err(reason) => println!("unknown: {reason}"),
//! }
//! # Ok::<(), rover_symbolize::Error>(())
//! ```

use std::path::PathBuf;

use crate::{Error, Reason};

const KALLSYMS: &str = "/proc/kallsyms";

/// How far past the last symbol of a module (where the next symbol belongs
/// to another module, or there is none) an address is still taken to be in
/// that symbol. kallsyms gives no sizes; kernel functions longer than this
/// are rare, and beyond it the address is more likely data or a gap.
const MAX_TAIL_SIZE: u64 = 0x4000;

/// Marker symbols that end a text range rather than start a function: an
/// address at or past one (and before the next symbol) is not in any
/// function.
const END_MARKERS: &[&str] = &["_etext", "_einittext"];

/// Module index meaning "the kernel image itself".
const NO_MODULE: u16 = u16::MAX;

/// One text symbol, 16 bytes: its name lives in the shared arena.
#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    name_start: u32,
    name_len: u16,
    module: u16,
}

/// The kernel's text symbols (types `t`, `T`, `w`, `W`), sorted by address.
///
/// Compact: one `Vec` of 16-byte entries whose names point into one string
/// arena; module names are stored once each. Where several symbols share an
/// address, one is kept: a global before a weak before a local one, then the
/// one with fewer leading underscores (`srso_alias_untrain_ret` over `_stext`).
#[derive(Debug, Clone, Default)]
pub struct KernelSymbols {
    entries: Vec<Entry>,
    names: String,
    modules: Vec<Box<str>>,
    hidden: bool,
}

/// A kernel symbol found for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelSymbol<'a> {
    /// The symbol's name.
    pub name: &'a str,
    /// The module it belongs to (`[module]` in kallsyms, e.g. `ext4` or
    /// `bpf`); `None` for the kernel image itself.
    pub module: Option<&'a str>,
    /// The symbol's start address.
    pub start: u64,
}

/// A parsed line before the table is built, borrowing from the text.
struct Raw<'t> {
    addr: u64,
    name: &'t str,
    module: u16,
    /// Preference among symbols at one address, lower wins.
    rank: u16,
}

impl KernelSymbols {
    /// Reads and parses `/proc/kallsyms`.
    pub fn load() -> Result<Self, Error> {
        let bytes = std::fs::read(KALLSYMS).map_err(|source| Error::Proc {
            path: PathBuf::from(KALLSYMS),
            source,
        })?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Parses the text of `/proc/kallsyms`: lines `ADDR TYPE NAME` and
    /// `ADDR TYPE NAME\t[MODULE]`. Malformed lines are skipped; it never
    /// fails. When every address is zero (`kptr_restrict`), the table is
    /// empty and [`addresses_hidden`](Self::addresses_hidden) is true.
    pub fn parse(text: &str) -> Self {
        let mut module_names: Vec<&str> = Vec::new();
        // Lines average over 40 bytes: this rarely reallocates, never by much.
        let mut raw: Vec<Raw<'_>> = Vec::with_capacity(text.len() / 40);
        let mut any_nonzero = false;
        for line in text.lines() {
            let Some((addr, kind, name, module)) = parse_line(line) else {
                continue;
            };
            any_nonzero |= addr != 0;
            let Some(kind_rank) = text_rank(kind) else {
                continue;
            };
            if name.len() > usize::from(u16::MAX) {
                continue;
            }
            let module = match module {
                None => NO_MODULE,
                // kallsyms lists a module's symbols together: the last one
                // seen is almost always the one.
                Some(m) => match module_names.iter().rposition(|&n| n == m) {
                    Some(i) => i as u16,
                    None if module_names.len() < usize::from(NO_MODULE) => {
                        module_names.push(m);
                        (module_names.len() - 1) as u16
                    }
                    None => continue,
                },
            };
            let marker = module == NO_MODULE && END_MARKERS.contains(&name);
            let underscores = name.bytes().take_while(|&b| b == b'_').count().min(63) as u16;
            raw.push(Raw {
                addr,
                name,
                module,
                rank: u16::from(marker) << 8 | u16::from(kind_rank) << 6 | underscores,
            });
        }

        let hidden = !raw.is_empty() && !any_nonzero;
        if hidden {
            raw.clear();
        }
        // kallsyms is nearly sorted already (each module's block is).
        raw.sort_by_key(|r| (r.addr, r.rank));
        raw.dedup_by_key(|r| r.addr);

        let mut names = String::with_capacity(raw.iter().map(|r| r.name.len()).sum());
        let mut entries = Vec::with_capacity(raw.len());
        // Half the kernel's symbols are `__pfx_NAME` padding just before
        // `NAME`: the second name is stored as the tail of the first.
        let mut previous = 0..0;
        for r in &raw {
            let name_start = if names[previous.clone()].ends_with(r.name) {
                previous.end - r.name.len()
            } else {
                let start = names.len();
                names.push_str(r.name);
                previous = start..names.len();
                start
            };
            let Ok(name_start) = u32::try_from(name_start) else {
                break;
            };
            entries.push(Entry {
                addr: r.addr,
                name_start,
                name_len: r.name.len() as u16,
                module: r.module,
            });
        }
        names.shrink_to_fit();
        KernelSymbols {
            entries,
            names,
            modules: module_names.into_iter().map(Box::from).collect(),
            hidden,
        }
    }

    /// The text symbol containing `addr`.
    ///
    /// [`Reason::KernelAddressesHidden`] when kallsyms showed only zeroes;
    /// [`Reason::NoSymbols`] before the first symbol, past the end of the
    /// kernel's text (`_etext`, `_einittext`), or more than a plausible
    /// function size past the last symbol of a module.
    pub fn find(&self, addr: u64) -> Result<KernelSymbol<'_>, Reason> {
        if self.hidden {
            return Err(Reason::KernelAddressesHidden);
        }
        let after = self.entries.partition_point(|e| e.addr <= addr);
        let index = after.checked_sub(1).ok_or(Reason::NoSymbols)?;
        let entry = self.entries[index];
        let symbol = self.symbol(entry);
        if symbol.module.is_none() && END_MARKERS.contains(&symbol.name) {
            return Err(Reason::NoSymbols);
        }
        let last_of_module = self
            .entries
            .get(after)
            .is_none_or(|next| next.module != entry.module);
        if last_of_module && addr - entry.addr >= MAX_TAIL_SIZE {
            return Err(Reason::NoSymbols);
        }
        Ok(symbol)
    }

    /// Whether kallsyms showed every address as zero: `kptr_restrict` hides
    /// them from this reader (run as root, or set
    /// `/proc/sys/kernel/kptr_restrict` to 0 or 1 with `CAP_SYSLOG`).
    pub fn addresses_hidden(&self) -> bool {
        self.hidden
    }

    /// Number of distinct text symbol addresses in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no symbols.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate heap bytes the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.names.capacity()
            + self.modules.capacity() * size_of::<Box<str>>()
            + self.modules.iter().map(|m| m.len()).sum::<usize>()
    }

    fn symbol(&self, entry: Entry) -> KernelSymbol<'_> {
        let start = entry.name_start as usize;
        KernelSymbol {
            name: &self.names[start..start + usize::from(entry.name_len)],
            module: self.modules.get(usize::from(entry.module)).map(|m| &**m),
            start: entry.addr,
        }
    }
}

/// Splits `ADDR TYPE NAME[\t[MODULE]]`.
fn parse_line(line: &str) -> Option<(u64, u8, &str, Option<&str>)> {
    // Byte searches: this runs for each of ~10^5 lines on every load.
    let bytes = line.as_bytes();
    let space = bytes.iter().position(|&b| b == b' ')?;
    let (&kind, after_kind) = bytes.get(space + 1..)?.split_first()?;
    if after_kind.first() != Some(&b' ') {
        return None;
    }
    let addr = u64::from_str_radix(&line[..space], 16).ok()?;
    let rest = line.get(space + 3..)?;
    let (name, module) = match rest.as_bytes().iter().position(|&b| b == b'\t') {
        Some(tab) => {
            let module = rest[tab + 1..].trim_ascii_end();
            let module = module.strip_prefix('[')?.strip_suffix(']')?;
            if module.is_empty() {
                return None;
            }
            (&rest[..tab], Some(module))
        }
        None => (rest.trim_ascii_end(), None),
    };
    let valid = !name.is_empty() && !name.bytes().any(|b| b.is_ascii_whitespace());
    valid.then_some((addr, kind, name, module))
}

/// The preference of a symbol type among those at one address (lower wins);
/// `None` for types that are not text.
fn text_rank(kind: u8) -> Option<u8> {
    match kind {
        b'T' => Some(0),
        b'W' => Some(1),
        b't' => Some(2),
        b'w' => Some(3),
        _ => None,
    }
}
