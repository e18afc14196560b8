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
//! [`appscale_persist::provider::discover`].
#![deny(missing_docs)]

mod api;
mod metadata;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use appscale_persist::provider::discover::{self, ATTACHED_AS_KEY, SIZE_KEY};
use appscale_persist::provider::{DiskStatus, Provider, Size, disk_of};
use appscale_persist::record::{ProviderKind, Record, State};
use appscale_persist::step::{Ctx, Failure, Outcome, StepResult};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use api::{Api, Where};

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
    /// metadata server; attach finds the device here.
    pub on_node: bool,
    /// Metadata server (`host:port`) override; otherwise `GCE_METADATA_HOST`
    /// or `metadata.google.internal`.
    pub metadata_host: Option<String>,
    /// Size of new disks; when given, an existing disk of another size is an
    /// error [default for new disks: 10G].
    pub size: Option<Size>,
    /// Type of new disks; when given, an existing disk of another type is an
    /// error [default for new disks: pd-balanced].
    pub disk_type: Option<String>,
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
        .map_err(|e| Failure::new("runtime", e.to_string()))?;
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
    me: Option<metadata::Me>,
}

/// Everything a record's disk is known by.
#[derive(Debug, Clone)]
struct Target {
    at: Where,
    disk: String,
    instance: Option<String>,
    /// `--check` on a record an earlier `--check` step would have made.
    pending: bool,
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

    fn me(&mut self) -> Result<metadata::Me, Failure> {
        if let Some(m) = &self.me {
            return Ok(m.clone());
        }
        let m = metadata::me(self.cfg.metadata_host.as_deref())?;
        self.me = Some(m.clone());
        Ok(m)
    }

    /// Project, zone, disk and instance of each record, from the record,
    /// the flags, the environment or the metadata server.
    fn targets(&mut self, records: &mut [Record], check: bool) -> Vec<Result<Target, Failure>> {
        let me = if self.cfg.on_node {
            Some(self.me())
        } else {
            None
        };
        let env_project = std::env::var("GOOGLE_CLOUD_PROJECT")
            .ok()
            .or_else(|| std::env::var("CLOUDSDK_CORE_PROJECT").ok());
        records
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
                        "no-project",
                        "no Google Cloud project: pass --project or set GOOGLE_CLOUD_PROJECT",
                    ));
                };
                if r.zone.is_none() {
                    r.zone = self.cfg.zone.clone().or_else(|| me.map(|m| m.zone.clone()));
                }
                let Some(zone) = r.zone.clone() else {
                    return Err(Failure::new(
                        "no-zone",
                        "no zone: set `zone` in the AppScalefile, or pass --zone",
                    ));
                };
                if r.instance.is_none() {
                    r.instance = me
                        .map(|m| m.name.clone())
                        .or_else(|| self.cfg.instance.clone());
                }
                let disk = disk_of(r)?.to_string();
                Ok(Target {
                    at: Where { project, zone },
                    disk,
                    instance: r.instance.clone(),
                    pending: check && r.is_check(),
                })
            })
            .collect()
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
                            *slot = Some(Err(Failure::new("internal", e.to_string())));
                        }
                    }
                }
            }
            out.into_iter()
                .map(|o| o.unwrap_or_else(|| Err(Failure::new("internal", "lost task"))))
                .collect()
        })
    }
}

/// What create found or did.
enum Created {
    Exists(api::DiskInfo),
    Made(api::DiskInfo),
    Would(String),
}

/// What attach found or did.
enum Attached {
    Already(String),
    Done(String),
    Would(String),
}

