//! appscalefile-lint: check an AppScalefile, and plan its disks.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use appscale_persist::appscalefile::{self, Lint, Severity};
use appscale_persist::cli::{self, Outcome, Output, ReportArgs};
use appscale_persist::record::{DEFAULT_MOUNTPOINT, Record};
use appscale_persist::step::Exit;
use appscale_persist::{ansible, log, node_id};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

const AFTER_HELP: &str = "\
Both layout formats are read: the old one (ips_layout a map of role to node
ids, with a top-level `disks:` map of node id to disk) and the new one
(ips_layout a list of role groups with `roles`, `nodes`, `disks`). Rules are
AppScale's own (node layout, and the checks `appscale up` made on every key)
plus the ones AppScale missed; every finding has a stable code
(docs/appscalefile-lint.md lists them, and where the linter differs from
AppScale on purpose).

Exit status: 0 no error (warnings allowed unless --deny-warnings);
1 errors found; 2 the file could not be read or bad usage.

Examples:
  appscalefile-lint AppScalefile
  appscalefile-lint --format json AppScalefile | jq -r .code
  appscalefile-lint --inventory AppScalefile > inventory.json
  appscalefile-lint --for-appscale AppScalefile > AppScalefile.appscale
  appscalefile-lint --plan AppScalefile | disk-create | disk-attach \\
    | disk-ensure-fs | disk-mount";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// rustc-like messages on stderr.
    Human,
    /// One JSON object per finding on stdout.
    Json,
}

/// Check an AppScalefile, and print its disk plan or an Ansible inventory.
///
/// With --plan, and no error, prints one disk record per node that has a
/// disk (NDJSON, protocol v1) on stdout, ready for disk-create.
#[derive(Debug, Parser)]
#[command(name = "appscalefile-lint", version, after_help = AFTER_HELP)]
struct Args {
    /// The AppScalefile (`-` for stdin).
    #[arg(value_name = "FILE", default_value = "AppScalefile")]
    file: PathBuf,
    /// How to print findings.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    /// In the old format's top-level `disks` map, require a disk only on
    /// nodes that keep data (master, database, zookeeper, controller,
    /// servers). AppScale required one on every node; off by default.
    #[arg(long)]
    data_nodes_only: bool,
    /// Print the disk plan (records) on stdout when there is no error.
    #[arg(long, conflicts_with_all = ["format", "inventory", "inventory_list"])]
    plan: bool,
    /// With --plan: only this node's disk. `auto`: this machine's node,
    /// found without per-node configuration: its address (cluster mode),
    /// its instance's tag (`appscale-persist:node` from IMDS, the Compute
    /// Engine metadata attribute `appscale-persist-node`), or AppScale's
    /// record (--locations).
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    /// AppScale's record of its nodes (`locations-KEYNAME.json`, in
    /// `~/.appscale` on the tools machine once `appscale up` wrote it):
    /// with --plan, each record gets its node's instance from it (the
    /// node's address in cluster mode; in cloud mode the entry with its
    /// roles, when no other node has them); with `--node auto`, it tells
    /// this machine's node.
    #[arg(long, value_name = "PATH", requires = "plan")]
    locations: Option<PathBuf>,
    /// The metadata service (IMDS, the Compute Engine metadata server),
    /// for `--node auto`, when not the link-local one.
    #[arg(long, value_name = "URL", requires = "plan")]
    metadata_endpoint: Option<String>,
    /// The mountpoint records (and inventory hosts) get; `{node}` is
    /// replaced by the node id.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MOUNTPOINT)]
    mountpoint: String,
    /// Print an Ansible inventory (static form: save as *.json, use with -i).
    #[arg(long, conflicts_with_all = ["format", "inventory_list"])]
    inventory: bool,
    /// Print an Ansible inventory in the inventory-script form (`--list`).
    #[arg(long, conflicts_with = "format")]
    inventory_list: bool,
    /// Accepted for symmetry with the other tools: the linter changes
    /// nothing anyway.
    #[arg(long)]
    check: bool,
    /// Print on stdout the AppScalefile for `appscale up`: this one with
    /// its `disks:` commented out, so that AppScale does not attach, format
    /// or mount the disks appscale-persist manages (keep this file for
    /// appscale-persist; docs/appscale.md).
    #[arg(long, conflicts_with_all = ["format", "plan", "inventory", "inventory_list"])]
    for_appscale: bool,
    /// Print only errors.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Also say what the file describes: the provider, zone and
    /// deployment, and each node with its roles and disk (on stderr).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl ReportArgs for Args {
    const NAME: &'static str = "appscalefile-lint";
    const TAKES_RECORDS: bool = false;

