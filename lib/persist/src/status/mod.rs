//! `disk-status`: every disk of a deployment, cloud side and node side, in
//! one look; and what is wrong with it, each problem with a stable code and
//! a one-line fix. Nothing here changes anything.
//!
//! * The cloud part ([`CloudPart`]) is what the disk's provider says
//!   ([`Provider::describe`], one batched call per provider for all the
//!   records it holds): the providers are opened by the caller (an
//!   [`Opener`]), so this crate links no cloud SDK.
//! * The node part ([`NodePart`]) is read on this machine, from the same
//!   modules the node tools act with: the device ([`discover::find_here`],
//!   [`discover::verify_claimed_device`]), the filesystem
//!   ([`blockdev::read_superblock`], else `blkid -p`), the mount table
//!   ([`mount::Table`]), the fstab ([`Fstab`]) and the holders
//!   ([`mount::holders`]).
//! * [`Problem`]s carry codes from [`crate::codes`]; [`fix`] gives each its
//!   one-line fix.
//!
//! The outputs: the records with a `status` key (NDJSON), a table
//! ([`table`]) and node_exporter textfile-collector metrics
//! ([`prometheus`]).
//!
//! Its files: `cloud.rs` (the cloud part), `node.rs` (the node part, one
//! function per check), `table.rs` and `prometheus.rs` (the renderings);
//! this one holds the run and the fixes.
//!
//! [`Provider::describe`]: crate::provider::Provider::describe
//! [`discover::find_here`]: crate::discover::find_here
//! [`discover::verify_claimed_device`]: crate::discover::verify_claimed_device
//! [`blockdev::read_superblock`]: crate::blockdev::read_superblock
//! [`mount::Table`]: crate::mount::Table
//! [`mount::holders`]: crate::mount::holders
//! [`Fstab`]: crate::fstab::Fstab

mod cloud;
mod node;
mod prometheus;
mod table;

use std::path::PathBuf;

use crate::codes;
pub use crate::record::status::{CloudPart, FstabPart, NodeFs, NodePart, Problem, Status};
use crate::record::{ProviderKind, Record};
use crate::step::{Exit, Failure};
use crate::steps::provision::Opener;

pub use cloud::cloud_part;
pub use node::{NodeView, node_part};
pub use prometheus::{METRIC_PREFIX, prometheus};
pub use table::{TABLE_HEADER, table, table_rows};

/// The archive part of a record, when this node has archived its disk.
fn archive_part(r: &Record) -> Option<crate::archive::ledger::Entry> {
    let deployment = r
        .deployment
        .as_deref()
        .filter(|d| !d.is_empty())
        .unwrap_or(crate::record::DEFAULT_DEPLOYMENT);
    let key = crate::archive::ledger::key(
        deployment,
        r.provider.unwrap_or(ProviderKind::Local),
        r.disk.as_deref()?,
    );
    let e = crate::archive::ledger::read(&key);
    (e.last_time.is_some() || e.verified_time.is_some()).then_some(e)
}

impl Problem {
    /// A problem with code `code`, and the fix [`fix`] gives for it.
    pub fn new(code: codes::Code, message: impl Into<String>) -> Problem {
        Problem {
            code: code.to_string(),
            message: message.into(),
            fix: fix(&code).to_string(),
        }
    }
}

impl From<Failure> for Problem {
    fn from(f: Failure) -> Problem {
        Problem::new(f.code, f.message)
    }
}

