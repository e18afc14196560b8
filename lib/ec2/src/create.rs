//! `disk-create` on EC2: plan, send, wait, finish.
//!
//! * **plan**: each record's volume is looked up (by id or Name tag, one
//!   DescribeVolumes each) and, for records with no zone, its instance's
//!   zone (one DescribeInstances); then a [`CreatePlan`] per record.
//!   A volume found is held to `--size`, `--type`, `--encrypted`,
//!   `--kms-key`, `--iops` and `--throughput` when given; with `--grow` a
//!   smaller one is planned to grow, with `--retag` given the tags it lacks.
//! * **send**: CreateVolume for the volumes to make, CreateTags for the
//!   hand-made ones to adopt and the ones to retag, ModifyVolume for the
//!   ones to grow, at most `--concurrency` at once.
//! * **wait**: every new volume (and one an earlier run left `creating`)
//!   until it is `available`, in one poll loop; every grown one until its
//!   modification is `optimizing` (usable at its new size) or `completed`,
//!   in another, under the same deadline.
//! * **finish**: the record gets the volume's id, size and zone.

use appscale_persist::codes;
use appscale_persist::log;
use appscale_persist::provider::Size;
use appscale_persist::record::{ProviderKind, Record, State};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::spec::{Change, encryption_mismatch, performance_mismatch};
use appscale_persist_cloudkit::{DiskSpec, Unfinished, call_each, failures};
use aws_sdk_ec2::types::{Volume, VolumeState};

use crate::api::{Absent, NewVolume};
use crate::owner::{self, Found, TAG_KMS_KEY};
use crate::pending;
use crate::volume::{self, VolumeRef};
use crate::{DEFAULT_DISK_TYPE, DEFAULT_SIZE, Run};

/// What disk-create does for one record, decided before any call.
#[derive(Debug, Clone)]
pub enum CreatePlan {
    /// The volume exists and is this deployment's: nothing to do but
    /// `change`.
    Exists {
        /// The volume.
        vol: Volume,
        /// What `--grow` and `--retag` change on it.
        change: Change,
    },
    /// The volume exists, this deployment's, but an earlier run left it
    /// `creating`: wait until it is available.
    Creating(Volume),
    /// The volume was made by hand: adopt it (tag it for the deployment and
    /// node).
    Adopt {
        /// The volume.
        vol: Volume,
        /// The deployment it is tagged for.
        deployment: String,
        /// The node it is tagged for.
        node: Option<String>,
        /// What `--grow` and `--retag` change on it.
        change: Change,
    },
    /// No volume carries the record's Name tag: create one, then wait until
    /// it is available.
    Create(NewVolume),
}

/// What `change` does to `v`, for messages (`grow from 10 GiB to 20 GiB, tag
/// team=db`).
fn change_said(change: &Change, v: &Volume) -> String {
    change.describe(v.size().unwrap_or(0), "GiB", "tag")
}

