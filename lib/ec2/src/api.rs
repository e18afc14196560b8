//! The EC2 calls this provider makes, each turning an SDK error into an
//! [`ApiError`]: the record's failure, with the AWS error code when there is
//! one, and its [`Fault`] (may trying again help?).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use appscale_persist::codes;
use appscale_persist::record::ProviderKind;
use appscale_persist::step::Failure;
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{ApiError, Deadline, Fault, Unfinished, poll_until_with};
use aws_config::BehaviorVersion;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    AttachmentLimitType, Filter, InstanceType, ResourceType, Tag, TagSpecification,
    VirtualizationType, Volume, VolumeType,
};

use crate::limits::{self, EbsLimit};
use crate::owner::{TAG_DEPLOYMENT, TAG_KMS_KEY, TAG_NODE};
use crate::{Config, POLL, devices, trace};

/// A connected client.
pub struct Api {
    /// The SDK client (the snapshot calls live in [`crate::snapshot`]).
    pub(crate) client: Client,
    /// The credentials provider the client was built with (the client's
    /// config does not say it): `disk-doctor` asks which source it found.
    pub(crate) credentials: Option<aws_sdk_ec2::config::SharedCredentialsProvider>,
}

/// What the provider needs to know about an instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    /// Its availability zone.
    pub zone: String,
    /// Device names in use (normalised: `sdf`, never `xvdf` or `/dev/`).
    pub devices: HashSet<String>,
    /// Its instance type (`m5.large`), when said.
    pub instance_type: Option<String>,
    /// An HVM instance (not paravirtual): the longer name space.
    pub hvm: bool,
    /// EBS volumes attached (the root volume too).
    pub ebs_volumes: usize,
    /// Network interfaces attached.
    pub network_interfaces: usize,
}

/// The AWS error code of an AttachVolume refused because the instance
/// carries as many volumes as it may.
const ATTACHMENT_LIMIT_EXCEEDED: &str = "AttachmentLimitExceeded";

/// A volume to create.
#[derive(Debug, Clone)]
pub struct NewVolume {
    /// Its Name tag.
    pub name: String,
    /// Its availability zone.
    pub zone: String,
    /// The deployment it is tagged for.
    pub deployment: String,
    /// The node it is tagged for (empty: none).
    pub node: String,
    /// Size in GiB.
    pub gib: u64,
    /// Volume type (`gp3`).
    pub disk_type: String,
    /// Encrypted.
    pub encrypted: bool,
    /// The KMS key (id, alias or ARN), when not the account's default.
    pub kms_key: Option<String>,
    /// Provisioned IOPS.
    pub iops: Option<u64>,
    /// Provisioned throughput, MiB/s.
    pub throughput: Option<u64>,
    /// The operator's own tags (`--tag`).
    pub tags: Vec<(String, String)>,
    /// The snapshot to make it from (`disk-create --from-snapshot`).
    pub snapshot: Option<String>,
}

/// An EBS volume modification's state, as DescribeVolumesModifications
/// says it (`modifying`, `optimizing`, `completed`, `failed`).
#[derive(Debug, Clone)]
pub struct Modification {
    /// Its state.
    pub state: String,
    /// Why it failed, when it did.
    pub message: Option<String>,
}

/// AWS error codes that mean "too many requests".
const THROTTLED: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
];

/// AWS error codes that mean the service failed.
const SERVER_ERROR: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
];

/// What kind of failure an SDK error is: by its AWS error code when it has
/// one, else by the HTTP status, else by how the call failed.
fn fault_of<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Fault {
    let code = e.code().unwrap_or_default();
    if THROTTLED.contains(&code) {
        return Fault::Throttled;
    }
    if SERVER_ERROR.contains(&code) {
        return Fault::ServerError;
    }
    let status = e.raw_response().map(|r| r.status().as_u16());
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Fault::NoAnswer,
        SdkError::ServiceError(_) | SdkError::ResponseError(_) if status.is_some() => {
            Fault::from_http_status(status.unwrap_or_default())
        }
        // An answer that could not be read: a garbled or cut-off response.
        SdkError::ResponseError(_) => Fault::ServerError,
        _ => Fault::Answered,
    }
}

