//! Building a table: every FDE of `.eh_frame` (or `.debug_frame`) walked
//! with gimli, its rows reduced to the rules the unwinder follows, sorted,
//! gaps marked and neighbours with the same rules merged.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, LittleEndian, Reader, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use object::{Architecture, Object, ObjectSection};

use crate::row::{Cfa, Rbp, Row, SIGNAL_RBP_AT, SIGNAL_RIP_AT, SIGNAL_RSP_AT};

type Bytes<'a> = gimli::EndianSlice<'a, LittleEndian>;

/// Why a table could not be built. A damaged entry in an otherwise readable
/// section is not an error: it is left out and listed in
/// [`UnwindTable::skipped`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Not an ELF file object can read.
    #[error("not a readable ELF file: {0}")]
    Object(#[from] object::Error),
    /// An ELF file for another architecture: the tables are x86-64's.
    #[error("unwind tables are built for x86-64 only, not {0:?}")]
    Architecture(Architecture),
    /// Neither `.eh_frame` nor `.debug_frame` has any entry.
    #[error("the file has no call-frame information (.eh_frame or .debug_frame)")]
    NoUnwindInfo,
    /// The section could not be read at all.
    #[error("the {section} section cannot be read: {source}")]
    Parse {
        /// `.eh_frame` or `.debug_frame`.
        section: &'static str,
        /// What gimli found at its start.
        source: gimli::Error,
    },
}

/// Which section a table was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindSource {
    /// `.eh_frame`, which every binary that may be unwound through (for C++
    /// exceptions, for backtraces) carries.
    EhFrame,
    /// `.debug_frame`, for binaries that have only that.
    DebugFrame,
    /// Both: `.eh_frame` where it describes an address, `.debug_frame`
    /// elsewhere (code built without unwind tables, beside start files that
    /// have them).
    Both,
}

/// An entry of a section that was left out of the table, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `.eh_frame` or `.debug_frame`.
    pub section: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

/// The compact unwind table of one executable file: [`Row`]s sorted by
/// address, each holding until the next.
#[derive(Debug, Clone)]
pub struct UnwindTable {
    rows: Vec<Row>,
    source: UnwindSource,
    skipped: Vec<Skipped>,
}

impl UnwindTable {
    /// A table of these rows, for unit tests.
    #[cfg(test)]
    pub(crate) fn from_rows_for_tests(rows: Vec<Row>) -> Self {
        UnwindTable {
            rows,
            source: UnwindSource::EhFrame,
            skipped: Vec::new(),
        }
    }

