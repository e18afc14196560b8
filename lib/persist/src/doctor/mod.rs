//! `disk-doctor`: before anything runs, whether `up`, `down`, `backup` and
//! `--grow` would work for each record, and the fix for each thing in the
//! way. Nothing here changes anything.
//!
//! * The provider's checks (credentials, clock, region, permissions for
//!   exactly the calls the flows make, zones, instances, the disk and whose
//!   it is) come from [`Provider::preflight`], one call per provider for
//!   all its records: the providers are opened by the caller (an
//!   [`Opener`]), so this crate links no cloud SDK.
//! * The node's checks ([`node`]) are made here, on the node: for local and
//!   static records always, for cloud records with `--self`.
//! * The AppScalefile `appscale up` reads, when named, must not make
//!   AppScale act on the same disks ([`node::appscale_disks`]).
//!
//! Each record gets a `doctor` ([`Diagnosis`]); the table ([`table`]) shows
//! every check once, with its fix.

pub(crate) mod node;

/// The environment variable naming Cloud Resource Manager's endpoint
/// (gcloud's own override), where disk-doctor tests a Compute Engine
/// project's permissions.
pub const RESOURCE_MANAGER_ENDPOINT_ENV: &str =
    "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER";

use std::path::PathBuf;

use crate::checks::{Ask, Check, Diagnosis, Scope, Verdict};
use crate::fstab::{self, Fstab};
use crate::provider::Provider;
use crate::record::{ProviderKind, Record};
use crate::step::Exit;
use crate::steps::provision::Opener;

/// How the node part is looked at.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Mountpoint for records that name none.
    pub mountpoint: Option<String>,
    /// The fstab to read [default: /etc/fstab].
    pub fstab: Option<PathBuf>,
    /// Directory of local disk images.
    pub state_dir: Option<PathBuf>,
    /// The metadata service, for `--self`.
    pub metadata_endpoint: Option<String>,
}

/// How a run of disk-doctor looks.
pub struct Options {
    /// Provider for records that name none.
    pub default_provider: Option<ProviderKind>,
    /// The deployment every cloud disk must belong to (`--deployment`),
    /// over the records' own.
    pub deployment: Option<String>,
    /// What the providers are asked: flows, role, clock tolerance.
    pub ask: Ask,
    /// How the node part is looked at.
    pub node: NodeOptions,
    /// The AppScalefile `appscale up` reads, when named.
    pub appscale_file: Option<PathBuf>,
}

/// Fills each record's `doctor` (records carrying an error pass through
/// untouched): the providers' checks (one `preflight` per provider), the
/// node's where the disk is on this machine, and the AppScalefile's.
/// Returns [`Exit::Failed`] when any check failed or a record carries an
/// error, else [`Exit::Ok`].
pub fn run(records: &mut [Record], opts: &Options, open: &mut Opener) -> Exit {
    let todo: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].error.is_none())
        .collect();
    let mut found: Vec<Vec<Check>> = todo.iter().map(|_| Vec::new()).collect();
    let seen: Vec<Record> = todo
        .iter()
        .map(|&i| {
            let mut r = records[i].clone();
            r.provider = r.provider.or(opts.default_provider);
            if opts.deployment.is_some() && r.provider.is_some_and(ProviderKind::is_cloud) {
                r.deployment.clone_from(&opts.deployment);
            }
            r
        })
        .collect();

    // The providers: one preflight each.
    let mut groups: Vec<(ProviderKind, Vec<usize>)> = Vec::new();
    for (j, r) in seen.iter().enumerate() {
        match r.provider {
            Some(kind) => match groups.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, idx)) => idx.push(j),
                None => groups.push((kind, vec![j])),
            },
            None => found[j].push(Check::fail(
                crate::checks::DISK,
                Scope::Disk,
                "the record names no provider",
                "plan the records with appscalefile-lint --plan, or pass --provider",
            )),
        }
    }
    for (kind, idx) in &groups {
        let batch: Vec<Record> = idx.iter().map(|&j| seen[j].clone()).collect();
        let mut checks = match open(*kind) {
            Ok(mut p) => preflight(p.as_mut(), &batch, &opts.ask),
            Err(f) => batch
                .iter()
                .map(|_| {
                    vec![Check::fail(
                        crate::checks::CREDENTIALS,
                        Scope::Provider,
                        format!("the {kind} provider could not be opened: {}", f.message),
                        "see the message",
                    )]
                })
                .collect(),
        };
        for (j, c) in idx.iter().zip(checks.iter_mut()) {
            found[*j].append(c);
        }
    }

    // The node.
    let here: Vec<usize> = (0..seen.len())
        .filter(|&j| match seen[j].provider {
            Some(ProviderKind::Local | ProviderKind::Static) => true,
            Some(_) => opts.ask.on_node,
            None => false,
        })
        .collect();
    if !here.is_empty() {
        node_checks(&seen, &here, opts, &mut found);
    }
    if let Some(path) = &opts.appscale_file {
        let check = node::appscale_disks(path);
        for checks in found.iter_mut() {
            checks.push(check.clone());
        }
    }

    for (i, mut checks) in todo.into_iter().zip(found) {
        checks.sort_by_key(|c| c.scope);
        records[i].doctor = Some(Diagnosis { checks });
    }
    exit_code(records)
}

/// One preflight for the batch, kept to one list per record.
fn preflight(p: &mut dyn Provider, batch: &[Record], ask: &Ask) -> Vec<Vec<Check>> {
    let mut out = p.preflight(batch, ask);
    out.resize_with(batch.len(), Vec::new);
    out
}

