//! Whether rover can profile a process well: what its executable offers
//! (symbols, unwind tables, frame pointers) and whether it writes a perf
//! map.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rover_symbolize::{BuildId, FileIdentity, Level, Symbolizer};

use super::error::Error;
use super::info::ProcessInfo;

/// What rover can do with a process's executable (the main program only,
/// not its shared libraries), and its perf map. From
/// [`ProcessInfo::support`] or a [`SupportCache`].
///
/// ```no_run
/// use rover_core::process::ProcessInfo;
///
/// let process = ProcessInfo::read(1234)?;
/// let support = process.support()?;
/// if !support.has_symbols() {
///     println!("{}: stripped, frames will show as addresses", process.comm);
/// }
/// if !support.frame_pointers.likely() && !support.has_unwind_tables() {
///     println!("{}: user stacks will stop at the first frame", process.comm);
/// }
/// # Ok::<(), rover_core::process::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProfileSupport {
    /// The executable is an ELF file (the others fields are then about
    /// it; for anything else they are false or empty).
    pub elf: bool,
    /// Its GNU build id.
    pub build_id: Option<BuildId>,
    /// It has a non-empty `.symtab` (all functions, local ones included).
    pub symtab: bool,
    /// It has a non-empty `.dynsym` (exported functions only).
    pub dynsym: bool,
    /// Function symbols the symbolizer found, in the file and its debug
    /// file.
    pub symbols: usize,
    /// Its separate debug file (by build id or `.gnu_debuglink`, under
    /// this host's `/usr/lib/debug` or next to the executable).
    pub debug_file: Option<PathBuf>,
    /// DWARF is there (in the file or the debug file): names of inlined
    /// functions, files and lines.
    pub dwarf: bool,
    /// It has `.eh_frame`, which rover's in-kernel unwinder walks for code
    /// without frame pointers.
    pub eh_frame: bool,
    /// It has `.debug_frame` (which rover uses where there is no
    /// `.eh_frame`).
    pub debug_frame: bool,
    /// What a sample of its functions' first instructions says of frame
    /// pointers.
    pub frame_pointers: FramePointers,
    /// Its perf map (`/tmp/perf-PID.map` in its own file system, named by
    /// its pid in its own pid namespace), seen from here, if it exists.
    pub perf_map: Option<PathBuf>,
}

impl ProfileSupport {
    /// Whether its frames can be named: function symbols (a stripped
    /// executable's `.dynsym` may hold only the functions it imports, which
    /// name none of its code), or a debug file.
    pub fn has_symbols(&self) -> bool {
        self.symbols > 0 || self.debug_file.is_some()
    }

    /// Whether its stacks can be unwound without frame pointers.
    pub fn has_unwind_tables(&self) -> bool {
        self.eh_frame || self.debug_frame
    }
}

/// How many of a sample of the executable's functions start by setting up
/// a frame pointer: `push %rbp` (after an `endbr64` if the function has
/// one), then `mov %rsp,%rbp` within the next few instructions. The sample is at most [`FramePointers::MAX_SAMPLED`]
/// functions spread evenly over the symbol table (`.symtab`, else
/// `.dynsym`), leaving out names that start with `_`: start-up code and
/// libc internals, built without frame pointers whatever the program's
/// flags. A heuristic: a compiler may move the prologue later in a
/// function (shrink-wrapping), and a static binary's libc functions lower
/// the count as they lower a walk's success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FramePointers {
    /// Functions looked at.
    pub sampled: u32,
    /// Of those, the ones that start with the frame-pointer prologue.
    pub with_frame_pointer: u32,
}

impl FramePointers {
    /// The most functions sampled.
    pub const MAX_SAMPLED: u32 = 64;

    /// Whether most sampled functions keep a frame pointer, so that a
    /// frame-pointer walk follows the program's own calls.
    pub fn likely(&self) -> bool {
        self.sampled > 0 && self.with_frame_pointer * 2 > self.sampled
    }
}

/// Probes [`ProfileSupport`] for many processes, parsing each executable
/// once: results are cached by file identity (device, inode, mtime, size),
/// so processes of one binary, in any mount namespace, share an entry.
/// At most [`SupportCache::MAX_ENTRIES`] are kept.
///
/// ```no_run
/// use rover_core::process::{SupportCache, processes};
///
/// let cache = SupportCache::new();
/// for process in processes()? {
///     if let Ok(support) = cache.support(&process) {
///         println!("{} {}: symbols {}", process.pid, process.comm, support.has_symbols());
///     }
/// }
/// # Ok::<(), rover_core::process::Error>(())
/// ```
pub struct SupportCache {
    symbolizer: Symbolizer,
    files: Mutex<HashMap<FileIdentity, ProfileSupport>>,
}

