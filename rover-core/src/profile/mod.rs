//! The aggregated profile model: per process and thread, interned stacks of
//! symbolized frames with on-CPU sample counts and off-CPU switches and time
//! by task state; and the operations users run on it (merge, filter, top-N
//! functions, difference of two profiles, per-process totals).
//!
//! A [`Profile`] is read-only: sessions build theirs, and
//! [`ProfileBuilder`] builds one by hand. Stacks are leaf first. See
//! `docs/profile-model.md` for the whole guide.

mod builder;
mod diff;
mod filter;
mod frame;
mod identity;
mod import;
mod intern;
mod merge;
mod model;
mod printed;
mod summary;
mod top;
mod value;

pub use builder::ProfileBuilder;
pub use diff::{FunctionDelta, ProfileDiff, StackDelta};
pub use frame::{Frame, FrameId, FrameKind};
pub use identity::ProcessIdentity;
pub use model::{Entry, Profile, Sample, StackId, Thread, ThreadId};
pub(crate) use printed::{PrintedStacks, sanitize_into};
pub use summary::ProcessSummary;
pub use top::{FunctionStat, TopOrder};
pub use value::{Metric, OffCpuState, OffCpuValue, ProfileKind, SampleValue, Value};

/// Symbolized frames for the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_frames {
    use std::sync::Arc;

    use rover_symbolize::{Module, Origin, Sym, Symbolized};

    /// `name` in `module`, found as `origin` says; file code gets a file
    /// offset and virtual address, kernel and JIT code none.
    pub(crate) fn sym(name: &str, module: &str, origin: Origin) -> Symbolized {
        let in_file = (origin == Origin::File).then_some(0x1000);
        Symbolized::Sym(Sym {
            name: Arc::from(name),
            module: Module::new(module, None),
            origin,
            address: 0x1000,
            file_offset: in_file,
            vaddr: in_file,
            sym_addr: 0x1000,
            location: None,
            inlined: Vec::new(),
        })
    }

    /// [`sym`] with `inlined` functions inlined into it, innermost first.
    pub(crate) fn sym_inlined(
        name: &str,
        module: &str,
        origin: Origin,
        inlined: &[&str],
    ) -> Symbolized {
        let Symbolized::Sym(mut s) = sym(name, module, origin) else {
            unreachable!("sym resolves")
        };
        s.inlined = inlined
            .iter()
            .map(|n| rover_symbolize::InlinedFrame {
                name: Arc::from(*n),
                location: None,
            })
            .collect();
        Symbolized::Sym(s)
    }
}
