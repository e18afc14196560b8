//! `disk-attach` on EC2: plan, send, wait, finish.
//!
//! * **plan**: the records' volumes (one DescribeVolumes per kind of name)
//!   and instances (one DescribeInstances) are looked up; then an
//!   [`AttachPlan`] per record, with a free device name for each volume to
//!   attach (names taken by this plan count as taken; HVM instances have
//!   the longer name space, [`devices::NameSpace`]); then, when volumes are
//!   to be attached, their instances' types say how many each may carry
//!   (one DescribeInstanceTypes, [`crate::limits`]): the volumes beyond
//!   fail `attachment-limit` before any call.
//! * **send**: CreateTags for the hand-made volumes to adopt, then, once a
//!   detach in progress from the same instance is over, AttachVolume, at
//!   most `--concurrency` at once.
//! * **wait**: every attachment until it is `attached`, in one poll loop;
//!   one still `attaching` after [`crate::Config::stuck_after`] is detached
//!   again and fails the record (`stuck-attaching`).
//! * **finish**: the record gets the volume's id, size and `attached_as`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use appscale_persist::codes;
use appscale_persist::log;
use appscale_persist::record::{ProviderKind, Record, State};
use appscale_persist::release;
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{Unfinished, call_each, failures};
use aws_sdk_ec2::types::{Volume, VolumeAttachmentState};

use crate::Run;
use crate::api::{Absent, Api};
use crate::devices::{NameSpace, Taken};
use crate::instance::InstanceInfo;
use crate::owner::{self, Found};
use crate::{limits, volume};

/// What disk-attach does for one record, decided before any call.
#[derive(Debug, Clone)]
pub enum AttachPlan {
    /// Attached to its instance already: nothing to do (but adopt a volume
    /// made by hand).
    Attached(Attachment),
    /// Attach it.
    Attach(Attachment),
    /// Still detaching from this same instance (an earlier run took it
    /// down): wait for that to end, then attach it.
    AttachAfterDetach(Attachment),
    /// Attaching already (an interrupted earlier run): wait for it.
    Attaching(Attachment),
    /// `--check`, on a record an earlier `--check` step would have created
    /// the volume for.
    OnceCreated,
}

/// A volume, the instance it goes to, and as which device.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The volume id.
    pub vol: String,
    /// The instance id.
    pub instance: String,
    /// The device name (`/dev/sdf`).
    pub device: String,
    /// Made by hand: tag it for this deployment and node first.
    pub adopt: Option<Adoption>,
}

/// Tags that adopt a volume made by hand.
#[derive(Debug, Clone)]
pub struct Adoption {
    /// The deployment.
    pub deployment: String,
    /// The node.
    pub node: Option<String>,
}

impl AttachPlan {
    /// The attachment the plan is about, if any.
    fn attachment(&self) -> Option<&Attachment> {
        match self {
            AttachPlan::Attached(a)
            | AttachPlan::Attach(a)
            | AttachPlan::AttachAfterDetach(a)
            | AttachPlan::Attaching(a) => Some(a),
            AttachPlan::OnceCreated => None,
        }
    }
}

/// How waiting for an attachment ended.
enum Waited {
    /// Attached: the volume as it is now.
    Attached(Box<Volume>),
    /// Still `attaching` after `stuck_after`.
    Stuck,
}

