//! Copying stacks and threads from one profile into another whose tables
//! were interned in a different order: the base of merge, filter and diff.

use super::frame::{FrameId, FrameRecord};
use super::model::{Profile, StackId, ThreadId, ThreadRecord};

const UNMAPPED: u32 = u32::MAX;

/// Translates ids of `src` into ids of a destination profile, remembering
/// each translation so every source string, frame and stack is re-interned
/// at most once.
pub(crate) struct Importer<'s> {
    src: &'s Profile,
    strings: Vec<u32>,
    frames: Vec<u32>,
    stacks: Vec<u32>,
    threads: Vec<u32>,
    scratch: Vec<FrameId>,
}

impl<'s> Importer<'s> {
    pub(crate) fn new(src: &'s Profile) -> Self {
        Self {
            src,
            strings: vec![UNMAPPED; src.strings.len()],
            frames: vec![UNMAPPED; src.frames.len()],
            stacks: vec![UNMAPPED; src.stacks.len()],
            threads: vec![UNMAPPED; src.threads.len()],
            scratch: Vec::new(),
        }
    }

    fn string(&mut self, dst: &mut Profile, id: u32) -> u32 {
        if id == 0 {
            return 0;
        }
        match self.strings.get(id as usize) {
            Some(&mapped) if mapped != UNMAPPED => mapped,
            Some(_) => {
                let mapped = dst.strings.intern(self.src.strings.get(id));
                self.strings[id as usize] = mapped;
                mapped
            }
            None => 0,
        }
    }

    fn frame(&mut self, dst: &mut Profile, id: FrameId) -> FrameId {
        if let Some(&mapped) = self.frames.get(id.0 as usize)
            && mapped != UNMAPPED
        {
            return FrameId(mapped);
        }
        let Some(&r) = self.src.frames.get(id.0) else {
            return FrameId(dst.frames.intern(unknown_record()));
        };
        let record = FrameRecord {
            name: self.string(dst, r.name),
            module: self.string(dst, r.module),
            file: self.string(dst, r.file),
            reason: self.string(dst, r.reason),
            ..r
        };
        let mapped = dst.frames.intern(record);
        self.frames[id.0 as usize] = mapped;
        FrameId(mapped)
    }

    /// The destination id of source stack `id`.
    pub(crate) fn stack(&mut self, dst: &mut Profile, id: StackId) -> StackId {
        if let Some(&mapped) = self.stacks.get(id.0 as usize)
            && mapped != UNMAPPED
        {
            return StackId(mapped);
        }
        let mut frames = std::mem::take(&mut self.scratch);
        frames.clear();
        for &f in self.src.stack(id) {
            let mapped = self.frame(dst, f);
            frames.push(mapped);
        }
        let mapped = dst.intern_stack(&frames);
        self.scratch = frames;
        if let Some(slot) = self.stacks.get_mut(id.0 as usize) {
            *slot = mapped.0;
        }
        mapped
    }

    /// The destination id of source thread `id`.
    pub(crate) fn thread(&mut self, dst: &mut Profile, id: ThreadId) -> ThreadId {
        if let Some(&mapped) = self.threads.get(id.0 as usize)
            && mapped != UNMAPPED
        {
            return ThreadId(mapped);
        }
        let Some(&t) = self.src.threads.get(id.0) else {
            return dst.intern_thread(0, 0, "", "");
        };
        let record = ThreadRecord {
            process: self.string(dst, t.process),
            comm: self.string(dst, t.comm),
            ..t
        };
        let mapped = dst.threads.intern(record);
        self.threads[id.0 as usize] = mapped;
        ThreadId(mapped)
    }
}

fn unknown_record() -> FrameRecord {
    FrameRecord {
        kind: super::frame::FrameKind::Unknown,
        inlined: false,
        frame_pointer: false,
        has_offset: false,
        name: 0,
        module: 0,
        file: 0,
        line: 0,
        reason: 0,
        offset: 0,
    }
}
