//! One ELF file mapped into memory, and the facts read from it once: kind,
//! load segments, build id, debug link, whether it carries DWARF, and its
//! function symbols.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::elf::{self, FileHeader32, FileHeader64};
use object::endian::{Endianness, U32};
use object::read::elf::{FileHeader, SectionHeader};
use object::{Object, ObjectSection, ObjectSegment, SectionKind, SegmentFlags};

use crate::build_id::BuildId;
use crate::symtab::{Class, Layout};

/// `p_flags` bit marking an executable segment.
const PF_X: u32 = 1;

/// Identity of one version of a file on disk: device, inode, modification
/// time and size. Two paths with the same identity are the same file (hard
/// links, bind mounts, `/proc/PID/root/...`, `/proc/PID/map_files/...`); a
/// rewrite changes the size or the modification time, a replacement the
/// inode. Keys the symbolizer's module cache, tells a perf map that changed,
/// and keys `rover-unwind`'s table store, so both caches agree on what "the
/// same file" is.
///
/// ```no_run
/// use rover_symbolize::FileIdentity;
///
/// let file = std::fs::File::open("/usr/lib/x86_64-linux-gnu/libc.so.6")?;
/// let identity = FileIdentity::from_metadata(&file.metadata()?);
/// println!("inode {} on device {:#x}", identity.ino, identity.dev);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileIdentity {
    /// The device the file is on (`st_dev`).
    pub dev: u64,
    /// The inode number (`st_ino`).
    pub ino: u64,
    /// The last modification time in nanoseconds since the epoch
    /// (`st_mtime`, `st_mtime_nsec`).
    pub mtime_ns: i128,
    /// The size in bytes (`st_size`).
    pub size: u64,
}

impl FileIdentity {
    /// The identity of the file `meta` describes (from `stat`/`fstat`, or
    /// [`std::fs::File::metadata`] of an open file).
    pub fn from_metadata(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            size: meta.size(),
        }
    }
}

/// A `PT_LOAD` program header: where a range of the file is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadSegment {
    pub(crate) offset: u64,
    pub(crate) vaddr: u64,
    pub(crate) filesz: u64,
    pub(crate) executable: bool,
}

/// The `.gnu_debuglink` of a stripped file: the debug file's name and the
/// CRC32 of its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DebugLink {
    pub(crate) name: PathBuf,
    pub(crate) crc: u32,
}

/// Why an ELF file could not be used.
#[derive(Debug)]
pub(crate) enum OpenError {
    Io(std::io::Error),
    Invalid(String),
}

/// An ELF file mapped read-only, with the facts every lookup needs.
pub(crate) struct ElfFile {
    pub(crate) map: Arc<Mmap>,
    pub(crate) identity: FileIdentity,
    pub(crate) segments: Vec<LoadSegment>,
    pub(crate) build_id: Option<BuildId>,
    pub(crate) debuglink: Option<DebugLink>,
    pub(crate) has_dwarf: bool,
    pub(crate) little_endian: bool,
}

impl ElfFile {
    /// Maps and inspects `path`. The file descriptor is closed on return: a
    /// mapping does not count against the process's open files.
    pub(crate) fn open(path: &Path) -> Result<ElfFile, OpenError> {
        let file = File::open(path).map_err(OpenError::Io)?;
        let meta = file.metadata().map_err(OpenError::Io)?;
        if !meta.is_file() {
            return Err(OpenError::Invalid("not a regular file".into()));
        }
        // SAFETY: the mapping is read-only and private. A file truncated
        // underneath a mapping faults on access; binaries and libraries in
        // use are replaced by rename, not rewritten in place, which is the
        // same assumption every symbolizer and debugger makes.
        let map = unsafe { Mmap::map(&file) }.map_err(OpenError::Io)?;
        Self::from_map(Arc::new(map), FileIdentity::from_metadata(&meta))
    }

