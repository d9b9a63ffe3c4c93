use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

const ORIGIN: &str = "/usr/local/etc/strata/strata.conf";
const SHIPPED: &str = include_str!("../strata.conf");

fn parse(text: &str) -> Result<Policy, ConfigError> {
    Policy::parse(text, Path::new(ORIGIN))
}

fn ok(text: &str) -> Policy {
    match parse(text) {
        Ok(policy) => policy,
        Err(err) => panic!("{text:?} should parse: {err}"),
    }
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(policy) => panic!("{text:?} should be refused, gave {policy:?}"),
        Err(err) => err.to_string(),
    }
}

/// A file under the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "strata-config-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---- the shipped file -------------------------------------------------------------------

#[test]
fn shipped_file_is_the_defaults() {
    assert_eq!(ok(SHIPPED), Policy::defaults());
    assert_eq!(Policy::default(), Policy::defaults());
}

#[test]
fn shipped_file_documents_every_directive() {
    for name in directives() {
        let documented = SHIPPED.lines().any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            line.strip_prefix(name).is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        assert!(documented, "{name:?} is missing from config/strata.conf");
        let header = format!("# {}:", name.to_uppercase());
        let grouped = name.starts_with("allow container ");
        assert!(
            grouped || SHIPPED.contains(&header),
            "{name:?} has no {header:?} comment block in config/strata.conf"
        );
    }
}

#[test]
fn shipped_file_sets_only_known_directives_once() {
    // Parsing proves it; this also checks that no active line is a commented-out typo.
    let active = SHIPPED.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).count();
    // bind path appears twice; every other directive except the three limits once.
    assert_eq!(active, directives().count() - 3 + 1);
}

#[test]
fn empty_and_comment_only_files_are_the_defaults() {
    assert_eq!(ok(""), Policy::defaults());
    assert_eq!(ok("\n\n# nothing\n   # indented comment\n\t\n"), Policy::defaults());
}

#[test]
fn documented_defaults() {
    let p = Policy::defaults();
    assert!(p.allow_setuid);
    assert_eq!(p.max_loop_devices, 256);
    assert!(!p.shared_loop_devices);
    assert!(p.allow_pid_ns && p.allow_ipc_ns && p.allow_uts_ns);
    assert!(p.mount_proc && p.mount_sys && p.mount_devpts && p.mount_home && p.mount_tmp);
    assert_eq!(p.mount_dev, MountDev::Yes);
    assert_eq!(p.bind_paths, vec![BindPath::same("/etc/localtime"), BindPath::same("/etc/hosts")]);
    assert!(p.user_bind_control);
    assert!(p.config_passwd && p.config_group && p.config_resolv_conf);
    assert!(p.allow_container_sif && p.allow_container_encrypted);
    assert!(p.allow_container_squashfs && p.allow_container_extfs && p.allow_container_dir);
    assert!(p.limit_container_owners.is_empty());
    assert!(p.limit_container_groups.is_empty());
    assert!(p.limit_container_paths.is_empty());
    assert_eq!(p.sessiondir_max_size_mib, 64);
    assert_eq!(p.sessiondir_max_size_bytes(), 64 << 20);
    assert_eq!(p.enable_overlay, EnableOverlay::Yes);
    assert_eq!(p.allow_setuid_mount_squashfs, SetuidMount::Yes);
    assert!(p.allow_setuid_mount_extfs);
    assert!(!p.sync_writable_extfs);
    assert_eq!(p.root_default_capabilities, RootCapabilities::Full);
    assert!(p.mount_slave);
    assert_eq!(p.memory_fs_type, MemoryFsType::Tmpfs);
}

// ---- booleans ---------------------------------------------------------------------------

