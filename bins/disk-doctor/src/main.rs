//! disk-doctor: before anything runs, whether up, down, backup and --grow
//! would work for each disk, and the fix for each thing in the way; never
//! changes anything.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use appscale_persist::ansible;
use appscale_persist::checks::{Ask, Flow, Role};
use appscale_persist::cli::{self, Outcome, Output, ReportArgs};
use appscale_persist::doctor::{self, NodeOptions, Options};
use appscale_persist::record::Record;
use appscale_persist::step::Exit;
use appscale_persist::tool::Common;
use appscale_persist_cloud::ProviderArgs;
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

const AFTER_HELP: &str = "\
Never changes anything: permissions are tested with EC2's DryRun and
Compute Engine's testIamPermissions, never by making a disk (--check
changes nothing either).

Checks (each named with its fix; docs/doctor.md): credentials, clock,
region, access-scopes, permission (one per call the flows need), zone,
instance, attachment-room, disk, owner; on the node (--self, local and
static disks): metadata, udev-links, mountpoint, fstab, state-dir; and
appscale-disks (--appscale-file).

Exit status: 0 nothing in the way (warnings allowed); 1 a check failed (or
a record carries an error); 2 bad usage or input.

Examples:
  appscalefile-lint --plan AppScalefile | disk-doctor --format table
  appscalefile-lint --plan AppScalefile \\
    | disk-doctor --appscalefile AppScalefile --appscale-file AppScalefile.appscale
  disk-doctor --self --node node-1 --provider ec2 --disk data-1 --flow up --flow backup
  disk-doctor --provider local --disk data-1 --format table";

/// What disk-doctor writes on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The records, each with its `doctor` (NDJSON); the table on stderr
    /// too when stderr is a terminal.
    Json,
    /// The table alone: every check, each failure with its fix.
    Table,
}

/// Check, before anything runs, whether up, down, backup and --grow would
/// work for each disk, and say the fix for each thing in the way.
///
/// Reads disk records (NDJSON) on stdin, or one disk from flags, and writes
/// each with a `doctor` object: every check made, with its verdict (ok,
/// warn, fail, skip), the flows it gates, what was found and the fix. The
/// cloud checks: credentials (which source the SDK found, and whether they
/// work), the clock against the service's, the region against the zones,
/// permissions for exactly the calls the flows make, the instance and its
/// room, the disk and whose it is. On the node: the metadata service, the
/// udev links, the mountpoint, the fstab, the state directory.
#[derive(Debug, Parser)]
#[command(name = "disk-doctor", version, after_help = AFTER_HELP)]
#[command(mut_arg("on_node", |a| a.help(
    "Run on the node itself, in the node's role (the boot unit, backup.yml): take instance and \
     zone from the metadata service, check the calls the node makes, and check the node: \
     metadata service, udev links, mountpoint, fstab"
)))]
#[command(mut_arg("concurrency", |a| a.hide(true)))]
#[command(mut_arg("timeout", |a| a.hide(true)))]
#[command(mut_arg("deployment", |a| a.help(
    "Deployment the disks must belong to: a disk tagged (EBS) or labelled (GCE) for another \
     fails the owner check [default: the record's `deployment`, else `appscale`]"
)))]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    provider: ProviderArgs,
    /// Check for this flow (repeatable, or comma-separated: up, down,
    /// backup, grow) [default: all four].
    #[arg(long = "flow", value_name = "FLOW", value_delimiter = ',', value_parser = parse_flow)]
    flows: Vec<Flow>,
    /// Whose calls to check (docs/ec2.md, docs/gce.md: one policy each):
    /// the controller's (create, attach by instance, detach, grow), a
    /// node's (its own attach at boot, its snapshots, its detach), or all
    /// of them (one machine runs every step) [default: node with --self,
    /// else controller].
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    role: Option<Role>,
    /// Mountpoint for records that name none [default: /opt/appscale].
    #[arg(long, value_name = "DIR", help_heading = "Node")]
    mountpoint: Option<String>,
    /// The fstab to read.
    #[arg(
        long,
        value_name = "PATH",
        default_value = appscale_persist::fstab::DEFAULT_PATH,
        help_heading = "Node"
    )]
    fstab: PathBuf,
    /// The AppScalefile `appscale up` reads: it must not hold `disks:`,
    /// or AppScale attaches, formats and mounts the same disks itself
    /// (`appscalefile-lint --for-appscale` writes one without).
    #[arg(long, value_name = "PATH")]
    appscale_file: Option<PathBuf>,
    /// A clock further than this many seconds from the cloud's is a
    /// failure.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    max_skew: u64,
    /// Output on stdout.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "one of controller, node, all".to_string())
}

