//! The Compute Engine calls this provider makes: every call bounded by a
//! timeout, every error turned into an [`ApiError`] (the record's failure,
//! and its [`Fault`]: may trying again help?).
//!
//! Retries ([`SafeRetry`]): a call is tried again on throttling (429), a
//! server error (5xx) or a dropped connection only when that is safe: reads,
//! and mutating calls marked idempotent, which all carry a `requestId` (a
//! repeated request with the same id is the same request to Compute
//! Engine). Waiting on an operation survives failed polls until its
//! deadline ([`Api::wait`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appscale_persist::codes::{self, Code};
use appscale_persist::log;
use appscale_persist::progress::Progress;
use appscale_persist::step::Failure;
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{ApiError, Deadline, Fault, failures, poll_until_with};
use google_cloud_compute_v1::client::{Disks, Instances, Snapshots, ZoneOperations};
use google_cloud_compute_v1::model::{AttachedDisk, Disk, Operation, attached_disk, operation};
use google_cloud_compute_v1::model::{
    CustomerEncryptionKey, DisksResizeRequest, ZoneSetLabelsRequest,
};
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicy, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;

use crate::POLL;

/// No single API call may take longer than this. Without credentials the
/// client waits for ever before sending anything; this turns that into an
/// error that says so.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The most items one page of a list call asks for (Compute Engine's
/// largest `maxResults`); the service may send fewer, and a
/// `nextPageToken` for the rest, which is always followed.
pub(crate) const MAX_RESULTS: u32 = 500;

/// The longest list filter sent in one request, in characters: Compute
/// Engine documents no number, but a filter travels in the URL, which
/// Google's front end bounds; lookups of many disks are split into filters
/// of at most this length ([`name_filters`]), as EC2's are into 200 values.
pub(crate) const MAX_FILTER: usize = 3000;

/// `names` as `(name = "A") OR (name = "B") ...` filters of at most
/// [`MAX_FILTER`] characters, each with the names it asks for.
pub(crate) fn name_filters(names: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for n in names {
        let term = format!("(name = \"{n}\")");
        match out.last_mut() {
            Some((f, chunk)) if f.len() + 4 + term.len() <= MAX_FILTER => {
                f.push_str(" OR ");
                f.push_str(&term);
                chunk.push(n.clone());
            }
            _ => out.push((term, vec![n.clone()])),
        }
    }
    out
}

/// The region of a zone: `us-central1-a` → `us-central1`.
pub fn region_of(zone: &str) -> &str {
    zone.rsplit_once('-').map(|(r, _)| r).unwrap_or(zone)
}

/// How long one call is tried again when it may be (throttled, a server
/// error, no answer): long enough for a per-minute rate quota to refill
/// (Compute Engine refills it at the start of the next minute), short
/// enough that an endpoint that never answers is said within two minutes.
const RETRY_TIME: Duration = Duration::from_secs(120);

/// Where a zonal resource is: a project and a zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Project id.
    pub project: String,
    /// Zone.
    pub zone: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of project {}", self.zone, self.project)
    }
}

/// What the provider needs to know about a disk.
#[derive(Debug, Clone)]
pub struct DiskInfo {
    /// Its name.
    pub name: String,
    /// Size in GB (GiB: Compute Engine's GB are binary).
    pub size_gb: i64,
    /// `pd-balanced`, `pd-ssd`, ...
    pub disk_type: String,
    /// Its zone.
    pub zone: String,
    /// `READY`, `CREATING`, ... (empty when not said).
    pub status: String,
    /// Names of the instances using it.
    pub users: Vec<String>,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// The Cloud KMS key it is encrypted with (Compute Engine says the key
    /// version: `.../cryptoKeys/K/cryptoKeyVersions/1`); `None`: a
    /// Google-managed key.
    pub kms_key: Option<String>,
    /// Provisioned IOPS, for the types that take them.
    pub iops: Option<i64>,
    /// Provisioned throughput, MiB/s, for the types that take it.
    pub throughput: Option<i64>,
    /// When it was made (RFC 3339), when said.
    pub created: Option<String>,
    /// When it was last attached (`lastAttachTimestamp`, RFC 3339), when
    /// said: an unmount proof older than this speaks of an earlier
    /// attachment.
    pub last_attach: Option<String>,
}

