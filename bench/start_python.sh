#!/bin/sh
# Start-to-exit of `python3 -c pass` from a compressed image, the shape of a real HPC job step
# (a dynamic interpreter, its shared libraries and a standard library of small files), strata
# side by side with its peers in one run:
#
#   strata               strata exec IMG python3 -c pass (fresh: nothing else of the image runs)
#   strata-ra-kernel     the same with 'squashfs readahead = kernel' (the kernel's read-ahead)
#   bwrap (premounted)   bubblewrap over the same squashfs mounted once beforehand
#   ch-run               charliecloud's ch-run on the same squashfs (squashfuse)
#
# The image is built at bench time from the host's python3 (binary, libraries, stdlib) with
# `strata build`. Run as root (temporary install, temporary user). Needs hyperfine; peers are
# skipped with a note when missing (make bench-deps).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-30}
[ "$(id -u)" = 0 ] || { echo "bench/start_python.sh: run as root"; exit 1; }
command -v hyperfine >/dev/null || { echo "bench/start_python.sh: hyperfine is missing (make bench-deps)"; exit 1; }
py=$(readlink -f /usr/bin/python3 2>/dev/null || true)
if [ -z "$py" ] || ! ldd "$py" >/dev/null 2>&1; then
    echo "bench/start_python.sh: no dynamic /usr/bin/python3 on this host, skipped"
    exit 0
fi
ver=$(basename "$py")

. "$top/bench/lib.sh"
bench_begin

for p in default kernel; do
    make -s -C "$top" install-files PREFIX="$work/$p" >/dev/null
done
sed -i 's/^squashfs readahead *=.*/squashfs readahead = kernel/' "$work/kernel/etc/strata/strata.conf"
grep -q '^squashfs readahead = kernel' "$work/kernel/etc/strata/strata.conf"

# The image: python3, the libraries it links, its standard library, a shell.
root=$work/rootfs
mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/bin" "$root/etc" "$root/tmp"
cp "$py" "$root/usr/bin/python3"
for lib in $(ldd "$py" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp -a "/usr/lib/$ver" "$root/usr/lib/"
[ -x /bin/busybox ] && cp /bin/busybox "$root/bin/" && ln -s busybox "$root/bin/sh"
echo "root:x:0:0::/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
"$work/default/bin/strata" -q build "$work/py.sif" "$root/"
chmod 644 "$work/py.sif"
squashfs_of "$work/default/bin/strata" "$work/py.sif" "$work/py.sqfs"

cmds="'$work/default/bin/strata exec $work/py.sif python3 -c pass' '$work/kernel/bin/strata exec $work/py.sif python3 -c pass'"
names="strata strata-ra-kernel"
add_peers "$work/py.sqfs" python3 -c pass

echo "== start-to-exit of python3 -c pass ($(du -sh "$work/py.sif" | cut -f1) SIF of the host's $ver), $RUNS runs each"
as_user "hyperfine -N -w 3 -r $RUNS --export-json $work/out/p.json $cmds" >/dev/null 2>&1

python3 - "$work/out/p.json" $names <<'EOF'
import json, sys
path, names = sys.argv[1], sys.argv[2:]
rows = list(zip(names, json.load(open(path))["results"]))
ms = {n: r["median"] * 1000 for n, r in rows}
print(f"{'':20} {'median ms':>10} {'mean ms':>10} {'min ms':>8}")
for n, r in rows:
    print(f"{n:20} {r['median']*1000:10.2f} {r['mean']*1000:10.2f} {r['min']*1000:8.2f}")
print()
for other in ("strata-ra-kernel", "bwrap-premounted", "ch-run"):
    if other in ms:
        print(f"strata / {other}: {ms['strata'] / ms[other]:.2f}x")
EOF
