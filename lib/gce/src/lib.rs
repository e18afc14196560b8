//! The `gce` provider: Compute Engine persistent disks through the official
//! `google-cloud-compute-v1` crate.
//!
//! Every operation has the shape of [`appscale_persist_cloudkit`]: **plan**
//! each record (its disk and instance looked up, at most
//! [`Config::concurrency`] calls at once, then an enum per operation:
//! [`create`], [`attach`], [`detach`], [`snapshot`]), **send** the calls at most
//! [`Config::concurrency`] at once, **wait** for all their operations under
//! one deadline ([`Config::timeout`]), **finish** each record. `--check`
//! plans, then describes the plan.
//!
//! Credentials are Application Default Credentials (a key file in
//! `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file, or the metadata
//! server). Every mutating call carries a `requestId` derived from what it
//! does, so a retried call is not done twice; an operation that finishes
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
mod attach;
mod create;
mod detach;
mod disk;
mod doctor;
mod options;
pub mod owner;
mod scratch;
mod snapshot;
mod whoami;

use std::sync::Arc;
use std::time::Duration;

use appscale_persist::checks::{Ask, Check};
use appscale_persist::codes;
use appscale_persist::provider::{DiskStatus, Provider, ScratchPhase, Size, disk_of};
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::release::identity::{self, GceInstance};
use appscale_persist::step::{Ctx, Failure, StepResult};
use appscale_persist::wait::WaitParams;
use appscale_persist_cloudkit::{
    self as kit, Deadline, DiskSpec, Lazy, ThisInstance, concurrently, failures,
};
use google_cloud_compute_v1::model::Operation;

use api::{Api, Location};

pub use doctor::{NEEDS, Need, On, RESOURCE_MANAGER_ENV};
pub use options::check as check_spec;

/// The size of a new disk unless `--size` says otherwise.
pub const DEFAULT_SIZE: Size = Size(10 << 30);

/// The type of a new disk unless `--type` says otherwise.
pub const DEFAULT_DISK_TYPE: &str = "pd-balanced";

/// How the provider reaches Compute Engine and what it creates.
#[derive(Debug, Clone)]
pub struct Config {
    /// API endpoint override (a private endpoint; `http://127.0.0.1:PORT`
    /// for a fake).
    pub endpoint_url: Option<String>,
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
    /// Metadata server override (`http://HOST:PORT` or `HOST:PORT`);
    /// otherwise `APPSCALE_PERSIST_METADATA_ENDPOINT`, `GCE_METADATA_HOST` or
    /// `metadata.google.internal`.
    pub metadata_endpoint: Option<String>,
    /// What new disks are, and disks found must be (size [default:
    /// [`DEFAULT_SIZE`]], type [default: [`DEFAULT_DISK_TYPE`]], key,
    /// provisioned IOPS and throughput, labels); checked with
    /// [`check_spec`] first.
    pub spec: DiskSpec,
    /// Deployment of records that name none (`deployment`): labels new
    /// disks, and scopes which found disks may be used.
    pub deployment: String,
    /// Detach without the node's proof that it let go of the disk (from
    /// elsewhere), or without finding its device (`--self`).
    pub force: bool,
    /// At most this many calls at once.
    pub concurrency: usize,
    /// Deadline for all the waiting of one operation.
    pub timeout: Duration,
    /// What `disk-snapshot` is asked to do.
    pub snapshot: appscale_persist::snapshot::SnapshotArgs,
    /// `disk-create --from-snapshot`: make each new disk from this
    /// snapshot (a snapshot name, or `latest`).
    pub from_snapshot: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint_url: None,
            project: None,
            zone: None,
            instance: None,
            on_node: false,
            metadata_endpoint: None,
            spec: DiskSpec::default(),
            deployment: "appscale".into(),
            force: false,
            concurrency: 8,
            timeout: Duration::from_secs(300),
            snapshot: Default::default(),
            from_snapshot: None,
        }
    }
}

/// Backoff between polls of an operation (the timeout comes from the
/// operation's [`Deadline`]).
const POLL: WaitParams = WaitParams {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
    timeout: Duration::ZERO,
};

/// Opens the provider; nothing is contacted until the first record needs it.
pub fn open(cfg: Config) -> Result<Box<dyn Provider>, Failure> {
    Ok(Box::new(Gce {
        cfg,
        rt: kit::runtime()?,
        api: Lazy::new(),
        this_instance: Lazy::new(),
    }))
}

