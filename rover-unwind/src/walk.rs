//! One step of a stack walk with a table row: the algorithm the in-kernel
//! unwinder runs, here in plain Rust so that it can be checked against real
//! stacks from user space.

use crate::row::{Cfa, Rbp, Row, SIGNAL_RBP_AT, SIGNAL_RIP_AT, SIGNAL_RSP_AT};

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
    /// The frame is a signal trampoline ([`Cfa::Signal`]): the registers of
    /// the code the signal interrupted, whose `pc` is the interrupted
    /// instruction itself, not a return address.
    Signal(Registers),
    /// This frame is the outermost: the stack is complete.
    End,
    /// The walk cannot go on.
    Stop(StopReason),
}

/// Unwinds one frame: from `regs` and the row that holds at its program
/// counter, the caller's registers. `read` reads 8 bytes of the stack.
///
/// The row must be looked up at `pc` for the innermost frame and for a
/// frame a signal interrupted (the registers of a [`Step::Signal`]), and at
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
        Cfa::Signal => return signal_frame(regs, read),
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

/// The registers a signal interrupted, from the ucontext at RSP (see
/// [`Cfa::Signal`]). RSP is not required to grow: the handler may run on an
/// alternate signal stack, anywhere.
fn signal_frame(regs: Registers, mut read: impl FnMut(u64) -> Option<u64>) -> Step {
    let mut slot = |offset: u64| {
        let at = regs.sp.wrapping_add(offset);
        read(at).ok_or(StopReason::Unreadable(at))
    };
    let interrupted = (|| {
        Ok(Registers {
            bp: Some(slot(SIGNAL_RBP_AT)?),
            sp: slot(SIGNAL_RSP_AT)?,
            pc: slot(SIGNAL_RIP_AT)?,
        })
    })();
    match interrupted {
        Ok(regs) => Step::Signal(regs),
        Err(reason) => Step::Stop(reason),
    }
}

/// A walked stack: the program counters from the innermost frame out, and
/// how the walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The frames' program counters, innermost first. The caller frames'
    /// are return addresses, except that of a frame a signal interrupted,
    /// which is recorded as the interrupted instruction + 1: so every frame
    /// but the first is symbolized at its address − 1, and lands inside
    /// its call or on its interrupted instruction.
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
    // Whether `regs.pc` is where the frame is (the innermost frame, or one
    // a signal interrupted) rather than a return address.
    let mut exact = true;
    loop {
        if frames.len() >= max_frames {
            return Walk {
                frames,
                stopped: None,
                truncated: true,
            };
        }
        // Caller frames are looked up at the call instruction, not after it.
        let lookup = if exact {
            regs.pc
        } else {
            regs.pc.wrapping_sub(1)
        };
        let row = row_at(lookup);
        match step(row.as_ref(), regs, &mut read) {
            Step::Caller(caller) => {
                frames.push(caller.pc);
                regs = caller;
                exact = false;
            }
            Step::Signal(interrupted) => {
                frames.push(interrupted.pc.wrapping_add(1));
                regs = interrupted;
                exact = true;
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

    /// A handler's leaf, on an alternate signal stack above the
    /// interrupted one, returns into the trampoline; the ucontext gives the
    /// interrupted frame, whose pc sits exactly on a row boundary.
    #[test]
    fn a_signal_frame_gives_the_interrupted_registers() {
        let rows = [
            Row::new(0x1000, Cfa::Rsp(8), Rbp::Unchanged),
            Row::new(0x1100, Cfa::None, Rbp::Unchanged),
            // At pc − 1 the interrupted frame would get the wrong CFA.
            Row::new(0x2000, Cfa::Rsp(16), Rbp::Unchanged),
            Row::new(0x2010, Cfa::Rsp(24), Rbp::Unchanged),
            Row::new(0x2100, Cfa::None, Rbp::Unchanged),
            Row::new(0x3000, Cfa::EndOfStack, Rbp::Unchanged),
            Row::new(0x3100, Cfa::None, Rbp::Unchanged),
            // glibc's FDE starts one byte before __restore_rt.
            Row::new(0x5000, Cfa::Signal, Rbp::Unchanged),
            Row::new(0x500b, Cfa::None, Rbp::Unchanged),
        ];
        let row_at = |pc: u64| {
            let after = rows.partition_point(|row| row.pc() <= pc);
            let row = rows[after.checked_sub(1)?];
            (row.cfa() != Cfa::None).then_some(row)
        };
        let mut memory = HashMap::new();
        // The leaf's return address: __restore_rt, one past the FDE start.
        memory.insert(0x9000u64, 0x5001u64);
        // The ucontext at 0x9008: RBP, RSP, RIP in uc_mcontext's slots.
        memory.insert(0x9008 + 40 + 8 * 10, 0x7777);
        memory.insert(0x9008 + 40 + 8 * 15, 0x7000);
        memory.insert(0x9008 + 40 + 8 * 16, 0x2010);
        memory.insert(0x7008, 0x4444);
        memory.insert(0x7010, 0x3010);
        let regs = Registers {
            pc: 0x1010,
            sp: 0x9000,
            bp: None,
        };
        let read = |at: u64| memory.get(&at).copied();
        let walked = walk(regs, 127, row_at, read);
        assert_eq!(walked.frames, vec![0x1010, 0x5001, 0x2011, 0x3010]);
        assert_eq!(walked.stopped, None);
        let trampoline = Registers {
            pc: 0x5001,
            sp: 0x9008,
            bp: None,
        };
        assert_eq!(
            step(row_at(0x5000).as_ref(), trampoline, read),
            Step::Signal(Registers {
                pc: 0x2010,
                sp: 0x7000,
                bp: Some(0x7777),
            })
        );
        // A ucontext that cannot be read stops the walk at its first slot.
        let walked = walk(regs, 127, row_at, |at| (at == 0x9000).then_some(0x5001));
        assert_eq!(walked.frames, vec![0x1010, 0x5001]);
        assert_eq!(
            walked.stopped,
            Some(StopReason::Unreadable(0x9008 + 40 + 8 * 10))
        );
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
