//! The command-line driver: what every tool's `main` does around its step.
//!
//! A tool's `main` is one call: [`main`] with its clap arguments type for
//! a tool that runs a step over records ([`ToolArgs`]), [`report`] for one
//! that looks and writes what it found its own way ([`ReportArgs`]:
//! disk-status, disk-doctor, appscalefile-lint). Both go through one
//! entrance ([`enter`]), and this module owns, once for all tools:
//!
//! * the entrance: `--generate`, Ansible's module mode, clean stops on
//!   signals, the arguments, and the prologue ([`prologue`]: the log level
//!   from `-q`/`-v` and a panic hook that prints one line instead of a
//!   backtrace);
//! * input: one record built from flags (`disk-ensure-fs --device
//!   /dev/loop3`), or every record on stdin, read whole and validated before
//!   anything is done (a malformed line: exit 2, nothing done);
//! * output: NDJSON on stdout (or a tool's own text, [`Output`]), one human
//!   line per record on stderr, and the exit code ([`Exit`]), a reader gone
//!   away (`| head`) included ([`finish`]);
//! * handing over to Ansible's binary-module mode ([`crate::ansible`]) when
//!   started with a module arguments file, and to [`crate::generate`] for
//!   `--generate man|complete-bash|complete-zsh|complete-fish`.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;

use crate::ansible::{self, ModuleFlags};
use crate::log;
use crate::record::{self, Record};
use crate::step::Exit;
use crate::tool::{self, ToolArgs};

/// What a run writes on stdout once it is done.
#[derive(Debug)]
pub enum Output {
    /// Nothing.
    Nothing,
    /// Records, one NDJSON line each.
    Records(Vec<Record>),
    /// A tool's own text (a table, metrics, findings), as it is.
    Text(String),
}

/// How a run ends: what it writes on stdout, and its exit code.
#[derive(Debug)]
pub struct Outcome {
    /// Written on stdout.
    pub stdout: Output,
    /// The exit code, unless writing stdout fails.
    pub exit: Exit,
}

impl Outcome {
    /// A run that ends with `exit` and writes nothing.
    pub fn exit(exit: Exit) -> Self {
        Outcome {
            stdout: Output::Nothing,
            exit,
        }
    }
}

/// A tool's arguments when the tool writes its own output instead of
/// running a step per record (disk-status, disk-doctor,
/// appscalefile-lint): its `main` is [`report`].
pub trait ReportArgs: Parser {
    /// The tool's name (`disk-status`).
    const NAME: &'static str;
    /// Whether the tool reads disk records (stdin, or one from its flags;
    /// the module's `records` argument); appscalefile-lint reads a file.
    const TAKES_RECORDS: bool = true;
    /// `-q` and `-v`'s count.
    fn verbosity(&self) -> (bool, u8);
    /// The single record the flags describe; the tool then reads no stdin.
    fn single(&self) -> Option<Record> {
        None
    }
    /// Checks arguments that clap cannot check alone; an error is a usage
    /// error (exit 2).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// Checks the whole input before anything is looked at; an error is a
    /// usage error (exit 2).
    fn check_records(&self, _records: &[Record]) -> Result<(), String> {
        Ok(())
    }
    /// The run itself, over the records read (none unless
    /// [`Self::TAKES_RECORDS`]).
    fn run(self, records: Vec<Record>) -> Outcome;
    /// The Ansible module's result ([`ansible::run_module`]), over the
    /// module's records (its `records` argument, else the one its arguments
    /// describe), checked ([`Self::check_records`]); none unless
    /// [`Self::TAKES_RECORDS`].
    fn module(self, records: Vec<Record>, flags: ModuleFlags) -> Value;
}

/// Runs tool `A`: parse arguments (or read Ansible's arguments file), read
/// records, run the step, write records, and return the exit code.
pub fn main<A: ToolArgs>() -> ExitCode {
    let level = |a: &A| (a.common().quiet, a.common().verbose);
    match enter(A::NAME, A::STOPS_CLEANLY, ansible::run::<A>, level) {
        Ok(args) => finish_run(run_step(args)),
        Err(code) => code,
    }
}