    fn verbosity(&self) -> (bool, u8) {
        (self.quiet, self.verbose)
    }

    fn validate(&self) -> Result<(), String> {
        if self.node.is_some() && !self.plan {
            return Err("--node needs --plan".to_string());
        }
        Ok(())
    }

    fn run(self, _records: Vec<Record>) -> Outcome {
        let (name, source, lint) = match read(&self) {
            Ok(r) => r,
            Err(e) => {
                log::error(format_args!("{e}"));
                return Outcome::exit(Exit::Usage);
            }
        };
        let findings = report(&self, &name, &source, &lint);
        if self.verbose > 0 {
            describe(&lint);
        }
        if lint.has_errors() || (self.deny_warnings && lint.has_warnings()) {
            return Outcome {
                stdout: Output::Text(findings),
                exit: Exit::Failed,
            };
        }
        let stdout = if self.for_appscale {
            match appscalefile::without_disks(&source, &name) {
                Ok((text, moved)) => {
                    log::info(format_args!(
                        "{moved} disks: key(s) commented out for appscale up"
                    ));
                    Output::Text(text)
                }
                Err(e) => {
                    log::error(format_args!("{e}"));
                    return Outcome::exit(Exit::Failed);
                }
            }
        } else if self.plan {
            match plan(&self, &name, &lint) {
                Ok(p) => Output::Records(p),
                Err(e) => {
                    log::error(format_args!("{e}"));
                    return Outcome::exit(Exit::Failed);
                }
            }
        } else if self.inventory || self.inventory_list {
            let inv = if self.inventory {
                lint.deployment.inventory(&self.mountpoint)
            } else {
                lint.deployment.inventory_list(&self.mountpoint)
            };
            Output::Text(format!(
                "{}\n",
                serde_json::to_string_pretty(&inv).unwrap_or_default()
            ))
        } else {
            Output::Text(findings)
        };
        Outcome {
            stdout,
            exit: Exit::Ok,
        }
    }

    fn module(self, _records: Vec<Record>, _flags: ansible::ModuleFlags) -> Value {
        module(&self)
    }
}

fn main() -> ExitCode {
    cli::report::<Args>()
}

/// Reads and lints the file: (display name, text, findings).
fn read(args: &Args) -> Result<(String, String, Lint), String> {
    let stdin = args.file.as_os_str() == "-";
    let name = if stdin {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    let bytes = if stdin {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).map(|_| b)
    } else {
        std::fs::read(&args.file)
    };
    let bytes = bytes.map_err(|e| format!("cannot read {name}: {e}"))?;
    let options = appscalefile::Options {
        data_nodes_only: args.data_nodes_only,
    };
    let (source, lint) = appscalefile::lint_bytes_with(&bytes, options);
    // A finding may quote the line of a misspelt secret key: its value is
    // registered as a secret before anything is printed.
    appscalefile::cloud::register_secret_looking_values(&source);
    Ok((name, source, lint))
}

/// The disk records of the plan (only `--node`'s, when given).
fn plan(args: &Args, name: &str, lint: &Lint) -> Result<Vec<Record>, String> {
    let mut records = plan_nodes(args, name, lint)?;
    if let Some(path) = &args.locations
        && args.node.as_deref() != Some(node_id::AUTO)
    {
        let left = node_id::instances_from_locations(&mut records, path)?;
        if !left.is_empty() {
            log::warn(format_args!(
                "{}: AppScale's record names no instance for {} (several nodes with the same roles, or not started yet): tag their instances ({}) or name them in the inventory",
                path.display(),
                left.join(", "),
                node_id::EC2_TAG
            ));
        }
    }
    Ok(records)
}

