//! The options of `disk-create`, `disk-attach` and `disk-detach`: those
//! all three take ([`ProviderArgs`]: which disk, where, how to reach the
//! provider) and each tool's own ([`CreateArgs`], [`DetachArgs`]), so that
//! a tool offers only the flags it uses and any other is a usage error; the
//! one place that opens a provider by kind; and the checks on a whole input
//! that keep cloud disks where they belong ([`ProviderArgs::check_records`])
//! and name their deployment ([`CloudStep`]).
//!
//! This is the only crate that links every provider; the node-side tools do
//! not depend on it.
#![deny(missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use appscale_persist::appscalefile::{self, CloudSettings};
use appscale_persist::codes;
use appscale_persist::log;
use appscale_persist::node_id;
use appscale_persist::provider::local::Local;
use appscale_persist::provider::static_disk::Static;
use appscale_persist::provider::{Provider, Size};
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::snapshot::SnapshotArgs;
use appscale_persist::step::{Ctx, Failure, Step, StepResult};
use appscale_persist::steps::provision::{Op, ProviderStep};
use appscale_persist::wait::{self, Poll, WaitParams};
use appscale_persist_cloudkit::DiskSpec;
use clap::Args;

pub use appscale_persist::record::DEFAULT_DEPLOYMENT;

/// The options every cloud tool takes: which disk a run acts on, when not
/// reading records, and how to reach its provider.
#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Act on this disk alone instead of reading records on stdin (volume id
    /// or Name tag, GCE disk name, local image name, or device path).
    #[arg(long, value_name = "DISK", help_heading = "Disk")]
    pub disk: Option<String>,
    /// Node id: the node of a disk given with --disk; with records on
    /// stdin, the one node whose records this run takes (records of other
    /// nodes are refused, nothing done). With --self or --instance and
    /// records of several nodes, required.
    #[arg(long, value_name = "ID", help_heading = "Disk")]
    pub node: Option<String>,
    /// Provider for records that name none.
    #[arg(long, value_name = "KIND", value_parser = parse_kind, help_heading = "Disk")]
    pub provider: Option<ProviderKind>,
    /// Zone for records that name none.
    #[arg(long, value_name = "ZONE", help_heading = "Disk")]
    pub zone: Option<String>,
    /// Instance (EC2 id, GCE name) for records that name none.
    #[arg(long, value_name = "ID", help_heading = "Disk")]
    pub instance: Option<String>,
    /// Run on the node itself: take instance and zone from the metadata
    /// service, and find the attached device here.
    #[arg(long = "self", help_heading = "Disk")]
    pub on_node: bool,

    /// Deployment the disks belong to: new disks are tagged (EBS), labelled
    /// (GCE) or owned (a local image's `<name>.owner.json`) with it and
    /// their client tokens keyed by it, and a disk or snapshot of another
    /// deployment is never used [default: the
    /// record's `deployment` (the AppScalefile's keyname, else group), else
    /// `appscale`, with a warning].
    #[arg(long, value_name = "NAME", help_heading = "Disk")]
    pub deployment: Option<String>,

    /// Directory of local disk images [default: $APPSCALE_PERSIST_STATE_DIR
    /// or /var/lib/appscale-persist/disks].
    #[arg(long, value_name = "DIR", help_heading = "Local")]
    pub state_dir: Option<PathBuf>,
    /// Directory of local snapshots, best on another filesystem than the
    /// images (a copy then never takes room a live image may still claim)
    /// [default: $APPSCALE_PERSIST_SNAPSHOT_DIR, else <state dir>/snapshots].
    #[arg(long, value_name = "DIR", help_heading = "Local")]
    pub snapshot_dir: Option<PathBuf>,

    /// Take the cloud settings of this AppScalefile: `EC2_URL` as the
    /// endpoint unless --endpoint-url is given, `project` unless --project
    /// is given, and `EC2_ACCESS_KEY`/`EC2_SECRET_KEY` as the credentials of
    /// last resort, after the AWS default chain (environment, profile,
    /// instance role). The secret is never printed, logged or written into
    /// a record.
    #[arg(long, value_name = "PATH", help_heading = "Cloud")]
    pub appscalefile: Option<PathBuf>,
    /// API endpoint (Eucalyptus, an emulator, a private endpoint).
    #[arg(
        long,
        visible_alias = "endpoint",
        value_name = "URL",
        help_heading = "Cloud"
    )]
    pub endpoint_url: Option<String>,
    /// AWS region [default: on EC2 the zone's region (a zone in another
    /// region than this is refused), else the SDK's chain].
    #[arg(long, value_name = "REGION", help_heading = "Cloud")]
    pub region: Option<String>,
    /// AWS profile from the shared config files.
    #[arg(long, value_name = "NAME", help_heading = "Cloud")]
    pub profile: Option<String>,
    /// Google Cloud project.
    #[arg(long, value_name = "ID", help_heading = "Cloud")]
    pub project: Option<String>,
    /// Metadata service endpoint for --self (IMDS on EC2, the metadata
    /// server on GCE).
    #[arg(long, value_name = "URL", help_heading = "Cloud")]
    pub metadata_endpoint: Option<String>,
    /// At most this many API calls (create, attach, detach) at once.
    #[arg(long, value_name = "N", default_value_t = 8, help_heading = "Cloud")]
    pub concurrency: usize,
    /// Seconds to wait for attachments, detachments and operations.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        help_heading = "Cloud"
    )]
    pub timeout: u64,
}

