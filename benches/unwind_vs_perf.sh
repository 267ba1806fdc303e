#!/usr/bin/env bash
# unwind_vs_perf.sh: rover's user stacks beside perf's DWARF unwinding, on
# the same process at the same time.
#
# Builds one of the unwinder's test fixtures (rover-core/tests/
# session_fixtures/unwind/) with -O2 -fomit-frame-pointer, as the tests do,
# starts it, and records it for SECS seconds at once with
#   perf record -e cpu-clock -F HZ --call-graph dwarf,16384
# (perf copies 16 KiB of stack per sample and unwinds offline) and with the
# profile example (--stack-mode MODE; rover unwinds in the kernel). Both are
# folded into user stacks, root first, from `main` down (frames above main,
# libc's start code, are dropped: perf names libc's inlined start frames
# differently), names normalised to perf's (no C++ parameter lists or return
# types, a frame neither can name is [unknown], as is rover's __restore_rt,
# which perf cannot name). It prints the TOP heaviest stacks of each side by side with their
# shares, and whether they agree: every stack of at least 2% on either side
# has the same share on the other, within sampling error (3 standard
# deviations, at least 2 points). Exit status 0 when they agree, 1 when not.
# Needs root, gcc (g++ for cxx), perf and python3.
#
#   bash benches/unwind_vs_perf.sh                     # FIXTURE=mix MODE=auto SECS=10 HZ=99 TOP=5
#   FIXTURE=signal bash benches/unwind_vs_perf.sh      # mix | cpu | signal | cxx
#   MODE=frame-pointers bash benches/unwind_vs_perf.sh # auto | dwarf | frame-pointers
#   PROFILE=/other/build/profile bash benches/unwind_vs_perf.sh
#   BUILD=frame-pointers bash benches/unwind_vs_perf.sh   # the control: the fixture with frame pointers
#
# The folded files and perf.data are kept in OUT (default
# target/bench-unwind-vs-perf/).
set -euo pipefail
cd "$(dirname "$0")/.."

fixture=${FIXTURE:-mix}
mode=${MODE:-auto}
secs=${SECS:-10}
hz=${HZ:-99}
top=${TOP:-5}
target=${CARGO_TARGET_DIR:-target}
out=${OUT:-$target/bench-unwind-vs-perf}

die() {
  echo "unwind_vs_perf: $*" >&2
  exit 2
}
[ "$(id -u)" = 0 ] || die "run as root"
case "$fixture" in
  mix | cpu | signal) compiler=gcc ;;
  cxx) compiler=g++ ;;
  *) die "FIXTURE is mix, cpu, signal or cxx, not $fixture" ;;
esac
for tool in "$compiler" perf python3; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

if [ -n "${PROFILE:-}" ]; then
  profile=$PROFILE
else
  cargo build --release --quiet --example profile
  profile=$target/release/examples/profile
fi

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
src=rover-core/tests/session_fixtures/unwind
case "${BUILD:-no-frame-pointers}" in
  no-frame-pointers) fp=-fomit-frame-pointer ;;
  frame-pointers) fp=-fno-omit-frame-pointer ;;
  *) die "BUILD is no-frame-pointers or frame-pointers, not $BUILD" ;;
esac
flags=(-O2 -g "$fp" -fno-optimize-sibling-calls -fno-inline)
case "$fixture" in
  cxx)
    g++ "${flags[@]}" -o "$out/deepxx" "$src/deep.cpp"
    cmd=("$out/deepxx")
    ;;
  *)
    gcc "${flags[@]}" -fPIC -shared -o "$out/libdeep.so" "$src/libdeep.c"
    gcc "${flags[@]}" -o "$out/deep" "$src/deep.c" -L"$out" -ldeep -Wl,-rpath,"$out"
    cmd=("$out/deep" "$fixture")
    ;;
esac

# The fixture says "ready" once it is in its chain, then spins until killed.
fifo=$out/ready
mkfifo "$fifo"
"${cmd[@]}" >"$fifo" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
read -r line <"$fifo"
[ "$line" = ready ] || die "the fixture said '$line', not ready"
echo "fixture $fixture ($fp, pid $pid): perf and rover --stack-mode $mode for $secs s at $hz Hz" >&2

perf record -q -e cpu-clock -F "$hz" --call-graph dwarf,16384 -p "$pid" \
  -o "$out/perf.data" -- sleep "$secs" 2>"$out/perf-record.log" &
perf_pid=$!
"$profile" --pid "$pid" --duration "$secs" --frequency "$hz" --stack-mode "$mode" \
  --folded "$out/rover.folded" >"$out/rover.log" 2>&1 ||
  { cat "$out/rover.log" >&2; die "the profile example failed"; }
wait "$perf_pid" || { cat "$out/perf-record.log" >&2; die "perf record failed"; }
kill "$pid" 2>/dev/null || true
perf script -i "$out/perf.data" -F comm,pid,ip,sym,dso >"$out/perf.script" 2>"$out/perf-script.log"

python3 - "$out/perf.script" "$out/rover.folded" "$top" <<'EOF'
import math
import sys
from collections import Counter

