//! The `gce` provider: Compute Engine persistent disks through the official
//! `google-cloud-compute-v1` crate.
//!
//! Credentials are Application Default Credentials (a key file in
//! `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file, or the metadata
//! server). Every mutating call carries a `requestId` derived from what it
//! does, so a retried call is not done twice, and every operation is waited
//! on under one deadline ([`Config::timeout`]); an operation that finishes
//! with an error fails the record with the operation's own error code.
//! Every API call is bounded by a timeout too: without credentials the
//! client would otherwise wait for ever before sending anything.
//!
//! Disks are attached with `deviceName` = the disk's name, so on the node the
//! disk is `/dev/disk/by-id/google-<name>`, found and checked by
//! [`appscale_persist::discover`].
//!
//! Whose a disk is, its labels say ([`owner`]). A disk is detached from the
//! node itself (`--self`) only when nothing uses its device there, and from
//! elsewhere only with the node's proof that it let go
//! ([`appscale_persist::release`]), or `--force`.
#![deny(missing_docs)]

mod api;
pub mod owner;

use appscale_persist::codes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use appscale_persist::discover;
use appscale_persist::log;
use appscale_persist::provider::{DiskStatus, Provider, Size, disk_of};
use appscale_persist::record::{ProviderKind, Record, State};
use appscale_persist::release::{self, FORCE_RISK, identity};
use appscale_persist::step::{Ctx, Failure, Outcome, StepResult};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use api::{Api, Where};
use owner::Owner;

/// How the provider reaches Compute Engine and what it creates.
#[derive(Debug, Clone)]
pub struct Config {
    /// API endpoint override (`http://127.0.0.1:PORT` for a fake).
    pub endpoint: Option<String>,
    /// Project id; otherwise `GOOGLE_CLOUD_PROJECT`, or the metadata server
    /// with `--self`.
    pub project: Option<String>,
    /// Zone for records that name none.
    pub zone: Option<String>,
    /// Instance for records that name none.
    pub instance: Option<String>,
    /// Running on the node (`--self`): instance, zone and project from the
    /// metadata server; attach finds the device here, and detach checks that
    /// nothing here uses it.
    pub on_node: bool,
    /// Metadata server (`host:port`) override; otherwise
    /// `APPSCALE_PERSIST_METADATA_ENDPOINT`, `GCE_METADATA_HOST` or
    /// `metadata.google.internal`.
    pub metadata_host: Option<String>,
    /// Size of new disks; when given, an existing disk of another size is an
    /// error [default for new disks: 10G].
    pub size: Option<Size>,
    /// Type of new disks; when given, an existing disk of another type is an
    /// error [default for new disks: pd-balanced].
    pub disk_type: Option<String>,
    /// Deployment of records that name none (`deployment`): labels new
    /// disks, and scopes which found disks may be used.
    pub deployment: String,
    /// Detach without the node's proof that it let go of the disk (from
    /// elsewhere), or without finding its device (`--self`).
    pub force: bool,
    /// At most this many calls at once.
    pub concurrency: usize,
    /// Deadline for each operation.
    pub timeout: Duration,
}

/// Opens the provider; nothing is contacted until the first call.
pub fn open(cfg: Config) -> Result<Box<dyn Provider>, Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(codes::INTERNAL, e.to_string()))?;
    Ok(Box::new(Gce {
        cfg,
        rt,
        api: None,
        me: None,
    }))
}

/// The GCE provider.
struct Gce {
    cfg: Config,
    rt: tokio::runtime::Runtime,
    api: Option<Arc<Api>>,
    me: Option<identity::GceInstance>,
}

/// Everything a record's disk is known by.
#[derive(Debug, Clone)]
struct Target {
    at: Where,
    disk: String,
    instance: Option<String>,
    /// The record's deployment and node, whose disk it must be.
    deployment: String,
    node: Option<String>,
    /// `--check` on a record an earlier `--check` step would have made.
    pending: bool,
    /// For a detach: the instance the disk is attached to, and its device
    /// name there.
    attached: Option<(String, String)>,
}

impl Gce {
    fn api(&mut self) -> Result<Arc<Api>, Failure> {
        if let Some(a) = &self.api {
            return Ok(a.clone());
        }
        let api = Arc::new(
            self.rt
                .block_on(Api::connect(self.cfg.endpoint.as_deref()))?,
        );
        self.api = Some(api.clone());
        Ok(api)
    }

