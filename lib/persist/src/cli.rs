//! The command-line driver: what every tool's `main` does around its step.
//!
//! A tool's `main` is one call to [`main`] with its clap arguments type.
//! This module then owns, once for all tools:
//!
//! * the prologue ([`prologue`]): the log level from `-q`/`-v` and a panic
//!   hook that prints one line instead of a backtrace (the linter uses it
//!   too);
//! * input: one record built from flags (`disk-ensure-fs --device
//!   /dev/loop3`), or every record on stdin, read whole and validated before
//!   anything is done (a malformed line: exit 2, nothing done);
//! * output: NDJSON on stdout, one human line per record on stderr, and the
//!   exit code ([`Exit`]);
//! * handing over to Ansible's binary-module mode ([`crate::ansible`]) when
//!   started with a module arguments file, and to [`crate::generate`] for
//!   `--generate man|complete-bash|complete-zsh|complete-fish`.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::process::ExitCode;

use crate::log;
use crate::record::{self, Record};
use crate::step::Exit;
use crate::tool::{self, ToolArgs};

/// Runs tool `A`: parse arguments (or read Ansible's arguments file), read
/// records, run the step, write records, and return the exit code.
pub fn main<A: ToolArgs>() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = crate::generate::from_argv::<A>(&argv) {
        return code;
    }
    if let Some(path) = crate::ansible::module_args_path(&argv) {
        return crate::ansible::run::<A>(&path);
    }
    if A::STOPS_CLEANLY {
        crate::interrupt::install();
    }
    let args = A::parse();
    let common = args.common().clone();
    prologue(A::NAME, common.quiet, common.verbose);
    if let Err(e) = args.validate() {
        log::error(format_args!("{e}"));
        return ExitCode::from(Exit::Usage as u8);
    }
    let records = match input(A::NAME, args.single(), args.fallback()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = tool::run(args, records);
    if report.exit == Exit::Usage {
        for m in &report.messages {
            log::error(format_args!("{m}"));
        }
        return ExitCode::from(Exit::Usage as u8);
    }
    let mut out = std::io::stdout().lock();
    finish(record::write_all(&mut out, &report.records), report.exit)
}

/// The exit code of a tool once its stdout is `written`: `exit`, unless the
/// write failed (`Failed`, said on stderr). A reader gone away (`| head`)
/// is no failure: nothing more to say.
pub fn finish(written: std::io::Result<()>, exit: Exit) -> ExitCode {
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            log::error(format_args!("writing stdout: {e}"));
            ExitCode::from(Exit::Failed as u8)
        }
        _ => ExitCode::from(exit as u8),
    }
}

/// The records a run of tool `name` works on: the one its flags describe
/// (`single`), else those on stdin, read whole and checked (a malformed line,
/// or a terminal, is a usage error: the exit code is returned), else, when
/// stdin gives nothing (a terminal, `/dev/null`), the `fallback` record.
pub fn input(
    name: &str,
    single: Option<Record>,
    fallback: Option<Record>,
) -> Result<Vec<Record>, ExitCode> {
    match (single, fallback) {
        (Some(r), _) => Ok(vec![r]),
        // A terminal or /dev/null: the flags name the record. A pipe or a
        // file always means records, even none (an empty pipe is a
        // pipeline whose first step printed nothing, not "use the flags").
        (None, Some(r)) if stdin_gives_nothing() => Ok(vec![r]),
        (None, fallback) => read_stdin(name, fallback.is_some()),
    }
}

/// The start every tool shares: the log level from `-q`/`-v` (or
/// `APPSCALE_PERSIST_LOG`), and [`install_panic_hook`].
pub fn prologue(name: &str, quiet: bool, verbose: u8) {
    log::setup(name, quiet, verbose);
    install_panic_hook();
}

/// Replaces Rust's panic message (a backtrace hint) with one line that says
/// it is a bug.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::error(format_args!(
            "internal error{at}: {what}; this is a bug, please report it"
        ));
    }));
}

/// Whether stdin is a terminal, `/dev/null` or closed: no records can come
/// from it, as opposed to a pipe or a file.
fn stdin_gives_nothing() -> bool {
    match nix::sys::stat::fstat(std::io::stdin()) {
        Ok(st) => st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFCHR,
        Err(_) => true,
    }
}

/// How long a tool waits on a silent pipe before saying it is waiting.
const HINT_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// Reads the records on stdin; a terminal is a usage error. When nothing
/// arrives for a while, says once that the tool waits for records (over
/// ssh without a terminal, stdin is a pipe from the operator's keyboard).
fn read_stdin(name: &str, has_fallback: bool) -> Result<Vec<Record>, ExitCode> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        log::error(format_args!(
            "no input: pipe disk records into {name} (see `{name} --help`), or name the disk with flags"
        ));
        return Err(ExitCode::from(Exit::Usage as u8));
    }
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(HINT_AFTER).unwrap_or(PollTimeout::MAX);
    if matches!(poll(&mut fds, timeout), Ok(0)) {
        let alone = if has_fallback {
            ", or run it with stdin from /dev/null to act on the flags alone"
        } else {
            ""
        };
        log::warn(format_args!(
            "waiting for disk records on stdin (pipe them in, as `{name} --help` shows{alone})"
        ));
    }
    record::read_all(stdin.lock(), "stdin").map_err(|e| {
        log::error(format_args!("{e}; nothing was done"));
        ExitCode::from(Exit::Usage as u8)
    })
}
