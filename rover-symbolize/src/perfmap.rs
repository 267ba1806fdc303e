//! JIT symbols from perf-map files (`/tmp/perf-PID.map`), which JIT
//! runtimes (Node.js `--perf-basic-prof`, the JVM with an agent, .NET,
//! LuaJIT, ...) write so that profilers can name their generated code.
//!
//! ```no_run
//! use rover_symbolize::perfmap::PerfMapCache;
//!
//! let cache = PerfMapCache::new();
//! let pid = 1234;
//! if let Some(map) = cache.get(pid) {
//!     if let Some(sym) = map.find(0x7f00_dead_beef) {
//!         println!("{}+{:#x}", sym.name, 0x7f00_dead_beef - sym.start);
//!     }
//! }
//! ```

use std::collections::BinaryHeap;
use std::path::Path;

use crate::Error;

mod cache;

pub use cache::{PerfMapCache, perf_map_path};

/// A symbol that won part of the address space, its name in the arena.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u64,
    size: u64,
    name_start: u32,
    name_len: u32,
}

/// A range of addresses all attributed to one entry.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u64,
    end: u64,
    entry: u32,
}

/// The symbols of one perf-map file, searchable by address.
///
/// Lines are `START SIZE NAME`, START and SIZE in hex with an optional `0x`,
/// NAME the rest of the line (it may contain spaces). Where entries overlap,
/// the later line wins over the range it covers, because JIT runtimes
/// re-emit code into memory they freed. Malformed lines are skipped and
/// counted; lines of size 0 cover nothing and are dropped.
#[derive(Debug, Clone, Default)]
pub struct PerfMap {
    segments: Vec<Segment>,
    entries: Vec<Entry>,
    names: String,
    skipped: usize,
}

/// A JIT symbol found for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PerfMapSymbol<'a> {
    /// The name as the runtime wrote it.
    pub name: &'a str,
    /// Start address of the code.
    pub start: u64,
    /// Size of the code in bytes.
    pub size: u64,
}

/// A range of addresses claimed by a symbol, before overlaps are resolved;
/// of overlapping claims the later one wins. Borrows the name.
struct Claim<'t> {
    lo: u64,
    hi: u64,
    start: u64,
    size: u64,
    name: &'t str,
    /// Claims of one symbol share a key (a symbol already split into
    /// several segments comes back as several claims).
    key: u32,
}

impl PerfMap {
    /// Parses the text of a perf-map file; never fails.
    pub fn parse(text: &str) -> Self {
        let (claims, skipped) = parse_lines(text, 0);
        let keys = claims.len();
        build(&claims, keys, skipped)
    }

    /// Adds lines appended to the file this map was parsed from, as a JIT
    /// appends while it compiles: the new lines win where they overlap old
    /// ones. Gives the same symbols as parsing the whole text again; when the
    /// new lines overlap nothing (the usual case) it costs little more than
    /// parsing them.
    pub fn extend(&mut self, appended: &str) {
        let (new, skipped) = parse_lines(appended, self.entries.len());
        self.skipped += skipped;
        if new.is_empty() {
            return;
        }
        if !self.insert_disjoint(&new) {
            *self = self.rebuilt_with(new);
        }
    }

    /// Adds claims that overlap neither each other nor this map's
    /// segments; `false` (and nothing changed) when some do.
    fn insert_disjoint(&mut self, new: &[Claim<'_>]) -> bool {
        let mut order: Vec<&Claim<'_>> = new.iter().collect();
        order.sort_by_key(|c| c.lo);
        let disjoint = order.windows(2).all(|w| w[0].hi <= w[1].lo)
            && order.iter().all(|c| {
                let before = self.segments.partition_point(|s| s.start < c.hi);
                before == 0 || self.segments[before - 1].end <= c.lo
            });
        if !disjoint {
            return false;
        }
        self.names.reserve(new.iter().map(|c| c.name.len()).sum());
        for claim in new {
            let (Ok(name_start), Ok(name_len), Ok(entry)) = (
                u32::try_from(self.names.len()),
                u32::try_from(claim.name.len()),
                u32::try_from(self.entries.len()),
            ) else {
                break;
            };
            self.names.push_str(claim.name);
            self.entries.push(Entry {
                start: claim.start,
                size: claim.size,
                name_start,
                name_len,
            });
            self.segments.push(Segment {
                start: claim.lo,
                end: claim.hi,
                entry,
            });
        }
        // Two sorted runs: the stable sort merges them in linear time.
        self.segments.sort_by_key(|s| s.start);
        true
    }

    /// A copy with room for `lines` more symbols and `name_bytes` more name
    /// bytes, so that extending it copies the old tables only once.
    fn clone_with_room(&self, lines: usize, name_bytes: usize) -> PerfMap {
        let mut names = String::with_capacity(self.names.len() + name_bytes);
        names.push_str(&self.names);
        let mut entries = Vec::with_capacity(self.entries.len() + lines);
        entries.extend_from_slice(&self.entries);
        let mut segments = Vec::with_capacity(self.segments.len() + lines);
        segments.extend_from_slice(&self.segments);
        PerfMap {
            segments,
            entries,
            names,
            skipped: self.skipped,
        }
    }

    /// A new map of this one's segments overlaid with `new` claims.
    fn rebuilt_with(&self, new: Vec<Claim<'_>>) -> PerfMap {
        let old = self.segments.iter().filter_map(|seg| {
            let entry = self.entries.get(seg.entry as usize)?;
            Some(Claim {
                lo: seg.start,
                hi: seg.end,
                start: entry.start,
                size: entry.size,
                name: self.entry_name(entry)?,
                key: seg.entry,
            })
        });
        let mut claims: Vec<Claim<'_>> = Vec::with_capacity(self.segments.len() + new.len());
        claims.extend(old);
        let keys = self.entries.len() + new.len();
        claims.extend(new);
        build(&claims, keys, self.skipped)
    }

    /// Reads and parses a perf-map file. Bytes that are not UTF-8 are
    /// replaced, not fatal.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::PerfMap {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// The symbol whose code contains `addr`.
    pub fn find(&self, addr: u64) -> Option<PerfMapSymbol<'_>> {
        let after = self.segments.partition_point(|s| s.start <= addr);
        let seg = self.segments.get(after.checked_sub(1)?)?;
        if addr >= seg.end {
            return None;
        }
        let entry = self.entries.get(seg.entry as usize)?;
        Some(PerfMapSymbol {
            name: self.entry_name(entry)?,
            start: entry.start,
            size: entry.size,
        })
    }

