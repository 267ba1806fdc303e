//! The agreement check run before any timing: two implementations' answers on
//! the same addresses, compared name by name, with every disagreement put in a
//! class that explains it (aliases, compiler-split function parts, or other).

use std::collections::HashMap;
use std::fmt;

use super::addrs::AddressSet;
use super::subjects::Answer;

/// Counts of how two implementations' answers compare.
#[derive(Default, Debug)]
pub struct Agreement {
    /// Addresses compared.
    pub total: usize,
    /// Neither resolved the address.
    pub both_unknown: usize,
    /// Only one of the two resolved it.
    pub one_unknown: usize,
    /// Same outer name.
    pub same_name: usize,
    /// Different names for the same function start (aliases in the symbol
    /// table, typically functions the linker folded as identical code).
    pub alias: usize,
    /// One name is the other with a compiler suffix (`f.cold`, `f.isra.0`,
    /// `f.part.0`): a symbol-table name against its DWARF function.
    pub suffix: usize,
    /// Any other difference in the name.
    pub other: usize,
    /// Both had a file and line for the address.
    pub lines_compared: usize,
    /// ... and they were the same.
    pub lines_equal: usize,
    /// Both resolved with the same name; inlined chains compared.
    pub inlined_compared: usize,
    /// ... and the chains had the same names.
    pub inlined_equal: usize,
    /// ... of which the reference's chain was not empty (so the comparison
    /// says something).
    pub inlined_nonempty: usize,
    /// A few addresses in `other` and line mismatches, for a human to look at.
    pub examples: Vec<String>,
}

impl Agreement {
    /// Names that agree (equal, aliases, or suffix variants) per resolved
    /// address, as a fraction.
    pub fn name_rate(&self) -> f64 {
        let resolved = self.total - self.both_unknown;
        if resolved == 0 {
            return 1.0;
        }
        (self.same_name + self.alias + self.suffix) as f64 / resolved as f64
    }

    /// Exactly equal names per resolved address.
    pub fn exact_rate(&self) -> f64 {
        let resolved = self.total - self.both_unknown;
        if resolved == 0 {
            return 1.0;
        }
        self.same_name as f64 / resolved as f64
    }
}

impl fmt::Display for Agreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "names agree {:.2}% (exact {:.2}%; aliases {}, compiler suffixes {}, other {}, \
             one side unknown {}, both unknown {}) of {}",
            100.0 * self.name_rate(),
            100.0 * self.exact_rate(),
            self.alias,
            self.suffix,
            self.other,
            self.one_unknown,
            self.both_unknown,
            self.total
        )?;
        if self.lines_compared > 0 {
            write!(
                f,
                "; lines agree {:.2}% of {}",
                100.0 * self.lines_equal as f64 / self.lines_compared as f64,
                self.lines_compared
            )?;
        }
        if self.inlined_compared > 0 {
            write!(
                f,
                "; inlined chains agree {:.2}% of {} ({} with inlined frames)",
                100.0 * self.inlined_equal as f64 / self.inlined_compared as f64,
                self.inlined_compared,
                self.inlined_nonempty
            )?;
        }
        Ok(())
    }
}

/// `name` without a GCC/Clang clone or split suffix, if it has one.
fn strip_suffix(name: &str) -> &str {
    name.find('.').map_or(name, |i| &name[..i])
}

/// Compares `a` against `b` (answers for `set.addrs`, in order).
pub fn compare(set: &AddressSet, a: &[Option<Answer>], b: &[Option<Answer>]) -> Agreement {
    // A name can be defined at several addresses (local symbols, one per
    // crate or translation unit), so aliases are names sharing any start.
    let mut starts_of: HashMap<&str, Vec<u64>> = HashMap::new();
    for (&addr, names) in &set.names_at {
        for n in names {
            starts_of.entry(n).or_default().push(addr);
        }
    }
    let aliases = |x: &str, y: &str| match (starts_of.get(x), starts_of.get(y)) {
        (Some(xs), Some(ys)) => xs.iter().any(|s| ys.contains(s)),
        _ => false,
    };
    let mut out = Agreement {
        total: set.addrs.len(),
        ..Agreement::default()
    };
    for ((addr, x), y) in set.addrs.iter().zip(a).zip(b) {
        let (x, y) = match (x, y) {
            (None, None) => {
                out.both_unknown += 1;
                continue;
            }
            (Some(x), Some(y)) => (x, y),
            _ => {
                out.one_unknown += 1;
                if out.examples.len() < 12 {
                    out.examples
                        .push(format!("{addr:#x}: unknown on one side: {x:?} / {y:?}"));
                }
                continue;
            }
        };
        if x.name == y.name {
            out.same_name += 1;
        } else if aliases(&x.name, &y.name) {
            out.alias += 1;
        } else if strip_suffix(&x.name) == strip_suffix(&y.name) {
            out.suffix += 1;
        } else {
            out.other += 1;
            if out.examples.len() < 12 {
                out.examples
                    .push(format!("{addr:#x}: name {:?} / {:?}", x.name, y.name));
            }
        }
        if let (Some(lx), Some(ly)) = (&x.line, &y.line) {
            out.lines_compared += 1;
            if lx == ly {
                out.lines_equal += 1;
            } else if out.examples.len() < 12 {
                out.examples
                    .push(format!("{addr:#x}: line {lx:?} / {ly:?}"));
            }
        }
        if x.name == y.name {
            out.inlined_compared += 1;
            out.inlined_nonempty += usize::from(!y.inlined.is_empty());
            if x.inlined == y.inlined {
                out.inlined_equal += 1;
            } else if out.examples.len() < 12 {
                out.examples.push(format!(
                    "{addr:#x}: inlined {:?} / {:?}",
                    x.inlined, y.inlined
                ));
            }
        }
    }
    out
}
