//! disk-scratch: the cloud half of an archive of a cloud disk: a scratch
//! copy of the disk at one moment, attached to its node, and deleted again.

use std::process::ExitCode;

use appscale_persist::cli;
use appscale_persist::provider::ScratchPhase;
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::step::Step;
use appscale_persist::tool::{Common, ToolArgs};
use appscale_persist_cloud::{Operation, ProviderArgs};
use clap::Parser;

const AFTER_HELP: &str = "\
disk-archive runs it, on the disk's own node (--self), around its read-only
mount of the copy; run by hand, it reports or cleans up. --phase snapshot
starts the provider's snapshot of the disk (CreateSnapshot,
disks.createSnapshot: its moment is fixed when the call returns; the caller
holds the filesystem frozen meanwhile), after deleting what a killed run of
the same owner left; --phase attach makes a disk from it in this instance's
zone, attaches it here (read-only on Compute Engine) and finds its device;
--phase drop detaches and deletes them. The snapshot and the scratch disk are
tagged (EBS) or labelled (GCE) appscale-persist:scratch with their owner
(this instance and the disk): nothing else deletes them, and only a run of
the same owner on this instance does. The record carries `scratch`
{owner, snapshot, time, disk, device}. EC2 and Compute Engine (not
Eucalyptus yet: its CreateVolume takes no tags, and a scratch volume is
tagged as it is made).

Exit status: 0 ok; 1 a record failed; 2 bad usage or input (nothing done).

Examples:
  disk-scratch --phase drop --self --provider ec2 --disk data-1 --deployment prod
  appscalefile-lint --plan --node node-1 AppScalefile | disk-scratch --self --phase snapshot \\
    | disk-scratch --self --phase attach";

/// The cloud half of an archive of a cloud disk: a scratch copy of the
/// disk at one moment, attached to its node, and deleted again.
///
/// Reads disk records (NDJSON) on stdin, writes them on stdout with
/// `scratch` {owner, snapshot, time, disk, device}.
#[derive(Debug, Parser)]
#[command(name = "disk-scratch", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    provider: ProviderArgs,
    /// What to do: snapshot, attach, or drop (needed with records).
    #[arg(long, value_name = "PHASE", value_parser = parse_phase, help_heading = "Scratch")]
    phase: Option<ScratchPhase>,
}

fn parse_phase(s: &str) -> Result<ScratchPhase, String> {
    match s {
        "snapshot" => Ok(ScratchPhase::Snapshot),
        "attach" => Ok(ScratchPhase::Attach),
        "drop" => Ok(ScratchPhase::Drop),
        _ => Err("one of snapshot, attach, drop".into()),
    }
}

impl ToolArgs for Args {
    const NAME: &'static str = "disk-scratch";
    const STOPS_CLEANLY: bool = true;
    fn common(&self) -> &Common {
        &self.common
    }
    fn single(&self) -> Option<Record> {
        self.provider.single()
    }
    fn check_records(&self, records: &[Record]) -> Result<(), String> {
        if self.phase.is_none() && records.iter().any(|r| r.error.is_none()) {
            return Err("say what to do: --phase snapshot, attach or drop".into());
        }
        // Eucalyptus binds no TagSpecification on CreateVolume (4.4), and
        // a scratch volume must carry its owner from the moment it exists:
        // nothing else may delete it, and a run killed before a later
        // CreateTags would leave one nobody knows is scratch.
        if let Some(r) = records
            .iter()
            .filter(|r| r.error.is_none())
            .find(|r| self.provider.kind_of(r) == Some(ProviderKind::Euca))
        {
            return Err(format!(
                "{}: Eucalyptus disks cannot be archived yet: a scratch volume must be tagged as it is made, and Eucalyptus's CreateVolume takes no tags",
                r.label()
            ));
        }
        self.provider.check_records(records)
    }
    fn into_step(self) -> Box<dyn Step> {
        // Without records there is nothing to do, whatever the phase.
        let phase = self.phase.unwrap_or(ScratchPhase::Drop);
        Box::new(self.provider.step(Operation::Scratch(phase)))
    }
}

fn main() -> ExitCode {
    cli::main::<Args>()
}
