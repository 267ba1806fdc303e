//! One row of a compact unwind table: 16 bytes, laid out as the kernel side
//! reads it.

use std::fmt;

/// How to find the canonical frame address (CFA, the caller's stack
/// pointer) at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cfa {
    /// No call-frame information covers the address (a gap between
    /// functions, or code the binary gives no table for).
    None,
    /// CFA = RSP + offset.
    Rsp(i32),
    /// CFA = RBP + offset.
    Rbp(i32),
    /// The PLT stub expression: CFA = RSP + `rsp_offset`, plus 8 more once
    /// the low 4 bits of the program counter are `threshold` or more (the
    /// stub has pushed one word by then). Linkers emit it for `.plt` as
    /// `DW_OP_breg7 N; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litK;
    /// DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`.
    Plt {
        /// N, the offset from RSP before the push.
        rsp_offset: i32,
        /// K, the position in the 16-byte stub from which the push is done.
        threshold: u8,
    },
    /// The return address is undefined here (`_start`, thread entry
    /// points): this frame is the outermost, and the stack is complete.
    EndOfStack,
    /// A signal trampoline (glibc's `__restore_rt`, whose CIE has the `S`
    /// augmentation): the handler's `ret` has popped the frame's
    /// `pretcode`, so RSP points at the kernel's `struct ucontext`, and
    /// the interrupted registers are in its `uc_mcontext` (`struct
    /// sigcontext`), at RSP + 40 (after `uc_flags` 8, `uc_link` 8,
    /// `uc_stack` 24), as 8-byte slots in the kernel's order (r8..r15 in
    /// slots 0..7, rdi 8, rsi 9, rbp 10, rbx 11, rdx 12, rax 13, rcx 14,
    /// rsp 15, rip 16). The next frame's registers are:
    ///
    /// - RBP = \*(RSP + 40 + 80), RSP = \*(RSP + 40 + 120), RIP =
    ///   \*(RSP + 40 + 128);
    /// - RIP is the interrupted instruction, not a return address: that
    ///   frame's row is looked up at RIP itself, not RIP − 1, and the walk
    ///   records it as RIP + 1, so that the "− 1" a symbolizer applies to
    ///   every frame but the leaf lands on the interrupted instruction;
    /// - RSP need not be above the ucontext (a handler may run on an
    ///   alternate signal stack anywhere in memory), so this step is not
    ///   held to the walk's rule that RSP grows; the cap on frames bounds
    ///   the walk.
    /// - a slot that cannot be read stops the walk, unreadable at that
    ///   slot (RBP's is read first, then RSP's, then RIP's).
    ///
    /// A signal row keeps no offsets and no RBP rule: its other fields
    /// are zero.
    Signal,
    /// A rule the unwinder does not follow (another base register, another
    /// expression, an offset out of range): the walk stops here, marked.
    Unsupported,
}

/// Where the caller's frame pointer (RBP) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rbp {
    /// Not saved by this frame: the caller's RBP is the current one.
    Unchanged,
    /// Saved at CFA + offset.
    AtCfa(i16),
    /// Recovered by a rule the unwinder does not follow: the caller's RBP is
    /// unknown (a later frame whose CFA is RBP-based cannot be unwound).
    Unsupported,
}

/// One row of an [`UnwindTable`](crate::UnwindTable): the rules that hold
/// from [`pc`](Row::pc) up to the next row's.
///
/// The layout is fixed, 16 bytes, `#[repr(C)]`, for the kernel side:
///
/// | bytes | field | meaning |
/// |---|---|---|
/// | 0..8 | `pc` | first address covered (the file's virtual address) |
/// | 8..12 | `cfa_offset` | i32: the offset of [`Cfa::Rsp`]/[`Cfa::Rbp`], `rsp_offset` of [`Cfa::Plt`] |
/// | 12..14 | `rbp_offset` | i16: the offset of [`Rbp::AtCfa`]; `threshold` of [`Cfa::Plt`] |
/// | 14 | `cfa_kind` | 0 none, 1 RSP, 2 RBP, 3 PLT, 4 end of stack, 5 unsupported, 6 signal trampoline |
/// | 15 | `rbp_kind` | 0 unchanged, 1 at CFA + offset, 2 unsupported |
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Row {
    pc: u64,
    cfa_offset: i32,
    rbp_offset: i16,
    cfa_kind: u8,
    rbp_kind: u8,
}

