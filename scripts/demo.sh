#!/usr/bin/env bash
# The main job on the embedded default: initialise (SQLite catalog + local-folder backend),
# put a small tree, list it with sizes/hashes/replicas, get it back and compare byte for byte,
# then check the catalog against the backend.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VDIR=${VDIR:-.venv/bin/vdir}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/sample/nested"
printf 'hello, multicloud world\n' > "$work/sample/hello.txt"
head -c 3145728 /dev/urandom > "$work/sample/nested/random.bin"
: > "$work/sample/empty"

set -x
$VDIR --version
$VDIR init
$VDIR put -r --force "$work/sample" /demo/
$VDIR ls -l -R /demo
$VDIR stat /demo/sample/hello.txt
$VDIR cat /demo/sample/hello.txt
$VDIR get -r --force /demo/sample "$work/back"
diff -r "$work/sample" "$work/back"
$VDIR du /demo
$VDIR fsck
$VDIR backend list
set +x
echo "demo: all files came back byte-identical"