    fn me(&mut self) -> Result<identity::GceInstance, Failure> {
        if let Some(m) = &self.me {
            return Ok(m.clone());
        }
        let m = identity::gce(self.cfg.metadata_host.as_deref())
            .map_err(|e| Failure::new(codes::METADATA, format!("--self: {e}")))?;
        self.me = Some(m.clone());
        Ok(m)
    }

    /// Project, zone, disk and instance of each record, from the record,
    /// the flags, the environment or the metadata server. With `--self`, a
    /// record naming another instance is refused; two records naming one
    /// disk both fail.
    fn targets(&mut self, records: &mut [Record], check: bool) -> Vec<Result<Target, Failure>> {
        let me = if self.cfg.on_node {
            Some(self.me())
        } else {
            None
        };
        let env_project = std::env::var("GOOGLE_CLOUD_PROJECT")
            .ok()
            .or_else(|| std::env::var("CLOUDSDK_CORE_PROJECT").ok());
        let mut out: Vec<Result<Target, Failure>> = records
            .iter_mut()
            .map(|r| {
                let me = match &me {
                    Some(Err(f)) => return Err(f.clone()),
                    Some(Ok(m)) => Some(m),
                    None => None,
                };
                let project = self
                    .cfg
                    .project
                    .clone()
                    .or_else(|| me.map(|m| m.project.clone()))
                    .or_else(|| env_project.clone());
                let Some(project) = project else {
                    return Err(Failure::new(
                        codes::NO_PROJECT,
                        "no Google Cloud project: pass --project or set GOOGLE_CLOUD_PROJECT",
                    ));
                };
                if r.zone.is_none() {
                    r.zone = self.cfg.zone.clone().or_else(|| me.map(|m| m.zone.clone()));
                }
                let Some(zone) = r.zone.clone() else {
                    return Err(Failure::new(
                        codes::NO_ZONE,
                        "no zone: set `zone` in the AppScalefile, or pass --zone",
                    ));
                };
                match (me, &r.instance) {
                    (Some(m), Some(i)) if *i != m.name => {
                        return Err(Failure::new(
                            codes::OTHER_INSTANCE,
                            format!(
                                "the record is for instance {i}, but this is {} (--self): run it there",
                                m.name
                            ),
                        ));
                    }
                    (Some(m), None) => r.instance = Some(m.name.clone()),
                    (None, None) => r.instance = self.cfg.instance.clone(),
                    _ => {}
                }
                let disk = disk_of(r)?.to_string();
                Ok(Target {
                    at: Where { project, zone },
                    disk,
                    instance: r.instance.clone(),
                    deployment: r
                        .deployment
                        .as_deref()
                        .filter(|s| !s.is_empty())
                        .unwrap_or(&self.cfg.deployment)
                        .to_string(),
                    node: r.node.clone(),
                    pending: check && r.is_check(),
                    attached: None,
                })
            })
            .collect();
        // One disk, one record.
        let mut seen: HashMap<(Where, String), Vec<usize>> = HashMap::new();
        for (i, t) in out.iter().enumerate() {
            if let Ok(t) = t {
                seen.entry((t.at.clone(), t.disk.clone()))
                    .or_default()
                    .push(i);
            }
        }
        for ((_, disk), idx) in seen.into_iter().filter(|(_, idx)| idx.len() > 1) {
            for i in idx {
                out[i] = Err(Failure::new(
                    codes::DUPLICATE_DISK,
                    format!(
                        "several records name disk {disk}: one disk belongs to one record; nothing was done to it"
                    ),
                ));
            }
        }
        out
    }

