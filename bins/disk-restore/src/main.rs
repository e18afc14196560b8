//! disk-restore: fill each disk record's new filesystem from an archive.

use std::process::ExitCode;

use appscale_persist::archive::fill::RestoreArgs;
use appscale_persist::cli;
use appscale_persist::record::Record;
use appscale_persist::step::Step;
use appscale_persist::tool::{Common, ToolArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
Only a filesystem this node's disk-ensure-fs just made (and that was not
mounted since) is filled: any other is refused (not-fresh) and nothing is
written, so a disk holding data is never mixed with an archive. The archive
is restored into a staging directory on the new filesystem, renamed when
complete, then moved into place entry by entry: a fill cut short is redone
or finished by the next run (while the filesystem is still fresh), else
reported (seed-marker). Any filesystem takes any archive (ext4's onto XFS).
The root directory's owner and mode are set as archived, and files that had
holes get them back. A rerun on a disk filled from the same archive changes
nothing. Runs on one node take turns (the node lock).

Exit status: 0 ok; 1 a record failed; 2 bad usage or input (nothing done).

Examples:
  disk-restore --device /dev/xvdf --repo s3:https://s3.amazonaws.com/b \\
    --password-file /etc/appscale-persist/archive.key --from latest
  disk-restore --check --device /dev/loop3 --repo /srv/archives --from set:nightly
  appscalefile-lint --plan AppScalefile | disk-create | disk-attach \\
    | disk-ensure-fs | disk-restore --repo gs:b:/prod | disk-mount";

/// Fill each disk record's new filesystem from an archive.
///
/// Reads disk records (NDJSON) on stdin, as disk-ensure-fs writes them,
/// and writes them on stdout with `archive` (state restored); disk-mount
/// mounts them next. The archive is the newest of the record's node
/// (--from latest), a set's (--from set:NAME), or one by id.
#[derive(Debug, Parser)]
#[command(name = "disk-restore", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    restore: RestoreArgs,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-restore";
    const STOPS_CLEANLY: bool = true;
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.restore.single()
    }
    fn check_records(&self, records: &[Record]) -> Result<(), String> {
        self.restore.check_records(records)
    }
    fn into_step(self) -> Box<dyn Step> {
        Box::new(self.restore.step())
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
