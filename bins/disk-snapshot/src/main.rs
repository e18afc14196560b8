//! disk-snapshot: take a snapshot of each disk record's disk, keep the
//! newest, or list them.

use std::process::ExitCode;

use appscale_persist::cli;
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::snapshot::SnapshotArgs;
use appscale_persist::step::Step;
use appscale_persist::tool::{Common, ToolArgs};
use appscale_persist_cloud::{Operation, ProviderArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
A mounted filesystem is flushed, then frozen (fsfreeze) for the copy alone,
and thawed on every path: success, error, --freeze-timeout, SIGINT, SIGTERM,
SIGHUP (a second signal thaws, then exits at once); a freeze left by SIGKILL
is recorded, and thawed by the next tool that takes the node lock. A freeze
that cannot be taken, or a filesystem lazily unmounted but still in use, is
an error unless --no-freeze. An unmounted disk needs no freeze. Local
snapshots go to --snapshot-dir (best another filesystem), and are taken only
when they leave the room the live images may still claim (else no-space). Retention, with
--keep or --keep-within, deletes only older snapshots of the same disk and
deployment (on GCE: of that disk in that zone), never the one just taken,
and reports them (`snapshot.pruned`); only completed snapshots count, one
still pending is never deleted, a failed one is; only snapshots this tool
made (all its tags or labels) are ever listed, counted or deleted.
A static disk is refused (no provider to snapshot it with). EBS volumes:
CreateSnapshot, tagged. Run on the node where the volume's filesystem is
mounted (found by its NVMe link and serial or attach name, and the record's
fs.uuid), the filesystem is frozen for the CreateSnapshot call alone; a volume
attached elsewhere (its device not here) is refused unless --no-freeze; one
not attached, or not mounted here, needs no freeze. GCE disks:
disks.createSnapshot, labelled likewise, its operation waited for, stored in
--snapshot-location when given; the node's filesystem is not frozen from here,
so --no-freeze is needed. Compute Engine takes a snapshot of one disk about
once per 10 minutes (bursts of 6 an hour): a faster one fails
snapshot-too-soon, nothing taken: try later. Without --wait,
the tool returns once each snapshot is started (state pending on EC2,
CREATING or UPLOADING on GCE; local snapshots are complete at once); --wait
waits for all of them together, at most --wait-timeout (then:
snapshot-pending, the snapshot left). Retention always waits, and prunes
nothing before the new snapshot is complete.
`disk-create --from-snapshot` restores on local, EC2 and GCE.

Exit status: 0 ok; 1 a record failed; 2 bad usage or input (nothing done).

Examples:
  disk-snapshot --provider local --disk data-1 --keep 7
  disk-snapshot --provider local --disk data-1 --list
  disk-snapshot --check --provider local --disk data-1 --keep-within 7d
  disk-snapshot --provider ec2 --self --disk data-1 --deployment prod --keep 7
  disk-snapshot --provider ec2 --disk data-1 --deployment prod --no-freeze --wait
  disk-snapshot --provider gce --project p --zone us-central1-a --disk data-1 --no-freeze --keep 7
  appscalefile-lint --plan AppScalefile | disk-snapshot --keep 7 --keep-within 2d
  appscalefile-lint --plan AppScalefile | disk-create --from-snapshot latest \\
    | disk-attach | disk-ensure-fs | disk-mount";

/// Take a snapshot of each disk record's disk, keep the newest, or list them.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with
/// `snapshot` {id, time, size, state, freeze, method, pruned} (state
/// pending until an EBS or Compute Engine snapshot completes: --wait); with --list,
/// one record per snapshot of each disk, newest first. A local snapshot is a
/// copy of the image in <state dir>/snapshots that shares its blocks where
/// the filesystem can (reflink), else a sparse copy, with a metadata file
/// beside it. `disk-create --from-snapshot ID|latest` makes a new disk from
/// one (docs/backup.md).
#[derive(Debug, Parser)]
#[command(name = "disk-snapshot", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    provider: ProviderArgs,
    #[command(flatten)]
    snapshot: SnapshotArgs,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-snapshot";
    const STOPS_CLEANLY: bool = true;
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.provider.single()
    }
    fn check_records(&self, records: &[Record]) -> Result<(), String> {
        self.provider.check_records(records)?;
        if self.snapshot.snapshot_location.is_some()
            && records
                .iter()
                .filter(|r| r.error.is_none())
                .any(|r| self.provider.kind_of(r) != Some(ProviderKind::Gce))
        {
            return Err(
                "--snapshot-location is Compute Engine's (storageLocations): every record must be a gce one".into(),
            );
        }
        Ok(())
    }
    fn into_step(self) -> Box<dyn Step> {
        Box::new(self.provider.step(Operation::Snapshot(self.snapshot)))
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