/// A disk to create.
#[derive(Debug, Clone)]
pub struct NewDisk {
    /// Size in GB (GiB).
    pub size_gb: i64,
    /// Disk type (`pd-balanced`).
    pub disk_type: String,
    /// Cloud KMS key name, when not Google-managed.
    pub kms_key: Option<String>,
    /// Provisioned IOPS.
    pub iops: Option<i64>,
    /// Provisioned throughput, MiB/s.
    pub throughput: Option<i64>,
    /// The operator's own labels (`--tag`), besides the deployment's.
    pub labels: Vec<(String, String)>,
    /// The snapshot (its name) to make it from (`disk-create
    /// --from-snapshot`); `None`: a blank disk.
    pub source_snapshot: Option<String>,
}

impl DiskInfo {
    /// Still being made (or restored): not usable yet.
    pub fn is_creating(&self) -> bool {
        matches!(self.status.as_str(), "CREATING" | "RESTORING")
    }

    /// `name (10 GB pd-balanced) in zone`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} GB {}) in {}",
            self.name, self.size_gb, self.disk_type, self.zone
        )
    }
}

/// A disk attached to an instance, and as which device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedAs {
    /// The disk's name.
    pub disk: String,
    /// Its device name on the instance.
    pub device: String,
}

/// What the provider needs to know about an instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    /// Each attached disk.
    pub disks: Vec<AttachedAs>,
    /// Its machine type (`n2-standard-4`), when said.
    pub machine_type: Option<String>,
}

impl InstanceInfo {
    /// The device name `disk` is attached as.
    pub fn device_of(&self, disk: &str) -> Option<String> {
        self.disks
            .iter()
            .find(|a| a.disk == disk)
            .map(|a| a.device.clone())
    }
}

/// The last path segment of a resource URL (`.../zones/us-central1-a` →
/// `us-central1-a`).
pub fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Connected clients.
pub struct Api {
    pub(crate) disks: Disks,
    /// Instances (attachDisk read-only: [`crate::scratch`]).
    pub(crate) instances: Instances,
    ops: ZoneOperations,
    /// Snapshots (global), and their global operations
    /// ([`crate::snapshot`]).
    pub(crate) snapshots: Snapshots,
}

