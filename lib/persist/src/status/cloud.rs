//! The cloud part of disk-status: what a record's provider says of its
//! disk (one batched `describe` per provider), and the problems in it.

use crate::codes;
use crate::provider::{DiskStatus, Provider};
use crate::record::status::{CloudPart, Problem, Status};
use crate::record::{ProviderKind, Record};
use crate::step::Failure;
use crate::steps::provision::Opener;

use super::Options;

/// Fills each status's cloud part: the `seen` records grouped by provider,
/// one `describe` per provider; each answer also fills in its record (the
/// volume id behind a Name tag, the device name) for the node part.
pub(super) fn look(
    seen: &mut [Record],
    statuses: &mut [Status],
    opts: &Options,
    open: &mut Opener,
) {
    let mut groups: Vec<(ProviderKind, Vec<usize>)> = Vec::new();
    for (j, r) in seen.iter().enumerate() {
        if let Some(kind) = r.provider {
            match groups.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, idx)) => idx.push(j),
                None => groups.push((kind, vec![j])),
            }
        }
    }
    for (kind, idx) in groups {
        let batch: Vec<Record> = idx.iter().map(|&j| seen[j].clone()).collect();
        let found: Vec<Result<DiskStatus, Failure>> = match open(kind) {
            Ok(mut p) => describe(p.as_mut(), &batch),
            Err(f) => batch.iter().map(|_| Err(f.clone())).collect(),
        };
        for (j, f) in idx.into_iter().zip(found) {
            if let Ok(ds) = &f {
                learn(&mut seen[j], ds);
            }
            let zone = seen[j].zone.clone().or_else(|| opts.zone.clone());
            let (part, problems) = cloud_part(kind, f, zone.as_deref());
            statuses[j].cloud = Some(part);
            statuses[j].problems.extend(problems);
        }
    }
}

/// One `describe` for the batch, kept to one answer per record.
fn describe(p: &mut dyn Provider, batch: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
    let mut found = p.describe(batch);
    found.resize_with(batch.len(), || {
        Err(Failure::new(
            codes::INTERNAL,
            "the provider gave too few answers",
        ))
    });
    found
}

/// What the cloud's answer teaches the node part: the provider's id and
/// the device name.
fn learn(r: &mut Record, ds: &DiskStatus) {
    if r.provider.is_some_and(ProviderKind::is_cloud) && r.disk_id.is_none() {
        r.disk_id = Some(ds.id.clone());
    }
    if r.attached_as.is_none() {
        r.attached_as = ds.attached_as.clone();
    }
    if r.size_bytes.is_none() && r.provider.is_some_and(ProviderKind::is_cloud) {
        r.size_bytes = ds.size;
    }
}

/// The cloud part of a provider's answer, and its problems: missing, not
/// attached, attached elsewhere, in another zone than `zone`; or whatever
/// the provider's failure says (another deployment's, unreachable).
pub fn cloud_part(
    kind: ProviderKind,
    found: Result<DiskStatus, Failure>,
    zone: Option<&str>,
) -> (CloudPart, Vec<Problem>) {
    let ds = match found {
        Ok(ds) => ds,
        Err(f) => return unanswered(f),
    };
    let mut problems = Vec::new();
    if kind != ProviderKind::Static {
        problems.extend(check_attachment(&ds));
    }
    if let (Some(want), Some(is)) = (zone, ds.zone.as_deref())
        && want != is
    {
        problems.push(Problem::new(
            codes::ZONE_MISMATCH,
            format!("{} is in zone {is}, the record's is {want}", ds.id),
        ));
    }
    let part = CloudPart {
        exists: Some(true),
        id: Some(ds.id),
        size_bytes: ds.size,
        disk_type: ds.disk_type,
        zone: ds.zone,
        encrypted: ds.encrypted,
        state: ds.state,
        attached_to: ds.attached_to,
        attached_as: ds.attached_as,
        deployment: ds.deployment,
        node: ds.node,
        created: ds.created,
    };
    (part, problems)
}

/// The cloud part when the provider's answer is a failure: the disk is
/// missing (no-such-disk, whatever the API called it), someone else's, or
/// not known to exist.
fn unanswered(f: Failure) -> (CloudPart, Vec<Problem>) {
    let missing = [
        codes::NO_SUCH_DISK.as_str(),
        "InvalidVolume.NotFound",
        "NOT_FOUND",
    ]
    .contains(&f.code.as_str());
    let theirs = [codes::OTHER_DEPLOYMENT, codes::OTHER_NODE].contains(&f.code);
    let exists = if missing {
        Some(false)
    } else if theirs {
        Some(true)
    } else {
        None
    };
    let problem = if missing {
        Problem::new(codes::NO_SUCH_DISK, f.message)
    } else {
        f.into()
    };
    let part = CloudPart {
        exists,
        ..CloudPart::default()
    };
    (part, vec![problem])
}

/// Attached to nothing (not-attached), or to other instances than the
/// record's (attached-elsewhere).
fn check_attachment(ds: &DiskStatus) -> Option<Problem> {
    match &ds.instance {
        _ if ds.attached_to.is_empty() => Some(Problem::new(
            codes::NOT_ATTACHED,
            format!("{} is attached to nothing", ds.id),
        )),
        Some(i) if !ds.attached_to.contains(i) => Some(Problem::new(
            codes::ATTACHED_ELSEWHERE,
            format!(
                "{} is attached to {}, not to {i}",
                ds.id,
                ds.attached_to.join(", ")
            ),
        )),
        _ => None,
    }
}
