#!/usr/bin/env bash
# Runs the symbolization benchmarks of rover-symbolize beside blazesym and
# addr2line::Loader (issue 2) and keeps their output under
# target/bench-symbolize/: warm throughput (criterion), then cold start and
# peak memory in fresh processes, with the binary in the page cache and then
# evicted from it. Environment: ROVER_BENCH_ADDRS (default 20000),
# ROVER_BENCH_PYTHON_LIB (default pyenv's libpython3.11.so.1.0).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench-symbolize
mkdir -p "$out"

echo "== warm throughput (cargo bench -p rover-benches --bench symbolize)"
cargo bench -p rover-benches --bench symbolize 2>&1 | tee "$out/warm.txt"
echo "== cold start and peak memory, file in the page cache"
cargo bench -p rover-benches --bench symbolize_mem 2>&1 | tee "$out/cold.txt"
echo "== cold start and peak memory, file evicted from the page cache"
ROVER_BENCH_EVICT=1 cargo bench -p rover-benches --bench symbolize_mem 2>&1 | tee "$out/cold-disk.txt"
echo "== results in $out/"