type BoolField = (&'static str, fn(&Policy) -> bool);

const BOOLEANS: &[BoolField] = &[
    ("allow setuid", |p| p.allow_setuid),
    ("shared loop devices", |p| p.shared_loop_devices),
    ("allow pid ns", |p| p.allow_pid_ns),
    ("allow ipc ns", |p| p.allow_ipc_ns),
    ("allow uts ns", |p| p.allow_uts_ns),
    ("mount proc", |p| p.mount_proc),
    ("mount sys", |p| p.mount_sys),
    ("mount devpts", |p| p.mount_devpts),
    ("mount home", |p| p.mount_home),
    ("mount tmp", |p| p.mount_tmp),
    ("user bind control", |p| p.user_bind_control),
    ("config passwd", |p| p.config_passwd),
    ("config group", |p| p.config_group),
    ("config resolv_conf", |p| p.config_resolv_conf),
    ("allow container sif", |p| p.allow_container_sif),
    ("allow container encrypted", |p| p.allow_container_encrypted),
    ("allow container squashfs", |p| p.allow_container_squashfs),
    ("allow container extfs", |p| p.allow_container_extfs),
    ("allow container dir", |p| p.allow_container_dir),
    ("allow setuid-mount extfs", |p| p.allow_setuid_mount_extfs),
    ("sync writable extfs", |p| p.sync_writable_extfs),
    ("mount slave", |p| p.mount_slave),
];

#[test]
fn every_boolean_directive_takes_yes_and_no() {
    for (name, get) in BOOLEANS {
        assert!(get(&ok(&format!("{name} = yes"))), "{name} = yes");
        assert!(!get(&ok(&format!("{name} = no"))), "{name} = no");
        // Flipping the default changes that field and nothing else.
        let default = get(&Policy::defaults());
        let flipped = ok(&format!("{name} = {}", if default { "no" } else { "yes" }));
        assert_ne!(get(&flipped), default, "{name}");
        let others_unchanged = BOOLEANS
            .iter()
            .filter(|(other, _)| other != name)
            .all(|(_, g)| g(&flipped) == g(&Policy::defaults()));
        assert!(others_unchanged, "{name} changed another field");
    }
}

#[test]
fn these_tests_cover_every_directive() {
    const OTHERS: &[&str] = &[
        "max loop devices",
        "squashfs readahead",
        "sessiondir max size",
        "mount dev",
        "enable overlay",
        "allow setuid-mount squashfs",
        "root default capabilities",
        "memory fs type",
        "bind path",
        "limit container owners",
        "limit container groups",
        "limit container paths",
    ];
    for name in directives() {
        let covered = BOOLEANS.iter().any(|(b, _)| *b == name) || OTHERS.contains(&name);
        assert!(covered, "no test for {name:?}");
    }
    assert_eq!(directives().count(), BOOLEANS.len() + OTHERS.len());
}

#[test]
fn booleans_are_exactly_yes_or_no() {
    for (name, _) in BOOLEANS {
        for bad in ["maybe", "Yes", "NO", "true", "1", "y", "yes no", "yes # comment"] {
            assert_eq!(
                err(&format!("{name} = {bad}")),
                format!("{ORIGIN}:1: \"{name}\" must be yes or no, not {bad:?}")
            );
        }
        assert_eq!(err(&format!("{name} =")), format!("{ORIGIN}:1: \"{name}\" must be yes or no, not \"\""));
    }
}

#[test]
fn the_example_error_of_the_brief() {
    let text = "# site policy\n\n".repeat(5) + "mount proc = yes\nallow setuid = maybe\n";
    assert_eq!(
        err(&text),
        r#"/usr/local/etc/strata/strata.conf:12: "allow setuid" must be yes or no, not "maybe""#
    );
}

// ---- enumerations -----------------------------------------------------------------------

#[test]
fn mount_dev_values() {
    assert_eq!(ok("mount dev = yes").mount_dev, MountDev::Yes);
    assert_eq!(ok("mount dev = no").mount_dev, MountDev::No);
    assert_eq!(ok("mount dev = minimal").mount_dev, MountDev::Minimal);
    assert_eq!(
        err("mount dev = full"),
        format!("{ORIGIN}:1: \"mount dev\" must be one of yes, no, minimal, not \"full\"")
    );
}

#[test]
fn enable_overlay_values() {
    assert_eq!(ok("enable overlay = yes").enable_overlay, EnableOverlay::Yes);
    assert_eq!(ok("enable overlay = no").enable_overlay, EnableOverlay::No);
    assert_eq!(ok("enable overlay = try").enable_overlay, EnableOverlay::Try);
    assert_eq!(ok("enable overlay = driver").enable_overlay, EnableOverlay::Driver);
    assert!(err("enable overlay = Try").contains("one of yes, no, try, driver"));
}

#[test]
fn setuid_mount_squashfs_values() {
    let get = |v: &str| ok(&format!("allow setuid-mount squashfs = {v}"));
    assert_eq!(get("yes").allow_setuid_mount_squashfs, SetuidMount::Yes);
    assert_eq!(get("no").allow_setuid_mount_squashfs, SetuidMount::No);
    assert_eq!(get("iflimited").allow_setuid_mount_squashfs, SetuidMount::IfLimited);
    assert!(err("allow setuid-mount squashfs = if limited").contains("yes, no, iflimited"));

    assert!(get("yes").setuid_mount_squashfs_allowed());
    assert!(!get("no").setuid_mount_squashfs_allowed());
    assert!(!get("iflimited").setuid_mount_squashfs_allowed());
    for limit in
        ["limit container owners = root", "limit container groups = 0", "limit container paths = /apps"]
    {
        let p = ok(&format!("allow setuid-mount squashfs = iflimited\n{limit}"));
        assert!(p.limits_active());
        assert!(p.setuid_mount_squashfs_allowed(), "{limit}");
    }
    let p = ok("allow setuid-mount squashfs = no\nlimit container paths = /apps");
    assert!(!p.setuid_mount_squashfs_allowed());
}

#[test]
fn root_default_capabilities_values() {
    let get = |v: &str| ok(&format!("root default capabilities = {v}")).root_default_capabilities;
    assert_eq!(get("full"), RootCapabilities::Full);
    assert_eq!(get("file"), RootCapabilities::File);
    assert_eq!(get("no"), RootCapabilities::No);
    assert!(err("root default capabilities = yes").contains("one of full, file, no"));
}

#[test]
fn memory_fs_type_values() {
    assert_eq!(ok("memory fs type = tmpfs").memory_fs_type, MemoryFsType::Tmpfs);
    assert_eq!(ok("memory fs type = ramfs").memory_fs_type, MemoryFsType::Ramfs);
    assert!(err("memory fs type = hugetlbfs").contains("one of tmpfs, ramfs"));
}

#[test]
fn enum_spellings_round_trip() {
    for v in [MountDev::Yes, MountDev::No, MountDev::Minimal] {
        assert_eq!(MountDev::from_conf(v.as_str()), Some(v));
        assert_eq!(v.to_string(), v.as_str());
    }
    for v in [EnableOverlay::Yes, EnableOverlay::No, EnableOverlay::Try, EnableOverlay::Driver] {
        assert_eq!(EnableOverlay::from_conf(v.as_str()), Some(v));
    }
    for v in [SetuidMount::Yes, SetuidMount::No, SetuidMount::IfLimited] {
        assert_eq!(SetuidMount::from_conf(v.as_str()), Some(v));
    }
    for v in [RootCapabilities::Full, RootCapabilities::File, RootCapabilities::No] {
        assert_eq!(RootCapabilities::from_conf(v.as_str()), Some(v));
    }
    for v in [MemoryFsType::Tmpfs, MemoryFsType::Ramfs] {
        assert_eq!(MemoryFsType::from_conf(v.as_str()), Some(v));
    }
}

// ---- numbers ----------------------------------------------------------------------------

#[test]
fn squashfs_readahead_values() {
    assert_eq!(Policy::defaults().squashfs_readahead_kib, Some(0));
    assert_eq!(ok("squashfs readahead = 128").squashfs_readahead_kib, Some(128));
    assert_eq!(ok("squashfs readahead = 65536").squashfs_readahead_kib, Some(65536));
    assert_eq!(ok("squashfs readahead = kernel").squashfs_readahead_kib, None);
    for bad in ["65537", "-1", "128k", "Kernel", "default", ""] {
        assert_eq!(
            err(&format!("squashfs readahead = {bad}")),
            format!(
                "{ORIGIN}:1: \"squashfs readahead\" must be a size in KiB from 0 to 65536, or \"kernel\", not {bad:?}"
            )
        );
    }
}

#[test]
fn max_loop_devices_values() {
    assert_eq!(ok("max loop devices = 0").max_loop_devices, 0);
    assert_eq!(ok("max loop devices = 007").max_loop_devices, 7);
    assert_eq!(ok("max loop devices = 4294967295").max_loop_devices, u32::MAX);
    for bad in ["4294967296", "-1", "+1", "12k", "1.5", "0x10", "1 2", "", "99999999999999999999999"] {
        assert_eq!(
            err(&format!("max loop devices = {bad}")),
            format!(
                "{ORIGIN}:1: \"max loop devices\" must be a whole number from 0 to 4294967295, not {bad:?}"
            )
        );
    }
}

#[test]
fn sessiondir_max_size_values() {
    assert_eq!(ok("sessiondir max size = 1").sessiondir_max_size_mib, 1);
    let p = ok("sessiondir max size = 1048576");
    assert_eq!(p.sessiondir_max_size_mib, 1 << 20);
    assert_eq!(p.sessiondir_max_size_bytes(), 1 << 40);
    // 0 would make an unlimited tmpfs.
    for bad in ["0", "1048577", "64M", "-64", "sixty-four"] {
        assert_eq!(
            err(&format!("sessiondir max size = {bad}")),
            format!(
                "{ORIGIN}:1: \"sessiondir max size\" must be a whole number of MiB from 1 to 1048576, not {bad:?}"
            )
        );
    }
}

// ---- lists ------------------------------------------------------------------------------

fn bind(src: &str, dst: &str) -> BindPath {
    BindPath { source: PathBuf::from(src), destination: PathBuf::from(dst) }
}

#[test]
fn bind_path_replaces_the_default_and_accumulates() {
    assert_eq!(ok("bind path = /scratch").bind_paths, vec![bind("/scratch", "/scratch")]);
    let p = ok("bind path = /a, /b:/c\n# comment\nbind path = /d ,, /e/:/f/./g//\n");
    assert_eq!(p.bind_paths, vec![bind("/a", "/a"), bind("/b", "/c"), bind("/d", "/d"), bind("/e", "/f/g")]);
}

#[test]
fn empty_bind_path_clears_the_defaults() {
    assert!(ok("bind path =").bind_paths.is_empty());
    assert!(ok("bind path = ,").bind_paths.is_empty());
    assert_eq!(ok("bind path =\nbind path = /x").bind_paths, vec![bind("/x", "/x")]);
}

#[test]
fn bad_bind_paths() {
    for bad in ["relative", "/a:b", "a:/b", "/a/../b", "/a:/b/..", "/a:/b:/c", "/a:", ":/b"] {
        assert_eq!(
            err(&format!("bind path = /ok, {bad}")),
            format!(
                "{ORIGIN}:1: \"bind path\" must be src[:dst] with absolute paths without \"..\", not {bad:?}"
            )
        );
    }
}

#[test]
fn limit_container_owners_and_groups() {
    let p = ok("limit container owners = root, 1500\nlimit container owners = gmk, svc-apps_1\n\
                limit container groups = 0, apps");
    assert_eq!(
        p.limit_container_owners,
        vec![
            UserSpec::Name("root".into()),
            UserSpec::Uid(1500),
            UserSpec::Name("gmk".into()),
            UserSpec::Name("svc-apps_1".into()),
        ]
    );
    assert_eq!(p.limit_container_groups, vec![GroupSpec::Gid(0), GroupSpec::Name("apps".into())]);
    assert_eq!(UserSpec::Uid(7).to_string(), "7");
    assert_eq!(GroupSpec::Name("apps".into()).to_string(), "apps");
    // Big ids are fine; -1 (u32::MAX) is not an id.
    assert_eq!(
        ok("limit container owners = 100000, 4294967294").limit_container_owners,
        vec![UserSpec::Uid(100000), UserSpec::Uid(4294967294)]
    );
    for bad in ["4294967295", "4294967296", "-1", "a b", "a:b", "/root", "-x"] {
        assert_eq!(
            err(&format!("limit container owners = {bad}")),
            format!("{ORIGIN}:1: \"limit container owners\" must be a user name or a uid, not {bad:?}")
        );
        assert_eq!(
            err(&format!("limit container groups = {bad}")),
            format!("{ORIGIN}:1: \"limit container groups\" must be a group name or a gid, not {bad:?}")
        );
    }
    // An empty value leaves the limit unset.
    assert!(!ok("limit container owners =").limits_active());
}

#[test]
fn limit_container_paths_are_normalised() {
    let p = ok("limit container paths = /data/, /apps//containers/./\nlimit container paths = /");
    assert_eq!(
        p.limit_container_paths,
        vec![PathBuf::from("/data"), PathBuf::from("/apps/containers"), PathBuf::from("/"),]
    );
    for bad in ["data", "./data", "/data/../etc", "..", "~/x"] {
        assert_eq!(
            err(&format!("limit container paths = {bad}")),
            format!(
                "{ORIGIN}:1: \"limit container paths\" must be an absolute path without \"..\", not {bad:?}"
            )
        );
    }
}

#[test]
fn path_allowed_uses_components() {
    let p = ok("limit container paths = /data, /apps/containers/");
    assert!(p.path_allowed(Path::new("/data")));
    assert!(p.path_allowed(Path::new("/data/u1/ubuntu.sif")));
    assert!(p.path_allowed(Path::new("/apps/containers/x.sif")));
    assert!(!p.path_allowed(Path::new("/data2/ubuntu.sif")));
    assert!(!p.path_allowed(Path::new("/apps/containers2/x.sif")));
    assert!(!p.path_allowed(Path::new("/apps/x.sif")));
    assert!(!p.path_allowed(Path::new("/data/../etc/shadow")));
    assert!(!p.path_allowed(Path::new("data/x.sif")));
    assert!(Policy::defaults().path_allowed(Path::new("/anywhere/x.sif")));
}

// ---- path_is_within ---------------------------------------------------------------------

#[test]
fn path_is_within_edge_cases() {
    let within = |p: &str, a: &str| path_is_within(Path::new(p), Path::new(a));
    assert!(within("/data", "/data"));
    assert!(within("/data/x", "/data"));
    assert!(within("/data/x/y.sif", "/data/x"));
    assert!(!within("/data2", "/data"));
    assert!(!within("/data2/x", "/data"));
    assert!(!within("/dat", "/data"));
    assert!(!within("/", "/data"));
    // Trailing, repeated slashes and "." do not matter.
    assert!(within("/data/", "/data"));
    assert!(within("/data", "/data/"));
    assert!(within("/data//x/", "/data/"));
    assert!(within("//data/./x", "/data"));
    assert!(within("/data/x", "/./data/."));
    // The root allows every absolute path.
    assert!(within("/", "/"));
    assert!(within("/etc/shadow", "/"));
    // ".." is refused, in either path, even where it would resolve inside.
    assert!(!within("/data/../etc/shadow", "/data"));
    assert!(!within("/data/x/../y", "/data"));
    assert!(!within("/data/..", "/data"));
    assert!(!within("/data/x", "/data/x/.."));
    assert!(!within("/etc", "/data/.."));
    // Relative paths are refused.
    assert!(!within("data/x", "data"));
    assert!(!within("/data/x", "data"));
    assert!(!within("data/x", "/"));
    assert!(!within("", "/"));
    assert!(!within("/x", ""));
    // Non-UTF-8 components compare as bytes.
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let odd = Path::new(OsStr::from_bytes(b"/data/\xff/x"));
    assert!(path_is_within(odd, Path::new("/data")));
    assert!(path_is_within(odd, Path::new(OsStr::from_bytes(b"/data/\xff"))));
    assert!(!path_is_within(odd, Path::new(OsStr::from_bytes(b"/data/\xfe"))));
}

// ---- grammar ----------------------------------------------------------------------------

#[test]
fn whitespace_around_and_inside_directives() {
    let p = ok("  allow   setuid=no  \n\tmount\tproc =\tno\t\r\nmax loop devices=3");
    assert!(!p.allow_setuid);
    assert!(!p.mount_proc);
    assert_eq!(p.max_loop_devices, 3);
}

#[test]
fn crlf_line_endings() {
    let p = ok("allow setuid = no\r\nmount dev = minimal\r\n");
    assert!(!p.allow_setuid);
    assert_eq!(p.mount_dev, MountDev::Minimal);
}

#[test]
fn unknown_directives_are_errors_with_their_line() {
    assert_eq!(
        err("allow setuid = yes\n\n# comment\nallow setgid = yes\n"),
        format!("{ORIGIN}:4: unknown directive \"allow setgid\"")
    );
    assert_eq!(err("Allow Setuid = yes"), format!("{ORIGIN}:1: unknown directive \"Allow Setuid\""));
    let e = parse("\nfoo = bar").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert_eq!(e.directive(), Some("foo"));
    assert_eq!(e.kind, ErrorKind::UnknownDirective("foo".into()));
}

#[test]
fn apptainer_only_directives_say_so() {
    assert_eq!(
        err("mount hostfs = no"),
        format!(
            "{ORIGIN}:1: \"mount hostfs\" is an Apptainer directive that strata does not support; remove it"
        )
    );
    assert!(matches!(parse("allow user ns = yes").unwrap_err().kind, ErrorKind::UnsupportedDirective(_)));
}

#[test]
fn scalars_may_be_given_once() {
    assert_eq!(
        err("allow setuid = yes\n# again\nallow setuid = no\n"),
        format!("{ORIGIN}:3: \"allow setuid\" is already set on line 1; give it once")
    );
    // Even with the same value.
    assert!(err("mount dev = minimal\nmount dev = minimal").contains(":2:"));
}

#[test]
fn lines_that_are_not_directives() {
    assert_eq!(err("allow setuid yes"), format!("{ORIGIN}:1: expected \"directive = value\""));
    assert_eq!(err("\n = yes"), format!("{ORIGIN}:2: no directive before \"=\""));
    assert_eq!(err("allow setuid = yes\u{0}"), format!("{ORIGIN}:1: contains a control character"));
    assert_eq!(
        err("# fine\n# \u{1b}[31m escape in a comment\n"),
        format!("{ORIGIN}:2: contains a control character")
    );
    // A lone carriage return in mid-line is a control character too.
    assert!(err("allow setuid = yes\rmount proc = no").contains("control character"));
}

#[test]
fn comments_only_at_the_start_of_a_line() {
    assert!(ok("# allow setuid = no").allow_setuid);
    assert!(ok("   #allow setuid = no").allow_setuid);
    assert!(err("allow setuid = no # not here").contains("not \"no # not here\""));
}

#[test]
fn values_may_contain_equals_signs() {
    assert_eq!(ok("bind path = /a=b:/c").bind_paths, vec![bind("/a=b", "/c")]);
}

#[test]
fn size_and_line_caps() {
    let big = "#".repeat(MAX_FILE_SIZE as usize + 1);
    let e = parse(&big).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge { limit: MAX_FILE_SIZE });
    assert_eq!(e.to_string(), format!("{ORIGIN}: larger than 1048576 bytes"));
    let e = Policy::from_reader(big.as_bytes(), Path::new(ORIGIN)).unwrap_err();
    assert_eq!(e.line, None);

    let exactly = "#".repeat(MAX_FILE_SIZE as usize);
    assert_eq!(ok(&exactly), Policy::defaults());

    let many = "\n".repeat(MAX_LINES);
    assert_eq!(ok(&many), Policy::defaults());
    let too_many = "\n".repeat(MAX_LINES) + "# one more";
    assert_eq!(err(&too_many), format!("{ORIGIN}:10001: more than 10000 lines"));
}