/// What to do about missing credentials.
const CREDENTIALS_HINT: &str =
    " (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role)";

/// Turns an SDK error of the call `what` into an [`ApiError`]: the AWS
/// error code when there is one, else what kind of failure it was.
pub fn api_error<E>(what: &str, e: SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let fault = fault_of(&e);
    if let Some(code) = e.code() {
        let msg = e.message().unwrap_or("no message");
        return ApiError::new(fault, Failure::new(code, format!("{what}: {msg}")));
    }
    let chain = error_chain(&e);
    let (fault, code, hint) = if chain.contains("credential") {
        (
            Fault::NoCredentials,
            codes::NO_CREDENTIALS,
            CREDENTIALS_HINT,
        )
    } else {
        let code = match &e {
            SdkError::TimeoutError(_) => codes::TIMEOUT,
            SdkError::DispatchFailure(_) => codes::UNREACHABLE,
            _ => codes::API_ERROR,
        };
        (fault, code, "")
    };
    ApiError::new(fault, Failure::new(code, format!("{what}: {chain}{hint}")))
}

/// An error and its sources, by their Display texts (never Debug dumps),
/// without the repetitions SDK errors carry.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let text = text.trim();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_string());
        }
        cur = err.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// Region `us-east-1` from zone `us-east-1b` (or the Local Zone
/// `us-east-1-bos-1a`).
fn region_of_zone(zone: &str) -> Option<String> {
    appscale_persist::appscalefile::ec2_region_of_zone(zone).map(str::to_string)
}

/// The region Eucalyptus signs for when none is configured.
pub const EUCA_DEFAULT_REGION: &str = "eucalyptus";

/// The region of an endpoint: the first label of its host shaped like an
/// AWS region (`ec2.us-east-1.amazonaws.com`, `ec2.eu-west-2.example.net`
/// give `us-east-1`, `eu-west-2`), if any.
fn region_of_endpoint(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':', '?', '#']).next().unwrap_or_default();
    host.split('.')
        .find(|label| {
            let words: Vec<&str> = label.split('-').collect();
            words.len() >= 3
                && words[..words.len() - 1]
                    .iter()
                    .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
                && words[words.len() - 1].chars().all(|c| c.is_ascii_digit())
                && !words[words.len() - 1].is_empty()
        })
        .map(str::to_string)
}

/// The region when neither `--region` nor the SDK's chain gives one.
///
/// EC2: the zone's region (`us-east-1b`: `us-east-1`), else the endpoint's.
/// Eucalyptus (one region per cloud, whose name only scopes the request
/// signature): the endpoint's region-shaped host label, else
/// [`EUCA_DEFAULT_REGION`]; without an endpoint, an error saying to set
/// `EC2_URL` (its zones are free-form: they name no region).
fn default_region(cfg: &Config, zone_hint: Option<&str>) -> Result<String, Failure> {
    let endpoint = cfg.endpoint_url.as_deref();
    if cfg.kind == ProviderKind::Euca {
        return match endpoint {
            Some(url) => Ok(region_of_endpoint(url).unwrap_or_else(|| EUCA_DEFAULT_REGION.into())),
            None => Err(Failure::new(
                codes::NO_REGION,
                "Eucalyptus needs its endpoint: set `EC2_URL` in the AppScalefile (and pass --appscalefile), or pass --endpoint-url; the region then defaults from it (or pass --region)",
            )),
        };
    }
    zone_hint
        .and_then(region_of_zone)
        .or_else(|| endpoint.and_then(region_of_endpoint))
        .ok_or_else(|| {
            Failure::new(
                codes::NO_REGION,
                "no AWS region: set AWS_REGION, pass --region, or give the AppScalefile an EC2 `zone` (like us-east-1b); on Eucalyptus use `infrastructure: euca` with `EC2_URL` (its zones name no region)",
            )
        })
}