const CFA_NONE: u8 = 0;
const CFA_RSP: u8 = 1;
const CFA_RBP: u8 = 2;
const CFA_PLT: u8 = 3;
const CFA_END: u8 = 4;
const CFA_UNSUPPORTED: u8 = 5;
const CFA_SIGNAL: u8 = 6;

/// Where a [`Cfa::Signal`] frame keeps the interrupted registers, as offsets
/// from its RSP: `uc_mcontext` starts 40 bytes into the `ucontext`, and RBP,
/// RSP and RIP are its slots 10, 15 and 16.
const UCONTEXT_MCONTEXT: u64 = 40;
pub(crate) const SIGNAL_RBP_AT: u64 = UCONTEXT_MCONTEXT + 8 * 10;
pub(crate) const SIGNAL_RSP_AT: u64 = UCONTEXT_MCONTEXT + 8 * 15;
pub(crate) const SIGNAL_RIP_AT: u64 = UCONTEXT_MCONTEXT + 8 * 16;
const RBP_UNCHANGED: u8 = 0;
const RBP_AT_CFA: u8 = 1;
const RBP_UNSUPPORTED: u8 = 2;

impl Row {
    /// The size of one row in bytes.
    pub const SIZE: usize = std::mem::size_of::<Row>();

    /// A row with these rules from `pc` on. A PLT row keeps no RBP rule
    /// (the stubs do not touch RBP): its `rbp` is taken as unchanged; nor
    /// does a signal row (the ucontext holds RBP): its `rbp` is ignored.
    pub fn new(pc: u64, cfa: Cfa, rbp: Rbp) -> Self {
        let rbp = if cfa == Cfa::Signal {
            Rbp::Unchanged
        } else {
            rbp
        };
        let (cfa_kind, cfa_offset, plt_threshold) = match cfa {
            Cfa::None => (CFA_NONE, 0, None),
            Cfa::Rsp(offset) => (CFA_RSP, offset, None),
            Cfa::Rbp(offset) => (CFA_RBP, offset, None),
            Cfa::Plt {
                rsp_offset,
                threshold,
            } => (CFA_PLT, rsp_offset, Some(threshold)),
            Cfa::EndOfStack => (CFA_END, 0, None),
            Cfa::Unsupported => (CFA_UNSUPPORTED, 0, None),
            Cfa::Signal => (CFA_SIGNAL, 0, None),
        };
        let (rbp_kind, rbp_offset) = match (plt_threshold, rbp) {
            (Some(threshold), _) => (RBP_UNCHANGED, i16::from(threshold)),
            (None, Rbp::Unchanged) => (RBP_UNCHANGED, 0),
            (None, Rbp::AtCfa(offset)) => (RBP_AT_CFA, offset),
            (None, Rbp::Unsupported) => (RBP_UNSUPPORTED, 0),
        };
        Row {
            pc,
            cfa_offset,
            rbp_offset,
            cfa_kind,
            rbp_kind,
        }
    }

    /// The first address the row covers.
    pub fn pc(&self) -> u64 {
        self.pc
    }

    /// The CFA rule.
    pub fn cfa(&self) -> Cfa {
        match self.cfa_kind {
            CFA_NONE => Cfa::None,
            CFA_RSP => Cfa::Rsp(self.cfa_offset),
            CFA_RBP => Cfa::Rbp(self.cfa_offset),
            CFA_PLT => Cfa::Plt {
                rsp_offset: self.cfa_offset,
                threshold: u8::try_from(self.rbp_offset).unwrap_or(u8::MAX),
            },
            CFA_END => Cfa::EndOfStack,
            CFA_SIGNAL => Cfa::Signal,
            _ => Cfa::Unsupported,
        }
    }

