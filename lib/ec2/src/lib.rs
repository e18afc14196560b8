//! The `ec2` and `euca` providers: EBS volumes through `aws-sdk-ec2`.
//!
//! Eucalyptus speaks its own dialect of the EC2 API at another endpoint:
//! both are this one provider with a different [`Config::kind`] and
//! endpoint, and what Eucalyptus binds, lacks or does otherwise is said in
//! [`euca`] (its create in two calls: [`pending`]).
//!
//! Every operation has the shape of [`appscale_persist_cloudkit`]: **plan**
//! each record (its volume and instance looked up in batches, then an enum
//! per operation: [`create`], [`attach`], [`detach`]), **send** the calls at
//! most [`Config::concurrency`] at once, **wait** for all pending volumes
//! under one deadline ([`Config::timeout`]; every poll is one
//! `DescribeVolumes` call for all the volumes still pending), **finish**
//! each record. `--check` plans, then describes the plan.
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
//! Throttling and 5xx answers are retried by the SDK's standard retry
//! configuration, and a poll that still fails is tried again until the
//! deadline; any other error becomes the record's `error`, with the AWS
//! error code as its code.
#![deny(missing_docs)]

mod api;
mod attach;
mod connect;
mod create;
mod detach;
mod devices;
mod doctor;
mod euca;
mod instance;
mod limits;
mod options;
pub mod owner;
mod pending;
mod scratch;
mod snapshot;
mod volume;
mod whoami;

use std::sync::Arc;
use std::time::Duration;

use appscale_persist::checks::{Ask, Check};
use appscale_persist::log;
use appscale_persist::provider::{DiskStatus, Provider, ScratchPhase, Size};
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::release::identity;
use appscale_persist::step::{Ctx, Failure, StepResult};
use appscale_persist::wait::WaitParams;
use appscale_persist_cloudkit::{self as kit, Deadline, DiskSpec, Lazy, ThisInstance, failures};

pub use doctor::{How, NEEDS, Need};
pub use options::check as check_spec;

use api::Api;

/// The size of a new volume unless `--size` says otherwise.
pub const DEFAULT_SIZE: Size = Size(10 << 30);

/// The type of a new volume unless `--type` says otherwise.
pub const DEFAULT_DISK_TYPE: &str = "gp3";

/// How long an attachment may stay `attaching` before it is given up.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(120);

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
    /// Credentials of last resort (the AppScalefile's `EC2_ACCESS_KEY` and
    /// `EC2_SECRET_KEY`): used only when the AWS default chain finds none.
    pub file_credentials: Option<(String, appscale_persist::appscalefile::Secret)>,
    /// Instance for records that name none.
    pub instance: Option<String>,
    /// Running on the node itself (`--self`): instance id and zone come from
    /// IMDS (v2, else v1), attach finds the device here, and detach checks
    /// that nothing here uses it.
    pub on_node: bool,
    /// IMDS endpoint override (otherwise `APPSCALE_PERSIST_METADATA_ENDPOINT`,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` or the link-local default).
    pub metadata_endpoint: Option<String>,
    /// Zone for records that name none.
    pub zone: Option<String>,
    /// What new volumes are, and volumes found must be (size [default:
    /// [`DEFAULT_SIZE`]], type [default: [`DEFAULT_DISK_TYPE`]], encryption,
    /// IOPS, throughput, tags); checked with [`check_spec`] first.
    pub spec: DiskSpec,
    /// Deployment of records that name none (`deployment`): tags new
    /// volumes, keys their client tokens, and scopes Name-tag lookups.
    pub deployment: String,
    /// Detach without the node's proof that it let go of the volume (from
    /// elsewhere), or without finding its device (`--self`).
    pub force: bool,
    /// Send DetachVolume with `Force` (only when asked: the instance gets no
    /// chance to flush).
    pub ebs_force: bool,
    /// At most this many calls at once.
    pub concurrency: usize,
    /// Deadline for all the waiting of one operation.
    pub timeout: Duration,
    /// An attachment still `attaching` after this long (at most
    /// [`Config::timeout`]) is given up: the volume is detached again and the
    /// record fails.
    pub stuck_after: Duration,
    /// What `disk-snapshot` is asked to do.
    pub snapshot: appscale_persist::snapshot::SnapshotArgs,
    /// `disk-create --from-snapshot`: make each new volume from this
    /// snapshot (a `snap-...` id, or `latest`).
    pub from_snapshot: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kind: ProviderKind::Ec2,
            endpoint_url: None,
            region: None,
            profile: None,
            file_credentials: None,
            instance: None,
            on_node: false,
            metadata_endpoint: None,
            zone: None,
            spec: DiskSpec::default(),
            deployment: "appscale".into(),
            force: false,
            ebs_force: false,
            concurrency: 8,
            timeout: Duration::from_secs(300),
            stuck_after: DEFAULT_STUCK_AFTER,
            snapshot: Default::default(),
            from_snapshot: None,
        }
    }
}

/// Backoff between polls: quick first, as EBS attaches in seconds (the
/// timeout comes from the operation's [`Deadline`]).
const POLL: WaitParams = WaitParams {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(5),
    timeout: Duration::ZERO,
};

/// Opens the provider; nothing is contacted until the first record needs it.
pub fn open(cfg: Config) -> Result<Box<dyn Provider>, Failure> {
    Ok(Box::new(Ec2 {
        cfg,
        rt: kit::runtime()?,
        api: Lazy::new(),
        this_instance: Lazy::new(),
    }))
}