    /// Copies an image held in memory (the vDSO) into a read-only anonymous
    /// mapping and inspects it. Its identity is all zeroes but its size.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<ElfFile, OpenError> {
        let mut anon = memmap2::MmapMut::map_anon(bytes.len().max(1)).map_err(OpenError::Io)?;
        anon[..bytes.len()].copy_from_slice(bytes);
        let map = anon.make_read_only().map_err(OpenError::Io)?;
        let identity = FileIdentity {
            dev: 0,
            ino: 0,
            mtime_ns: 0,
            size: bytes.len() as u64,
        };
        Self::from_map(Arc::new(map), identity)
    }

    fn from_map(map: Arc<Mmap>, identity: FileIdentity) -> Result<ElfFile, OpenError> {
        let obj = parse(&map)?;
        let mut segments = Vec::new();
        for seg in obj.segments() {
            let (offset, filesz) = seg.file_range();
            let executable =
                matches!(seg.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0);
            segments.push(LoadSegment {
                offset,
                vaddr: seg.address(),
                filesz,
                executable,
            });
        }
        let build_id = obj.build_id().ok().flatten().map(BuildId::new);
        let debuglink = obj
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| DebugLink {
                name: PathBuf::from(std::ffi::OsStr::from_bytes(name)),
                crc,
            });
        let has_dwarf = obj
            .section_by_name(".debug_info")
            .is_some_and(|s| s.kind() != SectionKind::UninitializedData && s.size() > 0);
        Ok(ElfFile {
            segments,
            build_id,
            debuglink,
            has_dwarf,
            little_endian: obj.is_little_endian(),
            identity,
            map,
        })
    }

    /// Turns an offset in the file into the virtual address the file was
    /// linked for, through the `PT_LOAD` segment that maps that offset. This
    /// holds for `ET_EXEC` (linked at its run-time addresses) and `ET_DYN`
    /// (PIE, libraries: moved by a load bias) alike, without computing the
    /// bias.
    /// Executable segments win when segments overlap (they can share a page).
    pub(crate) fn file_offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        let seg = self.load_segment(|s| offset >= s.offset && offset - s.offset < s.filesz)?;
        Some(offset - seg.offset + seg.vaddr)
    }

    /// The offset in the file of the byte the file's virtual address
    /// `vaddr` is loaded from; `None` when no segment loads it from the
    /// file (it is past a segment's file size, or outside every segment).
    pub(crate) fn vaddr_to_file_offset(&self, vaddr: u64) -> Option<u64> {
        let seg = self.load_segment(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)?;
        Some(vaddr - seg.vaddr + seg.offset)
    }

    /// The `PT_LOAD` segment `inside` accepts; an executable one wins when
    /// several do (segments can share a page).
    fn load_segment(&self, inside: impl Fn(&LoadSegment) -> bool) -> Option<&LoadSegment> {
        let mut found = self.segments.iter().filter(|s| inside(s));
        let first = found.next()?;
        if first.executable {
            return Some(first);
        }
        found.find(|s| s.executable).or(Some(first))
    }

    /// Where the `.symtab` and `.dynsym` of this file lie in its mapping,
    /// for a [`SymbolTable`](crate::symtab::SymbolTable) to read in place;
    /// `map` says which of the table's mappings this file's is.
    pub(crate) fn symbol_tables(&self, map: usize) -> Vec<Layout> {
        let data: &[u8] = &self.map;
        let layouts = match object::FileKind::parse(data) {
            Ok(object::FileKind::Elf32) => layouts::<FileHeader32<Endianness>>(data, map),
            Ok(object::FileKind::Elf64) => layouts::<FileHeader64<Endianness>>(data, map),
            _ => Ok(Vec::new()),
        };
        layouts.unwrap_or_default()
    }
}

fn layouts<Elf: FileHeader<Endian = Endianness>>(
    data: &[u8],
    map: usize,
) -> object::read::Result<Vec<Layout>> {
    let class = if Elf::is_type_64_sized() {
        Class::Elf64
    } else {
        Class::Elf32
    };
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    // End address of each executable section, by section index. A debug-only
    // file keeps its `.text` header (as NOBITS), flags included: test the
    // flag, not contents.
    let code_ends: Box<[Option<u64>]> = sections
        .iter()
        .map(|s| {
            let flags: u64 = s.sh_flags(endian).into();
            let (addr, size): (u64, u64) = (s.sh_addr(endian).into(), s.sh_size(endian).into());
            (flags & u64::from(elf::SHF_EXECINSTR) != 0).then(|| addr.saturating_add(size))
        })
        .collect();
    // Where a slice of `data` lies in it.
    let range_of = |bytes: &[u8]| {
        let start = (bytes.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        let end = start.checked_add(bytes.len())?;
        (end <= data.len()).then_some(start..end)
    };
    let mut out = Vec::new();
    for (sh_type, dynamic) in [(elf::SHT_SYMTAB, false), (elf::SHT_DYNSYM, true)] {
        // The same tables, found the same way, as `object::File` reads.
        let Ok(table) = sections.symbols(endian, data, sh_type) else {
            continue;
        };
        if table.is_empty() {
            continue;
        }
        let Some(syms) = range_of(object::pod::bytes_of_slice(table.symbols())) else {
            continue;
        };
        // As `object`'s string table: the section's extent, even where it
        // runs past the file (then no name reads).
        let strs = sections
            .section(table.string_section())
            .ok()
            .and_then(|s| {
                let start = usize::try_from(s.sh_offset(endian).into()).ok()?;
                let size = usize::try_from(s.sh_size(endian).into()).ok()?;
                Some(start..start.checked_add(size)?)
            })
            .unwrap_or(0..0);
        let shndx = sections
            .section(table.shndx_section())
            .ok()
            .and_then(|s| s.data_as_array::<U32<Endianness>, _>(endian, data).ok())
            .and_then(|a| range_of(object::pod::bytes_of_slice(a)))
            .unwrap_or(0..0);
        out.push(Layout {
            map,
            class,
            endian,
            dynamic,
            syms,
            strs,
            shndx,
            code_ends: code_ends.clone(),
        });
    }
    Ok(out)
}

fn parse(map: &Mmap) -> Result<object::File<'_>, OpenError> {
    let obj = object::File::parse(&**map).map_err(|e| OpenError::Invalid(e.to_string()))?;
    if obj.format() != object::BinaryFormat::Elf {
        return Err(OpenError::Invalid("not an ELF file".into()));
    }
    Ok(obj)
}

/// Drops a symbol-versioning suffix: `memcpy@@GLIBC_2.14` and `foo@VER` name
/// `memcpy` and `foo`.
pub(crate) fn strip_version(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == b'@') {
        Some(0) | None => name,
        Some(at) => &name[..at],
    }
}

#[cfg(test)]
mod tests {
    use super::strip_version;

    #[test]
    fn version_suffixes_are_stripped() {
        assert_eq!(strip_version(b"memcpy@@GLIBC_2.14"), b"memcpy");
        assert_eq!(strip_version(b"foo@VER_1"), b"foo");
        assert_eq!(strip_version(b"plain"), b"plain");
        assert_eq!(strip_version(b"@odd"), b"@odd");
    }
}
