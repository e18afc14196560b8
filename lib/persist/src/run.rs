//! The one way to run a subprocess: an argv (never a shell string), stdin
//! closed, stdout and stderr captured, and a deadline after which the child
//! is killed. When a signal asks the run to stop ([`crate::interrupt`]), the
//! child is stopped too ([`RunError::Interrupted`]), unless it was marked to
//! finish ([`Cmd::finish_on_interrupt`]: `mount`, `umount`); a child that
//! stopping half-way would leave a filesystem half-written is never killed,
//! not even at its deadline ([`Cmd::never_killed`]: `mkfs`, `resize2fs`).
//! A child marked to finish runs in a process group of its own with the
//! stopping signals blocked, so a Ctrl-C at the terminal (sent to the whole
//! foreground group) does not reach it either.
//!
//! A failure carries the command line and the child's stderr, so the message
//! an operator sees says what was run and what it said.
//!
//! A child may be given bytes on stdin ([`Cmd::stdin`]: `restic backup
//! --stdin`), and its stdout lines may be read as they come
//! ([`Cmd::output_lines`]: `restic --json` progress).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait::{Backoff, WaitParams};

/// Directories searched after `$PATH` for system tools: `mkfs.*`, `blkid`
/// and friends live in sbin, which is not on every user's path.
const SBIN_DIRS: &str = "/usr/local/sbin:/usr/sbin:/sbin";

/// Held while a child is started, so children start one at a time.
///
/// Between fork and exec a child holds a copy of every file this process
/// has open, close-on-exec or not, and `spawn` returns only once the child
/// has exec'd. Were two threads to start children at once, one thread's
/// `mkfs` could find its device still held exclusively, or its `umount` its
/// filesystem still busy, through the other thread's half-started child
/// holding a file the first had already closed. One at a time, a child
/// starts with no other child half-started.
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A command to run.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    timeout: Duration,
    env: Vec<(OsString, OsString)>,
    finish_on_interrupt: bool,
    stdin: Option<Vec<u8>>,
    dir: Option<PathBuf>,
    ends_with_us: bool,
    never_killed: bool,
}

