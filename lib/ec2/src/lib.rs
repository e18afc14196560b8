//! The `ec2` and `euca` providers: EBS volumes through `aws-sdk-ec2`.
//!
//! Eucalyptus speaks the EC2 API at another endpoint, so both are this one
//! provider with a different [`Config::kind`] and endpoint.
//!
//! What the API does not check, this provider checks before calling it (the
//! moto emulator checks none of it, and real EC2 reports some of it only
//! after the fact): a volume attached to another instance, a volume in
//! another zone than its instance, a device name already in use.
//!
//! Whose a volume is, the tags say ([`owner`]): a volume tagged for another
//! deployment or node is never used, one made by hand is adopted (tagged)
//! only on the rules there. A volume is detached from the node itself
//! (`--self`) only when nothing uses its device here, and from elsewhere
//! only with the node's proof that it let go
//! ([`appscale_persist::release`]), or `--force`.
//!
//! Waiting is batched: every poll is one `DescribeVolumes` call for all the
//! volumes still pending, under one deadline ([`Config::timeout`]). Attach
//! and detach calls run concurrently, at most [`Config::concurrency`] at a
//! time. Throttling and 5xx answers are retried by the SDK's standard retry
//! configuration, and a poll that still fails is tried again until the
//! deadline; any other error becomes the record's `error`, with the AWS
//! error code as its code.
#![deny(missing_docs)]

mod api;
mod devices;
pub mod owner;

use appscale_persist::codes;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use appscale_persist::discover::{self};
use appscale_persist::log;
use appscale_persist::provider::{DiskStatus, Provider, Size, disk_of};
use appscale_persist::record::{ProviderKind, Record, State};
use appscale_persist::release::{self, FORCE_RISK, identity};
use appscale_persist::step::{Ctx, Failure, Outcome, StepResult};
use appscale_persist::wait::WaitParams;
use aws_sdk_ec2::types::{Volume, VolumeAttachmentState};

use api::Api;
use owner::{Found, Owner};

/// How the provider reaches EC2 and what it creates.
#[derive(Debug, Clone)]
pub struct Config {
    /// `Ec2` or `Euca`.
    pub kind: ProviderKind,
    /// API endpoint (Eucalyptus, or an emulator); otherwise the SDK's own
    /// resolution (`AWS_ENDPOINT_URL`, the region's endpoint).
    pub endpoint_url: Option<String>,
    /// Region; otherwise the SDK's chain, else derived from the zone.
    pub region: Option<String>,
    /// Named profile from the shared config files.
    pub profile: Option<String>,
    /// Instance for records that name none.
    pub instance: Option<String>,
    /// Running on the node itself (`--self`): instance id and zone come from
    /// IMDS (v2, else v1), attach finds the device here, and detach checks
    /// that nothing here uses it.
    pub on_node: bool,
    /// IMDS endpoint override (otherwise `AWS_EC2_METADATA_SERVICE_ENDPOINT`
    /// or the link-local default).
    pub imds_endpoint: Option<String>,
    /// Zone for records that name none.
    pub zone: Option<String>,
    /// Size of new volumes.
    pub size: Size,
    /// Type of new volumes (`gp3`).
    pub volume_type: String,
    /// Encrypt new volumes.
    pub encrypted: bool,
    /// Deployment of records that name none (`deployment`): tags new
    /// volumes, keys their client tokens, and scopes Name-tag lookups.
    pub deployment: String,
    /// Detach without the node's proof that it let go of the volume (from
    /// elsewhere), or without finding its device (`--self`).
    pub force: bool,
    /// Send DetachVolume with `Force` (only when asked: the instance gets no
    /// chance to flush).
    pub ebs_force: bool,
    /// At most this many attach or detach calls at once.
    pub concurrency: usize,
    /// Deadline for waiting on attachments and detachments.
    pub timeout: Duration,
    /// An attachment still `attaching` after this long is given up: the
    /// volume is detached again and the record fails.
    pub stuck_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kind: ProviderKind::Ec2,
            endpoint_url: None,
            region: None,
            profile: None,
            instance: None,
            on_node: false,
            imds_endpoint: None,
            zone: None,
            size: Size(10 << 30),
            volume_type: "gp3".into(),
            encrypted: false,
            deployment: "appscale".into(),
            force: false,
            ebs_force: false,
            concurrency: 8,
            timeout: Duration::from_secs(300),
            stuck_after: Duration::from_secs(120),
        }
    }
}

