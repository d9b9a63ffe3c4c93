//! The standard layout every SIF image carries, added to what a sandbox directory lacks:
//! `/.singularity.d` (env scripts, actions, runscript, labels) and the usual mount points, so
//! that the image runs the same under strata, Apptainer and older Singularity, and the starter
//! needs few stub entries for its mounts.
//!
//! The user's directory is never modified: the entries it lacks become mksquashfs pseudo-file
//! definitions (`-pf`), whose file contents are read from a private staging directory. An entry
//! that exists in the sandbox in any form (a file, a directory, even a dangling symlink) is kept
//! as it is; nothing is added beneath a path that is not a real directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::launch::action::sh_quote;

/// One entry of the skeleton; paths are absolute inside the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { path: &'static str, mode: u32 },
    File { path: &'static str, mode: u32, content: String },
    Symlink { path: &'static str, target: &'static str },
}

impl Entry {
    pub fn path(&self) -> &'static str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

/// The environment scripts are sourced in name order by the action script.
const ENV_01_BASE: &str = "#!/bin/sh\n# strata: base environment, sourced first.\n";
const ENV_90_ENVIRONMENT: &str = "#!/bin/sh\n# Custom environment shell code should follow\n\n";
const ENV_99_BASE: &str = r#"#!/bin/sh
# strata: libraries bound in /.singularity.d/libs are found last.
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH="/.singularity.d/libs"
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi
export LD_LIBRARY_PATH
"#;

/// The default runscript: a shell, given the run arguments.
pub const RUNSCRIPT: &str = "#!/bin/sh\n\nexec /bin/sh \"$@\"\n";
const STARTSCRIPT: &str = "#!/bin/sh\n";

/// Sourcing the env scripts, as the action scripts of older runtimes do before acting.
const SOURCE_ENV: &str = r#"#!/bin/sh
for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
"#;

fn action(body: &str) -> String {
    format!("{SOURCE_ENV}\n{body}")
}

const ACTION_EXEC: &str = "exec \"$@\"\n";
const ACTION_RUN: &str = r#"if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript "$@"
fi
echo "No runscript found in the container, executing /bin/sh"
exec /bin/sh "$@"
"#;
const ACTION_SHELL: &str = r#"if [ -x /bin/bash ]; then
    SHELL=/bin/bash
    export SHELL
    exec /bin/bash --norc "$@"
fi
SHELL=/bin/sh
export SHELL
exec /bin/sh "$@"
"#;
const ACTION_START: &str = r#"if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript
fi
"#;
const ACTION_TEST: &str = r#"if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test "$@"
fi
echo "No test found in container, executing /bin/sh -c true"
exec /bin/sh -c true
"#;

/// `labels.json`: what Apptainer's build records about an image built from a local sandbox.
pub fn labels(arch: &str, date: &str, source: &str) -> String {
    let labels: BTreeMap<&str, &str> = [
        ("org.label-schema.build-arch", arch),
        ("org.label-schema.build-date", date),
        ("org.label-schema.schema-version", "1.0"),
        ("org.label-schema.usage.singularity.deffile.bootstrap", "localimage"),
        ("org.label-schema.usage.singularity.deffile.from", source),
    ]
    .into_iter()
    .collect();
    let mut s = serde_json::to_string_pretty(&labels).expect("labels are plain strings");
    s.push('\n');
    s
}

/// Every skeleton entry, parents before children.
pub fn entries(labels_json: String) -> Vec<Entry> {
    use Entry::*;
    let file = |path, mode, content: &str| File { path, mode, content: content.to_string() };
    vec![
        Dir { path: "/.singularity.d", mode: 0o755 },
        Dir { path: "/.singularity.d/actions", mode: 0o755 },
        Dir { path: "/.singularity.d/env", mode: 0o755 },
        Dir { path: "/.singularity.d/libs", mode: 0o755 },
        file("/.singularity.d/env/01-base.sh", 0o755, ENV_01_BASE),
        file("/.singularity.d/env/90-environment.sh", 0o755, ENV_90_ENVIRONMENT),
        file("/.singularity.d/env/99-base.sh", 0o755, ENV_99_BASE),
        file("/.singularity.d/actions/exec", 0o755, &action(ACTION_EXEC)),
        file("/.singularity.d/actions/run", 0o755, &action(ACTION_RUN)),
        file("/.singularity.d/actions/shell", 0o755, &action(ACTION_SHELL)),
        file("/.singularity.d/actions/start", 0o755, &action(ACTION_START)),
        file("/.singularity.d/actions/test", 0o755, &action(ACTION_TEST)),
        file("/.singularity.d/runscript", 0o755, RUNSCRIPT),
        file("/.singularity.d/startscript", 0o755, STARTSCRIPT),
        File { path: "/.singularity.d/labels.json", mode: 0o644, content: labels_json },
        Symlink { path: "/singularity", target: ".singularity.d/runscript" },
        Symlink { path: "/.exec", target: ".singularity.d/actions/exec" },
        Symlink { path: "/.run", target: ".singularity.d/actions/run" },
        Symlink { path: "/.shell", target: ".singularity.d/actions/shell" },
        Symlink { path: "/.test", target: ".singularity.d/actions/test" },
        Symlink { path: "/environment", target: ".singularity.d/env/90-environment.sh" },
        Dir { path: "/dev", mode: 0o755 },
        Dir { path: "/proc", mode: 0o755 },
        Dir { path: "/sys", mode: 0o755 },
        Dir { path: "/tmp", mode: 0o1777 },
        Dir { path: "/home", mode: 0o755 },
        Dir { path: "/root", mode: 0o700 },
        Dir { path: "/var", mode: 0o755 },
        Dir { path: "/var/tmp", mode: 0o1777 },
        Dir { path: "/etc", mode: 0o755 },
        file("/etc/hosts", 0o644, ""),
        file("/etc/resolv.conf", 0o644, ""),
        file("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
        file("/etc/group", 0o644, "root:x:0:\n"),
    ]
}

/// What is there at `path` in the sandbox, without following a final symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Absent,
    Dir,
    Other,
}

fn probe(root: &Path, path: &str) -> Found {
    match std::fs::symlink_metadata(root.join(path.trim_start_matches('/'))) {
        Ok(m) if m.is_dir() => Found::Dir,
        Ok(_) => Found::Other,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Found::Absent,
        // Unreadable: leave it to mksquashfs to report.
        Err(_) => Found::Other,
    }
}

/// The entries of `all` that `root` lacks and that can be added: absent, under a parent that is
/// a real directory of the sandbox or an added directory.
pub fn missing(root: &Path, all: Vec<Entry>) -> Vec<Entry> {
    let mut added_dirs: Vec<&'static str> = Vec::new();
    let mut out = Vec::new();
    for e in all {
        let path = e.path();
        let parent = match path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &path[..i],
        };
        let parent_ok = parent == "/" || added_dirs.contains(&parent) || probe(root, parent) == Found::Dir;
        if !parent_ok || probe(root, path) != Found::Absent {
            continue;
        }
        if let Entry::Dir { path, .. } = e {
            added_dirs.push(path);
        }
        out.push(e);
    }
    out
}