#[test]
fn from_reader_reports_bad_utf8_with_its_line() {
    let e = Policy::from_reader(&b"allow setuid = yes\n# caf\xe9\n"[..], Path::new(ORIGIN)).unwrap_err();
    assert_eq!(e.to_string(), format!("{ORIGIN}:2: not valid UTF-8"));
    let p = Policy::from_reader(&b"mount tmp = no\n"[..], Path::new(ORIGIN)).unwrap();
    assert!(!p.mount_tmp);
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let file = TempFile::new(b"mount home = no\n");
    assert!(!Policy::load(&file.0).unwrap().mount_home);

    let file = TempFile::new(b"mount home = no\nmount home = yes\n");
    let e = Policy::load(&file.0).unwrap_err();
    assert_eq!(e.origin, file.0);
    assert!(e.to_string().starts_with(&format!("{}:2: ", file.0.display())));

    let missing = Path::new("/nonexistent/strata.conf");
    let e = Policy::load(missing).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io { kind: std::io::ErrorKind::NotFound, .. }));
    assert!(e.to_string().starts_with("/nonexistent/strata.conf: cannot read: "));
}

#[test]
fn every_directive_is_accepted() {
    // The values of the shipped file, one directive at a time.
    for name in directives() {
        let line = SHIPPED
            .lines()
            .map(|l| l.trim_start_matches('#'))
            .find(|l| l.strip_prefix(name).is_some_and(|r| r.trim_start().starts_with('=')))
            .unwrap();
        ok(line);
    }
}

