//! The tables and the walk on real stacks: fixtures built with `-O2
//! -fomit-frame-pointer` (so a frame-pointer walk cannot get past their
//! leaf) are stopped with ptrace where they spin, deep in a call chain; their
//! registers and their memory (`/proc/PID/mem`) are walked with the tables
//! of the fixture and of Debian's libc. The walk must reach `_start`, whose
//! call-frame information ends the stack, through every level in order: in
//! one fixture twelve calls deep, and in one whose signal handler spins,
//! through the handler, the signal trampoline and the interrupted frames.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use rover_symbolize::{Source, Symbolized, Symbolizer};
use rover_unwind::{Cfa, Registers, Row, UnwindTable, Walk, walk};

const DEEP: &str = r#"
#include <stdio.h>
#include <unistd.h>
volatile unsigned long sink;
__attribute__((noinline)) void spin_here(int x) { for (;;) sink += x; }
#define LEVEL(n, next) \
  __attribute__((noinline)) void level##n(int x) { \
    volatile char pad[8 * n + 24]; pad[0] = (char)x; next(x + 1); sink += pad[0]; }
LEVEL(10, spin_here) LEVEL(9, level10) LEVEL(8, level9) LEVEL(7, level8)
LEVEL(6, level7) LEVEL(5, level6) LEVEL(4, level5) LEVEL(3, level4)
LEVEL(2, level3) LEVEL(1, level2)
int main(void) { printf("ready\n"); fflush(stdout); level1(0); return 0; }
"#;

/// A SIGALRM interrupts `busy`, four calls below main, at whatever
/// instruction it is on; the handler prints the interrupted RIP from its
/// ucontext (glibc's `ucontext_t`, not the walk's offsets) and calls three
/// levels down to spin there.
const SIGNAL: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <ucontext.h>
volatile unsigned long sink;
__attribute__((noinline)) void spin_here(int x) { for (;;) sink += x; }
#define LEVEL(name, next, size) \
  __attribute__((noinline)) void name(int x) { \
    volatile char pad[size]; pad[0] = (char)x; next(x + 1); sink += pad[0]; }
LEVEL(handler3, spin_here, 40) LEVEL(handler2, handler3, 56) LEVEL(handler1, handler2, 72)
__attribute__((noinline)) void on_alarm(int sig, siginfo_t *info, void *context) {
  ucontext_t *uc = context;
  printf("interrupted %llx\n", (unsigned long long)uc->uc_mcontext.gregs[REG_RIP]);
  fflush(stdout);
  handler1(sig + (info->si_signo != sig));
  sink += sig;
}
__attribute__((noinline)) void busy(int x) {
  volatile char pad[48]; pad[0] = (char)x; for (;;) sink += pad[0]; }
LEVEL(level4, busy, 32) LEVEL(level3, level4, 48) LEVEL(level2, level3, 64)
LEVEL(level1, level2, 80)
int main(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_alarm;
  action.sa_flags = SA_SIGINFO;
  sigaction(SIGALRM, &action, NULL);
  struct itimerval timer = {{0, 0}, {0, 20000}};
  setitimer(ITIMER_REAL, &timer, NULL);
  level1(0);
  return 0;
}
"#;

struct Traced {
    child: Child,
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn build(dir: &Path, name: &str, code: &str) -> PathBuf {
    let source = dir.join(format!("{name}.c"));
    std::fs::write(&source, code).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc is needed to build the fixture");
    assert!(status.success());
    out
}

/// Starts the fixture and returns it with the first line it prints.
fn start(path: &Path) -> (Traced, String) {
    let mut traced = Traced {
        child: Command::new(path).stdout(Stdio::piped()).spawn().unwrap(),
    };
    let mut line = String::new();
    BufReader::new(traced.child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (traced, line)
}

/// Stops the child with ptrace and returns its RIP, RSP and RBP.
fn stop_and_read_registers(pid: i32) -> Registers {
    // SAFETY: plain ptrace calls on our own child; regs is written by the
    // kernel before it is read.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize),
            0,
            "ptrace attach: {}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        assert_eq!(
            libc::ptrace(libc::PTRACE_GETREGS, pid, 0usize, &mut regs as *mut _),
            0,
            "ptrace getregs: {}",
            std::io::Error::last_os_error()
        );
        Registers {
            pc: regs.rip,
            sp: regs.rsp,
            bp: Some(regs.rbp),
        }
    }
}