/// The GCE provider.
struct Gce {
    cfg: Config,
    rt: tokio::runtime::Runtime,
    api: Lazy<Arc<Api>>,
    this_instance: Lazy<GceInstance>,
}

/// What one operation works with: the client, the settings, `--check`, and
/// the one deadline all its waiting shares.
struct Run {
    api: Arc<Api>,
    cfg: Config,
    check: bool,
    deadline: Deadline,
}

impl Run {
    /// Waits for every operation (`ops`, at their records' places) under
    /// the run's one deadline, all at once: these are polls, not changes,
    /// and one that hangs must not keep the others from being seen done. An
    /// operation that fails, or does not finish in time, fails its record.
    async fn wait_all<P>(
        &self,
        plans: &mut [Result<(Target, P), Failure>],
        ops: Vec<Option<Operation>>,
    ) {
        let (at, waits): (Vec<usize>, Vec<(Location, Operation)>) = plans
            .iter()
            .zip(ops)
            .enumerate()
            .filter_map(|(i, (p, op))| Some((i, (p.as_ref().ok()?.0.location.clone(), op?))))
            .unzip();
        let deadline = self.deadline;
        let progress = deadline.progress("Compute Engine operations to finish", waits.len() as u64);
        let done = concurrently(waits.len(), waits, |(location, op)| {
            let (api, progress) = (self.api.clone(), progress.clone());
            async move { api.wait(&location, op, &deadline, &progress).await }
        })
        .await;
        for (i, done) in at.into_iter().zip(done) {
            if let Err(f) = done {
                plans[i] = Err(f);
            }
        }
    }
}

/// A record's disk, where it is, and whose it must be.
#[derive(Debug, Clone)]
pub struct Target {
    /// Project and zone.
    pub location: Location,
    /// The disk's name.
    pub disk: String,
    /// The instance it goes to (or comes from).
    pub instance: Option<String>,
    /// The record's deployment, whose disk it must be.
    pub deployment: String,
    /// The record's node, whose disk it must be.
    pub node: Option<String>,
    /// `disk-create --from-snapshot`: the snapshot the new disk is made
    /// from ([`snapshot::restore_names`]).
    pub restore: Option<snapshot::Restore>,
}

impl Target {
    /// `disk NAME`, for messages.
    pub fn what(&self) -> String {
        format!("disk {}", self.disk)
    }
}

impl Gce {
    /// This machine's instance, zone and project, from the metadata server
    /// (`--self`).
    fn this_instance(&mut self) -> Result<GceInstance, Failure> {
        let endpoint = self.cfg.metadata_endpoint.as_deref();
        self.this_instance
            .get_or_try(|| identity::gce(endpoint).map_err(failures::metadata))
    }

    /// Project, zone, disk and instance of each record, from the record,
    /// this machine (`--self`), the flags or the environment. With `--self`,
    /// a record naming another instance is refused; two records naming one
    /// disk both fail.
    fn targets(&mut self, records: &mut [Record]) -> Vec<Result<Target, Failure>> {
        let this = self.cfg.on_node.then(|| self.this_instance());
        let env_project = std::env::var("GOOGLE_CLOUD_PROJECT")
            .ok()
            .or_else(|| std::env::var("CLOUDSDK_CORE_PROJECT").ok());
        let cfg = &self.cfg;
        let mut targets: Vec<Result<Target, Failure>> = records
            .iter_mut()
            .map(|r| {
                let this = this
                    .as_ref()
                    .map(|t| t.as_ref().map_err(Clone::clone))
                    .transpose()?;
                let here = this.map(ThisInstance::from);
                kit::place(
                    r,
                    here.as_ref(),
                    cfg.instance.as_deref(),
                    cfg.zone.as_deref(),
                )?;
                let project = cfg
                    .project
                    .clone()
                    .or_else(|| this.map(|m| m.project.clone()))
                    .or_else(|| env_project.clone())
                    .ok_or_else(|| {
                        Failure::new(
                            codes::NO_PROJECT,
                            "no Google Cloud project: pass --project or set GOOGLE_CLOUD_PROJECT",
                        )
                    })?;
                let zone = r
                    .zone
                    .clone()
                    .ok_or_else(|| failures::no_zone("for the disk", "--zone or --self"))?;
                Ok(Target {
                    location: Location { project, zone },
                    disk: disk_of(r)?.to_string(),
                    instance: r.instance.clone(),
                    deployment: kit::deployment_of(r, &cfg.deployment),
                    node: r.node.clone(),
                    restore: None,
                })
            })
            .collect();
        kit::refuse_duplicates(
            records,
            &mut targets,
            |t| (t.location.clone(), t.disk.clone()),
            |(_, disk)| format!("disk {disk}"),
        );
        targets
    }