    /// Builds the table of the ELF file at `path`.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and dropped before returning; a file
        // truncated meanwhile makes reads fault, as with any mmap reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_elf(&map)
    }

    /// Builds the table of the ELF file in `data`.
    pub fn from_elf(data: &[u8]) -> Result<Self, Error> {
        let file = object::File::parse(data)?;
        if file.architecture() != Architecture::X86_64 {
            return Err(Error::Architecture(file.architecture()));
        }
        let address = |name: &str| file.section_by_name(name).map(|s| s.address());
        let mut skipped = Vec::new();
        let mut eh_spans = Vec::new();
        if let Some(section) = file.section_by_name(".eh_frame") {
            let data = section.uncompressed_data()?;
            let mut bases = BaseAddresses::default().set_eh_frame(section.address());
            if let Some(text) = address(".text") {
                bases = bases.set_text(text);
            }
            if let Some(got) = address(".got") {
                bases = bases.set_got(got);
            }
            if let Some(hdr) = address(".eh_frame_hdr") {
                bases = bases.set_eh_frame_hdr(hdr);
            }
            let section = EhFrame::new(&data, LittleEndian);
            eh_spans = spans(&section, &bases, ".eh_frame", &mut skipped)?;
        }
        let mut debug_spans = Vec::new();
        if let Some(section) = file.section_by_name(".debug_frame") {
            let data: Cow<'_, [u8]> = section.uncompressed_data()?;
            let mut section = DebugFrame::new(&data, LittleEndian);
            section.set_address_size(8);
            let bases = BaseAddresses::default();
            debug_spans = spans(&section, &bases, ".debug_frame", &mut skipped)?;
        }
        let source = match (eh_spans.is_empty(), debug_spans.is_empty()) {
            (true, true) => return Err(Error::NoUnwindInfo),
            (false, true) => UnwindSource::EhFrame,
            (true, false) => UnwindSource::DebugFrame,
            (false, false) => UnwindSource::Both,
        };
        // .eh_frame is what the code's own unwinders use: where both
        // describe an address, it wins; .debug_frame fills the rest.
        let coverage = union(&eh_spans);
        let covered = |start: u64, end: u64| {
            // The last interval that starts before `end` is the only one
            // that can overlap: the intervals are disjoint and sorted.
            let after = coverage.partition_point(|(s, _)| *s < end);
            after > 0 && start < coverage[after - 1].1
        };
        let extra: Vec<Span> = debug_spans
            .into_iter()
            .filter(|(start, end, _)| !covered(*start, *end))
            .collect();
        eh_spans.extend(extra);
        Ok(UnwindTable {
            rows: flatten(eh_spans),
            source,
            skipped,
        })
    }

    /// The rows, sorted by [`Row::pc`]. A row with [`Cfa::None`] ends the
    /// range of the rows before it.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The row that holds at `address` (a file virtual address), or `None`
    /// where no call-frame information covers it.
    pub fn lookup(&self, address: u64) -> Option<&Row> {
        let after = self.rows.partition_point(|row| row.pc() <= address);
        let row = self.rows.get(after.checked_sub(1)?)?;
        (row.cfa() != Cfa::None).then_some(row)
    }

    /// The section the table was built from.
    pub fn source(&self) -> UnwindSource {
        self.source
    }

    /// The entries left out because they could not be read.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The bytes the rows take ([`Row::SIZE`] each).
    pub fn size_bytes(&self) -> usize {
        self.rows.len() * Row::SIZE
    }
}

/// One FDE's rows before sorting: `(start, end, row)`.
type Span = (u64, u64, Row);

/// Every FDE's rows of one section. Damaged entries are left out and
/// listed in `skipped`; a section that cannot be read at all is an error.
fn spans<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    name: &'static str,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Span>, Error>
where
    S: UnwindSection<Bytes<'a>>,
{
    let mut ctx: Box<UnwindContext<usize>> = Box::new(UnwindContext::new());
    let mut spans: Vec<Span> = Vec::new();
    let mut entries = section.entries(bases);
    loop {
        let entry = match entries.next() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            // The entry's length could not be read: nothing after it can be
            // found. Keep what was read; with nothing read, it is an error.
            Err(error) => {
                if spans.is_empty() {
                    return Err(Error::Parse {
                        section: name,
                        source: error,
                    });
                }
                skipped.push(Skipped {
                    section: name,
                    reason: format!("the section cannot be read past this point: {error}"),
                });
                break;
            }
        };
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = match partial.parse(S::cie_from_offset) {
            Ok(fde) => fde,
            Err(error) => {
                skipped.push(Skipped {
                    section: name,
                    reason: format!("an FDE cannot be parsed: {error}"),
                });
                continue;
            }
        };
        let before = spans.len();
        if let Err(error) = fde_rows(section, bases, &fde, &mut ctx, &mut spans) {
            spans.truncate(before);
            skipped.push(Skipped {
                section: name,
                reason: format!(
                    "the FDE for {:#x}..{:#x} cannot be evaluated: {error}",
                    fde.initial_address(),
                    fde.end_address()
                ),
            });
        }
    }
    Ok(spans)
}