/// What a finished child produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; `None` when a signal ended the child.
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Output {
    /// Whether the child exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a command could not run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program is not installed.
    #[error("`{program}` not found on PATH or in /usr/sbin, /sbin{hint}")]
    NotFound {
        /// The program name.
        program: String,
        /// `: install the X package`, when known.
        hint: String,
    },
    /// The program exists but could not be started.
    #[error("could not start `{cmdline}`: {error}")]
    Spawn {
        /// The command line, for display.
        cmdline: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The child ran past its deadline and was killed.
    #[error("`{cmdline}` did not finish within {timeout:?} and was killed")]
    TimedOut {
        /// The command line, for display.
        cmdline: String,
        /// The deadline it had.
        timeout: Duration,
    },
    /// A signal asked the run to stop, and the child was stopped.
    #[error("`{cmdline}` was stopped: {signal} received")]
    Interrupted {
        /// The command line, for display.
        cmdline: String,
        /// The signal.
        signal: nix::sys::signal::Signal,
    },
    /// The child exited non-zero (from [`Cmd::run`] only).
    #[error("`{cmdline}` failed ({status}){}", stderr_suffix(.stderr))]
    Failed {
        /// The command line, for display.
        cmdline: String,
        /// `exit 1`, `signal 9`.
        status: String,
        /// Exit code, when it exited.
        code: Option<i32>,
        /// The child's stderr, trimmed.
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl Cmd {
    /// A command with the default deadline of 60 s.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            timeout: Duration::from_secs(60),
            env: Vec::new(),
            finish_on_interrupt: false,
            never_killed: false,
            stdin: None,
            dir: None,
            ends_with_us: false,
        }
    }

    /// Never kills the child: a signal lets it finish
    /// ([`Cmd::finish_on_interrupt`]), and its deadline only says, once,
    /// that it runs long and is waited for. For commands whose every
    /// moment is a write that stopping would leave half done (`mkfs`,
    /// `resize2fs`: a filesystem with errors).
    pub fn never_killed(mut self) -> Cmd {
        self.finish_on_interrupt = true;
        self.never_killed = true;
        self
    }

    /// Has the child sent SIGTERM should this process die first (SIGKILL
    /// included): for a long transfer (restic) that must not go on
    /// reading a mount the next run will want to take back.
    pub fn ends_with_us(mut self) -> Cmd {
        self.ends_with_us = true;
        self
    }

    /// Runs the child in `dir` instead of this process's directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.dir = Some(dir.into());
        self
    }

    /// Gives the child these bytes on stdin (then end of file), instead of
    /// a closed stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Lets the child finish when a signal asks the run to stop (for
    /// commands that stopping half-way would make worse: `mkfs`, or a kernel
    /// call such as `mount` that cannot be interrupted anyway).
    pub fn finish_on_interrupt(mut self) -> Cmd {
        self.finish_on_interrupt = true;
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets the deadline after which the child is killed.
    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The command line as an operator would type it, for messages.
    pub fn cmdline(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_word(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to completion and returns its output whatever the exit code.
    pub fn output(&self) -> Result<Output, RunError> {
        self.output_lines(|_| {})
    }

    /// Runs to completion like [`Cmd::output`], handing each line of stdout
    /// (without its newline) to `line` as the child writes it; the whole of
    /// stdout is in the [`Output`] too.
    pub fn output_lines(&self, line: impl FnMut(&str) + Send) -> Result<Output, RunError> {
        let stdin = if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = self.spawn(stdin, Stdio::piped(), Stdio::piped())?;
        std::thread::scope(|s| {
            // Feed stdin and drain both pipes on their own threads, so a
            // chatty child never blocks on a full pipe while we wait for it
            // to exit.
            if let (Some(bytes), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
                s.spawn(move || {
                    // A child that exits without reading all is its
                    // business: its exit status says what happened.
                    let _ = std::io::Write::write_all(&mut pipe, bytes);
                });
            }
            let out = drain_lines(s, child.stdout.take(), line);
            let err = drain_lines(s, child.stderr.take(), |_| {});
            let status = self.wait_for(&mut child)?;
            Ok(Output {
                code: status.code(),
                stdout: out.join().unwrap_or_default(),
                stderr: err.join().unwrap_or_default(),
            })
        })
    }

    /// Starts the child and returns at once, with a pipe to its stdin: for a
    /// helper that lives beside this process (the thaw sentinel of
    /// [`crate::archive`]). Its stdout goes nowhere, its stderr is this
    /// process's; it is killed when the handle is dropped unfinished.
    pub fn start(&self) -> Result<Started, RunError> {
        let mut child = self.spawn(Stdio::piped(), Stdio::null(), Stdio::inherit())?;
        let stdin = child.stdin.take();
        Ok(Started {
            child: Some(child),
            stdin,
            timeout: self.timeout,
        })
    }

    /// Starts the child with these standard streams: its argv, its
    /// environment (and `LC_ALL=C`: messages we parse must not be
    /// translated), its directory, the signals unblocked and, when asked,
    /// SIGTERM should this process die first; one child at a time.
    fn spawn(&self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Result<Child, RunError> {
        let path = resolve(&self.program)?;
        crate::log::debug(format_args!("running {}", self.cmdline()));
        let mut command = Command::new(&path);
        command
            .args(&self.args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .env("LC_ALL", "C");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        // The child starts with the stopping signals unblocked (std
        // empties the mask), so that it can be stopped; one that is let
        // finish gets them blocked again, and a process group of its own:
        // a Ctrl-C at the terminal (sent to the whole foreground group)
        // does not reach it either. One that ends with us is sent SIGTERM
        // should this process die first.
        let hook = if self.finish_on_interrupt {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            crate::interrupt::block_in_child
        } else {
            crate::interrupt::unblock_in_child
        };
        let ends_with_us = self.ends_with_us;
        // SAFETY: the hook only calls pthread_sigmask and prctl, which are
        // async-signal-safe, as code between fork and exec must be.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                hook()?;
                if ends_with_us {
                    nix::libc::prctl(
                        nix::libc::PR_SET_PDEATHSIG,
                        nix::libc::SIGTERM as nix::libc::c_ulong,
                    );
                }
                Ok(())
            });
        }
        let spawned = {
            let _one_at_a_time = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
            command.spawn()
        };
        spawned.map_err(|error| RunError::Spawn {
            cmdline: self.cmdline(),
            error,
        })
    }

    /// Runs to completion; a non-zero exit is [`RunError::Failed`].
    pub fn run(&self) -> Result<Output, RunError> {
        let out = self.output()?;
        if out.success() {
            Ok(out)
        } else {
            Err(self.failed(&out))
        }
    }

    /// The [`RunError::Failed`] for an output this command produced.
    pub fn failed(&self, out: &Output) -> RunError {
        RunError::Failed {
            cmdline: self.cmdline(),
            status: match out.code {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_string(),
            },
            code: out.code,
            stderr: out.stderr.trim().to_string(),
        }
    }

    fn wait_for(&self, child: &mut Child) -> Result<ExitStatus, RunError> {
        let mut backoff = Backoff::start(WaitParams::quick(self.timeout));
        let exited = ExitWatch::open(child);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(error) => {
                    return Err(RunError::Spawn {
                        cmdline: self.cmdline(),
                        error,
                    });
                }
            }
            if let Some(signal) = crate::interrupt::interrupted()
                && !self.finish_on_interrupt
            {
                stop(child);
                return Err(RunError::Interrupted {
                    cmdline: self.cmdline(),
                    signal,
                });
            }
            match backoff.next_delay() {
                Some(d) => exited.sleep(d),
                None if self.never_killed => {
                    crate::log::warn(format_args!(
                        "`{}` still runs after {:?}: waiting for it to finish (stopping it would leave the filesystem half-written)",
                        self.cmdline(),
                        self.timeout
                    ));
                    return child.wait().map_err(|error| RunError::Spawn {
                        cmdline: self.cmdline(),
                        error,
                    });
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RunError::TimedOut {
                        cmdline: self.cmdline(),
                        timeout: self.timeout,
                    });
                }
            }
        }
    }
}