/// A stopped fixture: its symbols, memory and tables.
struct Stopped {
    pid: u32,
    symbolizer: Symbolizer,
    source: Source,
    regs: Registers,
    mem: File,
    tables: HashMap<String, Option<UnwindTable>>,
}

impl Stopped {
    /// Lets the fixture run until it is in `function`, and stops it there.
    fn in_function(pid: u32, function: &str) -> Stopped {
        let mut stopped = Stopped {
            pid,
            symbolizer: Symbolizer::builder().build(),
            source: Source::process(pid),
            regs: stop_and_read_registers(pid as i32),
            mem: File::open(format!("/proc/{pid}/mem")).unwrap(),
            tables: HashMap::new(),
        };
        for _ in 0..50 {
            if stopped.name_of(stopped.regs.pc).as_deref() == Some(function) {
                return stopped;
            }
            // SAFETY: detach and let it run a little before stopping it again.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, pid as i32, 0usize, 0usize) };
            std::thread::sleep(std::time::Duration::from_millis(20));
            stopped.regs = stop_and_read_registers(pid as i32);
        }
        panic!("{pid} never stopped in {function}");
    }

    /// The function at an address, its module and its file address.
    fn symbol(&self, address: u64) -> Option<(Arc<str>, String, u64)> {
        match self
            .symbolizer
            .symbolize(&self.source, &[address])
            .ok()?
            .into_iter()
            .next()?
        {
            Symbolized::Sym(sym) => {
                Some((sym.name.clone(), sym.module.name().to_owned(), sym.vaddr?))
            }
            Symbolized::Unknown(_) => None,
        }
    }

    fn name_of(&self, address: u64) -> Option<String> {
        self.symbol(address).map(|(name, _, _)| name.to_string())
    }

    fn read(&self, at: u64) -> Option<u64> {
        let mut word = [0u8; 8];
        self.mem.read_exact_at(&mut word, at).ok()?;
        Some(u64::from_le_bytes(word))
    }

    /// The row at an absolute address, from the table of the file mapped
    /// there (found in /proc/PID/maps, not by its symbols: glibc's
    /// trampoline FDE starts in the padding before `__restore_rt`, where no
    /// symbol is).
    fn row_at(&mut self, address: u64) -> Option<Row> {
        let (path, offset) = self.mapped_at(address)?;
        let table = self
            .tables
            .entry(path.clone())
            .or_insert_with(|| UnwindTable::from_path(&path).ok())
            .as_ref()?;
        table.lookup(file_vaddr(&path, offset)?).copied()
    }

    /// The file mapped at an absolute address and the offset in it.
    fn mapped_at(&self, address: u64) -> Option<(String, u64)> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).ok()?;
        maps.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (start, end) = fields.first()?.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let offset = u64::from_str_radix(fields.get(2)?, 16).ok()?;
            let path = fields.get(5)?;
            (start <= address && address < end && path.starts_with('/'))
                .then(|| (path.to_string(), address - start + offset))
        })
    }

    /// Walks the stack, and names each frame as a profile would: the leaf
    /// at its address, the others at address − 1.
    fn walk(&mut self) -> (Walk, Vec<String>) {
        let regs = self.regs;
        let mem = self.mem.try_clone().unwrap();
        let read = |at: u64| {
            let mut word = [0u8; 8];
            mem.read_exact_at(&mut word, at).ok()?;
            Some(u64::from_le_bytes(word))
        };
        let walked = walk(regs, 127, |address| self.row_at(address), read);
        let names = walked
            .frames
            .iter()
            .enumerate()
            .map(|(i, pc)| {
                let at = if i == 0 { *pc } else { pc - 1 };
                self.name_of(at).unwrap_or(format!("{pc:#x}"))
            })
            .collect();
        eprintln!(
            "pid {}: walked {} frames: {names:?}, ended {:?}",
            self.pid,
            walked.frames.len(),
            walked.stopped
        );
        (walked, names)
    }

    /// The functions a frame-pointer walk of the same stack names.
    fn frame_pointer_walk(&self) -> Vec<String> {
        let mut fp = vec![self.regs.pc];
        let mut bp = self.regs.bp.unwrap_or(0);
        while fp.len() < 127 {
            let (Some(next_bp), Some(ra)) = (self.read(bp), self.read(bp.wrapping_add(8))) else {
                break;
            };
            if ra == 0 {
                break;
            }
            fp.push(ra);
            bp = next_bp;
        }
        fp.iter()
            .skip(1)
            .filter_map(|pc| self.name_of(pc - 1))
            .collect()
    }
}

