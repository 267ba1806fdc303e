#!/usr/bin/env bash
# tests/vm/run.sh KERNEL: runs rover's kernel-facing tests inside a QEMU
# guest booted from one of Debian's cloud kernels, and exits 0 only when they
# all pass there.
#
#   KERNEL   5.10 (Debian 11, suite bullseye), 6.1 (Debian 12, bookworm),
#            6.12 (bookworm-backports)
#
# Run as root on a Debian 12 machine (the project's CI machine). What it does:
#  1. Fetches the newest linux-image-*-cloud-amd64 of the kernel's suite with
#     `apt-get download`, through a private apt configuration that names only
#     that suite (nothing is added to the host's sources or its package lists,
#     so an interrupted run leaves apt as it was), and caches the package in
#     $ROVER_VM_CACHE (default /var/cache/rover-vm).
#  2. Builds the test binaries on the host (`cargo test --release --no-run`)
#     and picks the kernel-facing ones (see GUEST_EXTRA_TESTS below).
#  3. Boots the kernel under qemu-system-x86_64 with software emulation
#     (TCG; nested KVM is not dependable on this machine), 2 vCPUs, 4 GiB.
#     The guest's root is the host's root file system, shared read-only with
#     virtiofs (Debian's cloud kernels have no 9p, but have virtiofs) under a
#     tmpfs overlay, so the tests find their fixtures, compilers and
#     reference tools where they are on the host. A small initramfs (static
#     busybox, the virtio/virtiofs/overlay modules of that kernel package)
#     mounts it and hands over to tests/vm/guest.sh.
#  4. guest.sh runs each test binary with CI=1 (no test may skip) and
#     ROVER_VM_GUEST=1 (testkit::in_guest(): tests that repeat kernel work
#     many times repeat it fewer times), stamps each output line with the
#     seconds since the binary started, and ends the
#     guest through the isa-debug-exit device with the number of binaries
#     that failed. The guest's console is this script's output, and is kept
#     in target/vm/KERNEL/console.log; the `rover-kernel:`/`rover-feature:`/
#     `rover-mode:` lines the feature tests print go to target/vm/KERNEL/features.txt
#     (tests/vm/table.sh turns those into the table of docs/kernel.md).
#
# Environment: ROVER_VM_CACHE (package cache), ROVER_VM_TIMEOUT (seconds for
# the guest, default 1800), ROVER_VM_CPU and ROVER_VM_ACCEL (qemu's -cpu and
# -accel, see below), ROVER_VM_TESTS (space-separated test binary names
# to run instead of the kernel-facing ones), ROVER_VM_FILTER (a libtest
# filter passed to every binary), ROVER_VM_TEST_TIMEOUT (seconds one test
# binary may take in the guest, default 600), ROVER_VM_LOGLEVEL (the guest
# kernel's console loglevel, default 4: warnings and worse).
set -euo pipefail

# The whole script is one function, read before it runs: editing this file
# while a run is under way does not change that run.
main() {
usage() {
  echo "usage: $0 KERNEL   (KERNEL: 5.10, 6.1 or 6.12)" >&2
  exit 2
}
[ $# -eq 1 ] || usage
kernel=$1
case "$kernel" in
  5.10) suite=bullseye ;;
  6.1) suite=bookworm ;;
  6.12) suite=bookworm-backports ;;
  *) usage ;;
