//! `disk-detach` on EC2: plan, send, wait, finish.
//!
//! * **plan**: the records' volumes are looked up (one DescribeVolumes per
//!   kind of name); then a [`DetachPlan`] per record, after the guard that
//!   never detaches under a live filesystem ([`kit::may_detach`]).
//! * **send**: DetachVolume (always naming the instance; `Force` with
//!   `--ebs-force`), at most `--concurrency` at once.
//! * **wait**: every volume until it has no live attachment, in one poll
//!   loop (those detaching already too).
//! * **finish**: the record loses its `device`.

use appscale_persist::log;
use appscale_persist::record::{Record, State};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{self as kit, Detachable, Unfinished, call_each, failures};
use aws_sdk_ec2::types::{Volume, VolumeAttachmentState};

use crate::Run;
use crate::api::{Absent, Api};
use crate::owner::{self, Found, Owner};
use crate::volume;

/// What disk-detach does for one record, decided before any call.
#[derive(Debug, Clone)]
pub enum DetachPlan {
    /// Attached nowhere: nothing to do.
    NotAttached {
        /// The volume id.
        vol: String,
    },
    /// Detaching already (someone asked): wait for it.
    Detaching {
        /// The volume id.
        vol: String,
        /// The instance it is detaching from.
        instance: String,
    },
    /// Detach it, then wait.
    Detach {
        /// The volume id.
        vol: String,
        /// The instance it is attached to.
        instance: String,
        /// On what grounds.
        grounds: Detachable,
    },
}

/// Runs disk-detach over `records` (placed, or failed to be).
pub async fn detach(
    run: &Run,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<StepResult> {
    let found = volume::find_volumes(run, records, placed).await;
    let mut plans: Vec<Result<DetachPlan, Failure>> = records
        .iter_mut()
        .zip(found)
        .map(|(r, found)| plan(run, r, found?))
        .collect();
    if run.check {
        return plans.into_iter().map(|p| Ok(describe(&p?))).collect();
    }
    // Send.
    let force = run.cfg.ebs_force;
    call_each(
        run.cfg.concurrency,
        &mut plans,
        to_detach,
        |(vol, instance)| {
            let api = run.api.clone();
            async move { detach_one(&api, &vol, &instance, force).await }
        },
    )
    .await;
    // Wait.
    let pending: Vec<String> = plans
        .iter()
        .filter_map(|p| match p {
            Ok(DetachPlan::Detaching { vol, .. } | DetachPlan::Detach { vol, .. }) => {
                Some(vol.clone())
            }
            _ => None,
        })
        .collect();
    let mut detached = run
        .api
        .wait_volumes(
            "volumes to be detached",
            pending,
            &run.deadline,
            Absent::Gone,
            gone,
        )
        .await;
    // Finish.
    records
        .iter_mut()
        .zip(plans)
        .map(|(r, plan)| {
            let (vol, instance) = match plan? {
                plan @ DetachPlan::NotAttached { .. } => return Ok(describe(&plan)),
                DetachPlan::Detaching { vol, instance }
                | DetachPlan::Detach { vol, instance, .. } => (vol, instance),
            };
            let unfinished = Unfinished::TimedOut { last_failure: None };
            detached
                .remove(&vol)
                .unwrap_or(Err(unfinished))
                .map_err(|u| {
                    u.into_failure(format!("volume {vol} was not detached"), &run.deadline)
                })?;
            r.device = None;
            Ok(Outcome::changed(
                State::Detached,
                format!("detached {vol} from {instance}"),
            ))
        })
        .collect()
}

/// The plan for one record, from its volume.
fn plan(run: &Run, r: &mut Record, f: Found) -> Result<DetachPlan, Failure> {
    let v = &f.vol;
    volume::note(r, v);
    let vol = volume::id(v).to_string();
    let live = volume::live_attachments(v);
    let Some(a) = live.first() else {
        return Ok(DetachPlan::NotAttached { vol });
    };
    let attached_to = a.instance_id().unwrap_or_default().to_string();
    if let Some(want) = &r.instance
        && *want != attached_to
    {
        return Err(failures::attached_to_another(
            &volume::what(v),
            &attached_to,
            want,
        ));
    }
    if f.owner == Owner::HandMadeByName {
        owner::check_adoptable(&f, None)?;
    }
    r.attached_as = Some(a.device().unwrap_or_default().into());
    if a.state() == Some(&VolumeAttachmentState::Detaching) {
        return Ok(DetachPlan::Detaching {
            vol,
            instance: attached_to,
        });
    }
    let attached = appscale_persist::release::Attachment {
        instance: &attached_to,
        device: a.device(),
        since: a.attach_time().map(|t| t.secs().max(0) as u64),
    };
    let grounds = kit::may_detach(r, &vol, attached, run.cfg.on_node, run.cfg.force)?;
    Ok(DetachPlan::Detach {
        vol,
        instance: attached_to,
        grounds,
    })
}

/// AWS error codes of a DetachVolume for a volume not attached there: the
/// SDK resending a call whose answer was lost gets one for its own work.
const NOT_ATTACHED: &[&str] = &["IncorrectState", "InvalidAttachment.NotFound"];

/// DetachVolume of `vol` from `instance`. Refused as not attached there
/// ([`NOT_ATTACHED`]; DetachVolume carries no token, and a lost answer's
/// resend gets this), it is success when DescribeVolumes shows the volume
/// detaching from there, or attached there no more.
async fn detach_one(api: &Api, vol: &str, instance: &str, force: bool) -> Result<(), Failure> {
    let e = match api.detach(vol, instance, force).await {
        Ok(()) => return Ok(()),
        Err(e) if NOT_ATTACHED.contains(&e.failure.code.as_str()) => e,
        Err(e) => return Err(e.failure),
    };
    let found = api.volumes_by_id(&[vol.to_string()]).await?;
    let still = found
        .get(vol)
        .and_then(|v| volume::attachment_to(v, instance))
        .and_then(|a| a.state());
    match still {
        None | Some(VolumeAttachmentState::Detaching | VolumeAttachmentState::Detached) => {
            log::debug(format_args!(
                "{vol}: {}; it is detached (or detaching) from {instance} already",
                e.failure.message
            ));
            Ok(())
        }
        Some(_) => Err(e.failure),
    }
}

/// The DetachVolume request of a plan.
fn to_detach(p: &DetachPlan) -> Option<(String, String)> {
    match p {
        DetachPlan::Detach { vol, instance, .. } => Some((vol.clone(), instance.clone())),
        _ => None,
    }
}

/// Waiting for a detach: over when the volume has no live attachment.
fn gone(v: &Volume) -> Poll<(), Failure> {
    if volume::live_attachments(v).is_empty() {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

/// What the plan would do (`--check`), or found done (nothing to do).
fn describe(plan: &DetachPlan) -> Outcome {
    match plan {
        DetachPlan::NotAttached { vol } => {
            Outcome::unchanged(State::Detached, format!("{vol} is not attached"))
        }
        DetachPlan::Detaching { vol, instance } => Outcome::changed(
            State::Detached,
            format!("would wait for {vol} to finish detaching from {instance}"),
        ),
        DetachPlan::Detach {
            vol,
            instance,
            grounds,
        } => Outcome::changed(
            State::Detached,
            format!("would detach {vol} from {instance}{}", grounds.note()),
        ),
    }
}
