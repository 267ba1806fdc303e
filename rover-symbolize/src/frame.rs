//! Results as data: a symbolized address is either a [`Sym`] or an
//! [`Unknown`] carrying the reason, so one bad address never fails a batch.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::build_id::BuildId;

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

/// Where the code at an address comes from, as the symbolizer found it.
///
/// ```no_run
/// use rover_symbolize::{Origin, Source, Symbolized, Symbolizer};
///
/// let results = Symbolizer::default().symbolize(&Source::process(1234), &[0x7f00_1234_5678])?;
/// if results[0].origin() == Some(Origin::PerfMap) {
///     println!("JIT code: {}", results[0]);
/// }
/// # Ok::<(), rover_symbolize::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Origin {
    /// Native code from an ELF file (an executable or a shared library).
    File,
    /// JIT code named by the process's perf map (`/tmp/perf-PID.map`).
    PerfMap,
    /// The kernel image (`[kernel.kallsyms]`).
    Kernel,
    /// A loaded kernel module (`[ext4]`, `[bpf]` for BPF programs).
    KernelModule,
    /// The vDSO the kernel maps into every process, read from its memory.
    Vdso,
    /// Memory backed by no file: anonymous code with no perf map to name it
    /// (or with perf maps turned off), the heap, a stack.
    Anonymous,
}

/// The module an address belongs to: what it is called and, for an ELF
/// file or the vDSO, its build id. Shared: cloning one costs a reference
/// count, so every result of a batch carries its module for free.
///
/// The name is the file's path as the process maps it, `[vdso]`,
/// `[kernel.kallsyms]`, a kernel module in brackets (`[ext4]`), or the path
/// of a perf map. The build id is read from the file the symbolizer loaded,
/// not looked up again.
///
/// ```
/// use rover_symbolize::{BuildId, Module};
///
/// let module = Module::new("/usr/bin/app", Some(BuildId::new(&[0xab, 0xcd])));
/// assert_eq!(module.name(), "/usr/bin/app");
/// assert_eq!(module.build_id().map(ToString::to_string).as_deref(), Some("abcd"));
/// ```
#[derive(Clone)]
pub struct Module(Arc<ModuleData>);

#[derive(Debug, PartialEq, Eq, Hash)]
struct ModuleData {
    name: Box<str>,
    build_id: Option<BuildId>,
}

impl Module {
    /// A module called `name`, with `build_id` if it has one.
    pub fn new(name: impl Into<Box<str>>, build_id: Option<BuildId>) -> Self {
        Module(Arc::new(ModuleData {
            name: name.into(),
            build_id,
        }))
    }

    /// The module's name: a path, `[vdso]`, `[kernel.kallsyms]`, `[MODULE]`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The GNU build id of the module's file, if it has one.
    pub fn build_id(&self) -> Option<&BuildId> {
        self.0.build_id.as_ref()
    }
}

impl PartialEq for Module {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Module {}

impl Hash for Module {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.0.name)
            .field("build_id", &self.0.build_id)
            .finish()
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name)
    }
}

/// A resolved address.
///
/// `name` and `location` describe the outermost (real, not inlined) function.
/// When the address lies in inlined code, `inlined` lists the inlined
/// functions innermost first, as `addr2line -i` prints them, and `location`
/// is the call site in the outer function.
///
/// Three addresses say where it is: `address` as it was asked about (and
/// `sym_addr` in the same space), and, where the code lies in a file,
/// `file_offset` and `vaddr` inside that file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sym {
    /// The function name (demangled if asked for).
    pub name: Arc<str>,
    /// The module the address belongs to.
    pub module: Module,
    /// Where the code comes from.
    pub origin: Origin,
    /// The address asked about: absolute in the process for
    /// [`Source::Process`](crate::Source::Process), a kernel address for
    /// [`Source::Kernel`](crate::Source::Kernel), and the file's virtual
    /// address for [`Source::Elf`](crate::Source::Elf).
    pub address: u64,
    /// Offset of the address in the module's file (or the vDSO's image);
    /// `None` for kernel and JIT code, and for an ELF source's address
    /// that no segment maps.
    pub file_offset: Option<u64>,
    /// The address as the file's own virtual address (what `addr2line -e`
    /// takes and its symbol table speaks of): `address` less the load bias.
    /// `None` for kernel and JIT code.
    pub vaddr: Option<u64>,
    /// Start address of the symbol, in the same space as `address`.
    pub sym_addr: u64,
    /// Source location of the address in the outer function, if known.
    pub location: Option<Location>,
    /// Inlined functions at the address, innermost first.
    pub inlined: Vec<InlinedFrame>,
}

