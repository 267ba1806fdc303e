//! The address set every implementation is measured on: addresses drawn with a
//! fixed seed from inside the function symbols of a real binary.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use object::{Object, ObjectSymbol, SymbolKind};

/// Addresses drawn from a binary's function symbols, with the names defined at
/// each function start so that aliases can be told apart from disagreements.
pub struct AddressSet {
    /// File virtual addresses, in drawing order (not sorted, as a profiler's
    /// stacks are not).
    pub addrs: Vec<u64>,
    /// Every function symbol name defined at a start address; more than one
    /// name at one address means aliases.
    pub names_at: HashMap<u64, Vec<String>>,
    /// How many distinct functions the binary's symbol table has.
    pub functions: usize,
}

impl AddressSet {
    /// Draws `n` addresses from the `.symtab` (else `.dynsym`) function
    /// symbols of `path`: a function uniformly at random, then its first byte,
    /// its middle or its last byte, each a third of the time.
    pub fn draw(path: &Path, n: usize, seed: u64) -> io::Result<Self> {
        let data = fs::read(path)?;
        let file = object::File::parse(&*data).map_err(io::Error::other)?;
        let mut names_at: HashMap<u64, Vec<String>> = HashMap::new();
        let mut funcs: HashMap<u64, u64> = HashMap::new();
        let symbols: Vec<_> = if file.symbols().next().is_some() {
            file.symbols().collect()
        } else {
            file.dynamic_symbols().collect()
        };
        for sym in symbols {
            if sym.kind() != SymbolKind::Text || sym.size() == 0 || !sym.is_definition() {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            names_at
                .entry(sym.address())
                .or_default()
                .push(name.to_owned());
            let size = funcs.entry(sym.address()).or_insert(0);
            *size = (*size).max(sym.size());
        }
        let mut funcs: Vec<(u64, u64)> = funcs.into_iter().collect();
        funcs.sort_unstable();
        if funcs.is_empty() {
            return Err(io::Error::other(format!(
                "{} has no function symbols",
                path.display()
            )));
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let addrs = (0..n)
            .map(|_| {
                let (start, size) = funcs[rng.usize(..funcs.len())];
                match rng.u8(..3) {
                    0 => start,
                    1 => start + size / 2,
                    _ => start + size - 1,
                }
            })
            .collect();
        Ok(Self {
            addrs,
            names_at,
            functions: funcs.len(),
        })
    }

    /// Writes the addresses one a line in hex, for a child process to read.
    pub fn write_addrs(&self, path: &Path) -> io::Result<()> {
        let mut out = io::BufWriter::new(fs::File::create(path)?);
        for a in &self.addrs {
            writeln!(out, "{a:x}")?;
        }
        out.flush()
    }
}

/// Reads addresses written by [`AddressSet::write_addrs`].
pub fn read_addrs(path: &Path) -> io::Result<Vec<u64>> {
    BufReader::new(fs::File::open(path)?)
        .lines()
        .map(|line| {
            let line = line?;
            u64::from_str_radix(line.trim(), 16).map_err(io::Error::other)
        })
        .collect()
}