// ---- passwd and group -------------------------------------------------------------------

const PASSWD: &[u8] = b"# comment\n\
root:x:0:0:root:/root:/bin/bash\n\
+nis::::::\n\
broken\n\
bad:x:notanumber:1::/:/bin/sh\n\
neg:x:-1:1::/:/bin/sh\n\
big:x:100000:100000::/home/big:/bin/sh\n\
gmk:x:1500:1500::/home/gmk:/bin/sh\n\
gmk:x:1600:1600::/home/gmk2:/bin/sh\n\
caf\xe9:x:77:77::/:/bin/sh\n\
last:x:4294967294:1::/:/bin/sh";

const GROUP: &[u8] = b"root:x:0:\napps:x:3000:gmk,big\nhuge:x:200000:\n";

#[test]
fn resolve_uid_reads_the_file() {
    let f = TempFile::new(PASSWD);
    assert_eq!(resolve_uid("root", &f.0), Ok(Some(0)));
    assert_eq!(resolve_uid("big", &f.0), Ok(Some(100000)));
    assert_eq!(resolve_uid("gmk", &f.0), Ok(Some(1500)), "first entry wins");
    assert_eq!(resolve_uid("last", &f.0), Ok(Some(4294967294)));
    assert_eq!(resolve_uid("nobody", &f.0), Ok(None));
    assert_eq!(resolve_uid("bad", &f.0), Ok(None));
    assert_eq!(resolve_uid("neg", &f.0), Ok(None));
    assert_eq!(resolve_uid("broken", &f.0), Ok(None));
    assert_eq!(resolve_uid("+nis", &f.0), Ok(None));
    assert_eq!(resolve_uid("", &f.0), Ok(None));
    assert_eq!(resolve_uid("root:x", &f.0), Ok(None));
    assert_eq!(resolve_uid("# comment", &f.0), Ok(None));
    assert_eq!(resolve_uid("caf\u{e9}", &f.0), Ok(None));
    let e = resolve_uid("root", Path::new("/nonexistent/passwd")).unwrap_err();
    assert!(matches!(e, LookupError::Io { .. }));
    assert!(e.to_string().starts_with("cannot read /nonexistent/passwd: "));
}