    fn entry_name(&self, entry: &Entry) -> Option<&str> {
        let start = entry.name_start as usize;
        self.names.get(start..start + entry.name_len as usize)
    }

    /// Number of symbols that cover some address (overridden ones are not
    /// counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no symbol covers any address.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of non-blank lines that could not be parsed.
    pub fn skipped_lines(&self) -> usize {
        self.skipped
    }
}

/// Parses lines into claims keyed from `first_key`; returns them and the
/// number of malformed lines.
fn parse_lines(text: &str, first_key: usize) -> (Vec<Claim<'_>>, usize) {
    // Lines are rarely shorter than 32 bytes: this rarely reallocates.
    let mut claims = Vec::with_capacity(text.len() / 32);
    let mut skipped = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Some((start, size, name)) if size > 0 => {
                let Ok(key) = u32::try_from(first_key + claims.len()) else {
                    break;
                };
                claims.push(Claim {
                    lo: start,
                    hi: start + size,
                    start,
                    size,
                    name,
                    key,
                });
            }
            Some(_) => {}
            None => skipped += 1,
        }
    }
    (claims, skipped)
}

/// `START SIZE NAME`; `None` when malformed or past the end of the address
/// space.
fn parse_line(line: &str) -> Option<(u64, u64, &str)> {
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    let start = parse_hex(start)?;
    let size = parse_hex(size)?;
    start.checked_add(size)?;
    let name = name.trim_end();
    (!name.is_empty()).then_some((start, size, name))
}

/// Resolves overlaps and keeps, in one name arena, only the symbols that
/// won some range. `keys` bounds the claims' keys.
fn build(claims: &[Claim<'_>], keys: usize, skipped: usize) -> PerfMap {
    let segments = resolve_overlaps(claims);
    let mut remap = vec![u32::MAX; keys];
    let mut entries = Vec::with_capacity(segments.len());
    let mut names = String::with_capacity(claims.iter().map(|c| c.name.len()).sum());
    let mut kept: Vec<Segment> = Vec::with_capacity(segments.len());
    for mut seg in segments {
        let claim = &claims[seg.entry as usize];
        let Some(slot) = remap.get_mut(claim.key as usize) else {
            continue;
        };
        if *slot == u32::MAX {
            let (Ok(name_start), Ok(name_len), Ok(index)) = (
                u32::try_from(names.len()),
                u32::try_from(claim.name.len()),
                u32::try_from(entries.len()),
            ) else {
                break;
            };
            names.push_str(claim.name);
            entries.push(Entry {
                start: claim.start,
                size: claim.size,
                name_start,
                name_len,
            });
            *slot = index;
        }
        seg.entry = *slot;
        match kept.last_mut() {
            Some(last) if last.end == seg.start && last.entry == seg.entry => last.end = seg.end,
            _ => kept.push(seg),
        }
    }
    names.shrink_to_fit();
    PerfMap {
        segments: kept,
        entries,
        names,
        skipped,
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    // from_str_radix accepts a sign; a perf map never has one.
    if digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Splits the address space into non-overlapping segments, each attributed
/// to the last claim (highest index in `raw`) that covers it, adjacent
/// segments of one claim merged. Sorted by start.
fn resolve_overlaps(raw: &[Claim<'_>]) -> Vec<Segment> {
    let mut order: Vec<u32> = (0..raw.len() as u32).collect();
    order.sort_by_key(|&i| raw[i as usize].lo);

    let disjoint = order
        .windows(2)
        .all(|w| raw[w[0] as usize].hi <= raw[w[1] as usize].lo);
    if disjoint {
        return order
            .into_iter()
            .map(|i| Segment {
                start: raw[i as usize].lo,
                end: raw[i as usize].hi,
                entry: i,
            })
            .collect();
    }

    let mut bounds: Vec<u64> = raw.iter().flat_map(|r| [r.lo, r.hi]).collect();
    bounds.sort_unstable();
    bounds.dedup();

    // Max-heap of the claims covering the current bound, by order; claims
    // that ended are dropped lazily when they reach the top.
    let mut active: BinaryHeap<(u32, u64)> = BinaryHeap::new();
    let mut next = order.iter().peekable();
    let mut segments: Vec<Segment> = Vec::new();
    for pair in bounds.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        while let Some(&&i) = next.peek() {
            if raw[i as usize].lo > lo {
                break;
            }
            active.push((i, raw[i as usize].hi));
            next.next();
        }
        while active.peek().is_some_and(|&(_, end)| end <= lo) {
            active.pop();
        }
        let Some(&(winner, _)) = active.peek() else {
            continue;
        };
        match segments.last_mut() {
            Some(last) if last.end == lo && last.entry == winner => last.end = hi,
            _ => segments.push(Segment {
                start: lo,
                end: hi,
                entry: winner,
            }),
        }
    }
    segments
}
