//! Test images, generated at test time from the host's static busybox: a sandbox directory,
//! a squashfs image and an ext3 image of the same tree. Built once per process.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::cleanup::{self, must_run, GlobalLock};

/// The first line the fixture's runscript prints (followed by its arguments).
pub const RUNSCRIPT_OUTPUT: &str = "strata busybox fixture: runscript";
/// What the fixture's `/.singularity.d/test` script prints.
pub const TEST_OUTPUT: &str = "strata busybox fixture: test";

/// The busybox images. Root-owned and shared by all tests of the process: copy them (see
/// [`crate::TestDir::copy_in`]) before changing them or handing them to a user as their own.
///
/// The tree: `/bin/busybox` and a symlink for every applet (`busybox --list-full`); an `/etc`
/// with `passwd`, `group`, `hosts`, `localtime`, `resolv.conf`; mount points `/proc`, `/sys`,
/// `/dev`, `/tmp`, `/var/tmp`, `/home`, `/root`, `/run`, `/mnt`; and a `/.singularity.d` as
/// Apptainer builds it: `env/` (`90-environment.sh` exports `FIXTURE=busybox`), `actions/`
/// (`exec`, `run`, `shell`, `test`, `start`), `runscript` (prints [`RUNSCRIPT_OUTPUT`] and its
/// arguments), `test`, `startscript`, `labels.json`; and `/singularity` -> the runscript.
#[derive(Debug)]
pub struct Busybox {
    /// The sandbox directory.
    pub sandbox: PathBuf,
    /// `mksquashfs` of the sandbox.
    pub squashfs: PathBuf,
    /// An ext3 image of the sandbox (`mkfs.ext3 -d`), 32 MiB.
    pub ext3: PathBuf,
}

/// The busybox images of this process, built on first use. `None` (with a printed reason)
/// unless root. Installs Debian's `busybox-static` if no static busybox is there.
pub fn busybox() -> Option<&'static Busybox> {
    static IMAGES: OnceLock<Option<Busybox>> = OnceLock::new();
    crate::require_root()?;
    IMAGES
        .get_or_init(|| {
            let dir = cleanup::new_dir("fixtures", 0o755)?;
            let sandbox = dir.join("busybox");
            build_rootfs(&sandbox);
            let squashfs = dir.join("busybox.sqfs");
            must_run(
                "mksquashfs",
                &[
                    sandbox.as_os_str(),
                    squashfs.as_os_str(),
                    "-noappend".as_ref(),
                    "-quiet".as_ref(),
                    "-no-progress".as_ref(),
                ],
            );
            let ext3 = dir.join("busybox.ext3");
            must_run(
                "mkfs.ext3",
                &[
                    "-q".as_ref(),
                    "-F".as_ref(),
                    "-L".as_ref(),
                    "busybox".as_ref(),
                    "-d".as_ref(),
                    sandbox.as_os_str(),
                    ext3.as_os_str(),
                    "32M".as_ref(),
                ],
            );
            for image in [&squashfs, &ext3] {
                set_mode(image, 0o644);
            }
            Some(Busybox { sandbox, squashfs, ext3 })
        })
        .as_ref()
}

/// A statically linked busybox on the host, installing `busybox-static` if there is none.
fn static_busybox() -> PathBuf {
    let installed = || {
        Command::new("dpkg")
            .args(["-s", "busybox-static"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !installed() {
        let _lock = GlobalLock::take();
        if !installed() {
            eprintln!("strata-e2e: installing busybox-static (`make deps` does this too)");
            must_run(
                "apt-get",
                &[
                    "-o".as_ref(),
                    "DPkg::Lock::Timeout=300".as_ref(),
                    "install".as_ref(),
                    "-y".as_ref(),
                    "-qq".as_ref(),
                    "busybox-static".as_ref(),
                ],
            );
        }
    }
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("busybox-static is installed but no busybox binary found"))
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|err| panic!("cannot chmod {}: {err}", path.display()));
}

fn write(root: &Path, path: &str, contents: &str, mode: u32) {
    let file = root.join(path);
    fs::write(&file, contents).unwrap_or_else(|err| panic!("cannot write {}: {err}", file.display()));
    set_mode(&file, mode);
}

/// Sources the container's environment scripts, as the actions of an Apptainer image do.
const SOURCE_ENV: &str = "for script in /.singularity.d/env/*.sh; do\n    \
                          if [ -f \"$script\" ]; then . \"$script\"; fi\n\
                          done\n";

fn build_rootfs(root: &Path) {
    let busybox = static_busybox();
    for dir in [
        "",
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "home",
        "root",
        "run",
        "mnt",
        "var",
        "opt",
        ".singularity.d",
        ".singularity.d/env",
        ".singularity.d/actions",
        ".singularity.d/libs",
    ] {
        let path = root.join(dir);
        fs::create_dir_all(&path).unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()));
        set_mode(&path, 0o755);
    }
    set_mode(&root.join("root"), 0o700);
    for tmp in ["tmp", "var/tmp"] {
        let path = root.join(tmp);
        fs::create_dir_all(&path).unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()));
        set_mode(&path, 0o1777);
    }

    let target = root.join("bin/busybox");
    fs::copy(&busybox, &target).unwrap_or_else(|err| panic!("cannot copy {}: {err}", busybox.display()));
    set_mode(&target, 0o755);
    // What `busybox --install -s` does, without running anything inside the tree.
    let list = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .unwrap_or_else(|err| panic!("cannot run {} --list-full: {err}", busybox.display()));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if fs::symlink_metadata(&link).is_err() {
            symlink("/bin/busybox", &link)
                .unwrap_or_else(|err| panic!("cannot link {}: {err}", link.display()));
        }
    }
    assert!(root.join("bin/sh").exists(), "{} --list-full gave no /bin/sh", busybox.display());

    write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    );
    write(root, "etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644);
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n", 0o644);
    write(root, "etc/resolv.conf", "", 0o644);
    write(root, "etc/localtime", "", 0o644);

    let sd = ".singularity.d";
    write(
        root,
        &format!("{sd}/env/90-environment.sh"),
        "#!/bin/sh\n# Set by the strata busybox fixture.\nexport FIXTURE=busybox\n",
        0o755,
    );
    write(
        root,
        &format!("{sd}/runscript"),
        &format!("#!/bin/sh\necho \"{RUNSCRIPT_OUTPUT}\" \"$@\"\n"),
        0o755,
    );
    write(root, &format!("{sd}/test"), &format!("#!/bin/sh\necho \"{TEST_OUTPUT}\"\n"), 0o755);
    write(root, &format!("{sd}/startscript"), "#!/bin/sh\nwhile :; do sleep 3600; done\n", 0o755);
    write(root, &format!("{sd}/labels.json"), "{\n  \"org.strata.fixture\": \"busybox\"\n}\n", 0o644);
    let actions: [(&str, &str); 5] = [
        ("exec", "exec \"$@\""),
        ("run", "exec /.singularity.d/runscript \"$@\""),
        ("shell", "exec /bin/sh \"$@\""),
        ("test", "exec /.singularity.d/test \"$@\""),
        ("start", "exec /.singularity.d/startscript \"$@\""),
    ];
    for (name, tail) in actions {
        write(root, &format!("{sd}/actions/{name}"), &format!("#!/bin/sh\n{SOURCE_ENV}{tail}\n"), 0o755);
    }
    symlink(".singularity.d/runscript", root.join("singularity"))
        .unwrap_or_else(|err| panic!("cannot link /singularity: {err}"));
}