/// Backoff between polls: quick first, as EBS attaches in seconds.
fn poll_params(timeout: Duration) -> WaitParams {
    WaitParams {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
        timeout,
    }
}

/// The EC2 provider.
pub struct Ec2 {
    cfg: Config,
    rt: tokio::runtime::Runtime,
    api: Option<Arc<Api>>,
    me: Option<identity::Ec2Instance>,
}

/// A record's place in an attach or detach: the volume and instance.
struct Job {
    /// Index of the record.
    i: usize,
    vol: String,
    instance: String,
}

impl Ec2 {
    /// A provider with `cfg`; nothing is contacted until the first call.
    pub fn new(cfg: Config) -> Result<Ec2, Failure> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::new(codes::INTERNAL, e.to_string()))?;
        Ok(Ec2 {
            cfg,
            rt,
            api: None,
            me: None,
        })
    }

    /// The API client, built on first use; `zone_hint` supplies the region
    /// when nothing else does.
    fn api(&mut self, zone_hint: Option<&str>) -> Result<Arc<Api>, Failure> {
        if let Some(a) = &self.api {
            return Ok(a.clone());
        }
        let api = Arc::new(self.rt.block_on(Api::connect(&self.cfg, zone_hint))?);
        self.api = Some(api.clone());
        Ok(api)
    }

    /// This node's instance id and zone, from IMDS (`--self`).
    fn me(&mut self) -> Result<identity::Ec2Instance, Failure> {
        if let Some(m) = &self.me {
            return Ok(m.clone());
        }
        let m = identity::ec2(self.cfg.imds_endpoint.as_deref())
            .map_err(|e| Failure::new(codes::METADATA, format!("--self: {e}")))?;
        self.me = Some(m.clone());
        Ok(m)
    }

    /// Fills in each record's instance and zone from flags or IMDS. With
    /// `--self`, a record naming another instance is refused.
    fn fill_instances(&mut self, records: &mut [Record]) -> Vec<Result<(), Failure>> {
        let me = if self.cfg.on_node {
            Some(self.me())
        } else {
            None
        };
        records
            .iter_mut()
            .map(|r| {
                match (&me, &r.instance) {
                    (Some(Err(f)), _) => return Err(f.clone()),
                    (Some(Ok(m)), Some(i)) if *i != m.id => {
                        return Err(Failure::new(
                            codes::OTHER_INSTANCE,
                            format!(
                                "the record is for instance {i}, but this is {} (--self): run it there",
                                m.id
                            ),
                        ));
                    }
                    (Some(Ok(m)), None) => r.instance = Some(m.id.clone()),
                    (None, None) => r.instance = self.cfg.instance.clone(),
                    _ => {}
                }
                if r.zone.is_none() {
                    r.zone = match &me {
                        Some(Ok(m)) => Some(m.zone.clone()),
                        _ => self.cfg.zone.clone(),
                    };
                }
                Ok(())
            })
            .collect()
    }

    fn zone_hint(&self, records: &[Record]) -> Option<String> {
        records
            .iter()
            .find_map(|r| r.zone.clone())
            .or_else(|| self.cfg.zone.clone())
    }

    /// The deployment a record belongs to.
    fn deployment_of(cfg: &Config, r: &Record) -> String {
        r.deployment
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(&cfg.deployment)
            .to_string()
    }

    /// Finds each record's volume, by id (`vol-...`) or by Name tag, and
    /// whose it is ([`owner`]); two records that turn out to name one
    /// volume both fail. Missing volumes are failures `no-such-volume`.
    async fn resolve(api: &Api, cfg: &Config, records: &[Record]) -> Vec<Result<Found, Failure>> {
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for r in records {
            match volume_key(r) {
                Ok(Key::Id(id)) => ids.push(id),
                Ok(Key::Name(n)) => names.push(n),
                Err(_) => {}
            }
        }
        let by_id = api.volumes_by_id(&ids).await;
        let by_name = api.volumes_by_name(&names).await;
        let mut out: Vec<Result<Found, Failure>> = records
            .iter()
            .map(|r| {
                let deployment = Ec2::deployment_of(cfg, r);
                let node = r.node.as_deref();
                match volume_key(r)? {
                    Key::Id(id) => match &by_id {
                        Err(f) => Err(f.clone()),
                        Ok(m) => match m.get(&id) {
                            None => Err(no_such_volume(&id)),
                            Some(v) => owner::by_id(v.clone(), &deployment, node).map(|mut f| {
                                // An id a tool found by the record's Name
                                // tag: the operator chose the name, not
                                // this volume.
                                if f.owner == Owner::HandMadeById
                                    && !r.disk.as_deref().is_some_and(|d| d.starts_with("vol-"))
                                {
                                    f.owner = Owner::HandMadeByName;
                                }
                                f
                            }),
                        },
                    },
                    Key::Name(n) => match &by_name {
                        Err(f) => Err(f.clone()),
                        Ok(m) => owner::by_name(
                            &n,
                            m.get(&n).map(Vec::as_slice).unwrap_or_default(),
                            &deployment,
                            node,
                        ),
                    },
                }
            })
            .collect();
        // One volume, one record.
        let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, f) in out.iter().enumerate() {
            if let Ok(f) = f {
                seen.entry(f.vol.volume_id().unwrap_or_default().to_string())
                    .or_default()
                    .push(i);
            }
        }
        for (vol, idx) in seen.into_iter().filter(|(_, idx)| idx.len() > 1) {
            let which: Vec<String> = idx
                .iter()
                .map(|&i| records[i].disk.clone().unwrap_or_default())
                .collect();
            for i in idx {
                out[i] = Err(Failure::new(
                    codes::DUPLICATE_DISK,
                    format!(
                        "records {} all name volume {vol}: one volume belongs to one record; nothing was done to it",
                        which.join(", ")
                    ),
                ));
            }
        }
        out
    }
}