fn fde_rows<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    fde: &gimli::FrameDescriptionEntry<Bytes<'a>>,
    ctx: &mut UnwindContext<usize>,
    spans: &mut Vec<Span>,
) -> gimli::Result<()>
where
    S: UnwindSection<Bytes<'a>>,
{
    let signal = fde.cie().is_signal_trampoline();
    let mut table = fde.rows(section, bases, ctx)?;
    while let Some(row) = table.next_row()? {
        if row.start_address() >= row.end_address() {
            continue;
        }
        let cfa = if signal {
            // The walk reads the registers from the kernel's layout, so the
            // FDE must say they are there.
            if in_sigcontext(section, row)? {
                Cfa::Signal
            } else {
                Cfa::Unsupported
            }
        } else {
            match row.register(X86_64::RA) {
                RegisterRule::Undefined => Cfa::EndOfStack,
                // x86-64: the return address is pushed by `call`, at CFA - 8.
                RegisterRule::Offset(-8) => cfa_rule(section, row.cfa())?,
                _ => Cfa::Unsupported,
            }
        };
        let rbp = match row.register(X86_64::RBP) {
            // Not mentioned (gimli answers Undefined) or left as it was.
            RegisterRule::Undefined | RegisterRule::SameValue => Rbp::Unchanged,
            RegisterRule::Offset(offset) => {
                i16::try_from(offset).map_or(Rbp::Unsupported, Rbp::AtCfa)
            }
            _ => Rbp::Unsupported,
        };
        spans.push((
            row.start_address(),
            row.end_address(),
            Row::new(row.start_address(), cfa, rbp),
        ));
    }
    Ok(())
}

/// Whether a signal trampoline's row says that RIP, RSP and RBP are in the
/// kernel's `struct sigcontext` at RSP + 40, as [`Cfa::Signal`] reads them:
/// glibc describes each as `DW_CFA_expression: REG (DW_OP_breg7 (rsp): N)`.
fn in_sigcontext<'a, S>(section: &S, row: &gimli::UnwindTableRow<usize>) -> gimli::Result<bool>
where
    S: UnwindSection<Bytes<'a>>,
{
    for (register, at) in [
        (X86_64::RA, SIGNAL_RIP_AT),
        (X86_64::RSP, SIGNAL_RSP_AT),
        (X86_64::RBP, SIGNAL_RBP_AT),
    ] {
        let RegisterRule::Expression(expression) = row.register(register) else {
            return Ok(false);
        };
        let expression = expression.get(section)?;
        let mut reader = expression.0;
        let at_rsp = reader.read_u8().ok() == Some(gimli::constants::DW_OP_breg7.0)
            && reader.read_sleb128().ok() == i64::try_from(at).ok()
            && reader.is_empty();
        if !at_rsp {
            return Ok(false);
        }
    }
    Ok(true)
}

fn cfa_rule<'a, S>(section: &S, rule: &CfaRule<usize>) -> gimli::Result<Cfa>
where
    S: UnwindSection<Bytes<'a>>,
{
    Ok(match rule {
        CfaRule::RegisterAndOffset { register, offset } => {
            match (i32::try_from(*offset), *register) {
                (Ok(offset), X86_64::RSP) => Cfa::Rsp(offset),
                (Ok(offset), X86_64::RBP) => Cfa::Rbp(offset),
                _ => Cfa::Unsupported,
            }
        }
        CfaRule::Expression(expression) => {
            let expression = expression.get(section)?;
            plt_expression(expression.0.slice()).unwrap_or(Cfa::Unsupported)
        }
    })
}

/// The PLT stub's CFA expression (see [`Cfa::Plt`]), or `None` for any other.
fn plt_expression(bytes: &[u8]) -> Option<Cfa> {
    use gimli::constants::*;
    let mut reader = gimli::EndianSlice::new(bytes, LittleEndian);
    let mut op = || reader.read_u8().ok();
    if op()? != DW_OP_breg7.0 {
        return None;
    }
    let rsp_offset = i32::try_from(reader.read_sleb128().ok()?).ok()?;
    let mut op = || reader.read_u8().ok();
    if op()? != DW_OP_breg16.0 {
        return None;
    }
    if reader.read_sleb128().ok()? != 0 {
        return None;
    }
    let mut op = || reader.read_u8().ok();
    if (op()?, op()?) != (DW_OP_lit15.0, DW_OP_and.0) {
        return None;
    }
    let threshold = op()?.checked_sub(DW_OP_lit0.0).filter(|k| *k < 32)?;
    let rest = [op()?, op()?, op()?, op()?];
    if rest != [DW_OP_ge.0, DW_OP_lit3.0, DW_OP_shl.0, DW_OP_plus.0] || op().is_some() {
        return None;
    }
    Some(Cfa::Plt {
        rsp_offset,
        threshold,
    })
}

