//! Function names from DWARF without line tables, for `Level::Names`: one
//! walk over the debugging entries collects every subprogram's address
//! ranges and name into a sorted table searched by binary search. Inlined
//! subroutines and line programs are never parsed.

use std::collections::HashMap;
use std::sync::Arc;

use crate::demangle::{demangle, is_mangled};
use crate::dwarf::{Slice, has_mangling};

/// How many references (`DW_AT_abstract_origin`, `DW_AT_specification`) to
/// follow looking for a name.
const MAX_REFERENCES: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Range {
    begin: u64,
    end: u64,
    name: u32,
}

/// Subprogram address ranges and names, sorted by start address.
pub(crate) struct FunctionIndex {
    ranges: Vec<Range>,
    /// Name and whether it is authoritative (see `DwarfFrame::linkage`).
    names: Vec<(Arc<str>, bool)>,
}

impl FunctionIndex {
    /// Walks every unit of `dwarf`. Units that fail to parse are skipped.
    pub(crate) fn build(dwarf: &gimli::Dwarf<Slice>, demangle_names: bool) -> FunctionIndex {
        let mut ranges = Vec::new();
        let mut names: Vec<(Arc<str>, bool)> = Vec::new();
        let mut interned: HashMap<(usize, bool), u32> = HashMap::new();
        let mut headers = dwarf.units();
        while let Ok(Some(header)) = headers.next() {
            let Ok(unit) = dwarf.unit(header) else {
                continue;
            };
            let mangling =
                unit.entries()
                    .next_dfs()
                    .ok()
                    .flatten()
                    .and_then(|(_, root)| {
                        match root.attr_value(gimli::DW_AT_language).ok().flatten() {
                            Some(gimli::AttributeValue::Language(lang)) => Some(has_mangling(lang)),
                            _ => None,
                        }
                    });
            let mangling = mangling.unwrap_or(false);
            let mut entries = unit.entries();
            while let Ok(Some((_, entry))) = entries.next_dfs() {
                if entry.tag() != gimli::DW_TAG_subprogram {
                    continue;
                }
                let Some((raw, linkage)) = name_of(dwarf, &unit, entry, MAX_REFERENCES) else {
                    continue;
                };
                let Ok(mut iter) = dwarf.die_ranges(&unit, entry) else {
                    continue;
                };
                let mut first = true;
                let mut index = 0;
                while let Ok(Some(range)) = iter.next() {
                    if range.begin >= range.end || range.begin == 0 {
                        continue;
                    }
                    if first {
                        let bytes = raw.slice();
                        let key = (bytes.as_ptr() as usize, linkage);
                        index = *interned.entry(key).or_insert_with(|| {
                            let text = String::from_utf8_lossy(bytes);
                            let authoritative = linkage || !mangling || is_mangled(&text);
                            let shown: Arc<str> = if demangle_names {
                                Arc::from(demangle(&text))
                            } else {
                                Arc::from(text)
                            };
                            names.push((shown, authoritative));
                            u32::try_from(names.len() - 1).unwrap_or(u32::MAX)
                        });
                        first = false;
                    }
                    ranges.push(Range {
                        begin: range.begin,
                        end: range.end,
                        name: index,
                    });
                }
            }
        }
        ranges.sort_unstable_by_key(|r| (r.begin, std::cmp::Reverse(r.end)));
        ranges.shrink_to_fit();
        FunctionIndex { ranges, names }
    }

    /// The innermost subprogram whose range holds `addr`.
    pub(crate) fn find(&self, addr: u64) -> Option<&(Arc<str>, bool)> {
        let idx = self.ranges.partition_point(|r| r.begin <= addr);
        let lo = idx.saturating_sub(8);
        let range = (lo..idx)
            .rev()
            .map(|i| self.ranges[i])
            .find(|r| r.end > addr)?;
        self.names.get(range.name as usize)
    }

    /// Approximate heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ranges.capacity() * size_of::<Range>()
            + self.names.capacity() * size_of::<(Arc<str>, bool)>()
    }
}

/// The name of a subprogram: its linkage name, else its name, else those of
/// the entry it refers to. The flag tells a linkage name.
fn name_of(
    dwarf: &gimli::Dwarf<Slice>,
    unit: &gimli::Unit<Slice>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Slice>,
    depth: usize,
) -> Option<(Slice, bool)> {
    let mut plain = None;
    let mut reference = None;
    let mut attrs = entry.attrs();
    while let Ok(Some(attr)) = attrs.next() {
        match attr.name() {
            gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                if let Ok(name) = dwarf.attr_string(unit, attr.value()) {
                    return Some((name, true));
                }
            }
            gimli::DW_AT_name => plain = dwarf.attr_string(unit, attr.value()).ok(),
            gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => {
                if let gimli::AttributeValue::UnitRef(offset) = attr.value() {
                    reference = Some(offset);
                }
            }
            _ => {}
        }
    }
    // A referenced declaration may carry the linkage name the definition
    // lacks.
    if depth > 0
        && let Some(offset) = reference
        && let Ok(target) = unit.entry(offset)
        && let Some((name, linkage)) = name_of(dwarf, unit, &target, depth - 1)
        && (linkage || plain.is_none())
    {
        return Some((name, linkage));
    }
    plain.map(|name| (name, false))
}