    /// Runs `f` for every target concurrently (bounded), in record order.
    fn each<T, F, Fut>(
        &mut self,
        targets: Vec<Result<Target, Failure>>,
        f: F,
    ) -> Vec<Result<T, Failure>>
    where
        T: Send + 'static,
        F: Fn(Arc<Api>, Target) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let api = match self.api() {
            Ok(a) => a,
            Err(e) => return targets.iter().map(|_| Err(e.clone())).collect(),
        };
        let sem = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        self.rt.block_on(async {
            let mut set = JoinSet::new();
            let mut out: Vec<Option<Result<T, Failure>>> = Vec::new();
            for (i, t) in targets.into_iter().enumerate() {
                out.push(None);
                match t {
                    Err(e) => out[i] = Some(Err(e)),
                    Ok(t) => {
                        let (sem, fut) = (sem.clone(), f(api.clone(), t));
                        set.spawn(async move {
                            let _permit = sem.acquire_owned().await;
                            (i, fut.await)
                        });
                    }
                }
            }
            while let Some(done) = set.join_next().await {
                match done {
                    Ok((i, r)) => out[i] = Some(r),
                    Err(e) => {
                        if let Some(slot) = out.iter_mut().find(|s| s.is_none()) {
                            *slot = Some(Err(Failure::new(codes::INTERNAL, e.to_string())));
                        }
                    }
                }
            }
            out.into_iter()
                .map(|o| o.unwrap_or_else(|| Err(Failure::new(codes::INTERNAL, "lost task"))))
                .collect()
        })
    }
}

/// What create found or did.
enum Created {
    Exists(api::DiskInfo),
    Made(api::DiskInfo),
    Adopted(api::DiskInfo),
    Would(String, bool),
}

/// What attach found or did.
enum Attached {
    Already(String),
    Done(String),
    Would(String),
}

fn note(r: &mut Record, info: &api::DiskInfo) {
    r.size_bytes = Some((info.size_gb.max(0) as u64) << 30);
}

/// The disk of `t`, checked to be its deployment's and node's; whether it
/// was made by hand (and may be adopted).
async fn owned(api: &Api, t: &Target) -> Result<Option<(api::DiskInfo, Owner)>, Failure> {
    match api.disk(&t.at, &t.disk).await? {
        None => Ok(None),
        Some(info) => {
            let o = owner::check(&info, &t.deployment, t.node.as_deref())?;
            Ok(Some((info, o)))
        }
    }
}

/// Adopts a hand-made disk: labels it for the target's deployment and node.
async fn adopt(api: &Api, t: &Target, timeout: Duration) -> Result<(), Failure> {
    api.adopt(
        &t.at,
        &t.disk,
        owner::labels(&t.deployment, t.node.as_deref()),
        timeout,
    )
    .await?;
    log::info(format_args!(
        "adopted disk {}, made by hand: labelled for deployment {}",
        t.disk, t.deployment
    ));
    Ok(())
}