/// The node's checks of the records at `here` (indexes into `seen`), made
/// once each where they are about the machine.
fn node_checks(seen: &[Record], here: &[usize], opts: &Options, found: &mut [Vec<Check>]) {
    let fstab_path = opts
        .node
        .fstab
        .clone()
        .unwrap_or_else(|| PathBuf::from(fstab::DEFAULT_PATH));
    let (fstab_check, fstab): (Check, Option<Fstab>) = node::fstab_file(&fstab_path);
    let flag = opts.node.mountpoint.as_deref();
    let mut kinds: Vec<ProviderKind> = Vec::new();
    for &j in here {
        let kind = seen[j].provider.unwrap_or(ProviderKind::Local);
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let cloud_checks: Vec<(ProviderKind, Vec<Check>)> = kinds
        .iter()
        .filter(|k| k.is_cloud())
        .map(|&k| {
            let endpoint = opts.node.metadata_endpoint.as_deref();
            (k, vec![node::metadata(k, endpoint), node::udev_links(k)])
        })
        .collect();
    let locals: Vec<&Record> = here
        .iter()
        .map(|&j| &seen[j])
        .filter(|r| r.provider == Some(ProviderKind::Local))
        .collect();
    let state = (!locals.is_empty())
        .then(|| node::state_dir(&node::local_state_dir(opts.node.state_dir.clone()), &locals));
    for &j in here {
        let r = &seen[j];
        let checks = &mut found[j];
        if let Some((_, c)) = cloud_checks.iter().find(|(k, _)| Some(*k) == r.provider) {
            checks.extend(c.iter().cloned());
        }
        checks.push(fstab_check.clone());
        if r.provider == Some(ProviderKind::Local)
            && let Some(s) = &state
        {
            checks.push(s.clone());
        }
        checks.push(node::mountpoint(r, flag, fstab.as_ref()));
        if let Some(f) = &fstab
            && let Some(c) = node::fstab_entry(r, flag, f)
        {
            checks.push(c);
        }
    }
}

/// [`Exit::Failed`] when any record carries an error or a failed check.
pub(crate) fn exit_code(records: &[Record]) -> Exit {
    let bad = |r: &Record| r.error.is_some() || r.doctor.as_ref().is_some_and(Diagnosis::failed);
    if records.iter().any(bad) {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

/// One row of the table: node, disk, check, result, flows, what was found
/// (subject first); and the fix, when there is one.
pub fn table_rows(records: &[Record]) -> Vec<(Vec<String>, Option<String>)> {
    let mut rows: Vec<(Vec<String>, Option<String>)> = Vec::new();
    let mut shared: Vec<&Check> = Vec::new();
    let cell = |s: Option<&str>| s.filter(|s| !s.is_empty()).unwrap_or("-").to_string();
    let row = |node: String, disk: String, c: &Check| -> (Vec<String>, Option<String>) {
        let flows = if c.flows.is_empty() {
            "all".to_string()
        } else {
            c.flows
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let what = match &c.subject {
            Some(s) => format!("{s}: {}", c.message),
            None => c.message.clone(),
        };
        let fix = c.fix.clone().filter(|_| c.verdict != Verdict::Ok);
        (
            vec![
                node,
                disk,
                c.name.clone(),
                c.verdict.as_str().to_string(),
                flows,
                what,
            ],
            fix,
        )
    };
    for r in records {
        let (node, disk) = (cell(r.node.as_deref()), cell(r.disk.as_deref()));
        if let Some(e) = &r.error {
            rows.push((
                vec![
                    node,
                    disk,
                    "error".into(),
                    Verdict::Fail.as_str().into(),
                    "all".into(),
                    format!("{}: {} [{}]", e.tool, e.message, e.code),
                ],
                None,
            ));
            continue;
        }
        for c in r.doctor.iter().flat_map(|d| &d.checks) {
            if c.scope == Scope::Disk {
                rows.push(row(node.clone(), disk.clone(), c));
            } else if !shared.contains(&c) {
                shared.push(c);
            }
        }
    }
    let mut out: Vec<(Vec<String>, Option<String>)> = shared
        .into_iter()
        .map(|c| row("*".into(), "*".into(), c))
        .collect();
    out.extend(rows);
    out
}

/// The table: a header, one line per check (the checks about the provider
/// or the machine once, marked `*`), each fix on the line below its check,
/// then a summary line.
pub fn table(records: &[Record]) -> String {
    let rows = table_rows(records);
    let header: Vec<String> = ["NODE", "DISK", "CHECK", "RESULT", "FLOWS", "WHAT"]
        .map(String::from)
        .to_vec();
    let mut width = [0usize; 5];
    for cells in std::iter::once(&header).chain(rows.iter().map(|(c, _)| c)) {
        for (w, c) in width.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let indent: usize = width.iter().map(|w| w + 2).sum();
    let line = |cells: &[String]| -> String {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 5 {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            } else {
                l.push_str(c);
            }
        }
        l.trim_end().to_string()
    };
    let mut out = line(&header);
    out.push('\n');
    let (mut failed, mut warned) = (0, 0);
    for (cells, fix) in &rows {
        out.push_str(&crate::log::redact(&crate::log::escape_controls(&line(
            cells,
        ))));
        out.push('\n');
        match cells[3].as_str() {
            "FAIL" => failed += 1,
            "warn" => warned += 1,
            _ => {}
        }
        if let Some(fix) = fix {
            out.push_str(&format!(
                "{:indent$}fix: {}\n",
                "",
                crate::log::redact(&crate::log::escape_controls(fix))
            ));
        }
    }
    out.push_str(&if failed == 0 {
        format!(
            "{} disk(s): nothing in the way{}\n",
            records.len(),
            if warned > 0 {
                format!(" ({warned} warning(s))")
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "{} disk(s): {failed} check(s) failed, {warned} warning(s)\n",
            records.len()
        )
    });
    out
}
