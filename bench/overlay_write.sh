#!/bin/sh
# Small-file writes into a persistent overlay, side by side in one run: untar 10,000 files of
# 4 KiB and sync, inside
#   strata-create   an ext3 overlay made by `strata overlay create --size 500`
#   recipe          an overlay image made the documented way (dd + mkfs.ext3 with its defaults:
#                   1 KiB blocks below 512 MiB)
#   bare            the strata-create image mounted directly, no container, no overlay
#   fuse            fuse-overlayfs over fuse2fs on the same kind of image (Apptainer's
#                   unprivileged path; run as root here, skipped when the tools are missing)
# Prints medians and the ratios the project tracks. Run as root (temp install, temp user).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
FUSE_RUNS=${FUSE_RUNS:-2}
NFILES=${NFILES:-10000}
SIZE=${SIZE:-500}
[ "$(id -u)" = 0 ] || { echo "bench/overlay_write.sh: run as root"; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine is missing (make bench-deps)"; exit 1; }

work=$(mktemp -d /tmp/strata-owbench.XXXXXX)
chmod 755 "$work"
user=stowb$$
cleanup() {
    set +e
    for m in "$work/fuse/merged" "$work/fuse/ext" "$work/bare"; do mountpoint -q "$m" && umount "$m"; done
    pkill -f "fuse-overlayfs.*$work" 2>/dev/null; pkill -f "fuse2fs $work" 2>/dev/null; sleep 0.5
    for m in "$work/fuse/merged" "$work/fuse/ext"; do mountpoint -q "$m" && umount -l "$m"; done
    userdel -r "$user" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
useradd -m "$user"
make -s -C "$top" install-files PREFIX="$work/prefix" >/dev/null
strata="$work/prefix/bin/strata"
d="$work/u"; mkdir "$d"; chown "$user" "$d"

# The image the container runs: busybox, made here.
bb=$(command -v busybox || echo /bin/busybox)
mkdir -p "$work/rootfs/bin" "$work/rootfs/work" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev" "$work/rootfs/tmp"
cp "$bb" "$work/rootfs/bin/busybox"
for a in sh tar sync; do ln -s busybox "$work/rootfs/bin/$a"; done
chmod 1777 "$work/rootfs/work"
mksquashfs "$work/rootfs" "$work/img.sqfs" -noappend -quiet -no-progress
chmod 644 "$work/img.sqfs"

# The payload: NFILES files of 4 KiB in 100 directories.
mkdir "$work/files"
i=0
while [ $i -lt 100 ]; do mkdir "$work/files/d$i"; i=$((i + 1)); done
head -c 4096 /dev/urandom > "$work/one"
python3 - "$work/files" "$NFILES" "$work/one" <<'EOF'
import sys, shutil
root, n, one = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(one, 'rb').read()
for i in range(n):
    open(f"{root}/d{i % 100}/f{i}", 'wb').write(data)
EOF
tar cf "$work/files.tar" -C "$work/files" .
chmod 644 "$work/files.tar"

as_user() { su "$user" -s /bin/sh -c "cd $d && $1"; }
as_user "$strata overlay create --size $SIZE strata.img"
as_user "dd if=/dev/zero of=recipe.img bs=1M count=$SIZE status=none && /sbin/mkfs.ext3 -q recipe.img"
cp "$d/strata.img" "$d/strata.tpl"; cp "$d/recipe.img" "$d/recipe.tpl"
cp "$d/strata.img" "$work/bare.img"
chown "$user" "$d"/*.tpl
run="cd /work && tar xf /files.tar && sync"
exec_in() { echo "$strata exec -B $work/files.tar:/files.tar --overlay $1 $work/img.sqfs sh -c '$run'"; }

echo "== untar $NFILES x 4 KiB + sync, $RUNS runs each"
as_user "hyperfine -N -r $RUNS --export-json $d/a.json \
  --prepare 'sh -c \"cp --sparse=never strata.tpl strata.img && sync\"' -n strata-create \"$(exec_in strata.img)\" \
  --prepare 'sh -c \"cp --sparse=never recipe.tpl recipe.img && sync\"' -n recipe \"$(exec_in recipe.img)\"" >/dev/null

mkdir "$work/bare"
hyperfine -r "$RUNS" --export-json "$work/b.json" \
  --prepare "sh -c 'mountpoint -q $work/bare && umount $work/bare; cp --sparse=never $d/strata.tpl $work/bare.img; mount -o loop $work/bare.img $work/bare; mkdir -p $work/bare/upper/w; sync'" \
  -n bare "sh -c '$bb tar xf $work/files.tar -C $work/bare/upper/w && sync'" >/dev/null

fuse=""
if [ -z "${NOFUSE:-}" ] && command -v fuse2fs >/dev/null && command -v fuse-overlayfs >/dev/null; then
    mkdir -p "$work/fuse/ext" "$work/fuse/merged"
    hyperfine -r "$FUSE_RUNS" --export-json "$work/c.json" \
      --prepare "sh -c 'for m in $work/fuse/merged $work/fuse/ext; do mountpoint -q \$m && umount \$m; done; cp --sparse=never $d/strata.tpl $work/fuse/img; fuse2fs $work/fuse/img $work/fuse/ext -o fakeroot; fuse-overlayfs -o lowerdir=$work/rootfs,upperdir=$work/fuse/ext/upper,workdir=$work/fuse/ext/work $work/fuse/merged; sync'" \
      -n fuse "sh -c '$bb tar xf $work/files.tar -C $work/fuse/merged/work && sync'" >/dev/null
    fuse="$work/c.json"
else
    echo "note: FUSE row skipped (NOFUSE set, or fuse2fs/fuse-overlayfs missing: make bench-deps)"
fi

python3 - "$d/a.json" "$work/b.json" $fuse <<'EOF'
import json, sys
rows = {}
for f in sys.argv[1:]:
    for r in json.load(open(f))["results"]:
        rows[r["command"]] = r
med = {k: v["median"] * 1000 for k, v in rows.items()}
names = {"strata-create": "strata overlay (strata overlay create)", "recipe": "overlay on dd + mkfs.ext3 image",
         "bare": "same image mounted directly", "fuse": "fuse-overlayfs on fuse2fs"}
for k in ["strata-create", "recipe", "bare", "fuse"]:
    if k in med:
        print(f"{names[k]:42} {med[k]:9.1f} ms")
print()
print(f"recipe / strata-create: {med['recipe'] / med['strata-create']:.2f}x  (target >= 1.08x)")
print(f"strata-create / bare:   {med['strata-create'] / med['bare']:.2f}x  (target <= 1.35x)")
if "fuse" in med:
    print(f"fuse / strata-create:   {med['fuse'] / med['strata-create']:.1f}x")
EOF
