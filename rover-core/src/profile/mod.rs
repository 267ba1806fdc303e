//! The aggregated profile model: per process and thread, interned stacks of
//! symbolized frames with on-CPU sample counts and off-CPU switches and time
//! by task state; and the operations users run on it (merge, filter, top-N
//! functions, difference of two profiles).
//!
//! Stacks are leaf first. See `docs/profile-model.md` for the whole guide.

mod diff;
mod filter;
mod frame;
mod import;
mod intern;
mod merge;
mod model;
mod top;
mod value;

pub use diff::{FunctionDelta, ProfileDiff, StackDelta};
pub use frame::{Frame, FrameId, FrameKind};
pub use model::{Entry, Profile, Sample, StackId, Thread, ThreadId};
pub use top::{FunctionStat, TopOrder};
pub use value::{Metric, OffCpuState, OffCpuValue, ProfileKind, SampleValue, Value};
