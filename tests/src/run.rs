//! Running commands as a test user (or root) and capturing what they print.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::users::TestUser;

/// `PATH` of every command run by the harness.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a command may run unless [`RunOpts::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for the output pipes to close after the command exited (a descendant may
/// hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Options of [`run_as`] and [`run_as_root`]: stdin data, extra environment, working directory,
/// timeout. Build with the chained setters: `RunOpts::new().stdin("data").env("K", "V")`.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    pub stdin: Option<Vec<u8>>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
}

impl RunOpts {
    pub fn new() -> RunOpts {
        RunOpts::default()
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> RunOpts {
        self.stdin = Some(data.into());
        self
    }

    /// Adds (or, given again, overrides) an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> RunOpts {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> RunOpts {
        self.cwd = Some(dir.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> RunOpts {
        self.timeout = Some(timeout);
        self
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Who ran it.
    pub user: String,
    /// The exit code; 128 + the signal number when killed by a signal (as a shell reports it);
    /// 127 when the command could not be started (stderr says why).
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Killed because it ran longer than its timeout.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0 && self.signal.is_none() && !self.timed_out
    }

    /// Panics, printing everything, unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Output {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Panics, printing everything, unless the command exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Output {
        assert!(
            self.code == code && self.signal.is_none() && !self.timed_out,
            "expected exit code {code}:\n{self}"
        );
        self
    }

    /// Panics unless stderr contains `text`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, text: &str) -> &Output {
        assert!(self.stderr.contains(text), "expected stderr to contain {text:?}:\n{self}");
        self
    }

    /// Panics unless stdout contains `text`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, text: &str) -> &Output {
        assert!(self.stdout.contains(text), "expected stdout to contain {text:?}:\n{self}");
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.command)?;
        writeln!(f, "  as:      {}", self.user)?;
        match (self.timed_out, self.signal) {
            (true, _) => writeln!(f, "  status:  TIMED OUT (killed)")?,
            (false, Some(sig)) => writeln!(f, "  status:  killed by signal {sig}")?,
            (false, None) => writeln!(f, "  status:  exit code {}", self.code)?,
        }
        writeln!(f, "  stdout:\n{}", indent(&self.stdout))?;
        write!(f, "  stderr:\n{}", indent(&self.stderr))
    }
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (empty)".to_string();
    }
    text.lines().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
}

/// Runs `argv` as `user`: real and effective uid and gid, and exactly the user's groups, in a
/// clean environment (`PATH`, `HOME`, `USER`, `LOGNAME`, `LANG=C`, plus `opts.env`), in
/// `opts.cwd` or the user's home (entered after the ids changed, so with the user's rights).
/// The command runs in its own process group, which is killed if it outlives the timeout.
pub fn run_as<S: AsRef<OsStr>>(user: &TestUser, argv: &[S], opts: &RunOpts) -> Output {
    spawn_as(user, argv, opts).wait()
}

/// [`run_as`] for root: same clean environment and timeout; cwd is `opts.cwd` or `/`.
pub fn run_as_root<S: AsRef<OsStr>>(argv: &[S], opts: &RunOpts) -> Output {
    spawn_as_root(argv, opts).wait()
}

/// Starts what [`run_as`] runs, without waiting: for a container that must stay up while the
/// test does something else (a second writer, an instance, a signal).
pub fn spawn_as<S: AsRef<OsStr>>(user: &TestUser, argv: &[S], opts: &RunOpts) -> Running {
    let cwd = opts.cwd.clone().unwrap_or_else(|| user.home.clone());
    let ids = Ids {
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.clone(),
        cwd: CString::new(cwd.as_os_str().as_bytes()).unwrap_or_else(|_| panic!("NUL in {}", cwd.display())),
    };
    let env = [
        ("HOME", user.home.as_os_str()),
        ("USER", OsStr::new(&user.name)),
        ("LOGNAME", OsStr::new(&user.name)),
    ];
    spawn(Some(ids), &format!("{} ({}:{})", user.name, user.uid, user.gid), argv, &env, opts)
}

/// [`spawn_as`] for root.
pub fn spawn_as_root<S: AsRef<OsStr>>(argv: &[S], opts: &RunOpts) -> Running {
    let env = [("HOME", OsStr::new("/root")), ("USER", OsStr::new("root")), ("LOGNAME", OsStr::new("root"))];
    spawn(None, "root", argv, &env, opts)
}

struct Ids {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    cwd: CString,
}

/// A command started by [`spawn_as`] or [`spawn_as_root`]. Dropping it kills its process group.
pub struct Running {
    command: String,
    user: String,
    deadline: Instant,
    state: State,
}

enum State {
    /// It could not be started; the output says why.
    Failed(String),
    Started {
        child: Child,
        stdout: Drain,
        stderr: Drain,
    },
    Done,
}