    /// The targets, and what an operation runs with. A client that cannot
    /// be built fails every record.
    fn start(
        &mut self,
        records: &mut [Record],
        cx: Ctx,
    ) -> Result<(Run, Vec<Result<Target, Failure>>), Failure> {
        let targets = self.targets(records);
        let (cfg, rt) = (&self.cfg, &self.rt);
        let api = self.api.get_or_try(|| {
            let api = rt.block_on(Api::connect(cfg.endpoint_url.as_deref(), cfg.timeout))?;
            Ok(Arc::new(api))
        })?;
        let run = Run {
            api,
            cfg: self.cfg.clone(),
            check: cx.check,
            deadline: Deadline::start(self.cfg.timeout),
        };
        Ok((run, targets))
    }
}

impl Provider for Gce {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gce
    }

    fn create(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let from = self.cfg.from_snapshot.clone();
        match self.start(records, cx) {
            Ok((run, mut targets)) => self.rt.block_on(async {
                if let Some(from) = &from {
                    snapshot::restore_names(&run, from, records, &mut targets).await;
                }
                create::create(&run, records, targets).await
            }),
            Err(f) => kit::fail_all(records, f),
        }
    }

    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
        let mut records = records.to_vec();
        let (run, targets) = match self.start(&mut records, Ctx { check: true }) {
            Ok(started) => started,
            Err(f) => return kit::fail_all(&records, f),
        };
        let found = self.rt.block_on(disk::list_disks(&run, &targets));
        targets
            .iter()
            .zip(found)
            .map(|(t, found)| {
                let found = found?;
                let t = t.as_ref().map_err(Clone::clone)?;
                let (d, _) = found.ok_or_else(|| disk::no_such_disk(t))?;
                Ok(DiskStatus {
                    attached_as: None,
                    disk_type: Some(d.disk_type.clone()),
                    state: Some(d.status.clone()).filter(|s| !s.is_empty()),
                    deployment: d.labels.get(owner::LABEL_DEPLOYMENT).cloned(),
                    node: d.labels.get(owner::LABEL_NODE).cloned(),
                    created: d.created.clone(),
                    // Compute Engine encrypts every disk.
                    encrypted: Some(true),
                    instance: t.instance.clone(),
                    id: d.name,
                    zone: Some(d.zone),
                    size: Some((d.size_gb.max(0) as u64) << 30),
                    attached_to: d.users,
                })
            })
            .collect()
    }

    fn attach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let out = match self.start(records, cx) {
            Ok((run, targets)) => self.rt.block_on(attach::attach(&run, records, targets)),
            Err(f) => return kit::fail_all(records, f),
        };
        // On the node, find the device the disk became.
        if !self.cfg.on_node || cx.check {
            return out;
        }
        kit::find_devices_here(records, out)
    }

    fn detach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        match self.start(records, cx) {
            Ok((run, targets)) => self.rt.block_on(detach::detach(&run, records, targets)),
            Err(f) => kit::fail_all(records, f),
        }
    }

    fn snapshot(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let args = self.cfg.snapshot.clone();
        match self.start(records, cx) {
            Ok((run, targets)) => self
                .rt
                .block_on(snapshot::snapshot(&run, &args, records, targets)),
            Err(f) => kit::fail_all(records, f),
        }
    }

    fn scratch(&mut self, records: &mut [Record], phase: ScratchPhase, cx: Ctx) -> Vec<StepResult> {
        // A scratch copy is attached to the node that reads it: this one.
        if !self.cfg.on_node {
            return kit::fail_all(records, failures::scratch_needs_self());
        }
        let this = match self.this_instance() {
            Ok(t) => t,
            Err(f) => return kit::fail_all(records, f),
        };
        match self.start(records, cx) {
            Ok((run, targets)) => self
                .rt
                .block_on(scratch::scratch(&run, &this.name, phase, records, targets)),
            Err(f) => kit::fail_all(records, f),
        }
    }

    fn preflight(&mut self, records: &[Record], ask: &Ask) -> Vec<Vec<Check>> {
        doctor::preflight(self, records, ask)
    }

    fn this_node(
        &mut self,
        records: &[Record],
    ) -> Result<Option<appscale_persist::node_id::Found>, Failure> {
        whoami::this_node(self, records)
    }
}
