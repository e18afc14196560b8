//! disk-archive: archive each disk record's disk, at one moment, into a
//! restic repository; keep the newest; list, verify, or seal a set.

use std::process::ExitCode;

use appscale_persist::archive::capture;
use appscale_persist::archive::make::ArchiveArgs;
use appscale_persist::cli;
use appscale_persist::record::Record;
use appscale_persist::step::Step;
use appscale_persist::tool::{Common, ToolArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
Each disk is archived from a read-only view of one moment: a mounted
filesystem is flushed and frozen while a copy of its image is made (a reflink
where the state directory's filesystem can, else a sparse copy), thawed, and
the copy is attached and mounted read-only for restic to read. The disks of
one run are frozen together; with --set, all or nothing. A freeze is
released on every path: errors, --freeze-timeout, signals, and SIGKILL (a
thaw sentinel thaws a filesystem its tool died holding). What a killed run
leaves (a scratch copy, its mount) is removed by the next run of the disk.
A cloud disk (EC2, Eucalyptus, Compute Engine) is archived on its own node:
its filesystem is frozen for the provider's snapshot call alone, and
disk-scratch (run as a subprocess: this tool links no cloud SDK) makes a
scratch disk of the snapshot, attaches it here (read-only), and deletes both
after; the record needs its volume id (pipe it through disk-attach --self).
restic runs as a subprocess with --json; the repository's password and the
bucket's credentials reach it through a file or the environment, never its
arguments, and are never printed. A repository belongs to one deployment
(marked at --init): another's is refused. Retention (--keep, --keep-within)
deletes only older archives of the same node's disk, and reports them.
disk-restore fills a new disk from an archive (docs/archive.md).

Exit status: 0 ok; 1 a record failed; 2 bad usage or input (nothing done).

Examples:
  disk-archive --provider local --disk data-1 --repo /srv/archives \\
    --password-file /etc/appscale-persist/archive.key --init --keep 7
  disk-archive --check --provider local --disk data-1 --repo s3:https://s3.amazonaws.com/b
  appscalefile-lint --plan AppScalefile | disk-archive --repo gs:b:/prod --keep-within 30d
  appscalefile-lint --plan AppScalefile | disk-archive --set nightly \\
    | disk-archive --seal nightly
  appscalefile-lint --plan AppScalefile | disk-archive --verify --read-data 5%
  appscalefile-lint --plan AppScalefile | disk-archive --list";

/// Archive each disk record's disk, at one moment, into a restic
/// repository; keep the newest; list, verify, or seal a set.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with
/// `archive` {id, time, repository, state, node, disk, fs, size, files,
/// added, freeze, set, pruned, verified}; with --list, one record per
/// archive of each disk, newest first. The repository is S3 (or any
/// S3-compatible store, Google Cloud Storage's XML API too), Google Cloud
/// Storage, or a directory.
#[derive(Debug, Parser)]
#[command(name = "disk-archive", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    archive: ArchiveArgs,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-archive";
    const STOPS_CLEANLY: bool = true;
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.archive.single()
    }
    fn check_records(&self, records: &[Record]) -> Result<(), String> {
        self.archive.check_records(records)
    }
    fn into_step(self) -> Box<dyn Step> {
        Box::new(self.archive.step())
    }
}

fn main() -> ExitCode {
    if let Some(code) = capture::sentinel_main() {
        return code;
    }
    cli::main::<Args>()
}
