//! Compact unwind tables for x86-64, built from a binary's `.eh_frame` (or
//! its `.debug_frame` where it has only that) with `gimli`, for rover's
//! in-kernel unwinder of code built without frame pointers.
//!
//! A table is the binary's call-frame information flattened to one
//! [`Row`] per address range: how to find the canonical frame address (CFA)
//! from the stack or frame pointer, and where the caller's frame pointer
//! was saved. On x86-64 the return address is always at CFA − 8, so that is
//! all a walk needs: from the registers of one frame, the row for its
//! program counter gives the CFA, the return address (the caller's program
//! counter) and the caller's RBP; the caller's RSP is the CFA.
//!
//! ```no_run
//! use rover_unwind::{Cfa, UnwindTable};
//!
//! let table = UnwindTable::from_path("/usr/lib/x86_64-linux-gnu/libc.so.6")?;
//! println!("{} rows, {} bytes", table.rows().len(), table.size_bytes());
//! if let Some(row) = table.lookup(0x2a1c0) {
//!     match row.cfa() {
//!         Cfa::Rsp(offset) => println!("CFA = RSP + {offset}"),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok::<(), rover_unwind::Error>(())
//! ```
//!
//! Addresses are the file's own (its ELF virtual addresses, as `.eh_frame`
//! states them): for a process, subtract the mapping's load bias first.
//!
//! Feeding the kernel: [`ProcessMappings`] is a process's executable
//! mappings with their biases and table keys (file identities shared with
//! the symbolizer's cache, or the vDSO's hash); [`TableStore`] places
//! tables in a row array of fixed capacity, one per key, evicting the least
//! recently used; [`Unwinder`] runs both on its own thread and writes rows
//! and process entries into a [`RowSink`] and a [`ProcessSink`].

#![warn(missing_docs)]

mod build;
mod cache;
mod process;
mod row;
mod service;
mod store;
mod walk;

pub use build::{Error, Skipped, UnwindSource, UnwindTable};
pub use cache::{CacheStats, TableCache};
pub use process::{
    ElfImage, ExecMapping, MAX_MAPPINGS, MappedCode, NoTable, ProcessError, ProcessMappings,
    TableKey,
};
pub use row::{Cfa, Rbp, Row};
pub use service::{
    Priority, ProcessReport, ProcessSink, RowSink, Unwinder, UnwinderConfig, UnwinderError,
    UnwinderStats,
};
pub use store::{
    Failure, MAX_CAPACITY, MappingEntry, NO_TABLE, Reservation, StoreStats, TABLE_PENDING,
    TableRef, TableStore,
};
pub use walk::{Registers, Step, StopReason, Walk, step, walk};