impl Default for SupportCache {
    fn default() -> Self {
        SupportCache::new()
    }
}

impl std::fmt::Debug for SupportCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupportCache")
            .field("entries", &self.len())
            .finish()
    }
}

impl SupportCache {
    /// Executables remembered; past that the cache starts over.
    pub const MAX_ENTRIES: usize = 4096;

    /// An empty cache.
    pub fn new() -> SupportCache {
        SupportCache {
            symbolizer: Symbolizer::builder().level(Level::SymbolTable).build(),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// Executables cached.
    pub fn len(&self) -> usize {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What rover can do with `process`: its executable is read through
    /// `/proc/PID/exe`, which reaches it in any mount namespace and when
    /// deleted. Errors: [`Error::NoSuchProcess`] if it exited,
    /// [`Error::NoExecutable`] for a kernel thread, [`Error::Read`] if its
    /// executable cannot be opened (another user's needs privileges).
    pub fn support(&self, process: &ProcessInfo) -> Result<ProfileSupport, Error> {
        let exe_link = PathBuf::from(format!("/proc/{}/exe", process.pid));
        let file = File::open(&exe_link).map_err(|e| {
            // A kernel thread's link is missing as a vanished process's is.
            let alive = Path::new(&format!("/proc/{}/stat", process.pid)).exists();
            if e.kind() == std::io::ErrorKind::NotFound && alive {
                Error::NoExecutable { pid: process.pid }
            } else {
                Error::proc(process.pid, exe_link.clone(), e)
            }
        })?;
        let metadata = file
            .metadata()
            .map_err(|e| Error::proc(process.pid, exe_link.clone(), e))?;
        let identity = FileIdentity::from_metadata(&metadata);
        let cached = self
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&identity)
            .cloned();
        let mut support = match cached {
            Some(support) => support,
            None => {
                let support = self.probe(process, &file, &exe_link, identity);
                let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
                if files.len() >= Self::MAX_ENTRIES {
                    files.clear();
                }
                files.insert(identity, support.clone());
                support
            }
        };
        let perf_map =
            process.root_path(Path::new(&format!("/tmp/perf-{}.map", process.own_pid())));
        support.perf_map = perf_map.is_file().then_some(perf_map);
        Ok(support)
    }

    fn probe(
        &self,
        process: &ProcessInfo,
        file: &File,
        exe_link: &Path,
        identity: FileIdentity,
    ) -> ProfileSupport {
        let mut support = ProfileSupport {
            elf: false,
            build_id: None,
            symtab: false,
            dynsym: false,
            symbols: 0,
            debug_file: None,
            dwarf: false,
            eh_frame: false,
            debug_frame: false,
            frame_pointers: FramePointers::default(),
            perf_map: None,
        };
        let Some(elf) = Elf::read(file) else {
            return support;
        };
        support.elf = true;
        let has = |name: &str, kind: Option<u32>| {
            elf.section(name).is_some_and(|s| {
                s.size > 0 && s.kind != SHT_NOBITS && kind.is_none_or(|k| s.kind == k)
            })
        };
        support.symtab = elf
            .section(".symtab")
            .is_some_and(|s| s.kind == SHT_SYMTAB && s.size > SYMBOL_SIZE);
        support.dynsym = elf
            .section(".dynsym")
            .is_some_and(|s| s.kind == SHT_DYNSYM && s.size > SYMBOL_SIZE);
        support.eh_frame = has(".eh_frame", None);
        support.debug_frame = has(".debug_frame", None);
        support.frame_pointers = elf.frame_pointers();
        // The symbolizer finds a debug file next to the executable's path,
        // so it opens it by its path in the process's file system when that
        // still is the file the process runs.
        let by_root = process
            .exe
            .as_deref()
            .filter(|_| !process.exe_deleted)
            .map(|exe| process.root_path(exe))
            .filter(|path| {
                std::fs::metadata(path)
                    .is_ok_and(|meta| FileIdentity::from_metadata(&meta) == identity)
            });
        let path = by_root.as_deref().unwrap_or(exe_link);
        if let Ok(info) = self.symbolizer.module_info(path) {
            support.build_id = info.build_id;
            support.symbols = info.symbols;
            support.debug_file = info.debug_file;
            support.dwarf = info.has_dwarf;
            // What is kept is the summary: the symbolizer's copy would hold
            // the file mapped.
            self.symbolizer.evict_file(path);
        }
        support
    }
}

const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;
const SHT_DYNSYM: u32 = 11;
const SHF_EXECINSTR: u64 = 4;
const STT_FUNC: u8 = 2;
const SYMBOL_SIZE: u64 = 24;
const SECTION_HEADER_SIZE: usize = 64;
/// More section headers than any real file has: a corrupt count is not
/// followed into a huge read.
const MAX_SECTIONS: usize = 1 << 16;
/// Symbol table entries looked at to find [`FramePointers::MAX_SAMPLED`]
/// functions.
const MAX_PROBED_SYMBOLS: u64 = 1024;

/// A section header of a 64-bit little-endian ELF file.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
}

/// The section headers of an ELF file, read with a few positioned reads
/// (never the whole file).
struct Elf<'a> {
    file: &'a File,
    sections: Vec<Section>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn read_at(file: &File, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, offset).ok()?;
    Some(bytes)
}

