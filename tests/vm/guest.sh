#!/bin/bash
# Runs inside the guest as its first process, on the host's root file system
# (read-only, under a tmpfs overlay, so /tmp and the rest are writable; no
# tmpfs goes over /tmp, which would hide a checkout under it): mounts what the
# tests use, runs the test
# binaries tests/vm/run.sh listed in OUT/tests with CI=1, and ends the guest
# with the number of binaries that failed (through isa-debug-exit).
out=$1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up 2>/dev/null || /bin/busybox ip link set lo up 2>/dev/null
hostname rover-vm

export PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# ROVER_VM_GUEST: testkit::in_guest(), for tests that repeat kernel work.
export HOME=/root CI=1 ROVER_VM_GUEST=1 RUST_BACKTRACE=1 TERM=dumb
filter=$(cat "$out/filter")
per_test=$(cat "$out/per-test-timeout")
echo "rover-vm: kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB"
failed=0
while read -r name dir path; do
  echo "rover-vm: === $name"
  start=$(date +%s)
  # shellcheck disable=SC2086
  # Each line of output is stamped with the seconds since the binary
  # started, so a run's log shows where its time went.
  (cd "$dir" && CARGO_MANIFEST_DIR=$dir timeout -k 10 "$per_test" "$path" --nocapture $filter) 2>&1 |
    (SECONDS=0; while IFS= read -r line; do printf '[%4d] %s\n' "$SECONDS" "$line"; done)
  status=${PIPESTATUS[0]}
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "rover-vm: === $name: TIMED OUT after $per_test s (the test that printed no result above hung)"
  fi
  echo "rover-vm: === $name: exit $status in $(($(date +%s) - start)) s"
  [ "$status" -eq 0 ] || failed=$((failed + 1))
done <"$out/tests"
echo "rover-vm: $failed test binaries failed"
"$out/rover-vm-exit" "$failed"
# Not reached unless isa-debug-exit is missing.
echo o >/proc/sysrq-trigger
sleep 10
