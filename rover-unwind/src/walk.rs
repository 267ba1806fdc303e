//! One step of a stack walk with a table row: the algorithm the in-kernel
//! unwinder runs, here in plain Rust so that it can be checked against real
//! stacks from user space.

use crate::row::{Cfa, Rbp, Row};

/// The registers a walk follows from frame to frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    /// The program counter (RIP).
    pub pc: u64,
    /// The stack pointer (RSP).
    pub sp: u64,
    /// The frame pointer (RBP), when known: a frame whose rule for it is
    /// one the unwinder does not follow leaves it unknown for its caller.
    pub bp: Option<u64>,
}

/// Why a walk stopped before the end of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No row covers the program counter (code without call-frame
    /// information: JIT code, anonymous memory, a stripped table).
    NoRow,
    /// The row's CFA rule is one the unwinder does not follow.
    UnsupportedRule,
    /// The CFA is RBP-based, and RBP is unknown here.
    UnknownFramePointer,
    /// Memory at this address could not be read.
    Unreadable(u64),
    /// The walk did not move up the stack (a corrupt stack or table).
    NoProgress,
}

/// The outcome of one [`step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The caller's registers.
    Caller(Registers),
    /// This frame is the outermost: the stack is complete.
    End,
    /// The walk cannot go on.
    Stop(StopReason),
}

/// Unwinds one frame: from `regs` and the row that holds at its program
/// counter, the caller's registers. `read` reads 8 bytes of the stack.
///
/// The row must be looked up at `pc` for the innermost frame and at
/// `pc - 1` for the others (a return address may point just past its
/// function's end); [`walk`] does so.
pub fn step(row: Option<&Row>, regs: Registers, mut read: impl FnMut(u64) -> Option<u64>) -> Step {
    let Some(row) = row else {
        return Step::Stop(StopReason::NoRow);
    };
    let cfa = match row.cfa() {
        Cfa::None => return Step::Stop(StopReason::NoRow),
        Cfa::EndOfStack => return Step::End,
        Cfa::Unsupported => return Step::Stop(StopReason::UnsupportedRule),
        Cfa::Rsp(offset) => regs.sp.wrapping_add_signed(i64::from(offset)),
        Cfa::Rbp(offset) => match regs.bp {
            Some(bp) => bp.wrapping_add_signed(i64::from(offset)),
            None => return Step::Stop(StopReason::UnknownFramePointer),
        },
        Cfa::Plt {
            rsp_offset,
            threshold,
        } => {
            let pushed = if regs.pc & 15 >= u64::from(threshold) {
                8
            } else {
                0
            };
            regs.sp
                .wrapping_add_signed(i64::from(rsp_offset))
                .wrapping_add(pushed)
        }
    };
    let at = cfa.wrapping_sub(8);
    let Some(pc) = read(at) else {
        return Step::Stop(StopReason::Unreadable(at));
    };
    let bp = match row.rbp() {
        Rbp::Unchanged => regs.bp,
        Rbp::AtCfa(offset) => {
            let at = cfa.wrapping_add_signed(i64::from(offset));
            match read(at) {
                Some(bp) => Some(bp),
                None => return Step::Stop(StopReason::Unreadable(at)),
            }
        }
        Rbp::Unsupported => None,
    };
    if cfa <= regs.sp {
        return Step::Stop(StopReason::NoProgress);
    }
    // Some runtimes end the chain with a zero return address.
    if pc == 0 {
        return Step::End;
    }
    Step::Caller(Registers { pc, sp: cfa, bp })
}

/// A walked stack: the program counters from the innermost frame out, and
/// how the walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The frames' program counters, innermost first (the caller frames'
    /// are return addresses).
    pub frames: Vec<u64>,
    /// Why the walk stopped after the last frame in `frames`; `None` when
    /// the stack is complete or was cut at `max_frames` (see
    /// [`Walk::truncated`]).
    pub stopped: Option<StopReason>,
    /// Whether the walk reached `max_frames` before the end.
    pub truncated: bool,
}