impl<'a> Elf<'a> {
    /// `None` if the file is not ELF; an ELF file that is not 64-bit
    /// little-endian, or whose section headers are unreadable, has none.
    fn read(file: &'a File) -> Option<Elf<'a>> {
        let header = read_at(file, 0, 64).or_else(|| read_at(file, 0, 4))?;
        if header.get(..4) != Some(b"\x7fELF") {
            return None;
        }
        let sections = (header.get(4) == Some(&2) && header.get(5) == Some(&1))
            .then(|| Self::sections(file, &header))
            .flatten()
            .unwrap_or_default();
        Some(Elf { file, sections })
    }

    fn sections(file: &File, header: &[u8]) -> Option<Vec<Section>> {
        let offset = u64_at(header, 0x28)?;
        if offset == 0 || usize::from(u16_at(header, 0x3a)?) != SECTION_HEADER_SIZE {
            return None;
        }
        let mut count = usize::from(u16_at(header, 0x3c)?);
        let mut names = u32::from(u16_at(header, 0x3e)?);
        // Past 0xff00 sections, the counts are in section 0's header.
        let first = read_at(file, offset, SECTION_HEADER_SIZE)?;
        if count == 0 {
            count = usize::try_from(u64_at(&first, 32)?).ok()?;
        }
        if names == 0xffff {
            names = u32_at(&first, 40)?;
        }
        if count > MAX_SECTIONS {
            return None;
        }
        let table = read_at(file, offset, count * SECTION_HEADER_SIZE)?;
        let raw: Vec<(u32, Section)> = table
            .chunks_exact(SECTION_HEADER_SIZE)
            .map(|h| {
                Some((
                    u32_at(h, 0)?,
                    Section {
                        name: String::new(),
                        kind: u32_at(h, 4)?,
                        flags: u64_at(h, 8)?,
                        addr: u64_at(h, 16)?,
                        offset: u64_at(h, 24)?,
                        size: u64_at(h, 32)?,
                        link: u32_at(h, 40)?,
                    },
                ))
            })
            .collect::<Option<_>>()?;
        let strings = raw.get(usize::try_from(names).ok()?)?;
        let strings = read_at(
            file,
            strings.1.offset,
            usize::try_from(strings.1.size).ok()?,
        )?;
        Some(
            raw.into_iter()
                .map(|(name, mut section)| {
                    let name = usize::try_from(name).ok().and_then(|at| strings.get(at..));
                    if let Some(name) = name {
                        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                        section.name = String::from_utf8_lossy(&name[..end]).into_owned();
                    }
                    section
                })
                .collect(),
        )
    }

    fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Looks at up to [`FramePointers::MAX_SAMPLED`] functions' first bytes
    /// (see [`FramePointers`]).
    fn frame_pointers(&self) -> FramePointers {
        let mut counts = FramePointers::default();
        let table = self
            .section(".symtab")
            .filter(|s| s.kind == SHT_SYMTAB)
            .or_else(|| self.section(".dynsym").filter(|s| s.kind == SHT_DYNSYM));
        let Some(table) = table else {
            return counts;
        };
        let Some(names) = usize::try_from(table.link)
            .ok()
            .and_then(|i| self.sections.get(i))
        else {
            return counts;
        };
        let entries = table.size / SYMBOL_SIZE;
        let step = entries.div_ceil(MAX_PROBED_SYMBOLS).max(1);
        let mut seen = Vec::new();
        for index in (1..entries).step_by(usize::try_from(step).unwrap_or(usize::MAX)) {
            if counts.sampled >= FramePointers::MAX_SAMPLED {
                break;
            }
            let Some(code) = self.function_start(table, names, index) else {
                continue;
            };
            if seen.contains(&code.0) {
                continue;
            }
            seen.push(code.0);
            counts.sampled += 1;
            if sets_frame_pointer(&code.1) {
                counts.with_frame_pointer += 1;
            }
        }
        counts
    }

    /// The address and first [`PROLOGUE_BYTES`] bytes of the function symbol at `index`, if
    /// it is a sized function in an executable section whose name does not
    /// start with `_`.
    fn function_start(
        &self,
        table: &Section,
        names: &Section,
        index: u64,
    ) -> Option<(u64, Vec<u8>)> {
        let entry = read_at(
            self.file,
            table.offset + index * SYMBOL_SIZE,
            SYMBOL_SIZE as usize,
        )?;
        let name = u64::from(u32_at(&entry, 0)?);
        let info = *entry.get(4)?;
        let section = usize::from(u16_at(&entry, 6)?);
        let value = u64_at(&entry, 8)?;
        let size = u64_at(&entry, 16)?;
        if info & 0xf != STT_FUNC || size < 4 || name >= names.size {
            return None;
        }
        let code = self.sections.get(section)?;
        if code.flags & SHF_EXECINSTR == 0
            || code.kind == SHT_NOBITS
            || value < code.addr
            || value + size > code.addr + code.size
        {
            return None;
        }
        if read_at(self.file, names.offset + name, 1)?.first() == Some(&b'_') {
            return None;
        }
        let len = size.min(PROLOGUE_BYTES) as usize;
        Some((
            value,
            read_at(self.file, code.offset + (value - code.addr), len)?,
        ))
    }
}

/// `push %rbp` first (after an optional `endbr64`), then `mov %rsp,%rbp`
/// (either encoding) within the next [`PROLOGUE_BYTES`]: compilers
/// schedule an argument's load between the two.
fn sets_frame_pointer(code: &[u8]) -> bool {
    let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]).unwrap_or(code);
    let Some(after_push) = code.strip_prefix(&[0x55]) else {
        return false;
    };
    after_push
        .windows(3)
        .any(|bytes| bytes == [0x48, 0x89, 0xe5] || bytes == [0x48, 0x8b, 0xec])
}

