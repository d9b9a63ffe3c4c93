#!/bin/sh
# strata sif on big images: `list` must cost the same on a 4 GiB image as on an empty one (it
# reads only the header and descriptor table), and `add` of a 1 GiB partition should cost about
# what `cp` of the same file costs (data streamed with copy_file_range, holes kept).
#
# Usage: sh bench/sif.sh     (STRATA=path/to/strata to pick the binary; TMPDIR for the scratch
# space, which needs ~3 GiB free). Uses hyperfine when installed, a plain timing loop otherwise.
set -eu

STRATA=${STRATA:-target/release/strata}
if [ ! -x "$STRATA" ]; then
    echo "bench/sif.sh: $STRATA not found: run 'cargo build --release -p strata' or set STRATA" >&2
    exit 1
fi
STRATA=$(realpath "$STRATA")
RUNS=${RUNS:-5}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-sif.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
cd "$TMP"

# mean seconds of a quick command over many runs
mean() {
    name=$1 cmd=$2
    if command -v hyperfine >/dev/null 2>&1; then
        hyperfine -N --style none --warmup 3 --runs $((RUNS * 10)) --export-csv "$name.csv" "$cmd" >/dev/null 2>&1
        awk -F, 'NR == 2 { print $2 }' "$name.csv"
    else
        t0=$(date +%s%N)
        i=0
        while [ "$i" -lt $((RUNS * 10)) ]; do
            $cmd >/dev/null
            i=$((i + 1))
        done
        t1=$(date +%s%N)
        awk -v t="$((t1 - t0))" -v n="$((RUNS * 10))" 'BEGIN { printf "%.6f\n", t / n / 1e9 }'
    fi
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.3f ms", s * 1000 }'; }

echo "strata: $STRATA"
echo "scratch: $TMP ($(df -T . | awk 'NR == 2 { print $2 }'))"

# 1. A 4 GiB sparse image: new + add of a sparse 4 GiB squashfs-typed partition.
truncate -s 4G sparse.img
"$STRATA" sif new big.sif
"$STRATA" sif add --datatype 4 --partfs 1 --parttype 2 --partarch 2 --groupid 1 big.sif sparse.img
"$STRATA" sif new small.sif
echo "big.sif: $(stat -c %s big.sif) bytes, $(du -k big.sif | cut -f1) KiB allocated"

list_big=$(mean list-big "$STRATA sif list big.sif")
list_small=$(mean list-small "$STRATA sif list small.sif")
echo "sif list, 4 GiB image:  $(ms "$list_big")"
echo "sif list, empty image:  $(ms "$list_small")"
echo "ratio list 4 GiB / empty: $(ratio "$list_big" "$list_small")"

# 2. add of a 1 GiB (non-sparse) partition vs cp of the same file, alternating runs (so that
# neither always follows the other's writeback), each after a sync; median of $RUNS pairs.
now() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) / 1e9 }'; }
dd if=/dev/urandom of=data.img bs=1M count=1024 status=none
cat data.img >/dev/null # in the page cache for both
: >add.times
: >cp.times
i=0
while [ "$i" -lt "$RUNS" ]; do
    rm -f t.sif c.img
    "$STRATA" sif new t.sif
    sync
    t0=$(now)
    "$STRATA" sif add --datatype 4 --partfs 2 --parttype 4 --partarch 2 --groupid 1 t.sif data.img
    t1=$(now)
    echo $((t1 - t0)) >>add.times
    rm -f t.sif
    sync
    t0=$(now)
    cp data.img c.img
    t1=$(now)
    echo $((t1 - t0)) >>cp.times
    i=$((i + 1))
done
add=$(median <add.times)
cp_=$(median <cp.times)
echo "sif add 1 GiB: $(ms "$add") (median of $RUNS)"
echo "cp 1 GiB:      $(ms "$cp_") (median of $RUNS)"
echo "ratio add / cp: $(ratio "$add" "$cp_")"