/// `disk-create`'s own options: what a new disk is, and what a disk found
/// must be.
#[derive(Debug, Clone, Default, Args)]
pub struct CreateArgs {
    /// Size of a new disk (10G, 512M, 1T; a bare number is GiB); when
    /// given, a disk found with another size is an error [default: 10G].
    #[arg(long, value_name = "SIZE", help_heading = "Create")]
    pub size: Option<Size>,
    /// Type of a new disk; when given, a disk found with another type is an
    /// error [default: gp3 on EC2, standard (its only type) on Eucalyptus,
    /// pd-balanced on GCE].
    #[arg(long = "type", value_name = "TYPE", help_heading = "Create")]
    pub disk_type: Option<String>,
    /// Grow a disk found smaller than --size to that size (EBS
    /// ModifyVolume, GCE disks.resize, a local image extended and its loop
    /// device refreshed); then `disk-ensure-fs --grow` grows its
    /// filesystem. A disk is never shrunk: one found larger is an error.
    /// Not on Eucalyptus, which has no ModifyVolume.
    #[arg(long, help_heading = "Create")]
    pub grow: bool,
    /// Encrypt a new EBS volume (with the account's default key unless
    /// --kms-key); a volume found unencrypted is an error. (Every GCE disk
    /// is encrypted.)
    #[arg(long, help_heading = "Create")]
    pub encrypted: bool,
    /// Customer-managed key of a new disk: on EC2 a KMS key id, alias
    /// (alias/NAME) or ARN (implies --encrypted); on GCE a Cloud KMS key
    /// name (projects/P/locations/L/keyRings/R/cryptoKeys/K). A disk found
    /// encrypted otherwise is an error.
    #[arg(long, value_name = "KEY", help_heading = "Create")]
    pub kms_key: Option<String>,
    /// Provisioned IOPS of a new disk (EBS gp3, io1, io2; GCE pd-extreme,
    /// hyperdisk-balanced, hyperdisk-extreme), checked against the type's
    /// limits before any call; a disk found with others is an error.
    #[arg(long, value_name = "N", help_heading = "Create")]
    pub iops: Option<u64>,
    /// Provisioned throughput of a new disk, MiB/s (EBS gp3; GCE
    /// hyperdisk-balanced, hyperdisk-throughput, hyperdisk-ml), checked
    /// likewise.
    #[arg(long, value_name = "MIBPS", help_heading = "Create")]
    pub throughput: Option<u64>,
    /// A tag (EBS) or label (GCE) for new disks, repeatable; GCE label
    /// rules (lowercase keys of at most 63 characters) are checked first.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag, help_heading = "Create")]
    pub tags: Vec<(String, String)>,
    /// Also give disks found the --tag tags they lack (or have with
    /// another value); other tags are left as they are.
    #[arg(long, requires = "tags", help_heading = "Create")]
    pub retag: bool,
    /// Make a new disk from this snapshot (an id from `disk-snapshot`, or
    /// `latest`: the record's disk's newest of its deployment) instead of a
    /// blank one. The new disk has a name of its own, which the record then
    /// carries (with `restored_from`); the record's old disk is kept, and
    /// must not be attached (its copy's filesystem has the same UUID:
    /// original-attached, nothing made; docs/backup.md). Local, EC2 and GCE.
    #[arg(long, value_name = "ID|latest", help_heading = "Create")]
    pub from_snapshot: Option<String>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    appscale_persist_cloudkit::spec::parse_tag(s)
}

