#!/usr/bin/env bash
# offcpu_overhead.sh: the kernel-side cost of rover's off-CPU program.
#
# Runs a context-switch-heavy workload, `perf bench sched pipe`, alone, with
# rover's off-CPU program attached to every process (examples/offcpu_attach,
# draining every second as a session would) walking user stacks with frame
# pointers (rover-fp) and unwinding them from tables (rover-dwarf), and with
# libbpf-tools' offcputime attached, alternating the four for REPS rounds,
# and reports the median time of each, the slowdown ratios, and the mean
# run time of each tracer's programs per sched_switch. Needs root.
#
# The ns per run are those of the tracer's own programs (read from the
# fdinfo of its program fds, never another process's programs of the same
# name), over the workload only (the difference of two readings around it).
# In Dwarf mode the off-CPU program is a chain of tail calls (the entry
# program rover_offcpu_btf, then rover_offcpu_btf_unwind for walks longer
# than one program holds): bpf_stats counts only the entry program, whose
# run time includes the programs it tail-calls (a tail call jumps into the
# next program and returns to the entry program's caller), so run_cnt is one
# per switch and the figure is the whole chain's cost per switch.
# SETTLE=S seconds between a tracer's attaching and the workload (default 3).
# MODES="fp dwarf" chooses which rover setups run (default both).
#
# WORKLOAD=deep replaces `perf bench sched pipe` (whose blocked stacks are
# 8 user frames, one run of the unwinder's step, so Dwarf mode hardly
# tail-calls there) by the same ping-pong over two pipes between two
# processes built here with -O2 -fomit-frame-pointer, each blocking 24
# calls below main (about 30 user frames: four steps of 8, three tail
# calls per switch). It prints its time as perf does.
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

workload=${WORKLOAD:-perf}
settle=${SETTLE:-3}
if [ "$workload" = deep ]; then
  command -v gcc >/dev/null || { echo "offcpu_overhead: WORKLOAD=deep needs gcc" >&2; exit 1; }
  cat >"$logs/deep.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static int to_child[2], to_parent[2];
static long loops;
volatile int sink;
__attribute__((noinline)) void pingpong(int parent) {
  char c = 0;
  for (long i = 0; i < loops; i++) {
    if (parent) {
      if (write(to_child[1], &c, 1) != 1 || read(to_parent[0], &c, 1) != 1) exit(1);
    } else {
      if (read(to_child[0], &c, 1) != 1 || write(to_parent[1], &c, 1) != 1) exit(1);
    }
  }
}
#define LEVEL(n, next) \
  __attribute__((noinline)) void level##n(int p) { \
    volatile char pad[8 * (n % 4) + 24]; pad[0] = (char)p; next(p); sink += pad[0]; }
