//! A process's executable mappings as the in-kernel unwinder sees them:
//! each range with its load bias and what describes its code (a file's
//! table, the vDSO's, or nothing: frame pointers there).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::Endianness;
use object::elf::{EM_X86_64, FileHeader64, PF_X, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use rover_symbolize::FileIdentity;
use rover_symbolize::maps::{MapEntry, MapPath, ProcessMaps, read_vdso};

use crate::build::{Error, UnwindTable};

/// The most mappings one process entry holds (`ROVER_UNWIND_MAX_MAPPINGS`
/// on the kernel side).
pub const MAX_MAPPINGS: usize = 128;

/// x86-64's page size: the kernel maps segments at page granularity.
const PAGE: u64 = 4096;

/// What a table is keyed by: one table per key, shared by every process
/// that maps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableKey {
    /// A file, by the same identity as the symbolizer's cache.
    File(FileIdentity),
    /// This boot's vDSO, by a hash of its bytes and its size (the kernel
    /// maps the same image into every process, and a new kernel has
    /// another).
    Vdso {
        /// A 64-bit hash of the image.
        hash: u64,
        /// The image's size in bytes.
        size: u64,
    },
}

/// The bytes of an ELF image a table can be built from: a file mapped
/// read-only once, when its mapping was read, or the vDSO copied out of
/// the process. Cloning shares the bytes; the file stays mapped until the
/// last clone is dropped (the file descriptor is already closed).
#[derive(Clone)]
pub struct ElfImage(Arc<Image>);

enum Image {
    Mapped(memmap2::Mmap),
    Copied(Vec<u8>),
}

impl ElfImage {
    /// The image's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &*self.0 {
            Image::Mapped(map) => map,
            Image::Copied(bytes) => bytes,
        }
    }

    /// Builds the image's table ([`UnwindTable::from_elf`]).
    pub fn build(&self) -> Result<UnwindTable, Error> {
        UnwindTable::from_elf(self.bytes())
    }
}

impl fmt::Debug for ElfImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.0 {
            Image::Mapped(_) => "mapped",
            Image::Copied(_) => "copied",
        };
        write!(f, "ElfImage({kind}, {} bytes)", self.bytes().len())
    }
}

/// Why a mapping has no table: the kernel walks it with frame pointers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoTable {
    /// Anonymous executable memory: JIT code.
    Anonymous,
    /// A pseudo mapping with code but no ELF image: `[vsyscall]`,
    /// `[anon:NAME]`, `anon_inode:...`.
    Special(String),
    /// The file or the vDSO image could not be read; the reason.
    Unreadable(String),
    /// The image is not a 64-bit x86-64 ELF file, or no `PT_LOAD` segment
    /// contains the mapping's offset (so there is no bias); the reason.
    NoSegment(String),
}

impl fmt::Display for NoTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoTable::Anonymous => f.write_str("anonymous executable memory"),
            NoTable::Special(name) => write!(f, "{name} has no ELF image"),
            NoTable::Unreadable(why) => write!(f, "unreadable: {why}"),
            NoTable::NoSegment(why) => write!(f, "no load segment: {why}"),
        }
    }
}

/// What describes the code of a mapping.
#[derive(Debug, Clone)]
pub enum MappedCode {
    /// An ELF image whose table is keyed by `key`; `image` is there to
    /// build it if the store does not have it yet.
    Table {
        /// The table's key.
        key: TableKey,
        /// The image to build the table from.
        image: ElfImage,
    },
    /// No table.
    NoTable(NoTable),
}

/// One executable mapping of a process.
#[derive(Debug, Clone)]
pub struct ExecMapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// What to subtract (wrapping) from an address in the mapping to get
    /// the file's own virtual address, the table's address. 0 for code
    /// with no table.
    pub bias: u64,
    /// What `/proc/PID/maps` says backs it.
    pub path: MapPath,
    /// Its table, or why it has none.
    pub code: MappedCode,
}

impl ExecMapping {
    /// The table key, for a mapping with a table.
    pub fn key(&self) -> Option<TableKey> {
        match &self.code {
            MappedCode::Table { key, .. } => Some(*key),
            MappedCode::NoTable(_) => None,
        }
    }
}

/// Why a process's mappings could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The process does not exist, or exited while it was read.
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// The process id.
        pid: u32,
    },
    /// `/proc/PID/maps` could not be read (permissions).
    #[error("cannot read the mappings of process {pid}: {source}")]
    Maps {
        /// The process id.
        pid: u32,
        /// What the maps reader said.
        #[source]
        source: rover_symbolize::Error,
    },
}

