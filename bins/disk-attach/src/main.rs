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
  appscalefile-lint --plan AppScalefile | disk-attach --self --node auto
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
#[command(mut_arg("node", |a| a.help(
    "Node id: the node of a disk given with --disk; with records on stdin, the one node whose \
     records this run takes (records of other nodes are refused, nothing done). With --self or \
     --instance and records of several nodes, required. `auto`: this machine's node, found \
     without per-node configuration (its address, its instance's tag, AppScale's record \
     --locations, a volume of the deployment attached here), waited for up to --timeout; the \
     other nodes' records are left out"
)))]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    provider: ProviderArgs,
    /// AppScale's record of its nodes (`locations-KEYNAME.json`, from
    /// `~/.appscale` on the tools machine or the head node), for
    /// `--node auto`.
    #[arg(long, value_name = "PATH", help_heading = "Disk")]
    locations: Option<std::path::PathBuf>,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-attach";
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.provider.single()
    }
    fn select(&mut self, records: Vec<Record>) -> Result<Vec<Record>, String> {
        let locations = self.locations.clone();
        self.provider.select_auto(records, locations)
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
