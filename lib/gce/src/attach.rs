//! `disk-attach` on Compute Engine: plan, send, wait, finish.
//!
//! * **plan**: each record's disk (`disks.get`), then each instance named
//!   (`instances.get`, once per instance) are looked up; then an
//!   [`AttachPlan`] per record: a disk type the instance's machine type
//!   cannot take is refused here (`disk-type-unsupported`), and an attach
//!   Compute Engine refuses for that reason (`UNSUPPORTED_OPERATION`) is
//!   said the same way.
//! * **send**: `disks.setLabels` for the hand-made disks to adopt (and wait
//!   for those), then `instances.attachDisk` with `deviceName` = the disk's
//!   name, at most `--concurrency` at once.
//! * **wait**: every operation, under one deadline.
//! * **finish**: the record gets the disk's size and `attached_as`.

use appscale_persist::codes;
use appscale_persist::log;
use appscale_persist::record::{Record, State};
use appscale_persist::release;
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist_cloudkit::{call_each, failures};

use crate::api::{DiskInfo, InstanceInfo};
use crate::disk::{self, Found, InstanceKey};
use crate::options::check_machine;
use crate::owner::{self, Owner};
use crate::{Run, Target};

/// What disk-attach does for one record, decided before any call.
#[derive(Debug, Clone)]
pub enum AttachPlan {
    /// Attached to its instance already, as `device`: nothing to do.
    Attached {
        /// The disk.
        disk: DiskInfo,
        /// The instance.
        instance: String,
        /// Its device name there.
        device: String,
    },
    /// Attach it, as device = its name.
    Attach {
        /// The disk.
        disk: DiskInfo,
        /// The instance.
        instance: String,
        /// Made by hand: label it for this deployment and node first.
        adopt: bool,
    },
    /// `--check`, on a record an earlier `--check` step would have created
    /// the disk for.
    OnceCreated {
        /// The instance.
        instance: String,
    },
}

/// Runs disk-attach over the records' targets.
pub async fn attach(
    run: &Run,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
) -> Vec<StepResult> {
    let mut plans = plan(run, records, targets).await;
    if run.check {
        return records
            .iter_mut()
            .zip(plans)
            .map(|(r, p)| Ok(describe(r, &p?)))
            .collect();
    }
    let limit = run.cfg.concurrency;
    // Adopt first (and wait for it), so that no other deployment takes it.
    let adopting = |(t, p): &(Target, AttachPlan)| {
        matches!(p, AttachPlan::Attach { adopt: true, .. }).then(|| t.clone())
    };
    let ops = call_each(limit, &mut plans, adopting, |t| {
        let api = run.api.clone();
        let labels = owner::labels(&t.deployment, t.node.as_deref());
        async move { Ok(api.adopt(&t.location, &t.disk, labels).await?) }
    })
    .await;
    run.wait_all(&mut plans, ops).await;
    // Send.
    let to_attach = |(t, p): &(Target, AttachPlan)| match p {
        AttachPlan::Attach { instance, .. } => Some((t.clone(), instance.clone())),
        _ => None,
    };
    let ops = call_each(limit, &mut plans, to_attach, |(t, instance)| {
        let api = run.api.clone();
        async move { Ok(api.attach(&t.location, &instance, &t.disk).await?) }
    })
    .await;
    // Wait.
    run.wait_all(&mut plans, ops).await;
    for p in plans.iter_mut() {
        if let Err(f) = p
            && f.code == UNSUPPORTED_OPERATION
        {
            *p = Err(Failure::new(
                codes::DISK_TYPE_UNSUPPORTED,
                format!(
                    "{}: the instance's machine type cannot take this disk's type: pass another --type when creating the disk (hyperdisk-balanced for Hyperdisk-only families such as C4 and N4, pd-balanced for families without Hyperdisk such as E2 and N1), or use another machine type",
                    f.message
                ),
            ));
        }
    }
    // Finish.
    records
        .iter_mut()
        .zip(plans)
        .map(|(r, plan)| {
            let (t, plan) = plan?;
            let AttachPlan::Attach {
                disk,
                instance,
                adopt,
            } = &plan
            else {
                return Ok(describe(r, &(t, plan)));
            };
            disk::note(r, disk);
            r.attached_as = Some(t.disk.clone());
            let mut adopted = "";
            if *adopt {
                r.adopted = true;
                adopted = " (adopted)";
                log::info(format_args!(
                    "{}: adopted disk {}, made by hand: labelled for deployment {}",
                    r.label(),
                    t.disk,
                    t.deployment
                ));
            }
            Ok(Outcome::changed(
                State::Attached,
                format!(
                    "attached disk {}{adopted} to {instance} as device {}",
                    t.disk, t.disk
                ),
            ))
        })
        .collect()
}

