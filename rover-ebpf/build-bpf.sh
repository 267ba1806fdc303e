#!/usr/bin/env bash
# build-bpf.sh: builds rover's eBPF programs (bpf/*.bpf.c) into the committed
# objects obj/*.bpf.o. With --check, builds into a temporary folder and fails
# unless the result is byte-for-byte the committed objects.
#
# The build is reproducible: it runs from this folder with relative paths,
# maps the compilation folder to ".", and strips DWARF (the BTF that CO-RE
# and aya need stays), so no absolute path or timestamp reaches the objects.
set -euo pipefail
cd "$(dirname "$0")"

clang=${CLANG:-clang-19}
strip=${LLVM_STRIP:-llvm-strip-19}
# Each object and the source it is built from, with its defines: the
# `_unwind` variants add the in-kernel unwinder (bpf/unwind.h).
programs=(oncpu offcpu probe procevents oncpu_unwind offcpu_unwind)
source_of() { echo "${1%_unwind}"; }
defines_of() { case $1 in *_unwind) echo -DROVER_UNWIND ;; esac; }

build() {
  local out=$1
  for prog in "${programs[@]}"; do
    "$clang" -target bpf -O2 -g -Wall -Werror \
      -fdebug-compilation-dir=. -fdebug-prefix-map="$PWD"=. \
      $(defines_of "$prog") -I bpf -c "bpf/$(source_of "$prog").bpf.c" -o "$out/$prog.bpf.o"
    "$strip" -g "$out/$prog.bpf.o"
  done
}

if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  build "$tmp"
  status=0
  for prog in "${programs[@]}"; do
    if cmp -s "$tmp/$prog.bpf.o" "obj/$prog.bpf.o"; then
      echo "build-bpf: obj/$prog.bpf.o matches bpf/$(source_of "$prog").bpf.c"
    else
      echo "build-bpf: obj/$prog.bpf.o is stale or not reproducible: run rover-ebpf/build-bpf.sh and commit" >&2
      status=1
    fi
  done
  exit $status
fi

mkdir -p obj
build obj
echo "build-bpf: built ${programs[*]/%/.bpf.o} into obj/"
