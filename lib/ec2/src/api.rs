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
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    AttachmentLimitType, Filter, InstanceType, ResourceType, Tag, TagSpecification,
    VirtualizationType, Volume, VolumeState, VolumeType,
};

use crate::instance::InstanceInfo;
use crate::limits::{self, EbsLimit};
use crate::owner::{TAG_DEPLOYMENT, TAG_KMS_KEY, TAG_NODE};
use crate::{POLL, devices, trace};

/// A connected client ([`Api::connect`], in [`crate::connect`]).
pub struct Api {
    /// The SDK client (the snapshot calls live in [`crate::snapshot`]).
    pub(crate) client: Client,
    /// The credentials provider the client was built with (the client's
    /// config does not say it): `disk-doctor` asks which source it found.
    pub(crate) credentials: Option<aws_sdk_ec2::config::SharedCredentialsProvider>,
    /// EC2, or Eucalyptus: which parameters its calls may carry
    /// ([`crate::euca`]).
    pub(crate) kind: ProviderKind,
    /// The region it signs for.
    pub(crate) region: String,
    /// The endpoint, when not the SDK's own.
    pub(crate) endpoint: Option<String>,
}

/// What a wait is for, on stderr and in its failures.
struct Waited<'a> {
    /// What is waited for ("volumes to be attached").
    label: &'a str,
    /// What one of them is ("volume", "modification").
    what: &'a str,
    /// What one missing from an answer means.
    absent: Absent,
}

/// At most this many values in one filter (`FilterLimitExceeded` beyond:
/// docs.aws.amazon.com/ec2/latest/devguide/ec2-api-pagination.html).
pub const MAX_FILTER_VALUES: usize = 200;

/// At most this many ids in one Describe call.
pub const MAX_IDS: usize = 1000;

/// What a thing waited for (a volume, a modification) missing from a
/// poll's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// It was seen before: gone (`no-such-disk`).
    Gone,
    /// Just made: EC2 shows it only after a while (eventual consistency),
    /// so still pending until the deadline.
    NotYet,
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

