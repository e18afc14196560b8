//! `disk-create` on Compute Engine: plan, send, wait, finish.
//!
//! * **plan**: each record's disk is looked up (`disks.get`); then a
//!   [`CreatePlan`] per record.
//! * **send**: `disks.insert` for the disks to make, `disks.setLabels` for
//!   the hand-made ones to adopt, at most `--concurrency` at once.
//! * **wait**: every operation, then every new disk (and one an earlier run
//!   left being created) until it is ready, under one deadline.
//! * **finish**: the record gets the disk's size.

use appscale_persist::log;
use appscale_persist::provider::Size;
use appscale_persist::record::{Record, State};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist_cloudkit::{call_each, failures};

use crate::api::DiskInfo;
use crate::disk::{self, Found};
use crate::owner::{self, Owner};
use crate::{DEFAULT_DISK_TYPE, DEFAULT_SIZE, Run, Target};

/// What disk-create does for one record, decided before any call.
#[derive(Debug, Clone)]
pub enum CreatePlan {
    /// The disk exists and is this deployment's: nothing to do.
    Exists(DiskInfo),
    /// The disk exists, this deployment's, but an earlier run left it
    /// being created: wait until it is ready.
    Creating(DiskInfo),
    /// The disk was made by hand: adopt it (label it for the deployment and
    /// node).
    Adopt(DiskInfo),
    /// No such disk: create it.
    Create {
        /// Its size.
        size: Size,
        /// Its type (`pd-balanced`).
        disk_type: String,
    },
}

/// Runs disk-create over the records' targets.
pub async fn create(
    run: &Run,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
) -> Vec<StepResult> {
    let found = disk::find_disks(run, &targets).await;
    let mut plans: Vec<Result<(Target, CreatePlan), Failure>> = targets
        .into_iter()
        .zip(found)
        .map(|(t, found)| {
            let t = t?;
            let p = plan(run, &t, found?)?;
            Ok((t, p))
        })
        .collect();
    if run.check {
        return records
            .iter_mut()
            .zip(plans)
            .map(|(r, p)| Ok(describe(r, &p?)))
            .collect();
    }
    // Send.
    let ops = call_each(run.cfg.concurrency, &mut plans, to_send, |(t, call)| {
        let api = run.api.clone();
        async move {
            let (at, labels) = (&t.location, owner::labels(&t.deployment, t.node.as_deref()));
            Ok(match call {
                Call::Adopt => api.adopt(at, &t.disk, labels).await?,
                Call::Insert { gib, disk_type } => {
                    api.insert_disk(at, &t.disk, gib, &disk_type, labels)
                        .await?
                }
            })
        }
    })
    .await;
    // Wait: for the operations, then until the new disks are ready (read
    // back: their size known).
    run.wait_all(&mut plans, ops).await;
    let made = call_each(
        plans.len(),
        &mut plans,
        |(t, p)| {
            matches!(p, CreatePlan::Create { .. } | CreatePlan::Creating(_)).then(|| t.clone())
        },
        |t| {
            let (api, deadline) = (run.api.clone(), run.deadline);
            async move { api.wait_ready(&t.location, &t.disk, &deadline).await }
        },
    )
    .await;
    // Finish.
    records
        .iter_mut()
        .zip(plans)
        .zip(made)
        .map(|((r, plan), made)| {
            let (t, plan) = plan?;
            Ok(match (plan, made) {
                (CreatePlan::Create { .. }, Some(d)) => {
                    disk::note(r, &d);
                    Outcome::changed(State::Created, format!("created disk {}", d.describe()))
                }
                (CreatePlan::Creating(_), Some(d)) => {
                    disk::note(r, &d);
                    Outcome::unchanged(State::Created, format!("disk {}", d.describe()))
                }
                (CreatePlan::Adopt(d), _) => {
                    disk::note(r, &d);
                    r.adopted = true;
                    log::info(format_args!(
                        "{}: adopted disk {}, made by hand: labelled for deployment {}",
                        r.label(),
                        t.disk,
                        t.deployment
                    ));
                    Outcome::changed(
                        State::Created,
                        format!("adopted disk {}, made by hand", d.describe()),
                    )
                }
                (plan, _) => describe(r, &(t, plan)),
            })
        })
        .collect()
}

/// The plan for one record, from its disk.
fn plan(run: &Run, t: &Target, found: Found) -> Result<CreatePlan, Failure> {
    let Some((d, o)) = found else {
        return Ok(CreatePlan::Create {
            size: run.cfg.size.unwrap_or(DEFAULT_SIZE),
            disk_type: run
                .cfg
                .disk_type
                .clone()
                .unwrap_or_else(|| DEFAULT_DISK_TYPE.into()),
        });
    };
    let have_gib = d.size_gb.max(0) as u64;
    if let Some(want) = run.cfg.size
        && want.gib() != have_gib
    {
        let (have, want) = (Size(have_gib << 30), Size(want.gib() << 30));
        return Err(failures::size_mismatch(&t.what(), have, want));
    }
    if let Some(want) = &run.cfg.disk_type
        && d.disk_type != *want
    {
        return Err(failures::type_mismatch(&t.what(), &d.disk_type, want));
    }
    if o == Owner::HandMade {
        owner::check_adoptable(&d, o)?;
        return Ok(CreatePlan::Adopt(d));
    }
    if d.is_creating() {
        return Ok(CreatePlan::Creating(d));
    }
    Ok(CreatePlan::Exists(d))
}

/// A call disk-create sends.
enum Call {
    /// `disks.setLabels`, after reading the labels it has.
    Adopt,
    /// `disks.insert`.
    Insert {
        /// Size in GB (GiB).
        gib: i64,
        /// Disk type.
        disk_type: String,
    },
}

/// The call sent for a plan: a disk to adopt or make.
fn to_send((t, plan): &(Target, CreatePlan)) -> Option<(Target, Call)> {
    let call = match plan {
        CreatePlan::Exists(_) | CreatePlan::Creating(_) => return None,
        CreatePlan::Adopt(_) => Call::Adopt,
        CreatePlan::Create { size, disk_type } => Call::Insert {
            gib: i64::try_from(size.gib()).unwrap_or(i64::MAX),
            disk_type: disk_type.clone(),
        },
    };
    Some((t.clone(), call))
}

/// What the plan would do (`--check`), or found done (nothing to do).
fn describe(r: &mut Record, (t, plan): &(Target, CreatePlan)) -> Outcome {
    match plan {
        CreatePlan::Exists(d) => {
            disk::note(r, d);
            Outcome::unchanged(State::Created, format!("disk {}", d.describe()))
        }
        CreatePlan::Creating(d) => {
            disk::note(r, d);
            Outcome::unchanged(
                State::Created,
                format!("disk {} is being created", d.describe()),
            )
        }
        CreatePlan::Adopt(d) => {
            disk::note(r, d);
            r.adopted = true;
            Outcome::changed(
                State::Created,
                format!(
                    "would adopt disk {}, made by hand, for deployment {}",
                    d.describe(),
                    t.deployment
                ),
            )
        }
        CreatePlan::Create { size, disk_type } => Outcome::changed(
            State::Created,
            format!(
                "would create disk {} ({} GB {disk_type}) in {}",
                t.disk,
                size.gib(),
                t.location.zone
            ),
        ),
    }
}
