//! Bad input never panics: truncated and corrupted ELF files give an error
//! or unknown results, random bytes are fed to the ELF path by proptest.

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use rover_symbolize::{Error, Level, Source, Symbolized, Symbolizer};

fn symbolize_file(path: &Path, level: Level) -> Result<Vec<Symbolized>, Error> {
    // A fresh symbolizer each time: no cache hides a second parse.
    let symbolizer = Symbolizer::builder().level(level).build();
    symbolizer.symbolize(
        &Source::elf(path.to_path_buf()),
        &[0, 0x1000, 0x1139, 0x2000, u64::MAX],
    )
}

#[test]
fn missing_file_is_an_open_error() {
    let err = Symbolizer::default()
        .symbolize(&Source::elf("/nonexistent/rover"), &[1])
        .unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/rover"));
}

#[test]
fn non_elf_file_is_invalid() {
    let dir = tempdir();
    let path = dir.path().join("text");
    std::fs::write(&path, "just some text, not an object file").unwrap();
    let err = symbolize_file(&path, Level::Inlined).unwrap_err();
    assert!(matches!(err, Error::InvalidElf { .. }), "{err}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(symbolize_file(&empty, Level::Inlined).is_err());
    assert!(
        symbolize_file(dir.path(), Level::Inlined).is_err(),
        "a directory is not an ELF file"
    );
}

#[test]
fn truncated_files_never_panic() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", C_SOURCE, "whole", &["-O2", "-g"]);
    let bytes = std::fs::read(&bin).unwrap();
    let mut cuts: Vec<usize> = vec![1, 4, 16, 52, 63, 64, 65, 200, 1000, 4096];
    cuts.extend((1..20).map(|i| bytes.len() * i / 20));
    cuts.push(bytes.len() - 1);
    let (mut errors, mut oks) = (0, 0);
    for cut in cuts {
        let path = dir.path().join(format!("cut{cut}"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        for level in [Level::SymbolTable, Level::Inlined] {
            match symbolize_file(&path, level) {
                Ok(results) => {
                    assert_eq!(results.len(), 5);
                    oks += 1;
                }
                Err(_) => errors += 1,
            }
        }
    }
    println!("truncated copies: {errors} rejected, {oks} symbolized as far as they go");
    assert!(errors > 0);
}

#[test]
fn corrupted_sections_never_panic() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", C_SOURCE, "whole", &["-O2", "-g"]);
    let bytes = std::fs::read(&bin).unwrap();
    // Overwrite regular slices across the file (headers, symbol tables,
    // DWARF) with patterns that make lengths and offsets absurd.
    for (i, pattern) in [0x00u8, 0xff, 0x7f, 0x41].into_iter().enumerate() {
        for start in (64 * i..bytes.len()).step_by(bytes.len() / 40) {
            let mut copy = bytes.clone();
            let end = (start + 96).min(copy.len());
            copy[start..end].fill(pattern);
            let path = dir.path().join(format!("bad{pattern:x}_{start}"));
            std::fs::write(&path, &copy).unwrap();
            let _ = symbolize_file(&path, Level::Inlined);
            std::fs::remove_file(&path).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let dir = tempdir();
        let path = dir.path().join("random");
        std::fs::write(&path, &bytes).unwrap();
        let _ = symbolize_file(&path, Level::Inlined);
    }

    #[test]
    fn mutated_elf_never_panics(
        seed in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..64),
    ) {
        let dir = tempdir();
        let bin = fixture_bytes();
        let mut copy = bin.clone();
        for (at, byte) in seed {
            let i = at.index(copy.len());
            copy[i] = byte;
        }
        let path = dir.path().join("mutated");
        std::fs::write(&path, &copy).unwrap();
        let _ = symbolize_file(&path, Level::Inlined);
        let _ = symbolize_file(&path, Level::SymbolTable);
    }
}

/// The C fixture's bytes, built once per test process.
fn fixture_bytes() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES
        .get_or_init(|| {
            let dir = tempdir();
            let bin = build(dir.path(), "gcc", "c", C_SOURCE, "seed", &["-O2", "-g"]);
            std::fs::read(bin).unwrap()
        })
        .clone()
}
