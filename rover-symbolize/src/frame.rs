//! Results as data: a symbolized address is either a [`Sym`] or an
//! [`Unknown`] carrying the reason, so one bad address never fails a batch.

use std::fmt;
use std::sync::Arc;

/// A source location: file, line and column where known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Source file path as recorded in the debug information.
    pub file: Arc<str>,
    /// Line number, 1-based; `None` when only the file is known.
    pub line: Option<u32>,
    /// Column, 1-based, when recorded.
    pub column: Option<u32>,
}

/// A function inlined at the address: its name and where in it the address
/// (or the call into the next inner frame) lies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InlinedFrame {
    /// The inlined function's (possibly demangled) name.
    pub name: Arc<str>,
    /// The location inside that function.
    pub location: Option<Location>,
}

/// A resolved address.
///
/// `name` and `location` describe the outermost (real, not inlined) function.
/// When the address lies in inlined code, `inlined` lists the inlined
/// functions innermost first, as `addr2line -i` prints them, and `location`
/// is the call site in the outer function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sym {
    /// The function name (demangled if asked for).
    pub name: Arc<str>,
    /// The module (ELF path, `[kernel.kallsyms]`, a kernel module name, or a
    /// perf-map path) the address belongs to.
    pub module: Arc<str>,
    /// The address inside the module: a file virtual address for ELF files,
    /// the absolute address for kernel and JIT code.
    pub module_offset: u64,
    /// Start address of the symbol in the same space as `module_offset`.
    pub sym_addr: u64,
    /// Source location of the address in the outer function, if known.
    pub location: Option<Location>,
    /// Inlined functions at the address, innermost first.
    pub inlined: Vec<InlinedFrame>,
}

/// Why an address could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The address is not inside any mapping of the process.
    Unmapped,
    /// The module has no symbol covering the address.
    NoSymbols,
    /// The module's file no longer exists or cannot be opened.
    FileGone,
    /// The module's file exists but could not be parsed.
    InvalidFile(Arc<str>),
    /// Kernel addresses are hidden (`kptr_restrict`): kallsyms shows zeroes.
    KernelAddressesHidden,
    /// The address lies in anonymous executable memory with no perf map.
    NoPerfMap,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unmapped => f.write_str("unmapped"),
            Reason::NoSymbols => f.write_str("no symbols"),
            Reason::FileGone => f.write_str("file gone"),
            Reason::InvalidFile(why) => write!(f, "invalid file: {why}"),
            Reason::KernelAddressesHidden => f.write_str("kernel addresses hidden (kptr_restrict)"),
            Reason::NoPerfMap => f.write_str("anonymous code without perf map"),
        }
    }
}

/// An address that could not be resolved, with what is known about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unknown {
    /// The module the address is in, if it is in one.
    pub module: Option<Arc<str>>,
    /// Offset inside the module (file virtual address), or the address itself.
    pub module_offset: u64,
    /// Why it could not be resolved.
    pub reason: Reason,
}

/// The result for one address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Symbolized {
    /// The address was resolved to a symbol.
    Sym(Sym),
    /// The address could not be resolved; the reason says why.
    Unknown(Unknown),
}

impl fmt::Display for Symbolized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Symbolized::Sym(sym) => {
                for inl in &sym.inlined {
                    write!(f, "{} [inlined] <- ", inl.name)?;
                }
                write!(
                    f,
                    "{}+{:#x}",
                    sym.name,
                    sym.module_offset.wrapping_sub(sym.sym_addr)
                )?;
                match &sym.location {
                    Some(Location {
                        file,
                        line: Some(line),
                        ..
                    }) => write!(f, " at {file}:{line}")?,
                    Some(Location {
                        file, line: None, ..
                    }) => write!(f, " at {file}")?,
                    None => {}
                }
                write!(f, " ({})", sym.module)
            }
            Symbolized::Unknown(u) => match &u.module {
                Some(m) => write!(f, "[{m}+{:#x}] ({})", u.module_offset, u.reason),
                None => write!(f, "[unknown {:#x}] ({})", u.module_offset, u.reason),
            },
        }
    }
}
