//! The implementations under comparison behind one interface: rover's
//! `Symbolizer`, blazesym's `Symbolizer` and addr2line's `Loader`, each set up
//! for one level of detail.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use blazesym::symbolize as blaze;

/// Levels of detail, the same four for every implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// ELF symbol table only.
    SymbolTable,
    /// Function names from DWARF, no lines.
    Names,
    /// Names plus file and line of the address.
    Lines,
    /// Names, lines and the chain of inlined frames.
    Inlined,
}

impl Level {
    /// All levels, cheapest first.
    pub const ALL: [Level; 4] = [
        Level::SymbolTable,
        Level::Names,
        Level::Lines,
        Level::Inlined,
    ];

    /// The name used on command lines and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Level::SymbolTable => "symtab",
            Level::Names => "names",
            Level::Lines => "lines",
            Level::Inlined => "inlined",
        }
    }

    /// Parses [`Level::name`].
    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == s)
    }
}

/// Which implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// rover-symbolize, the library under test.
    Rover,
    /// addr2line's `Loader` (gimli-rs), the baseline library.
    Loader,
    /// blazesym (libbpf), the library rover is measured against.
    Blazesym,
}

impl Implementation {
    /// All implementations, in table column order.
    pub const ALL: [Implementation; 3] = [
        Implementation::Rover,
        Implementation::Blazesym,
        Implementation::Loader,
    ];

    /// The name used on command lines and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Rover => "rover",
            Implementation::Loader => "addr2line",
            Implementation::Blazesym => "blazesym",
        }
    }

    /// Parses [`Implementation::name`].
    pub fn parse(s: &str) -> Option<Implementation> {
        Implementation::ALL.into_iter().find(|i| i.name() == s)
    }
}

/// One implementation's answer for one address, reduced to what all three can
/// be compared on. Names are raw (not demangled) everywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The outer (not inlined) function's name.
    pub name: String,
    /// File name (last path component) and line of the address in the outer
    /// function: the line-table row at `Lines`, the call site at `Inlined`.
    pub line: Option<(String, u32)>,
    /// Inlined functions, outermost first (blazesym's order).
    pub inlined: Vec<String>,
}

/// Receives each frame a `Loader` query found: function name and, where
/// known, file and line.
type Visit<'a> = dyn FnMut(&str, Option<(&str, u32)>) + 'a;

fn base_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// An implementation set up for one file and one level.
pub enum Subject {
    /// rover's `Symbolizer` and its source for the file.
    Rover(Box<rover_symbolize::Symbolizer>, rover_symbolize::Source),
    /// addr2line's `Loader`.
    Loader(Box<addr2line::Loader>, Level),
    /// blazesym's `Symbolizer` and its source for the file.
    Blazesym(Box<blaze::Symbolizer>, blaze::source::Source<'static>),
}

impl Subject {
    /// Creates the implementation's symbolizer for `path` at `level`. Like a
    /// user, it does no warming: whatever the implementation parses eagerly it
    /// parses here, the rest on the first addresses.
    pub fn open(imp: Implementation, path: &Path, level: Level) -> Result<Subject, String> {
        match imp {
            Implementation::Rover => {
                let level = match level {
                    Level::SymbolTable => rover_symbolize::Level::SymbolTable,
                    Level::Names => rover_symbolize::Level::Names,
                    Level::Lines => rover_symbolize::Level::Lines,
                    Level::Inlined => rover_symbolize::Level::Inlined,
                };
                let symbolizer = rover_symbolize::Symbolizer::builder()
                    .level(level)
                    .demangle(false)
                    .build();
                let src = rover_symbolize::Source::elf(path.to_path_buf());
                Ok(Subject::Rover(Box::new(symbolizer), src))
            }
            Implementation::Loader => addr2line::Loader::new(path)
                .map(|l| Subject::Loader(Box::new(l), level))
                .map_err(|e| format!("addr2line::Loader::new({}): {e}", path.display())),
            Implementation::Blazesym => {
                let symbolizer = blaze::Symbolizer::builder()
                    .enable_code_info(level >= Level::Lines)
                    .enable_inlined_fns(level == Level::Inlined)
                    .enable_demangling(false)
                    .build();
                let mut elf = blaze::source::Elf::new(PathBuf::from(path));
                elf.debug_syms = level != Level::SymbolTable;
                Ok(Subject::Blazesym(
                    Box::new(symbolizer),
                    blaze::source::Source::Elf(elf),
                ))
            }
        }
    }

    /// Symbolizes `addrs` the way a user of the implementation would, keeping
    /// nothing; returns how many addresses were resolved. This is what is
    /// timed.
    pub fn run(&self, addrs: &[u64]) -> usize {
        match self {
            Subject::Rover(symbolizer, src) => match symbolizer.symbolize(src, addrs) {
                Ok(out) => black_box(out)
                    .iter()
                    .filter(|s| matches!(s, rover_symbolize::Symbolized::Sym(_)))
                    .count(),
                Err(_) => 0,
            },
            Subject::Loader(loader, level) => {
                let mut touch = |name: &str, loc: Option<(&str, u32)>| {
                    black_box((name, loc));
                };
                addrs
                    .iter()
                    .filter(|&&a| loader_one(loader, *level, a, &mut touch))
                    .count()
            }
            Subject::Blazesym(symbolizer, src) => {
                match symbolizer.symbolize(src, blaze::Input::VirtOffset(addrs)) {
                    Ok(out) => black_box(out)
                        .iter()
                        .filter(|s| s.as_sym().is_some())
                        .count(),
                    Err(_) => 0,
                }
            }
        }
    }