fn parse_flow(s: &str) -> Result<Flow, String> {
    Flow::parse(s).ok_or_else(|| "one of up, down, backup, grow".to_string())
}

impl Args {
    /// Looks at `records`; returns the exit code.
    fn look(self, records: &mut [Record]) -> Exit {
        let flows = if self.flows.is_empty() {
            Flow::ALL.to_vec()
        } else {
            self.flows.clone()
        };
        let opts = Options {
            default_provider: self.provider.provider,
            deployment: self.provider.deployment.clone(),
            ask: Ask {
                flows,
                role: self.role.unwrap_or(if self.provider.on_node {
                    Role::Node
                } else {
                    Role::Controller
                }),
                on_node: self.provider.on_node,
                max_skew: Duration::from_secs(self.max_skew),
            },
            node: NodeOptions {
                mountpoint: self.mountpoint.clone(),
                fstab: Some(self.fstab.clone()),
                state_dir: self.provider.state_dir.clone(),
                metadata_endpoint: self.provider.metadata_endpoint.clone(),
            },
            appscale_file: self.appscale_file.clone(),
        };
        let mut open = self.provider.opener();
        doctor::run(records, &opts, &mut open)
    }
}

impl ReportArgs for Args {
    const NAME: &'static str = "disk-doctor";

    fn verbosity(&self) -> (bool, u8) {
        (self.common.quiet, self.common.verbose)
    }

    fn single(&self) -> Option<Record> {
        self.provider.single()
    }

    fn check_records(&self, records: &[Record]) -> Result<(), String> {
        self.provider.check_records(records)
    }

    fn run(self, mut records: Vec<Record>) -> Outcome {
        let (format, quiet) = (self.format, self.common.quiet);
        let exit = self.look(&mut records);
        let stdout = match format {
            Format::Json => {
                if !quiet && std::io::stderr().is_terminal() && !records.is_empty() {
                    eprint!("{}", doctor::table(&records));
                }
                Output::Records(records)
            }
            Format::Table if records.is_empty() => Output::Nothing,
            Format::Table => Output::Text(doctor::table(&records)),
        };
        Outcome { stdout, exit }
    }

    /// The Ansible module `disk_doctor`: never changes anything (check mode is
    /// the same run); `failed` when a check failed, with `healthy`, `failures`
    /// (count), `table` (its lines) and `checks` (the failed and warned ones,
    /// each with its node, disk and fix) beside the records.
    fn module(self, mut records: Vec<Record>, _flags: ansible::ModuleFlags) -> Value {
        let exit = self.look(&mut records);
        let flagged: Vec<Value> = records
            .iter()
            .flat_map(|r| {
                r.doctor
                    .iter()
                    .flat_map(|d| &d.checks)
                    .filter(|c| {
                        matches!(
                            c.verdict,
                            appscale_persist::checks::Verdict::Fail
                                | appscale_persist::checks::Verdict::Warn
                        )
                    })
                    .map(|c| json!({"node": r.node, "disk": r.disk, "check": c}))
            })
            .collect();
        let failures = flagged
            .iter()
            .filter(|c| c["check"]["verdict"] == "fail")
            .count()
            + records.iter().filter(|r| r.error.is_some()).count();
        let table = doctor::table(&records);
        let msg = if exit == Exit::Ok {
            format!("{} disk(s): nothing in the way", records.len())
        } else {
            let first: Vec<String> = flagged
                .iter()
                .filter(|c| c["check"]["verdict"] == "fail")
                .take(3)
                .map(|c| {
                    format!(
                        "{} {}: {}",
                        c["check"]["name"].as_str().unwrap_or_default(),
                        c["check"]["subject"].as_str().unwrap_or_default(),
                        c["check"]["fix"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            format!("{failures} check(s) failed: {}", first.join("; "))
        };
        json!({
            "changed": false,
            "failed": exit != Exit::Ok,
            "healthy": exit == Exit::Ok,
            "failures": failures,
            "msg": msg,
            "table": table.lines().collect::<Vec<_>>(),
            "checks": flagged,
            "records": records,
        })
    }
}

fn main() -> ExitCode {
    cli::report::<Args>()
}