#[test]
fn resolve_gid_reads_the_file() {
    let f = TempFile::new(GROUP);
    assert_eq!(resolve_gid("root", &f.0), Ok(Some(0)));
    assert_eq!(resolve_gid("apps", &f.0), Ok(Some(3000)));
    assert_eq!(resolve_gid("huge", &f.0), Ok(Some(200000)));
    assert_eq!(resolve_gid("gmk", &f.0), Ok(None));
}

#[test]
fn owner_and_group_limits() {
    let passwd = TempFile::new(PASSWD);
    let group = TempFile::new(GROUP);
    let p = ok("limit container owners = gmk, 42\nlimit container groups = apps");
    assert_eq!(p.owner_allowed(1500, &passwd.0), Ok(true));
    assert_eq!(p.owner_allowed(42, &passwd.0), Ok(true));
    assert_eq!(p.owner_allowed(0, &passwd.0), Ok(false));
    assert_eq!(p.group_allowed(3000, &group.0), Ok(true));
    assert_eq!(p.group_allowed(0, &group.0), Ok(false));

    // A name that is not in the file fails closed, naming it.
    let p = ok("limit container owners = ghost\nlimit container groups = ghosts");
    let e = p.owner_allowed(0, &passwd.0).unwrap_err();
    assert_eq!(e.to_string(), format!("\"ghost\" is not in {}", passwd.0.display()));
    assert!(p.group_allowed(0, &group.0).is_err());

    // Unset limits allow everyone without reading anything.
    let d = Policy::defaults();
    assert_eq!(d.owner_allowed(1234, Path::new("/nonexistent")), Ok(true));
    assert_eq!(d.group_allowed(1234, Path::new("/nonexistent")), Ok(true));
}

