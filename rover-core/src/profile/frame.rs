//! Frames of a profile: what a stack is made of, and how a symbolized
//! address from `rover-symbolize` becomes one or more of them.

use std::borrow::Cow;

use rover_symbolize::{Location, Module, Origin, Symbolized};

use super::intern::{Interner, StringTable};

/// Where a frame's code lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    /// Kernel code.
    Kernel,
    /// Native user code from an ELF file.
    Native,
    /// JIT-compiled code named by a perf map.
    Jit,
    /// An address that could not be resolved; the frame keeps its module,
    /// offset and the reason.
    Unknown,
    /// Not code: the outermost frame of a user stack the unwinder could not
    /// walk to its end, named `[unwind stopped: REASON]`, with the reason in
    /// [`Frame::reason`]. The frames below it are right; callers are missing.
    Truncated,
}

impl FrameKind {
    /// The kind of a resolved frame, from where the symbolizer found its
    /// code.
    fn of(origin: Origin) -> FrameKind {
        match origin {
            Origin::Kernel | Origin::KernelModule => FrameKind::Kernel,
            Origin::PerfMap => FrameKind::Jit,
            _ => FrameKind::Native,
        }
    }
}

/// Dense id of an interned frame within one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId(pub(crate) u32);

/// The interned form of a frame: strings as ids into the profile's table,
/// id 0 meaning absent. 32 bytes, stored once per distinct frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FrameRecord {
    pub(crate) kind: FrameKind,
    pub(crate) inlined: bool,
    /// Found by a frame-pointer step of the unwinder (a module without a
    /// table).
    pub(crate) frame_pointer: bool,
    /// Set for unknown frames: they carry the address rather than a name.
    pub(crate) has_offset: bool,
    pub(crate) name: u32,
    pub(crate) module: u32,
    pub(crate) file: u32,
    pub(crate) line: u32,
    pub(crate) reason: u32,
    pub(crate) offset: u64,
}

/// A frame of a profile, borrowed from its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame<'a> {
    /// Where the code lives.
    pub kind: FrameKind,
    /// Function name; empty for unknown frames (see [`Frame::display_name`]).
    pub name: &'a str,
    /// Module path (ELF file, `[kernel.kallsyms]`, kernel module, perf-map path).
    pub module: Option<&'a str>,
    /// Source file, when debug information gave one.
    pub file: Option<&'a str>,
    /// Source line, when known.
    pub line: Option<u32>,
    /// True when this function was inlined into the next frame toward the root.
    pub inlined: bool,
    /// True when the in-kernel unwinder found this frame with frame
    /// pointers, in a module without an unwind table (JIT code, anonymous
    /// memory): right if that code keeps frame pointers.
    pub frame_pointer: bool,
    /// For unknown frames, the offset inside the module (or the raw address).
    pub offset: Option<u64>,
    /// For unknown frames, why the address could not be resolved.
    pub reason: Option<&'a str>,
}

impl Frame<'_> {
    /// The function name, or for an unknown frame `[module+0xOFFSET]`, or
    /// `[unknown]` when even the module is unknown.
    pub fn display_name(&self) -> Cow<'_, str> {
        if self.kind != FrameKind::Unknown {
            return Cow::Borrowed(self.name);
        }
        match (self.module, self.offset) {
            (Some(module), Some(offset)) => Cow::Owned(format!("[{module}+{offset:#x}]")),
            _ => Cow::Borrowed("[unknown]"),
        }
    }
}

pub(crate) fn frame_view<'a>(strings: &'a StringTable, r: &FrameRecord) -> Frame<'a> {
    let opt = |id: u32| (id != 0).then(|| strings.get(id));
    Frame {
        kind: r.kind,
        name: strings.get(r.name),
        module: opt(r.module),
        file: opt(r.file),
        line: (r.line != 0).then_some(r.line),
        inlined: r.inlined,
        frame_pointer: r.frame_pointer,
        offset: r.has_offset.then_some(r.offset),
        reason: opt(r.reason),
    }
}

