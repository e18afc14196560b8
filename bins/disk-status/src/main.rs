//! disk-status: every disk of a deployment, cloud side and node side, in
//! one look; never changes anything.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use appscale_persist::cli::{self, Outcome, Output, ReportArgs};
use appscale_persist::record::Record;
use appscale_persist::status::{self, NodeOptions, Options};
use appscale_persist::step::Exit;
use appscale_persist::tool::Common;
use appscale_persist::{ansible, fstab};
use appscale_persist_cloud::ProviderArgs;
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

const AFTER_HELP: &str = "\
Never changes anything (--check changes nothing either). The cloud part
needs no root; the node part (--self, local and static disks, --device)
reads devices, so it runs as root on the node.

Problems (each with a code and a fix; docs/status.md): no-such-disk,
not-attached, attached-elsewhere, zone-mismatch, other-deployment,
device-not-found, identity-mismatch, no-filesystem, mounted-elsewhere,
not-mounted, no-fstab-entry, fstab-mismatch, fstab-stale, disk-full,
needs-fsck (and a cloud API's own code when it could not answer).

Exit status: 0 every disk healthy; 1 a problem found (or a record carries
an error); 2 bad usage or input.

Examples:
  appscalefile-lint --plan AppScalefile | disk-status --format table
  disk-status --self --node node-1 --provider ec2 --disk data-1
  disk-status --device /dev/xvdf --mountpoint /opt/appscale
  disk-status --provider local --disk data-1 --format prometheus \\
    > /var/lib/node_exporter/textfile/appscale_disks.prom";

/// What disk-status writes on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The records, each with its `status` (NDJSON); a table on stderr
    /// too when stderr is a terminal.
    Json,
    /// The table alone, then one line per problem with its fix.
    Table,
    /// node_exporter textfile-collector metrics.
    Prometheus,
}

/// Report every disk: cloud side (exists, size, type, zone, attached to),
/// node side (device, filesystem, mount, fstab, usage), and problems.
///
/// Reads disk records (NDJSON) on stdin, or one disk from flags, and writes
/// each with a `status` object: `cloud` (what its provider says: one
/// describe per provider for all records), `node` (what this machine says,
/// when run on the node), and `problems` (each with a code and a fix).
#[derive(Debug, Parser)]
#[command(name = "disk-status", version, after_help = AFTER_HELP)]
// The shared provider options, said as disk-status uses them.
#[command(mut_arg("deployment", |a| a.help(
    "Deployment the disks must belong to: a disk tagged (EBS) or labelled (GCE) for \
     another is reported (other-deployment) [default: the record's `deployment`, else `appscale`]"
)))]
#[command(mut_arg("concurrency", |a| a.help(
    "At most this many API calls at once (GCE: one disks.list per zone)"
)))]
#[command(mut_arg("timeout", |a| a.hide(true)))]
#[command(mut_arg("on_node", |a| a.help(
    "Run on the node itself: take instance and zone from the metadata service, and add \
     each cloud disk's node part (its device found here)"
)))]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    provider: ProviderArgs,
    /// Look at this device alone (node part only) instead of reading records.
    #[arg(
        long,
        value_name = "PATH",
        help_heading = "Node",
        conflicts_with = "disk"
    )]
    device: Option<String>,
    /// Mountpoint for records that name none [default: /opt/appscale].
    #[arg(long, value_name = "DIR", help_heading = "Node")]
    mountpoint: Option<String>,
    /// The fstab to look in.
    #[arg(long, value_name = "PATH", default_value = fstab::DEFAULT_PATH, help_heading = "Node")]
    fstab: PathBuf,
    /// A filesystem used more than this many percent is a problem (disk-full).
    #[arg(long, value_name = "PCT", default_value_t = 90,
          value_parser = clap::value_parser!(u8).range(0..=100), help_heading = "Node")]
    full_percent: u8,
    /// Name the processes holding each mount.
    #[arg(long, help_heading = "Node")]
    holders: bool,
    /// Output on stdout.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

impl Args {
    /// Looks at `records`; returns the exit code.
    fn look(self, records: &mut [Record]) -> Exit {
        let opts = Options {
            default_provider: self.provider.provider,
            zone: self.provider.zone.clone(),
            deployment: self.provider.deployment.clone(),
            on_node: self.provider.on_node,
            node: NodeOptions {
                mountpoint: self.mountpoint,
                fstab: Some(self.fstab),
                full_percent: self.full_percent,
                holders: self.holders,
                state_dir: self.provider.state_dir.clone(),
            },
        };
        let mut open = self.provider.opener();
        status::run(records, &opts, &mut open)
    }
}

impl ReportArgs for Args {
    const NAME: &'static str = "disk-status";

    fn verbosity(&self) -> (bool, u8) {
        (self.common.quiet, self.common.verbose)
    }

    /// The one record the flags describe, if any.
    fn single(&self) -> Option<Record> {
        match &self.device {
            Some(d) => Some(Record {
                device: Some(d.clone()),
                mountpoint: self.mountpoint.clone(),
                node: self.provider.node.clone(),
                ..Record::default()
            }),
            None => self.provider.single(),
        }
    }

    fn check_records(&self, records: &[Record]) -> Result<(), String> {
        self.provider.check_records(records)
    }

    fn run(self, mut records: Vec<Record>) -> Outcome {
        let (format, quiet) = (self.format, self.common.quiet);
        let exit = self.look(&mut records);
        let stdout = match format {
            Format::Json => {
                if !quiet && std::io::stderr().is_terminal() {
                    eprint!("{}", status::table(&records));
                }
                Output::Records(records)
            }
            Format::Table => Output::Text(status::table(&records)),
            Format::Prometheus => Output::Text(status::prometheus(&records)),
        };
        Outcome { stdout, exit }
    }

    /// The Ansible module `disk_status`: never changes anything (so check mode
    /// is the same run); `failed` only for bad arguments, so that one play can
    /// gather every node's table; `healthy`, `problems` (count) and `table`
    /// (its lines) beside the records.
    fn module(self, mut records: Vec<Record>, _flags: ansible::ModuleFlags) -> Value {
        let format = self.format;
        let exit = self.look(&mut records);
        let problems: usize = records
            .iter()
            .map(|r| {
                r.status.as_ref().map_or(0, |s| s.problems.len()) + usize::from(r.error.is_some())
            })
            .sum();
        let mut out = json!({
            "changed": false,
            "failed": false,
            "healthy": exit == Exit::Ok,
            "problems": problems,
            "msg": if problems == 0 {
                format!("{} disk(s), all healthy", records.len())
            } else {
                format!("{} disk(s), {problems} problem(s)", records.len())
            },
            "table": status::table(&records).lines().collect::<Vec<_>>(),
            "rows": status::table_rows(&records),
            "records": records,
        });
        if format == Format::Prometheus {
            out["prometheus"] = Value::String(status::prometheus(&records));
        }
        out
    }
}

fn main() -> ExitCode {
    cli::report::<Args>()
}