// ---- no panics --------------------------------------------------------------------------

/// A small deterministic generator (xorshift), so the crate needs no dependency for this.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn arbitrary_input_never_panics() {
    let names: Vec<&str> = directives().chain(["", "x", "mount hostfs"]).collect();
    let values = [
        "yes",
        "no",
        "",
        "minimal",
        "/a:/b",
        "/a:/b:/c",
        ",",
        ",,,",
        "0",
        "4294967295",
        "99999999999999999999",
        "root",
        "-1",
        "..",
        "/..",
        "é",
        "\u{0}",
        "=",
        "#",
        ":",
        "iflimited",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..(rng.next() % 8) {
            let name = rng.pick(&names);
            let sep = rng.pick(&[" = ", "=", " ", "\t=\t", "\n"]);
            let v1 = rng.pick(&values);
            let v2 = rng.pick(&values);
            let end = rng.pick(&["\n", "\r\n", ", ", ""]);
            text.push_str(&format!("{name}{sep}{v1},{v2}{end}"));
        }
        let _ = parse(&text);
    }
    for _ in 0..3000 {
        let len = (rng.next() % 200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() % 256) as u8).collect();
        let _ = Policy::from_reader(&bytes[..], Path::new(ORIGIN));
        let _ = path_is_within(
            Path::new(std::ffi::OsStr::new(&String::from_utf8_lossy(&bytes).into_owned())),
            Path::new("/data"),
        );
    }
}
