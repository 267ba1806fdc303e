//! rover-symbolize: turns raw instruction addresses into frames people can
//! read — native ELF and DWARF (inlined frames, file and line), kernel symbols
//! from kallsyms, and JIT symbols from perf-map files.
//!
//! It is a plain synchronous library with no BPF in it. One `Symbolizer` is
//! `Send + Sync` and meant to be shared: it caches parsed files by identity so
//! the same library mapped into many processes is parsed once.
#![warn(missing_docs)]

mod error;
mod frame;
pub mod kallsyms;
pub mod maps;
pub mod perfmap;

pub use error::Error;
pub use frame::{InlinedFrame, Location, Reason, Sym, Symbolized, Unknown};