/// The EC2 provider.
struct Ec2 {
    cfg: Config,
    rt: tokio::runtime::Runtime,
    api: Lazy<Arc<Api>>,
    this_instance: Lazy<ThisInstance>,
}

/// What one operation works with: the client, the settings, `--check`, and
/// the one deadline all its waiting shares.
struct Run {
    api: Arc<Api>,
    cfg: Config,
    check: bool,
    deadline: Deadline,
    /// When it began, by the wall clock (to tell an earlier run's
    /// CreateVolume answer from this run's).
    started: std::time::SystemTime,
}

impl Run {
    /// The deployment a record belongs to.
    fn deployment_of(&self, r: &Record) -> String {
        kit::deployment_of(r, &self.cfg.deployment)
    }
}

/// This machine's instance id, from IMDS (at `cfg`'s endpoint): which
/// volumes disk-snapshot may look for here.
fn this_instance_id(cfg: &Config) -> Result<String, Failure> {
    let this = identity::ec2(cfg.metadata_endpoint.as_deref()).map_err(failures::metadata)?;
    Ok(this.id)
}

impl Ec2 {
    /// This machine's instance id and zone, from IMDS (`--self`).
    fn this_instance(&mut self) -> Result<ThisInstance, Failure> {
        let endpoint = self.cfg.metadata_endpoint.as_deref();
        self.this_instance.get_or_try(|| {
            let this = identity::ec2(endpoint).map_err(failures::metadata)?;
            Ok(ThisInstance::from(&this))
        })
    }

    /// Fills in each record's instance and zone ([`kit::place`]); with
    /// `--self`, from IMDS.
    fn place(&mut self, records: &mut [Record]) -> Vec<Result<(), Failure>> {
        let this = self.cfg.on_node.then(|| self.this_instance());
        let (instance, zone) = (self.cfg.instance.as_deref(), self.cfg.zone.as_deref());
        records
            .iter_mut()
            .map(|r| match &this {
                None => kit::place(r, None, instance, zone),
                Some(Ok(this)) => kit::place(r, Some(this), instance, zone),
                Some(Err(f)) => Err(f.clone()),
            })
            .collect()
    }

    /// Places the records and connects (on EC2 the first record's zone
    /// gives the region: [`connect`]): what an operation runs with. A
    /// client that cannot be built fails every record; a record in another
    /// region than the client's fails alone.
    fn start(
        &mut self,
        records: &mut [Record],
        cx: Ctx,
    ) -> Result<(Run, Vec<Result<(), Failure>>), Failure> {
        let placed = self.place(records);
        let zone_hint = records
            .iter()
            .find_map(|r| r.zone.clone())
            .or_else(|| self.cfg.zone.clone());
        let (cfg, rt) = (&self.cfg, &self.rt);
        let api = self.api.get_or_try(|| {
            let api = rt.block_on(Api::connect(cfg, zone_hint.as_deref()))?;
            Ok(Arc::new(api))
        })?;
        // A record whose zone is in another region than the client's would
        // be looked for, or made, in the wrong region.
        let placed = records
            .iter()
            .zip(placed)
            .map(|(r, p)| p.and_then(|()| connect::check_region(api.kind, &api.region, r)))
            .collect();
        let run = Run {
            api,
            cfg: self.cfg.clone(),
            check: cx.check,
            deadline: Deadline::start(self.cfg.timeout),
            started: std::time::SystemTime::now(),
        };
        Ok((run, placed))
    }
}

impl Provider for Ec2 {
    fn kind(&self) -> ProviderKind {
        self.cfg.kind
    }

    fn create(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let from = self.cfg.from_snapshot.clone();
        match self.start(records, cx) {
            Ok((run, mut placed)) => self.rt.block_on(async {
                if let Some(from) = &from {
                    snapshot::restore_names(&run, from, records, &mut placed).await;
                }
                create::create(&run, records, placed).await
            }),
            Err(f) => kit::fail_all(records, f),
        }
    }

    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
        let mut records = records.to_vec();
        let (run, placed) = match self.start(&mut records, Ctx { check: true }) {
            Ok(started) => started,
            Err(f) => return kit::fail_all(&records, f),
        };
        let found = self
            .rt
            .block_on(volume::find_volumes(&run, &records, placed));
        found
            .into_iter()
            .zip(&records)
            .map(|(f, r)| Ok(volume::status(&f?.vol, r.instance.as_deref())))
            .collect()
    }

    fn attach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let out = match self.start(records, cx) {
            Ok((run, placed)) => self.rt.block_on(attach::attach(&run, records, placed)),
            Err(f) => return kit::fail_all(records, f),
        };
        // On the node, find the device the volume became.
        if !self.cfg.on_node || cx.check {
            return out;
        }
        kit::find_devices_here(records, out)
    }

    fn detach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        match self.start(records, cx) {
            Ok((run, placed)) => self.rt.block_on(detach::detach(&run, records, placed)),
            Err(f) => kit::fail_all(records, f),
        }
    }

    fn snapshot(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        let args = self.cfg.snapshot.clone();
        match self.start(records, cx) {
            Ok((run, placed)) => self
                .rt
                .block_on(snapshot::snapshot(&run, &args, records, placed)),
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
            Ok((run, placed)) => self
                .rt
                .block_on(scratch::scratch(&run, &this, phase, records, placed)),
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

/// Logs an API call at debug level.
pub(crate) fn trace(what: std::fmt::Arguments<'_>) {
    log::debug(what);
}
