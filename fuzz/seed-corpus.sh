#!/bin/sh
# Seeds fuzz/corpus/parse from HyperDbg's public script test cases (never committed:
# fuzz/corpus is gitignored). One file per script: the second line of each 4-line record of
# script-test-cases/*.txt, and each semantic-test-cases/*.ds whole.
#
# usage: fuzz/seed-corpus.sh [SUITE_DIR]   (default: /work/shared/hyperdbg-suite)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
suite=${1:-/work/shared/hyperdbg-suite}
out="$here/corpus/parse"
mkdir -p "$out"
if [ ! -d "$suite" ]; then
    echo "seed-corpus: $suite is absent; the corpus starts empty" >&2
    exit 0
fi
for f in "$suite"/script-test-cases/*.txt; do
    base=$(basename "$f" .txt)
    # Records are 4 lines (number, script, expected, $end$); blank lines between are skipped.
    awk -v dir="$out" -v base="$base" '
        NF == 0 { next }
        { n++ }
        n % 4 == 1 { num = $1 }
        n % 4 == 2 { file = dir "/" base "-" num ".txt"; print > file; close(file) }
    ' "$f"
done
for f in "$suite"/semantic-test-cases/*.ds; do
    cat "$f" > "$out/$(basename "$f")"
done
echo "seed-corpus: $(ls "$out" | wc -l) files in $out"