/// Runs report tool `A`: parse arguments (or read Ansible's arguments
/// file), read records when it takes them, run it, write what it found,
/// and return the exit code.
pub fn report<A: ReportArgs>() -> ExitCode {
    let module = |path: &Path| ansible::run_module::<A>(A::NAME, path, A::TAKES_RECORDS, module);
    let args = match enter(A::NAME, false, module, A::verbosity) {
        Ok(args) => args,
        Err(code) => return code,
    };
    if let Err(e) = args.validate() {
        log::error(format_args!("{e}"));
        return ExitCode::from(Exit::Usage as u8);
    }
    let records = if A::TAKES_RECORDS {
        match input(A::NAME, args.single(), None) {
            Ok(r) => r,
            Err(code) => return code,
        }
    } else {
        Vec::new()
    };
    if let Err(e) = args.check_records(&records) {
        log::error(format_args!("{e}; nothing was looked at"));
        return ExitCode::from(Exit::Usage as u8);
    }
    finish_run(args.run(records))
}

/// Report tool `A` as an Ansible module: a tool that takes records logs
/// errors alone, and gets its records (the `records` argument, else the
/// one its arguments describe) checked before [`ReportArgs::module`].
fn module<A: ReportArgs>(args: A, records: Option<Vec<Record>>, flags: ModuleFlags) -> Value {
    if !A::TAKES_RECORDS {
        return args.module(Vec::new(), flags);
    }
    log::init(A::NAME, log::level_from(true, 0));
    let records = records.unwrap_or_else(|| args.single().into_iter().collect());
    if let Err(e) = args.check_records(&records) {
        return ansible::fail(e);
    }
    args.module(records, flags)
}

/// The one entrance of every tool: `--generate` pages, Ansible's module
/// mode (`module`, given the arguments file), clean stops on signals when
/// the tool `stops_cleanly`, the arguments, and the [`prologue`] at the
/// `level` they ask. The arguments, or the exit code when the run ended
/// here.
fn enter<A: Parser>(
    name: &str,
    stops_cleanly: bool,
    module: impl FnOnce(&Path) -> ExitCode,
    level: impl Fn(&A) -> (bool, u8),
) -> Result<A, ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = crate::generate::from_argv::<A>(&argv) {
        return Err(code);
    }
    if let Some(path) = ansible::module_args_path(&argv) {
        return Err(module(&path));
    }
    if stops_cleanly {
        crate::interrupt::install();
    }
    let args = A::parse();
    let (quiet, verbose) = level(&args);
    prologue(name, quiet, verbose);
    Ok(args)
}

/// A step tool's run: arguments checked, records read, the step run.
fn run_step<A: ToolArgs>(args: A) -> Outcome {
    if let Err(e) = args.validate() {
        log::error(format_args!("{e}"));
        return Outcome::exit(Exit::Usage);
    }
    let records = match input(A::NAME, args.single(), args.fallback()) {
        Ok(r) => r,
        Err(_) => return Outcome::exit(Exit::Usage),
    };
    let report = tool::run(args, records);
    if report.exit == Exit::Usage {
        for m in &report.messages {
            log::error(format_args!("{m}"));
        }
        return Outcome::exit(Exit::Usage);
    }
    Outcome {
        stdout: Output::Records(report.records),
        exit: report.exit,
    }
}

/// Writes a run's output on stdout and returns its exit code ([`finish`]).
fn finish_run(outcome: Outcome) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let written = match &outcome.stdout {
        Output::Nothing => Ok(()),
        Output::Records(records) => record::write_all(&mut out, records),
        Output::Text(text) => out.write_all(text.as_bytes()).and_then(|()| out.flush()),
    };
    finish(written, outcome.exit)
}

/// The exit code of a tool once its stdout is `written`: `exit`, unless the
/// write failed (`Failed`, said on stderr). A reader gone away (`| head`)
/// is no failure: nothing more to say.
fn finish(written: std::io::Result<()>, exit: Exit) -> ExitCode {
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
fn input(
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
fn prologue(name: &str, quiet: bool, verbose: u8) {
    log::setup(name, quiet, verbose);
    install_panic_hook();
}

/// Replaces Rust's panic message (a backtrace hint) with one line that says
/// it is a bug.
fn install_panic_hook() {
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
