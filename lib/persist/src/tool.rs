//! What every tool does around its one step.
//!
//! A tool's `main` is one call to [`main`] with its clap arguments type. This
//! module then owns, once for all seven tools:
//!
//! * input: one record built from flags (`disk-ensure-fs --device
//!   /dev/loop3`), or every record on stdin, read whole and validated before
//!   anything is done (a malformed line: exit 2, nothing done);
//! * the pass-through rule: records carrying `error` are not given to the
//!   step, and come out unchanged;
//! * per-record bookkeeping: `state`, `changed`, the `steps` log with timing,
//!   `error`, and the `check` mark in `--check` mode;
//! * output: NDJSON on stdout, one human line per record on stderr;
//! * exit codes ([`Exit`]);
//! * Ansible binary-module mode ([`crate::ansible`]): the same step, with
//!   arguments from the file Ansible passes and one JSON object out.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser};
use serde_json::{Value, json};

use crate::log;
use crate::record::{self, Record, RecordError, State};

/// Exit codes shared by every tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every record succeeded (or was already as wanted).
    Ok = 0,
    /// At least one record carries an error (its own, or passed on).
    Failed = 1,
    /// Bad usage or malformed input: nothing was done.
    Usage = 2,
    /// Refused to format a device because it holds data (and nothing else
    /// failed): `disk-ensure-fs` only.
    Refused = 3,
}

/// Flags every tool takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Common {
    /// Say what would change, change nothing.
    #[arg(long, global = true)]
    pub check: bool,
    /// Only print errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print every command run and every API call on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// A tool's arguments, as `main` needs them.
pub trait ToolArgs: Parser {
    /// The tool's name (`disk-mount`).
    const NAME: &'static str;
    /// The common flags.
    fn common(&self) -> &Common;
    /// The single record the flags describe, when identity flags (such as
    /// `--device`) were given; the tool then reads no stdin.
    fn single(&self) -> Option<Record>;
    /// The record the flags describe when stdin gives none (a terminal, or
    /// empty input): `disk-unmount --mountpoint DIR` alone. With records on
    /// stdin, such flags only fill in what the records do not name; they
    /// never replace them.
    fn fallback(&self) -> Option<Record> {
        None
    }
    /// Checks arguments that clap cannot check alone (a label too long for
    /// the filesystem type); an error is a usage error (exit 2).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// Checks the whole input before anything is done (several records
    /// that cannot go to one instance, say); an error is a usage error
    /// (exit 2) and no record is acted on.
    fn check_records(&self, _records: &[Record]) -> Result<(), String> {
        Ok(())
    }
    /// The step to run.
    fn into_step(self) -> Box<dyn Step>;
}

/// What a step did to one record.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The state the record is now in (in `--check`: would be in).
    pub state: State,
    /// Whether anything changed (in `--check`: would change).
    pub changed: bool,
    /// One line for the operator: what was done, or found.
    pub message: String,
    /// A file the step changed, before and after (for Ansible's `--diff`).
    pub diff: Option<Diff>,
}

impl Outcome {
    /// Something was changed.
    pub fn changed(state: State, message: impl Into<String>) -> Outcome {
        Outcome {
            state,
            changed: true,
            message: message.into(),
            diff: None,
        }
    }
    /// Nothing needed changing.
    pub fn unchanged(state: State, message: impl Into<String>) -> Outcome {
        Outcome {
            state,
            changed: false,
            message: message.into(),
            diff: None,
        }
    }
}

/// A file's text before and after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The file.
    pub path: String,
    /// Before.
    pub before: String,
    /// After.
    pub after: String,
}

/// Why a step failed on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code for the record's `error.code`.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// A deliberate refusal to touch data (exit 3), not a malfunction.
    pub refused: bool,
}

impl Failure {
    /// A failure with a code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
            refused: false,
        }
    }
    /// A refusal: the device holds data.
    pub fn refused(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
            refused: true,
        }
    }
}

/// The result of a step on one record.
pub type StepResult = Result<Outcome, Failure>;

/// Context every step gets.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// `--check`: change nothing.
    pub check: bool,
}

/// One tool's step over the records that carry no error.
pub trait Step {
    /// Runs over `records`; returns one result per record, in order, with
    /// the time spent on it.
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, Duration)>;
}

/// Runs `f` on each record in turn, timing each (for steps that act on one
/// record at a time).
pub fn one_by_one(
    records: &mut [Record],
    mut f: impl FnMut(&mut Record) -> StepResult,
) -> Vec<(StepResult, Duration)> {
    records
        .iter_mut()
        .map(|r| {
            let t = Instant::now();
            let res = f(r);
            (res, t.elapsed())
        })
        .collect()
}

/// What a run produced, for either output form (NDJSON, or the Ansible
/// module result).
pub(crate) struct Report {
    pub records: Vec<Record>,
    pub diffs: Vec<Diff>,
    pub messages: Vec<String>,
    pub exit: Exit,
}