fn note(r: &mut Record, info: &api::DiskInfo) {
    r.extra.insert(SIZE_KEY.into(), (info.size_gb << 30).into());
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
                match api.disk(&t.at, &t.disk).await? {
                    Some(info) => {
                        if let Some(s) = size
                            && info.size_gb != s.gib() as i64
                        {
                            return Err(Failure::new(
                                "size-mismatch",
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
                                "type-mismatch",
                                format!(
                                    "disk {} exists with type {}, not {want}",
                                    t.disk, info.disk_type
                                ),
                            ));
                        }
                        Ok(Created::Exists(info))
                    }
                    None => {
                        let size = size.unwrap_or(Size(10 << 30));
                        let disk_type = disk_type.unwrap_or_else(|| "pd-balanced".into());
                        if cx.check {
                            return Ok(Created::Would(format!(
                                "would create disk {} ({} GB {disk_type}) in {}",
                                t.disk,
                                size.gib(),
                                t.at.zone
                            )));
                        }
                        let op = api
                            .insert_disk(&t.at, &t.disk, size.gib() as i64, &disk_type)
                            .await?;
                        api.wait(&t.at, op, timeout).await?;
                        let info = api.disk(&t.at, &t.disk).await?.ok_or_else(|| {
                            Failure::new(
                                "no-such-disk",
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
                Created::Would(m) => Ok(Outcome::changed(State::Created, m)),
            })
            .collect()
    }

    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
        let mut recs = records.to_vec();
        let targets = self.targets(&mut recs, false);
        self.each(targets, |api, t| async move {
            let i = api
                .disk(&t.at, &t.disk)
                .await?
                .ok_or_else(|| no_such_disk(&t))?;
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
                return Err(Failure::new("no-instance", "no instance to attach to: give the record an `instance`, or pass --instance or --self"));
            };
            let Some(info) = api.disk(&t.at, &t.disk).await? else {
                if t.pending {
                    let would = Attached::Would(format!("would attach disk {} to {instance} once it is created", t.disk));
                    return Ok((None, t.disk.clone(), would));
                }
                return Err(no_such_disk(&t));
            };
            if info.users.contains(&instance) {
                let inst = api.instance(&t.at, &instance).await?;
                let dev = inst.device_of(&t.disk).unwrap_or_else(|| t.disk.clone());
                return Ok((Some(info), dev, Attached::Already(format!("disk {} is attached to {instance}", t.disk))));
            }
            if let Some(other) = info.users.first() {
                return Err(Failure::new("attached-elsewhere", format!("disk {} is in use by {other}: detach it there first", t.disk)));
            }
            // The instance must exist (and be in this zone) before we ask.
            api.instance(&t.at, &instance).await?;
            if cx.check {
                return Ok((Some(info), t.disk.clone(), Attached::Would(format!("would attach disk {} to {instance}", t.disk))));
            }
            let op = api.attach(&t.at, &instance, &t.disk).await?;
            api.wait(&t.at, op, timeout).await?;
            Ok((Some(info), t.disk.clone(), Attached::Done(format!("attached disk {} to {instance} as device {}", t.disk, t.disk))))
        });
        let on_node = self.cfg.on_node && !cx.check;
        records
            .iter_mut()
            .zip(results)
            .map(|(r, res)| {
                let (info, dev, what) = res?;
                if let Some(info) = &info {
                    note(r, info);
                }
                r.extra.insert(ATTACHED_AS_KEY.into(), dev.into());
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
        // Never detach a disk mounted here.
        let refusals: Vec<Option<Failure>> = records
            .iter()
            .map(|r| discover::refuse_if_mounted_here(r).err())
            .collect();
        let mut targets = self.targets(records, cx.check);
        for (t, refusal) in targets.iter_mut().zip(refusals) {
            if let Some(f) = refusal {
                *t = Err(f);
            }
        }
        let timeout = self.cfg.timeout;
        let results = self.each(targets, move |api, t| async move {
            let info = api
                .disk(&t.at, &t.disk)
                .await?
                .ok_or_else(|| no_such_disk(&t))?;
            let Some(user) = info.users.first().cloned() else {
                return Ok(Outcome::unchanged(
                    State::Detached,
                    format!("disk {} is not attached", t.disk),
                ));
            };
            if let Some(want) = &t.instance
                && *want != user
            {
                return Err(Failure::new(
                    "attached-elsewhere",
                    format!(
                        "disk {} is attached to {user}, not {want}: leaving it alone",
                        t.disk
                    ),
                ));
            }
            let inst = api.instance(&t.at, &user).await?;
            let dev = inst.device_of(&t.disk).unwrap_or_else(|| t.disk.clone());
            if cx.check {
                return Ok(Outcome::changed(
                    State::Detached,
                    format!("would detach disk {} from {user}", t.disk),
                ));
            }
            let op = api.detach(&t.at, &user, &dev).await?;
            api.wait(&t.at, op, timeout).await?;
            Ok(Outcome::changed(
                State::Detached,
                format!("detached disk {} from {user}", t.disk),
            ))
        });
        records
            .iter_mut()
            .zip(results)
            .map(|(r, res)| {
                let o = res?;
                if o.changed && !cx.check {
                    r.device = None;
                }
                Ok(o)
            })
            .collect()
    }

    fn discover(&mut self, record: &Record) -> Result<PathBuf, Failure> {
        discover::find(record, discover::DEVICE_WAIT)
    }
}

fn no_such_disk(t: &Target) -> Failure {
    Failure::new(
        "no-such-disk",
        format!(
            "no disk {} in {} of project {}",
            t.disk, t.at.zone, t.at.project
        ),
    )
}