/// Where a profile's frames are interned: its strings, its frames and the
/// build ids of the modules they name.
pub(crate) struct FrameTables<'a> {
    pub(crate) strings: &'a mut StringTable,
    pub(crate) frames: &'a mut Interner<FrameRecord>,
    /// `(module, build id)` string ids.
    pub(crate) build_ids: &'a mut Vec<(u32, u32)>,
}

impl FrameTables<'_> {
    fn intern(
        &mut self,
        record: FrameRecord,
        module: Option<&Module>,
        origin: Option<Origin>,
    ) -> FrameId {
        let (id, new) = self.frames.intern_with_flag(record);
        // A module first seen in a new frame: note its build id once, for
        // the exports that carry it (files only, as the pprof mappings are).
        if new
            && origin == Some(Origin::File)
            && let Some(build_id) = module.and_then(Module::build_id)
            && !self.build_ids.iter().any(|&(m, _)| m == record.module)
        {
            let hex = self.strings.intern(&build_id.to_string());
            self.build_ids.push((record.module, hex));
        }
        FrameId(id)
    }
}

/// Interns the frames of one symbolized address and appends their ids to
/// `out`, leaf first: an address inside inlined code gives the inlined
/// functions innermost first (marked inlined), then the real function. The
/// frame's kind is read from the result's origin.
pub(crate) fn push_symbolized(
    tables: &mut FrameTables<'_>,
    out: &mut Vec<FrameId>,
    sym: &Symbolized,
    frame_pointer: bool,
) {
    match sym {
        Symbolized::Sym(s) => {
            let module = tables.strings.intern(s.module.name());
            let kind = FrameKind::of(s.origin);
            let mut push =
                |tables: &mut FrameTables<'_>, name: &str, loc: Option<&Location>, inlined| {
                    let (file, line) = match loc {
                        Some(l) => (tables.strings.intern(&l.file), l.line.unwrap_or(0)),
                        None => (0, 0),
                    };
                    let record = FrameRecord {
                        kind,
                        inlined,
                        frame_pointer,
                        has_offset: false,
                        name: tables.strings.intern(name),
                        module,
                        file,
                        line,
                        reason: 0,
                        offset: 0,
                    };
                    out.push(tables.intern(record, Some(&s.module), Some(s.origin)));
                };
            for inl in &s.inlined {
                push(tables, &inl.name, inl.location.as_ref(), true);
            }
            push(tables, &s.name, s.location.as_ref(), false);
        }
        Symbolized::Unknown(u) => {
            let record = FrameRecord {
                kind: FrameKind::Unknown,
                inlined: false,
                frame_pointer,
                has_offset: u.module.is_some(),
                name: 0,
                module: u
                    .module
                    .as_ref()
                    .map_or(0, |m| tables.strings.intern(m.name())),
                file: 0,
                line: 0,
                reason: tables.strings.intern(&u.reason.to_string()),
                offset: if u.module.is_some() {
                    u.display_offset()
                } else {
                    0
                },
            };
            out.push(tables.intern(record, u.module.as_ref(), u.origin));
        }
    }
}

/// Interns the marker frame of a user stack whose walk stopped for `reason`.
pub(crate) fn push_truncated(tables: &mut FrameTables<'_>, out: &mut Vec<FrameId>, reason: &str) {
    let record = FrameRecord {
        kind: FrameKind::Truncated,
        inlined: false,
        frame_pointer: false,
        has_offset: false,
        name: tables
            .strings
            .intern(&format!("[unwind stopped: {reason}]")),
        module: 0,
        file: 0,
        line: 0,
        reason: tables.strings.intern(reason),
        offset: 0,
    };
    out.push(tables.intern(record, None, None));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_records_stay_compact() {
        // Strings live in the table; a frame is ids, a line and an offset.
        assert_eq!(size_of::<FrameRecord>(), 32);
    }
}