/// Runs tool `A`: parse arguments (or read Ansible's arguments file), read
/// records, run the step, write records, and return the exit code.
pub fn main<A: ToolArgs>() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(path) = crate::ansible::module_args_path(&argv) {
        return crate::ansible::run::<A>(&path);
    }
    let args = A::parse();
    let common = args.common().clone();
    log::init(A::NAME, log::level_from(common.quiet, common.verbose));
    install_panic_hook();
    if let Err(e) = args.validate() {
        log::error(format_args!("{e}"));
        return ExitCode::from(Exit::Usage as u8);
    }
    let records = match args.single() {
        Some(r) => vec![r],
        None => match read_stdin::<A>(args.fallback().is_some()) {
            Ok(r) if r.is_empty() => args.fallback().into_iter().collect(),
            Ok(r) => r,
            Err(code) => return code,
        },
    };
    if let Err(e) = args.check_records(&records) {
        log::error(format_args!("{e}; nothing was done"));
        return ExitCode::from(Exit::Usage as u8);
    }
    let report = execute(args.into_step(), records, common.check, A::NAME);
    let mut out = std::io::stdout().lock();
    match record::write_all(&mut out, &report.records) {
        Ok(()) => {}
        // The reader went away (`| head`): nothing more to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            log::error(format_args!("writing stdout: {e}"));
            return ExitCode::from(Exit::Failed as u8);
        }
    }
    ExitCode::from(report.exit as u8)
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

/// Reads the records on stdin. A terminal gives none: an error unless the
/// flags describe a record (`has_fallback`).
fn read_stdin<A: ToolArgs>(has_fallback: bool) -> Result<Vec<Record>, ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        if has_fallback {
            return Ok(Vec::new());
        }
        log::error(format_args!(
            "no input: pipe disk records into {0} (see `{0} --help`), or name the disk with flags",
            A::NAME
        ));
        return Err(ExitCode::from(Exit::Usage as u8));
    }
    record::read_all(stdin.lock(), "stdin").map_err(|e| {
        log::error(format_args!("{e}; nothing was done"));
        ExitCode::from(Exit::Usage as u8)
    })
}

/// Runs `step` over `records` (those carrying an error pass through) and
/// applies the bookkeeping.
fn execute(mut step: Box<dyn Step>, mut records: Vec<Record>, check: bool, tool: &str) -> Report {
    let todo: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].error.is_none())
        .collect();
    let mut batch: Vec<Record> = todo
        .iter()
        .map(|&i| std::mem::take(&mut records[i]))
        .collect();
    let results = step.run(&mut batch, Ctx { check });
    debug_assert_eq!(
        results.len(),
        batch.len(),
        "a step returns one result per record"
    );
    let mut diffs = Vec::new();
    let mut messages = Vec::new();
    for ((i, mut rec), (result, took)) in todo.into_iter().zip(batch).zip(results) {
        let changed = matches!(&result, Ok(o) if o.changed);
        match result {
            Ok(o) => {
                let line = format!("{}: {}", rec.label(), o.message);
                log::info(format_args!("{line}"));
                messages.push(line);
                rec.state = Some(o.state);
                rec.changed = Some(o.changed);
                diffs.extend(o.diff);
            }
            Err(f) => {
                let line = format!("{}: {} [{}]", rec.label(), f.message, f.code);
                log::error(format_args!("{line}"));
                messages.push(line);
                rec.changed = Some(false);
                rec.error = Some(RecordError {
                    tool: tool.to_string(),
                    code: f.code,
                    message: f.message,
                });
                if f.refused {
                    rec.extra.insert("refused".into(), Value::Bool(true));
                }
            }
        }
        if check {
            rec.extra.insert("check".into(), Value::Bool(true));
        }
        push_step(&mut rec, tool, changed, took);
        records[i] = rec;
    }
    let exit = exit_code(&records);
    Report {
        records,
        diffs,
        messages,
        exit,
    }
}

/// Appends `{tool, changed, ms}` to the record's `steps` log, which the
/// flows' summary reads.
fn push_step(rec: &mut Record, tool: &str, changed: bool, took: Duration) {
    let entry = json!({ "tool": tool, "changed": changed, "ms": took.as_millis() as u64 });
    match rec.extra.get_mut("steps") {
        Some(Value::Array(a)) => a.push(entry),
        _ => {
            rec.extra.insert("steps".into(), Value::Array(vec![entry]));
        }
    }
}

/// [`Exit::Failed`] if any record has an error that is not a refusal,
/// else [`Exit::Refused`] if any was refused, else [`Exit::Ok`].
pub fn exit_code(records: &[Record]) -> Exit {
    let refused = |r: &Record| {
        r.extra
            .get("refused")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    if records.iter().any(|r| r.error.is_some() && !refused(r)) {
        Exit::Failed
    } else if records.iter().any(|r| r.error.is_some()) {
        Exit::Refused
    } else {
        Exit::Ok
    }
}

/// Runs a tool's step for the Ansible module path: `args` are already
/// parsed from the module's arguments, `records` come from its `records`
/// argument or from the flags.
pub(crate) fn execute_for_module<A: ToolArgs>(args: A, records: Option<Vec<Record>>) -> Report {
    let common = args.common().clone();
    log::init(A::NAME, log::level_from(true, 0));
    if let Err(e) = args.validate() {
        return Report {
            records: Vec::new(),
            diffs: Vec::new(),
            messages: vec![e],
            exit: Exit::Usage,
        };
    }
    let records = match records {
        Some(r) => r,
        None => args
            .single()
            .or_else(|| args.fallback())
            .into_iter()
            .collect(),
    };
    if let Err(e) = args.check_records(&records) {
        return Report {
            records: Vec::new(),
            diffs: Vec::new(),
            messages: vec![format!("{e}; nothing was done")],
            exit: Exit::Usage,
        };
    }
    execute(args.into_step(), records, common.check, A::NAME)
}

/// Writes one line of JSON to stdout.
pub(crate) fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
