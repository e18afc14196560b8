//! What a tool is: its flags ([`Common`] plus its own, as a clap type
//! implementing [`ToolArgs`]) and the step they build; and [`run`], the one
//! way both drivers ([`crate::cli`], [`crate::ansible`]) turn arguments and
//! records into a [`Report`].

use clap::{Args, Parser};

use crate::record::Record;
use crate::step::{Exit, Report, Step, execute};

/// Flags every tool takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Common {
    /// Say what would change, change nothing.
    #[arg(long, global = true)]
    pub check: bool,
    /// Only print errors on stderr (no progress either).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print every command run and every API call on stderr; -vv also
    /// the cloud SDKs' own debug lines (retries, credentials, endpoints),
    /// -vvv their trace lines. RUST_LOG (`aws_config=debug,...`) picks SDK
    /// lines by target instead; credentials are always written <redacted>.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// A tool's arguments, as `main` needs them.
pub trait ToolArgs: Parser {
    /// The tool's name (`disk-mount`).
    const NAME: &'static str;
    /// Whether SIGINT, SIGTERM and SIGHUP stop the tool cleanly
    /// ([`crate::interrupt`]) rather than end it where it stands: true for
    /// the node tools, which hold things on the node (a temporary mount, an
    /// fstab change) that must be taken back on every path.
    const STOPS_CLEANLY: bool = false;
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
    /// Chooses the records this run takes from the whole input, before it
    /// is checked: `disk-attach --node auto` keeps this machine's node's
    /// alone. An error is a usage error (exit 2) and nothing is done.
    fn select(&mut self, records: Vec<Record>) -> Result<Vec<Record>, String> {
        Ok(records)
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

/// Runs tool `A`'s step over `records`: the whole input is checked first
/// ([`ToolArgs::check_records`]; a failure is [`Exit::Usage`] with nothing
/// done), then the step runs ([`execute`]); a record that lists snapshots (or
/// archives) becomes one record per snapshot (or archive). The caller has checked the
/// arguments themselves ([`ToolArgs::validate`]).
pub fn run<A: ToolArgs>(mut args: A, records: Vec<Record>) -> Report {
    let check = args.common().check;
    let records = match args.select(records) {
        Ok(r) => r,
        Err(e) => {
            return Report {
                records: Vec::new(),
                diffs: Vec::new(),
                messages: vec![format!("{e}; nothing was done")],
                exit: Exit::Usage,
            };
        }
    };
    if let Err(e) = args.check_records(&records) {
        return Report {
            records: Vec::new(),
            diffs: Vec::new(),
            messages: vec![format!("{e}; nothing was done")],
            exit: Exit::Usage,
        };
    }
    let mut report = execute(args.into_step(), records, check, A::NAME);
    report.records = report.records.into_iter().flat_map(split_listed).collect();
    report
}

/// A record listing snapshots (`disk-snapshot --list`) or archives
/// (`disk-archive --list`) as one record per snapshot or archive, newest
/// first; any other record as it is.
fn split_listed(mut rec: Record) -> Vec<Record> {
    let listed = std::mem::take(&mut rec.listed);
    let archives = std::mem::take(&mut rec.listed_archives);
    if !archives.is_empty() {
        return archives
            .into_iter()
            .map(|a| Record {
                archive: Some(a),
                ..rec.clone()
            })
            .collect();
    }
    if listed.is_empty() {
        return vec![rec];
    }
    listed
        .into_iter()
        .map(|s| Record {
            snapshot: Some(s),
            ..rec.clone()
        })
        .collect()
}
