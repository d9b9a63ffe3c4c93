//! A temporary installation of strata, starter setuid root, made with the Makefile's
//! `install-files` target.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::cleanup::{self, GlobalLock};
use crate::run::{run_as, run_as_root, Output, RunOpts};
use crate::users::TestUser;
use crate::workspace_root;

/// An install prefix: `bin/strata`, `libexec/strata/strata-starter` (root:root 4755),
/// `etc/strata/strata.conf`, `var/strata/session`.
#[derive(Debug)]
pub struct Install {
    prefix: PathBuf,
    /// Removed on drop ([`Install::with_config`]); the shared install lives until exit.
    owned: bool,
}

impl Install {
    /// The install shared by all tests of this process, with the shipped `strata.conf`. Never
    /// change its config: tests run in parallel. `None` (with a printed reason) unless root.
    pub fn shared() -> Option<&'static Install> {
        static SHARED: OnceLock<Option<Install>> = OnceLock::new();
        crate::require_root()?;
        SHARED
            .get_or_init(|| {
                let prefix = cleanup::new_dir("install", 0o755)?;
                install_into(&prefix);
                Some(Install { prefix, owned: false })
            })
            .as_ref()
    }

    /// A separate install whose `strata.conf` is `text` (root:root 0644; any text, valid or
    /// not), removed when dropped. For tests of one directive.
    pub fn with_config(text: &str) -> Option<Install> {
        let prefix = cleanup::new_dir("install", 0o755)?;
        install_into(&prefix);
        let install = Install { prefix, owned: true };
        install.write_config(text);
        Some(install)
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `<prefix>/bin/strata`.
    pub fn strata(&self) -> PathBuf {
        self.prefix.join("bin/strata")
    }

    /// `<prefix>/libexec/strata/strata-starter`.
    pub fn starter(&self) -> PathBuf {
        self.prefix.join("libexec/strata/strata-starter")
    }

    /// `<prefix>/etc/strata/strata.conf`.
    pub fn conf(&self) -> PathBuf {
        self.prefix.join("etc/strata/strata.conf")
    }

    /// `<prefix>/var/strata/session`.
    pub fn session_dir(&self) -> PathBuf {
        self.prefix.join("var/strata/session")
    }

    /// Runs `<prefix>/bin/strata args...` as `user`.
    pub fn strata_as<S: AsRef<OsStr>>(&self, user: &TestUser, args: &[S], opts: &RunOpts) -> Output {
        run_as(user, &self.argv(args), opts)
    }

    /// Runs `<prefix>/bin/strata args...` as root.
    pub fn strata_as_root<S: AsRef<OsStr>>(&self, args: &[S], opts: &RunOpts) -> Output {
        run_as_root(&self.argv(args), opts)
    }

    fn argv<S: AsRef<OsStr>>(&self, args: &[S]) -> Vec<std::ffi::OsString> {
        std::iter::once(self.strata().into_os_string())
            .chain(args.iter().map(|a| a.as_ref().to_owned()))
            .collect()
    }

    /// Replaces the `strata.conf` of an install made by [`Install::with_config`]. Panics on the
    /// shared install, whose config other tests rely on.
    pub fn rewrite_config(&self, text: &str) {
        assert!(self.owned, "the shared install's strata.conf must not change");
        self.write_config(text);
    }

    fn write_config(&self, text: &str) {
        let conf = self.conf();
        fs::write(&conf, text)
            .and_then(|()| fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)))
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", conf.display()));
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        if self.owned {
            if let Err(err) = cleanup::remove_tree(&self.prefix) {
                eprintln!("strata-e2e: leaving {}: {err}", self.prefix.display());
            }
        }
    }
}

/// `make -s install-files PREFIX=<prefix>`, after `make build` if the binaries are missing.
fn install_into(prefix: &Path) {
    ensure_built();
    let out = Command::new("make")
        .arg("-C")
        .arg(workspace_root())
        .args(["-s", "install-files"])
        .arg(format!("PREFIX={}", prefix.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run make: {err}"));
    assert!(
        out.status.success(),
        "make install-files PREFIX={} failed ({}):\n{}{}",
        prefix.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn engine_bin() -> PathBuf {
    workspace_root().join("target/release/strata")
}

/// `target/<host>/release/strata-starter`, for whichever host triple the Makefile used.
fn starter_built() -> bool {
    let Ok(entries) = fs::read_dir(workspace_root().join("target")) else {
        return false;
    };
    entries.flatten().any(|e| e.path().join("release/strata-starter").is_file())
}

/// Runs `make build` once, under a lock shared by all test processes, if `make build` has not
/// been run (`make test` runs it first; then this does nothing). Binaries that exist are used
/// as they are, even if the sources changed since: run `make build` after editing.
fn ensure_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        if engine_bin().is_file() && starter_built() {
            return Ok(());
        }
        let _lock = GlobalLock::take();
        if engine_bin().is_file() && starter_built() {
            return Ok(());
        }
        eprintln!("strata-e2e: release binaries missing, running `make build` (once)");
        let status = Command::new("make")
            .arg("-C")
            .arg(workspace_root())
            .args(["-s", "build"])
            .stdin(Stdio::null())
            .status()
            .map_err(|err| format!("cannot run make: {err}"))?;
        if !status.success() {
            return Err(format!("`make build` failed ({status})"));
        }
        if !(engine_bin().is_file() && starter_built()) {
            return Err("`make build` did not produce the release binaries".into());
        }
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}