perf_script, rover_folded, top = sys.argv[1], sys.argv[2], int(sys.argv[3])


def plain(name):
    """A C++ name as perf prints it: no parameter list, no return type."""
    if name.endswith(")") and not name.endswith("operator()"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    depth, cut = 0, 0
    for i, c in enumerate(name):
        if c in "<(":
            depth += 1
        elif c in ">)":
            depth -= 1
        elif c == " " and depth == 0:
            cut = i + 1
    return name[cut:]


def name_of(frame):
    """perf's name or [unknown] for a frame neither side could name (rover
    prints those as [module+0xOFFSET])."""
    return "[unknown]" if frame.startswith("[") else plain(frame)


def from_main(frames):
    """Root-first user frames from main down (all of them if main is not there)."""
    return tuple(frames[frames.index("main"):] if "main" in frames else frames)


def perf_stacks(path):
    stacks, frames = Counter(), None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if frames is not None:
                stacks[from_main([name_of(f) for f in reversed(frames)])] += 1
            frames = None
        elif not line[0].isspace():
            frames = []
        elif frames is not None:
            # "\t    1190 _start+0x20 (/path/deep)"
            fields = line.split(None, 1)
            address, rest = fields[0], fields[1] if len(fields) > 1 else "[unknown]"
            if address.startswith("ffffffff") or "[kernel.kallsyms]" in rest:
                continue
            symbol = rest.rsplit(" (", 1)[0]
            if "+0x" in symbol:
                symbol = symbol.rsplit("+0x", 1)[0]
            frames.append(symbol)
    if frames is not None:
        stacks[from_main([name_of(f) for f in reversed(frames)])] += 1
    return stacks


def rover_stacks(path):
    stacks = Counter()
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        text, value = line.rsplit(" ", 1)
        # comm first; kernel frames end in _[k] ([[kernel.kallsyms]+0x...]
        # when unresolved). perf cannot name glibc's signal trampoline (it
        # looks up its return address - 1, before the symbol), so rover's
        # __restore_rt is compared as perf's [unknown].
        frames = [
            "[unknown]" if f == "__restore_rt" else f
            for f in text.split(";")[1:]
            if not f.endswith("_[k]") and not f.startswith("[[kernel.kallsyms]")
        ]
        stacks[from_main([name_of(f) for f in frames])] += int(value)
    return stacks


perf, rover = perf_stacks(perf_script), rover_stacks(rover_folded)
perf_total, rover_total = sum(perf.values()), sum(rover.values())
if not perf_total or not rover_total:
    print(f"no samples: perf {perf_total}, rover {rover_total}")
    sys.exit(1)


def share(stacks, total, stack):
    return 100.0 * stacks.get(stack, 0) / total


def leaf_view(stack):
    return ";".join(stack[-3:]) + f" ({len(stack)} frames{', from main' if stack[:1] == ('main',) else ', no main'})"


print(f"perf: {perf_total} samples, {len(perf)} stacks; rover: {rover_total} samples, {len(rover)} stacks")
print(f"{'rank':>4}  {'perf %':>7} {'rover %':>7}  perf's stack (last 3 frames)  |  rover's")
perf_top, rover_top = perf.most_common(top), rover.most_common(top)
for rank in range(max(len(perf_top), len(rover_top))):
    p = perf_top[rank][0] if rank < len(perf_top) else None
    r = rover_top[rank][0] if rank < len(rover_top) else None
    ps = share(perf, perf_total, p) if p else 0.0
    rs = share(rover, rover_total, r) if r else 0.0
    print(f"{rank + 1:>4}  {ps:>6.1f}% {rs:>6.1f}%  {leaf_view(p) if p else '-'}  |  "
          f"{'same' if p == r else (leaf_view(r) if r else '-')}")
for name, stacks in (("perf", perf), ("rover", rover)):
    print(f"{name}'s heaviest stack: {';'.join(stacks.most_common(1)[0][0])}")

# Agreement: every stack of at least 2% on either side has the same share
# on the other, within 3 standard deviations of the difference of two
# independent sample shares (at least 2 points): the two profilers take
# their samples on timers of their own.
def tolerance(stack):
    p = (perf.get(stack, 0) + rover.get(stack, 0)) / (perf_total + rover_total)
    return max(2.0, 300.0 * math.sqrt(p * (1 - p) * (1 / perf_total + 1 / rover_total)))


checked = [s for s in set(perf) | set(rover)
           if max(share(perf, perf_total, s), share(rover, rover_total, s)) >= 2.0]
off = [s for s in checked
       if abs(share(perf, perf_total, s) - share(rover, rover_total, s)) > tolerance(s)]
agree = not off
print(f"top {top} agree: {'yes' if agree else 'no'} ({len(checked)} stacks of at least 2% compared"
      + ("" if agree else f"; {len(off)} differ by more than their tolerance, e.g. "
                          f"perf {share(perf, perf_total, off[0]):.1f}% vs rover "
                          f"{share(rover, rover_total, off[0]):.1f}% (tolerance "
                          f"{tolerance(off[0]):.1f} points) for {leaf_view(off[0])}") + ")")
sys.exit(0 if agree else 1)
EOF
