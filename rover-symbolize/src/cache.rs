//! The cache of loaded modules, keyed by file identity (device, inode,
//! modification time, size) and by build id, so one library mapped into many
//! processes — or into many containers — is parsed once. Bounded in modules
//! (each holds its file mappings) and in estimated bytes, least recently used
//! first out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::build_id::BuildId;
use crate::debuginfo::BinaryDir;
use crate::elf::{ElfFile, FileIdentity, OpenError};
use crate::module::LoadedFile;

#[derive(Default)]
struct Inner {
    by_identity: HashMap<FileIdentity, Arc<LoadedFile>>,
    by_build_id: HashMap<BuildId, Arc<LoadedFile>>,
    tick: u64,
}

/// Loaded modules, shared across threads.
pub(crate) struct FileCache {
    inner: Mutex<Inner>,
    max_files: usize,
    max_bytes: usize,
}

/// What a module is loaded with.
pub(crate) struct LoadOptions<'a> {
    pub(crate) debug_dirs: &'a [PathBuf],
    pub(crate) demangle: bool,
}

impl FileCache {
    pub(crate) fn new(max_files: usize, max_bytes: usize) -> FileCache {
        FileCache {
            inner: Mutex::default(),
            max_files: max_files.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The module for the file at `path`, loading it on a miss.
    pub(crate) fn get(
        &self,
        path: &Path,
        at: &BinaryDir<'_>,
        opts: &LoadOptions<'_>,
    ) -> Result<Arc<LoadedFile>, OpenError> {
        let meta = std::fs::metadata(path).map_err(OpenError::Io)?;
        let identity = FileIdentity::from_metadata(&meta);
        {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(file) = inner.by_identity.get(&identity) {
                file.touch(tick);
                return Ok(Arc::clone(file));
            }
        }
        let elf = ElfFile::open(path)?;
        if let Some(id) = &elf.build_id {
            let mut inner = self.lock();
            // A copy with the same build id is the same code; reuse it unless
            // this copy has DWARF the cached one lacks.
            let cached = inner
                .by_build_id
                .get(id)
                .filter(|f| f.has_dwarf() || !elf.has_dwarf)
                .cloned();
            if let Some(file) = cached {
                inner.by_identity.insert(elf.identity, Arc::clone(&file));
                return Ok(file);
            }
        }
        let file = Arc::new(LoadedFile::load(
            elf,
            path,
            at,
            opts.debug_dirs,
            opts.demangle,
        ));
        let mut inner = self.lock();
        inner.tick += 1;
        file.touch(inner.tick);
        inner
            .by_identity
            .insert(file.elf.identity, Arc::clone(&file));
        if let Some(id) = &file.elf.build_id {
            inner.by_build_id.insert(id.clone(), Arc::clone(&file));
        }
        self.enforce_bounds(&mut inner, &file);
        Ok(file)
    }

    /// The module for an image read from memory (the vDSO), shared by build
    /// id: every process of one kernel has the same vDSO.
    pub(crate) fn get_image(
        &self,
        elf: ElfFile,
        name: &Path,
        opts: &LoadOptions<'_>,
    ) -> Arc<LoadedFile> {
        if let Some(id) = &elf.build_id
            && let Some(file) = self.lock().by_build_id.get(id)
        {
            return Arc::clone(file);
        }
        let none = BinaryDir {
            open_dir: Path::new("/nonexistent"),
            logical_dir: Path::new("/nonexistent"),
        };
        let file = Arc::new(LoadedFile::load(elf, name, &none, &[], opts.demangle));
        if let Some(id) = &file.elf.build_id {
            let mut inner = self.lock();
            inner.tick += 1;
            file.touch(inner.tick);
            inner.by_build_id.insert(id.clone(), Arc::clone(&file));
        }
        file
    }

    /// Evicts least recently used modules (never `keep`) until within bounds.
    fn enforce_bounds(&self, inner: &mut Inner, keep: &Arc<LoadedFile>) {
        loop {
            let mut distinct: Vec<&Arc<LoadedFile>> = inner
                .by_identity
                .values()
                .chain(inner.by_build_id.values())
                .collect();
            distinct.sort_unstable_by_key(|f| Arc::as_ptr(f));
            distinct.dedup_by(|a, b| Arc::ptr_eq(a, b));
            let bytes: usize = distinct.iter().map(|f| f.cost_bytes()).sum();
            if distinct.len() <= self.max_files && bytes <= self.max_bytes {
                return;
            }
            let victim = distinct
                .into_iter()
                .filter(|f| !Arc::ptr_eq(f, keep))
                .min_by_key(|f| f.last_used.load(Ordering::Relaxed))
                .cloned();
            match victim {
                Some(victim) => Self::remove(inner, &victim),
                None => return,
            }
        }
    }

    fn remove(inner: &mut Inner, victim: &Arc<LoadedFile>) {
        inner.by_identity.retain(|_, f| !Arc::ptr_eq(f, victim));
        inner.by_build_id.retain(|_, f| !Arc::ptr_eq(f, victim));
    }

    /// Forgets every module.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.by_identity.clear();
        inner.by_build_id.clear();
    }

    /// Forgets the module loaded from the file at `path`, if any.
    pub(crate) fn evict_path(&self, path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let mut inner = self.lock();
        match inner
            .by_identity
            .get(&FileIdentity::from_metadata(&meta))
            .cloned()
        {
            Some(victim) => {
                Self::remove(&mut inner, &victim);
                true
            }
            None => false,
        }
    }

    /// Number of distinct modules held.
    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        let mut distinct: Vec<_> = inner
            .by_identity
            .values()
            .chain(inner.by_build_id.values())
            .map(Arc::as_ptr)
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        distinct.len()
    }
}
