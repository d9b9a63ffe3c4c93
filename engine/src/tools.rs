//! The external programs strata drives as the invoking user (mksquashfs, unsquashfs, mke2fs,
//! e2fsck, resize2fs, debugfs): found in `PATH`, then in the sbin directories that an ordinary
//! user's `PATH` often lacks; run with their output captured so a failure becomes one clear
//! message that quotes what the tool said.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Directories searched after `PATH`: e2fsprogs lives in sbin, which users' `PATH` may lack.
const SBIN: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// A program strata needs and how the user gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    pub name: &'static str,
    /// The Debian/RHEL package that ships it.
    pub package: &'static str,
}

pub const MKSQUASHFS: Tool = Tool { name: "mksquashfs", package: "squashfs-tools" };
pub const UNSQUASHFS: Tool = Tool { name: "unsquashfs", package: "squashfs-tools" };
pub const MKE2FS: Tool = Tool { name: "mke2fs", package: "e2fsprogs" };
pub const E2FSCK: Tool = Tool { name: "e2fsck", package: "e2fsprogs" };
pub const RESIZE2FS: Tool = Tool { name: "resize2fs", package: "e2fsprogs" };
pub const DEBUGFS: Tool = Tool { name: "debugfs", package: "e2fsprogs" };

/// Why a tool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{} not found in PATH nor in /usr/sbin, /sbin: install {}", .0.name, .0.package)]
    Missing(Tool),
    #[error("could not run {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("{name} {status}{}", said(.stderr))]
    Failed { name: &'static str, status: ExitStatus, stderr: String },
}

/// How a tool ended, as the message shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "failed with exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "was killed by signal {s}"),
        }
    }
}

fn said(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// The last few non-empty lines of a tool's output, joined on one line (a FATAL message is
/// one line).
pub fn tail(bytes: &[u8]) -> String {
    const LINES: usize = 4;
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(LINES)..].join(" / ")
}

impl Tool {
    /// The tool's full path: the first executable `name` in `PATH`, then in the sbin dirs.
    pub fn find(self) -> Result<PathBuf, ToolError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .filter(|d| d.is_absolute())
            .chain(SBIN.iter().map(PathBuf::from))
            .map(|d| d.join(self.name))
            .find(|p| is_executable(p))
            .ok_or(ToolError::Missing(self))
    }

    /// A command for the tool, with stdin closed and its output captured.
    pub fn command(self) -> Result<Command, ToolError> {
        let mut cmd = Command::new(self.find()?);
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }

    /// Run `cmd` (made by [`Tool::command`]) to its end; `Ok` with its output if the exit code
    /// is one of `ok_codes`.
    /// [`Tool::run`] for a step that changes the user's image in place: in a process group of
    /// its own (a Ctrl-C at the terminal does not reach it) and as an interrupt-critical
    /// section (a signal to strata waits until it has finished).
    pub fn run_critical(self, cmd: &mut Command, ok_codes: &[i32]) -> Result<Output, ToolError> {
        use std::os::unix::process::CommandExt;
        let _whole = crate::interrupt::critical();
        self.run(cmd.process_group(0), ok_codes)
    }

    pub fn run(self, cmd: &mut Command, ok_codes: &[i32]) -> Result<Output, ToolError> {
        crate::debug!("running {}", show(cmd));
        let program = PathBuf::from(cmd.get_program());
        let spawn_err = |source| ToolError::Spawn { path: program.clone(), source };
        // As `Command::output`: no stdin, both outputs captured (no caller sets them).
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        // A signal that ends strata kills it before its temporaries are removed.
        let _kill = crate::interrupt::kill_on_signal(child.id());
        let out = child.wait_with_output().map_err(spawn_err)?;
        match out.status.code() {
            Some(c) if ok_codes.contains(&c) => Ok(out),
            code => {
                use std::os::unix::process::ExitStatusExt;
                let status = match code {
                    Some(c) => ExitStatus::Code(c),
                    None => ExitStatus::Signal(out.status.signal().unwrap_or(0)),
                };
                let mut text = tail(&out.stderr);
                if text.is_empty() {
                    text = tail(&out.stdout);
                }
                Err(ToolError::Failed { name: self.name, status, stderr: text })
            }
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command line for debug output.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

fn quote(a: &OsStr) -> String {
    let s = a.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.into_owned()
    } else {
        crate::launch::action::sh_quote(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_on_one_line() {
        assert_eq!(tail(b"a\n\n b \nc\nd\ne\n"), "b / c / d / e");
        assert_eq!(tail(b""), "");
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let t = Tool { name: "strata-no-such-tool", package: "nothing" };
        let e = t.find().unwrap_err();
        assert_eq!(
            e.to_string(),
            "strata-no-such-tool not found in PATH nor in /usr/sbin, /sbin: install nothing"
        );
    }

    #[test]
    fn failures_quote_the_tool() {
        let sh = Tool { name: "sh", package: "dash" };
        let mut cmd = sh.command().unwrap();
        cmd.args(["-c", "echo one >&2; echo two >&2; exit 3"]);
        let e = sh.run(&mut cmd, &[0]).unwrap_err();
        assert_eq!(e.to_string(), "sh failed with exit code 3: one / two");
        let mut cmd = sh.command().unwrap();
        cmd.args(["-c", "exit 1"]);
        assert!(sh.run(&mut cmd, &[0, 1]).is_ok());
    }

    #[test]
    fn commands_are_shown_quoted() {
        let mut cmd = Command::new("/bin/x");
        cmd.args(["-d", "a b", "p?offset=4096"]);
        assert_eq!(show(&cmd), "/bin/x -d 'a b' 'p?offset=4096'");
    }
}
