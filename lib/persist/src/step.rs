//! The step vocabulary: what one tool does to records, and what came of it.
//!
//! A tool's work is a [`Step`] run over the records that carry no error
//! ([`execute`]); each record gets an [`Outcome`] or a [`Failure`], and
//! `execute` applies the bookkeeping every tool shares: `state`, `changed`,
//! the `steps` log with timing, `error` (and `refused`), the `check` mark in
//! `--check` mode. The run's [`Report`] and [`Exit`] code are the same for
//! both drivers: the command line ([`crate::cli`]) and Ansible
//! ([`crate::ansible`]), which both sit above this module.

use std::time::{Duration, Instant};

use crate::codes;
pub use crate::failure::Failure;
use crate::log;
use crate::record::{Record, RecordError, State, StepLog};

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
/// record at a time). Once a signal has asked the run to stop
/// ([`crate::interrupt`]), the records not yet started fail as
/// `interrupted`, untouched.
pub(crate) fn one_by_one(
    records: &mut [Record],
    mut f: impl FnMut(&mut Record) -> StepResult,
) -> Vec<(StepResult, Duration)> {
    records
        .iter_mut()
        .map(|r| {
            let t = Instant::now();
            let res = match crate::interrupt::interrupted() {
                Some(sig) => Err(crate::interrupt::failure(sig)),
                None => f(r),
            };
            (res, t.elapsed())
        })
        .collect()
}

/// At most this many records are worked on at once by [`concurrently`]
/// (and never more than the machine has processors).
pub(crate) const MAX_WORKERS: usize = 8;

/// Runs `f` on each record, several records at a time (bounded by the
/// processors and [`MAX_WORKERS`]), timing each; results come back in input
/// order, and each record's failure stays its own. Once a signal has asked
/// the run to stop ([`crate::interrupt`]), the records not yet started fail
/// as `interrupted`, untouched.
pub fn concurrently<F>(records: &mut [Record], f: F) -> Vec<(StepResult, Duration)>
where
    F: Fn(usize, &mut Record) -> StepResult + Sync,
{
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
        .min(records.len())
        .max(1);
    if workers == 1 {
        let mut i = 0;
        return one_by_one(records, |r| {
            i += 1;
            f(i - 1, r)
        });
    }
    let results: Vec<std::sync::Mutex<Option<(StepResult, Duration)>>> = records
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    let queue = std::sync::Mutex::new(records.iter_mut().enumerate());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, r)) = next else { break };
                    let t = Instant::now();
                    let res = match crate::interrupt::interrupted() {
                        Some(sig) => Err(crate::interrupt::failure(sig)),
                        None => f(i, r),
                    };
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((res, t.elapsed()));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| {
                    (
                        Err(Failure::new(codes::INTERNAL, "a record was not worked on")),
                        Duration::ZERO,
                    )
                })
        })
        .collect()
}

/// Runs `f` as [`concurrently`] does, wave after wave: the records of one
/// wave (indices into `records`) side by side, the next wave once they are
/// all done. For records that must not run at once (a mount inside
/// another's mountpoint). Records in no wave fail as `internal`.
pub(crate) fn in_waves<F>(
    records: &mut [Record],
    waves: &[Vec<usize>],
    f: F,
) -> Vec<(StepResult, Duration)>
where
    F: Fn(usize, &mut Record) -> StepResult + Sync,
{
    let mut results: Vec<Option<(StepResult, Duration)>> =
        (0..records.len()).map(|_| None).collect();
    for wave in waves {
        let mut batch: Vec<Record> = wave
            .iter()
            .map(|&i| std::mem::take(&mut records[i]))
            .collect();
        let out = concurrently(&mut batch, |j, r| f(wave[j], r));
        for ((&i, rec), res) in wave.iter().zip(batch).zip(out) {
            records[i] = rec;
            results[i] = Some(res);
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                (
                    Err(Failure::new(codes::INTERNAL, "a record was not worked on")),
                    Duration::ZERO,
                )
            })
        })
        .collect()
}

/// What a run produced, for either output form (NDJSON, or the Ansible
/// module result).
pub struct Report {
    /// Every record, in input order, with the step's results applied.
    pub records: Vec<Record>,
    /// The file changes the step made (for Ansible's `--diff`).
    pub diffs: Vec<Diff>,
    /// One line per record acted on: what was done, or what failed.
    pub messages: Vec<String>,
    /// The exit code the run ends with.
    pub exit: Exit,
}

/// Runs `step` over `records` (those carrying an error pass through) and
/// applies the bookkeeping.
pub(crate) fn execute(
    mut step: Box<dyn Step>,
    mut records: Vec<Record>,
    check: bool,
    tool: &str,
) -> Report {
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
            // Messages reach records (stdout, Ansible's result) as well as
            // stderr: a credential an SDK error quoted is written
            // <redacted> in both.
            Ok(o) => {
                let line = log::redact(&format!("{}: {}", rec.label(), o.message));
                log::info(format_args!("{line}"));
                messages.push(line);
                rec.state = Some(o.state);
                rec.changed = Some(o.changed);
                diffs.extend(o.diff);
            }
            Err(f) => {
                let line = log::redact(&format!("{}: {} [{}]", rec.label(), f.message, f.code));
                log::error(format_args!("{line}"));
                messages.push(line);
                rec.changed = Some(false);
                rec.error = Some(RecordError {
                    tool: tool.to_string(),
                    code: f.code.into(),
                    message: log::redact(&f.message),
                });
                rec.refused = f.refused;
            }
        }
        if check {
            rec.check = true;
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

/// Appends this tool's entry to the record's `steps` log, which the flows'
/// summary reads.
fn push_step(rec: &mut Record, tool: &str, changed: bool, took: Duration) {
    rec.steps.push(StepLog {
        tool: tool.to_string(),
        changed,
        ms: took.as_millis() as u64,
    });
}

/// [`Exit::Failed`] if any record has an error that is not a refusal,
/// else [`Exit::Refused`] if any was refused, else [`Exit::Ok`].
pub(crate) fn exit_code(records: &[Record]) -> Exit {
    let refused = |r: &Record| r.refused;
    if records.iter().any(|r| r.error.is_some() && !refused(r)) {
        Exit::Failed
    } else if records.iter().any(|r| r.error.is_some()) {
        Exit::Refused
    } else {
        Exit::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step whose failure quotes a credential (as an SDK error chain
    /// can): the record's error, on stdout and in Ansible's result, carries
    /// `<redacted>` instead.
    struct Leaky;

    impl Step for Leaky {
        fn run(&mut self, records: &mut [Record], _: Ctx) -> Vec<(StepResult, Duration)> {
            one_by_one(records, |_| {
                Err(Failure::new(
                    codes::API_ERROR,
                    "signing failed with secret StepSecret/Value+42",
                ))
            })
        }
    }

    #[test]
    fn a_credential_in_a_failure_never_reaches_the_record() {
        crate::log::add_secret("StepSecret/Value+42");
        let report = execute(Box::new(Leaky), vec![Record::default()], false, "disk-x");
        let line = report.records[0].to_line();
        assert!(!line.contains("StepSecret"), "{line}");
        assert!(line.contains("<redacted>"), "{line}");
        assert!(report.messages.iter().all(|m| !m.contains("StepSecret")));
    }
}
