//! Finding the separate debug file of a stripped binary: by build id under
//! `.build-id/xx/rest.debug`, and by `.gnu_debuglink` (CRC checked) next to
//! the binary, in its `.debug/` subdirectory and under each debug directory.

use std::path::{Path, PathBuf};

use crate::elf::ElfFile;

/// The directory searched when no other is configured.
pub const DEFAULT_DEBUG_DIR: &str = "/usr/lib/debug";

/// Where a binary lives: the directory to open files from (possibly under
/// `/proc/PID/root`) and the same directory as the binary's own namespace
/// sees it (used below the debug directories).
pub(crate) struct BinaryDir<'a> {
    pub(crate) open_dir: &'a Path,
    pub(crate) logical_dir: &'a Path,
}

/// Finds and opens the debug file for `elf`, if there is one that matches.
pub(crate) fn find_debug_file(
    elf: &ElfFile,
    at: &BinaryDir<'_>,
    debug_dirs: &[PathBuf],
) -> Option<(PathBuf, ElfFile)> {
    if let Some(id) = elf.build_id.as_ref().filter(|id| id.as_bytes().len() >= 2) {
        let hex = id.to_string();
        for dir in debug_dirs {
            let candidate = dir
                .join(".build-id")
                .join(&hex[..2])
                .join(format!("{}.debug", &hex[2..]));
            if let Ok(debug) = ElfFile::open(&candidate)
                && debug.build_id.as_ref() == Some(id)
                && debug.has_dwarf
            {
                return Some((candidate, debug));
            }
        }
    }
    let link = elf.debuglink.as_ref()?;
    let relative = at.logical_dir.strip_prefix("/").unwrap_or(at.logical_dir);
    let mut candidates = vec![
        at.open_dir.join(&link.name),
        at.open_dir.join(".debug").join(&link.name),
    ];
    for dir in debug_dirs {
        candidates.push(dir.join(relative).join(&link.name));
        candidates.push(dir.join(&link.name));
    }
    candidates.into_iter().find_map(|candidate| {
        let debug = ElfFile::open(&candidate).ok()?;
        let usable = debug.identity != elf.identity
            && debug.has_dwarf
            && crc32fast::hash(&debug.map) == link.crc;
        usable.then_some((candidate, debug))
    })
}