/// The reasons Compute Engine gives for an error: its `errors[].reason`
/// (`rateLimitExceeded`, `insufficientPermissions`, ...) or, when it sends
/// them, the `ErrorInfo` details' reasons (`ACCESS_TOKEN_SCOPE_INSUFFICIENT`,
/// `RATE_LIMIT_EXCEEDED`): the client keeps one or the other.
fn reasons(e: &google_cloud_gax::error::Error) -> Vec<&str> {
    use google_cloud_gax::error::rpc::StatusDetails;
    e.status()
        .map(|s| {
            s.details
                .iter()
                .filter_map(|d| match d {
                    StatusDetails::ErrorInfo(i) => Some(i.reason.as_str()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A 403 that is a per-minute rate quota, not a refusal: Compute Engine
/// answers an exceeded rate quota with 403 and the reason
/// `rateLimitExceeded` (or `userRateLimitExceeded`; `RATE_LIMIT_EXCEEDED`
/// in the details of newer front ends), "wait a minute and try again"
/// (cloud.google.com/compute/api-quota).
fn is_rate_limited(e: &google_cloud_gax::error::Error) -> bool {
    e.http_status_code() == Some(403)
        && reasons(e).iter().any(|r| {
            [
                "rateLimitExceeded",
                "userRateLimitExceeded",
                "RATE_LIMIT_EXCEEDED",
            ]
            .contains(r)
        })
}

/// A 403 because the access token lacks the Compute Engine scope (a VM
/// with the default access scopes): `ACCESS_TOKEN_SCOPE_INSUFFICIENT`.
fn is_scope_insufficient(e: &google_cloud_gax::error::Error) -> bool {
    e.http_status_code() == Some(403) && reasons(e).contains(&"ACCESS_TOKEN_SCOPE_INSUFFICIENT")
}

/// A 403 because the project has not enabled the Compute Engine API.
fn is_api_disabled(e: &google_cloud_gax::error::Error) -> bool {
    reasons(e)
        .iter()
        .any(|r| ["accessNotConfigured", "SERVICE_DISABLED"].contains(r))
}

/// A 403's code: its status, `PERMISSION_DENIED` when it says none (the
/// older error shape carries only `errors[].reason`).
fn permission_denied(s: &google_cloud_gax::error::rpc::Status) -> Code {
    match s.code {
        google_cloud_gax::error::rpc::Code::Unknown => Code::from_api("PERMISSION_DENIED"),
        c => Code::from_api(c.name()),
    }
}

/// What kind of failure a client error is: by its HTTP status when it has
/// one (a 403 rate quota is throttling, as 429 is), else by how the call
/// failed.
fn fault_of(e: &google_cloud_gax::error::Error) -> Fault {
    match e.http_status_code() {
        Some(403) if is_rate_limited(e) => Fault::Throttled,
        Some(status) => Fault::from_http_status(status),
        None if e.is_io() || e.is_timeout() || e.is_connect() || e.is_transport() => {
            Fault::NoAnswer
        }
        None if e.is_authentication() => Fault::NoCredentials,
        None => Fault::Answered,
    }
}

/// Turns a client error of the call `what` into an [`ApiError`]: the
/// Compute Engine status when there is one, else `HTTP_<status>`, else what
/// kind of failure it was.
pub(crate) fn api_error(what: &str, e: google_cloud_gax::error::Error) -> ApiError {
    let fault = fault_of(&e);
    let (code, msg) = match (e.status(), e.http_status_code()) {
        (Some(s), _) if is_scope_insufficient(&e) => (
            codes::INSUFFICIENT_SCOPE,
            format!(
                "{}: the access token lacks the Compute Engine scope (a VM made with the default access scopes has none). Give the instance the `compute` or `cloud-platform` scope (stop it, then `gcloud compute instances set-service-account VM --scopes=cloud-platform`), or use other credentials; its service account also needs the IAM roles in docs/gce.md",
                s.message
            ),
        ),
        (Some(s), Some(403)) if fault == Fault::Throttled => (
            Code::from_api(reasons(&e).first().copied().unwrap_or("rateLimitExceeded")),
            format!(
                "{} (a per-minute rate quota of the project: tried again)",
                s.message
            ),
        ),
        (Some(s), Some(403)) if is_api_disabled(&e) => (
            permission_denied(s),
            format!(
                "{}: the Compute Engine API is not enabled in the project: `gcloud services enable compute.googleapis.com`",
                s.message
            ),
        ),
        (Some(s), Some(403)) => (
            permission_denied(s),
            format!(
                "{}{}: the credentials lack an IAM permission this call needs (docs/gce.md lists each tool's); not tried again",
                s.message,
                reasons(&e)
                    .first()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ),
        (Some(s), _) => (Code::from_api(s.code.name()), s.message.clone()),
        (None, Some(h)) => (Code::from_api(format!("HTTP_{h}")), e.to_string()),
        (None, None) if e.is_authentication() => (
            codes::NO_CREDENTIALS,
            format!(
                "{e} (Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, or run on an instance with a service account)"
            ),
        ),
        (None, None) if e.is_timeout() => (codes::TIMEOUT, e.to_string()),
        (None, None) if e.is_connect() || e.is_transport() => (codes::UNREACHABLE, e.to_string()),
        (None, None) => (codes::API_ERROR, e.to_string()),
    };
    ApiError::new(fault, Failure::new(code, format!("{what}: {msg}")))
}

pub(crate) fn is_not_found(e: &google_cloud_gax::error::Error) -> bool {
    e.http_status_code() == Some(404)
}

/// The retry policy of every call: [`Aip194Strict`] (UNAVAILABLE, and
/// transport errors of idempotent calls), plus 429 and every 5xx for
/// idempotent calls only: reads, and mutating calls carrying a `requestId`.
/// A mutating call without one is never sent twice.
#[derive(Debug, Clone)]
pub struct SafeRetry;

impl RetryPolicy for SafeRetry {
    fn on_error(&self, state: &RetryState, error: google_cloud_gax::error::Error) -> RetryResult {
        if state.idempotent && fault_of(&error).is_transient() {
            return RetryResult::Continue(error);
        }
        Aip194Strict.on_error(state, error)
    }
}

/// Awaits one call under [`CALL_TIMEOUT`]: no answer in time is an
/// [`ApiError`]; the call's own error is left to the caller.
pub(crate) async fn bounded<T>(
    what: &str,
    fut: impl std::future::Future<Output = google_cloud_gax::Result<T>>,
) -> Result<google_cloud_gax::Result<T>, ApiError> {
    log::debug(format_args!("{what}"));
    tokio::time::timeout(CALL_TIMEOUT, fut).await.map_err(|_| {
        ApiError::new(
            Fault::NoAnswer,
            Failure::new(
                codes::TIMEOUT,
                format!(
                    "{what}: no answer within {CALL_TIMEOUT:?} (are Application Default Credentials available?)"
                ),
            ),
        )
    })
}

/// [`bounded`], for a call whose every error is a failure.
pub(crate) async fn call<T>(
    what: &str,
    fut: impl std::future::Future<Output = google_cloud_gax::Result<T>>,
) -> Result<T, ApiError> {
    bounded(what, fut).await?.map_err(|e| api_error(what, e))
}

/// A fresh request id (a UUID, as Compute Engine requires): the same id is
/// sent again only when the client retries this very call.
pub(crate) fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}/{}/{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let h = |salt: u64| appscale_persist::hash::fnv1a64(salt, seed.as_bytes());
    let (a, b) = (h(1), h(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48 & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

pub(crate) fn idempotent() -> RequestOptions {
    let mut o = RequestOptions::default();
    o.set_idempotency(true);
    o
}

impl Api {
    /// Builds the four clients with Application Default Credentials. A
    /// call that may be retried ([`SafeRetry`]) is tried again with the
    /// client's backoff (1 s, doubling, at most 60 s) for up to
    /// [`RETRY_TIME`], within `timeout` (the run's `--timeout`): a
    /// per-minute rate quota refills at the next minute.
    pub async fn connect(endpoint_url: Option<&str>, timeout: Duration) -> Result<Api, Failure> {
        let retry = || {
            SafeRetry
                .with_attempt_limit(10)
                .with_time_limit(timeout.min(RETRY_TIME))
        };
        macro_rules! build {
            ($client:ty) => {{
                let mut b = <$client>::builder().with_retry_policy(retry());
                if let Some(e) = endpoint_url {
                    b = b.with_endpoint(e);
                }
                // The Google SDK logs its requests, retries and errors only
                // when asked: when `-vv` or `RUST_LOG` asks for SDK lines.
                if appscale_persist::log::sdk_lines_wanted() {
                    b = b.with_tracing();
                }
                tokio::time::timeout(CALL_TIMEOUT, b.build())
                    .await
                    .map_err(|_| {
                        Failure::new(
                            codes::TIMEOUT,
                            "building the Compute Engine client took too long",
                        )
                    })?
                    .map_err(|e| {
                        Failure::new(codes::NO_CREDENTIALS, format!("Compute Engine client: {e}"))
                    })?
            }};
        }
        Ok(Api {
            disks: build!(Disks),
            instances: build!(Instances),
            ops: build!(ZoneOperations),
            snapshots: build!(Snapshots),
        })
    }

    /// The disk `name`, or `None` when it does not exist in that zone.
    pub async fn disk(&self, at: &Location, name: &str) -> Result<Option<DiskInfo>, ApiError> {
        let what = format!("disks.get {name} in {}", at.zone);
        let get = self
            .disks
            .get()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_disk(name)
            .send();
        match bounded(&what, get).await? {
            Ok(d) => Ok(Some(info(d, name, at))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api_error(&what, e)),
        }
    }

    /// The disks of `names` that exist in one zone, by name: the batched
    /// form of [`Api::disk`], `disks.list` filtered by name, a filter of a
    /// bounded length at a time ([`name_filters`]) and every page of each.
    pub async fn disks_named(
        &self,
        at: &Location,
        names: &[String],
    ) -> Result<HashMap<String, DiskInfo>, ApiError> {
        let mut out = HashMap::new();
        for (filter, chunk) in name_filters(names) {
            let what = format!("disks.list of {} disks in {}", chunk.len(), at.zone);
            let mut token: Option<String> = None;
            loop {
                let mut list = self
                    .disks
                    .list()
                    .set_project(&at.project)
                    .set_zone(&at.zone)
                    .set_filter(&filter)
                    .set_max_results(MAX_RESULTS);
                if let Some(t) = token.take() {
                    list = list.set_page_token(t);
                }
                let page = call(&what, list.send()).await?;
                for d in page.items {
                    let name = d.name.clone().unwrap_or_default();
                    // The filter is the server's business; the names are ours.
                    if chunk.contains(&name) {
                        out.insert(name.clone(), info(d, &name, at));
                    }
                }
                match page.next_page_token.filter(|t| !t.is_empty()) {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Which of `names` are regional disks in `at`'s region: another
    /// resource than a zonal disk of the same name, which `disks.get` in
    /// the zone does not see. One `disks.aggregatedList` (every page) per
    /// bounded filter ([`name_filters`]), which lists regional disks too.
    pub async fn regional_disks(
        &self,
        at: &Location,
        names: &[String],
    ) -> Result<Vec<String>, ApiError> {
        let scope = format!("regions/{}", region_of(&at.zone));
        let mut out = Vec::new();
        for (filter, chunk) in name_filters(names) {
            let what = format!("disks.aggregatedList of {} disks", chunk.len());
            let mut token: Option<String> = None;
            loop {
                let mut list = self
                    .disks
                    .aggregated_list()
                    .set_project(&at.project)
                    .set_filter(&filter)
                    .set_max_results(MAX_RESULTS);
                if let Some(t) = token.take() {
                    list = list.set_page_token(t);
                }
                let page = call(&what, list.send()).await?;
                for d in page.items.get(&scope).iter().flat_map(|s| &s.disks) {
                    let name = d.name.clone().unwrap_or_default();
                    if chunk.contains(&name) && !out.contains(&name) {
                        out.push(name);
                    }
                }
                match page.next_page_token.filter(|t| !t.is_empty()) {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// The instance `name`.
    pub async fn instance(&self, at: &Location, name: &str) -> Result<InstanceInfo, ApiError> {
        let what = format!("instances.get {name} in {}", at.zone);
        let get = self
            .instances
            .get()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_instance(name)
            .send();
        match bounded(&what, get).await? {
            Ok(i) => Ok(InstanceInfo {
                disks: i
                    .disks
                    .iter()
                    .filter_map(|d| {
                        let src = last_segment(d.source.as_deref()?).to_string();
                        let device = d.device_name.clone().unwrap_or_else(|| src.clone());
                        Some(AttachedAs { disk: src, device })
                    })
                    .collect(),
                machine_type: i
                    .machine_type
                    .as_deref()
                    .map(|m| last_segment(m).to_string()),
            }),
            Err(e) if is_not_found(&e) => Err(ApiError::new(
                Fault::Answered,
                failures::no_such_instance(name, Some(&at.to_string())),
            )),
            Err(e) => Err(api_error(&what, e)),
        }
    }

    /// Starts creating the disk `new` named `name`, with `labels` (the
    /// deployment's) and its own.
    pub async fn insert_disk(
        &self,
        at: &Location,
        name: &str,
        new: &NewDisk,
        labels: Vec<(String, String)>,
    ) -> Result<Operation, ApiError> {
        let what = format!("disks.insert {name} in {}", at.zone);
        let body = Disk::new()
            .set_name(name)
            .set_size_gb(new.size_gb)
            .set_labels(labels.into_iter().chain(new.labels.iter().cloned()))
            .set_type(format!(
                "projects/{}/zones/{}/diskTypes/{}",
                at.project, at.zone, new.disk_type
            ))
            .set_or_clear_disk_encryption_key(
                new.kms_key
                    .as_ref()
                    .map(|k| CustomerEncryptionKey::new().set_kms_key_name(k)),
            )
            .set_or_clear_provisioned_iops(new.iops)
            .set_or_clear_provisioned_throughput(new.throughput)
            .set_or_clear_source_snapshot(
                new.source_snapshot
                    .as_ref()
                    .map(|s| format!("projects/{}/global/snapshots/{s}", at.project)),
            );
        let insert = self
            .disks
            .insert()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_request_id(request_id())
            .set_body(body)
            .with_options(idempotent())
            .send();
        call(&what, insert).await
    }

    /// Starts adding `labels` to the disk `name` (keeping its others):
    /// adopting a disk made by hand.
    pub async fn adopt(
        &self,
        at: &Location,
        name: &str,
        labels: Vec<(String, String)>,
    ) -> Result<Operation, ApiError> {
        let what = format!("disks.get {name} in {}", at.zone);
        let get = self
            .disks
            .get()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_disk(name)
            .send();
        let d = call(&what, get).await?;
        let mut all = d.labels.clone();
        all.extend(labels);
        let what = format!("disks.setLabels {name} in {}", at.zone);
        let body = ZoneSetLabelsRequest::new()
            .set_labels(all)
            .set_or_clear_label_fingerprint(d.label_fingerprint.clone());
        let set_labels = self
            .disks
            .set_labels()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_resource(name)
            .set_request_id(request_id())
            .set_body(body)
            .with_options(idempotent())
            .send();
        call(&what, set_labels).await
    }

    /// Starts growing the disk `name` to `size_gb` GB (`disks.resize`; a disk
    /// is never shrunk: the caller checked, and Compute Engine refuses).
    pub async fn resize(
        &self,
        at: &Location,
        name: &str,
        size_gb: i64,
    ) -> Result<Operation, ApiError> {
        let what = format!("disks.resize {name} to {size_gb} GB in {}", at.zone);
        let resize = self
            .disks
            .resize()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_disk(name)
            .set_request_id(request_id())
            .set_body(DisksResizeRequest::new().set_size_gb(size_gb))
            .with_options(idempotent())
            .send();
        call(&what, resize).await
    }

    /// Starts attaching `disk` to `instance` read-write, as device `disk`.
    pub async fn attach(
        &self,
        at: &Location,
        instance: &str,
        disk: &str,
    ) -> Result<Operation, ApiError> {
        let what = format!("instances.attachDisk {disk} to {instance}");
        let body = AttachedDisk::new()
            .set_source(format!(
                "projects/{}/zones/{}/disks/{disk}",
                at.project, at.zone
            ))
            .set_device_name(disk)
            .set_mode(attached_disk::Mode::ReadWrite)
            .set_auto_delete(false);
        let attach = self
            .instances
            .attach_disk()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_instance(instance)
            .set_request_id(request_id())
            .set_body(body)
            .with_options(idempotent())
            .send();
        call(&what, attach).await
    }

    /// Starts detaching device `device` from `instance`.
    pub async fn detach(
        &self,
        at: &Location,
        instance: &str,
        device: &str,
    ) -> Result<Operation, ApiError> {
        let what = format!("instances.detachDisk {device} from {instance}");
        let detach = self
            .instances
            .detach_disk()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_instance(instance)
            .set_device_name(device)
            .set_request_id(request_id())
            .with_options(idempotent())
            .send();
        call(&what, detach).await
    }

    /// Waits for `op` to finish ([`poll_until_with`] under `deadline`); an
    /// operation that ends with an error is a failure with the operation's
    /// error code. Each poll is a `zoneOperations.wait`, which returns when
    /// the operation is done or after a while (up to two minutes); one that
    /// fails for a passing reason (429, 5xx, no answer) is tried again with
    /// backoff until the deadline: the operation goes on meanwhile.
    ///
    /// `progress` (shared by the operations waited for together) counts
    /// this one done when it ends.
    pub async fn wait(
        &self,
        at: &Location,
        op: Operation,
        deadline: &Deadline,
        progress: &Progress,
    ) -> Result<(), Failure> {
        let r = self.wait_op(at, op, deadline, progress).await;
        progress.inc(1);
        r
    }

    async fn wait_op(
        &self,
        at: &Location,
        op: Operation,
        deadline: &Deadline,
        progress: &Progress,
    ) -> Result<(), Failure> {
        wait_operation(op, "zoneOperations.wait", deadline, progress, |name| {
            self.ops
                .wait()
                .set_project(&at.project)
                .set_zone(&at.zone)
                .set_operation(name)
                .send()
        })
        .await
    }
}

/// Waits for `op` to finish under `deadline`, one `poll(name)` a poll
/// (`call`: the method, for messages): `zoneOperations.wait`, which returns
/// when the operation is done or after a while (up to two minutes), or a
/// global operation's get. An operation that ends with an error is a
/// failure with the operation's error code; a poll still unanswered when
/// the call's time is up is polled again.
pub(crate) async fn wait_operation<F, Fut>(
    op: Operation,
    call: &str,
    deadline: &Deadline,
    progress: &Progress,
    poll: F,
) -> Result<(), Failure>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Operation, google_cloud_gax::error::Error>>,
{
    match outcome(&op) {
        Poll::Ready(()) => return Ok(()),
        Poll::Failed(f) => return Err(f),
        Poll::Pending => {}
    }
    let name = op.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(Failure::new(
            codes::API_ERROR,
            "an unfinished operation came back without a name",
        ));
    }
    let what = format!("{call} {name}");
    let waited = poll_until_with(progress, deadline.schedule(POLL), || async {
        let answer = poll(name.clone());
        match tokio::time::timeout(deadline.remaining().min(CALL_TIMEOUT), answer).await {
            Ok(answer) => Ok(outcome(&answer.map_err(|e| api_error(&what, e))?)),
            Err(_) => Ok(Poll::Pending),
        }
    })
    .await;
    waited.map_err(|u| u.into_failure(format!("operation {name} did not finish"), deadline))
}

impl Api {
    /// Waits until the disk `name` is `READY` ([`poll_until_with`] under
    /// `deadline`, one `disks.get` a poll): a disk being created, by this
    /// run's operation or an earlier run's. `progress` (shared by the disks
    /// waited for together) counts this one done when it ends.
    pub async fn wait_ready(
        &self,
        at: &Location,
        name: &str,
        deadline: &Deadline,
        progress: &Progress,
    ) -> Result<DiskInfo, Failure> {
        let waited = poll_until_with(progress, deadline.schedule(POLL), || async {
            Ok(match self.disk(at, name).await? {
                Some(d) if d.is_creating() => Poll::Pending,
                Some(d) if d.status == "FAILED" => Poll::Failed(Failure::new(
                    codes::WAIT_FAILED,
                    format!("disk {name}: its creation failed (status FAILED)"),
                )),
                Some(d) => Poll::Ready(d),
                None => Poll::Failed(Failure::new(
                    codes::NO_SUCH_DISK,
                    format!("disk {name} vanished while it was being created"),
                )),
            })
        })
        .await;
        progress.inc(1);
        waited.map_err(|u| u.into_failure(format!("disk {name} was not ready"), deadline))
    }
}

/// What an operation says: pending until done, then done or failed with
/// its own error code.
pub(crate) fn outcome(op: &Operation) -> Poll<(), Failure> {
    if op.status != Some(operation::Status::Done) {
        return Poll::Pending;
    }
    match op.error.as_ref().and_then(|e| e.errors.first()) {
        None => Poll::Ready(()),
        Some(e) => Poll::Failed(Failure::new(
            e.code
                .clone()
                .map_or(codes::OPERATION_FAILED, Code::from_api),
            format!(
                "operation {} ({}) failed: {}",
                op.name.as_deref().unwrap_or("?"),
                op.operation_type.as_deref().unwrap_or("?"),
                e.message.as_deref().unwrap_or("no message")
            ),
        )),
    }
}

fn info(d: Disk, name: &str, at: &Location) -> DiskInfo {
    DiskInfo {
        name: d.name.clone().unwrap_or_else(|| name.to_string()),
        size_gb: d.size_gb.unwrap_or(0),
        disk_type: d
            .r#type
            .as_deref()
            .map(last_segment)
            .unwrap_or("")
            .to_string(),
        zone: d
            .zone
            .as_deref()
            .map(last_segment)
            .unwrap_or(&at.zone)
            .to_string(),
        status: d
            .status
            .as_ref()
            .and_then(|s| s.name())
            .unwrap_or_default()
            .to_string(),
        users: d
            .users
            .iter()
            .map(|u| last_segment(u).to_string())
            .collect(),
        labels: d.labels.clone(),
        kms_key: d
            .disk_encryption_key
            .as_ref()
            .and_then(|k| k.kms_key_name.clone()),
        iops: d.provisioned_iops,
        throughput: d.provisioned_throughput,
        created: d.creation_timestamp.clone(),
        last_attach: d.last_attach_timestamp.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_uuids() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn only_idempotent_calls_are_retried_on_throttling_and_server_errors() {
        use google_cloud_gax::error::Error;
        use google_cloud_gax::error::rpc::{Code, Status};
        let http = |code: u16, status: Code| {
            Error::service_with_http_metadata(Status::default().set_code(status), Some(code), None)
        };
        let retried = |idempotent: bool, e: Error| {
            matches!(
                SafeRetry.on_error(&RetryState::new(idempotent), e),
                RetryResult::Continue(_)
            )
        };
        for (code, status) in [
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (503, Code::Unavailable),
        ] {
            assert!(
                retried(true, http(code, status)),
                "{code}, with a request id"
            );
            assert!(!retried(false, http(code, status)), "{code}, without one");
        }
        assert!(!retried(true, http(403, Code::PermissionDenied)));
    }

    #[test]
    fn resource_urls_end_in_names() {
        assert_eq!(
            last_segment("https://x/compute/v1/projects/p/zones/us-central1-a"),
            "us-central1-a"
        );
        assert_eq!(last_segment("mydisk"), "mydisk");
    }
}
