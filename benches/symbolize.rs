//! Warm symbolization throughput (addresses per second) of rover, blazesym and
//! addr2line's `Loader` on the same seeded address set of real binaries, at
//! each level of detail, after checking that their answers agree.
//!
//! Run with `cargo bench --bench symbolize` (or `benches/symbolize.sh`).

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use common::addrs::AddressSet;
use common::subjects::{Implementation, Subject};
use common::{SEED, address_count, agree, binaries};

fn symbolize(c: &mut Criterion) {
    let n = address_count();
    for bin in binaries() {
        let set = match AddressSet::draw(&bin.path, n, SEED) {
            Ok(set) => set,
            Err(e) => {
                eprintln!(
                    "bench: cannot draw addresses from {}: {e}",
                    bin.path.display()
                );
                continue;
            }
        };
        println!(
            "{}: {} addresses from {} functions of {}",
            bin.name,
            set.addrs.len(),
            set.functions,
            bin.path.display()
        );
        for &level in bin.levels {
            let mut subjects = Vec::new();
            for imp in Implementation::ALL {
                match Subject::open(imp, &bin.path, level) {
                    Ok(s) => subjects.push((imp, s)),
                    Err(e) => eprintln!("bench: {} skipped: {e}", imp.name()),
                }
            }
            // One full pass each before timing: it warms every cache, and its
            // answers are checked against blazesym's.
            let answers: Vec<_> = subjects
                .iter()
                .map(|(_, s)| s.answers(&set.addrs))
                .collect();
            let reference = subjects
                .iter()
                .position(|(i, _)| *i == Implementation::Blazesym);
            if let Some(r) = reference {
                for (k, (imp, _)) in subjects.iter().enumerate().filter(|&(k, _)| k != r) {
                    let agreement = agree::compare(&set, &answers[k], &answers[r]);
                    println!("{} {} vs blazesym: {agreement}", bin.name, imp.name());
                    for example in &agreement.examples {
                        println!("    {example}");
                    }
                }
            }
            drop(answers);

            let mut group = c.benchmark_group(format!("symbolize/{}/{}", bin.name, level.name()));
            group.throughput(Throughput::Elements(set.addrs.len() as u64));
            group.sample_size(10);
            group.warm_up_time(Duration::from_secs(1));
            group.measurement_time(Duration::from_secs(5));
            for (imp, subject) in &subjects {
                group.bench_function(imp.name(), |b| b.iter(|| subject.run(&set.addrs)));
            }
            group.finish();
        }
    }
}

criterion_group!(benches, symbolize);
criterion_main!(benches);
