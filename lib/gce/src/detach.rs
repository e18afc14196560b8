//! `disk-detach` on Compute Engine: plan, send, wait, finish.
//!
//! * **plan**: each record's disk (`disks.get`), then the instance using it
//!   (`instances.get`, once per instance: the disk's device name there) are
//!   looked up; then a [`DetachPlan`] per record, after the guard that never
//!   detaches under a live filesystem ([`kit::may_detach`]).
//! * **send**: `instances.detachDisk`, at most `--concurrency` at once.
//! * **wait**: every operation, under one deadline.
//! * **finish**: the record loses its `device`.

use std::collections::HashMap;

use appscale_persist::record::{Record, State};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist_cloudkit::{self as kit, Detachable, call_each, failures};

use crate::api::InstanceInfo;
use crate::disk::{self, Found, InstanceKey};
use crate::owner;
use crate::{Run, Target};

/// What disk-detach does for one record, decided before any call.
#[derive(Debug, Clone)]
pub enum DetachPlan {
    /// Used by no instance: nothing to do.
    NotAttached,
    /// Detach it, then wait.
    Detach {
        /// The instance using it.
        instance: String,
        /// Its device name there.
        device: String,
        /// On what grounds.
        grounds: Detachable,
    },
}

/// Runs disk-detach over the records' targets.
pub async fn detach(
    run: &Run,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
) -> Vec<StepResult> {
    let mut plans = plan(run, records, targets).await;
    if run.check {
        return plans.into_iter().map(|p| Ok(describe(&p?))).collect();
    }
    // Send.
    let to_detach = |(t, p): &(Target, DetachPlan)| match p {
        DetachPlan::Detach {
            instance, device, ..
        } => Some((t.clone(), instance.clone(), device.clone())),
        DetachPlan::NotAttached => None,
    };
    let ops = call_each(
        run.cfg.concurrency,
        &mut plans,
        to_detach,
        |(t, instance, device)| {
            let api = run.api.clone();
            async move { Ok(api.detach(&t.location, &instance, &device).await?) }
        },
    )
    .await;
    // Wait.
    run.wait_all(&mut plans, ops).await;
    // Finish.
    records
        .iter_mut()
        .zip(plans)
        .map(|(r, plan)| {
            let (t, plan) = plan?;
            let DetachPlan::Detach { instance, .. } = &plan else {
                return Ok(describe(&(t, plan)));
            };
            r.device = None;
            Ok(Outcome::changed(
                State::Detached,
                format!("detached disk {} from {instance}", t.disk),
            ))
        })
        .collect()
}

/// Looks every record's disk, and the instance using it, up and plans it.
async fn plan(
    run: &Run,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
) -> Vec<Result<(Target, DetachPlan), Failure>> {
    let found = disk::find_disks(run, &targets).await;
    let users: Vec<InstanceKey> = targets
        .iter()
        .zip(&found)
        .filter_map(|(t, found)| {
            let (d, _) = found.as_ref().ok()?.as_ref()?;
            Some((t.as_ref().ok()?.location.clone(), d.users.first()?.clone()))
        })
        .collect();
    let instances = disk::find_instances(run, users).await;
    records
        .iter_mut()
        .zip(targets.into_iter().zip(found))
        .map(|(r, (t, found))| {
            let t = t?;
            let p = plan_one(run, r, &t, found?, &instances)?;
            Ok((t, p))
        })
        .collect()
}

/// The plan for one record, from its disk and the instance using it.
fn plan_one(
    run: &Run,
    r: &mut Record,
    t: &Target,
    found: Found,
    instances: &HashMap<InstanceKey, Result<InstanceInfo, Failure>>,
) -> Result<DetachPlan, Failure> {
    let (d, o) = found.ok_or_else(|| disk::no_such_disk(t))?;
    disk::note(r, &d);
    let Some(user) = d.users.first().cloned() else {
        return Ok(DetachPlan::NotAttached);
    };
    owner::check_adoptable(&d, o)?;
    if let Some(want) = &t.instance
        && *want != user
    {
        return Err(failures::attached_to_another(&t.what(), &user, want));
    }
    let key = (t.location.clone(), user);
    let info = match instances.get(&key) {
        Some(info) => info.clone()?,
        None => return Err(failures::no_such_instance(&key.1, None)),
    };
    let (_, user) = key;
    let device = info.device_of(&t.disk).unwrap_or_else(|| t.disk.clone());
    r.attached_as = Some(device.clone());
    let attached = appscale_persist::release::Attachment {
        instance: &user,
        device: Some(&device),
        since: d
            .last_attach
            .as_deref()
            .and_then(appscale_persist::snapshot::Stamp::parse_rfc3339)
            .map(|t| t.0 / 1000),
    };
    let grounds = kit::may_detach(r, &t.disk, attached, run.cfg.on_node, run.cfg.force)?;
    Ok(DetachPlan::Detach {
        instance: user,
        device,
        grounds,
    })
}

/// What the plan would do (`--check`), or found done (nothing to do).
fn describe((t, plan): &(Target, DetachPlan)) -> Outcome {
    match plan {
        DetachPlan::NotAttached => {
            Outcome::unchanged(State::Detached, format!("disk {} is not attached", t.disk))
        }
        DetachPlan::Detach {
            instance, grounds, ..
        } => Outcome::changed(
            State::Detached,
            format!(
                "would detach disk {} from {instance}{}",
                t.disk,
                grounds.note()
            ),
        ),
    }
}
