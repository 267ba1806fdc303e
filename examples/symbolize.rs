//! An `addr2line` that also knows live processes, the kernel and JIT code:
//! prints GNU addr2line's output format for addresses given as arguments or,
//! without any, read one per line from standard input.
//!
//! ```sh
//! cargo run --release --example symbolize -- -f -i -C -e /bin/ls 0x4a20
//! cargo run --release --example symbolize -- -f --pid 1234 < addresses.txt
//! ```

use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use rover_symbolize::{Level, Location, Origin, Source, Symbolized, Symbolizer};

/// Addresses per call to the symbolizer when reading standard input.
const BATCH: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(about = "Convert addresses into function names and file:line, like addr2line")]
#[command(group(ArgGroup::new("source").required(true).args(["exe", "pid", "kernel"])))]
struct Args {
    /// Print the address before each result.
    #[arg(short = 'a', long = "addresses")]
    addresses: bool,
    /// Print function names.
    #[arg(short = 'f', long = "functions")]
    functions: bool,
    /// Print inlined frames too, innermost first.
    #[arg(short = 'i', long = "inlines")]
    inlines: bool,
    /// Demangle Rust and C++ names.
    #[arg(short = 'C', long = "demangle")]
    demangle: bool,
    /// ELF file; addresses are its virtual addresses.
    #[arg(short = 'e', long = "exe")]
    exe: Option<PathBuf>,
    /// Live process; addresses are absolute addresses in it.
    #[arg(long)]
    pid: Option<u32>,
    /// The running kernel; addresses are kernel addresses.
    #[arg(long)]
    kernel: bool,
    /// Addresses in hexadecimal (with or without 0x); standard input if none.
    addrs: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let source = match (&args.exe, args.pid) {
        (Some(path), _) => Source::elf(path),
        (None, Some(pid)) => Source::process(pid),
        (None, None) => Source::kernel(),
    };
    let symbolizer = Symbolizer::builder()
        .level(Level::Inlined)
        .demangle(args.demangle)
        .build();
    let mut out = BufWriter::new(io::stdout().lock());
    let result = if args.addrs.is_empty() {
        run_stdin(&args, &symbolizer, &source, &mut out)
    } else {
        let addrs: Vec<u64> = args.addrs.iter().map(|a| parse_addr(a)).collect();
        run_batch(&args, &symbolizer, &source, &addrs, &mut out)
    };
    match result.and_then(|()| out.flush().map_err(|e| e.to_string())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("symbolize: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_stdin(
    args: &Args,
    symbolizer: &Symbolizer,
    source: &Source,
    out: &mut impl Write,
) -> Result<(), String> {
    let stdin = io::stdin().lock();
    let mut addrs = Vec::with_capacity(BATCH);
    for line in stdin.lines() {
        let line = line.map_err(|e| format!("reading standard input: {e}"))?;
        addrs.extend(line.split_whitespace().map(parse_addr));
        if addrs.len() >= BATCH {
            run_batch(args, symbolizer, source, &addrs, out)?;
            addrs.clear();
        }
    }
    run_batch(args, symbolizer, source, &addrs, out)
}

fn run_batch(
    args: &Args,
    symbolizer: &Symbolizer,
    source: &Source,
    addrs: &[u64],
    out: &mut impl Write,
) -> Result<(), String> {
    if addrs.is_empty() {
        return Ok(());
    }
    let results = symbolizer
        .symbolize(source, addrs)
        .map_err(|e| e.to_string())?;
    for (addr, result) in addrs.iter().zip(&results) {
        print_one(args, *addr, result, out).map_err(|e| format!("writing output: {e}"))?;
    }
    Ok(())
}

/// Parses an address as addr2line does: hexadecimal, `0x` optional; text
/// that is not a number reads as 0.
fn parse_addr(text: &str) -> u64 {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u64::from_str_radix(digits, 16).unwrap_or(0)
}

fn print_one(args: &Args, addr: u64, result: &Symbolized, out: &mut impl Write) -> io::Result<()> {
    if args.addresses {
        writeln!(out, "0x{addr:016x}")?;
    }
    let sym = match result {
        Symbolized::Sym(sym) => sym,
        Symbolized::Unknown(_) => {
            if args.functions {
                writeln!(out, "??")?;
            }
            return writeln!(out, "??:0");
        }
    };
    // Code that is not in a file (kernel, JIT, vDSO) has no source file.
    let no_source = if sym.origin == Origin::File {
        "??:?"
    } else {
        "??:0"
    };
    let frames = sym
        .inlined
        .iter()
        .map(|f| (&f.name, &f.location))
        .chain(std::iter::once((&sym.name, &sym.location)));
    for (name, location) in frames {
        if args.functions {
            writeln!(out, "{name}")?;
        }
        print_location(location.as_ref(), no_source, out)?;
        if !args.inlines {
            break;
        }
    }
    Ok(())
}

fn print_location(
    location: Option<&Location>,
    unknown: &str,
    out: &mut impl Write,
) -> io::Result<()> {
    match location {
        Some(loc) => match loc.line {
            Some(line) if line != 0 => writeln!(out, "{}:{line}", loc.file),
            _ => writeln!(out, "{}:?", loc.file),
        },
        None => writeln!(out, "{unknown}"),
    }
}
