#!/usr/bin/env bash
# stack_copy.sh: rover's in-kernel unwinder against copying each sample's
# user stack to user space and unwinding it there with framehop (issue 9:
# "if a user-space unwinder beats the in-kernel walk for on-CPU sampling,
# it may be offered as an option; record the measurement either way").
#
# One busy process (benches/fixtures/spin.c, -O2 -fomit-frame-pointer, 12
# calls below main) is sampled on cpu-clock on every CPU, in turn by:
# - rover-fp and rover-dwarf: benches/unwind_session.rs --pid PID in each
#   stack mode (the profiler as a user runs it: kernel stacks, in-kernel
#   aggregation, windows symbolized);
# - copy: benches/stack_copy.rs --pid PID (kernel stack as rover takes it,
#   plus up to 16 KiB of user stack into a ring buffer, drained every 10 ms
#   and unwound in place with framehop; nothing symbolized or aggregated).
# WORKLOADS: `shallow` (the chain near the stack's top: the copy is what
# lies between it and the top, some 4-7 KiB), `full` (the same chain under
# a 32 KiB environment: every copy is the whole 16 KiB, main within it)
# and `deep` (the chain 64 KiB down the stack, below a large frame: every
# copy is 16 KiB and main is out of its reach). At each FREQUENCIES value, ROUNDS rounds
# of DURATION seconds; medians. Per sample it reports the perf_event
# program's run time (kernel.bpf_stats_enabled; rover's includes its tail
# calls), the profiler process's CPU, for copy the time framehop took, and
# whether the stacks reached main.
# Needs root, gcc and clang-19.
#
#   bash benches/stack_copy.sh     # ROUNDS=3 DURATION=12 FREQUENCIES="99 999"
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
duration=${DURATION:-12}
frequencies=${FREQUENCIES:-99 999}
workloads=${WORKLOADS:-shallow full deep}

[ "$(id -u)" = 0 ] || { echo "stack_copy: run as root" >&2; exit 1; }
command -v gcc >/dev/null || { echo "stack_copy: gcc not found" >&2; exit 1; }

runner_of() {
  cargo bench -p rover-benches --bench "$1" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1"
}
session=$(runner_of unwind_session)
copy=$(runner_of stack_copy)
[ -x "$session" ] && [ -x "$copy" ] || { echo "stack_copy: could not build the runners" >&2; exit 1; }

dir=$(mktemp -d)
spinner=
stats=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  [ -n "$spinner" ] && kill "$spinner" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled="$stats"
  rm -rf "$dir"
}
trap cleanup EXIT
gcc -O2 -fomit-frame-pointer -o "$dir/spin" benches/fixtures/spin.c
sysctl -qw kernel.bpf_stats_enabled=1

field() { grep -ho "\b$1=[^ ]*" "$2" | head -1 | cut -d= -f2; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

echo "one busy process, cpu-clock on $(nproc) CPUs, $duration s per run, $rounds rounds"
for workload in $workloads; do
  case $workload in
    shallow) "$dir/spin" & ;;
    full) ROVER_PAD=$(head -c 32768 /dev/zero | tr '\0' x) "$dir/spin" & ;;
    deep) "$dir/spin" 65536 & ;;
    *) echo "stack_copy: WORKLOADS are shallow, full and deep, not $workload" >&2; exit 1 ;;
  esac
  spinner=$!
  sleep 1
  for hz in $frequencies; do
    for round in $(seq "$rounds"); do
      for way in rover-fp rover-dwarf copy; do
        log=$dir/$workload-$hz-$way-$round.log
        case $way in
          rover-fp|rover-dwarf)
            "$session" --pid "$spinner" --mode on-cpu --frequency "$hz" --duration "$duration" \
              --stack-mode "${way#rover-}" >"$log" 2>&1 \
              || { echo "stack_copy: unwind_session failed:" >&2; cat "$log" >&2; exit 1; }
            samples=$(field samples "$log")
            prog_ns=$(grep -h 'name=rover_oncpu ' "$log" | grep -o 'run_time_ns=[0-9]*' | cut -d= -f2)
            cpu_s=$(field steady_cpu_s "$log")
            walked=$(grep -h '^walks:' "$log" | sed 's/^walks: //')
            ;;
          copy)
            "$copy" --pid "$spinner" --frequency "$hz" --duration "$duration" --warmup 3 >"$log" 2>&1 \
              || { echo "stack_copy: stack_copy failed:" >&2; cat "$log" >&2; exit 1; }
            samples=$(field samples "$log")
            prog_ns=$(awk -v s="$samples" '/^copy:/ { for (i = 1; i <= NF; i++) if ($i ~ /^ns_per_sample=/) { split($i, a, "="); print a[2] * s } }' "$log")
            secs=$(field seconds "$log")
            cpu_s=$(awk -v t="$secs" '/^user:/ { for (i = 1; i <= NF; i++) if ($i ~ /^cpu_pct=/) { split($i, a, "="); print a[2] * t / 100 } }' "$log")
            walked="bytes=$(field bytes_per_sample "$log") framehop_ns=$(field unwind_ns_per_sample "$log") reached_main=$(field reached_main_pct "$log")% lost=$(field lost "$log")"
            ;;
        esac
        kernel=$(awk -v n="$prog_ns" -v s="$samples" 'BEGIN { printf "%.0f", n / s }')
        user=$(awk -v c="$cpu_s" -v s="$samples" 'BEGIN { printf "%.0f", c * 1e9 / s }')
        echo "$workload $hz Hz round $round $way: samples=$samples kernel_ns=$kernel user_ns=$user $walked"
        echo "$kernel $user" >"$log.sum"
        [ "$way" = copy ] && echo "$(field unwind_ns_per_sample "$log")" >"$log.framehop"
      done
    done
  done
  kill "$spinner" 2>/dev/null || true
  wait "$spinner" 2>/dev/null || true
  spinner=
done

echo
echo "medians, ns per sample (kernel: the perf_event program; user: the profiler process's CPU; framehop: its unwinding alone)"
printf '%-8s %-6s %-12s %-10s %-10s %s\n' workload Hz way kernel user framehop
for workload in $workloads; do
  for hz in $frequencies; do
    for way in rover-fp rover-dwarf copy; do
      k=$(cat "$dir/$workload-$hz-$way"-*.log.sum | awk '{print $1}' | median)
      u=$(cat "$dir/$workload-$hz-$way"-*.log.sum | awk '{print $2}' | median)
      f=-
      [ "$way" = copy ] && f=$(cat "$dir/$workload-$hz-$way"-*.log.framehop | median)
      printf '%-8s %-6s %-12s %-10s %-10s %s\n' "$workload" "$hz" "$way" "$k" "$u" "$f"
    done
  done
done
