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

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Error;
use crate::maps::namespace_pid;

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

/// A parsed line before the table is built, borrowing from the text.
struct Raw<'t> {
    start: u64,
    end: u64,
    name: &'t str,
}

impl PerfMap {
    /// Parses the text of a perf-map file; never fails.
    pub fn parse(text: &str) -> Self {
        let mut raw = Vec::new();
        let mut skipped = 0;
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line) {
                Some(r) if r.end > r.start => raw.push(r),
                Some(_) => {}
                None => skipped += 1,
            }
        }
        let segments = resolve_overlaps(&raw);

        // Keep only entries that won some range, in one name arena.
        let mut remap = vec![u32::MAX; raw.len()];
        let mut entries = Vec::new();
        let mut names = String::new();
        let mut kept = Vec::with_capacity(segments.len());
        for mut seg in segments {
            let index = seg.entry as usize;
            if remap[index] == u32::MAX {
                let r = &raw[index];
                let (Ok(name_start), Ok(name_len), Ok(new_index)) = (
                    u32::try_from(names.len()),
                    u32::try_from(r.name.len()),
                    u32::try_from(entries.len()),
                ) else {
                    break;
                };
                names.push_str(r.name);
                entries.push(Entry {
                    start: r.start,
                    size: r.end - r.start,
                    name_start,
                    name_len,
                });
                remap[index] = new_index;
            }
            seg.entry = remap[index];
            kept.push(seg);
        }
        PerfMap {
            segments: kept,
            entries,
            names,
            skipped,
        }
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
        let name_start = entry.name_start as usize;
        Some(PerfMapSymbol {
            name: self
                .names
                .get(name_start..name_start + entry.name_len as usize)?,
            start: entry.start,
            size: entry.size,
        })
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

fn parse_line(line: &str) -> Option<Raw<'_>> {
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    let start = parse_hex(start)?;
    let end = start.checked_add(parse_hex(size)?)?;
    let name = name.trim_end();
    (!name.is_empty()).then_some(Raw { start, end, name })
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
/// to the last line (highest index in `raw`) that covers it, adjacent
/// segments of one line merged. Sorted by start.
fn resolve_overlaps(raw: &[Raw<'_>]) -> Vec<Segment> {
    let mut order: Vec<u32> = (0..raw.len() as u32).collect();
    order.sort_by_key(|&i| raw[i as usize].start);

    let disjoint = order
        .windows(2)
        .all(|w| raw[w[0] as usize].end <= raw[w[1] as usize].start);
    if disjoint {
        return order
            .into_iter()
            .map(|i| Segment {
                start: raw[i as usize].start,
                end: raw[i as usize].end,
                entry: i,
            })
            .collect();
    }

    let mut bounds: Vec<u64> = raw.iter().flat_map(|r| [r.start, r.end]).collect();
    bounds.sort_unstable();
    bounds.dedup();

    // Max-heap of the lines covering the current bound, by file order;
    // lines that ended are dropped lazily when they reach the top.
    let mut active: BinaryHeap<(u32, u64)> = BinaryHeap::new();
    let mut next = order.iter().peekable();
    let mut segments: Vec<Segment> = Vec::new();
    for pair in bounds.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        while let Some(&&i) = next.peek() {
            if raw[i as usize].start > lo {
                break;
            }
            active.push((i, raw[i as usize].end));
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

/// Where the perf map of a process is, seen from this process:
/// `/proc/PID/root/tmp/perf-NSPID.map`, NSPID being the pid inside the
/// process's own pid namespace (a containerised runtime names the file
/// after the pid it sees).
pub fn perf_map_path(pid: u32) -> Result<PathBuf, Error> {
    let ns_pid = namespace_pid(pid)?;
    Ok(PathBuf::from(format!(
        "/proc/{pid}/root/tmp/perf-{ns_pid}.map"
    )))
}

/// What identifies one version of a file: a rewrite changes the size or the
/// modification time, a replacement the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    inode: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

#[derive(Debug)]
struct Cached {
    identity: FileIdentity,
    map: Arc<PerfMap>,
}

/// The parsed perf maps of many processes, each reloaded when its file
/// changes (device, inode, size or modification time). `Send + Sync`.
#[derive(Debug, Default)]
pub struct PerfMapCache {
    maps: Mutex<HashMap<u32, Cached>>,
}

impl PerfMapCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The perf map of `pid`, parsed anew if its file changed since the last
    /// call. `None` when the process or its perf map does not exist (or
    /// cannot be read); the cached copy, if any, is then dropped.
    pub fn get(&self, pid: u32) -> Option<Arc<PerfMap>> {
        let loaded = perf_map_path(pid)
            .ok()
            .and_then(|path| self.load(pid, &path));
        if loaded.is_none() {
            self.forget(pid);
        }
        loaded
    }

    /// Drops the cached perf map of `pid` (when the process exited).
    pub fn forget(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    /// Drops the perf maps of processes that no longer exist, so a
    /// long-running profiler's cache stays bounded by the live processes.
    /// Returns how many were dropped.
    pub fn forget_exited(&self) -> usize {
        let mut maps = self.lock();
        let before = maps.len();
        maps.retain(|pid, _| Path::new(&format!("/proc/{pid}")).exists());
        before - maps.len()
    }

    /// Number of processes whose perf map is cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no perf map is cached.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn load(&self, pid: u32, path: &Path) -> Option<Arc<PerfMap>> {
        let mut file = File::open(path).ok()?;
        let identity = FileIdentity::of(&file.metadata().ok()?);
        if let Some(cached) = self.lock().get(&pid)
            && cached.identity == identity
        {
            return Some(Arc::clone(&cached.map));
        }
        // Parse without holding the lock: other processes' lookups go on.
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        let map = Arc::new(PerfMap::parse(&String::from_utf8_lossy(&bytes)));
        self.lock().insert(
            pid,
            Cached {
                identity,
                map: Arc::clone(&map),
            },
        );
        Some(map)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Cached>> {
        // A panic elsewhere cannot leave the map half-updated: every
        // mutation is one insert or remove.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
