//! disk-create: create each disk record's disk unless it exists.

use std::process::ExitCode;

use appscale_persist::cli;
use appscale_persist::record::Record;
use appscale_persist::step::Step;
use appscale_persist::tool::{Common, ToolArgs};
use appscale_persist_cloud::{CreateArgs, Operation, ProviderArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
Exit status: 0 ok; 1 a record failed; 2 bad usage or input (nothing done).

Examples:
  disk-create --provider local --disk data-1 --size 1G
  disk-create --provider ec2 --disk vol-0123456789abcdef0 --zone us-east-1b
  disk-create --provider gce --disk data-1 --zone us-central1-a --deployment prod
  disk-create --provider ec2 --disk data-1 --zone us-east-1b --size 200G --grow \
    --kms-key alias/appscale --iops 6000 --throughput 250 --tag team=db
  appscalefile-lint --plan AppScalefile | disk-create | disk-attach \\
    | disk-ensure-fs | disk-mount";

/// Create each disk record's disk unless it exists.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with `state` created.
/// A local disk is a sparse image file; an EBS volume named by id must exist,
/// any other name is a Name tag, found or created; a GCE disk is found or
/// created by name. Cloud disks belong to a deployment (the record's
/// `deployment`, from the AppScalefile's keyname or group): one tagged or
/// labelled for another is never used; one made by hand is adopted (tagged)
/// only while nothing uses it, in the record's zone. A disk found is held
/// to the options given (size, type, encryption, IOPS, throughput): a
/// difference is an error, except a smaller size with --grow, which grows
/// it (never shrinking one); the options are checked against the cloud's
/// limits before any call.
#[derive(Debug, Parser)]
#[command(name = "disk-create", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    provider: ProviderArgs,
    #[command(flatten)]
    create: CreateArgs,
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-create";
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.provider.single()
    }
    fn check_records(&self, records: &[Record]) -> Result<(), String> {
        self.provider.check_records(records)?;
        self.create.check(records, |r| self.provider.kind_of(r))
    }
    fn into_step(self) -> Box<dyn Step> {
        Box::new(self.provider.step(Operation::Create(self.create)))
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
