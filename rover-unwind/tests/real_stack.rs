//! The tables and the walk on a real stack: a fixture built with `-O2
//! -fomit-frame-pointer` (so a frame-pointer walk cannot get past its
//! leaf), twelve calls deep, is stopped with ptrace where it spins; its
//! registers and its memory (`/proc/PID/mem`) are walked with the tables of
//! the fixture and of Debian's libc. The walk must reach `_start`, whose
//! call-frame information ends the stack, through every level in order.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use rover_symbolize::{Source, Symbolized, Symbolizer};
use rover_unwind::{Registers, Row, UnwindTable, walk};

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

struct Traced {
    child: Child,
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn build(dir: &Path) -> PathBuf {
    let source = dir.join("deep.c");
    std::fs::write(&source, DEEP).unwrap();
    let out = dir.join("deep");
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc is needed to build the fixture");
    assert!(status.success());
    out
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

#[test]
fn walks_a_frame_pointerless_stack_to_start() {
    let test = "walks_a_frame_pointerless_stack_to_start";
    if !testkit::require_tool(test, "gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let mut traced = Traced {
        child: Command::new(&path).stdout(Stdio::piped()).spawn().unwrap(),
    };
    let mut line = String::new();
    BufReader::new(traced.child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let pid = traced.child.id();
    // Until it is in spin_here: stop it and look; let it go on otherwise.
    let symbolizer = Symbolizer::builder().build();
    let source = Source::process(pid);
    let name_of = |address: u64| -> Option<(Arc<str>, String, u64)> {
        match symbolizer
            .symbolize(&source, &[address])
            .ok()?
            .into_iter()
            .next()?
        {
            Symbolized::Sym(sym) => {
                Some((sym.name.clone(), sym.module.name().to_owned(), sym.vaddr?))
            }
            Symbolized::Unknown(_) => None,
        }
    };
    let mut regs = stop_and_read_registers(pid as i32);
    for _ in 0..50 {
        if name_of(regs.pc).is_some_and(|(name, _, _)| &*name == "spin_here") {
            break;
        }
        // SAFETY: detach and let it run a little before stopping it again.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, pid as i32, 0usize, 0usize) };
        std::thread::sleep(std::time::Duration::from_millis(20));
        regs = stop_and_read_registers(pid as i32);
    }

    let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let read = |at: u64| {
        let mut word = [0u8; 8];
        mem.read_exact_at(&mut word, at).ok()?;
        Some(u64::from_le_bytes(word))
    };
    let mut tables: HashMap<String, Option<UnwindTable>> = HashMap::new();
    let mut row_at = |address: u64| -> Option<Row> {
        let (_, module, vaddr) = name_of(address)?;
        let table = tables
            .entry(module.clone())
            .or_insert_with(|| UnwindTable::from_path(&module).ok())
            .as_ref()?;
        table.lookup(vaddr).copied()
    };
    let walked = walk(regs, 127, &mut row_at, read);

    let names: Vec<String> = walked
        .frames
        .iter()
        .enumerate()
        .map(|(i, pc)| {
            let at = if i == 0 { *pc } else { pc - 1 };
            name_of(at).map_or(format!("{pc:#x}"), |(name, _, _)| name.to_string())
        })
        .collect();
    eprintln!(
        "walked {} frames: {names:?}, ended {:?}",
        names.len(),
        walked.stopped
    );
    assert_eq!(walked.stopped, None, "the walk stopped: {names:?}");
    assert!(!walked.truncated);
    let mut expected: Vec<String> = vec!["spin_here".into()];
    expected.extend((1..=10).rev().map(|n| format!("level{n}")));
    expected.push("main".into());
    assert_eq!(names[..12], expected[..], "{names:?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("_start"),
        "{names:?}"
    );
    // Between main and _start, libc's own frames (built without frame
    // pointers) were walked with libc's table.
    assert!(names.len() > 13, "{names:?}");

    // A frame-pointer walk of the same stack gets nowhere near main.
    let mut fp = vec![regs.pc];
    let mut bp = regs.bp.unwrap_or(0);
    while fp.len() < 127 {
        let (Some(next_bp), Some(ra)) = (read(bp), read(bp.wrapping_add(8))) else {
            break;
        };
        if ra == 0 {
            break;
        }
        fp.push(ra);
        bp = next_bp;
    }
    let fp_names: Vec<String> = fp
        .iter()
        .skip(1)
        .filter_map(|pc| name_of(pc - 1).map(|(name, _, _)| name.to_string()))
        .collect();
    assert!(!fp_names.iter().any(|n| n == "main"), "{fp_names:?}");
}
