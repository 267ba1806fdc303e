//! rover-symbolize: turns raw instruction addresses into frames people can
//! read — native ELF and DWARF (inlined frames, file and line), kernel symbols
//! from kallsyms, and JIT symbols from perf-map files.
//!
//! It is a plain synchronous library with no BPF in it. One [`Symbolizer`] is
//! `Send + Sync` and meant to be shared: it caches parsed files by identity so
//! the same library mapped into many processes is parsed once.
//!
//! ```no_run
//! use rover_symbolize::{Level, Source, Symbolized, Symbolizer};
//!
//! let symbolizer = Symbolizer::builder().level(Level::Inlined).demangle(true).build();
//! let frames = symbolizer.symbolize(&Source::process(1234), &[0x5555_5555_9a20])?;
//! match &frames[0] {
//!     Symbolized::Sym(sym) => println!("{} in {} ({:?})", sym.name, sym.module, sym.origin),
//!     Symbolized::Unknown(unknown) => println!("unknown: {}", unknown.reason),
//! }
//! # Ok::<(), rover_symbolize::Error>(())
//! ```
//!
//! The parsers underneath (`maps`: `/proc/PID/maps`, `kallsyms`,
//! `perfmap`) are public only with the unstable `unstable-parsers` feature,
//! which this crate's own tests use against the live kernel; they are not
//! part of the supported API.
#![warn(missing_docs)]

mod addrmap;
mod build_id;
mod cache;
mod debuginfo;
mod demangle;
mod dwarf;
mod elf;
mod error;
mod frame;
#[cfg(feature = "unstable-parsers")]
pub mod kallsyms;
#[cfg(not(feature = "unstable-parsers"))]
#[allow(dead_code, unused_imports)]
mod kallsyms;
mod kernel;
#[cfg(feature = "unstable-parsers")]
pub mod maps;
#[cfg(not(feature = "unstable-parsers"))]
#[allow(dead_code, unused_imports)]
mod maps;
mod module;
mod names;
#[cfg(feature = "unstable-parsers")]
pub mod perfmap;
#[cfg(not(feature = "unstable-parsers"))]
#[allow(dead_code, unused_imports)]
mod perfmap;
mod process;
mod source;
mod symbolizer;
mod symtab;

pub use build_id::BuildId;
pub use debuginfo::DEFAULT_DEBUG_DIR;
pub use demangle::demangle;
pub use elf::FileIdentity;
pub use error::Error;
pub use frame::{InlinedFrame, Location, Module, Origin, Reason, Sym, Symbolized, Unknown};
pub use kernel::{KALLSYMS_RELOAD_INTERVAL, KERNEL_MODULE};
pub use process::Capture;
pub use source::{Elf, Kernel, Process, Source};
pub use symbolizer::{Builder, Level, ModuleInfo, Symbolizer};
