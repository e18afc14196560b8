//! appscalefile-lint: check an AppScalefile, and plan its disks.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use appscale_persist::appscalefile::{self, Lint, Severity};
use appscale_persist::record::{self, DEFAULT_MOUNTPOINT};
use appscale_persist::{log, tool};
use clap::{Parser, ValueEnum};

const AFTER_HELP: &str = "\
Both layout formats are read: the old one (ips_layout a map of role to node
ids, with a top-level `disks:` map of node id to disk) and the new one
(ips_layout a list of role groups with `roles`, `nodes`, `disks`). Rules are
AppScale's own plus the ones AppScale missed; every finding has a stable code
(docs/appscalefile-lint.md lists them).

Exit status: 0 no error (warnings allowed unless --deny-warnings);
1 errors found; 2 the file could not be read or bad usage.

Examples:
  appscalefile-lint AppScalefile
  appscalefile-lint --format json AppScalefile | jq -r .code
  appscalefile-lint --plan AppScalefile | disk-create | disk-attach \\
    | disk-ensure-fs | disk-mount";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// rustc-like messages on stderr.
    Human,
    /// One JSON object per finding on stdout.
    Json,
}

/// Check an AppScalefile, and print its disk plan.
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
    /// Print the disk plan (records) on stdout when there is no error.
    #[arg(long, conflicts_with = "format")]
    plan: bool,
    /// With --plan: only this node's disk.
    #[arg(long, value_name = "ID", requires = "plan")]
    node: Option<String>,
    /// With --plan: the mountpoint records get; `{node}` is replaced by the
    /// node id.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MOUNTPOINT)]
    mountpoint: String,
    /// Print only errors.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    log::init("appscalefile-lint", log::level_from(args.quiet, 0));
    tool::install_panic_hook();
    let name = if args.file.as_os_str() == "-" { "<stdin>".to_string() } else { args.file.display().to_string() };
    let bytes = if args.file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).map(|_| b)
    } else {
        std::fs::read(&args.file)
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            log::error(format_args!("cannot read {name}: {e}"));
            return ExitCode::from(2);
        }
    };
    let (source, lint) = appscalefile::lint_bytes(&bytes);
    report(&args, &name, &source, &lint);
    let failed = lint.has_errors() || (args.deny_warnings && lint.has_warnings());
    if failed {
        return ExitCode::from(1);
    }
    if args.plan {
        let mut plan = lint.deployment.plan(&args.mountpoint);
        if let Some(node) = &args.node {
            plan.retain(|r| r.node.as_deref() == Some(node));
            if plan.is_empty() {
                let with: Vec<String> = lint.deployment.disks.iter().map(|d| d.node.clone()).collect();
                log::error(format_args!("{name} gives node `{node}` no disk (nodes with disks: {})", if with.is_empty() { "none".into() } else { with.join(", ") }));
                return ExitCode::from(1);
            }
        }
        if let Err(e) = record::write_all(std::io::stdout().lock(), &plan) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                log::error(format_args!("writing stdout: {e}"));
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

fn report(args: &Args, name: &str, source: &str, lint: &Lint) {
    match args.format {
        Format::Json => {
            let lines: Vec<String> = lint.diagnostics.iter().map(|d| d.to_json(name)).collect();
            let mut out = std::io::stdout().lock();
            for l in lines {
                use std::io::Write;
                if writeln!(out, "{l}").is_err() {
                    return;
                }
            }
        }
        Format::Human => {
            let count = |s| lint.diagnostics.iter().filter(|d| d.severity == s).count();
            for d in &lint.diagnostics {
                if d.severity == Severity::Error || !args.quiet {
                    eprint!("{}", d.render(name, source));
                    eprintln!();
                }
            }
            let (e, w) = (count(Severity::Error), count(Severity::Warning));
            if e + w > 0 && !args.quiet {
                eprintln!("{name}: {e} error(s), {w} warning(s)");
            }
        }
    }
}
