//! disk-ensure-fs: format a device only if it is truly blank.

use std::process::ExitCode;

use appscale_persist::cli;
use appscale_persist::filesystem::{self, FsType};
use appscale_persist::record::Record;
use appscale_persist::step::Step;
use appscale_persist::steps::ensure_fs::{EnsureFs, EnsureFsOptions};
use appscale_persist::tool::{Common, ToolArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
A device is formatted only when all of these hold: it is a block device with
media; blkid -p finds no filesystem or partition table; wipefs finds no
signature; it has no partitions or holders and is not mounted or swap; no
ext2/3/4 backup superblock, XFS secondary superblock, btrfs mirror or GPT
backup header is found past a wiped head; and its first and last MiB, and 256
blocks sampled across it, read as zeros. A device already holding the wanted
filesystem is left as it is (state has-fs). Anything else is refused.

A record that already names a filesystem (fs.uuid, or state has-fs) is never
formatted, and a record's device must be the disk the record names (the
image behind a loop device, a cloud disk's links). Runs wait for one another
(the node lock), and the device is flock'ed from the last check to the end of
mkfs, which runs on the resolved device node. --mkfs-option takes mkfs
options only: never -F/-f, -L, -U, a long option or a device.

Exit status: 0 ok; 1 a record failed; 2 bad usage or input (nothing done);
3 refused: a device holds data (and nothing else failed).

Examples:
  disk-ensure-fs --device /dev/loop3
  disk-ensure-fs --check --device /dev/xvdf --fstype xfs
  appscalefile-lint --plan AppScalefile | disk-create | disk-attach \\
    | disk-ensure-fs | disk-mount";

/// Format a disk record's device with a filesystem, only if it is blank.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with `fs`
/// ({type, uuid, label, formatted}) and `state` (formatted or has-fs).
#[derive(Debug, Parser)]
#[command(name = "disk-ensure-fs", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Act on this device alone instead of reading records on stdin.
    #[arg(long, value_name = "PATH")]
    device: Option<String>,
    /// The filesystem wanted.
    #[arg(long, value_name = "TYPE", default_value = "ext4")]
    fstype: FsType,
    /// Label for a new filesystem (ext4: 16 bytes at most, xfs: 12).
    #[arg(long, default_value = "appscale")]
    label: String,
    /// Extra argument for mkfs, before the device (repeat for more).
    #[arg(long = "mkfs-option", value_name = "ARG", allow_hyphen_values = true)]
    mkfs_options: Vec<String>,
    /// Grow an existing filesystem to fill a device that has grown.
    #[arg(long)]
    grow: bool,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-ensure-fs";
    const STOPS_CLEANLY: bool = true;
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.device.as_ref().map(|d| Record {
            device: Some(d.clone()),
            ..Record::default()
        })
    }
    fn validate(&self) -> Result<(), String> {
        self.fstype.check_label(&self.label)?;
        filesystem::check_mkfs_options(self.fstype, &self.mkfs_options)
    }
    fn into_step(self) -> Box<dyn Step> {
        Box::new(EnsureFs {
            options: EnsureFsOptions {
                fstype: self.fstype,
                label: self.label,
                mkfs_options: self.mkfs_options,
                grow: self.grow,
            },
        })
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