/// Every executable mapping of one process, sorted by address, at most
/// [`MAX_MAPPINGS`] of them.
///
/// ```no_run
/// use rover_unwind::{MappedCode, ProcessMappings};
///
/// let mappings = ProcessMappings::read(std::process::id())?;
/// for mapping in mappings.mappings() {
///     match &mapping.code {
///         MappedCode::Table { key, .. } => {
///             println!("{:#x}: bias {:#x}, table {key:?}", mapping.start, mapping.bias)
///         }
///         MappedCode::NoTable(why) => println!("{:#x}: frame pointers ({why})", mapping.start),
///     }
/// }
/// # Ok::<(), rover_unwind::ProcessError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProcessMappings {
    pid: u32,
    mappings: Vec<ExecMapping>,
    dropped: usize,
}

impl ProcessMappings {
    /// Reads `/proc/PID/maps` and opens what each executable mapping maps:
    /// a file through `/proc/PID/map_files/START-END` (deleted files, other
    /// mount namespaces; it needs `CAP_SYS_ADMIN`), else, for a file that
    /// was not deleted, through `/proc/PID/root/PATH`; the vDSO through
    /// `/proc/PID/mem`. Each file is opened and mapped once, however many
    /// mappings it has, and its identity and `PT_LOAD` headers give the
    /// key and the bias.
    ///
    /// A mapping that cannot be opened gets [`NoTable::Unreadable`]; a
    /// process that does not exist, or exits while it is read, is
    /// [`ProcessError::NoSuchProcess`].
    pub fn read(pid: u32) -> Result<Self, ProcessError> {
        let maps = ProcessMaps::read(pid).map_err(|error| match error {
            rover_symbolize::Error::NoSuchProcess { pid } => ProcessError::NoSuchProcess { pid },
            source => ProcessError::Maps { pid, source },
        })?;
        let mut opened: HashMap<(u32, u32, u64, &Path), Result<Opened, NoTable>> = HashMap::new();
        let mut mappings = Vec::new();
        let mut unreadable = false;
        for entry in maps.entries().iter().filter(|e| e.is_executable()) {
            let code = match &entry.path {
                MapPath::File(path) | MapPath::Deleted(path) => {
                    let id = (
                        entry.dev_major,
                        entry.dev_minor,
                        entry.inode,
                        path.as_path(),
                    );
                    let file = opened
                        .entry(id)
                        .or_insert_with(|| open_file(pid, entry))
                        .clone();
                    file.and_then(|file| file.code(entry.start, entry.offset))
                }
                MapPath::Vdso => read_vdso(pid, entry)
                    .map_err(|error| NoTable::Unreadable(error.to_string()))
                    .and_then(|bytes| {
                        let mut hasher = DefaultHasher::new();
                        bytes.hash(&mut hasher);
                        let key = TableKey::Vdso {
                            hash: hasher.finish(),
                            size: bytes.len() as u64,
                        };
                        Opened::new(key, ElfImage(Arc::new(Image::Copied(bytes))))
                    })
                    .and_then(|image| image.code(entry.start, entry.offset)),
                MapPath::Anonymous => Err(NoTable::Anonymous),
                MapPath::Special(name) => Err(NoTable::Special(name.clone())),
            };
            let (bias, code) = match code {
                Ok((bias, code)) => (bias, code),
                Err(why) => {
                    unreadable |= matches!(why, NoTable::Unreadable(_));
                    (0, MappedCode::NoTable(why))
                }
            };
            mappings.push(ExecMapping {
                start: entry.start,
                end: entry.end,
                bias,
                path: entry.path.clone(),
                code,
            });
        }
        // A file that vanished may mean the process did: tell that apart
        // from a file that cannot be read.
        if unreadable && !Path::new(&format!("/proc/{pid}/maps")).exists() {
            return Err(ProcessError::NoSuchProcess { pid });
        }
        let dropped = limit(&mut mappings, MAX_MAPPINGS);
        Ok(ProcessMappings {
            pid,
            mappings,
            dropped,
        })
    }

