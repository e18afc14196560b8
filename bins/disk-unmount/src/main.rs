//! disk-unmount: unmount a disk record's mountpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use appscale_persist::fstab;
use appscale_persist::record::Record;
use appscale_persist::steps::unmount::{Unmount, UnmountOptions};
use appscale_persist::tool::{self, Common, Step, ToolArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
Flushes the filesystem, unmounts it, and waits until the kernel's mount table
no longer shows it. Not mounted is success (changed: false). A busy mount is
an error naming the processes that hold it; --lazy detaches it anyway.
Only the record's device is unmounted: another device on the mountpoint is
left alone and reported.

Examples:
  disk-unmount --mountpoint /opt/appscale
  disk-unmount --device /dev/loop3 --mountpoint /opt/appscale --fstab
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
    /// Act on this mountpoint alone instead of reading records on stdin
    /// [default: /opt/appscale].
    #[arg(long, value_name = "DIR")]
    mountpoint: Option<String>,
    /// Detach a busy mount lazily (umount -l) instead of failing.
    #[arg(long)]
    lazy: bool,
    /// Also remove our entry from this fstab [default path: /etc/fstab].
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = fstab::DEFAULT_PATH)]
    fstab: Option<PathBuf>,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-unmount";
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        (self.device.is_some() || self.mountpoint.is_some()).then(|| Record {
            device: self.device.clone(),
            mountpoint: self.mountpoint.clone(),
            ..Record::default()
        })
    }
    fn into_step(self) -> Box<dyn Step> {
        Box::new(Unmount {
            options: UnmountOptions {
                mountpoint: self.mountpoint,
                lazy: self.lazy,
                fstab: self.fstab,
            },
        })
    }
}

fn main() -> ExitCode {
    tool::main::<Args>()
}