/// The plan's records: every node's, `--node`'s, or this machine's.
fn plan_nodes(args: &Args, name: &str, lint: &Lint) -> Result<Vec<Record>, String> {
    match &args.node {
        None => Ok(lint.deployment.plan(&args.mountpoint)),
        Some(auto) if auto == node_id::AUTO => {
            let all = lint.deployment.plan(&args.mountpoint);
            let src = node_id::Sources {
                metadata_endpoint: args.metadata_endpoint.clone(),
                locations: args.locations.clone(),
            };
            match node_id::resolve(&all, lint.deployment.provider, &src)? {
                Some(found) => {
                    log::info(format_args!(
                        "this machine is {} (by {})",
                        found.node, found.how
                    ));
                    lint.deployment
                        .plan_node(&args.mountpoint, &found.node)
                        .map(|r| vec![r])
                        .map_err(|e| format!("{name}: {e}"))
                }
                None => Err(format!(
                    "--node auto: nothing says which node this machine is (its address, its instance's tag {}, AppScale's record --locations): pass --node ID, or let `disk-attach --self --node auto` ask the cloud",
                    node_id::EC2_TAG
                )),
            }
        }
        Some(node) => lint
            .deployment
            .plan_node(&args.mountpoint, node)
            .map(|r| vec![r])
            .map_err(|e| format!("{name}: {e}")),
    }
}

/// `-v`: what the file describes, on stderr.
fn describe(lint: &Lint) {
    let d = &lint.deployment;
    log::info(format_args!(
        "provider {}, zone {}, deployment {}; {} node(s), {} with a disk",
        d.provider.map_or("(none)", |p| p.as_str()),
        d.zone.as_deref().unwrap_or("(none)"),
        d.name.as_deref().unwrap_or("(none: keyname, else group)"),
        d.nodes.len(),
        d.disks.len()
    ));
    for n in &d.nodes {
        let disk = d
            .disks
            .iter()
            .find(|x| x.node == n.id)
            .map_or("no disk".to_string(), |x| format!("disk {}", x.disk));
        log::info(format_args!(
            "{} (line {}): roles {}; {disk}",
            n.id,
            n.pos.line,
            n.roles.join(", ")
        ));
    }
}

/// The findings: on stderr (human), or returned as JSON lines for stdout.
fn report(args: &Args, name: &str, source: &str, lint: &Lint) -> String {
    match args.format {
        // A finding never quotes EC2_SECRET_KEY, but its text passes
        // through the secret filter all the same.
        Format::Json => lint
            .diagnostics
            .iter()
            .map(|d| log::redact(&d.to_json(name)) + "\n")
            .collect(),
        Format::Human => {
            for d in &lint.diagnostics {
                if d.severity == Severity::Error || !args.quiet {
                    // The source line shown may be the one holding
                    // EC2_SECRET_KEY, which the lint registered as a secret.
                    eprintln!("{}", log::redact(&d.render(name, source)));
                }
            }
            if (lint.has_errors() || lint.has_warnings()) && !args.quiet {
                eprintln!("{}", lint.summary(name));
            }
            String::new()
        }
    }
}

/// The Ansible module result: findings, and the plan or inventory asked.
fn module(args: &Args) -> Value {
    let (name, source, lint) = match read(args) {
        Ok(r) => r,
        Err(e) => return ansible::fail(e),
    };
    let diagnostics: Vec<Value> = lint.diagnostics.iter().map(|d| d.to_value(&name)).collect();
    let failed = lint.has_errors() || (args.deny_warnings && lint.has_warnings());
    let mut out = json!({
        "changed": false,
        "failed": failed,
        "msg": lint.summary(&name),
        "diagnostics": diagnostics,
    });
    if failed {
        out["rc"] = json!(1);
        return out;
    }
    if args.plan {
        match plan(args, &name, &lint) {
            Ok(p) => out["records"] = serde_json::to_value(p).unwrap_or_default(),
            Err(msg) => return ansible::fail(msg),
        }
    }
    if args.inventory || args.inventory_list {
        out["inventory"] = lint.deployment.inventory(&args.mountpoint);
    }
    if args.for_appscale {
        match appscalefile::without_disks(&source, &name) {
            Ok((text, _)) => out["appscalefile"] = Value::String(text),
            Err(msg) => return ansible::fail(msg),
        }
    }
    out
}
