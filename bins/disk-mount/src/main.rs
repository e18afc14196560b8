//! disk-mount: mount a disk record's filesystem at its mountpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use appscale_persist::cli;
use appscale_persist::fstab;
use appscale_persist::record::Record;
use appscale_persist::step::Step;
use appscale_persist::steps::mount::{Mount, MountOptions};
use appscale_persist::tool::{Common, ToolArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
Idempotent: a filesystem already mounted at its mountpoint is left as it is
(changed: false). The record's device must be its disk and hold its
filesystem. ext4 is checked with `fsck -a` before a read-write mount;
uncorrected errors stop the mount. The fstab entry (by UUID, with nofail,
x-systemd.device-timeout and the x-appscale-persist mark) is written only
once the filesystem is mounted, atomically, line by line, with a backup
(<fstab>.appscale-persist.bak). A failure or a signal (SIGINT, SIGTERM,
SIGHUP) takes back what the run did. Runs on one node take turns (the node
lock).

Examples:
  disk-mount --device /dev/loop3 --mountpoint /opt/appscale
  disk-mount --check --device /dev/xvdf --no-fstab
  appscalefile-lint --plan AppScalefile | disk-create | disk-attach \\
    | disk-ensure-fs | disk-mount --seed";

/// Mount a disk record's filesystem at its mountpoint.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with `state`
/// mounted. The mountpoint is the record's, else --mountpoint, else
/// /opt/appscale; system directories and trees (/etc, /usr, /var/lib, ...)
/// and paths through a symbolic link are refused.
#[derive(Debug, Parser)]
#[command(name = "disk-mount", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Act on this device alone instead of reading records on stdin.
    #[arg(long, value_name = "PATH")]
    device: Option<String>,
    /// Mountpoint for records that name none [default: /opt/appscale].
    #[arg(long, value_name = "DIR")]
    mountpoint: Option<String>,
    /// Mount options.
    #[arg(long, value_name = "OPTS", default_value = "noatime")]
    options: String,
    /// The fstab to keep our entry in.
    #[arg(long, value_name = "PATH", default_value = fstab::DEFAULT_PATH, conflicts_with = "no_fstab")]
    fstab: PathBuf,
    /// Leave fstab alone.
    #[arg(long)]
    no_fstab: bool,
    /// Seconds systemd waits for the device at boot (x-systemd.device-timeout).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    device_timeout: u32,
    /// If the mountpoint holds files and the filesystem is one this flow's
    /// disk-ensure-fs just made (and still empty), copy them onto it first,
    /// through a staging directory, so mounting does not hide them.
    #[arg(long)]
    seed: bool,
    /// Skip `fsck -a` before mounting.
    #[arg(long)]
    no_fsck: bool,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-mount";
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
    fn into_step(self) -> Box<dyn Step> {
        Box::new(Mount {
            options: MountOptions {
                mountpoint: self.mountpoint,
                options: self.options,
                fstab: (!self.no_fstab).then_some(self.fstab),
                device_timeout: self.device_timeout,
                seed: self.seed,
                fsck: !self.no_fsck,
            },
        })
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