    /// The rule for the caller's RBP: [`Rbp::Unchanged`] for a PLT or a
    /// signal row, which keep none.
    pub fn rbp(&self) -> Rbp {
        match (self.cfa_kind, self.rbp_kind) {
            (CFA_PLT | CFA_SIGNAL, _) | (_, RBP_UNCHANGED) => Rbp::Unchanged,
            (_, RBP_AT_CFA) => Rbp::AtCfa(self.rbp_offset),
            _ => Rbp::Unsupported,
        }
    }

    /// Whether `other` has the same rules (whatever its `pc`).
    pub fn same_rules(&self, other: &Row) -> bool {
        (
            self.cfa_offset,
            self.rbp_offset,
            self.cfa_kind,
            self.rbp_kind,
        ) == (
            other.cfa_offset,
            other.rbp_offset,
            other.cfa_kind,
            other.rbp_kind,
        )
    }

    /// The row's 16 bytes in the layout above, little-endian.
    pub fn to_bytes(&self) -> [u8; Row::SIZE] {
        let mut bytes = [0u8; Row::SIZE];
        bytes[0..8].copy_from_slice(&self.pc.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.cfa_offset.to_le_bytes());
        bytes[12..14].copy_from_slice(&self.rbp_offset.to_le_bytes());
        bytes[14] = self.cfa_kind;
        bytes[15] = self.rbp_kind;
        bytes
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}: {:?} {:?}", self.pc, self.cfa(), self.rbp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bytes_and_round_trips() {
        assert_eq!(Row::SIZE, 16);
        // The kinds are the ABI: rover-ebpf's rover.h has the same values.
        let cases = [
            (Cfa::None, Rbp::Unchanged, 0),
            (Cfa::Rsp(8), Rbp::Unchanged, 1),
            (Cfa::Rsp(65544), Rbp::AtCfa(-16), 1),
            (Cfa::Rbp(16), Rbp::AtCfa(-16), 2),
            (
                Cfa::Plt {
                    rsp_offset: 8,
                    threshold: 11,
                },
                Rbp::Unchanged,
                3,
            ),
            (Cfa::EndOfStack, Rbp::Unchanged, 4),
            (Cfa::Unsupported, Rbp::Unsupported, 5),
            (Cfa::Signal, Rbp::Unchanged, 6),
        ];
        for (cfa, rbp, kind) in cases {
            let row = Row::new(0x1234, cfa, rbp);
            assert_eq!((row.pc(), row.cfa(), row.rbp()), (0x1234, cfa, rbp));
            let bytes = row.to_bytes();
            assert_eq!(u64::from_le_bytes(bytes[0..8].try_into().unwrap()), 0x1234);
            assert_eq!(bytes[14], kind, "{cfa:?}");
        }
        let plt = Row::new(
            0,
            Cfa::Plt {
                rsp_offset: 8,
                threshold: 10,
            },
            Rbp::AtCfa(-16),
        );
        assert_eq!(plt.rbp(), Rbp::Unchanged, "a PLT row keeps no RBP rule");
    }

    #[test]
    fn a_signal_row_is_kind_six_and_nothing_else() {
        // Kind 6 is ROVER_CFA_SIGNAL in rover-ebpf's rover.h.
        let row = Row::new(0x3c04f, Cfa::Signal, Rbp::AtCfa(-16));
        let bytes = row.to_bytes();
        assert_eq!(bytes[14], 6);
        assert_eq!(&bytes[8..14], &[0; 6], "no offsets");
        assert_eq!(bytes[15], 0, "no RBP rule");
        assert_eq!((row.cfa(), row.rbp()), (Cfa::Signal, Rbp::Unchanged));
        assert!(row.same_rules(&Row::new(0x10, Cfa::Signal, Rbp::Unsupported)));
        assert!(!row.same_rules(&Row::new(0x10, Cfa::Unsupported, Rbp::Unchanged)));
    }
}
