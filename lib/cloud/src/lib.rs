//! The provider options shared by `disk-create`, `disk-attach` and
//! `disk-detach`, and the one place that opens a provider by kind.
//!
//! This is the only crate that links every provider; the node-side tools do
//! not depend on it.
#![deny(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use appscale_persist::provider::local::Local;
use appscale_persist::provider::static_disk::Static;
use appscale_persist::provider::{Provider, Size};
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::step::Failure;
use appscale_persist::steps::provision::{Op, ProviderStep};
use clap::Args;

/// Which disk a run acts on, when not reading records, and provider options.
#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Act on this disk alone instead of reading records on stdin (volume id
    /// or Name tag, GCE disk name, local image name, or device path).
    #[arg(long, value_name = "DISK", help_heading = "Disk")]
    pub disk: Option<String>,
    /// Node id for a disk given with --disk.
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

    /// Size of a new disk (10G, 512M, 1T; a bare number is GiB) [default: 10G].
    #[arg(long, value_name = "SIZE", help_heading = "Create")]
    pub size: Option<Size>,
    /// Type of a new disk [default: gp3 on EC2, pd-balanced on GCE].
    #[arg(long = "type", value_name = "TYPE", help_heading = "Create")]
    pub disk_type: Option<String>,
    /// Encrypt a new EBS volume.
    #[arg(long, help_heading = "Create")]
    pub encrypted: bool,
    /// Deployment name: tags new EBS volumes and keys their client tokens.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "appscale",
        help_heading = "Create"
    )]
    pub deployment: String,

    /// Directory of local disk images [default: $APPSCALE_PERSIST_STATE_DIR
    /// or /var/lib/appscale-persist/disks].
    #[arg(long, value_name = "DIR", help_heading = "Local")]
    pub state_dir: Option<PathBuf>,

    /// API endpoint (Eucalyptus, an emulator, a private endpoint).
    #[arg(
        long,
        visible_alias = "endpoint",
        value_name = "URL",
        help_heading = "Cloud"
    )]
    pub endpoint_url: Option<String>,
    /// AWS region [default: the SDK's chain, else the zone's region].
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
    /// Detach an EBS volume with Force (can lose unflushed writes).
    #[arg(long, help_heading = "Cloud")]
    pub force: bool,
    /// At most this many attach or detach calls at once.
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

fn parse_kind(s: &str) -> Result<ProviderKind, String> {
    ProviderKind::parse(s).ok_or_else(|| "one of ec2, euca, gce, local, static".to_string())
}

impl ProviderArgs {
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

    /// Opens the provider for `kind` with these options.
    pub fn open(&self, kind: ProviderKind) -> Result<Box<dyn Provider>, Failure> {
        let timeout = Duration::from_secs(self.timeout);
        match kind {
            ProviderKind::Local => Ok(Box::new(Local::new(
                Local::state_dir(self.state_dir.clone()),
                self.size,
            ))),
            ProviderKind::Static => Ok(Box::new(Static)),
            ProviderKind::Ec2 | ProviderKind::Euca => {
                let defaults = appscale_persist_ec2::Config::default();
                let cfg = appscale_persist_ec2::Config {
                    kind,
                    endpoint_url: self.endpoint_url.clone(),
                    region: self.region.clone(),
                    profile: self.profile.clone(),
                    instance: self.instance.clone(),
                    on_node: self.on_node,
                    imds_endpoint: self.metadata_endpoint.clone(),
                    zone: self.zone.clone(),
                    size: self.size.unwrap_or(defaults.size),
                    volume_type: self.disk_type.clone().unwrap_or(defaults.volume_type),
                    encrypted: self.encrypted,
                    deployment: self.deployment.clone(),
                    force: self.force,
                    concurrency: self.concurrency,
                    timeout,
                    stuck_after: defaults.stuck_after.min(timeout),
                };
                Ok(Box::new(appscale_persist_ec2::Ec2::new(cfg)?))
            }
            ProviderKind::Gce => appscale_persist_gce::open(appscale_persist_gce::Config {
                endpoint: self.endpoint_url.clone(),
                project: self.project.clone(),
                zone: self.zone.clone(),
                instance: self.instance.clone(),
                on_node: self.on_node,
                metadata_host: self.metadata_endpoint.clone(),
                size: self.size,
                disk_type: self.disk_type.clone(),
                concurrency: self.concurrency,
                timeout,
            }),
        }
    }

    /// The step running `op` over these options.
    pub fn step(self, op: Op) -> ProviderStep {
        let default_provider = self.provider;
        ProviderStep {
            op,
            default_provider,
            open: Box::new(move |kind| self.open(kind)),
        }
    }
}