/// The one-line fix for a problem's code.
pub fn fix(code: &codes::Code) -> &'static str {
    match *code {
        codes::NO_SUCH_DISK => "run disk-create (scripts/up), or check the disk's name and zone",
        codes::NOT_ATTACHED => "run disk-attach (scripts/up)",
        codes::ATTACHED_ELSEWHERE => {
            "detach it from that instance (disk-unmount there, then disk-detach)"
        }
        codes::ZONE_MISMATCH => "use a disk in the instance's zone (or fix the record's zone)",
        codes::OTHER_DEPLOYMENT | codes::OTHER_NODE => {
            "give this disk another name, or run with that deployment's name (--deployment)"
        }
        codes::DEVICE_NOT_FOUND => {
            "check the disk is attached to this instance (disk-attach --self); look in /dev/disk/by-id"
        }
        codes::IDENTITY_MISMATCH | codes::IDENTITY_UNCONFIRMED => {
            "the device is not (or not surely) the record's disk: find where the disk really is; a stale record is the usual cause"
        }
        codes::NO_FILESYSTEM => "run disk-ensure-fs",
        codes::MOUNTED_ELSEWHERE => "unmount it there, then run disk-mount",
        codes::NOT_MOUNTED => "run disk-mount",
        codes::NO_FSTAB_ENTRY => "rerun disk-mount without --no-fstab",
        codes::FSTAB_MISMATCH => {
            "remove the stale fstab line (disk-unmount removes ours), then rerun disk-mount"
        }
        codes::FSTAB_STALE => "attach the disk again, or remove the line (disk-unmount)",
        codes::DISK_FULL => {
            "free space, or grow the disk (a bigger --size; disk-ensure-fs grows the filesystem)"
        }
        codes::NEEDS_FSCK => "unmount it, run `fsck -f` on the device, mount it again",
        codes::FROZEN => {
            "a freeze left by a disk-snapshot that died is thawed by the next disk-mount, disk-unmount or disk-snapshot here; any other: `fsfreeze -u MOUNTPOINT` once its holder is done"
        }
        codes::NO_CREDENTIALS => "give the cloud API credentials",
        codes::UNREACHABLE => "check the endpoint (--endpoint-url) and the network",
        _ => "see the message; docs/protocol.md lists every code",
    }
}

/// How the node part is read.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Mountpoint for records that name none.
    pub mountpoint: Option<String>,
    /// The fstab to look in; `None`: not looked at.
    pub fstab: Option<PathBuf>,
    /// A filesystem used more than this many percent is a problem.
    pub full_percent: u8,
    /// Name the processes holding each mount.
    pub holders: bool,
    /// Directory of local disk images.
    pub state_dir: Option<PathBuf>,
}

/// How a run of disk-status looks.
pub struct Options {
    /// Provider for records that name none.
    pub default_provider: Option<ProviderKind>,
    /// Zone for records that name none.
    pub zone: Option<String>,
    /// The deployment every cloud disk must belong to (`--deployment`),
    /// over the records' own.
    pub deployment: Option<String>,
    /// Running on the node (`--self`): cloud records get a node part too.
    pub on_node: bool,
    /// How the node part is read.
    pub node: NodeOptions,
}

/// Fills each record's `status` (records carrying an error pass through
/// untouched): the cloud part from one `describe` per provider, the node
/// part where the disk is on this machine. Returns the exit code: `Ok` when
/// every disk is healthy, `Failed` when any record has a problem or an
/// error.
pub fn run(records: &mut [Record], opts: &Options, open: &mut Opener) -> Exit {
    let todo: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].error.is_none())
        .collect();
    let mut statuses: Vec<Status> = todo.iter().map(|_| Status::default()).collect();
    // A copy of each record that the cloud's answer fills in (the volume
    // id behind a Name tag, the device name), for finding it on the node.
    let mut seen: Vec<Record> = todo
        .iter()
        .map(|&i| {
            let mut r = records[i].clone();
            r.provider = r.provider.or(opts.default_provider);
            if opts.deployment.is_some() && r.provider.is_some_and(ProviderKind::is_cloud) {
                r.deployment.clone_from(&opts.deployment);
            }
            r
        })
        .collect();
    cloud::look(&mut seen, &mut statuses, opts, open);
    node::look(&seen, &mut statuses, opts);
    for (j, s) in statuses.iter_mut().enumerate() {
        s.archive = archive_part(&seen[j]);
    }
    for (i, s) in todo.into_iter().zip(statuses) {
        records[i].status = Some(s);
    }
    exit_code(records)
}

/// [`Exit::Failed`] when any record carries an error or a problem.
pub fn exit_code(records: &[Record]) -> Exit {
    let bad =
        |r: &Record| r.error.is_some() || r.status.as_ref().is_some_and(|s| !s.problems.is_empty());
    if records.iter().any(bad) {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::prometheus::label_value;
    use super::table::human;
    use super::*;

    #[test]
    fn every_status_code_has_a_fix_of_its_own() {
        for code in [
            codes::NOT_MOUNTED,
            codes::NO_FSTAB_ENTRY,
            codes::FSTAB_MISMATCH,
            codes::FSTAB_STALE,
            codes::DISK_FULL,
            codes::NEEDS_FSCK,
            codes::NO_SUCH_DISK,
            codes::ATTACHED_ELSEWHERE,
            codes::DEVICE_NOT_FOUND,
        ] {
            assert!(!fix(&code).starts_with("see the message"), "{code}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(human(Some(10 << 30)), "10G");
        assert_eq!(human(Some(1536 << 20)), "1.5G");
    }
}