/// Looks every record's disk and instance up and plans it.
async fn plan(
    run: &Run,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
) -> Vec<Result<(Target, AttachPlan), Failure>> {
    let found = disk::find_disks(run, &targets).await;
    let wanted: Vec<InstanceKey> = targets
        .iter()
        .zip(&found)
        .filter_map(|(t, found)| {
            let t = t.as_ref().ok()?;
            found.as_ref().ok()?.as_ref()?;
            Some((t.location.clone(), t.instance.clone()?))
        })
        .collect();
    let instances = disk::find_instances(run, wanted).await;
    records
        .iter_mut()
        .zip(targets.into_iter().zip(found))
        .map(|(r, (t, found))| {
            let t = t?;
            let instance = t.instance.clone().ok_or_else(failures::no_instance)?;
            let key = (t.location.clone(), instance);
            let p = plan_one(run, r, &t, found?, &key, instances.get(&key))?;
            Ok((t, p))
        })
        .collect()
}

/// The plan for one record, from its disk and instance.
fn plan_one(
    run: &Run,
    r: &mut Record,
    t: &Target,
    found: Found,
    (_, instance): &InstanceKey,
    info: Option<&Result<InstanceInfo, Failure>>,
) -> Result<AttachPlan, Failure> {
    let Some((d, o)) = found else {
        if run.check && r.is_check() {
            let instance = instance.clone();
            return Ok(AttachPlan::OnceCreated { instance });
        }
        return Err(disk::no_such_disk(t));
    };
    // Attached again, the disk is in use again: an earlier proof that the
    // node let go of it no longer holds.
    release::forget(r);
    owner::check_adoptable(&d, o)?;
    // The instance must exist (in this zone) before anything is asked of it.
    let info = || match info {
        Some(info) => info.clone(),
        None => Err(failures::no_such_instance(instance, None)),
    };
    if d.users.contains(instance) {
        let device = info()?.device_of(&t.disk).unwrap_or_else(|| t.disk.clone());
        let instance = instance.clone();
        return Ok(AttachPlan::Attached {
            disk: d,
            instance,
            device,
        });
    }
    if let Some(other) = d.users.first() {
        return Err(failures::attached_elsewhere(&t.what(), other, None));
    }
    if let Some(machine) = info()?.machine_type {
        check_machine(&machine, &d.disk_type).map_err(|why| unsupported(t, instance, &why))?;
    }
    Ok(AttachPlan::Attach {
        disk: d,
        instance: instance.clone(),
        adopt: o == Owner::HandMade,
    })
}

/// The operation error Compute Engine gives an attach of a disk type the
/// machine type cannot take (message `[pd-balanced] features are not
/// compatible for creating instance`, which the PD CSI driver rewrites
/// for the same reason).
const UNSUPPORTED_OPERATION: &str = "UNSUPPORTED_OPERATION";

/// A disk of a type `instance` cannot take, refused before the attach.
fn unsupported(t: &Target, instance: &str, why: &str) -> Failure {
    Failure::new(
        codes::DISK_TYPE_UNSUPPORTED,
        format!("disk {} on {instance}: {why}; nothing was attached", t.disk),
    )
}

/// What the plan would do (`--check`), or found done (nothing to do).
fn describe(r: &mut Record, (t, plan): &(Target, AttachPlan)) -> Outcome {
    match plan {
        AttachPlan::Attached {
            disk,
            instance,
            device,
        } => {
            disk::note(r, disk);
            r.attached_as = Some(device.clone());
            Outcome::unchanged(
                State::Attached,
                format!("disk {} is attached to {instance}", t.disk),
            )
        }
        AttachPlan::Attach {
            disk,
            instance,
            adopt,
        } => {
            disk::note(r, disk);
            r.attached_as = Some(t.disk.clone());
            r.adopted |= *adopt;
            Outcome::changed(
                State::Attached,
                format!("would attach disk {} to {instance}", t.disk),
            )
        }
        AttachPlan::OnceCreated { instance } => {
            r.attached_as = Some(t.disk.clone());
            Outcome::changed(
                State::Attached,
                format!(
                    "would attach disk {} to {instance} once it is created",
                    t.disk
                ),
            )
        }
    }
}