impl NewVolume {
    /// Every tag it gets: Name, deployment, node, the operator's.
    pub fn all_tags(&self) -> Vec<(String, String)> {
        let mut tags = vec![
            ("Name".to_string(), self.name.clone()),
            (TAG_DEPLOYMENT.to_string(), self.deployment.clone()),
            (TAG_NODE.to_string(), self.node.clone()),
        ];
        tags.extend(self.tags.iter().cloned());
        tags
    }
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

/// How many client tokens one CreateVolume tries (see
/// [`Api::create_volume`]).
const TOKEN_ATTEMPTS: u32 = 5;

/// The AWS error code of a client token used with other parameters.
const IDEMPOTENT_MISMATCH: &str = "IdempotentParameterMismatch";

/// How far EC2's clock and ours may differ, for telling an earlier run's
/// CreateVolume answer from this run's (both keep NTP time; AWS refuses
/// signatures minutes off).
const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// How many times a volume an earlier run's answer names is looked for
/// before it counts as gone.
const DEAD_CHECKS: u32 = 3;

/// The AWS error code of a ModifyVolume refused for the volume's
/// modification rate.
const MODIFICATION_RATE_EXCEEDED: &str = "VolumeModificationRateExceeded";

/// The AWS error code of a DescribeVolumesModifications naming a volume
/// with no modification (yet).
const MODIFICATION_NOT_FOUND: &str = "InvalidVolumeModification.NotFound";

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
        return ApiError::new(fault, Failure::api(code, format!("{what}: {msg}")));
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

/// `e`, when its AWS error code is `code`, as `too_soon` (a code of ours:
/// `resize-too-soon`, `snapshot-too-soon`): the cloud refuses this for now,
/// nothing is wrong, and `why` says what it waits for.
pub(crate) fn too_soon(mut e: ApiError, code: &str, too_soon: codes::Code, why: &str) -> ApiError {
    if e.failure.code == code {
        e.failure = Failure::new(too_soon, format!("{} [{code}]: {why}", e.failure.message));
    }
    e
}

/// An error and its sources, by their Display texts (never Debug dumps),
/// without the repetitions SDK errors carry.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

impl Api {
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
        // At most MAX_FILTER_VALUES names a call, each call followed to its
        // last page.
        for names in names.chunks(MAX_FILTER_VALUES) {
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
                    break;
                }
            }
        }
        Ok(out)
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
                image_id: i.image_id().map(str::to_string),
            };
            m.insert(id.to_string(), info);
        }
        Ok(m)
    }

    /// The device names each image of `images` maps (normalised: `sdb`):
    /// instance store and the like, which an instance of it uses though
    /// DescribeInstances shows only its EBS volumes, and which EC2 refuses
    /// as "already in use" (one DescribeImages; images not described are
    /// absent).
    pub async fn image_devices(
        &self,
        images: &[String],
    ) -> Result<HashMap<String, HashSet<String>>, ApiError> {
        let mut out = HashMap::new();
        for images in images.chunks(MAX_IDS) {
            trace(format_args!("DescribeImages {}", images.join(" ")));
            let page = self
                .client
                .describe_images()
                .set_image_ids(Some(images.to_vec()))
                .send()
                .await
                .map_err(|e| api_error("DescribeImages", e))?;
            for image in page.images() {
                let Some(id) = image.image_id() else { continue };
                let names = image
                    .block_device_mappings()
                    .iter()
                    .filter_map(|b| b.device_name())
                    .map(devices::normalize)
                    .collect();
                out.insert(id.to_string(), names);
            }
        }
        Ok(out)
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
    /// id; on Eucalyptus, in two calls ([`Api::create_then_tag`]).
    ///
    /// The client token is derived from deployment, node and name (and an
    /// attempt number): a retried call, or a second run at the same time,
    /// makes no second volume, and two deployments never share one. EC2
    /// remembers a token for hours, and answers it with the first answer
    /// even after that volume is gone, or `IdempotentParameterMismatch` when
    /// the parameters changed: then the next attempt's token is used, so a
    /// dead id or a mismatch never stops a later run ([`replayed_dead`]).
    /// The tags make the volume findable on the next run, by this
    /// deployment only.
    pub async fn create_volume(
        &self,
        v: &NewVolume,
        run_start: std::time::SystemTime,
    ) -> Result<String, ApiError> {
        if self.kind == ProviderKind::Euca {
            return self.create_then_tag(v).await;
        }
        let mut last = None;
        for attempt in 0..TOKEN_ATTEMPTS {
            let token = client_token(&v.deployment, &v.node, &v.name, attempt);
            let out = match self.create_volume_with(v, &token).await {
                Err(e) if e.failure.code == IDEMPOTENT_MISMATCH => {
                    trace(format_args!("{token}: {}", e.failure.message));
                    last = Some(e);
                    continue;
                }
                other => other?,
            };
            let id = out.volume_id().map(str::to_string).ok_or_else(|| {
                let f = Failure::new(codes::API_ERROR, "CreateVolume returned no volume id");
                ApiError::new(Fault::ServerError, f)
            })?;
            if self.replayed_dead(&out, &id, run_start).await? {
                trace(format_args!(
                    "{token}: EC2 answered with {id}, an earlier run's volume that is gone"
                ));
                continue;
            }
            return Ok(id);
        }
        Err(last.unwrap_or_else(|| {
            let f = Failure::new(
                codes::CREATE_FAILED,
                format!(
                    "CreateVolume Name={}: every client token answered with a volume that is gone",
                    v.name
                ),
            );
            ApiError::new(Fault::Answered, f)
        }))
    }

    /// Whether CreateVolume's answer `out` (volume `id`) replays an earlier
    /// run's (made before this run began, give or take [`CLOCK_SKEW`]) for
    /// a volume that is gone: deleting, deleted, failed (`error`), or not
    /// found (asked [`DEAD_CHECKS`] times, a few seconds apart, past EC2's
    /// eventual consistency). A replay of a live volume is that volume (the
    /// lookup by tags missed it only for eventual consistency).
    async fn replayed_dead(
        &self,
        out: &aws_sdk_ec2::operation::create_volume::CreateVolumeOutput,
        id: &str,
        run_start: std::time::SystemTime,
    ) -> Result<bool, ApiError> {
        let started = run_start
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let made = out.create_time().map_or(i64::MAX, |t| t.secs());
        if made >= started - CLOCK_SKEW.as_secs() as i64 {
            return Ok(false);
        }
        for check in 0..DEAD_CHECKS {
            if check > 0 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let found = self.volumes_by_id(&[id.to_string()]).await?;
            if let Some(v) = found.get(id) {
                return Ok(matches!(
                    v.state(),
                    Some(VolumeState::Deleting | VolumeState::Deleted | VolumeState::Error)
                ));
            }
        }
        Ok(true)
    }

    /// One CreateVolume with `token`.
    async fn create_volume_with(
        &self,
        v: &NewVolume,
        token: &str,
    ) -> Result<aws_sdk_ec2::operation::create_volume::CreateVolumeOutput, ApiError> {
        trace(format_args!(
            "CreateVolume Name={} zone={} token={token}",
            v.name, v.zone
        ));
        let tag = |k: &str, val: &str| Tag::builder().key(k).value(val).build();
        let mut tags = TagSpecification::builder().resource_type(ResourceType::Volume);
        for (k, val) in v.all_tags() {
            tags = tags.tags(tag(&k, &val));
        }
        if let Some(key) = &v.kms_key {
            tags = tags.tags(tag(TAG_KMS_KEY, key));
        }
        let int = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        self.client
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
            .map_err(|e| api_error(&format!("CreateVolume Name={}", v.name), e))
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
    /// after, on the node (`disk-ensure-fs --grow`). EC2 refusing it for
    /// the volume's modification rate (one at a time, each `completed`
    /// before the next; at most 4 in a rolling 24 hours) is `resize-too-soon`.
    pub async fn grow(&self, vol: &str, gib: u64) -> Result<(), ApiError> {
        trace(format_args!("ModifyVolume {vol} size={gib}"));
        self.client
            .modify_volume()
            .volume_id(vol)
            .size(i32::try_from(gib).unwrap_or(i32::MAX))
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                too_soon(
                    api_error(&format!("ModifyVolume {vol} to {gib} GiB"), e),
                    MODIFICATION_RATE_EXCEEDED,
                    codes::RESIZE_TOO_SOON,
                    "EC2 modifies a volume once its previous modification is `completed`, at most 4 times in a rolling 24 hours; nothing was changed, run disk-create --grow again later",
                )
            })
    }

    /// The latest modification of each of `ids` (those never modified, or
    /// not shown yet right after ModifyVolume, are absent).
    pub async fn modifications(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Modification>, ApiError> {
        batch_or_each(ids, MODIFICATION_NOT_FOUND, |ids| {
            self.describe_modifications(ids)
        })
        .await
    }

    /// The latest modification of each of `ids`, in one call.
    async fn describe_modifications(
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
        let what = Waited {
            label: "volume resizes to take effect",
            what: "modification",
            // Right after ModifyVolume, EC2 may not show it yet.
            absent: Absent::NotYet,
        };
        let describe = |ids: Vec<String>| async move { self.modifications(&ids).await };
        self.wait_for(what, ids, deadline, describe, check).await
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
    /// each is ready or failed. A volume missing from the answer is
    /// `absent`: gone (`no-such-disk`), or not visible yet; those still
    /// pending at the deadline, or when a poll fails for good, get that
    /// [`Unfinished`]. `label` says on stderr what
    /// is waited for ("volumes to be attached", see
    /// [`appscale_persist::progress`]), counting the volumes done.
    pub async fn wait_volumes<T>(
        &self,
        label: &str,
        ids: Vec<String>,
        deadline: &Deadline,
        absent: Absent,
        check: impl Fn(&Volume) -> Poll<T, Failure>,
    ) -> HashMap<String, Result<T, Unfinished>> {
        let what = Waited {
            label,
            what: "volume",
            absent,
        };
        let describe = |ids: Vec<String>| async move { self.volumes_by_id(&ids).await };
        self.wait_for(what, ids, deadline, describe, check).await
    }

    /// Waits for `ids`, one `describe` per round for all still pending,
    /// until `check` says each is ready or failed; one `describe` leaves
    /// out is as `waited.absent` says. Progress on stderr says
    /// `waited.label`, and how many of `ids` are done.
    async fn wait_for<V, T, Fut>(
        &self,
        waited: Waited<'_>,
        ids: Vec<String>,
        deadline: &Deadline,
        describe: impl Fn(Vec<String>) -> Fut,
        check: impl Fn(&V) -> Poll<T, Failure>,
    ) -> HashMap<String, Result<T, Unfinished>>
    where
        Fut: std::future::Future<Output = Result<HashMap<String, V>, ApiError>>,
    {
        let Waited {
            label,
            what,
            absent,
        } = waited;
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
                    None if absent == Absent::NotYet => return true,
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

/// Describes `ids`, at most [`MAX_IDS`] a call. EC2 fails the whole call
/// when one id is unknown (an error code starting with `not_found`); then
/// each id of that call is asked alone, and the unknown ones are simply
/// absent from the answer.
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
    let mut all = HashMap::new();
    for chunk in unique.chunks(MAX_IDS) {
        match describe(chunk.to_vec()).await {
            Err(e) if unknown(&e) => {
                for id in chunk {
                    match describe(vec![id.clone()]).await {
                        Ok(m) => all.extend(m),
                        Err(e) if unknown(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            other => all.extend(other?),
        }
    }
    Ok(all)
}

/// A client token (at most 64 ASCII characters) that is the same for the
/// same deployment, node, disk name and attempt (the first attempt's has
/// no suffix, the next ones `-2`, `-3`, as the EBS CSI driver does).
pub fn client_token(deployment: &str, node: &str, name: &str, attempt: u32) -> String {
    let h = appscale_persist::hash::fnv1a64(0, format!("{deployment}\0{node}\0{name}").as_bytes());
    match attempt {
        0 => format!("appscale-persist-{h:016x}"),
        n => format!("appscale-persist-{h:016x}-{}", n + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_stable_and_distinct() {
        let a = client_token("d", "node-1", "data", 0);
        assert_eq!(a, client_token("d", "node-1", "data", 0));
        assert_ne!(a, client_token("d", "node-2", "data", 0));
        assert_ne!(
            a,
            client_token("e", "node-1", "data", 0),
            "two deployments never share a token"
        );
        assert!(a.len() <= 64 && a.is_ascii());
        let next = client_token("d", "node-1", "data", 1);
        assert_eq!(next, format!("{a}-2"));
        assert!(next.len() <= 64);
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
}