/// Walks a stack from `regs`, at most `max_frames` frames. `row_at` gives
/// the row that holds at an absolute address of the process (the caller
/// maps it to its file's table); `read` reads 8 bytes of the stack.
pub fn walk(
    regs: Registers,
    max_frames: usize,
    mut row_at: impl FnMut(u64) -> Option<Row>,
    mut read: impl FnMut(u64) -> Option<u64>,
) -> Walk {
    let mut frames = vec![regs.pc];
    let mut regs = regs;
    loop {
        if frames.len() >= max_frames {
            return Walk {
                frames,
                stopped: None,
                truncated: true,
            };
        }
        // Caller frames are looked up at the call instruction, not after it.
        let lookup = if frames.len() == 1 {
            regs.pc
        } else {
            regs.pc.wrapping_sub(1)
        };
        let row = row_at(lookup);
        match step(row.as_ref(), regs, &mut read) {
            Step::Caller(caller) => {
                frames.push(caller.pc);
                regs = caller;
            }
            Step::End => {
                return Walk {
                    frames,
                    stopped: None,
                    truncated: false,
                };
            }
            Step::Stop(reason) => {
                return Walk {
                    frames,
                    stopped: Some(reason),
                    truncated: false,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A made-up stack: leaf (CFA = RSP + 16, RBP untouched) called by a
    /// frame-pointer function (CFA = RBP + 16, RBP at CFA - 16), called by
    /// the outermost frame.
    #[test]
    fn steps_through_rsp_and_rbp_frames_to_the_end() {
        let rows = [
            (0x1000u64, Row::new(0x1000, Cfa::Rsp(16), Rbp::Unchanged)),
            (0x2000, Row::new(0x2000, Cfa::Rbp(16), Rbp::AtCfa(-16))),
            (0x3000, Row::new(0x3000, Cfa::EndOfStack, Rbp::Unchanged)),
        ];
        let row_at = |pc: u64| {
            rows.iter()
                .rev()
                .find(|(start, _)| *start <= pc && pc < start + 0x1000)
                .map(|(_, row)| *row)
        };
        let mut memory = HashMap::new();
        // Leaf: sp = 0x7000, CFA = 0x7010, return address at 0x7008.
        memory.insert(0x7008u64, 0x2040u64);
        // Middle: bp = 0x7020, CFA = 0x7030; ra at 0x7028, saved bp at 0x7020.
        memory.insert(0x7028, 0x3010);
        memory.insert(0x7020, 0x0);
        let regs = Registers {
            pc: 0x1010,
            sp: 0x7000,
            bp: Some(0x7020),
        };
        let walked = walk(regs, 127, row_at, |at| memory.get(&at).copied());
        assert_eq!(walked.frames, vec![0x1010, 0x2040, 0x3010]);
        assert_eq!(walked.stopped, None);
        assert!(!walked.truncated);
        // Memory that cannot be read stops the walk there, marked.
        let walked = walk(regs, 127, row_at, |_| None);
        assert_eq!(walked.stopped, Some(StopReason::Unreadable(0x7008)));
        // Code without a row.
        let walked = walk(Registers { pc: 0x9000, ..regs }, 127, row_at, |_| None);
        assert_eq!(walked.stopped, Some(StopReason::NoRow));
        // Registers from a corrupt stack, at the top of the address space:
        // no overflow, the walk stops.
        let top = Registers {
            pc: 0x1010,
            sp: u64::MAX - 4,
            bp: Some(u64::MAX),
        };
        let walked = walk(top, 127, row_at, |_| Some(u64::MAX));
        assert!(walked.stopped.is_some(), "{walked:?}");
        // A cap on frames.
        let walked = walk(regs, 2, row_at, |at| memory.get(&at).copied());
        assert!(walked.truncated);
        assert_eq!(walked.frames.len(), 2);
    }

    #[test]
    fn the_plt_rule_counts_the_push() {
        let row = Row::new(
            0x1020,
            Cfa::Plt {
                rsp_offset: 8,
                threshold: 11,
            },
            Rbp::Unchanged,
        );
        let before = Registers {
            pc: 0x1026,
            sp: 0x7000,
            bp: None,
        };
        let after = Registers {
            pc: 0x102b,
            ..before
        };
        let read = |at: u64| Some(at);
        // A corrupt stack pointer at the top of the address space: the
        // CFA wraps instead of overflowing, and the walk stops there.
        let top = Registers {
            sp: u64::MAX - 12,
            ..after
        };
        assert_eq!(
            step(Some(&row), top, read),
            Step::Stop(StopReason::NoProgress)
        );
        assert_eq!(
            step(Some(&row), before, read),
            Step::Caller(Registers {
                pc: 0x7000,
                sp: 0x7008,
                bp: None
            })
        );
        assert_eq!(
            step(Some(&row), after, read),
            Step::Caller(Registers {
                pc: 0x7008,
                sp: 0x7010,
                bp: None
            })
        );
    }
}
