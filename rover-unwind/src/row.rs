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
/// | 14 | `cfa_kind` | 0 none, 1 RSP, 2 RBP, 3 PLT, 4 end of stack, 5 unsupported |
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
const RBP_UNCHANGED: u8 = 0;
const RBP_AT_CFA: u8 = 1;
const RBP_UNSUPPORTED: u8 = 2;

impl Row {
    /// The size of one row in bytes.
    pub const SIZE: usize = std::mem::size_of::<Row>();

    /// A row with these rules from `pc` on. A PLT row keeps no RBP rule
    /// (the stubs do not touch RBP): its `rbp` is taken as unchanged.
    pub fn new(pc: u64, cfa: Cfa, rbp: Rbp) -> Self {
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
            _ => Cfa::Unsupported,
        }
    }

    /// The rule for the caller's RBP.
    pub fn rbp(&self) -> Rbp {
        match (self.cfa_kind, self.rbp_kind) {
            (CFA_PLT, _) | (_, RBP_UNCHANGED) => Rbp::Unchanged,
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
        let cases = [
            (Cfa::None, Rbp::Unchanged),
            (Cfa::Rsp(8), Rbp::Unchanged),
            (Cfa::Rsp(65544), Rbp::AtCfa(-16)),
            (Cfa::Rbp(16), Rbp::AtCfa(-16)),
            (
                Cfa::Plt {
                    rsp_offset: 8,
                    threshold: 11,
                },
                Rbp::Unchanged,
            ),
            (Cfa::EndOfStack, Rbp::Unchanged),
            (Cfa::Unsupported, Rbp::Unsupported),
        ];
        for (cfa, rbp) in cases {
            let row = Row::new(0x1234, cfa, rbp);
            assert_eq!((row.pc(), row.cfa(), row.rbp()), (0x1234, cfa, rbp));
            let bytes = row.to_bytes();
            assert_eq!(u64::from_le_bytes(bytes[0..8].try_into().unwrap()), 0x1234);
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
}
