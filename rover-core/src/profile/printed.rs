//! Stacks as the text exports print them. Two stacks that differ only in
//! what is not printed (lines, files, the module of a named function)
//! print the same, so every text export keys its rows by this form: a
//! consumer keyed by the text never sees one stack twice.

use super::frame::{Frame, FrameKind};
use super::intern::StringTable;
use super::model::{Profile, StackId};

const UNSET: u32 = u32::MAX;

/// The printed form of each stack of one profile, root first, frames
/// joined by `;`, each distinct text stored once and named by an id.
pub(crate) struct PrintedStacks<'p> {
    profile: &'p Profile,
    of_stack: Vec<u32>,
    texts: StringTable,
    scratch: String,
}

impl<'p> PrintedStacks<'p> {
    pub(crate) fn new(profile: &'p Profile) -> Self {
        Self {
            profile,
            of_stack: vec![UNSET; profile.stack_count()],
            texts: StringTable::default(),
            scratch: String::new(),
        }
    }

    /// The id of the printed form of `stack`, the same for every stack
    /// that prints the same.
    pub(crate) fn id(&mut self, stack: StackId) -> u32 {
        if let Some(&id) = self.of_stack.get(stack.0 as usize)
            && id != UNSET
        {
            return id;
        }
        let profile = self.profile;
        let line = &mut self.scratch;
        line.clear();
        for (i, &frame) in profile.stack(stack).iter().rev().enumerate() {
            if i > 0 {
                line.push(';');
            }
            match profile.frame(frame) {
                Some(frame) => push_frame_label(line, &frame),
                None => line.push_str("[unknown]"),
            }
        }
        let id = self.texts.intern(line);
        if let Some(slot) = self.of_stack.get_mut(stack.0 as usize) {
            *slot = id;
        }
        id
    }

    /// The printed text of an id from [`PrintedStacks::id`].
    pub(crate) fn text(&self, id: u32) -> &str {
        self.texts.get(id)
    }
}

/// Appends the printed label of `frame`: its display name, sanitized, with
/// the kind suffix (`_[i]` for inlined frames, else `_[k]` for kernel and
/// `_[j]` for JIT frames).
pub(crate) fn push_frame_label(out: &mut String, frame: &Frame<'_>) {
    let name = frame.display_name();
    if name.is_empty() {
        out.push_str("[unknown]");
    } else {
        sanitize_into(out, &name);
    }
    let suffix = if frame.inlined {
        "_[i]"
    } else {
        match frame.kind {
            FrameKind::Kernel => "_[k]",
            FrameKind::Jit => "_[j]",
            FrameKind::Native | FrameKind::Unknown | FrameKind::Truncated => "",
        }
    };
    out.push_str(suffix);
}

/// Appends `s` with `;` turned into `:` and line breaks into spaces, so a
/// printed stack splits into one field per frame.
pub(crate) fn sanitize_into(out: &mut String, s: &str) {
    for c in s.chars() {
        out.push(match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        });
    }
}