impl Provider for Gce {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gce
    }

    fn create(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let targets = self.targets(records, cx.check);
        let (size, disk_type, timeout) =
            (self.cfg.size, self.cfg.disk_type.clone(), self.cfg.timeout);
        let results = self.each(targets, move |api, t| {
            let disk_type = disk_type.clone();
            async move {
                match owned(&api, &t).await? {
                    Some((info, o)) => {
                        if let Some(s) = size
                            && info.size_gb != s.gib() as i64
                        {
                            return Err(Failure::new(
                                codes::SIZE_MISMATCH,
                                format!(
                                    "disk {} exists with {} GB, not {} GB",
                                    t.disk,
                                    info.size_gb,
                                    s.gib()
                                ),
                            ));
                        }
                        if let Some(want) = &disk_type
                            && info.disk_type != *want
                        {
                            return Err(Failure::new(
                                codes::TYPE_MISMATCH,
                                format!(
                                    "disk {} exists with type {}, not {want}",
                                    t.disk, info.disk_type
                                ),
                            ));
                        }
                        if o == Owner::HandMade {
                            owner::check_adoptable(&info, o)?;
                            if cx.check {
                                return Ok(Created::Would(
                                    format!(
                                        "would adopt disk {}, made by hand, for deployment {}",
                                        info.describe(),
                                        t.deployment
                                    ),
                                    true,
                                ));
                            }
                            adopt(&api, &t, timeout).await?;
                            return Ok(Created::Adopted(info));
                        }
                        Ok(Created::Exists(info))
                    }
                    None => {
                        let size = size.unwrap_or(Size(10 << 30));
                        let disk_type = disk_type.unwrap_or_else(|| "pd-balanced".into());
                        if cx.check {
                            return Ok(Created::Would(
                                format!(
                                    "would create disk {} ({} GB {disk_type}) in {}",
                                    t.disk,
                                    size.gib(),
                                    t.at.zone
                                ),
                                false,
                            ));
                        }
                        let labels = owner::labels(&t.deployment, t.node.as_deref());
                        let op = api
                            .insert_disk(&t.at, &t.disk, size.gib() as i64, &disk_type, labels)
                            .await?;
                        api.wait(&t.at, op, timeout).await?;
                        let info = api.disk(&t.at, &t.disk).await?.ok_or_else(|| {
                            Failure::new(
                                codes::NO_SUCH_DISK,
                                format!("disk {} vanished after its creation", t.disk),
                            )
                        })?;
                        Ok(Created::Made(info))
                    }
                }
            }
        });
        records
            .iter_mut()
            .zip(results)
            .map(|(r, res)| match res? {
                Created::Exists(i) => {
                    note(r, &i);
                    Ok(Outcome::unchanged(
                        State::Created,
                        format!("disk {}", i.describe()),
                    ))
                }
                Created::Made(i) => {
                    note(r, &i);
                    Ok(Outcome::changed(
                        State::Created,
                        format!("created disk {}", i.describe()),
                    ))
                }
                Created::Adopted(i) => {
                    note(r, &i);
                    r.adopted = true;
                    Ok(Outcome::changed(
                        State::Created,
                        format!("adopted disk {}, made by hand", i.describe()),
                    ))
                }
                Created::Would(m, adopting) => {
                    if adopting {
                        r.adopted = true;
                    }
                    Ok(Outcome::changed(State::Created, m))
                }
            })
            .collect()
    }

    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
        let mut recs = records.to_vec();
        let targets = self.targets(&mut recs, false);
        self.each(targets, |api, t| async move {
            let (i, _) = owned(&api, &t).await?.ok_or_else(|| no_such_disk(&t))?;
            Ok(DiskStatus {
                id: i.name,
                zone: Some(i.zone),
                size: Some((i.size_gb as u64) << 30),
                attached_to: i.users,
            })
        })
    }

    fn attach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let targets = self.targets(records, cx.check);
        let timeout = self.cfg.timeout;
        let results = self.each(targets, move |api, t| async move {
            let Some(instance) = t.instance.clone() else {
                return Err(Failure::new(codes::NO_INSTANCE, "no instance to attach to: give the record an `instance`, or pass --instance or --self"));
            };
            let Some((info, o)) = owned(&api, &t).await? else {
                if t.pending {
                    let would = Attached::Would(format!("would attach disk {} to {instance} once it is created", t.disk));
                    return Ok((None, t.disk.clone(), would, false));
                }
                return Err(no_such_disk(&t));
            };
            owner::check_adoptable(&info, o)?;
            let adopting = o == Owner::HandMade;
            if info.users.contains(&instance) {
                let inst = api.instance(&t.at, &instance).await?;
                let dev = inst.device_of(&t.disk).unwrap_or_else(|| t.disk.clone());
                return Ok((Some(info), dev, Attached::Already(format!("disk {} is attached to {instance}", t.disk)), false));
            }
            if let Some(other) = info.users.first() {
                return Err(Failure::new(codes::ATTACHED_ELSEWHERE, format!("disk {} is in use by {other}: detach it there first", t.disk)));
            }
            // The instance must exist (and be in this zone) before we ask.
            api.instance(&t.at, &instance).await?;
            if cx.check {
                return Ok((Some(info), t.disk.clone(), Attached::Would(format!("would attach disk {} to {instance}", t.disk)), adopting));
            }
            if adopting {
                adopt(&api, &t, timeout).await?;
            }
            let op = api.attach(&t.at, &instance, &t.disk).await?;
            api.wait(&t.at, op, timeout).await?;
            let adopted = if adopting { " (adopted)" } else { "" };
            Ok((Some(info), t.disk.clone(), Attached::Done(format!("attached disk {}{adopted} to {instance} as device {}", t.disk, t.disk)), adopting))
        });
        let on_node = self.cfg.on_node && !cx.check;
        records
            .iter_mut()
            .zip(results)
            .map(|(r, res)| {
                let (info, dev, what, adopted) = res?;
                if let Some(info) = &info {
                    note(r, info);
                }
                if adopted {
                    r.adopted = true;
                }
                // Attached again, the disk is in use again.
                release::forget(r);
                r.attached_as = Some(dev);
                let mut outcome = match what {
                    Attached::Already(m) => Outcome::unchanged(State::Attached, m),
                    Attached::Done(m) | Attached::Would(m) => Outcome::changed(State::Attached, m),
                };
                if on_node {
                    let p = discover::find(r, discover::DEVICE_WAIT)?;
                    outcome
                        .message
                        .push_str(&format!(", device {}", p.display()));
                    r.device = Some(p.display().to_string());
                }
                Ok(outcome)
            })
            .collect()
    }

    fn detach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let targets = self.targets(records, cx.check);
        let timeout = self.cfg.timeout;
        // What the cloud says: who uses each disk, as which device.
        let found = self.each(targets.clone(), |api, t| async move {
            let (info, o) = owned(&api, &t).await?.ok_or_else(|| no_such_disk(&t))?;
            let Some(user) = info.users.first().cloned() else {
                return Ok(None);
            };
            owner::check_adoptable(&info, o)?;
            if let Some(want) = &t.instance
                && *want != user
            {
                return Err(Failure::new(
                    codes::ATTACHED_ELSEWHERE,
                    format!(
                        "disk {} is attached to {user}, not {want}: leaving it alone",
                        t.disk
                    ),
                ));
            }
            let inst = api.instance(&t.at, &user).await?;
            let dev = inst.device_of(&t.disk).unwrap_or_else(|| t.disk.clone());
            Ok(Some((user, dev)))
        });
        // Never detach under a live filesystem: on the node, look; from
        // elsewhere, the node must have said so.
        let (on_node, force) = (self.cfg.on_node, self.cfg.force);
        let mut out: Vec<Option<StepResult>> = Vec::new();
        let mut todo: Vec<Result<Target, Failure>> = Vec::new();
        for ((r, t), f) in records.iter_mut().zip(targets).zip(found) {
            let step = (|| {
                let Some((user, dev)) = f? else {
                    return Ok(Err(Outcome::unchanged(
                        State::Detached,
                        format!("disk {} is not attached", r.disk.as_deref().unwrap_or("?")),
                    )));
                };
                r.attached_as = Some(dev.clone());
                let disk = r.disk.clone().unwrap_or_default();
                let mut forced = "";
                if on_node {
                    release::check_here(r, force)?;
                } else {
                    if r.device.is_some() {
                        discover::refuse_if_mounted_here(r)?;
                    }
                    if let Err(e) = release::require(r, &disk, &user, Some(&dev)) {
                        if !force {
                            return Err(e);
                        }
                        log::warn(format_args!(
                            "{}: detaching disk {disk} from {user} without proof that the node let go of it (--force): {FORCE_RISK}",
                            r.label()
                        ));
                        forced = " (forced: no proof that the node let go of it)";
                    }
                }
                if cx.check {
                    return Ok(Err(Outcome::changed(
                        State::Detached,
                        format!("would detach disk {disk} from {user}{forced}"),
                    )));
                }
                Ok(Ok((user, dev)))
            })();
            let skip = || Err(Failure::new(codes::INTERNAL, "nothing to detach"));
            match step {
                Ok(Ok(attached)) => {
                    out.push(None);
                    todo.push(t.map(|t| Target {
                        attached: Some(attached),
                        ..t
                    }));
                }
                Ok(Err(o)) => {
                    out.push(Some(Ok(o)));
                    todo.push(skip());
                }
                Err(e) => {
                    out.push(Some(Err(e)));
                    todo.push(skip());
                }
            }
        }
        let done = self.each(todo, move |api, t| async move {
            let (user, dev) = t.attached.clone().unwrap_or_default();
            let op = api.detach(&t.at, &user, &dev).await?;
            api.wait(&t.at, op, timeout).await?;
            Ok(Outcome::changed(
                State::Detached,
                format!("detached disk {} from {user}", t.disk),
            ))
        });
        records
            .iter_mut()
            .zip(out.into_iter().zip(done))
            .map(|(r, (o, d))| match o {
                Some(res) => res,
                None => {
                    let o = d?;
                    r.device = None;
                    Ok(o)
                }
            })
            .collect()
    }

    fn discover(&mut self, record: &Record) -> Result<PathBuf, Failure> {
        discover::find(record, discover::DEVICE_WAIT)
    }
}

fn no_such_disk(t: &Target) -> Failure {
    Failure::new(
        codes::NO_SUCH_DISK,
        format!(
            "no disk {} in {} of project {}",
            t.disk, t.at.zone, t.at.project
        ),
    )
}