/// Bytes of a function read to find its prologue.
const PROLOGUE_BYTES: u64 = 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prologues() {
        assert!(sets_frame_pointer(&[0x55, 0x48, 0x89, 0xe5, 0x90]));
        assert!(sets_frame_pointer(&[
            0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5
        ]));
        assert!(sets_frame_pointer(&[0x55, 0x48, 0x8b, 0xec]));
        // `push %rbp; mov $3,%edi; mov %rsp,%rbp`, as gcc schedules it.
        assert!(sets_frame_pointer(&[
            0x55, 0xbf, 3, 0, 0, 0, 0x48, 0x89, 0xe5
        ]));
        // `sub $8,%rsp`; `push %rbp` without the move; too short.
        assert!(!sets_frame_pointer(&[0x48, 0x83, 0xec, 0x08]));
        assert!(!sets_frame_pointer(&[0x55, 0x53, 0x48, 0x89]));
        assert!(!sets_frame_pointer(&[0x55]));
        let counts = FramePointers {
            sampled: 4,
            with_frame_pointer: 2,
        };
        assert!(!counts.likely());
        assert!(
            FramePointers {
                with_frame_pointer: 3,
                ..counts
            }
            .likely()
        );
        assert!(!FramePointers::default().likely());
    }

    #[test]
    fn files_that_are_not_elf_or_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert!(Elf::read(&File::open(&script).unwrap()).is_none());
        // An ELF header pointing past the end: ELF, without sections.
        let mut header = vec![0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[0x28..0x30].copy_from_slice(&4096u64.to_le_bytes());
        header[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        header[0x3c..0x3e].copy_from_slice(&30u16.to_le_bytes());
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &header).unwrap();
        let file = File::open(&cut).unwrap();
        let elf = Elf::read(&file).unwrap();
        assert!(elf.sections.is_empty());
        assert_eq!(elf.frame_pointers(), FramePointers::default());
        // Four bytes of magic and nothing else.
        std::fs::write(&cut, b"\x7fELF").unwrap();
        assert!(Elf::read(&File::open(&cut).unwrap()).is_some());
    }
}
