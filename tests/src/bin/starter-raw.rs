//! `starter-raw`: talk to the setuid starter directly, as a hostile user would.
//!
//! ```text
//! starter-raw STARTER PLAN_FILE [--fd N:MODE:PATH]... [--env K=V]... [--keep-fd N]
//! ```
//! Opens each PATH as whoever runs this (MODE: `r` read-only, `w` read-write, `d` directory,
//! `p` O_PATH), places it on fd N, puts the bytes of PLAN_FILE on fd 3 (a memfd; `-` for no
//! plan at all), and execs STARTER with exactly the `--env` entries as its environment.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;

fn die(msg: &str) -> ! {
    eprintln!("starter-raw: {msg}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        die("usage: starter-raw STARTER PLAN_FILE [--fd N:MODE:PATH]... [--env K=V]...");
    }
    let (starter, plan_file) = (&args[0], &args[1]);
    let mut fds: Vec<(i32, i32)> = Vec::new();
    let mut env: Vec<CString> = Vec::new();
    let mut i = 2;
    while i < args.len() {
        let value = args.get(i + 1).unwrap_or_else(|| die("missing value"));
        match args[i].as_str() {
            "--fd" => {
                let mut parts = value.splitn(3, ':');
                let (n, mode, path) = match (parts.next(), parts.next(), parts.next()) {
                    (Some(n), Some(m), Some(p)) => (n, m, p),
                    _ => die("--fd N:MODE:PATH"),
                };
                let n: i32 = n.parse().unwrap_or_else(|_| die("bad fd number"));
                let flags = match mode {
                    "r" => libc::O_RDONLY,
                    "w" => libc::O_RDWR,
                    "d" => libc::O_RDONLY | libc::O_DIRECTORY,
                    "p" => libc::O_PATH,
                    _ => die("MODE is r, w, d or p"),
                };
                let c = CString::new(std::path::Path::new(path).as_os_str().as_bytes())
                    .unwrap_or_else(|_| die("NUL"));
                // SAFETY: a valid C string; the returned fd is ours.
                let fd = unsafe { libc::open(c.as_ptr(), flags) };
                if fd < 0 {
                    die(&format!("cannot open {path}: {}", std::io::Error::last_os_error()));
                }
                fds.push((fd, n));
            }
            "--env" => env.push(CString::new(value.as_str()).unwrap_or_else(|_| die("NUL"))),
            other => die(&format!("unknown option {other}")),
        }
        i += 2;
    }
    let plan_fd = if plan_file == "-" {
        None
    } else {
        let bytes = std::fs::read(plan_file).unwrap_or_else(|e| die(&format!("{plan_file}: {e}")));
        let memfd = nix::sys::memfd::memfd_create(c"plan", nix::sys::memfd::MemFdCreateFlag::empty())
            .unwrap_or_else(|e| die(&format!("memfd: {e}")));
        let mut f = std::fs::File::from(memfd);
        f.write_all(&bytes).unwrap_or_else(|e| die(&format!("write: {e}")));
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).unwrap_or_else(|e| die(&format!("seek: {e}")));
        Some(f.into_raw_fd())
    };
    // Move everything out of the way first, then into place (targets may collide with sources).
    let mut moved = Vec::new();
    for (fd, n) in fds {
        // SAFETY: F_DUPFD on an fd we own.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD, 100) };
        moved.push((high, n));
        // SAFETY: closing an fd we own.
        unsafe { libc::close(fd) };
    }
    if let Some(p) = plan_fd {
        // SAFETY: F_DUPFD on an fd we own.
        let high = unsafe { libc::fcntl(p, libc::F_DUPFD, 100) };
        moved.push((high, 3));
    }
    for (high, n) in moved {
        // SAFETY: dup2 onto the fd number the plan names; the source is ours.
        if unsafe { libc::dup2(high, n) } < 0 {
            die("dup2");
        }
    }
    let starter_c = CString::new(starter.as_str()).unwrap_or_else(|_| die("NUL"));
    let argv = [starter_c.as_ptr(), std::ptr::null()];
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // Close the parked copies (>= 100) so only the plan's fds reach the starter.
    // SAFETY: close_range on our own fd table.
    unsafe { libc::syscall(libc::SYS_close_range, 100u32, u32::MAX, 0u32) };
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(starter_c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let _ = std::io::stderr().as_raw_fd();
    die(&format!("exec {starter}: {}", std::io::Error::last_os_error()));
}
