//! `disk-create` on EC2: plan, send, wait, finish.
//!
//! * **plan**: each record's volume is looked up (by id or Name tag, one
//!   DescribeVolumes each) and, for records with no zone, its instance's
//!   zone (one DescribeInstances); then a [`CreatePlan`] per record.
//! * **send**: CreateVolume for the volumes to make, CreateTags for the
//!   hand-made ones to adopt, at most `--concurrency` at once.
//! * **wait**: every new volume (and one an earlier run left `creating`)
//!   until it is `available`, in one poll loop.
//! * **finish**: the record gets the volume's id, size and zone.

use appscale_persist::codes;
use appscale_persist::log;
use appscale_persist::provider::Size;
use appscale_persist::record::{Record, State};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{Unfinished, call_each, failures};
use aws_sdk_ec2::types::{Volume, VolumeState};

use crate::api::NewVolume;
use crate::owner::{self, Found};
use crate::volume::{self, VolumeRef};
use crate::{DEFAULT_DISK_TYPE, DEFAULT_SIZE, Run};

/// What disk-create does for one record, decided before any call.
#[derive(Debug, Clone)]
pub enum CreatePlan {
    /// The volume exists and is this deployment's: nothing to do.
    Exists(Volume),
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
    },
    /// No volume carries the record's Name tag: create one, then wait until
    /// it is available.
    Create(NewVolume),
}

/// Runs disk-create over `records` (placed, or failed to be).
pub async fn create(
    run: &Run,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<StepResult> {
    let mut plans = plan(run, records, placed).await;
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
    let made = call_each(limit, &mut plans, new_volume, |new| {
        let api = run.api.clone();
        async move { Ok(api.create_volume(&new).await?) }
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
    let mut ready = run
        .api
        .wait_volumes(pending, &run.deadline, available)
        .await;
    // Finish.
    records
        .iter_mut()
        .zip(plans)
        .zip(made)
        .map(|((r, plan), made)| {
            let plan = plan?;
            let id = match (&plan, made) {
                (CreatePlan::Exists(_), _) => return Ok(describe(r, &plan)),
                (CreatePlan::Adopt { .. }, _) => return Ok(finish_adopted(r, plan)),
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

/// Looks every record's volume up and plans it.
async fn plan(
    run: &Run,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<Result<CreatePlan, Failure>> {
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
    check_size_and_type(run, &what, &f.vol)?;
    volume::note(r, &f.vol);
    Ok(if f.owner.hand_made() {
        CreatePlan::Adopt {
            vol: f.vol,
            deployment: run.deployment_of(r),
            node: r.node.clone(),
        }
    } else if f.vol.state() == Some(&VolumeState::Creating) {
        CreatePlan::Creating(f.vol)
    } else {
        CreatePlan::Exists(f.vol)
    })
}

/// The plan for a record whose Name tag no volume carries: make one.
fn plan_new(run: &Run, r: &Record) -> Result<CreatePlan, Failure> {
    let Some(zone) = r.zone.clone() else {
        return Err(failures::no_zone(
            "to create the volume in",
            "--zone or --instance",
        ));
    };
    Ok(CreatePlan::Create(NewVolume {
        name: r.disk.clone().unwrap_or_default(),
        zone,
        deployment: run.deployment_of(r),
        node: r.node.clone().unwrap_or_default(),
        // From a snapshot, its size unless --size says otherwise.
        gib: run.cfg.size.map(Size::gib).unwrap_or_else(|| {
            r.restored_from
                .as_ref()
                .and(r.size_bytes)
                .map_or(DEFAULT_SIZE.gib(), |b| b.div_ceil(1 << 30))
        }),
        disk_type: run
            .cfg
            .disk_type
            .clone()
            .unwrap_or_else(|| DEFAULT_DISK_TYPE.into()),
        encrypted: run.cfg.encrypted,
        snapshot: r.restored_from.as_ref().map(|f| f.snapshot.clone()),
    }))
}

/// `--size` and `--type`, when given, must be what an existing volume has:
/// a volume of another size or type is an error, not a surprise later.
fn check_size_and_type(run: &Run, what: &str, v: &Volume) -> Result<(), Failure> {
    let have_gib = v.size().unwrap_or(0).max(0) as u64;
    if let Some(want) = run.cfg.size
        && want.gib() != have_gib
    {
        return Err(failures::size_mismatch(
            what,
            Size(have_gib << 30),
            Size(want.gib() << 30),
        ));
    }
    let have_type = v.volume_type().map(|t| t.as_str()).unwrap_or("?");
    if let Some(want) = &run.cfg.disk_type
        && want != have_type
    {
        return Err(failures::type_mismatch(what, have_type, want));
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
        } => Some((
            volume::id(vol).to_string(),
            deployment.clone(),
            node.clone(),
        )),
        _ => None,
    }
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
        Some(VolumeState::Error) => Poll::Failed(volume::wait_failed(
            volume::id(v),
            "the volume went into state `error`",
        )),
        _ => Poll::Pending,
    }
}

/// What the plan would do (`--check`), or found done (nothing to do).
fn describe(r: &mut Record, plan: &CreatePlan) -> Outcome {
    match plan {
        CreatePlan::Exists(v) => Outcome::unchanged(
            State::Created,
            format!("volume {} exists in {}", volume::id(v), zone_of(v)),
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
            vol, deployment, ..
        } => {
            r.adopted = true;
            Outcome::changed(
                State::Created,
                format!(
                    "would adopt {} in {}, made by hand, for deployment {deployment}",
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

/// A volume made by hand, now tagged.
fn finish_adopted(r: &mut Record, plan: CreatePlan) -> Outcome {
    let CreatePlan::Adopt {
        vol, deployment, ..
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
    Outcome::changed(
        State::Created,
        format!("adopted {id} in {zone}, made by hand, for deployment {deployment}"),
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
