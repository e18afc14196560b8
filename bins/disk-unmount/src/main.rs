//! disk-unmount: unmount a disk record's mountpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use appscale_persist::cli;
use appscale_persist::fstab;
use appscale_persist::record::Record;
use appscale_persist::step::Step;
use appscale_persist::steps::unmount::{Unmount, UnmountOptions};
use appscale_persist::tool::{Common, ToolArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
Flushes the filesystem, unmounts it, and waits until the kernel's mount table
no longer shows it and an exclusive open of the device succeeds (the
filesystem is gone, not only hidden). Not mounted is success (changed:
false). A busy mount is an error naming the processes that hold it; --lazy
detaches it anyway, but while they keep the filesystem alive the record fails
with still-in-use, so the disk is not detached under it.

Only the record's own filesystem is unmounted: the record's device or
fs.uuid, its disk found on this node, or our marked entry in the fstab
(--fstab) must show that what is mounted there is it.
Anything else (a tmpfs, an NFS share, another disk) is left alone and
reported.

Examples:
  disk-unmount --mountpoint /opt/appscale
  disk-unmount --device /dev/loop3 --mountpoint /opt/appscale --remove-fstab
  appscalefile-lint --plan AppScalefile | disk-unmount | disk-detach";

/// Unmount a disk record's mountpoint.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with `state`
/// unmounted.
#[derive(Debug, Parser)]
#[command(name = "disk-unmount", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Act on this device alone instead of reading records on stdin.
    #[arg(long, value_name = "PATH")]
    device: Option<String>,
    /// Mountpoint for records that name none; with no records on stdin,
    /// act on this mountpoint alone [default: /opt/appscale].
    #[arg(long, value_name = "DIR")]
    mountpoint: Option<String>,
    /// Detach a busy mount lazily (umount -l) instead of failing.
    #[arg(long)]
    lazy: bool,
    /// The fstab holding our entries (as given to disk-mount): read to
    /// recognise our filesystem, changed only with --remove-fstab.
    #[arg(long, value_name = "PATH", default_value = fstab::DEFAULT_PATH)]
    fstab: PathBuf,
    /// Also remove our entry from the fstab.
    #[arg(long)]
    remove_fstab: bool,
    /// Directory of local disk images, to recognise a local disk [default:
    /// $APPSCALE_PERSIST_STATE_DIR or /var/lib/appscale-persist/disks].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-unmount";
    const STOPS_CLEANLY: bool = true;
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.device.as_ref().map(|d| Record {
            device: Some(d.clone()),
            mountpoint: self.mountpoint.clone(),
            ..Record::default()
        })
    }
    fn fallback(&self) -> Option<Record> {
        self.mountpoint.as_ref().map(|m| Record {
            mountpoint: Some(m.clone()),
            ..Record::default()
        })
    }
    fn into_step(self) -> Box<dyn Step> {
        Box::new(Unmount {
            options: UnmountOptions {
                mountpoint: self.mountpoint,
                lazy: self.lazy,
                fstab: self.fstab,
                remove_fstab: self.remove_fstab,
                state_dir: self.state_dir,
            },
        })
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
