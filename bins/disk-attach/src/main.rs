//! disk-attach: attach each disk record's disk and find its device.

use std::process::ExitCode;

use appscale_persist::cli;
use appscale_persist::record::Record;
use appscale_persist::step::Step;
use appscale_persist::tool::{Common, ToolArgs};
use appscale_persist_cloud::{Operation, ProviderArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
Exit status: 0 ok; 1 a record failed; 2 bad usage or input (nothing done).

Examples:
  disk-attach --provider local --disk data-1
  disk-attach --self --node node-1 --provider ec2 --disk vol-0123456789abcdef0
  appscalefile-lint --plan AppScalefile | disk-create | disk-attach \\
    | disk-ensure-fs | disk-mount";

/// Attach each disk record's disk and find its device.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with `state`
/// attached and `device` (when the device is on this machine: local, static,
/// or --self). Already attached here: changed false; attached elsewhere, or
/// in another zone than the instance: an error, before any change. One
/// --instance or --self never takes the disks of several nodes: pass --node.
#[derive(Debug, Parser)]
#[command(name = "disk-attach", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    provider: ProviderArgs,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-attach";
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
        Box::new(self.provider.step(Operation::Attach))
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