impl Sym {
    /// A symbol of code that no file maps (the kernel, JIT code): absolute
    /// addresses only, no source location.
    pub(crate) fn unfiled(
        name: &str,
        module: Module,
        origin: Origin,
        address: u64,
        sym_addr: u64,
    ) -> Self {
        Sym {
            name: Arc::from(name),
            module,
            origin,
            address,
            file_offset: None,
            vaddr: None,
            sym_addr,
            location: None,
            inlined: Vec::new(),
        }
    }

    /// How far into its symbol the address lies.
    pub fn offset_in_symbol(&self) -> u64 {
        self.address.wrapping_sub(self.sym_addr)
    }
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
    pub module: Option<Module>,
    /// Where the code comes from; `None` when the address is in no mapping
    /// (or the source could not be read).
    pub origin: Option<Origin>,
    /// The address asked about (see [`Sym::address`]).
    pub address: u64,
    /// Offset of the address in the module's file, when it lies in one.
    pub file_offset: Option<u64>,
    /// The file's virtual address for it, when the file could be read.
    pub vaddr: Option<u64>,
    /// Why it could not be resolved.
    pub reason: Reason,
}

impl Unknown {
    /// The offset shown after the module name, as perf shows it: the file's
    /// virtual address when the file was read, else the offset in the file,
    /// else the address itself (kernel, unmapped).
    pub fn display_offset(&self) -> u64 {
        self.vaddr.or(self.file_offset).unwrap_or(self.address)
    }
}

/// The result for one address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Symbolized {
    /// The address was resolved to a symbol.
    Sym(Sym),
    /// The address could not be resolved; the reason says why.
    Unknown(Unknown),
}

impl Symbolized {
    /// Where the code comes from, when known.
    pub fn origin(&self) -> Option<Origin> {
        match self {
            Symbolized::Sym(sym) => Some(sym.origin),
            Symbolized::Unknown(unknown) => unknown.origin,
        }
    }

    /// The module the address is in, when known.
    pub fn module(&self) -> Option<&Module> {
        match self {
            Symbolized::Sym(sym) => Some(&sym.module),
            Symbolized::Unknown(unknown) => unknown.module.as_ref(),
        }
    }

    /// The address asked about.
    pub fn address(&self) -> u64 {
        match self {
            Symbolized::Sym(sym) => sym.address,
            Symbolized::Unknown(unknown) => unknown.address,
        }
    }
}

impl fmt::Display for Symbolized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Symbolized::Sym(sym) => {
                for inl in &sym.inlined {
                    write!(f, "{} [inlined] <- ", inl.name)?;
                }
                write!(f, "{}+{:#x}", sym.name, sym.offset_in_symbol())?;
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
                Some(m) => write!(f, "[{m}+{:#x}] ({})", u.display_offset(), u.reason),
                None => write!(f, "[unknown {:#x}] ({})", u.address, u.reason),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_perf_s_spaces() {
        let app = Module::new("/bin/app", None);
        let sym = Symbolized::Sym(Sym {
            name: Arc::from("work"),
            module: app.clone(),
            origin: Origin::File,
            address: 0x5555_0000_1234,
            file_offset: Some(0x1234),
            vaddr: Some(0x1234),
            sym_addr: 0x5555_0000_1200,
            location: Some(Location {
                file: Arc::from("app.c"),
                line: Some(7),
                column: None,
            }),
            inlined: Vec::new(),
        });
        assert_eq!(sym.to_string(), "work+0x34 at app.c:7 (/bin/app)");
        let unknown = |file_offset, vaddr| Unknown {
            module: Some(app.clone()),
            origin: Some(Origin::File),
            address: 0x5555_0000_1234,
            file_offset,
            vaddr,
            reason: Reason::NoSymbols,
        };
        // The file's virtual address where the file was read, else its offset.
        let read = Symbolized::Unknown(unknown(Some(0x1234), Some(0x2234)));
        assert_eq!(read.to_string(), "[/bin/app+0x2234] (no symbols)");
        let gone = Symbolized::Unknown(unknown(Some(0x1234), None));
        assert_eq!(gone.to_string(), "[/bin/app+0x1234] (no symbols)");
        let unmapped = Symbolized::Unknown(Unknown {
            module: None,
            origin: None,
            address: 0x10,
            file_offset: None,
            vaddr: None,
            reason: Reason::Unmapped,
        });
        assert_eq!(unmapped.to_string(), "[unknown 0x10] (unmapped)");
        assert_eq!(unmapped.origin(), None);
    }

    #[test]
    fn modules_compare_by_content_and_clone_cheaply() {
        let a = Module::new("/bin/app", Some(BuildId::new(&[1, 2])));
        let b = Module::new("/bin/app", Some(BuildId::new(&[1, 2])));
        assert_eq!(a, b);
        assert_ne!(a, Module::new("/bin/app", None));
        assert_eq!(size_of::<Module>(), size_of::<usize>());
        assert!(Arc::ptr_eq(&a.0, &a.clone().0));
    }
}