/// How a record names its volume.
enum Key {
    Id(String),
    Name(String),
}

fn volume_key(r: &Record) -> Result<Key, Failure> {
    if let Some(id) = r.disk_id.as_deref() {
        return Ok(Key::Id(id.to_string()));
    }
    let disk = disk_of(r)?;
    Ok(if disk.starts_with("vol-") {
        Key::Id(disk.to_string())
    } else {
        Key::Name(disk.to_string())
    })
}

fn no_such_volume(id: &str) -> Failure {
    Failure::new(codes::NO_SUCH_DISK, format!("no such volume: {id}"))
}

/// Records what the API says about a volume on the record.
fn note_volume(r: &mut Record, v: &Volume) {
    if let Some(id) = v.volume_id() {
        r.disk_id = Some(id.into());
    }
    if let Some(gib) = v.size() {
        r.size_bytes = Some((gib.max(0) as u64) << 30);
    }
    if r.zone.is_none() {
        r.zone = v.availability_zone().map(str::to_string);
    }
}

/// The attachment of `v` to `instance`, if any.
fn attachment_to<'a>(
    v: &'a Volume,
    instance: &str,
) -> Option<&'a aws_sdk_ec2::types::VolumeAttachment> {
    v.attachments()
        .iter()
        .find(|a| a.instance_id() == Some(instance))
}

/// Live attachments of `v` (not `detached`).
fn live_attachments(v: &Volume) -> Vec<&aws_sdk_ec2::types::VolumeAttachment> {
    v.attachments()
        .iter()
        .filter(|a| !matches!(a.state(), Some(VolumeAttachmentState::Detached)))
        .collect()
}

/// Adopts the hand-made volumes of `adopt` (record index, volume): tags
/// each for its record's deployment and node and marks the record; a
/// failure fails its record.
async fn adopt_all(
    api: &Api,
    cfg: &Config,
    records: &mut [Record],
    adopt: &[(usize, String)],
    out: &mut [StepResult],
) {
    for (i, vol) in adopt {
        let r = &mut records[*i];
        if out[*i].is_err() {
            continue;
        }
        let deployment = Ec2::deployment_of(cfg, r);
        match api.adopt(vol, &deployment, r.node.as_deref()).await {
            Ok(()) => {
                r.adopted = true;
                log::info(format_args!(
                    "{}: adopted {vol}, made by hand: tagged for deployment {deployment}",
                    r.label()
                ));
            }
            Err(f) => out[*i] = Err(f),
        }
    }
}