impl Api {
    /// Builds a client from the standard AWS configuration chain and `cfg`.
    ///
    /// Credentials: the AWS default chain (environment, profile, web
    /// identity, container, instance role); when it finds none and
    /// `cfg.file_credentials` is set, those. The region: `cfg.region`, the
    /// chain's, else [`default_region`].
    pub async fn connect(cfg: &Config, zone_hint: Option<&str>) -> Result<Api, Failure> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(u) = &cfg.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if let Some((id, secret)) = &cfg.file_credentials {
            let mut chain = DefaultCredentialsChain::builder();
            if let Some(p) = &cfg.profile {
                chain = chain.profile_name(p);
            }
            if let Some(r) = &cfg.region {
                chain = chain.region(Region::new(r.clone()));
            }
            let from_file = Credentials::new(id, secret.expose(), None, None, "AppScalefile");
            loader = loader.credentials_provider(
                CredentialsProviderChain::first_try("default chain", chain.build().await)
                    .or_else("AppScalefile EC2_ACCESS_KEY", from_file),
            );
        }
        let sdk = loader.load().await;
        let mut conf = aws_sdk_ec2::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            conf = conf.region(Region::new(default_region(cfg, zone_hint)?));
        }
        Ok(Api {
            client: Client::from_conf(conf.build()),
            credentials: sdk.credentials_provider(),
        })
    }

    /// Volumes by id, in one call when all exist (unknown ones absent).
    pub async fn volumes_by_id(&self, ids: &[String]) -> Result<HashMap<String, Volume>, ApiError> {
        batch_or_each(ids, "InvalidVolume", |chunk| self.describe(chunk)).await
    }

    async fn describe(&self, ids: Vec<String>) -> Result<HashMap<String, Volume>, ApiError> {
        trace(format_args!("DescribeVolumes {}", ids.join(" ")));
        let out = self
            .client
            .describe_volumes()
            .set_volume_ids(Some(ids))
            .send()
            .await
            .map_err(|e| api_error("DescribeVolumes", e))?;
        Ok(out
            .volumes()
            .iter()
            .filter_map(|v| Some((v.volume_id()?.to_string(), v.clone())))
            .collect())
    }

    /// Volumes tagged `Name=<name>` (not being deleted), grouped by name.
    pub async fn volumes_by_name(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, Vec<Volume>>, ApiError> {
        let mut out: HashMap<String, Vec<Volume>> = HashMap::new();
        if names.is_empty() {
            return Ok(out);
        }
        trace(format_args!("DescribeVolumes tag:Name={}", names.join(",")));
        let live = Filter::builder()
            .name("status")
            .values("creating")
            .values("available")
            .values("in-use")
            .build();
        let named = Filter::builder()
            .name("tag:Name")
            .set_values(Some(names.to_vec()))
            .build();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_volumes()
                .filters(named.clone())
                .filters(live.clone())
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeVolumes", e))?;
            for v in page.volumes() {
                if let Some(name) = crate::owner::tag(v, "Name") {
                    out.entry(name.to_string()).or_default().push(v.clone());
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Zone and device names in use of each instance (unknown ones absent).
    pub async fn instances(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, InstanceInfo>, ApiError> {
        batch_or_each(ids, "InvalidInstanceID", |chunk| {
            self.describe_instances(chunk)
        })
        .await
    }

    async fn describe_instances(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, InstanceInfo>, ApiError> {
        trace(format_args!("DescribeInstances {}", ids.join(" ")));
        let out = self
            .client
            .describe_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
            .map_err(|e| api_error("DescribeInstances", e))?;
        let mut m = HashMap::new();
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            let Some(id) = i.instance_id() else { continue };
            let zone = i.placement().and_then(|p| p.availability_zone());
            let devices = i
                .block_device_mappings()
                .iter()
                .filter_map(|b| b.device_name())
                .chain(i.root_device_name())
                .map(devices::normalize)
                .collect();
            let info = InstanceInfo {
                zone: zone.unwrap_or_default().to_string(),
                devices,
                instance_type: i.instance_type().map(|t| t.as_str().to_string()),
                hvm: i.virtualization_type() == Some(&VirtualizationType::Hvm),
                ebs_volumes: i
                    .block_device_mappings()
                    .iter()
                    .filter(|b| b.ebs().is_some())
                    .count(),
                network_interfaces: i.network_interfaces().len(),
            };
            m.insert(id.to_string(), info);
        }
        Ok(m)
    }

    /// How many EBS volumes each instance type of `types` takes (one
    /// DescribeInstanceTypes); types the answer does not describe are
    /// absent.
    pub async fn ebs_limits(
        &self,
        types: &[String],
    ) -> Result<HashMap<String, EbsLimit>, ApiError> {
        trace(format_args!("DescribeInstanceTypes {}", types.join(" ")));
        let wanted: Vec<InstanceType> = types
            .iter()
            .map(|t| InstanceType::from(t.as_str()))
            .collect();
        let mut out = HashMap::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_instance_types()
                .set_instance_types(Some(wanted.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeInstanceTypes", e))?;
            for t in page.instance_types() {
                let (Some(name), Some(ebs)) = (t.instance_type(), t.ebs_info()) else {
                    continue;
                };
                let Some(max) = ebs.maximum_ebs_attachments() else {
                    continue;
                };
                let limit = EbsLimit {
                    max: usize::try_from(max).unwrap_or(0),
                    shared: ebs.attachment_limit_type() != Some(&AttachmentLimitType::Dedicated),
                };
                out.insert(name.as_str().to_string(), limit);
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Creates a volume tagged for its deployment and node and returns its
    /// id. The client token is derived from deployment, node and name, so a
    /// retried call cannot make a second volume on real EC2, and two
    /// deployments never share one; the tags make it findable on the next
    /// run, by this deployment only.
    pub async fn create_volume(&self, v: &NewVolume) -> Result<String, ApiError> {
        let token = client_token(&v.deployment, &v.node, &v.name);
        trace(format_args!(
            "CreateVolume Name={} zone={} token={token}",
            v.name, v.zone
        ));
        let tag = |k: &str, val: &str| Tag::builder().key(k).value(val).build();
        let mut tags = TagSpecification::builder()
            .resource_type(ResourceType::Volume)
            .tags(tag("Name", &v.name))
            .tags(tag(TAG_DEPLOYMENT, &v.deployment))
            .tags(tag(TAG_NODE, &v.node));
        if let Some(key) = &v.kms_key {
            tags = tags.tags(tag(TAG_KMS_KEY, key));
        }
        for (k, val) in &v.tags {
            tags = tags.tags(tag(k, val));
        }
        let int = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        let out = self
            .client
            .create_volume()
            .availability_zone(&v.zone)
            .size(int(v.gib))
            .volume_type(VolumeType::from(v.disk_type.as_str()))
            .encrypted(v.encrypted || v.kms_key.is_some())
            .set_kms_key_id(v.kms_key.clone())
            .set_iops(v.iops.map(int))
            .set_throughput(v.throughput.map(int))
            .set_snapshot_id(v.snapshot.clone())
            .client_token(token)
            .tag_specifications(tags.build())
            .send()
            .await
            .map_err(|e| api_error(&format!("CreateVolume Name={}", v.name), e))?;
        out.volume_id().map(str::to_string).ok_or_else(|| {
            let f = Failure::new(codes::API_ERROR, "CreateVolume returned no volume id");
            ApiError::new(Fault::ServerError, f)
        })
    }

    /// Tags a volume made by hand for `deployment` (and `node`, when known):
    /// adopting it, so that no other deployment takes it afterwards.
    pub async fn adopt(
        &self,
        vol: &str,
        deployment: &str,
        node: Option<&str>,
    ) -> Result<(), ApiError> {
        trace(format_args!(
            "CreateTags {vol} {TAG_DEPLOYMENT}={deployment}"
        ));
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let mut call = self
            .client
            .create_tags()
            .resources(vol)
            .tags(tag(TAG_DEPLOYMENT, deployment));
        if let Some(n) = node {
            call = call.tags(tag(TAG_NODE, n));
        }
        call.send()
            .await
            .map(drop)
            .map_err(|e| api_error(&format!("CreateTags {vol}"), e))
    }

    /// Gives `vol` the tags `tags` (`--retag`), leaving its others alone.
    pub async fn tag(&self, vol: &str, tags: &[(String, String)]) -> Result<(), ApiError> {
        trace(format_args!("CreateTags {vol} ({} tags)", tags.len()));
        let tags = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        self.client
            .create_tags()
            .resources(vol)
            .set_tags(Some(tags))
            .send()
            .await
            .map(drop)
            .map_err(|e| api_error(&format!("CreateTags {vol}"), e))
    }

    /// Grows `vol` to `gib` GiB (ModifyVolume). Its filesystem is grown
    /// after, on the node (`disk-ensure-fs --grow`).
    pub async fn grow(&self, vol: &str, gib: u64) -> Result<(), ApiError> {
        trace(format_args!("ModifyVolume {vol} size={gib}"));
        self.client
            .modify_volume()
            .volume_id(vol)
            .size(i32::try_from(gib).unwrap_or(i32::MAX))
            .send()
            .await
            .map(drop)
            .map_err(|e| api_error(&format!("ModifyVolume {vol} to {gib} GiB"), e))
    }

    /// The latest modification of each of `ids`, in one call.
    async fn modifications(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Modification>, ApiError> {
        trace(format_args!(
            "DescribeVolumesModifications {}",
            ids.join(" ")
        ));
        let out = self
            .client
            .describe_volumes_modifications()
            .set_volume_ids(Some(ids))
            .send()
            .await
            .map_err(|e| api_error("DescribeVolumesModifications", e))?;
        let mut latest: HashMap<String, (Option<f64>, Modification)> = HashMap::new();
        for m in out.volumes_modifications() {
            let Some(id) = m.volume_id() else { continue };
            let started = m.start_time().map(|t| t.as_secs_f64());
            let this = Modification {
                state: m
                    .modification_state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                message: m.status_message().map(str::to_string),
            };
            match latest.get(id) {
                Some((t, _)) if *t > started => {}
                _ => {
                    latest.insert(id.to_string(), (started, this));
                }
            }
        }
        Ok(latest.into_iter().map(|(k, (_, m))| (k, m)).collect())
    }

    /// Those of `ids` whose latest modification is still `modifying`.
    pub async fn modifying(&self, ids: Vec<String>) -> Result<Vec<String>, ApiError> {
        Ok(self
            .modifications(ids)
            .await?
            .into_iter()
            .filter(|(_, m)| m.state == "modifying")
            .map(|(id, _)| id)
            .collect())
    }

    /// Waits until the modification of each of `ids` is usable
    /// (`optimizing` or `completed`: the volume has its new size; EBS goes
    /// on optimizing it in the background), one
    /// DescribeVolumesModifications per round; `failed` fails
    /// (`resize-failed`).
    pub async fn wait_modified(
        &self,
        ids: Vec<String>,
        deadline: &Deadline,
    ) -> HashMap<String, Result<Modification, Unfinished>> {
        let check = |m: &Modification| match m.state.as_str() {
            "optimizing" | "completed" => Poll::Ready(m.clone()),
            "failed" => Poll::Failed(Failure::new(
                codes::RESIZE_FAILED,
                format!(
                    "the modification failed: {}",
                    m.message.as_deref().unwrap_or("EC2 gave no reason")
                ),
            )),
            _ => Poll::Pending,
        };
        self.wait_for(
            "volume resizes to take effect",
            ids,
            deadline,
            |ids| self.modifications(ids),
            check,
            "modification",
        )
        .await
    }

    /// Attaches `vol` to `instance` as `device`. EC2 refusing it because
    /// the instance carries as many volumes as it may (which counts what
    /// only EC2 knows: network interfaces, instance store) is
    /// `attachment-limit`, as when the plan finds that itself.
    pub async fn attach(&self, vol: &str, instance: &str, device: &str) -> Result<(), ApiError> {
        trace(format_args!("AttachVolume {vol} {instance} {device}"));
        self.client
            .attach_volume()
            .volume_id(vol)
            .instance_id(instance)
            .device(device)
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                let mut e = api_error(&format!("AttachVolume {vol} to {instance}"), e);
                if e.failure.code == ATTACHMENT_LIMIT_EXCEEDED {
                    e.failure = limits::refused_by_ec2(instance, &e.failure.message);
                }
                e
            })
    }

    /// Detaches `vol` from `instance` (always naming the instance); `force`:
    /// EBS's Force, for a volume stuck detaching.
    pub async fn detach(&self, vol: &str, instance: &str, force: bool) -> Result<(), ApiError> {
        trace(format_args!("DetachVolume {vol} {instance} force={force}"));
        self.client
            .detach_volume()
            .volume_id(vol)
            .instance_id(instance)
            .force(force)
            .send()
            .await
            .map(drop)
            .map_err(|e| api_error(&format!("DetachVolume {vol} from {instance}"), e))
    }

    /// Waits for the volumes `ids`, one DescribeVolumes per round for all
    /// still pending ([`poll_until_with`] under `deadline`), until `check` says
    /// each is ready or failed. A volume that disappears fails
    /// (`no-such-disk`); those still pending at the deadline, or when a poll
    /// fails for good, get that [`Unfinished`]. `label` says on stderr what
    /// is waited for ("volumes to be attached", see
    /// [`appscale_persist::progress`]), counting the volumes done.
    pub async fn wait_volumes<T>(
        &self,
        label: &str,
        ids: Vec<String>,
        deadline: &Deadline,
        check: impl Fn(&Volume) -> Poll<T, Failure>,
    ) -> HashMap<String, Result<T, Unfinished>> {
        self.wait_for(
            label,
            ids,
            deadline,
            |ids| async move { self.volumes_by_id(&ids).await },
            check,
            "volume",
        )
        .await
    }

    /// Waits for `ids`, one `describe` per round for all still pending,
    /// until `check` says each is ready or failed; one `describe` leaves
    /// out is gone (`no-such-disk`, naming `what` of it disappeared).
    /// Progress on stderr says `label`, and how many of `ids` are done.
    async fn wait_for<V, T, Fut>(
        &self,
        label: &str,
        ids: Vec<String>,
        deadline: &Deadline,
        describe: impl Fn(Vec<String>) -> Fut,
        check: impl Fn(&V) -> Poll<T, Failure>,
        what: &str,
    ) -> HashMap<String, Result<T, Unfinished>>
    where
        Fut: std::future::Future<Output = Result<HashMap<String, V>, ApiError>>,
    {
        if ids.is_empty() {
            return HashMap::new();
        }
        let progress = deadline.progress(label, ids.len() as u64);
        // Still pending, and done: what each round leaves for the next.
        let state = Mutex::new((ids, HashMap::new()));
        let round = || async {
            let pending = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .clone();
            let found = describe(pending).await?;
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            let (pending, done) = &mut *state;
            pending.retain(|id| {
                let result = match found.get(id).map(&check) {
                    Some(Poll::Pending) => return true,
                    Some(Poll::Ready(t)) => Ok(t),
                    Some(Poll::Failed(f)) => Err(Unfinished::Failed(f)),
                    None => Err(Unfinished::Failed(Failure::new(
                        codes::NO_SUCH_DISK,
                        format!("the {what} of volume {id} disappeared"),
                    ))),
                };
                done.insert(id.clone(), result);
                false
            });
            progress.set_done(done.len() as u64);
            Ok(if pending.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            })
        };
        let waited = poll_until_with(&progress, deadline.schedule(POLL), round).await;
        let (pending, mut done) = state.into_inner().unwrap_or_else(PoisonError::into_inner);
        if let Err(unfinished) = waited {
            for id in pending {
                done.insert(id, Err(unfinished.clone()));
            }
        }
        done
    }
}

/// Describes `ids` in one call. EC2 fails the whole call when one id is
/// unknown (an error code starting with `not_found`); then each id is asked
/// alone, and the unknown ones are simply absent from the answer.
async fn batch_or_each<T, Fut>(
    ids: &[String],
    not_found: &str,
    describe: impl Fn(Vec<String>) -> Fut,
) -> Result<HashMap<String, T>, ApiError>
where
    Fut: std::future::Future<Output = Result<HashMap<String, T>, ApiError>>,
{
    let unique: Vec<String> = ids
        .iter()
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if unique.is_empty() {
        return Ok(HashMap::new());
    }
    let unknown = |e: &ApiError| e.failure.code.starts_with(not_found);
    match describe(unique.clone()).await {
        Err(e) if unknown(&e) => {
            let mut all = HashMap::new();
            for id in unique {
                match describe(vec![id]).await {
                    Ok(m) => all.extend(m),
                    Err(e) if unknown(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(all)
        }
        other => other,
    }
}

/// A client token (at most 64 ASCII characters) that is the same for the
/// same deployment, node and disk name.
pub fn client_token(deployment: &str, node: &str, name: &str) -> String {
    let h = appscale_persist::hash::fnv1a64(0, format!("{deployment}\0{node}\0{name}").as_bytes());
    format!("appscale-persist-{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_stable_and_distinct() {
        let a = client_token("d", "node-1", "data");
        assert_eq!(a, client_token("d", "node-1", "data"));
        assert_ne!(a, client_token("d", "node-2", "data"));
        assert_ne!(
            a,
            client_token("e", "node-1", "data"),
            "two deployments never share a token"
        );
        assert!(a.len() <= 64 && a.is_ascii());
    }

    #[test]
    fn error_chains_read_as_text_without_repeats() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "dispatch failure",
            Some(Box::new(E("io error", Some(Box::new(E("io error", None)))))),
        );
        assert_eq!(error_chain(&e), "dispatch failure: io error");
    }

    #[test]
    fn regions_come_from_zones() {
        assert_eq!(region_of_zone("us-east-1b").as_deref(), Some("us-east-1"));
        assert_eq!(
            region_of_zone("eu-central-1a").as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(region_of_zone("euca"), None);
    }

    #[test]
    fn eucalyptus_regions_come_from_the_endpoint() {
        let euca = |url: Option<&str>| Config {
            kind: ProviderKind::Euca,
            endpoint_url: url.map(str::to_string),
            ..Config::default()
        };
        let region = |c: &Config, zone: Option<&str>| default_region(c, zone);
        assert_eq!(
            region(
                &euca(Some("http://10.1.2.3:8773/services/compute")),
                Some("euca-zone-1")
            )
            .unwrap(),
            EUCA_DEFAULT_REGION
        );
        assert_eq!(
            region(
                &euca(Some("https://ec2.us-west-9.cloud.example.com/")),
                None
            )
            .unwrap(),
            "us-west-9"
        );
        let e = region(&euca(None), Some("euca-zone-1")).unwrap_err();
        assert_eq!(e.code, codes::NO_REGION);
        assert!(e.message.contains("EC2_URL"), "{}", e.message);
        let ec2 = Config::default();
        assert_eq!(region(&ec2, Some("us-east-1b")).unwrap(), "us-east-1");
        let e = region(&ec2, Some("euca-zone-1")).unwrap_err();
        assert!(e.message.contains("infrastructure: euca"), "{}", e.message);
        let private = Config {
            endpoint_url: Some("https://ec2.eu-west-2.amazonaws.com".into()),
            ..Config::default()
        };
        assert_eq!(region(&private, None).unwrap(), "eu-west-2");
    }
}