/// The virtual address of a file offset, from the file's loadable segments.
fn file_vaddr(path: &str, offset: u64) -> Option<u64> {
    use object::{Object, ObjectSegment};
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.segments().find_map(|segment| {
        let (start, size) = segment.file_range();
        (start <= offset && offset < start + size).then(|| offset - start + segment.address())
    })
}

/// The frames after `main` are libc's own (built without frame pointers,
/// walked with libc's table), down to `_start`, which ends the stack.
fn assert_complete_to_start(walked: &Walk, names: &[String], main_at: usize) {
    assert_eq!(walked.stopped, None, "the walk stopped: {names:?}");
    assert!(!walked.truncated);
    assert_eq!(names[main_at], "main", "{names:?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("_start"),
        "{names:?}"
    );
    assert!(names.len() > main_at + 1, "{names:?}");
}

#[test]
fn walks_a_frame_pointerless_stack_to_start() {
    let test = "walks_a_frame_pointerless_stack_to_start";
    if !testkit::require_tool(test, "gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), "deep", DEEP);
    let (traced, line) = start(&path);
    assert_eq!(line, "ready\n");
    let mut stopped = Stopped::in_function(traced.child.id(), "spin_here");
    let (walked, names) = stopped.walk();
    let mut expected: Vec<String> = vec!["spin_here".into()];
    expected.extend((1..=10).rev().map(|n| format!("level{n}")));
    expected.push("main".into());
    assert_eq!(names[..12], expected[..], "{names:?}");
    assert_complete_to_start(&walked, &names, 11);

    // A frame-pointer walk of the same stack gets nowhere near main.
    let fp_names = stopped.frame_pointer_walk();
    assert!(!fp_names.iter().any(|n| n == "main"), "{fp_names:?}");
}

#[test]
fn walks_through_a_signal_handler_to_start() {
    let test = "walks_through_a_signal_handler_to_start";
    if !testkit::require_tool(test, "gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), "signal", SIGNAL);
    let (traced, line) = start(&path);
    let interrupted = line
        .strip_prefix("interrupted ")
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("the fixture printed {line:?}"));
    let mut stopped = Stopped::in_function(traced.child.id(), "spin_here");
    let (walked, names) = stopped.walk();
    assert!(names.len() > 12, "{names:?}");
    let handler = ["spin_here", "handler3", "handler2", "handler1", "on_alarm"];
    assert_eq!(names[..5], handler[..], "{names:?}");
    // The handler returns to __restore_rt's first byte. At that address − 1
    // is the FDE's first byte, in the padding before the symbol (whose size
    // is 0): the table has the signal row there, the symbol table nothing.
    let trampoline = walked.frames[5];
    assert_eq!(stopped.name_of(trampoline).as_deref(), Some("__restore_rt"));
    assert_eq!(
        stopped.row_at(trampoline - 1).map(|row| row.cfa()),
        Some(Cfa::Signal)
    );
    let interrupted_frames = ["busy", "level4", "level3", "level2", "level1", "main"];
    assert_eq!(names[6..12], interrupted_frames[..], "{names:?}");
    assert_complete_to_start(&walked, &names, 11);
    // The interrupted frame is recorded one past the instruction the
    // signal interrupted, so that the "− 1" lands exactly on it.
    assert_eq!(walked.frames[6] - 1, interrupted, "{:#x?}", walked.frames);

    let fp_names = stopped.frame_pointer_walk();
    assert!(!fp_names.iter().any(|n| n == "main"), "{fp_names:?}");
}
