# Shared by the start-up benchmarks (sourced, not run): a temporary work dir and user, the
# squashfs partition of a SIF cut out and mounted for the peers, and the peers' rows.
# Sets: work, user. Defines: bench_begin, squashfs_of, add_peers, as_user.

bench_begin() {
    work=$(mktemp -d /tmp/strata-bench.XXXXXX)
    chmod 755 "$work"
    user=stbench$$
    fuse_mode=$(stat -c %a /dev/fuse 2>/dev/null || true)
    trap bench_cleanup EXIT INT TERM
    useradd -m -u $((40000 + $$ % 20000)) "$user"
    mkdir "$work/out" && chown "$user" "$work/out"
}

bench_cleanup() {
    set +e
    [ -n "$fuse_mode" ] && chmod "$fuse_mode" /dev/fuse
    [ -n "${keeper:-}" ] && kill "$keeper" 2>/dev/null && wait "$keeper" 2>/dev/null
    mountpoint -q "$work/mnt" && umount "$work/mnt"
    userdel -r "$user" >/dev/null 2>&1
    rm -rf "$work"
}

# squashfs_of STRATA SIF OUT: the SIF's primary squashfs partition as a file OUT, also mounted
# read-only on $work/mnt (bubblewrap's premounted image).
squashfs_of() {
    line=$("$1" sif list "$2" | grep 'FS (Squashfs/\*System')
    range=$(echo "$line" | awk -F'|' '{gsub(/ /,"",$4); print $4}')
    off=${range%-*}; end=${range#*-}
    dd if="$2" of="$3" bs=4096 iflag=skip_bytes,count_bytes skip="$off" count=$((end - off)) status=none
    chmod 644 "$3"
    mkdir "$work/mnt"
    mount -o loop,ro "$3" "$work/mnt"
}

# add_peers SQFS COMMAND...: bubblewrap over $work/mnt and ch-run on SQFS, each running
# COMMAND, appended to $cmds and $names (skipped with a note when not installed).
add_peers() {
    sqfs=$1; shift
    if command -v bwrap >/dev/null; then
        cmds="$cmds 'bwrap --ro-bind $work/mnt / --proc /proc --dev /dev $*'"
        names="$names bwrap-premounted"
    else
        echo "note: bwrap not installed, skipped"
    fi
    if command -v ch-run >/dev/null; then
        chmod 666 /dev/fuse   # Debian's default for users; restored on exit
        cmds="$cmds 'ch-run $sqfs -- $*'"
        names="$names ch-run"
    else
        echo "note: ch-run not installed, skipped"
    fi
}

as_user() { su "$user" -s /bin/sh -c "cd /tmp && $1"; }