impl Running {
    /// The pid (also the process group id), if it started.
    pub fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Started { child, .. } => Some(child.id()),
            _ => None,
        }
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the process group we created (process_group(0)).
            unsafe { libc::kill(-(pid as libc::pid_t), signal) };
        }
    }

    /// What it has printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        match &self.state {
            State::Started { stdout, .. } => text(&stdout.0),
            _ => String::new(),
        }
    }

    /// Waits until stdout contains `text` (true) or `timeout` passes or it exits (false).
    /// For a payload that says when it is ready: `sh -c 'echo ready; sleep 60'`.
    pub fn wait_for_stdout(&mut self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout_so_far().contains(text) {
                return true;
            }
            if let State::Started { child, .. } = &mut self.state {
                if !matches!(child.try_wait(), Ok(None)) {
                    return self.stdout_so_far().contains(text);
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for it to exit (killing its process group at the timeout given when it started)
    /// and returns what it did.
    pub fn wait(mut self) -> Output {
        let mut output = Output {
            command: std::mem::take(&mut self.command),
            user: std::mem::take(&mut self.user),
            code: 127,
            signal: None,
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
        };
        match std::mem::replace(&mut self.state, State::Done) {
            State::Failed(why) => output.stderr = why,
            State::Started { mut child, stdout, stderr } => {
                let (status, timed_out) = wait(&mut child, self.deadline);
                let closed = Instant::now() + PIPE_GRACE;
                while !(stdout.1.is_finished() && stderr.1.is_finished()) && Instant::now() < closed {
                    thread::sleep(Duration::from_millis(10));
                }
                output.code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                output.signal = status.signal();
                output.timed_out = timed_out;
                output.stdout = text(&stdout.0);
                output.stderr = text(&stderr.0);
            }
            State::Done => {}
        }
        output
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let State::Started { child, .. } = &mut self.state {
            // SAFETY: kill(2) on the process group we created (process_group(0)).
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

fn spawn<S: AsRef<OsStr>>(
    ids: Option<Ids>,
    who: &str,
    argv: &[S],
    base_env: &[(&str, &OsStr)],
    opts: &RunOpts,
) -> Running {
    let Some((program, args)) = argv.split_first() else {
        panic!("run_as: empty argv");
    };
    let command: Vec<String> = argv.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
    let mut running = Running {
        command: command.join(" "),
        user: who.to_string(),
        deadline: Instant::now() + opts.timeout.unwrap_or(DEFAULT_TIMEOUT),
        state: State::Done,
    };

    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C")
        .envs(base_env.iter().copied())
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(if opts.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    match ids {
        Some(ids) => {
            // SAFETY: the closure runs in the child between fork and exec and calls only
            // async-signal-safe functions (setgroups, setresgid, setresuid, chdir) on data
            // prepared before the fork; it allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    let check = |rc: libc::c_int| {
                        if rc == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::last_os_error())
                        }
                    };
                    check(libc::setgroups(ids.groups.len(), ids.groups.as_ptr()))?;
                    check(libc::setresgid(ids.gid, ids.gid, ids.gid))?;
                    check(libc::setresuid(ids.uid, ids.uid, ids.uid))?;
                    check(libc::chdir(ids.cwd.as_ptr()))
                });
            }
        }
        None => {
            cmd.current_dir(opts.cwd.clone().unwrap_or_else(|| PathBuf::from("/")));
        }
    }

    let mut child = match cmd.spawn() {
        Ok(child) => child,
        // Also how a failed setgroups/setresuid/chdir in the child shows.
        Err(err) => {
            running.state =
                State::Failed(format!("strata-e2e: cannot run `{}` as {who}: {err}\n", running.command));
            return running;
        }
    };
    if let (Some(data), Some(mut stdin)) = (opts.stdin.clone(), child.stdin.take()) {
        // A command that does not read its stdin closes the pipe: ignore EPIPE.
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    running.state = State::Started { child, stdout, stderr };
    running
}

type Drain = (Arc<Mutex<Vec<u8>>>, thread::JoinHandle<()>);

/// Reads a pipe to its end in a thread, into a buffer that can be looked at any time.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Drain {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let handle = thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    (buf, handle)
}

/// Waits for the child; past the deadline kills its whole process group.
fn wait(child: &mut Child, deadline: Instant) -> (std::process::ExitStatus, bool) {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                // SAFETY: kill(2) on the child's process group (its pid, see process_group(0)).
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let status =
                    child.wait().unwrap_or_else(|err| panic!("cannot wait for a killed child: {err}"));
                return (status, true);
            }
            Err(err) => panic!("cannot wait for a child: {err}"),
        }
    }
}