/// The time left of `timeout` since `started`.
fn left(timeout: Duration, started: Instant) -> Duration {
    timeout.saturating_sub(started.elapsed())
}

impl Provider for Ec2 {
    fn kind(&self) -> ProviderKind {
        self.cfg.kind
    }

    fn create(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let fills = self.fill_instances(records);
        let api = match self.api(self.zone_hint(records).as_deref()) {
            Ok(a) => a,
            Err(f) => return records.iter().map(|_| Err(f.clone())).collect(),
        };
        let cfg = self.cfg.clone();
        self.rt.block_on(async {
            let found = Ec2::resolve(&api, &cfg, records).await;
            // Zones of the instances, for records with no zone of their own.
            let instances: Vec<String> = records.iter().filter(|r| r.zone.is_none()).filter_map(|r| r.instance.clone()).collect();
            let inst = api.instances(&instances).await;
            let mut out = Vec::new();
            let mut created: Vec<(usize, String)> = Vec::new();
            let mut adopt: Vec<(usize, String)> = Vec::new();
            for (i, (r, (fill, found))) in records.iter_mut().zip(fills.into_iter().zip(found)).enumerate() {
                if let Err(f) = fill {
                    out.push(Err(f));
                    continue;
                }
                if r.zone.is_none() && let Some(id) = &r.instance {
                    match &inst {
                        Ok(m) => r.zone = m.get(id).map(|i| i.zone.clone()),
                        // The instance's zone is unknown because the API
                        // said no: say that, not "no zone".
                        Err(f) => {
                            out.push(Err(f.clone()));
                            continue;
                        }
                    }
                }
                match found {
                    Ok(f) => {
                        let v = &f.vol;
                        let vol = v.volume_id().unwrap_or("?").to_string();
                        if let (Some(want), Some(have)) = (r.zone.as_deref(), v.availability_zone())
                            && want != have {
                                out.push(Err(zone_mismatch(&vol, have, want)));
                                continue;
                            }
                        if let Err(e) = owner::check_adoptable(&f, r.zone.as_deref()) {
                            out.push(Err(e));
                            continue;
                        }
                        note_volume(r, v);
                        let zone = v.availability_zone().unwrap_or("?");
                        if f.owner.hand_made() {
                            let deployment = Ec2::deployment_of(&cfg, r);
                            if cx.check {
                                r.adopted = true;
                            } else {
                                adopt.push((i, vol.clone()));
                            }
                            out.push(Ok(Outcome::changed(State::Created, format!("{} {vol} in {zone}, made by hand, for deployment {deployment}", if cx.check { "would adopt" } else { "adopted" }))));
                        } else {
                            out.push(Ok(Outcome::unchanged(State::Created, format!("volume {vol} exists in {zone}"))));
                        }
                    }
                    Err(f) if f.code == codes::NO_SUCH_DISK && matches!(volume_key(r), Ok(Key::Name(_))) => {
                        let Some(zone) = r.zone.clone() else {
                            out.push(Err(Failure::new(codes::NO_ZONE, "no zone to create the volume in: set `zone` in the AppScalefile, or pass --zone or --instance")));
                            continue;
                        };
                        let name = r.disk.clone().unwrap_or_default();
                        if cx.check {
                            out.push(Ok(Outcome::changed(State::Created, format!("would create a {} {} volume Name={name} in {zone}", cfg.size, cfg.volume_type))));
                            continue;
                        }
                        let deployment = Ec2::deployment_of(&cfg, r);
                        match api.create_volume(&cfg, &deployment, &name, r.node.as_deref().unwrap_or(""), &zone).await {
                            Ok(id) => {
                                r.disk_id = Some(id.clone());
                                created.push((i, id));
                                out.push(Ok(Outcome::changed(State::Created, String::new())));
                            }
                            Err(f) => out.push(Err(f)),
                        }
                    }
                    Err(f) => out.push(Err(f)),
                }
            }
            adopt_all(&api, &cfg, records, &adopt, &mut out).await;
            // Wait, batched, for new volumes to become available.
            if !created.is_empty() {
                let ids: Vec<String> = created.iter().map(|(_, id)| id.clone()).collect();
                let ready = api.wait_volumes(&ids, poll_params(cfg.timeout), |v| {
                    match v.state().map(|s| s.as_str()) {
                        Some("available") => Some(Ok(())),
                        Some("error") => Some(Err("the volume went into state `error`".to_string())),
                        _ => None,
                    }
                }).await;
                for (i, id) in created {
                    let r = &mut records[i];
                    out[i] = match ready.get(&id) {
                        Some(Ok(v)) => {
                            note_volume(r, v);
                            Ok(Outcome::changed(State::Created, format!("created volume {id} Name={} ({} GiB {}) in {}", r.disk.as_deref().unwrap_or(""), v.size().unwrap_or(0), cfg.volume_type, v.availability_zone().unwrap_or("?"))))
                        }
                        Some(Err(f)) => Err(f.clone()),
                        None => Err(Failure::new(codes::TIMEOUT, format!("volume {id} was not available within {:?}", cfg.timeout))),
                    };
                }
            }
            out
        })
    }

    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
        let api = match self.api(self.zone_hint(records).as_deref()) {
            Ok(a) => a,
            Err(f) => return records.iter().map(|_| Err(f.clone())).collect(),
        };
        let cfg = self.cfg.clone();
        self.rt
            .block_on(Ec2::resolve(&api, &cfg, records))
            .into_iter()
            .map(|f| {
                let v = f?.vol;
                Ok(DiskStatus {
                    id: v.volume_id().unwrap_or_default().to_string(),
                    zone: v.availability_zone().map(str::to_string),
                    size: v.size().map(|g| (g as u64) << 30),
                    attached_to: live_attachments(&v)
                        .iter()
                        .filter_map(|a| a.instance_id().map(str::to_string))
                        .collect(),
                })
            })
            .collect()
    }

    fn attach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let started = Instant::now();
        let fills = self.fill_instances(records);
        let api = match self.api(self.zone_hint(records).as_deref()) {
            Ok(a) => a,
            Err(f) => return records.iter().map(|_| Err(f.clone())).collect(),
        };
        let cfg = self.cfg.clone();
        let mut out: Vec<StepResult> = self.rt.block_on(async {
            let found = Ec2::resolve(&api, &cfg, records).await;
            let instances: Vec<String> = records.iter().filter_map(|r| r.instance.clone()).collect();
            let inst = match api.instances(&instances).await {
                Ok(m) => m,
                Err(f) => return records.iter().map(|_| Err(f.clone())).collect(),
            };
            // Device names in use per instance, growing as we assign.
            let mut in_use: HashMap<String, HashSet<String>> =
                inst.iter().map(|(id, i)| (id.clone(), i.devices.clone())).collect();
            let mut out: Vec<StepResult> = Vec::new();
            // To attach now (device name given), to wait for (attaching
            // already), or to attach once a detach in progress is over.
            let mut calls: Vec<(Job, String)> = Vec::new();
            let mut after_detach: Vec<(Job, String)> = Vec::new();
            let mut adopt: Vec<(usize, String)> = Vec::new();
            for (i, (r, (fill, found))) in records.iter_mut().zip(fills.into_iter().zip(found)).enumerate() {
                let res = (|| {
                    fill?;
                    let f = match found {
                        Err(f) if f.code == codes::NO_SUCH_DISK && cx.check && r.is_check() => {
                            return Ok(Some(Outcome::changed(State::Attached, "would attach the volume once it is created")));
                        }
                        other => other?,
                    };
                    // Attached again, the disk is in use again: an earlier
                    // proof that the node let go of it no longer holds.
                    release::forget(r);
                    let v = &f.vol;
                    note_volume(r, v);
                    let vol = v.volume_id().unwrap_or_default().to_string();
                    let Some(instance) = r.instance.clone() else {
                        return Err(Failure::new(codes::NO_INSTANCE, "no instance to attach to: give the record an `instance`, or pass --instance or --self"));
                    };
                    let Some(info) = inst.get(&instance) else {
                        return Err(Failure::new(codes::NO_SUCH_INSTANCE, format!("no such instance: {instance}")));
                    };
                    owner::check_adoptable(&f, Some(&info.zone))?;
                    let here = attachment_to(v, &instance);
                    if let Some(a) = here
                        && matches!(a.state(), Some(VolumeAttachmentState::Attached)) {
                            let dev = a.device().unwrap_or_default().to_string();
                            r.attached_as = Some(dev.clone());
                            if f.owner.hand_made() && !cx.check {
                                adopt.push((i, vol.clone()));
                            }
                            return Ok(Some(Outcome::unchanged(State::Attached, format!("{vol} is attached to {instance} as {dev}"))));
                        }
                    if let Some(a) = live_attachments(v).into_iter().find(|a| a.instance_id() != Some(instance.as_str())) {
                        return Err(Failure::new(
                            codes::ATTACHED_ELSEWHERE,
                            format!("{vol} is attached to {} as {}: detach it there first", a.instance_id().unwrap_or("?"), a.device().unwrap_or("?")),
                        ));
                    }
                    let vz = v.availability_zone().unwrap_or_default();
                    if vz != info.zone {
                        return Err(zone_mismatch(&vol, vz, &format!("{} (the zone of {instance})", info.zone)));
                    }
                    let job = Job { i, vol: vol.clone(), instance: instance.clone() };
                    let detaching = here.is_some_and(|a| matches!(a.state(), Some(VolumeAttachmentState::Detaching)));
                    if let Some(a) = here && !detaching {
                        // Attaching already (an interrupted earlier run): just wait.
                        r.attached_as = Some(a.device().unwrap_or_default().into());
                        calls.push((job, String::new()));
                        return Ok(None);
                    }
                    let used = in_use.entry(instance.clone()).or_default();
                    let Some(dev) = devices::free_name(used) else {
                        return Err(Failure::new(codes::NO_DEVICE_NAME, format!("{instance} has no free device name from /dev/sdf to /dev/sdz")));
                    };
                    used.insert(devices::normalize(&dev));
                    if f.owner.hand_made() {
                        if cx.check {
                            r.adopted = true;
                        } else {
                            adopt.push((i, vol.clone()));
                        }
                    }
                    if cx.check {
                        let after = if detaching { " once its detach from there is over" } else { "" };
                        return Ok(Some(Outcome::changed(State::Attached, format!("would attach {vol} to {instance} as {dev}{after}"))));
                    }
                    r.attached_as = Some(dev.clone());
                    if detaching {
                        log::info(format_args!("{}: {vol} is still detaching from {instance}: waiting for that to finish", r.label()));
                        after_detach.push((job, dev));
                    } else {
                        calls.push((job, dev));
                    }
                    Ok(None)
                })();
                out.push(match res {
                    Ok(Some(o)) => Ok(o),
                    Ok(None) => Ok(Outcome::changed(State::Attached, String::new())),
                    Err(f) => Err(f),
                });
            }
            adopt_all(&api, &cfg, records, &adopt, &mut out).await;
            // A detach in progress is waited out, then the volume attached.
            if !after_detach.is_empty() {
                let ids: Vec<String> = after_detach.iter().map(|(j, _)| j.vol.clone()).collect();
                let targets: HashMap<String, String> = after_detach.iter().map(|(j, _)| (j.vol.clone(), j.instance.clone())).collect();
                let gone = api.wait_volumes(&ids, poll_params(left(cfg.timeout, started)), |v| {
                    let instance = targets.get(v.volume_id().unwrap_or_default())?;
                    let live = live_attachments(v);
                    if live.is_empty() {
                        return Some(Ok(()));
                    }
                    live.iter()
                        .find(|a| a.instance_id() != Some(instance.as_str()) || !matches!(a.state(), Some(VolumeAttachmentState::Detaching)))
                        .map(|a| Err(format!("while it was detaching, it became {} on {}", a.state().map(|s| s.as_str()).unwrap_or("?"), a.instance_id().unwrap_or("?"))))
                }).await;
                for (job, dev) in after_detach {
                    match gone.get(&job.vol) {
                        Some(Ok(_)) => calls.push((job, dev)),
                        Some(Err(f)) => out[job.i] = Err(f.clone()),
                        None => out[job.i] = Err(Failure::new(codes::TIMEOUT, format!("{} was still detaching from {} after {:?}", job.vol, job.instance, cfg.timeout))),
                    }
                }
            }
            let calls: Vec<(Job, String)> = calls.into_iter().filter(|(j, _)| out[j.i].is_ok()).collect();
            // Attach concurrently, then wait for all in one poll loop.
            let requests: Vec<(String, String, String)> = calls.iter().filter(|c| !c.1.is_empty()).map(|(j, d)| (j.vol.clone(), j.instance.clone(), d.clone())).collect();
            let sent = api.attach_all(requests, cfg.concurrency).await;
            let mut waiting: Vec<Job> = Vec::new();
            for (job, dev) in calls {
                match (dev.is_empty(), sent.get(&job.vol)) {
                    (false, Some(Err(f))) => out[job.i] = Err(f.clone()),
                    _ => waiting.push(job),
                }
            }
            let ids: Vec<String> = waiting.iter().map(|j| j.vol.clone()).collect();
            let targets: HashMap<String, String> = waiting.iter().map(|j| (j.vol.clone(), j.instance.clone())).collect();
            let stuck_after = cfg.stuck_after;
            let done = api.wait_volumes(&ids, poll_params(left(cfg.timeout, started)), |v| {
                let instance = targets.get(v.volume_id().unwrap_or_default())?;
                match attachment_to(v, instance).and_then(|a| a.state()) {
                    Some(VolumeAttachmentState::Attached) => Some(Ok(())),
                    Some(VolumeAttachmentState::Attaching | VolumeAttachmentState::Busy) => {
                        (started.elapsed() >= stuck_after).then(|| Err(format!("still attaching after {stuck_after:?}")))
                    }
                    None | Some(_) => Some(Err("the attachment went away (the instance refused the volume)".to_string())),
                }
            }).await;
            for Job { i, vol, instance } in waiting {
                let r = &mut records[i];
                let dev = r.attached_as.as_deref().unwrap_or("?").to_string();
                let adopted = if r.adopted { " (adopted)" } else { "" };
                out[i] = match done.get(&vol) {
                    Some(Ok(v)) => {
                        note_volume(r, v);
                        Ok(Outcome::changed(State::Attached, format!("attached {vol}{adopted} to {instance} as {dev}")))
                    }
                    Some(Err(f)) if f.message.contains("still attaching") => {
                        // Give the volume back rather than leave it half-attached.
                        let undo = api.detach(&vol, &instance, false).await;
                        let undo = match undo { Ok(()) => "detached it again".to_string(), Err(e) => format!("detaching it again failed too: {}", e.message) };
                        Err(Failure::new(codes::STUCK_ATTACHING, format!("{vol} {} on {instance}; {undo}", f.message)))
                    }
                    Some(Err(f)) => Err(f.clone()),
                    None => Err(Failure::new(codes::TIMEOUT, format!("{vol} was not attached to {instance} within {:?}", cfg.timeout))),
                };
            }
            out
        });
        // On the node, find the device the volume became.
        if self.cfg.on_node && !cx.check {
            for (r, o) in records.iter_mut().zip(out.iter_mut()) {
                if let Ok(outcome) = o {
                    match discover::find(r, discover::DEVICE_WAIT) {
                        Ok(p) => {
                            outcome
                                .message
                                .push_str(&format!(", device {}", p.display()));
                            r.device = Some(p.display().to_string());
                        }
                        Err(f) => *o = Err(f),
                    }
                }
            }
        }
        out
    }

    fn detach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let fills = self.fill_instances(records);
        let api = match self.api(self.zone_hint(records).as_deref()) {
            Ok(a) => a,
            Err(f) => return records.iter().map(|_| Err(f.clone())).collect(),
        };
        let cfg = self.cfg.clone();
        let on_node = self.cfg.on_node;
        self.rt.block_on(async {
            let found = Ec2::resolve(&api, &cfg, records).await;
            let mut out: Vec<StepResult> = Vec::new();
            // To detach (instance given), or to wait for (detaching already).
            let mut calls: Vec<(usize, String, String)> = Vec::new();
            for (i, (r, (fill, found))) in records
                .iter_mut()
                .zip(fills.into_iter().zip(found))
                .enumerate()
            {
                let res = (|| {
                    fill?;
                    let f = found?;
                    let v = &f.vol;
                    note_volume(r, v);
                    let vol = v.volume_id().unwrap_or_default().to_string();
                    let live = live_attachments(v);
                    let Some(a) = live.first() else {
                        return Ok(Some(Outcome::unchanged(
                            State::Detached,
                            format!("{vol} is not attached"),
                        )));
                    };
                    let attached_to = a.instance_id().unwrap_or_default().to_string();
                    if let Some(want) = &r.instance
                        && *want != attached_to
                    {
                        return Err(Failure::new(
                            codes::ATTACHED_ELSEWHERE,
                            format!(
                                "{vol} is attached to {attached_to}, not {want}: leaving it alone"
                            ),
                        ));
                    }
                    if f.owner == Owner::HandMadeByName {
                        owner::check_adoptable(&f, None)?;
                    }
                    r.attached_as = Some(a.device().unwrap_or_default().into());
                    if matches!(a.state(), Some(VolumeAttachmentState::Detaching)) {
                        // Someone asked already: only wait.
                        calls.push((i, vol, String::new()));
                        return Ok(None);
                    }
                    // Never detach under a live filesystem: on the node,
                    // look; from elsewhere, the node must have said so.
                    let mut forced = "";
                    if on_node {
                        release::check_here(r, cfg.force)?;
                    } else {
                        if r.device.is_some() {
                            discover::refuse_if_mounted_here(r)?;
                        }
                        if let Err(e) = release::require(r, &vol, &attached_to, a.device()) {
                            if !cfg.force {
                                return Err(e);
                            }
                            log::warn(format_args!(
                                "{}: detaching {vol} from {attached_to} without proof that the node let go of it (--force): {FORCE_RISK}",
                                r.label()
                            ));
                            forced = " (forced: no proof that the node let go of it)";
                        }
                    }
                    if cx.check {
                        return Ok(Some(Outcome::changed(
                            State::Detached,
                            format!("would detach {vol} from {attached_to}{forced}"),
                        )));
                    }
                    calls.push((i, vol, attached_to));
                    Ok(None)
                })();
                out.push(match res {
                    Ok(Some(o)) => Ok(o),
                    Ok(None) => Ok(Outcome::changed(State::Detached, String::new())),
                    Err(f) => Err(f),
                });
            }
            let requests: Vec<(String, String)> = calls
                .iter()
                .filter(|c| !c.2.is_empty())
                .map(|(_, v, i)| (v.clone(), i.clone()))
                .collect();
            let sent = api.detach_all(requests, cfg.ebs_force, cfg.concurrency).await;
            let mut waiting = Vec::new();
            for (i, vol, instance) in calls {
                match (instance.is_empty(), sent.get(&vol)) {
                    (false, Some(Err(f))) => out[i] = Err(f.clone()),
                    _ => waiting.push((i, vol, instance)),
                }
            }
            let ids: Vec<String> = waiting.iter().map(|(_, v, _)| v.clone()).collect();
            let done = api
                .wait_volumes(&ids, poll_params(cfg.timeout), |v| {
                    live_attachments(v).is_empty().then_some(Ok(()))
                })
                .await;
            for (i, vol, instance) in waiting {
                out[i] = match done.get(&vol) {
                    Some(Ok(_)) => {
                        records[i].device = None;
                        Ok(Outcome::changed(
                            State::Detached,
                            format!(
                                "detached {vol} from {}",
                                if instance.is_empty() {
                                    "its instance".to_string()
                                } else {
                                    instance
                                }
                            ),
                        ))
                    }
                    Some(Err(f)) => Err(f.clone()),
                    None => Err(Failure::new(
                        codes::TIMEOUT,
                        format!("{vol} was not detached within {:?}", cfg.timeout),
                    )),
                };
            }
            out
        })
    }

    fn discover(&mut self, record: &Record) -> Result<PathBuf, Failure> {
        discover::find(record, discover::DEVICE_WAIT)
    }
}

fn zone_mismatch(vol: &str, have: &str, want: &str) -> Failure {
    Failure::new(
        codes::ZONE_MISMATCH,
        format!(
            "{vol} is in {have} but the instance is in {want}: EBS volumes attach only within their zone"
        ),
    )
}

/// Logs an API call at debug level.
pub(crate) fn trace(what: std::fmt::Arguments<'_>) {
    log::debug(what);
}
