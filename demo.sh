#!/bin/sh
# make demo: the main job on a small example made right now. As root: installs strata into a
# temporary prefix (setuid starter), builds a busybox SIF image, creates a temporary user, and
# shows that user running the container with a persistent ext3 overlay. Everything it creates
# is removed at the end.
set -eu
top=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "make demo: run as root (it installs a setuid starter into a temp prefix)"; exit 1; }
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q static || busybox=/bin/busybox
[ -x "$busybox" ] || { echo "make demo: needs a static busybox (apt-get install busybox-static)"; exit 1; }

work=$(mktemp -d /tmp/strata-demo.XXXXXX)
chmod 755 "$work"
user=stdemo$$
cleanup() {
    set +e
    userdel -r "$user" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
as_user() { printf '%s$ %s\n' "$user" "$1"; su "$user" -s /bin/sh -c "cd ~ && PATH=$work/prefix/bin:\$PATH && $1"; }

step "install strata into $work/prefix (starter setuid root)"
make -s -C "$top" install-files PREFIX="$work/prefix"
ls -l "$work/prefix/bin/strata" "$work/prefix/libexec/strata/strata-starter"

step "build a busybox image: a sandbox directory, then a SIF"
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/home" "$root/.singularity.d/env"
cp "$busybox" "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do [ "$app" = busybox ] || ln -s busybox "$root/bin/$app"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
printf '#!/bin/sh\necho "Hello from the strata demo container ($(uname -s), busybox $(busybox | head -1 | cut -d" " -f2))"\n' > "$root/.singularity.d/runscript"
chmod 755 "$root/.singularity.d/runscript"
echo 'export DEMO=strata' > "$root/.singularity.d/env/90-environment.sh"
"$work/prefix/bin/strata" build "$work/demo.sif" "$root"
chmod 644 "$work/demo.sif"
"$work/prefix/bin/strata" sif list "$work/demo.sif"

step "a temporary unprivileged user runs it"
useradd -m "$user"
as_user "strata exec $work/demo.sif id"
as_user "strata run $work/demo.sif"
as_user "strata exec $work/demo.sif sh -c 'echo DEMO=\$DEMO'"

step "a persistent overlay: plain dd + mkfs.ext3, as in the Singularity docs"
as_user "dd if=/dev/zero of=overlay.img bs=1M count=64 status=none && /sbin/mkfs.ext3 -q overlay.img"
as_user "echo 'echo Hello > /hello; ls -l /hello' | strata shell --overlay overlay.img $work/demo.sif"
as_user "strata exec --overlay overlay.img $work/demo.sif cat /hello"
as_user "strata exec $work/demo.sif cat /hello || echo '(without --overlay the change is not there)'"

step "one writer at a time: a second writer is refused while the first runs"
su "$user" -s /bin/sh -c "cd ~ && exec $work/prefix/bin/strata exec --overlay overlay.img $work/demo.sif sleep 4" &
sleep 1
as_user "strata exec --overlay overlay.img $work/demo.sif true || true"
wait
step "many read-only users at once (:ro)"
su "$user" -s /bin/sh -c "cd ~ && exec $work/prefix/bin/strata exec --overlay overlay.img:ro $work/demo.sif sleep 2" &
sleep 1
as_user "strata exec --overlay overlay.img:ro $work/demo.sif cat /hello"
wait

step "strata overlay create: a preallocated ext3 overlay owned by the user, in milliseconds"
as_user "time strata overlay create --size 256 mine.img && ls -ls mine.img"
as_user "strata exec --overlay mine.img $work/demo.sif sh -c 'mkdir -p /opt/tool && echo v1 > /opt/tool/version'"
as_user "strata overlay resize --size 512 mine.img"
as_user "strata exec --overlay mine.img $work/demo.sif sh -c 'cat /opt/tool/version; df -h / | tail -1'"

step "--writable-tmpfs: changes live in RAM and vanish"
as_user "strata exec --writable-tmpfs $work/demo.sif sh -c 'echo scratch > /scratch && cat /scratch'"
as_user "strata exec $work/demo.sif cat /scratch || echo '(gone)'"

step "nothing left behind on the host"
losetup -a | grep "$work" || echo "no loop devices"
grep "$work" /proc/self/mountinfo || echo "no mounts"