/// Runs disk-create over `records` (placed, or failed to be).
pub async fn create(
    run: &Run,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<StepResult> {
    let mut plans = plan(run, records, placed).await;
    refuse_unfinished_grows(run, &mut plans).await;
    if run.check {
        return records
            .iter_mut()
            .zip(plans)
            .map(|(r, p)| Ok(describe(r, &p?)))
            .collect();
    }
    // Send.
    let limit = run.cfg.concurrency;
    call_each(limit, &mut plans, adoption, |(vol, deployment, node)| {
        let api = run.api.clone();
        async move { Ok(api.adopt(&vol, &deployment, node.as_deref()).await?) }
    })
    .await;
    call_each(limit, &mut plans, retagging, |(vol, tags)| {
        let api = run.api.clone();
        async move { Ok(api.tag(&vol, &tags).await?) }
    })
    .await;
    let grown = call_each(limit, &mut plans, growth, |(vol, gib)| {
        let api = run.api.clone();
        async move {
            api.grow(&vol, gib).await?;
            Ok(vol)
        }
    })
    .await;
    let started = run.started;
    let made = call_each(limit, &mut plans, new_volume, |new| {
        let api = run.api.clone();
        async move { Ok(api.create_volume(&new, started).await?) }
    })
    .await;
    // Wait.
    let pending: Vec<String> = plans
        .iter()
        .zip(&made)
        .filter_map(|(p, made)| match (p, made) {
            (Ok(CreatePlan::Create(_)), Some(id)) => Some(id.clone()),
            (Ok(CreatePlan::Creating(v)), _) => Some(volume::id(v).to_string()),
            _ => None,
        })
        .collect();
    // A new volume may not be visible yet (eventual consistency).
    let mut ready = run
        .api
        .wait_volumes(
            "volumes to be available",
            pending,
            &run.deadline,
            Absent::NotYet,
            available,
        )
        .await;
    let mut growing: Vec<String> = grown.iter().flatten().cloned().collect();
    growing.extend(modifying_already(run, &plans).await);
    let mut modified = run.api.wait_modified(growing, &run.deadline).await;
    // Finish.
    records
        .iter_mut()
        .zip(plans)
        .zip(made)
        .map(|((r, plan), made)| {
            let plan = plan?;
            let id = match (&plan, made) {
                (CreatePlan::Exists { vol, change }, _) if !change.is_empty() => {
                    return finish_changed(run, r, vol, change, &mut modified);
                }
                (CreatePlan::Exists { vol, .. }, _) => {
                    let id = volume::id(vol);
                    if let Some(m) = modified.remove(id) {
                        m.map_err(|u| {
                            let what = format!("volume {id}'s modification by an earlier run");
                            u.into_failure(format!("{what} did not become usable"), &run.deadline)
                        })?;
                    }
                    return Ok(describe(r, &plan));
                }
                (CreatePlan::Adopt { vol, change, .. }, _) => {
                    let changed = finish_changed(run, r, vol, change, &mut modified)?;
                    return Ok(finish_adopted(r, plan, changed));
                }
                (CreatePlan::Creating(v), _) => volume::id(v).to_string(),
                (CreatePlan::Create(_), made) => made.ok_or_else(|| {
                    Failure::new(codes::INTERNAL, "CreateVolume gave no volume back")
                })?,
            };
            r.disk_id = Some(id.clone());
            let v = ready
                .remove(&id)
                .unwrap_or(Err(Unfinished::TimedOut { last_failure: None }));
            let v = v.map_err(|u| {
                u.into_failure(format!("volume {id} was not available"), &run.deadline)
            })?;
            volume::note(r, &v);
            Ok(finish_ready(r, &plan, &v))
        })
        .collect()
}

/// Looks every record's volume up and plans it. On Eucalyptus, an earlier
/// run's volume left untagged is tagged first ([`pending::recover`]).
async fn plan(
    run: &Run,
    records: &mut [Record],
    mut placed: Vec<Result<(), Failure>>,
) -> Vec<Result<CreatePlan, Failure>> {
    if run.api.kind == ProviderKind::Euca {
        pending::recover(run, records, &mut placed).await;
    }
    let found = volume::find_volumes(run, records, placed).await;
    // The zones of the instances, for records with no zone of their own.
    let instances = volume::find_instances(run, records, |r| r.zone.is_none()).await;
    records
        .iter_mut()
        .zip(found)
        .map(|(r, found)| {
            if r.zone.is_none()
                && let Some(id) = &r.instance
            {
                // The instance's zone is unknown because the API said no:
                // say that, not "no zone".
                r.zone = instances
                    .as_ref()
                    .map_err(Clone::clone)?
                    .get(id)
                    .map(|i| i.zone.clone());
            }
            plan_one(run, r, found)
        })
        .collect()
}

/// With `--grow`, the volumes found at the size asked whose latest
/// modification (an earlier run's grow, cut short) is still `modifying`:
/// not usable at their new size yet, so waited for like this run's. One
/// DescribeVolumesModifications; if it fails, a warning (the volumes have
/// the size asked; only the filesystem's grow may come a run later).
async fn modifying_already(run: &Run, plans: &[Result<CreatePlan, Failure>]) -> Vec<String> {
    if !run.cfg.spec.grow || run.cfg.spec.size.is_none() {
        return Vec::new();
    }
    let ids: Vec<String> = plans
        .iter()
        .filter_map(|p| match p {
            Ok(CreatePlan::Exists { vol, change }) if change.is_empty() => {
                Some(volume::id(vol).to_string())
            }
            _ => None,
        })
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    match run.api.modifications(&ids).await {
        Ok(latest) => latest
            .into_iter()
            .filter(|(_, m)| m.state == "modifying")
            .map(|(id, _)| id)
            .collect(),
        Err(e) => {
            log::warn(format_args!(
                "could not tell whether an earlier grow is still modifying: {}",
                e.failure.message
            ));
            Vec::new()
        }
    }
}

/// The volumes planned to grow whose latest modification is not
/// `completed` (an earlier grow still `modifying` or `optimizing`) fail
/// `resize-too-soon` before any ModifyVolume: EC2 takes a volume's next
/// modification only once the last one is `completed` (API_ModifyVolume).
/// One DescribeVolumesModifications; when it fails, EC2 itself refuses
/// what it must.
async fn refuse_unfinished_grows(run: &Run, plans: &mut [Result<CreatePlan, Failure>]) {
    let ids: Vec<String> = plans
        .iter()
        .flatten()
        .filter_map(growth)
        .map(|(id, _)| id)
        .collect();
    if ids.is_empty() {
        return;
    }
    let latest = match run.api.modifications(&ids).await {
        Ok(latest) => latest,
        Err(e) => {
            log::warn(format_args!(
                "could not tell whether an earlier modification is still under way: {e}"
            ));
            return;
        }
    };
    for p in plans.iter_mut() {
        let Some((id, gib)) = p.as_ref().ok().and_then(growth) else {
            continue;
        };
        if let Some(m) = latest
            .get(&id)
            .filter(|m| m.state == "modifying" || m.state == "optimizing")
        {
            *p = Err(Failure::new(
                codes::RESIZE_TOO_SOON,
                format!(
                    "volume {id}'s last modification is still `{}`: EC2 takes the next one (to {gib} GiB) only once it is `completed`, and at most 4 in a rolling 24 hours; nothing was changed, run disk-create --grow again later",
                    m.state
                ),
            ));
        }
    }
}

/// The plan for one record, from what was found for it.
fn plan_one(
    run: &Run,
    r: &mut Record,
    found: Result<Found, Failure>,
) -> Result<CreatePlan, Failure> {
    let f = match found {
        Ok(f) => f,
        Err(e)
            if e.code == codes::NO_SUCH_DISK
                && matches!(VolumeRef::of(r), Ok(VolumeRef::NameTag(_))) =>
        {
            return plan_new(run, r);
        }
        Err(e) => return Err(e),
    };
    let what = volume::what(&f.vol);
    if let (Some(want), Some(have)) = (r.zone.as_deref(), f.vol.availability_zone())
        && want != have
    {
        return Err(failures::zone_mismatch(&what, have, want));
    }
    owner::check_adoptable(&f, r.zone.as_deref())?;
    let spec = &run.cfg.spec;
    check_type(spec, &what, &f.vol)?;
    let have_gib = f.vol.size().unwrap_or(0).max(0) as u64;
    let grow = spec.size_change(&what, have_gib)?;
    check_encryption(spec, &what, &f.vol)?;
    check_performance(spec, &what, &f.vol)?;
    let change = Change {
        grow,
        tags: spec.missing_tags(|k| {
            f.vol
                .tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
        }),
    };
    volume::note(r, &f.vol);
    Ok(if f.owner.hand_made() {
        CreatePlan::Adopt {
            vol: f.vol,
            deployment: run.deployment_of(r),
            node: r.node.clone(),
            change,
        }
    } else if f.vol.state() == Some(&VolumeState::Creating) {
        if !change.is_empty() {
            return Err(Failure::new(
                codes::WAIT_FAILED,
                format!(
                    "{what} is still being created: run disk-create again once it is available, to {}",
                    change_said(&change, &f.vol)
                ),
            ));
        }
        CreatePlan::Creating(f.vol)
    } else {
        CreatePlan::Exists { vol: f.vol, change }
    })
}

/// The plan for a record whose Name tag no volume carries: make one.
fn plan_new(run: &Run, r: &Record) -> Result<CreatePlan, Failure> {
    let spec = &run.cfg.spec;
    if let Some(why) = crate::options::missing_iops(spec) {
        return Err(Failure::new(codes::CREATE_FAILED, why));
    }
    let Some(zone) = r.zone.clone() else {
        return Err(failures::no_zone(
            "to create the volume in",
            "--zone or --instance",
        ));
    };
    // From a snapshot, its size unless --size says otherwise.
    let gib = spec.size.map(Size::gib).unwrap_or_else(|| {
        r.restored_from
            .as_ref()
            .and(r.size_bytes)
            .map_or(DEFAULT_SIZE.gib(), |b| b.div_ceil(1 << 30))
    });
    // The type's sizes, before any CreateVolume (st1 and sc1 start at 125
    // GiB: the default size does not fit them).
    let euca = run.api.kind == ProviderKind::Euca;
    if !euca && let Err(why) = crate::options::size_fits(spec, gib) {
        return Err(Failure::new(
            codes::CREATE_FAILED,
            format!("{why}; nothing was created"),
        ));
    }
    let default_type = if euca {
        crate::euca::VOLUME_TYPE
    } else {
        DEFAULT_DISK_TYPE
    };
    Ok(CreatePlan::Create(NewVolume {
        name: r.disk.clone().unwrap_or_default(),
        zone,
        deployment: run.deployment_of(r),
        node: r.node.clone().unwrap_or_default(),
        gib,
        disk_type: spec
            .disk_type
            .clone()
            .unwrap_or_else(|| default_type.into()),
        encrypted: spec.wants_encryption(),
        kms_key: spec.kms_key.clone(),
        iops: spec.iops,
        throughput: spec.throughput,
        tags: spec.tags.clone(),
        snapshot: r.restored_from.as_ref().map(|f| f.snapshot.clone()),
    }))
}

/// `--type`, when given, must be what an existing volume has: a volume of
/// another type is an error, not a surprise later.
fn check_type(spec: &DiskSpec, what: &str, v: &Volume) -> Result<(), Failure> {
    let have_type = v.volume_type().map(|t| t.as_str()).unwrap_or("?");
    if let Some(want) = &spec.disk_type
        && want != have_type
    {
        return Err(failures::type_mismatch(what, have_type, want));
    }
    Ok(())
}

/// A volume found must be encrypted when `--encrypted` or `--kms-key` was
/// given, and with that key: named by its ARN, by its id (the end of the
/// ARN EC2 says), or as the key disk-create made it with (its
/// [`TAG_KMS_KEY`] tag: an alias is confirmed only so).
fn check_encryption(spec: &DiskSpec, what: &str, v: &Volume) -> Result<(), Failure> {
    if !spec.wants_encryption() {
        return Ok(());
    }
    if v.encrypted() != Some(true) {
        return Err(encryption_mismatch(what, "exists unencrypted"));
    }
    let Some(want) = &spec.kms_key else {
        return Ok(());
    };
    let have = v.kms_key_id().unwrap_or("");
    let by_id = !want.contains([':', '/']) && have.ends_with(&format!(":key/{want}"));
    if have == want || by_id || owner::tag(v, TAG_KMS_KEY) == Some(want.as_str()) {
        return Ok(());
    }
    let have = if have.is_empty() {
        "the account's default key"
    } else {
        have
    };
    Err(encryption_mismatch(
        what,
        format!("is encrypted with {have}, not {want}"),
    ))
}

/// `--iops` and `--throughput`, when given, must be what a volume found
/// has.
fn check_performance(spec: &DiskSpec, what: &str, v: &Volume) -> Result<(), Failure> {
    let have = |n: Option<i32>| n.map(|n| n.max(0) as u64);
    for (name, want, have) in [
        ("provisioned IOPS", spec.iops, have(v.iops())),
        ("throughput (MiB/s)", spec.throughput, have(v.throughput())),
    ] {
        if let Some(want) = want
            && have != Some(want)
        {
            return Err(performance_mismatch(what, name, have, want));
        }
    }
    Ok(())
}

/// The CreateTags request of a plan that adopts a volume.
fn adoption(p: &CreatePlan) -> Option<(String, String, Option<String>)> {
    match p {
        CreatePlan::Adopt {
            vol,
            deployment,
            node,
            ..
        } => Some((
            volume::id(vol).to_string(),
            deployment.clone(),
            node.clone(),
        )),
        _ => None,
    }
}

/// The change of a plan for a volume found.
fn change_of(p: &CreatePlan) -> Option<(&Volume, &Change)> {
    match p {
        CreatePlan::Exists { vol, change } | CreatePlan::Adopt { vol, change, .. } => {
            Some((vol, change))
        }
        _ => None,
    }
}

/// The CreateTags request of a plan that retags a volume (`--retag`).
fn retagging(p: &CreatePlan) -> Option<(String, Vec<(String, String)>)> {
    let (vol, change) = change_of(p)?;
    (!change.tags.is_empty()).then(|| (volume::id(vol).to_string(), change.tags.clone()))
}

/// The ModifyVolume request of a plan that grows a volume (`--grow`).
fn growth(p: &CreatePlan) -> Option<(String, u64)> {
    let (vol, change) = change_of(p)?;
    Some((volume::id(vol).to_string(), change.grow?))
}

/// The CreateVolume request of a plan that makes a volume.
fn new_volume(p: &CreatePlan) -> Option<NewVolume> {
    match p {
        CreatePlan::Create(new) => Some(new.clone()),
        _ => None,
    }
}

/// Waiting for a volume: done when `available`, failed in `error`.
fn available(v: &Volume) -> Poll<Volume, Failure> {
    match v.state() {
        Some(VolumeState::Available) => Poll::Ready(v.clone()),
        Some(state @ (VolumeState::Error | VolumeState::Deleting | VolumeState::Deleted)) => {
            Poll::Failed(volume::wait_failed(
                volume::id(v),
                format!("the volume went into state `{}`", state.as_str()),
            ))
        }
        _ => Poll::Pending,
    }
}

/// What the plan would do (`--check`), or found done (nothing to do).
fn describe(r: &mut Record, plan: &CreatePlan) -> Outcome {
    match plan {
        CreatePlan::Exists { vol, change } if !change.is_empty() => Outcome::changed(
            State::Created,
            format!(
                "volume {} exists in {}: would {}",
                volume::id(vol),
                zone_of(vol),
                change_said(change, vol)
            ),
        ),
        CreatePlan::Exists { vol, .. } => Outcome::unchanged(
            State::Created,
            format!("volume {} exists in {}", volume::id(vol), zone_of(vol)),
        ),
        CreatePlan::Creating(v) => Outcome::unchanged(
            State::Created,
            format!(
                "volume {} is being created in {}",
                volume::id(v),
                zone_of(v)
            ),
        ),
        CreatePlan::Adopt {
            vol,
            deployment,
            change,
            ..
        } => {
            r.adopted = true;
            let also = if change.is_empty() {
                String::new()
            } else {
                format!(", and {}", change_said(change, vol))
            };
            Outcome::changed(
                State::Created,
                format!(
                    "would adopt {} in {}, made by hand, for deployment {deployment}{also}",
                    volume::id(vol),
                    zone_of(vol)
                ),
            )
        }
        CreatePlan::Create(new) => Outcome::changed(
            State::Created,
            format!(
                "would create a {} {} volume Name={} in {}",
                Size(new.gib << 30),
                new.disk_type,
                new.name,
                new.zone
            ),
        ),
    }
}

/// A volume found and changed (grown, retagged): the grown one once its
/// modification is usable.
fn finish_changed(
    run: &Run,
    r: &mut Record,
    vol: &Volume,
    change: &Change,
    modified: &mut std::collections::HashMap<String, Result<crate::api::Modification, Unfinished>>,
) -> StepResult {
    let id = volume::id(vol);
    if change.is_empty() {
        return Ok(Outcome::unchanged(
            State::Created,
            format!("volume {id} exists in {}", zone_of(vol)),
        ));
    }
    if let Some(gib) = change.grow {
        modified
            .remove(id)
            .unwrap_or(Err(Unfinished::TimedOut { last_failure: None }))
            .map_err(|u| {
                u.into_failure(
                    format!("volume {id} did not grow to {gib} GiB"),
                    &run.deadline,
                )
            })?;
        r.size_bytes = Some(gib << 30);
        log::info(format_args!(
            "{}: grew {id} to {gib} GiB: run disk-ensure-fs --grow to grow its filesystem",
            r.label()
        ));
    }
    Ok(Outcome::changed(
        State::Created,
        format!(
            "volume {id} exists in {}: did {}",
            zone_of(vol),
            change_said(change, vol)
        ),
    ))
}

/// A volume made by hand, now tagged (and `changed`).
fn finish_adopted(r: &mut Record, plan: CreatePlan, changed: Outcome) -> Outcome {
    let CreatePlan::Adopt {
        vol,
        deployment,
        change,
        ..
    } = plan
    else {
        unreachable!("only an adoption is adopted");
    };
    r.adopted = true;
    let (id, zone) = (volume::id(&vol), zone_of(&vol));
    log::info(format_args!(
        "{}: adopted {id}, made by hand: tagged for deployment {deployment}",
        r.label()
    ));
    let also = if change.is_empty() {
        String::new()
    } else {
        format!("; {}", changed.message)
    };
    Outcome::changed(
        State::Created,
        format!("adopted {id} in {zone}, made by hand, for deployment {deployment}{also}"),
    )
}

/// A volume now available: made by this run, or by an earlier one.
fn finish_ready(r: &Record, plan: &CreatePlan, v: &Volume) -> Outcome {
    let (id, zone) = (volume::id(v), zone_of(v));
    match plan {
        CreatePlan::Create(new) => Outcome::changed(
            State::Created,
            format!(
                "created volume {id} Name={} ({} GiB {}) in {zone}",
                r.disk.as_deref().unwrap_or(""),
                v.size().unwrap_or(0),
                new.disk_type,
            ),
        ),
        _ => Outcome::unchanged(State::Created, format!("volume {id} exists in {zone}")),
    }
}

fn zone_of(v: &Volume) -> &str {
    v.availability_zone().unwrap_or("?")
}