    /// Symbolizes `addrs` and reduces each result to an [`Answer`] (`None`
    /// where the implementation found nothing), for the agreement check.
    pub fn answers(&self, addrs: &[u64]) -> Vec<Option<Answer>> {
        match self {
            Subject::Rover(symbolizer, src) => {
                let out = match symbolizer.symbolize(src, addrs) {
                    Ok(out) => out,
                    Err(e) => {
                        eprintln!("bench: rover failed the whole batch: {e}");
                        return vec![None; addrs.len()];
                    }
                };
                out.iter().map(rover_answer).collect()
            }
            Subject::Loader(loader, level) => addrs
                .iter()
                .map(|&a| loader_answer(loader, *level, a))
                .collect(),
            Subject::Blazesym(symbolizer, src) => {
                let out = match symbolizer.symbolize(src, blaze::Input::VirtOffset(addrs)) {
                    Ok(out) => out,
                    Err(e) => {
                        eprintln!("bench: blazesym failed the whole batch: {e}");
                        return vec![None; addrs.len()];
                    }
                };
                out.iter().map(|s| s.as_sym().map(blaze_answer)).collect()
            }
        }
    }
}

fn rover_answer(result: &rover_symbolize::Symbolized) -> Option<Answer> {
    let rover_symbolize::Symbolized::Sym(sym) = result else {
        return None;
    };
    Some(Answer {
        name: sym.name.to_string(),
        line: sym
            .location
            .as_ref()
            .and_then(|l| Some((base_name(&l.file), l.line?))),
        inlined: sym
            .inlined
            .iter()
            .rev()
            .map(|f| f.name.to_string())
            .collect(),
    })
}

fn blaze_answer(sym: &blaze::Sym<'_>) -> Answer {
    let line_of =
        |ci: &blaze::CodeInfo<'_>| ci.line.map(|l| (base_name(&ci.file.to_string_lossy()), l));
    Answer {
        name: sym.name.to_string(),
        line: sym.code_info.as_deref().and_then(line_of),
        inlined: sym.inlined.iter().map(|f| f.name.to_string()).collect(),
    }
}

/// One address through `Loader`, the way `addr2line` itself uses it: the
/// symbol table at `SymbolTable`; `find_frames` for DWARF names (the outer
/// function is the last frame; `Loader` has no names-only query), plus
/// `find_location` for the line-table row at `Lines`; the symbol table as
/// fallback where DWARF has no function. Each frame's name and location go to
/// `visit` (innermost first); returns whether anything was found.
fn loader_one(loader: &addr2line::Loader, level: Level, addr: u64, visit: &mut Visit<'_>) -> bool {
    if level == Level::SymbolTable {
        return match loader.find_symbol(addr) {
            Some(name) => {
                visit(name, None);
                true
            }
            None => false,
        };
    }
    let mut found = false;
    let mut outer: Option<(String, Option<(String, u32)>)> = None;
    if let Ok(mut frames) = loader.find_frames(addr) {
        while let Ok(Some(frame)) = frames.next() {
            let Some(function) = frame.function.as_ref() else {
                continue;
            };
            let Ok(name) = function.raw_name() else {
                continue;
            };
            let loc = frame
                .location
                .as_ref()
                .and_then(|l| Some((l.file?, l.line?)));
            found = true;
            if level == Level::Inlined {
                visit(&name, loc);
            } else {
                outer = Some((name.into_owned(), None));
            }
        }
    }
    if level == Level::Inlined {
        return found || loader_symtab_fallback(loader, addr, visit);
    }
    match outer {
        Some((name, _)) => {
            let row = if level == Level::Lines {
                loader
                    .find_location(addr)
                    .ok()
                    .flatten()
                    .and_then(|l| Some((l.file?, l.line?)))
            } else {
                None
            };
            visit(&name, row);
            true
        }
        None => loader_symtab_fallback(loader, addr, visit),
    }
}

fn loader_symtab_fallback(loader: &addr2line::Loader, addr: u64, visit: &mut Visit<'_>) -> bool {
    match loader.find_symbol(addr) {
        Some(name) => {
            visit(name, None);
            true
        }
        None => false,
    }
}

fn loader_answer(loader: &addr2line::Loader, level: Level, addr: u64) -> Option<Answer> {
    // Frames arrive innermost first; the last one is the outer function.
    let mut frames: Vec<(String, Option<(String, u32)>)> = Vec::new();
    let found = loader_one(loader, level, addr, &mut |name, loc| {
        frames.push((name.to_owned(), loc.map(|(f, l)| (base_name(f), l))));
    });
    if !found {
        return None;
    }
    let (name, line) = frames.pop()?;
    Some(Answer {
        name,
        line,
        inlined: frames.into_iter().rev().map(|(n, _)| n).collect(),
    })
}
