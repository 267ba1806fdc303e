#!/usr/bin/env bash
# offcpu_overhead.sh: the kernel-side cost of rover's off-CPU program.
#
# Runs a context-switch-heavy workload, `perf bench sched pipe`, alone, with
# rover's off-CPU program attached to every process (examples/offcpu_attach,
# draining every second as a session would), and with libbpf-tools'
# offcputime attached, alternating the three for REPS rounds, and reports
# the median time of each and the slowdown ratios. Needs root.
#
#   bash benches/offcpu_overhead.sh            # LOOPS=200000 REPS=5 MIN_US=1
#   MIN_US=1000 bash benches/offcpu_overhead.sh  # both tools with a 1 ms minimum block
#   ROVER=/other/build/offcpu_attach bash benches/offcpu_overhead.sh
#
# CPU=N pins the workload to one CPU (both ends of the pipe then switch on
# it every message); by default the scheduler places it, as in the issue's
# reference figure. Rounds alternate the three setups so that drifting load
# on a shared machine hits them alike.
set -euo pipefail
cd "$(dirname "$0")/.."

loops=${LOOPS:-200000}
reps=${REPS:-5}
min_us=${MIN_US:-1}
cpu=${CPU:-}
offcputime=${OFFCPUTIME:-$(command -v offcputime || echo /usr/sbin/offcputime)}

for tool in perf bpftool "$offcputime"; do
  command -v "$tool" >/dev/null || { echo "offcpu_overhead: $tool not found" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "offcpu_overhead: run as root" >&2; exit 1; }

# ROVER=PATH measures another build of examples/offcpu_attach (e.g. an older
# commit's, to compare two versions of the program on the same machine).
if [ -n "${ROVER:-}" ]; then
  rover=$ROVER
else
  cargo build --release --quiet --example offcpu_attach
  rover=target/release/examples/offcpu_attach
fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

pipe_seconds() {
  local pin=()
  [ -n "$cpu" ] && pin=(taskset -c "$cpu")
  "${pin[@]}" perf bench sched pipe -l "$loops" | awk '/Total time/ {print $3}'
}

# Whether a BPF program named $1 is loaded (offcputime prints nothing
# until it ends, so its program's presence says it is attached).
prog_loaded() {
  bpftool prog show name "$1" >/dev/null 2>&1 && [ -n "$(bpftool prog show name "$1")" ]
}

# Mean run time of the loaded programs named $1, in ns (kernel.bpf_stats_enabled).
ns_per_run() {
  bpftool prog show name "$1" -j 2>/dev/null | python3 -c '
import json, sys
progs = json.load(sys.stdin)
progs = progs if isinstance(progs, list) else [progs]
runs = sum(p.get("run_cnt", 0) for p in progs)
print(sum(p.get("run_time_ns", 0) for p in progs) // runs if runs else "-")'
}

# Starts a tracer whose program is named $2, waits until `$3` succeeds, runs
# the workload, records the program's mean run time, stops the tracer.
with_tracer() {
  local log=$logs/$1.log prog=$2 ready=$3 name=$1
  shift 3
  "$@" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    eval "$ready" && break
    sleep 0.1
  done
  eval "$ready" || { echo "offcpu_overhead: $1 did not attach:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.5
  pipe_seconds
  echo -n "$(ns_per_run "$prog") " >>"$logs/$name.ns"
  kill -TERM "$pid"
  wait "$pid" || true
}

# Per-program run time statistics cost a little on every run; they are on
# for all three setups alike, and restored afterwards.
stats=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
trap 'sysctl -qw kernel.bpf_stats_enabled="$stats"; rm -rf "$logs"' EXIT

declare -A times=([baseline]="" [rover]="" [offcputime]="")
for rep in $(seq "$reps"); do
  times[baseline]+="$(pipe_seconds) "
  times[rover]+="$(with_tracer rover rover_offcpu_btf "grep -q attached $logs/rover.log" "$rover" 3600 --min-us "$min_us") "
  times[offcputime]+="$(with_tracer offcputime sched_switch "prog_loaded sched_switch" "$offcputime" -m "$min_us") "
  echo "round $rep of $reps done" >&2
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
base=$(echo "${times[baseline]}" | median)
echo "perf bench sched pipe -l $loops${cpu:+ on CPU $cpu}, $reps rounds, minimum block ${min_us} us"
printf '%-12s %-10s %-8s %-12s %s\n' tool median ratio "ns/run" "all runs (s)"
for tool in baseline rover offcputime; do
  m=$(echo "${times[$tool]}" | median)
  ns=-
  [ -f "$logs/$tool.ns" ] && ns=$(median <"$logs/$tool.ns")
  printf '%-12s %-10s %-8s %-12s %s\n' "$tool" "${m}s" "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2fx", a / b}')" "$ns" "${times[$tool]}"
done