impl CreateArgs {
    /// What a disk must be, as the cloud providers take it.
    pub fn spec(&self) -> DiskSpec {
        DiskSpec {
            size: self.size,
            disk_type: self.disk_type.clone(),
            grow: self.grow,
            encrypted: self.encrypted || self.kms_key.is_some(),
            kms_key: self.kms_key.clone(),
            iops: self.iops,
            throughput: self.throughput,
            tags: self.tags.clone(),
            retag: self.retag,
        }
    }

    /// Checks these options against the limits of every provider the
    /// records go to (`kind_of`), before anything is done: an error is a
    /// usage error. A local image takes only --size and --grow; a static
    /// device none of the production options (it is used as it is).
    pub fn check(
        &self,
        records: &[Record],
        kind_of: impl Fn(&Record) -> Option<ProviderKind>,
    ) -> Result<(), String> {
        let used: Vec<ProviderKind> = records
            .iter()
            .filter(|r| r.error.is_none())
            .filter_map(&kind_of)
            .collect();
        let spec = self.spec();
        for kind in ProviderKind::ALL.into_iter().filter(|k| used.contains(k)) {
            match kind {
                ProviderKind::Ec2 | ProviderKind::Euca => {
                    appscale_persist_ec2::check_spec(kind, &spec)?
                }
                ProviderKind::Gce => appscale_persist_gce::check_spec(&spec)?,
                ProviderKind::Local | ProviderKind::Static => {
                    let cloud_only = [
                        (self.grow && kind == ProviderKind::Static, "--grow"),
                        (self.encrypted, "--encrypted"),
                        (self.kms_key.is_some(), "--kms-key"),
                        (self.iops.is_some(), "--iops"),
                        (self.throughput.is_some(), "--throughput"),
                        (!self.tags.is_empty(), "--tag"),
                    ];
                    if let Some((_, flag)) = cloud_only.iter().find(|(given, _)| *given) {
                        return Err(if kind == ProviderKind::Local {
                            format!("{flag}: a local disk image takes only --size and --grow")
                        } else {
                            format!("{flag}: a static device is used as it is")
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// `disk-detach`'s own options: when a detach may go ahead without the
/// usual proof.
#[derive(Debug, Clone, Default, Args)]
pub struct DetachArgs {
    /// Detach from elsewhere without the node's proof that it unmounted the
    /// disk (the `unmount_proof` disk-unmount stamps there), or from the
    /// node itself when its device is not visible: the node may still have
    /// the filesystem mounted, so writes it has not flushed are lost and the
    /// filesystem can be left corrupt. A disk mounted on this machine is
    /// refused even so.
    #[arg(long, help_heading = "Detach")]
    pub force: bool,
    /// Send EC2's DetachVolume with Force=true, for a volume stuck in
    /// `detaching` (the instance gets no chance to flush its caches: writes
    /// can be lost). The proof rules apply as without it.
    #[arg(long, help_heading = "Detach")]
    pub ebs_force: bool,
}

/// What a cloud tool runs, with its own options.
#[derive(Debug, Clone)]
pub enum Operation {
    /// `disk-create`.
    Create(CreateArgs),
    /// `disk-attach`.
    Attach,
    /// `disk-detach`.
    Detach(DetachArgs),
    /// `disk-snapshot`.
    Snapshot(SnapshotArgs),
    /// `disk-scratch`.
    Scratch(appscale_persist::provider::ScratchPhase),
}

impl Operation {
    /// The provider step this is.
    fn op(&self) -> Op {
        match self {
            Operation::Create(_) => Op::Create,
            Operation::Attach => Op::Attach,
            Operation::Detach(_) => Op::Detach,
            Operation::Snapshot(_) => Op::Snapshot,
            Operation::Scratch(phase) => Op::Scratch(*phase),
        }
    }

    /// `disk-snapshot`'s options; the defaults for the other tools.
    fn snapshot(&self) -> SnapshotArgs {
        match self {
            Operation::Snapshot(s) => s.clone(),
            _ => SnapshotArgs::default(),
        }
    }

    /// `disk-create`'s options; the defaults for the other tools, which
    /// create nothing.
    fn create(&self) -> CreateArgs {
        match self {
            Operation::Create(c) => c.clone(),
            _ => CreateArgs::default(),
        }
    }

    /// `disk-detach`'s options; the defaults for the other tools.
    fn detach(&self) -> DetachArgs {
        match self {
            Operation::Detach(d) => d.clone(),
            _ => DetachArgs::default(),
        }
    }
}

fn parse_kind(s: &str) -> Result<ProviderKind, String> {
    ProviderKind::parse(s).ok_or_else(|| "one of ec2, euca, gce, local, static".to_string())
}

impl ProviderArgs {
    /// The deployment for records that name none: `--deployment`, else the
    /// shared default.
    fn default_deployment(&self) -> String {
        self.deployment
            .clone()
            .unwrap_or_else(|| DEFAULT_DEPLOYMENT.to_string())
    }

    /// The settings of `--appscalefile` (none without it); an error names
    /// the file, never a value from it.
    pub fn file_settings(&self) -> Result<CloudSettings, String> {
        match &self.appscalefile {
            None => Ok(CloudSettings::default()),
            Some(path) => appscalefile::cloud::read(path),
        }
    }

    /// The provider a record goes to.
    pub fn kind_of(&self, r: &Record) -> Option<ProviderKind> {
        r.provider.or(self.provider)
    }

    /// Checks the whole input before anything is done (exit 2 on an error):
    ///
    /// * with `--node`, every record is that node's;
    /// * one `--instance` or `--self` never receives the disks of several
    ///   nodes: records of more than one node that name no `instance` of
    ///   their own are refused;
    /// * no two records name the same cloud disk;
    /// * `--appscalefile`, when given, reads without error.
    ///
    /// Records carrying an error are not acted on, and not checked.
    pub fn check_records(&self, records: &[Record]) -> Result<(), String> {
        self.file_settings()?;
        let cloud: Vec<(usize, &Record)> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.error.is_none())
            .filter(|(_, r)| self.kind_of(r).is_some_and(ProviderKind::is_cloud))
            .collect();
        if let Some(node) = &self.node {
            let others: BTreeSet<&str> = cloud
                .iter()
                .filter_map(|(_, r)| r.node.as_deref())
                .filter(|n| n != node)
                .collect();
            if !others.is_empty() {
                return Err(format!(
                    "--node {node} was given, but the input holds records of {}: plan only this node's disk (appscalefile-lint --plan --node {node})",
                    others.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if self.on_node || self.instance.is_some() {
            let nodes: BTreeSet<&str> = cloud
                .iter()
                .filter(|(_, r)| r.instance.is_none())
                .map(|(_, r)| r.node.as_deref().unwrap_or("(no node)"))
                .collect();
            if nodes.len() > 1 {
                let target = match &self.instance {
                    Some(i) => format!("--instance {i}"),
                    None => "--self".to_string(),
                };
                return Err(format!(
                    "the input holds disks of {} nodes ({}) and no record names its own `instance`: {target} would give all of them one instance. Pass --node ID and plan only that node's disk (appscalefile-lint --plan --node ID), or give each record its `instance`",
                    nodes.len(),
                    nodes.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
        for (i, r) in &cloud {
            let Some(kind) = self.kind_of(r) else {
                continue;
            };
            let Some(disk) = r.disk_id() else {
                continue;
            };
            let (family, zone) = match kind {
                ProviderKind::Gce => (
                    "gce",
                    r.zone
                        .clone()
                        .or_else(|| self.zone.clone())
                        .unwrap_or_default(),
                ),
                _ => ("ec2", String::new()),
            };
            if let Some(first) = seen.insert((family.into(), zone, disk.to_string()), *i) {
                return Err(format!(
                    "records {} and {} both name disk {disk}: one disk belongs to one node, once",
                    first + 1,
                    i + 1
                ));
            }
        }
        Ok(())
    }

    /// With `--node auto`: this machine's node, found without per-node
    /// configuration ([`node_id::resolve`]: its address, its instance's
    /// tag, AppScale's record at `locations`; then, with `--self`, what the
    /// cloud says: the instance's tag, a volume of the deployment attached
    /// here), and the input's records of that node alone; `--node` is set
    /// to it. None of them saying yet (the controller has not attached the
    /// disk yet, at first boot) is waited for, up to `--timeout`. Without
    /// `--node auto`, the records as they are.
    pub fn select_auto(
        &mut self,
        records: Vec<Record>,
        locations: Option<PathBuf>,
    ) -> Result<Vec<Record>, String> {
        if self.node.as_deref() != Some(node_id::AUTO) {
            return Ok(records);
        }
        let kind = records.iter().find_map(|r| self.kind_of(r));
        let src = node_id::Sources {
            metadata_endpoint: self.metadata_endpoint.clone(),
            locations,
        };
        let cloud = self.on_node && kind.is_some_and(ProviderKind::is_cloud);
        let progress =
            appscale_persist::progress::Progress::start("this machine's node to be known", 0);
        let params = WaitParams {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(10),
            timeout: Duration::from_secs(self.timeout),
        };
        let mut provider: Option<Box<dyn Provider>> = None;
        let found = wait::until_with(&progress, params, || {
            match node_id::resolve(&records, kind, &src) {
                Ok(Some(f)) => return Poll::Ready(f),
                Ok(None) => {}
                Err(e) => return Poll::Failed(e),
            }
            let (Some(kind), true) = (kind, cloud) else {
                return Poll::Failed(String::new());
            };
            if provider.is_none() {
                match self.open(kind, &Operation::Attach) {
                    Ok(p) => provider = Some(p),
                    Err(f) => return Poll::Failed(f.message),
                }
            }
            match provider.as_mut().map(|p| p.this_node(&records)) {
                Some(Ok(Some(f))) => Poll::Ready(f),
                Some(Err(f)) if [codes::OTHER_NODE, codes::IDENTITY_MISMATCH].contains(&f.code) => {
                    Poll::Failed(f.message)
                }
                Some(Err(f)) => {
                    log::debug(format_args!("this machine's node: {}", f.message));
                    Poll::Pending
                }
                _ => Poll::Pending,
            }
        });
        let tried = if cloud {
            "its address, its instance's tag (IMDS, DescribeInstances), AppScale's record (--locations), a volume of the deployment attached here"
        } else {
            "its address, its instance's tag, AppScale's record (--locations)"
        };
        let found = match found {
            Ok(f) => f,
            Err(wait::WaitError::Failed(e)) if !e.is_empty() => return Err(e),
            Err(wait::WaitError::Interrupted(sig)) => return Err(format!("stopped by {sig}")),
            Err(_) => {
                return Err(format!(
                    "--node auto: nothing says which node this machine is ({tried}): tag the instance {} (or attach its disk from the controller: scripts/up --cloud-only), or pass --node ID",
                    node_id::EC2_TAG
                ));
            }
        };
        log::info(format_args!(
            "this machine is {} (by {})",
            found.node, found.how
        ));
        self.node = Some(found.node.clone());
        Ok(node_id::only(records, &found.node))
    }

    /// The one record `--disk` describes, if given.
    pub fn single(&self) -> Option<Record> {
        self.disk.as_ref().map(|d| Record {
            disk: Some(d.clone()),
            node: self.node.clone(),
            provider: self.provider,
            zone: self.zone.clone(),
            instance: self.instance.clone(),
            ..Record::default()
        })
    }

    /// Opens the provider for `kind` with these options and `op`'s own.
    pub fn open(&self, kind: ProviderKind, op: &Operation) -> Result<Box<dyn Provider>, Failure> {
        let timeout = Duration::from_secs(self.timeout);
        let (create, detach) = (op.create(), op.detach());
        let file = if kind.is_cloud() {
            self.file_settings()
                .map_err(|e| Failure::new(codes::APPSCALEFILE, e))?
        } else {
            CloudSettings::default()
        };
        match kind {
            ProviderKind::Local => Ok(Box::new(
                Local::new(Local::state_dir(self.state_dir.clone()), create.size)
                    .for_deployment(self.deployment.clone())
                    .snapshots_in(Local::snapshot_dir(self.snapshot_dir.clone()))
                    .growing(create.grow)
                    .with_snapshots(op.snapshot())
                    .from_snapshot(create.from_snapshot),
            )),
            ProviderKind::Static => Ok(Box::new(Static)),
            ProviderKind::Ec2 | ProviderKind::Euca => {
                appscale_persist_ec2::open(appscale_persist_ec2::Config {
                    kind,
                    endpoint_url: self.endpoint_url.clone().or(file.ec2_url.clone()),
                    file_credentials: file
                        .credentials()
                        .map(|(id, secret)| (id.to_string(), secret.clone())),
                    region: self.region.clone(),
                    profile: self.profile.clone(),
                    instance: self.instance.clone(),
                    on_node: self.on_node,
                    metadata_endpoint: self.metadata_endpoint.clone(),
                    zone: self.zone.clone(),
                    spec: create.spec(),
                    deployment: self.default_deployment(),
                    force: detach.force,
                    ebs_force: detach.ebs_force,
                    concurrency: self.concurrency,
                    timeout,
                    snapshot: op.snapshot(),
                    from_snapshot: create.from_snapshot.clone(),
                    ..appscale_persist_ec2::Config::default()
                })
            }
            ProviderKind::Gce => appscale_persist_gce::open(appscale_persist_gce::Config {
                endpoint_url: self.endpoint_url.clone(),
                project: self.project.clone().or(file.project),
                zone: self.zone.clone(),
                instance: self.instance.clone(),
                on_node: self.on_node,
                metadata_endpoint: self.metadata_endpoint.clone(),
                spec: create.spec(),
                deployment: self.default_deployment(),
                force: detach.force,
                concurrency: self.concurrency,
                timeout,
                snapshot: op.snapshot(),
                from_snapshot: create.from_snapshot.clone(),
            }),
        }
    }

    /// Opens providers for looking disks up (`disk-status`): with these
    /// options alone, as `disk-attach`, which has no options of its own.
    pub fn opener(self) -> appscale_persist::steps::provision::Opener {
        Box::new(move |kind| self.open(kind, &Operation::Attach))
    }

    /// The step running `op` over these options.
    pub fn step(self, op: Operation) -> CloudStep {
        let default_provider = self.provider;
        let deployment = self.deployment.clone();
        CloudStep {
            deployment,
            default_provider,
            inner: ProviderStep {
                op: op.op(),
                default_provider,
                open: Box::new(move |kind| self.open(kind, &op)),
            },
        }
    }
}

/// [`ProviderStep`], after naming each cloud record's deployment:
/// `--deployment`, else the record's own, else [`DEFAULT_DEPLOYMENT`] with
/// a warning (deployments that share a name share their disks' tags and
/// client tokens). The name is written into the record, so the next tool
/// uses the same one.
pub struct CloudStep {
    deployment: Option<String>,
    default_provider: Option<ProviderKind>,
    inner: ProviderStep,
}

impl Step for CloudStep {
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, Duration)> {
        let mut unnamed = Vec::new();
        for r in records.iter_mut() {
            if !r
                .provider
                .or(self.default_provider)
                .is_some_and(ProviderKind::is_cloud)
            {
                continue;
            }
            let name = match (&self.deployment, r.deployment.as_deref()) {
                (Some(flag), _) => flag.clone(),
                (None, Some(own)) if !own.is_empty() => continue,
                (None, _) => {
                    unnamed.push(r.label());
                    DEFAULT_DEPLOYMENT.to_string()
                }
            };
            r.deployment = Some(name);
        }
        if !unnamed.is_empty() {
            log::warn(format_args!(
                "no deployment name for {}: using the shared default `{DEFAULT_DEPLOYMENT}`, which every unnamed deployment shares (tags, labels, client tokens); set `keyname` in the AppScalefile, or pass --deployment",
                unnamed.join(", ")
            ));
        }
        self.inner.run(records, cx)
    }
}