/// The addresses the spans cover, as sorted, disjoint `[start, end)`
/// intervals.
fn union(spans: &[Span]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = spans.iter().map(|(s, e, _)| (*s, *e)).collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Sorts the spans by start, marks the gaps between them with
/// [`Cfa::None`] rows and merges neighbours with the same rules.
fn flatten(mut spans: Vec<Span>) -> Vec<Row> {
    spans.sort_by_key(|(start, end, _)| (*start, *end));
    let mut rows: Vec<Row> = Vec::with_capacity(spans.len() + 1);
    let mut covered_to = 0u64;
    for (start, end, row) in spans {
        if !rows.is_empty() && start > covered_to {
            push(&mut rows, Row::new(covered_to, Cfa::None, Rbp::Unchanged));
        }
        push(&mut rows, row);
        covered_to = covered_to.max(end);
    }
    if !rows.is_empty() {
        push(&mut rows, Row::new(covered_to, Cfa::None, Rbp::Unchanged));
    }
    rows
}

/// Appends `row` unless the last row has the same rules; a row at the same
/// address replaces the last one.
fn push(rows: &mut Vec<Row>, row: Row) {
    match rows.last_mut() {
        Some(last) if last.pc() == row.pc() => *last = row,
        Some(last) if last.same_rules(&row) => {}
        _ => rows.push(row),
    }
    // A replacement may now repeat the row before it.
    if rows.len() >= 2 && rows[rows.len() - 2].same_rules(&rows[rows.len() - 1]) {
        rows.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linkers_plt_expression() {
        use gimli::constants::*;
        let bytes = [
            DW_OP_breg7.0,
            8,
            DW_OP_breg16.0,
            0,
            DW_OP_lit15.0,
            DW_OP_and.0,
            DW_OP_lit11.0,
            DW_OP_ge.0,
            DW_OP_lit3.0,
            DW_OP_shl.0,
            DW_OP_plus.0,
        ];
        assert_eq!(
            plt_expression(&bytes),
            Some(Cfa::Plt {
                rsp_offset: 8,
                threshold: 11
            })
        );
        assert_eq!(plt_expression(&bytes[..10]), None);
        assert_eq!(plt_expression(&[]), None);
        let mut other = bytes;
        other[9] = DW_OP_shr.0;
        assert_eq!(plt_expression(&other), None);
    }

    #[test]
    fn flatten_marks_gaps_and_merges() {
        let rsp8 = |pc| Row::new(pc, Cfa::Rsp(8), Rbp::Unchanged);
        let rsp16 = |pc| Row::new(pc, Cfa::Rsp(16), Rbp::Unchanged);
        let rows = flatten(vec![
            (0x200, 0x210, rsp8(0x200)),
            (0x100, 0x104, rsp8(0x100)),
            (0x104, 0x110, rsp16(0x104)),
            (0x110, 0x120, rsp8(0x110)),
            (0x120, 0x130, rsp8(0x120)),
        ]);
        let summary: Vec<(u64, Cfa)> = rows.iter().map(|r| (r.pc(), r.cfa())).collect();
        assert_eq!(
            summary,
            vec![
                (0x100, Cfa::Rsp(8)),
                (0x104, Cfa::Rsp(16)),
                (0x110, Cfa::Rsp(8)),
                (0x130, Cfa::None),
                (0x200, Cfa::Rsp(8)),
                (0x210, Cfa::None),
            ]
        );
        let table = UnwindTable {
            rows,
            source: UnwindSource::EhFrame,
            skipped: Vec::new(),
        };
        assert_eq!(table.lookup(0xff), None);
        assert_eq!(table.lookup(0x100).map(Row::cfa), Some(Cfa::Rsp(8)));
        assert_eq!(table.lookup(0x12f).map(Row::cfa), Some(Cfa::Rsp(8)));
        assert_eq!(table.lookup(0x130), None);
        assert_eq!(table.lookup(0x20f).map(Row::cfa), Some(Cfa::Rsp(8)));
        assert_eq!(table.lookup(0x210), None);
    }
}