/// A child started with [`Cmd::start`], running beside this process.
#[derive(Debug)]
pub struct Started {
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    timeout: Duration,
}

impl Started {
    /// Writes `words` to the child's stdin, closes it, and waits (at most
    /// the command's deadline) for the child to exit; killed past it.
    pub fn finish(mut self, words: &[u8]) {
        if let Some(mut pipe) = self.stdin.take() {
            let _ = std::io::Write::write_all(&mut pipe, words);
        }
        if let Some(mut child) = self.child.take() {
            reap_within(&mut child, self.timeout);
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wakes a wait as soon as a child exits: the backoff's sleeps between
/// `try_wait`s (which keep the deadline and notice a signal) end early
/// when it does, so a 40 ms `mkfs` costs 40 ms, not the next step of the
/// backoff. A pidfd (Linux 5.3) polled for the sleep; on a kernel without
/// one, the plain sleep.
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn open(child: &Child) -> ExitWatch {
        use std::os::fd::FromRawFd;
        // pidfd_open by its system call: the C libraries do not all wrap
        // it (musl does not).
        // SAFETY: plain integer arguments; a non-negative result is a new
        // descriptor this process owns.
        let fd = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_open,
                child.id() as nix::libc::pid_t,
                0 as nix::libc::c_uint,
            )
        };
        // SAFETY: see above: `fd` is a fresh descriptor, owned once.
        ExitWatch((fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sleeps for `d`, or until the child exits if sooner.
    fn sleep(&self, d: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let Some(fd) = &self.0 else {
            return std::thread::sleep(d);
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).is_err() {
            std::thread::sleep(d);
        }
    }
}

/// Stops a child: SIGTERM, then SIGKILL if it has not exited a few seconds
/// later (e2fsck, cp and friends stop cleanly on SIGTERM).
fn stop(child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    reap_within(child, Duration::from_secs(5));
}

/// Waits for `child` to exit, at most `time`; killed (SIGKILL) past it.
fn reap_within(child: &mut Child, time: Duration) {
    let mut backoff = Backoff::start(WaitParams::quick(time));
    while let Ok(None) = child.try_wait() {
        match backoff.next_delay() {
            Some(d) => std::thread::sleep(d),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cmdline())
    }
}

/// Reads `pipe` to its end on a thread of scope `s`, handing each line to
/// `line` as it comes; returns the whole text.
fn drain_lines<'s, R: Read + Send + 's>(
    s: &'s std::thread::Scope<'s, '_>,
    pipe: Option<R>,
    mut line: impl FnMut(&str) + Send + 's,
) -> std::thread::ScopedJoinHandle<'s, String> {
    s.spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = pipe {
            let mut r = std::io::BufReader::new(p);
            loop {
                let start = buf.len();
                match std::io::BufRead::read_until(&mut r, b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf[start..]);
                        line(text.trim_end_matches(['\n', '\r']));
                    }
                }
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Finds a program on `$PATH`, then in the sbin directories.
pub fn resolve(program: &OsStr) -> Result<PathBuf, RunError> {
    if program.to_string_lossy().contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(std::env::split_paths(SBIN_DIRS));
    let search = std::env::join_paths(dirs).unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    which::which_in(program, Some(search), cwd).map_err(|_| {
        let name = program.to_string_lossy().into_owned();
        RunError::NotFound {
            hint: install_hint(&name),
            program: name,
        }
    })
}

/// Whether a program is installed.
pub fn installed(program: &str) -> bool {
    resolve(OsStr::new(program)).is_ok()
}

fn install_hint(program: &str) -> String {
    let package = match program {
        "mkfs.xfs" | "xfs_growfs" | "xfs_repair" | "xfs_admin" => "xfsprogs",
        "mkfs.btrfs" | "btrfs" => "btrfs-progs",
        "mkfs.ext4" | "e2fsck" | "resize2fs" | "dumpe2fs" | "fsck.ext4" => "e2fsprogs",
        "blkid" | "wipefs" | "lsblk" | "losetup" | "mount" | "umount" | "findmnt" => "util-linux",
        "restic" => "restic",
        _ => return String::new(),
    };
    format!(": install the {package} package")
}

/// Whether the process `pid` still runs: it exists and is not a zombie (a
/// process killed, not yet reaped, holds nothing any more).
pub fn running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// When the process `pid` started (`/proc/PID/stat` field 22, clock ticks
/// since boot), while it runs ([`running`]): with its pid, it names one
/// process even once the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid)
        .filter(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
        .map(|(_, start)| start)
}

/// The state letter and start time of `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last `)`.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.nth(18)?.parse().ok()?))
}

/// Quotes a word for display when it holds anything a shell would split on.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_exit_code() {
        let out = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .output()
            .unwrap();
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(3), "out\n", "err\n")
        );
    }

    #[test]
    fn a_failure_names_the_command_and_its_stderr() {
        let e = Cmd::new("sh")
            .args(["-c", "echo 'no such thing' >&2; exit 2"])
            .run()
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(
                "`sh -c 'echo '\\''no such thing'\\'' >&2; exit 2'` failed (exit 2): no such thing"
            ),
            "{msg}"
        );
    }

    #[test]
    fn stdin_is_given_and_stdout_lines_are_seen_as_they_come() {
        let mut seen = Vec::new();
        let out = Cmd::new("sh")
            .args(["-c", "cat; echo two"])
            .stdin("one\n")
            .output_lines(|l| seen.push(l.to_string()))
            .unwrap();
        assert_eq!(seen, ["one", "two"]);
        assert_eq!(out.stdout, "one\ntwo\n");
    }

    #[test]
    fn a_hung_child_is_killed_at_the_deadline() {
        let e = Cmd::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(200))
            .output()
            .unwrap_err();
        assert!(matches!(e, RunError::TimedOut { .. }), "{e}");
    }

    #[test]
    fn a_child_never_killed_outlives_its_deadline() {
        let out = Cmd::new("sh")
            .args(["-c", "sleep 0.5; echo done"])
            .timeout(Duration::from_millis(100))
            .never_killed()
            .run()
            .unwrap();
        assert_eq!(out.stdout, "done\n");
    }

    #[test]
    fn a_process_runs_until_it_is_reaped_or_a_zombie() {
        let me = std::process::id();
        assert!(running(me));
        assert!(start_time(me).is_some());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not reaped: a zombie.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!running(pid), "a zombie does not run");
        assert_eq!(start_time(pid), None);
        child.wait().unwrap();
        assert!(!running(pid));
    }

    #[test]
    fn a_missing_program_says_what_to_install() {
        let e = resolve(OsStr::new("mkfs.definitely-not-here")).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        assert_eq!(install_hint("mkfs.xfs"), ": install the xfsprogs package");
    }
}
