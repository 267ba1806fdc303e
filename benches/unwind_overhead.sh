#!/usr/bin/env bash
# unwind_overhead.sh: what on-CPU profiling of the whole machine costs the
# profiler, walking user stacks with frame pointers against unwinding them
# in the kernel from tables.
#
# Starts BUSY CPU-burning processes (benches/fixtures/spin.c, built here with
# -O2 -fomit-frame-pointer: it spins 12 calls below main, so every sample is a
# real walk), then runs the purpose-built session runner
# (benches/unwind_session.rs: a session like the `profile` example's, plus
# the stack mode, that measures itself) with `--all --mode on-cpu
# --frequency 99 --duration DURATION`, alternating `--stack-mode fp` and
# `--stack-mode dwarf` for ROUNDS rounds. Per run it reports:
# - start-up: seconds from start to the first window, and the CPU spent by
#   then (verifier, attaching, reading every process, building tables);
# - steady state, from the third window to the last: the profiler's CPU
#   (every thread, user + system) and its BPF programs' run time
#   (kernel.bpf_stats_enabled, from its own program fds' fdinfo), as % of
#   one core, and the mean ns per program run.
# Needs root and gcc.
#
#   bash benches/unwind_overhead.sh         # ROUNDS=3 DURATION=30 BUSY=2
#   RUNNER=/path/to/unwind_session bash benches/unwind_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
duration=${DURATION:-30}
busy=${BUSY:-2}
modes=${MODES:-fp dwarf}

command -v gcc >/dev/null || { echo "unwind_overhead: gcc not found" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "unwind_overhead: run as root" >&2; exit 1; }

if [ -n "${RUNNER:-}" ]; then
  runner=$RUNNER
else
  runner=$(cargo bench -p rover-benches --bench unwind_session --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "unwind_session":
        print(m["executable"])')
  [ -x "$runner" ] || { echo "unwind_overhead: could not build benches/unwind_session.rs" >&2; exit 1; }
fi

dir=$(mktemp -d)
pids=()
stats=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sysctl -qw kernel.bpf_stats_enabled="$stats"
  rm -rf "$dir"
}
trap cleanup EXIT

gcc -O2 -fomit-frame-pointer -o "$dir/spin" benches/fixtures/spin.c
for _ in $(seq "$busy"); do
  "$dir/spin" &
  pids+=($!)
done
sysctl -qw kernel.bpf_stats_enabled=1
sleep 1

echo "on-CPU, every process, 99 Hz, $duration s per run, $rounds rounds; $busy busy -fomit-frame-pointer processes; $(nproc) CPUs"
for round in $(seq "$rounds"); do
  for mode in $modes; do
    log=$dir/$mode-$round.log
    "$runner" --all --mode on-cpu --frequency 99 --duration "$duration" --stack-mode "$mode" >"$log" 2>&1 \
      || { echo "unwind_overhead: the runner failed:" >&2; cat "$log" >&2; exit 1; }
    echo "round $round $mode: $(grep -h '^startup:' "$log" | cut -d' ' -f2-) | $(grep -h '^steady:' "$log" | cut -d' ' -f2-)"
    grep -h '^prog:\|^walks:' "$log" | sed 's/^/    /'
  done
done

# Medians over the rounds, per mode.
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
field() { grep -ho "\b$1=[^ ]*" "$dir"/"$2"-*.log | cut -d= -f2 | median; }
echo
printf '%-6s %-14s %-12s %-10s %-10s %-10s %s\n' mode first-window startup-cpu cpu% bpf% total% ns/run
for mode in $modes; do
  printf '%-6s %-14s %-12s %-10s %-10s %-10s %s\n' "$mode" "$(field first_window_s "$mode")s" \
    "$(field cpu_s "$mode")s" "$(field cpu_pct "$mode")" "$(field bpf_pct "$mode")" \
    "$(field total_pct "$mode")" "$(field ns_per_run "$mode")"
done
