#!/usr/bin/env bash
# Counts the public items of a crate from its rustdoc output: the items
# (modules, types, functions, constants: rustdoc's all.html), the inherent
# methods of its types, and their public fields and enum variants.
# Usage: scripts/public-items.sh [CRATE]   (default rover-core)
# FEATURES=push scripts/public-items.sh counts with those features on.
set -euo pipefail
cd "$(dirname "$0")/.."
crate="${1:-rover-core}"
dir="target/doc/${crate//-/_}"
rm -rf "$dir"
cargo doc -q -p "$crate" --no-deps ${FEATURES:+--features "$FEATURES"}
python3 - "$dir" <<'PY'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
items = re.findall(r'<li><a href="([^"]+)">', (root / "all.html").read_text())
modules = {p.parent for p in root.rglob("index.html")} - {root}
methods = fields = 0
for href in items:
    page = (root / href).read_text()
    # Inherent impls come before the trait implementations section.
    inherent = page.split('id="trait-implementations"')[0]
    inherent = inherent.split('id="synthetic-implementations"')[0]
    methods += len(set(re.findall(r'id="method\.([A-Za-z0-9_]+)"', inherent)))
    methods += len(set(re.findall(r'id="associatedconstant\.([A-Za-z0-9_]+)"', inherent)))
    fields += len(set(re.findall(r'id="(?:structfield|variant)\.([A-Za-z0-9_]+)"', page)))
print(f"items: {len(items)} (+{len(modules)} modules), inherent methods: {methods}, "
      f"fields and variants: {fields}, total: {len(items) + len(modules) + methods + fields}")
PY
