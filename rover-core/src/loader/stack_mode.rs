//! How a session walks user stacks.

/// How user stacks are walked.
///
/// Most binaries in production are built without frame pointers (Debian's
/// libc, nginx, the Python interpreter), and a frame-pointer walk of their
/// stacks stops at the leaf or wanders into garbage. rover can instead
/// unwind them in the kernel from tables built from each binary's
/// `.eh_frame` (see `docs/unwind.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StackMode {
    /// Frame pointers only (`bpf_get_stackid`), as bcc and bpftrace walk
    /// them: cheapest, and right only for code built with frame pointers.
    FramePointers,
    /// Unwind with tables from `.eh_frame` (and `.debug_frame`) wherever a
    /// module has one, frame pointers where it has none (JIT code,
    /// anonymous memory; such frames are marked). A kernel that cannot run
    /// the unwinder is an [`Error::Unsupported`](crate::Error::Unsupported).
    Dwarf,
    /// [`Dwarf`](Self::Dwarf) where the kernel can run the unwinder,
    /// otherwise [`FramePointers`](Self::FramePointers), with a
    /// [`Warning`](crate::Warning) saying why. The default.
    #[default]
    Auto,
}
