//! disk-detach: detach each disk record's disk.

use std::process::ExitCode;

use appscale_persist::cli;
use appscale_persist::record::Record;
use appscale_persist::step::Step;
use appscale_persist::tool::{Common, ToolArgs};
use appscale_persist_cloud::{DetachArgs, Operation, ProviderArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
Exit status: 0 ok; 1 a record failed; 2 bad usage or input (nothing done).

Examples:
  disk-detach --provider local --disk data-1
  disk-unmount --mountpoint /opt/appscale && disk-detach --self --node node-1 --provider ec2 --disk data-1
  appscalefile-lint --plan --node node-1 AppScalefile | disk-unmount | disk-detach --self --node node-1
  # from a controller: the records must come from disk-unmount on each node
  cat unmounted-*.ndjson | disk-detach";

/// Detach each disk record's disk.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with `state`
/// detached. Refuses a disk whose device is mounted on this machine; not
/// attached is success (changed false). Waits until the provider reports the
/// disk detached.
///
/// A cloud disk is never detached under a live filesystem. On the node
/// (--self): only when its device is found there and nothing uses it (no
/// mount, no holder, an exclusive open succeeds). From elsewhere: only with
/// the node's proof that it let go, which disk-unmount stamps into the record
/// on the node (`unmount_proof`), from the instance the disk is attached to;
/// or with --force, which risks the node's unflushed writes.
#[derive(Debug, Parser)]
#[command(name = "disk-detach", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    provider: ProviderArgs,
    #[command(flatten)]
    detach: DetachArgs,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-detach";
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.provider.single()
    }
    fn check_records(&self, records: &[Record]) -> Result<(), String> {
        self.provider.check_records(records)
    }
    fn into_step(self) -> Box<dyn Step> {
        Box::new(self.provider.step(Operation::Detach(self.detach)))
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