LEVEL(24, pingpong) LEVEL(23, level24) LEVEL(22, level23) LEVEL(21, level22)
LEVEL(20, level21) LEVEL(19, level20) LEVEL(18, level19) LEVEL(17, level18)
LEVEL(16, level17) LEVEL(15, level16) LEVEL(14, level15) LEVEL(13, level14)
LEVEL(12, level13) LEVEL(11, level12) LEVEL(10, level11) LEVEL(9, level10)
LEVEL(8, level9) LEVEL(7, level8) LEVEL(6, level7) LEVEL(5, level6)
LEVEL(4, level5) LEVEL(3, level4) LEVEL(2, level3) LEVEL(1, level2)
int main(int argc, char **argv) {
  loops = argc > 1 ? atol(argv[1]) : 200000;
  if (pipe(to_child) || pipe(to_parent)) return 1;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  pid_t child = fork();
  if (child < 0) return 1;
  level1(child != 0);
  if (child == 0) return 0;
  waitpid(child, 0, 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("Total time: %.3f [sec]\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
  return 0;
}
EOF
  gcc -O2 -fomit-frame-pointer -o "$logs/deep" "$logs/deep.c"
fi

pipe_seconds() {
  local pin=()
  [ -n "$cpu" ] && pin=(taskset -c "$cpu")
  if [ "$workload" = deep ]; then
    "${pin[@]}" "$logs/deep" "$loops" | awk '/Total time/ {print $3}'
  else
    "${pin[@]}" perf bench sched pipe -l "$loops" | awk '/Total time/ {print $3}'
  fi
}

# Whether process $1 holds a BPF program fd (offcputime prints nothing
# until it ends, so its program's presence says it is attached).
holds_prog() {
  grep -qs '^prog_id:' /proc/"$1"/fdinfo/*
}

# "run_time_ns run_cnt" summed over the BPF programs process $1 holds.
prog_totals() {
  cat /proc/"$1"/fdinfo/* 2>/dev/null | awk '
    /^prog_id:/ { prog = 1 } /^run_time_ns:/ { ns += $2 } /^run_cnt:/ { runs += $2 }
    END { printf "%d %d\n", ns, runs }'
}

# Starts a tracer, waits until `$2` succeeds ($pid is the tracer's), runs
# the workload, records its programs' mean run time over the workload,
# stops the tracer.
with_tracer() {
  local name=$1 ready=$2
  local log=$logs/$name.log
  shift 2
  "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    eval "$ready" && break
    sleep 0.1
  done
  eval "$ready" || { echo "offcpu_overhead: $name did not attach:" >&2; cat "$log" >&2; exit 1; }
  # Settle: in Dwarf mode rover reads every process and builds their tables
  # on one worker thread after attaching; a workload started before that
  # queue is empty has its own binary's table queued behind them, and its
  # stacks stop early (TablePending), which is cheaper and not the steady
  # state. Every tracer waits alike.
  sleep "$settle"
  local ns0 runs0 ns1 runs1
  read -r ns0 runs0 < <(prog_totals "$pid")
  pipe_seconds
  read -r ns1 runs1 < <(prog_totals "$pid")
  echo -n "$(( runs1 > runs0 ? (ns1 - ns0) / (runs1 - runs0) : 0 )) " >>"$logs/$name.ns"
  echo -n "$(( runs1 - runs0 )) " >>"$logs/$name.runs"
  kill -TERM "$pid"
  wait "$pid" || true
}

# Per-program run time statistics cost a little on every run; they are on
# for all three setups alike, and restored afterwards.
stats=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
trap 'sysctl -qw kernel.bpf_stats_enabled="$stats"; rm -rf "$logs"' EXIT

modes=${MODES:-fp dwarf}
setups=(baseline)
for mode in $modes; do setups+=("rover-$mode"); done
setups+=(offcputime)
declare -A times=()
for rep in $(seq "$reps"); do
  times[baseline]+="$(pipe_seconds) "
  for mode in $modes; do
    times[rover-$mode]+="$(with_tracer "rover-$mode" "grep -q attached $logs/rover-$mode.log" \
      "$rover" 3600 --min-us "$min_us" --stack-mode "$mode") "
    grep -q "attached.*$([ "$mode" = fp ] && echo 'frame pointers' || echo 'unwinding from tables')" "$logs/rover-$mode.log" \
      || { echo "offcpu_overhead: rover-$mode did not walk as asked:" >&2; head -1 "$logs/rover-$mode.log" >&2; exit 1; }
  done
  times[offcputime]+="$(with_tracer offcputime 'holds_prog $pid' "$offcputime" -m "$min_us") "
  echo "round $rep of $reps done" >&2
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
base=$(echo "${times[baseline]}" | median)
name="perf bench sched pipe"
[ "$workload" = deep ] && name="a 24-calls-deep -fomit-frame-pointer pipe ping-pong"
echo "$name -l $loops${cpu:+ on CPU $cpu}, $reps rounds, minimum block ${min_us} us"
printf '%-12s %-10s %-8s %-8s %-10s %s\n' tool median ratio "ns/run" "runs" "all runs (s); ns/run of each"
for tool in "${setups[@]}"; do
  m=$(echo "${times[$tool]}" | median)
  ns=- runs=- all=
  if [ -f "$logs/$tool.ns" ]; then
    ns=$(median <"$logs/$tool.ns")
    runs=$(median <"$logs/$tool.runs")
    all="; $(cat "$logs/$tool.ns")"
  fi
  printf '%-12s %-10s %-8s %-8s %-10s %s\n' "$tool" "${m}s" "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2fx", a / b}')" "$ns" "$runs" "${times[$tool]}$all"
done
