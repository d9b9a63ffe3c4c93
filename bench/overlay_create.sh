#!/bin/sh
# strata overlay create --size 500 against the two ways people make a 500 MiB overlay by hand:
# Apptainer's (dd of zeros, then mkfs.ext3 -d with upper/ and work/) and the fast one
# (fallocate, then mkfs.ext3 -d). strata preallocates as well, and keeps the space allocated
# (mkfs is told not to discard it), verifies the ownership of upper/ and work/ with debugfs,
# and renames into place atomically. Prints the mean times, the ratios and the space each
# result really occupies.
#
# Usage: sh bench/overlay_create.sh     (STRATA=path/to/strata to pick the binary; TMPDIR for the
# scratch space, ~1.5 GiB). Uses hyperfine when installed, a plain timing loop otherwise.
set -eu

STRATA=${STRATA:-target/release/strata}
if [ ! -x "$STRATA" ]; then
    echo "bench/overlay_create.sh: $STRATA not found: run 'cargo build --release -p strata' or set STRATA" >&2
    exit 1
fi
STRATA=$(realpath "$STRATA")
MKFS=$(command -v mkfs.ext3 || echo /usr/sbin/mkfs.ext3)
RUNS=${RUNS:-10}
SIZE=${SIZE:-500}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-overlay.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
cd "$TMP"
mkdir -p stage/upper stage/work

# name, command (run by sh -c, the image removed before each run); prints mean seconds
mean() {
    name=$1 cmd=$2
    if command -v hyperfine >/dev/null 2>&1; then
        hyperfine --style none --warmup 2 --runs "$RUNS" --prepare 'rm -f img' \
            --export-csv "$name.csv" "$cmd" >/dev/null 2>&1
        awk -F, 'NR == 2 { print $2 }' "$name.csv"
    else
        total=0
        i=0
        while [ "$i" -lt "$RUNS" ]; do
            rm -f img
            t0=$(date +%s%N)
            sh -c "$cmd" >/dev/null 2>&1
            t1=$(date +%s%N)
            total=$((total + t1 - t0))
            i=$((i + 1))
        done
        awk -v t="$total" -v n="$RUNS" 'BEGIN { printf "%.6f\n", t / n / 1e9 }'
    fi
}

allocated() { rm -f img; sh -c "$1" >/dev/null 2>&1; du -k img | cut -f1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }

STRATA_CMD="$STRATA overlay create --size $SIZE img"
DD_CMD="dd if=/dev/zero of=img bs=1M count=$SIZE status=none && $MKFS -q -F -d stage img"
FALLOC_CMD="fallocate -l ${SIZE}M img && $MKFS -q -F -d stage img"

s=$(mean strata "$STRATA_CMD")
d=$(mean dd "$DD_CMD")
f=$(mean fallocate "$FALLOC_CMD")
sa=$(allocated "$STRATA_CMD")
da=$(allocated "$DD_CMD")
fa=$(allocated "$FALLOC_CMD")

echo "overlay image creation, $SIZE MiB, $RUNS runs each (mean; space allocated afterwards)"
printf '  %-36s %10s   %8s KiB\n' "strata overlay create" "$(ms "$s")" "$sa"
printf '  %-36s %10s   %8s KiB\n' "dd + mkfs.ext3 -d (Apptainer)" "$(ms "$d")" "$da"
printf '  %-36s %10s   %8s KiB\n' "fallocate + mkfs.ext3 -d" "$(ms "$f")" "$fa"
echo "  dd+mkfs / strata:        $(ratio "$d" "$s")x"
echo "  fallocate+mkfs / strata: $(ratio "$f" "$s")x"
