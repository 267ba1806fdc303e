//! Where addresses come from: an ELF file, a live process or the kernel,
//! each with its own options.

use std::path::PathBuf;

/// Where addresses come from, and how to read them there.
///
/// Each variant carries its options as a struct, so a new option is not a
/// breaking change; the constructors give the defaults.
///
/// ```no_run
/// use rover_symbolize::{Process, Source, Symbolizer};
///
/// let symbolizer = Symbolizer::default();
/// symbolizer.symbolize(&Source::process(1234), &[0x5555_5555_9a20])?;
/// // The same process, its JIT code left unnamed.
/// let mut process = Process::new(1234);
/// process.perf_map = false;
/// symbolizer.symbolize(&Source::Process(process), &[0x7f00_1234_5678])?;
/// symbolizer.symbolize(&Source::elf("/usr/bin/ls"), &[0x4a20])?;
/// symbolizer.symbolize(&Source::kernel(), &[0xffff_ffff_8100_0000])?;
/// # Ok::<(), rover_symbolize::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// An ELF file; addresses are its virtual addresses, as `addr2line -e`
    /// takes them.
    Elf(Elf),
    /// A live process; addresses are absolute addresses in its memory.
    Process(Process),
    /// The running kernel; addresses are kernel addresses (`/proc/kallsyms`).
    Kernel(Kernel),
}

impl Source {
    /// The ELF file at `path`, with the default options.
    pub fn elf(path: impl Into<PathBuf>) -> Source {
        Source::Elf(Elf::new(path))
    }

    /// The live process `pid`, with the default options (perf maps and
    /// `map_files` used).
    pub fn process(pid: u32) -> Source {
        Source::Process(Process::new(pid))
    }

    /// The running kernel, with the default options.
    pub fn kernel() -> Source {
        Source::Kernel(Kernel::default())
    }
}

/// An ELF file as a [`Source`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Elf {
    /// The file.
    pub path: PathBuf,
}

impl Elf {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Elf { path: path.into() }
    }
}

impl From<Elf> for Source {
    fn from(elf: Elf) -> Source {
        Source::Elf(elf)
    }
}

/// A live process as a [`Source`], and how its code is found.
///
/// ```
/// use rover_symbolize::Process;
///
/// let mut process = Process::new(1234);
/// process.map_files = false; // no CAP_SYS_ADMIN: open files by path
/// assert!(process.perf_map);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Process {
    /// The process id, as this process's pid namespace sees it.
    pub pid: u32,
    /// Name anonymous executable memory (JIT code) from the process's perf
    /// map, `/tmp/perf-PID.map` under its root (default true). When false
    /// the perf map is not read and such addresses are
    /// [`Reason::NoPerfMap`](crate::Reason::NoPerfMap).
    pub perf_map: bool,
    /// Open mapped files through `/proc/PID/map_files/`, which reaches
    /// deleted files and other mount namespaces but needs
    /// `CAP_SYS_ADMIN` (default true). When false, files are opened by
    /// path, through `/proc/PID/root/`, so a deleted file is
    /// [`Reason::FileGone`](crate::Reason::FileGone).
    pub map_files: bool,
}

impl Process {
    /// The process `pid`, perf maps and `map_files` used.
    pub fn new(pid: u32) -> Self {
        Process {
            pid,
            perf_map: true,
            map_files: true,
        }
    }
}

impl From<Process> for Source {
    fn from(process: Process) -> Source {
        Source::Process(process)
    }
}

/// The running kernel as a [`Source`]: its image and loaded modules, named
/// from `/proc/kallsyms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Kernel {}

impl From<Kernel> for Source {
    fn from(kernel: Kernel) -> Source {
        Source::Kernel(kernel)
    }
}
