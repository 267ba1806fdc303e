//! One ELF file mapped into memory, and the facts read from it once: kind,
//! load segments, build id, debug link, whether it carries DWARF, and its
//! function symbols.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionKind, SegmentFlags};

use crate::symtab::RawSymbol;

/// `p_flags` bit marking an executable segment.
const PF_X: u32 = 1;
/// ELF symbol types that can name code.
const STT_NOTYPE: u8 = 0;
const STT_FUNC: u8 = 2;
const STT_FILE: u8 = 4;
const STT_GNU_IFUNC: u8 = 10;
/// `sh_flags` bit marking a section of code.
const SHF_EXECINSTR: u64 = 4;

/// Identity of a file on disk: device, inode, modification time and size.
/// Two paths with the same identity are the same file (hard links, bind
/// mounts, `/proc/PID/root/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileIdentity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) mtime_ns: i128,
    pub(crate) size: u64,
}

impl FileIdentity {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
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
    pub(crate) build_id: Option<Box<[u8]>>,
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
        Self::from_map(Arc::new(map), FileIdentity::of(&meta))
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
        let build_id = obj.build_id().ok().flatten().map(Box::from);
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
        let inside = |s: &&LoadSegment| offset >= s.offset && offset - s.offset < s.filesz;
        let seg = self
            .segments
            .iter()
            .filter(inside)
            .find(|s| s.executable)
            .or_else(|| self.segments.iter().find(inside))?;
        Some(offset - seg.offset + seg.vaddr)
    }

    /// The function symbols of `.symtab` and `.dynsym`, with the source file
    /// named by the `STT_FILE` symbol preceding each local one.
    pub(crate) fn raw_symbols(&self, src: u8, out: &mut Vec<RawSymbol>, files: &mut Vec<Arc<str>>) {
        let Ok(obj) = parse(&self.map) else { return };
        let base = self.map.as_ptr() as usize;
        let len = self.map.len();
        // Offset of a name inside the mapping; names of sane files always are.
        let offset_of = |bytes: &[u8]| {
            let at = (bytes.as_ptr() as usize).checked_sub(base)?;
            (at + bytes.len() <= len).then_some(at)
        };
        // End address of each executable section, by section index, read
        // once rather than per symbol. A debug-only file keeps its `.text`
        // header (as NOBITS), flags included: test the flag, not contents.
        let mut code_ends: Vec<Option<u64>> = Vec::new();
        for section in obj.sections() {
            let i = section.index().0;
            if code_ends.len() <= i {
                code_ends.resize(i + 1, None);
            }
            let executable = matches!(
                section.flags(),
                object::SectionFlags::Elf { sh_flags } if sh_flags & SHF_EXECINSTR != 0
            );
            if executable {
                code_ends[i] = Some(section.address().saturating_add(section.size()));
            }
        }
        for table in [obj.symbols(), obj.dynamic_symbols()] {
            let mut file: u32 = u32::MAX;
            for sym in table {
                let object::SymbolFlags::Elf { st_info, .. } = sym.flags() else {
                    continue;
                };
                let st_type = st_info & 0xf;
                if st_type == STT_FILE {
                    file = match sym.name() {
                        Ok(name) if !name.is_empty() => {
                            files.push(Arc::from(name));
                            u32::try_from(files.len() - 1).unwrap_or(u32::MAX)
                        }
                        _ => u32::MAX,
                    };
                    continue;
                }
                if !matches!(st_type, STT_FUNC | STT_GNU_IFUNC | STT_NOTYPE) || sym.is_undefined() {
                    continue;
                }
                let Some(section_end) = sym
                    .section_index()
                    .and_then(|i| code_ends.get(i.0).copied().flatten())
                else {
                    continue;
                };
                let Ok(name) = sym.name_bytes() else { continue };
                let name = strip_version(name);
                if name.is_empty() || (st_type == STT_NOTYPE && name.starts_with(b"$")) {
                    continue;
                }
                let (Some(name_off), Ok(name_len)) = (offset_of(name), u32::try_from(name.len()))
                else {
                    continue;
                };
                let Ok(name_off) = u32::try_from(name_off) else {
                    continue;
                };
                out.push(RawSymbol {
                    addr: sym.address(),
                    size: sym.size(),
                    section_end,
                    name_off,
                    name_len,
                    src,
                    file: if sym.is_local() { file } else { u32::MAX },
                    global: sym.is_global(),
                });
            }
        }
    }
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
