#!/usr/bin/env bash
# tests/vm/table.sh: prints the kernel x feature table of docs/kernel.md
# from the `rover-feature:` and `rover-mode:` lines that the feature tests
# (and the `rover-kernel:` line) printed in each guest (target/vm/KERNEL/features.txt, written by
# tests/vm/run.sh KERNEL) and on this host (run here, as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target/vm/host
CI=1 cargo test --release -q -p rover-core --test kernel_features -- --nocapture 2>/dev/null |
  grep -aoE 'rover-(kernel|feature|mode):.*' >target/vm/host/features.txt || true
columns=()
for kernel in 5.10 6.1 6.12 host; do
  [ -s "target/vm/$kernel/features.txt" ] && columns+=("$kernel")
done
[ ${#columns[@]} -gt 0 ] || { echo "no results: run tests/vm/run.sh KERNEL first" >&2; exit 1; }
awk -v columns="${columns[*]}" -v host="$(uname -r)" '
  BEGIN { n = split(columns, col, " ") }
  {
    kernel = FILENAME; sub(/^target\/vm\//, "", kernel); sub(/\/features.txt$/, "", kernel)
    line = $0; sub(/^rover-/, "", line)
    kind = substr(line, 1, index(line, ":") - 1); line = substr(line, index(line, ":") + 2)
    if (kind == "kernel") { if (line !~ /BTF hidden/) release[kernel] = line; next }
    name = substr(line, 1, index(line, ": ") - 1); value = substr(line, index(line, ": ") + 2)
    key = kind ": " name
    if (!(key in seen)) { seen[key] = 1; order[++rows] = key; label[key] = name; type[key] = kind }
    # A refusal keeps its first clause: the message names what is missing.
    if (value ~ /^refused: /) {
      rest = substr(value, 10)
      if (index(rest, ": ") > 0) rest = substr(rest, 1, index(rest, ": ") - 1)
      value = "refused: " rest
    }
    cell[key, kernel] = value
  }
  END {
    header = "| |"; rule = "|---|"
    for (i = 1; i <= n; i++) {
      k = col[i]; r = (k in release) ? release[k] : (k == "host" ? host : k)
      header = header " " (k == "host" ? "this host " : "") r " |"; rule = rule "---|"
    }
    print header; print rule
    # Features, then the modes, then the modes with BTF hidden (the tests
    # print them in parallel, in either order).
    for (t = 0; t < 3; t++) {
      want = t == 0 ? "feature" : "mode"
      for (j = 1; j <= rows; j++) {
        key = order[j]; if (type[key] != want) continue
        if (t > 0 && (t == 2) != (label[key] ~ /BTF hidden/)) continue
        line = "| " (want == "feature" ? "`" label[key] "`" : label[key]) " |"
        for (i = 1; i <= n; i++) {
          v = ((key, col[i]) in cell) ? cell[key, col[i]] : "(not run)"
          line = line " " v " |"
        }
        print line
      }
    }
  }' $(for k in "${columns[@]}"; do echo "target/vm/$k/features.txt"; done)
# Then one row per test binary the guests ran: each mode of each session
# (pids, every process, cgroup; on-CPU and off-CPU), the programs and their
# lifecycle, with how long it took in the guest.
for kernel in "${columns[@]}"; do
  [ "$kernel" = host ] && continue
  grep -aoE '^rover-vm: === [a-z_]+: exit [0-9]+ in [0-9]+ s' "target/vm/$kernel/console.log" |
    awk -v k="$kernel" '{print k, $3, $5, $7}' | tr -d ':'
done | awk -v columns="${columns[*]}" '
  BEGIN { n = split(columns, col, " ") }
  {
    if (!($2 in seen)) { seen[$2] = 1; order[++rows] = $2 }
    cell[$2, $1] = ($3 == 0 ? "passed" : "FAILED") " (" $4 " s)"
  }
  END {
    for (j = 1; j <= rows; j++) {
      line = "| test `" order[j] "` |"
      for (i = 1; i <= n; i++) {
        if (col[i] == "host") v = "(run by cargo test on the host)"
        else v = ((order[j], col[i]) in cell) ? cell[order[j], col[i]] : "(not run)"
        line = line " " v " |"
      }
      print line
    }
  }'