    #[cfg(test)]
    pub(crate) fn new(pid: u32, mappings: Vec<ExecMapping>) -> Self {
        ProcessMappings {
            pid,
            mappings,
            dropped: 0,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The executable mappings, sorted by start address.
    pub fn mappings(&self) -> &[ExecMapping] {
        &self.mappings
    }

    /// The executable mappings left out because the process has more than
    /// [`MAX_MAPPINGS`]. Only while there are too many: adjacent mappings
    /// without a table are first merged into one (the kernel walks them
    /// all with frame pointers, so nothing is lost), then mappings without
    /// a table are dropped, smallest first, then mappings with a table,
    /// smallest first. An address in a dropped range is in no mapping for
    /// the kernel.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The mapping that contains `address`.
    pub fn find(&self, address: u64) -> Option<&ExecMapping> {
        let after = self.mappings.partition_point(|m| m.start <= address);
        let mapping = self.mappings.get(after.checked_sub(1)?)?;
        (address < mapping.end).then_some(mapping)
    }
}

/// An ELF image opened once for every mapping of it: its key, its bytes
/// and its `PT_LOAD` segments.
#[derive(Clone)]
struct Opened {
    key: TableKey,
    image: ElfImage,
    segments: Arc<[Segment]>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
    executable: bool,
}

impl Opened {
    fn new(key: TableKey, image: ElfImage) -> Result<Opened, NoTable> {
        let segments = load_segments(image.bytes()).map_err(NoTable::NoSegment)?;
        Ok(Opened {
            key,
            image,
            segments: segments.into(),
        })
    }

    /// The bias and the code of a mapping of this image at `start`, from
    /// file offset `offset`.
    fn code(self, start: u64, offset: u64) -> Result<(u64, MappedCode), NoTable> {
        let bias = bias(&self.segments, start, offset).ok_or_else(|| {
            NoTable::NoSegment(format!("no PT_LOAD segment holds file offset {offset:#x}"))
        })?;
        Ok((
            bias,
            MappedCode::Table {
                key: self.key,
                image: self.image,
            },
        ))
    }
}

/// Opens the file of a mapping, by `map_files` and then, unless it was
/// deleted (the path may now name another file), by the process's root.
fn open_file(pid: u32, entry: &MapEntry) -> Result<Opened, NoTable> {
    let mut candidates = vec![entry.map_files_path(pid)];
    if let (MapPath::File(_), Some(root)) = (&entry.path, entry.root_path(pid)) {
        candidates.push(root);
    }
    let mut last = String::new();
    for path in candidates {
        match map_file(&path) {
            Ok(opened) => return Ok(opened),
            Err(why) => last = format!("{}: {why}", path.display()),
        }
    }
    Err(NoTable::Unreadable(last))
}

fn map_file(path: &PathBuf) -> Result<Opened, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    // SAFETY: read-only and private; a file truncated underneath faults on
    // access, the assumption every reader of mapped binaries makes (they
    // are replaced by rename, not rewritten in place).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let key = TableKey::File(FileIdentity::from_metadata(&meta));
    Opened::new(key, ElfImage(Arc::new(Image::Mapped(map)))).map_err(|why| why.to_string())
}

/// The `PT_LOAD` headers of a 64-bit x86-64 ELF image; only the file
/// header and the program headers are read.
fn load_segments(data: &[u8]) -> Result<Vec<Segment>, String> {
    let header = FileHeader64::<Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    if header.e_machine(endian) != EM_X86_64 {
        return Err(format!(
            "not an x86-64 file (e_machine {})",
            header.e_machine(endian)
        ));
    }
    let headers = header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?;
    Ok(headers
        .iter()
        .filter(|h| h.p_type(endian) == PT_LOAD)
        .map(|h| Segment {
            offset: h.p_offset(endian),
            vaddr: h.p_vaddr(endian),
            filesz: h.p_filesz(endian),
            executable: h.p_flags(endian) & PF_X != 0,
        })
        .collect())
}

/// The bias of a mapping at `start` of file offset `offset`: the segment
/// that holds the offset (its first page may start below `p_offset`, as
/// the kernel maps whole pages; an executable one first where two share a
/// page) gives the virtual address of `offset`, `offset - p_offset +
/// p_vaddr`, and the bias is `start` minus that, wrapping.
fn bias(segments: &[Segment], start: u64, offset: u64) -> Option<u64> {
    let segment = segments
        .iter()
        .filter(|s| s.offset & !(PAGE - 1) <= offset && offset < s.offset.saturating_add(s.filesz))
        .max_by_key(|s| (s.executable, s.offset))?;
    let vaddr = offset
        .wrapping_sub(segment.offset)
        .wrapping_add(segment.vaddr);
    Some(start.wrapping_sub(vaddr))
}

/// Keeps at most `max` mappings by the rules of
/// [`ProcessMappings::dropped`] and returns how many mappings of
/// `/proc/PID/maps` are no longer represented. Merging comes first because
/// JIT heaps come as many neighbouring mappings.
fn limit(mappings: &mut Vec<ExecMapping>, max: usize) -> usize {
    if mappings.len() <= max {
        return 0;
    }
    let mut merged: Vec<ExecMapping> = Vec::with_capacity(mappings.len());
    let mut absorbed = 0;
    for mapping in mappings.drain(..) {
        match merged.last_mut() {
            Some(last)
                if last.end == mapping.start && last.key().is_none() && mapping.key().is_none() =>
            {
                last.end = mapping.end;
                absorbed += 1;
            }
            _ => merged.push(mapping),
        }
    }
    let represented = merged.len() + absorbed;
    if merged.len() > max {
        // Indices by (has a table, size): the first ones go.
        let mut order: Vec<usize> = (0..merged.len()).collect();
        order.sort_by_key(|&i| (merged[i].key().is_some(), merged[i].end - merged[i].start));
        let mut keep = vec![true; merged.len()];
        for &i in &order[..merged.len() - max] {
            keep[i] = false;
        }
        let mut keep = keep.into_iter();
        merged.retain(|_| keep.next().unwrap_or(true));
    }
    *mappings = merged;
    represented - mappings.len() - absorbed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn segment(offset: u64, vaddr: u64, filesz: u64, executable: bool) -> Segment {
        Segment {
            offset,
            vaddr,
            filesz,
            executable,
        }
    }

    #[test]
    fn bias_from_the_segment_that_holds_the_offset() {
        // A PIE as ld lays it out: r--, r-x at 0x1000 (offset 0x1000), r--,
        // rw- whose offset and address differ by a page.
        let segments = [
            segment(0, 0, 0x628, false),
            segment(0x1000, 0x1000, 0x1b5, true),
            segment(0x2000, 0x2000, 0x104, false),
            segment(0x2de8, 0x3de8, 0x248, false),
        ];
        let start = 0x5555_5555_5000;
        assert_eq!(bias(&segments, start, 0x1000), Some(0x5555_5555_4000));
        // The rw- mapping starts at the page below its p_offset, which
        // it shares with the r-- segment before it: the later one, which
        // the kernel maps from there on, wins.
        assert_eq!(
            bias(&segments, 0x5555_5555_7000, 0x2000),
            Some(0x5555_5555_4000)
        );
        assert_eq!(bias(&segments, start, 0x9000), None);
        // A non-PIE executable: bias 0.
        let fixed = [segment(0, 0x400000, 0x5000, true)];
        assert_eq!(bias(&fixed, 0x400000, 0), Some(0));
        // A segment whose address is below its offset wraps, as the kernel
        // side's subtraction does.
        let odd = [segment(0x3000, 0x1000, 0x1000, true)];
        assert_eq!(bias(&odd, 0x1000, 0x3000), Some(0));
        assert_eq!(bias(&odd, 0, 0x3000), Some(0u64.wrapping_sub(0x1000)));
    }

    /// A mapping with the table of `key`, or none.
    pub(crate) fn mapping(start: u64, end: u64, key: Option<TableKey>) -> ExecMapping {
        let code = match key {
            Some(key) => MappedCode::Table {
                key,
                image: ElfImage(Arc::new(Image::Copied(Vec::new()))),
            },
            None => MappedCode::NoTable(NoTable::Anonymous),
        };
        ExecMapping {
            start,
            end,
            bias: 0,
            path: MapPath::Anonymous,
            code,
        }
    }

    fn key(n: u64) -> TableKey {
        TableKey::Vdso { hash: n, size: 0 }
    }

    #[test]
    fn limit_merges_then_drops_the_smallest_without_a_table_first() {
        let mut few = vec![mapping(0, 10, Some(key(0))), mapping(10, 20, None)];
        assert_eq!(limit(&mut few, 2), 0);
        assert_eq!(few.len(), 2);

        // Three adjacent JIT mappings merge into one: nothing dropped.
        let mut jit = vec![
            mapping(0, 10, Some(key(0))),
            mapping(100, 110, None),
            mapping(110, 120, None),
            mapping(120, 130, None),
        ];
        assert_eq!(limit(&mut jit, 2), 0);
        let ranges: Vec<(u64, u64)> = jit.iter().map(|m| (m.start, m.end)).collect();
        assert_eq!(ranges, vec![(0, 10), (100, 130)]);

        // Apart: the smallest without a table goes first, then the smallest
        // with one.
        let mut apart = vec![
            mapping(0, 5, Some(key(0))),
            mapping(100, 150, None),
            mapping(200, 210, None),
            mapping(300, 400, Some(key(300))),
        ];
        assert_eq!(limit(&mut apart, 3), 1);
        let starts: Vec<u64> = apart.iter().map(|m| m.start).collect();
        assert_eq!(starts, vec![0, 100, 300]);
        assert_eq!(limit(&mut apart, 1), 2);
        let starts: Vec<u64> = apart.iter().map(|m| m.start).collect();
        assert_eq!(starts, vec![300]);
    }
}