/// Runs disk-attach over `records` (placed, or failed to be).
pub async fn attach(
    run: &Run,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<StepResult> {
    let (mut plans, taken) = plan(run, records, placed).await;
    if run.check {
        return records
            .iter_mut()
            .zip(plans)
            .map(|(r, p)| Ok(describe(r, &p?)))
            .collect();
    }
    let limit = run.cfg.concurrency;
    // Send: adopt first, so that no other deployment takes the volume.
    let adopted = call_each(limit, &mut plans, adoption, |(vol, a)| {
        let api = run.api.clone();
        async move { Ok(api.adopt(&vol, &a.deployment, a.node.as_deref()).await?) }
    })
    .await;
    // Then attach: once a detach in progress from the same instance is over
    // (waited out under the one deadline), right away otherwise.
    wait_out_detaches(run, records, &mut plans).await;
    let sent = call_each(limit, &mut plans, to_attach, |a| {
        let (api, taken) = (run.api.clone(), taken.clone());
        async move { attach_one(&api, &a, &taken).await }
    })
    .await;
    took_names(&mut plans, sent);
    // Wait.
    let mut waited = wait_attached(run, &plans).await;
    // A volume stuck attaching is given back rather than left half attached.
    let undone = call_each(
        limit,
        &mut plans,
        |p| {
            let a = p.attachment()?;
            matches!(waited.get(&a.vol), Some(Ok(Waited::Stuck))).then(|| a.clone())
        },
        |a| {
            let api = run.api.clone();
            async move {
                Ok(match api.detach(&a.vol, &a.instance, false).await {
                    Ok(()) => "detached it again".to_string(),
                    Err(e) => format!("detaching it again failed too: {}", e.failure.message),
                })
            }
        },
    )
    .await;
    // Finish.
    records
        .iter_mut()
        .zip(plans)
        .zip(adopted.into_iter().zip(undone))
        .map(|((r, plan), (adopted, undone))| {
            let plan = plan?;
            if let (Some(()), Some(a)) = (adopted, plan.attachment()) {
                log_adopted(r, a);
            }
            let a = match &plan {
                AttachPlan::Attach(a)
                | AttachPlan::AttachAfterDetach(a)
                | AttachPlan::Attaching(a) => a,
                AttachPlan::Attached(_) | AttachPlan::OnceCreated => {
                    return Ok(describe(r, &plan));
                }
            };
            finish(run, r, a, waited.remove(&a.vol), undone)
        })
        .collect()
}

/// What came of an attachment this run sent or waited for.
fn finish(
    run: &Run,
    r: &mut Record,
    a: &Attachment,
    waited: Option<Result<Waited, Unfinished>>,
    undone: Option<String>,
) -> StepResult {
    match waited.unwrap_or(Err(Unfinished::TimedOut { last_failure: None })) {
        Ok(Waited::Attached(v)) => {
            volume::note(r, &v);
            r.attached_as = Some(a.device.clone());
            r.adopted |= a.adopt.is_some();
            let adopted = if a.adopt.is_some() { " (adopted)" } else { "" };
            Ok(Outcome::changed(
                State::Attached,
                format!(
                    "attached {}{adopted} to {} as {}",
                    a.vol, a.instance, a.device
                ),
            ))
        }
        Ok(Waited::Stuck) => Err(Failure::new(
            codes::STUCK_ATTACHING,
            format!(
                "{} still attaching after {:?} on {}; {}",
                a.vol,
                stuck_after(run),
                a.instance,
                undone.unwrap_or_default()
            ),
        )),
        Err(u) => {
            let what = format!("volume {} was not attached to {}", a.vol, a.instance);
            Err(u.into_failure(what, &run.deadline))
        }
    }
}

fn log_adopted(r: &Record, a: &Attachment) {
    let deployment = a.adopt.as_ref().map(|a| a.deployment.as_str());
    log::info(format_args!(
        "{}: adopted {}, made by hand: tagged for deployment {}",
        r.label(),
        a.vol,
        deployment.unwrap_or("?")
    ));
}

/// Looks every record's volume and instance up and plans it; the device
/// names taken on each instance ([`Taken`]) come back with the plans, for
/// the attaches to take more when EC2 refuses one.
async fn plan(
    run: &Run,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> (Vec<Result<AttachPlan, Failure>>, Taken) {
    let taken = Taken::default();
    let found = volume::find_volumes(run, records, placed).await;
    let instances = match volume::find_instances(run, records, |_| true).await {
        Ok(m) => m,
        Err(f) => return (records.iter().map(|_| Err(f.clone())).collect(), taken),
    };
    let mapped = image_devices(run, &instances).await;
    for (id, info) in &instances {
        let space = if info.hvm && run.cfg.kind == ProviderKind::Ec2 {
            NameSpace::Hvm
        } else {
            NameSpace::Short
        };
        let mut in_use = info.devices.clone();
        if let Some(names) = info.image_id.as_ref().and_then(|i| mapped.get(i)) {
            in_use.extend(names.iter().cloned());
        }
        taken.instance(id, space, in_use);
    }
    let mut plans: Vec<Result<AttachPlan, Failure>> = records
        .iter_mut()
        .zip(found)
        .map(|(r, found)| plan_one(run, r, found, &instances, &taken))
        .collect();
    keep_to_limits(run, &instances, &mut plans).await;
    (plans, taken)
}

/// The device names the instances' images map (one DescribeImages): EC2
/// refuses them as "already in use", though DescribeInstances does not
/// show them. When it fails, a warning: a refused name is then passed over
/// when EC2 refuses it.
async fn image_devices(
    run: &Run,
    instances: &HashMap<String, InstanceInfo>,
) -> HashMap<String, HashSet<String>> {
    let mut images: Vec<String> = instances
        .values()
        .filter_map(|i| i.image_id.clone())
        .collect();
    images.sort();
    images.dedup();
    if images.is_empty() {
        return HashMap::new();
    }
    run.api.image_devices(&images).await.unwrap_or_else(|e| {
        log::warn(format_args!(
            "{e}: the device names the instances' images map are unknown; a name EC2 refuses as in use is passed over"
        ));
        HashMap::new()
    })
}

/// The volumes to attach beyond what their instance's type allows fail
/// `attachment-limit` (the first ones, in input order, fit). The types'
/// limits come from one DescribeInstanceTypes, made only when something is
/// to be attached; when it fails (no permission to call it, say), EC2
/// itself refuses what does not fit, with the same code.
async fn keep_to_limits(
    run: &Run,
    instances: &HashMap<String, InstanceInfo>,
    plans: &mut [Result<AttachPlan, Failure>],
) {
    if run.cfg.kind == ProviderKind::Euca {
        return;
    }
    let getting: HashSet<&str> = plans
        .iter()
        .filter_map(|p| match p {
            Ok(AttachPlan::Attach(a)) => Some(a.instance.as_str()),
            _ => None,
        })
        .collect();
    let mut types: Vec<String> = getting
        .iter()
        .filter_map(|i| instances.get(*i)?.instance_type.clone())
        .collect();
    types.sort();
    types.dedup();
    if types.is_empty() {
        return;
    }
    let limits = match run.api.ebs_limits(&types).await {
        Ok(l) => l,
        Err(e) => {
            log::warn(format_args!(
                "{e}: the instance types' attachment limits are unknown; EC2 will say when one is reached"
            ));
            return;
        }
    };
    let mut room = limits::room(instances, &limits);
    for p in plans.iter_mut() {
        let Ok(AttachPlan::Attach(a)) = p else {
            continue;
        };
        let Some(room) = room.get_mut(&a.instance) else {
            continue;
        };
        if room.left == 0 {
            *p = Err(room.full(&a.instance));
        } else {
            room.left -= 1;
        }
    }
}

/// The plan for one record, from what was found for it.
fn plan_one(
    run: &Run,
    r: &mut Record,
    found: Result<Found, Failure>,
    instances: &HashMap<String, InstanceInfo>,
    taken: &Taken,
) -> Result<AttachPlan, Failure> {
    let f = match found {
        Err(f) if f.code == codes::NO_SUCH_DISK && run.check && r.is_check() => {
            return Ok(AttachPlan::OnceCreated);
        }
        found => found?,
    };
    // Attached again, the disk is in use again: an earlier proof that the
    // node let go of it no longer holds.
    release::forget(r);
    volume::note(r, &f.vol);
    let (v, what) = (&f.vol, volume::what(&f.vol));
    let instance = r.instance.clone().ok_or_else(failures::no_instance)?;
    let info = instances
        .get(&instance)
        .ok_or_else(|| failures::no_such_instance(&instance, None))?;
    owner::check_adoptable(&f, Some(&info.zone))?;
    let attachment = |device: &str| Attachment {
        vol: volume::id(v).to_string(),
        instance: instance.clone(),
        device: device.to_string(),
        adopt: f.owner.hand_made().then(|| Adoption {
            deployment: run.deployment_of(r),
            node: r.node.clone(),
        }),
    };
    let live = volume::live_attachments(v);
    let here = live.iter().find(|a| a.instance_id() == Some(&instance));
    if let Some(a) = here
        && a.state() == Some(&VolumeAttachmentState::Attached)
    {
        return Ok(AttachPlan::Attached(attachment(a.device().unwrap_or("?"))));
    }
    if let Some(a) = live.iter().find(|a| a.instance_id() != Some(&instance)) {
        let other = a.instance_id().unwrap_or("?");
        return Err(failures::attached_elsewhere(&what, other, a.device()));
    }
    let vz = v.availability_zone().unwrap_or_default();
    if vz != info.zone {
        let want = format!("{} (the zone of {instance})", info.zone);
        return Err(failures::zone_mismatch(&what, vz, want));
    }
    let detaching = here.is_some_and(|a| a.state() == Some(&VolumeAttachmentState::Detaching));
    if let Some(a) = here
        && !detaching
    {
        return Ok(AttachPlan::Attaching(attachment(a.device().unwrap_or("?"))));
    }
    let Some(device) = taken.take_free(&instance) else {
        return Err(no_device_name(&instance, taken.space(&instance)));
    };
    Ok(if detaching {
        AttachPlan::AttachAfterDetach(attachment(&device))
    } else {
        AttachPlan::Attach(attachment(&device))
    })
}

/// `instance` has no device name left.
fn no_device_name(instance: &str, space: NameSpace) -> Failure {
    Failure::new(
        codes::NO_DEVICE_NAME,
        format!(
            "{instance} has no free device name ({}): detach a volume it no longer needs",
            space.describe()
        ),
    )
}

/// The CreateTags request of a plan that adopts a volume.
fn adoption(p: &AttachPlan) -> Option<(String, Adoption)> {
    let a = p.attachment()?;
    Some((a.vol.clone(), a.adopt.clone()?))
}

/// How many names one attach tries when EC2 says each is in use.
const NAME_ATTEMPTS: usize = 5;

/// The AWS error code of a volume attached already (to an instance).
const VOLUME_IN_USE: &str = "VolumeInUse";

/// The AWS error code of an invalid parameter, which EC2 also gives a
/// device name in use (by the image's mapping, or by a concurrent attach).
const INVALID_PARAMETER: &str = "InvalidParameterValue";

/// AttachVolume for `a`; the device name it went to.
///
/// * EC2 refusing the name as "already in use" (a name the image maps, or
///   one a concurrent attach just took): the next free name, marked taken
///   for the rest of the run ([`Taken`]), at most [`NAME_ATTEMPTS`] names.
/// * `VolumeInUse` when the volume is attached or attaching to this very
///   instance: AttachVolume carries no token, and the SDK resending a call
///   whose answer was lost gets this for its own work: success.
async fn attach_one(api: &Api, a: &Attachment, taken: &Taken) -> Result<String, Failure> {
    let mut device = a.device.clone();
    for _ in 0..NAME_ATTEMPTS {
        let e = match api.attach(&a.vol, &a.instance, &device).await {
            Ok(()) => return Ok(device),
            Err(e) => e,
        };
        if e.failure.code == INVALID_PARAMETER && name_in_use(&e.failure.message) {
            log::debug(format_args!(
                "{device} is in use on {}: trying the next free name",
                a.instance
            ));
            device = taken
                .take_free(&a.instance)
                .ok_or_else(|| no_device_name(&a.instance, taken.space(&a.instance)))?;
            continue;
        }
        if e.failure.code == VOLUME_IN_USE
            && let Some(there) = attached_here(api, a).await
        {
            log::debug(format_args!(
                "{}: {}; it is attaching to {} already (an answer lost and the call sent again)",
                a.vol, e.failure.message, a.instance
            ));
            return Ok(there);
        }
        return Err(e.failure);
    }
    Err(no_device_name(&a.instance, taken.space(&a.instance)))
}

/// Whether an `InvalidParameterValue` message says the device name is
/// taken: EC2's "Attachment point /dev/sdf is already in use", Eucalyptus's
/// "Already have a device attached to: /dev/sdf" (or "an ephemeral
/// device").
fn name_in_use(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("already in use") || m.contains("already have")
}

/// The device `a`'s volume is attached (or attaching) as on `a`'s
/// instance, as DescribeVolumes says now.
async fn attached_here(api: &Api, a: &Attachment) -> Option<String> {
    let found = api.volumes_by_id(std::slice::from_ref(&a.vol)).await.ok()?;
    let at = volume::attachment_to(found.get(&a.vol)?, &a.instance)?;
    matches!(
        at.state(),
        Some(VolumeAttachmentState::Attaching | VolumeAttachmentState::Attached)
    )
    .then(|| at.device().unwrap_or(&a.device).to_string())
}

/// The attachments sent get the device name they went to.
fn took_names(plans: &mut [Result<AttachPlan, Failure>], sent: Vec<Option<String>>) {
    for (p, device) in plans.iter_mut().zip(sent) {
        if let (Ok(AttachPlan::Attach(a)), Some(device)) = (p, device) {
            a.device = device;
        }
    }
}

/// The AttachVolume request of a plan.
fn to_attach(p: &AttachPlan) -> Option<Attachment> {
    match p {
        AttachPlan::Attach(a) => Some(a.clone()),
        _ => None,
    }
}

/// The plans that wait for a detach in progress wait for it (in one poll
/// loop, under the operation's deadline); then they attach, unless the
/// volume went elsewhere meanwhile.
async fn wait_out_detaches(
    run: &Run,
    records: &[Record],
    plans: &mut [Result<AttachPlan, Failure>],
) {
    let mut targets: HashMap<String, String> = HashMap::new();
    for (r, p) in records.iter().zip(plans.iter()) {
        if let Ok(AttachPlan::AttachAfterDetach(a)) = p {
            log::info(format_args!(
                "{}: {} is still detaching from {}: waiting for that to finish",
                r.label(),
                a.vol,
                a.instance
            ));
            targets.insert(a.vol.clone(), a.instance.clone());
        }
    }
    let ids: Vec<String> = targets.keys().cloned().collect();
    let mut over = run
        .api
        .wait_volumes(
            "volumes to be detached from their old instance",
            ids,
            &run.deadline,
            Absent::Gone,
            |v| detach_over(v, &targets[volume::id(v)]),
        )
        .await;
    for p in plans.iter_mut() {
        let Ok(AttachPlan::AttachAfterDetach(a)) = p else {
            continue;
        };
        *p = match over.remove(&a.vol) {
            Some(Ok(())) => Ok(AttachPlan::Attach(a.clone())),
            Some(Err(u)) => {
                let what = format!("{} was still detaching from {}", a.vol, a.instance);
                Err(u.into_failure(what, &run.deadline))
            }
            None => Err(Failure::new(
                codes::INTERNAL,
                "a detach was never waited for",
            )),
        };
    }
}

/// Waiting for a detach from `instance` to end: over when the volume has no
/// live attachment; failed when it turns up anywhere but detaching there.
fn detach_over(v: &Volume, instance: &str) -> Poll<(), Failure> {
    let live = volume::live_attachments(v);
    if live.is_empty() {
        return Poll::Ready(());
    }
    let detaching_here = |a: &&&aws_sdk_ec2::types::VolumeAttachment| {
        a.instance_id() == Some(instance) && a.state() == Some(&VolumeAttachmentState::Detaching)
    };
    match live.iter().find(|a| !detaching_here(a)) {
        None => Poll::Pending,
        Some(a) => Poll::Failed(volume::wait_failed(
            volume::id(v),
            format!(
                "while it was detaching, it became {} on {}",
                volume::state_of(a),
                a.instance_id().unwrap_or("?")
            ),
        )),
    }
}

/// Waits, in one poll loop, for every attachment sent or in progress.
async fn wait_attached(
    run: &Run,
    plans: &[Result<AttachPlan, Failure>],
) -> HashMap<String, Result<Waited, Unfinished>> {
    let targets: HashMap<String, String> = plans
        .iter()
        .filter_map(|p| match p {
            Ok(AttachPlan::Attach(a) | AttachPlan::Attaching(a)) => {
                Some((a.vol.clone(), a.instance.clone()))
            }
            _ => None,
        })
        .collect();
    let ids: Vec<String> = targets.keys().cloned().collect();
    let seen = Mutex::new(HashSet::new());
    run.api
        .wait_volumes(
            "volumes to be attached",
            ids,
            &run.deadline,
            Absent::Gone,
            |v| attached_yet(run, v, &targets[volume::id(v)], &seen),
        )
        .await
}

/// One poll of an attachment of `v` to `instance`: attached; still
/// attaching (stuck after [`stuck_after`]); not shown yet (right after
/// AttachVolume EC2 may describe the volume with no attachment: eventual
/// consistency, as the EBS CSI driver treats it) until [`stuck_after`];
/// or, once shown (`seen`), gone: the instance refused the volume.
fn attached_yet(
    run: &Run,
    v: &Volume,
    instance: &str,
    seen: &Mutex<HashSet<String>>,
) -> Poll<Waited, Failure> {
    let id = volume::id(v);
    let late = run.deadline.elapsed() >= stuck_after(run);
    let state = volume::attachment_to(v, instance).and_then(|a| a.state());
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    match state {
        Some(VolumeAttachmentState::Attached) => Poll::Ready(Waited::Attached(Box::new(v.clone()))),
        Some(VolumeAttachmentState::Attaching | VolumeAttachmentState::Busy) => {
            seen.insert(id.to_string());
            if late {
                Poll::Ready(Waited::Stuck)
            } else {
                Poll::Pending
            }
        }
        None if !seen.contains(id) && !late => Poll::Pending,
        None if !seen.contains(id) => Poll::Failed(volume::wait_failed(
            id,
            format!(
                "no attachment to {instance} appeared within {:?} of AttachVolume",
                stuck_after(run)
            ),
        )),
        _ => Poll::Failed(volume::wait_failed(
            id,
            "the attachment went away (the instance refused the volume)",
        )),
    }
}

/// How long an attachment may stay `attaching`: at most the timeout.
fn stuck_after(run: &Run) -> std::time::Duration {
    run.cfg.stuck_after.min(run.cfg.timeout)
}

/// What the plan would do (`--check`), or found done (nothing to do).
fn describe(r: &mut Record, plan: &AttachPlan) -> Outcome {
    if let Some(a) = plan.attachment() {
        r.attached_as = Some(a.device.clone());
        r.adopted |= a.adopt.is_some();
    }
    let would = |m: String| Outcome::changed(State::Attached, m);
    match plan {
        AttachPlan::Attached(a) => Outcome::unchanged(
            State::Attached,
            format!("{} is attached to {} as {}", a.vol, a.instance, a.device),
        ),
        AttachPlan::Attach(a) => would(format!(
            "would attach {} to {} as {}",
            a.vol, a.instance, a.device
        )),
        AttachPlan::AttachAfterDetach(a) => would(format!(
            "would attach {} to {} as {} once its detach from there is over",
            a.vol, a.instance, a.device
        )),
        AttachPlan::Attaching(a) => would(format!(
            "would wait for {} to finish attaching to {} as {}",
            a.vol, a.instance, a.device
        )),
        AttachPlan::OnceCreated => would("would attach the volume once it is created".into()),
    }
}