/// Write the pseudo-file definitions for `entries` (owned by root) into `staging`, with each
/// file's content beside them; returns the definitions file to pass with `-pf`.
pub fn write_pseudo(staging: &Path, entries: &[Entry]) -> io::Result<std::path::PathBuf> {
    let mut defs = String::new();
    for (i, e) in entries.iter().enumerate() {
        match e {
            Entry::Dir { path, mode } => {
                let _ = writeln!(defs, "{path} d {mode:o} 0 0");
            }
            Entry::File { path, mode, content } => {
                let src = staging.join(format!("file-{i}"));
                std::fs::write(&src, content)?;
                let src = src.to_str().ok_or_else(|| {
                    io::Error::other(format!("staging path {} is not UTF-8", src.display()))
                })?;
                let _ = writeln!(defs, "{path} f {mode:o} 0 0 cat {}", sh_quote(src));
            }
            Entry::Symlink { path, target } => {
                let _ = writeln!(defs, "{path} s 777 0 0 {target}");
            }
        }
    }
    let pf = staging.join("pseudo");
    std::fs::write(&pf, defs)?;
    Ok(pf)
}

/// Seconds since the epoch as RFC 3339 UTC (`2024-01-31T12:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn paths(es: &[Entry]) -> Vec<&'static str> {
        es.iter().map(Entry::path).collect()
    }

    #[test]
    fn an_empty_sandbox_gets_everything() {
        let d = tempfile::tempdir().unwrap();
        let all = entries(labels("amd64", "x", "d"));
        let n = all.len();
        assert_eq!(missing(d.path(), all).len(), n);
    }

    #[test]
    fn existing_entries_are_kept_and_nothing_goes_under_a_non_directory() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join(".singularity.d/env")).unwrap();
        std::fs::write(r.join(".singularity.d/runscript"), "#!/bin/sh\necho mine\n").unwrap();
        symlink("usr/etc", r.join("etc")).unwrap(); // a symlink: nothing is added beneath
        symlink("nowhere", r.join("tmp")).unwrap(); // dangling: still counts as present
        std::fs::write(r.join("var"), "").unwrap(); // a file where a dir would go
        let got = missing(r, entries(labels("amd64", "x", "d")));
        let p = paths(&got);
        assert!(!p.contains(&"/.singularity.d"));
        assert!(!p.contains(&"/.singularity.d/env"));
        assert!(p.contains(&"/.singularity.d/env/01-base.sh"));
        assert!(p.contains(&"/.singularity.d/actions"));
        assert!(p.contains(&"/.singularity.d/actions/run"));
        assert!(!p.contains(&"/.singularity.d/runscript"));
        assert!(!p.iter().any(|x| x.starts_with("/etc")));
        assert!(!p.contains(&"/tmp"));
        assert!(!p.iter().any(|x| x.starts_with("/var")));
        assert!(p.contains(&"/proc"));
    }

    #[test]
    fn pseudo_definitions_quote_the_staging_path() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("it's here");
        std::fs::create_dir(&staging).unwrap();
        let es = vec![
            Entry::Dir { path: "/tmp", mode: 0o1777 },
            Entry::File { path: "/etc/hosts", mode: 0o644, content: "x\n".into() },
            Entry::Symlink { path: "/.run", target: ".singularity.d/actions/run" },
        ];
        let pf = write_pseudo(&staging, &es).unwrap();
        let text = std::fs::read_to_string(pf).unwrap();
        let src = staging.join("file-1");
        assert_eq!(
            text,
            format!(
                "/tmp d 1777 0 0\n/etc/hosts f 644 0 0 cat {}\n/.run s 777 0 0 \
                 .singularity.d/actions/run\n",
                sh_quote(src.to_str().unwrap())
            )
        );
        assert_eq!(std::fs::read_to_string(src).unwrap(), "x\n");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn labels_are_sorted_json() {
        let l = labels("amd64", "2023-11-14T22:13:20Z", "rootfs/");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["org.label-schema.build-arch"], "amd64");
        assert_eq!(v["org.label-schema.usage.singularity.deffile.from"], "rootfs/");
    }
}
