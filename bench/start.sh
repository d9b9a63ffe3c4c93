#!/bin/sh
# Start-to-exit time of `/bin/true` in a container, strata side by side with its peers, in one
# run, on the squashfs of ../shared/testdata/apptainer/busybox_amd64.sif (or $IMAGE, a SIF).
#
#   strata (fresh)       strata exec IMG /bin/true, nothing else running: a new loop device and
#                        squashfs superblock each time (the blocks the payload touches are
#                        decompressed again; its executable is read ahead on a spare CPU)
#   strata (shared)      the same while another container of the image runs, with
#                        'shared loop devices = yes': the kernel reuses the superblock
#   bwrap (premounted)   bubblewrap over the same squashfs mounted once beforehand
#   ch-run               charliecloud's ch-run on the same squashfs (squashfuse)
#
# Run as root (it installs strata into a temporary prefix with the setuid starter and creates a
# temporary user to run everything as). Needs hyperfine; bwrap and ch-run rows are skipped with
# a note when those tools are missing (make bench-deps installs them).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-50}
IMAGE=${IMAGE:-$top/../shared/testdata/apptainer/busybox_amd64.sif}
[ "$(id -u)" = 0 ] || { echo "bench/start.sh: run as root"; exit 1; }
[ -f "$IMAGE" ] || { echo "bench/start.sh: no image at $IMAGE (set IMAGE=...)"; exit 1; }
command -v hyperfine >/dev/null || { echo "bench/start.sh: hyperfine is missing (make bench-deps)"; exit 1; }

. "$top/bench/lib.sh"
bench_begin

for p in fresh shared; do
    make -s -C "$top" install-files PREFIX="$work/$p" >/dev/null
done
sed -i 's/^#* *shared loop devices *=.*/shared loop devices = yes/' "$work/shared/etc/strata/strata.conf"
grep -q '^shared loop devices = yes' "$work/shared/etc/strata/strata.conf"

# The squashfs partition, cut out of the SIF, for the peers.
chmod 644 "$IMAGE" 2>/dev/null || true
squashfs_of "$work/fresh/bin/strata" "$IMAGE" "$work/img.sqfs"

cmds="'$work/fresh/bin/strata exec $IMAGE /bin/true'"
names="strata-fresh"
add_peers "$work/img.sqfs" /bin/true

echo "== start-to-exit of /bin/true, $RUNS runs each, as uid $(id -u "$user")"
as_user "hyperfine -N -w 5 -r $RUNS --export-json $work/out/a.json $cmds" >/dev/null 2>&1 || as_user "hyperfine -N -w 5 -r $RUNS --export-json $work/out/a.json $cmds"

# Shared: keep one container of the image running, then time more starts beside it.
su "$user" -s /bin/sh -c "cd /tmp && exec $work/shared/bin/strata exec $IMAGE sleep 600" 2>/dev/null &
keeper=$!
sleep 1
as_user "hyperfine -N -w 5 -r $RUNS --export-json $work/out/b.json '$work/shared/bin/strata exec $IMAGE /bin/true'" >/dev/null 2>&1

python3 - "$work/out/a.json" "$work/out/b.json" $names <<'EOF'
import json, sys
a, b, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [(n, r) for n, r in zip(names, json.load(open(a))["results"])]
rows.insert(1, ("strata-shared", json.load(open(b))["results"][0]))
ms = {n: r["median"] * 1000 for n, r in rows}
print(f"{'':20} {'median ms':>10} {'mean ms':>10} {'min ms':>8}")
for n, r in rows:
    print(f"{n:20} {r['median']*1000:10.2f} {r['mean']*1000:10.2f} {r['min']*1000:8.2f}")
print()
for peer in ("bwrap-premounted", "ch-run"):
    if peer in ms:
        for mine in ("strata-fresh", "strata-shared"):
            print(f"{mine} / {peer}: {ms[mine] / ms[peer]:.2f}x")
EOF