esac

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
log() { echo "vm[$kernel]: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}
[ "$(id -u)" -eq 0 ] || die "run as root (apt-get, virtiofsd and the guest's BPF tests need it)"

# The test binaries that run in the guest: every test that loads programs.
# rover-core's kernel_* and session_* files are picked by name, so a new test
# file that loads programs is named that way; other binaries are listed here.
GUEST_EXTRA_TESTS="profile_example continuous_example"

# --- tools -----------------------------------------------------------------
need_packages=()
command -v qemu-system-x86_64 >/dev/null || need_packages+=(qemu-system-x86)
[ -x /usr/lib/qemu/virtiofsd ] || need_packages+=(qemu-system-common)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" || need_packages+=(busybox-static)
command -v gcc >/dev/null || need_packages+=(gcc libc6-dev)
if [ ${#need_packages[@]} -gt 0 ]; then
  log "installing ${need_packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

# --- the kernel ------------------------------------------------------------
cache=${ROVER_VM_CACHE:-/var/cache/rover-vm}/$suite
mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" "$cache/debs"
cat >"$cache/apt/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main
EOF
apt_opts=(
  -o "Dir::Etc::sourcelist=$cache/apt/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
  -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
)
image=
if apt-get "${apt_opts[@]}" update -qq 2>"$cache/apt/update.log"; then
  image=$(apt-cache "${apt_opts[@]}" show linux-image-cloud-amd64 |
    sed -n 's/^Depends: \(linux-image-[^ ,]*-cloud-amd64\).*/\1/p' | sort -V | tail -1)
else
  log "apt-get update of $suite failed ($(tail -1 "$cache/apt/update.log")); using the cached package if there is one"
fi
if [ -n "$image" ]; then
  deb=$(ls "$cache/debs/${image}"_*.deb 2>/dev/null | tail -1 || true)
  if [ -z "$deb" ]; then
    log "downloading $image from $suite"
    (cd "$cache/debs" && apt-get "${apt_opts[@]}" download -q "$image" >/dev/null)
    deb=$(ls "$cache/debs/${image}"_*.deb | tail -1)
  fi
else
  deb=$(ls "$cache"/debs/linux-image-*.deb 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$deb" ] || die "no kernel package for $suite: apt-get update failed and nothing is cached"
fi
log "kernel package $(basename "$deb")"
tree=$cache/tree/$(basename "$deb" .deb)
if [ ! -f "$tree/.done" ]; then
  rm -rf "$tree"
  mkdir -p "$tree"
  dpkg-deb -x "$deb" "$tree"
  touch "$tree/.done"
fi
vmlinuz=$(ls "$tree"/boot/vmlinuz-* | head -1)
release=${vmlinuz##*/vmlinuz-}
moddir=$tree/lib/modules/$release
[ -d "$moddir" ] || moddir=$tree/usr/lib/modules/$release
[ -d "$moddir" ] || die "no modules for $release in $deb"
[ -f "$moddir/modules.dep" ] || /bin/busybox depmod -b "$tree" "$release"

# --- the test binaries -----------------------------------------------------
out=$repo/target/vm/$kernel
rm -rf "$out"
mkdir -p "$out"
log "building the test binaries"
cargo test --workspace --release --no-run --message-format=json 2>"$out/build.log" >"$out/build.json" ||
  { cat "$out/build.log" >&2; die "cargo test --no-run failed"; }
# One line per test binary: NAME PACKAGE_DIR PATH (tests run from their
# package's directory, as under cargo).
grep '"reason":"compiler-artifact"' "$out/build.json" | grep '"kind":\["test"\]' | grep '"executable":"/' |
  while read -r line; do
    name=$(sed 's/.*"target":{[^}]*"name":"\([^"]*\)".*/\1/' <<<"$line")
    manifest=$(sed 's/.*"manifest_path":"\([^"]*\)".*/\1/' <<<"$line")
    exe=$(sed 's/.*"executable":"\([^"]*\)".*/\1/' <<<"$line")
    echo "$name $(dirname "$manifest") $exe"
  done | sort -u >"$out/all-tests"
wanted=${ROVER_VM_TESTS:-}
if [ -z "$wanted" ]; then
  wanted=$(awk '$1 ~ /^(kernel|session)_/ {print $1}' "$out/all-tests" | tr '\n' ' ')
  wanted="$wanted $GUEST_EXTRA_TESTS"
fi
: >"$out/tests"
for name in $wanted; do
  line=$(awk -v n="$name" '$1 == n' "$out/all-tests")
  [ -n "$line" ] || die "no test binary named $name (see $out/all-tests)"
  echo "$line" >>"$out/tests"
done
log "guest tests: $(awk '{print $1}' "$out/tests" | tr '\n' ' ')"
printf '%s\n' "${ROVER_VM_FILTER:-}" >"$out/filter"
echo "${ROVER_VM_TEST_TIMEOUT:-600}" >"$out/per-test-timeout"
gcc -static -O2 -o "$out/rover-vm-exit" tests/vm/exit.c

# --- the initramfs ---------------------------------------------------------
initrd_dir=$out/initramfs
mkdir -p "$initrd_dir"/{bin,dev,proc,sys,lower,rw,newroot,modules}
cp /bin/busybox "$initrd_dir/bin/busybox"
# The modules the guest needs to mount its root, with what they depend on,
# in load order (dependencies first); built-in ones are skipped.
declare -A loaded=()
order=()
add_module() {
  local mod=$1 deps dep
  [ -n "${loaded[$mod]:-}" ] && return 0
  loaded[$mod]=1
  deps=$(awk -v m="$mod" -F': ' '$1 == m {print $2}' "$moddir/modules.dep")
  for dep in $deps; do add_module "$dep"; done
  order+=("$mod")
}
for name in virtio_pci virtiofs overlay; do
  path=$(grep -E "^([^:]*/)?$name\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | cut -d: -f1 || true)
  if [ -n "$path" ]; then
    add_module "$path"
  elif grep -qE "/$name\.ko" "$moddir/modules.builtin"; then
    :
  else
    die "kernel $release has no $name (neither a module nor built in)"
  fi
done
: >"$initrd_dir/modules/order"
for mod in "${order[@]}"; do
  base=$(basename "$mod")
  case "$base" in
    *.ko.xz) xz -dc "$moddir/$mod" >"$initrd_dir/modules/${base%.xz}" ;;
    *.ko.zst) zstd -qdc "$moddir/$mod" >"$initrd_dir/modules/${base%.zst}" ;;
    *.ko.gz) gzip -dc "$moddir/$mod" >"$initrd_dir/modules/${base%.gz}" ;;
    *) cp "$moddir/$mod" "$initrd_dir/modules/$base" ;;
  esac
  base=${base%.xz}
  base=${base%.zst}
  echo "${base%.gz}" >>"$initrd_dir/modules/order"
done
cp tests/vm/init "$initrd_dir/init"
# The guest runs a copy of guest.sh, so editing it does not change a run.
cp tests/vm/guest.sh "$out/guest.sh"
chmod +x "$initrd_dir/init"
(cd "$initrd_dir" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$out/initrd.gz"

# --- the guest -------------------------------------------------------------
sock=$out/virtiofs.sock
# virtiofsd serves a read-only bind mount of / in its own mount namespace, so
# the guest cannot write to the host whatever it does (the guest mounts it
# read-only as well). Only the root file system is shared, not the host's
# /proc, /sys, /dev or other mounts.
unshare -m --propagation private sh -c '
  mkdir -p "$1" && mount --bind / "$1" && mount -o remount,bind,ro "$1" &&
  exec /usr/lib/qemu/virtiofsd --socket-path="$2" -o source="$1" -o cache=always -o sandbox=chroot -o log_level=err
' sh "$out/root" "$sock" 2>"$out/virtiofsd.log" &
virtiofsd=$!
cleanup() {
  kill "$virtiofsd" 2>/dev/null || true
  wait "$virtiofsd" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
  [ -S "$sock" ] && break
  sleep 0.1
done
[ -S "$sock" ] || die "virtiofsd did not start"

# The CPU: QEMU 7.2's `max` model under TCG, without two features whose
# emulation broke Debian's 6.12 guest here: with 5-level paging (la57) it
# corrupted a list while probing virtio at boot, and with cmpxchg16b (cx16)
# the slab allocator's per-CPU cmpxchg16b took a double fault with corrupt
# flags under multi-threaded TCG. Without cx16 the kernel uses its fallback.
cpu=${ROVER_VM_CPU:-max,la57=off,-cx16}
# One host thread for both vCPUs. With multi-threaded TCG, Debian's 5.10
# guest locked up in about one run in three while a test attached and
# detached tracepoints: the kernel patches the tracepoint's call site with
# text_poke_bp (an int3, then the new bytes, then an IPI to every CPU), and
# the other vCPU kept re-entering the int3 handler with interrupts off,
# never answering the IPI (soft lockup in smp_call_function_single). QEMU's
# cross-vCPU handling of modified code is the suspect; one thread runs the
# vCPUs in turn and leaves no such window.
accel=${ROVER_VM_ACCEL:-tcg,thread=single}
log "booting $release (-accel $accel, 2 vCPUs, 4 GiB, -cpu $cpu)"
started=$(date +%s)
set +e
timeout --foreground "${ROVER_VM_TIMEOUT:-1800}" qemu-system-x86_64 \
  -accel "$accel" -cpu "$cpu" -smp 2 -m 4G \
  -object memory-backend-memfd,id=mem,size=4G,share=on -numa node,memdev=mem \
  -nodefaults -display none -no-reboot \
  -chardev stdio,id=console,signal=off -serial chardev:console \
  -chardev socket,id=vfs,path="$sock" -device vhost-user-fs-pci,chardev=vfs,tag=hostroot \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$vmlinuz" -initrd "$out/initrd.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=${ROVER_VM_LOGLEVEL:-4} rover.out=$out" \
  </dev/null 2>&1 | tee "$out/console.log"
qemu=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - started))
grep -aE '^rover-(kernel|feature|mode):' "$out/console.log" | tr -d '\r' >"$out/features.txt" || true
# isa-debug-exit: the guest wrote STATUS, qemu exited with STATUS * 2 + 1.
if [ "$qemu" -eq 124 ]; then
  die "the guest did not finish within ${ROVER_VM_TIMEOUT:-1800} s ($release)"
elif [ $((qemu % 2)) -eq 1 ]; then
  failed=$((qemu / 2))
  if [ "$failed" -eq 0 ]; then
    log "passed on $release in ${elapsed} s"
    exit 0
  fi
  die "$failed test binaries failed on $release (${elapsed} s); their output is above and in $out/console.log"
else
  die "the guest ended without a result (qemu exit $qemu; a kernel panic or power-off) on $release"
fi
}
main "$@"
