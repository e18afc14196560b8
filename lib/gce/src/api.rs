//! The Compute Engine calls this provider makes: every call bounded by a
//! timeout, every error mapped to a record failure.
//!
//! Retries ([`SafeRetry`]): a call is tried again on throttling (429), a
//! server error (5xx) or a dropped connection only when that is safe: reads,
//! and mutating calls marked idempotent, which all carry a `requestId` (a
//! repeated request with the same id is the same request to Compute
//! Engine). Waiting on an operation survives failed polls until its
//! deadline ([`Api::wait`]).

use appscale_persist::codes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use appscale_persist::log;
use appscale_persist::step::Failure;
use appscale_persist::wait::{Backoff, WaitParams};
use google_cloud_compute_v1::client::{Disks, Instances, ZoneOperations};
use google_cloud_compute_v1::model::ZoneSetLabelsRequest;
use google_cloud_compute_v1::model::{AttachedDisk, Disk, Operation, attached_disk, operation};
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicy, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;

/// No single API call may take longer than this. Without credentials the
/// client waits for ever before sending anything; this turns that into an
/// error that says so.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A project and zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Where {
    /// Project id.
    pub project: String,
    /// Zone.
    pub zone: String,
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
    /// Names of the instances using it.
    pub users: Vec<String>,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

impl DiskInfo {
    /// `name (10 GB pd-balanced) in zone`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} GB {}) in {}",
            self.name, self.size_gb, self.disk_type, self.zone
        )
    }
}

/// What the provider needs to know about an instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    /// (disk name, device name) of each attached disk.
    pub disks: Vec<(String, String)>,
}

impl InstanceInfo {
    /// The device name `disk` is attached as.
    pub fn device_of(&self, disk: &str) -> Option<String> {
        self.disks
            .iter()
            .find(|(d, _)| d == disk)
            .map(|(_, dev)| dev.clone())
    }
}

/// The last path segment of a resource URL (`.../zones/us-central1-a` →
/// `us-central1-a`).
pub fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Connected clients.
pub struct Api {
    disks: Disks,
    instances: Instances,
    ops: ZoneOperations,
}

fn failure(what: &str, e: google_cloud_gax::error::Error) -> Failure {
    let (code, msg) = match (e.status(), e.http_status_code()) {
        (Some(s), _) => (s.code.name().to_string(), s.message.clone()),
        (None, Some(h)) => (format!("HTTP_{h}"), e.to_string()),
        (None, None) if e.is_authentication() => (
            codes::NO_CREDENTIALS.to_string(),
            format!(
                "{e} (Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, or run on an instance with a service account)"
            ),
        ),
        (None, None) if e.is_timeout() => (codes::TIMEOUT.to_string(), e.to_string()),
        (None, None) if e.is_connect() || e.is_transport() => {
            (codes::UNREACHABLE.to_string(), e.to_string())
        }
        (None, None) => (codes::API_ERROR.to_string(), e.to_string()),
    };
    Failure::new(code, format!("{what}: {msg}"))
}

fn is_not_found(e: &google_cloud_gax::error::Error) -> bool {
    e.http_status_code() == Some(404)
}

/// Whether a failed call may succeed when tried again: throttled (429), a
/// server error (5xx), or no answer.
fn is_transient(e: &google_cloud_gax::error::Error) -> bool {
    e.http_status_code()
        .is_some_and(|c| c == 429 || (500..600).contains(&c))
        || e.is_io()
        || e.is_timeout()
        || e.is_connect()
        || e.is_transport()
}

/// The retry policy of every call: [`Aip194Strict`] (UNAVAILABLE, and
/// transport errors of idempotent calls), plus 429 and every 5xx for
/// idempotent calls only: reads, and mutating calls carrying a `requestId`.
/// A mutating call without one is never sent twice.
#[derive(Debug, Clone)]
pub struct SafeRetry;

impl RetryPolicy for SafeRetry {
    fn on_error(&self, state: &RetryState, error: google_cloud_gax::error::Error) -> RetryResult {
        if state.idempotent && is_transient(&error) {
            return RetryResult::Continue(error);
        }
        Aip194Strict.on_error(state, error)
    }
}

/// Awaits one call under [`CALL_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    fut: impl std::future::Future<Output = google_cloud_gax::Result<T>>,
) -> Result<google_cloud_gax::Result<T>, Failure> {
    log::debug(format_args!("{what}"));
    tokio::time::timeout(CALL_TIMEOUT, fut).await.map_err(|_| {
        Failure::new(
            codes::TIMEOUT,
            format!("{what}: no answer within {CALL_TIMEOUT:?} (are Application Default Credentials available?)"),
        )
    })
}

/// A fresh request id (a UUID, as Compute Engine requires): the same id is
/// sent again only when the client retries this very call.
fn request_id() -> String {
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

fn idempotent() -> RequestOptions {
    let mut o = RequestOptions::default();
    o.set_idempotency(true);
    o
}

impl Api {
    /// Builds the three clients with Application Default Credentials.
    pub async fn connect(endpoint: Option<&str>) -> Result<Api, Failure> {
        let retry = || {
            SafeRetry
                .with_attempt_limit(5)
                .with_time_limit(Duration::from_secs(60))
        };
        macro_rules! build {
            ($client:ty) => {{
                let mut b = <$client>::builder().with_retry_policy(retry());
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
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
        })
    }

    /// The disk `name`, or `None` when it does not exist in that zone.
    pub async fn disk(&self, at: &Where, name: &str) -> Result<Option<DiskInfo>, Failure> {
        let what = format!("disks.get {name} in {}", at.zone);
        let r = bounded(
            &what,
            self.disks
                .get()
                .set_project(&at.project)
                .set_zone(&at.zone)
                .set_disk(name)
                .send(),
        )
        .await?;
        match r {
            Ok(d) => Ok(Some(info(d, name, at))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(failure(&what, e)),
        }
    }

    /// The instance `name`.
    pub async fn instance(&self, at: &Where, name: &str) -> Result<InstanceInfo, Failure> {
        let what = format!("instances.get {name} in {}", at.zone);
        let r = bounded(
            &what,
            self.instances
                .get()
                .set_project(&at.project)
                .set_zone(&at.zone)
                .set_instance(name)
                .send(),
        )
        .await?;
        match r {
            Ok(i) => Ok(InstanceInfo {
                disks: i
                    .disks
                    .iter()
                    .filter_map(|d| {
                        let src = last_segment(d.source.as_deref()?).to_string();
                        Some((src.clone(), d.device_name.clone().unwrap_or(src)))
                    })
                    .collect(),
            }),
            Err(e) if is_not_found(&e) => Err(Failure::new(
                codes::NO_SUCH_INSTANCE,
                format!(
                    "no instance {name} in {} of project {}",
                    at.zone, at.project
                ),
            )),
            Err(e) => Err(failure(&what, e)),
        }
    }

    /// Starts creating a disk with `labels`.
    pub async fn insert_disk(
        &self,
        at: &Where,
        name: &str,
        size_gb: i64,
        disk_type: &str,
        labels: Vec<(String, String)>,
    ) -> Result<Operation, Failure> {
        let what = format!("disks.insert {name} in {}", at.zone);
        let body = Disk::new()
            .set_name(name)
            .set_size_gb(size_gb)
            .set_labels(labels)
            .set_type(format!(
                "projects/{}/zones/{}/diskTypes/{disk_type}",
                at.project, at.zone
            ));
        let call = self
            .disks
            .insert()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_request_id(request_id())
            .set_body(body)
            .with_options(idempotent())
            .send();
        bounded(&what, call).await?.map_err(|e| failure(&what, e))
    }

    /// Adds `labels` to the disk `name` (keeping its others): adopting a disk
    /// made by hand. Waits for the operation, at most `timeout`.
    pub async fn adopt(
        &self,
        at: &Where,
        name: &str,
        labels: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let what = format!("disks.get {name} in {}", at.zone);
        let d = bounded(
            &what,
            self.disks
                .get()
                .set_project(&at.project)
                .set_zone(&at.zone)
                .set_disk(name)
                .send(),
        )
        .await?
        .map_err(|e| failure(&what, e))?;
        let mut all = d.labels.clone();
        all.extend(labels);
        let what = format!("disks.setLabels {name} in {}", at.zone);
        let call = self
            .disks
            .set_labels()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_resource(name)
            .set_request_id(request_id())
            .set_body(
                ZoneSetLabelsRequest::new()
                    .set_labels(all)
                    .set_or_clear_label_fingerprint(d.label_fingerprint.clone()),
            )
            .with_options(idempotent())
            .send();
        let op = bounded(&what, call).await?.map_err(|e| failure(&what, e))?;
        self.wait(at, op, timeout).await
    }

    /// Starts attaching `disk` to `instance` read-write, as device `disk`.
    pub async fn attach(
        &self,
        at: &Where,
        instance: &str,
        disk: &str,
    ) -> Result<Operation, Failure> {
        let what = format!("instances.attachDisk {disk} to {instance}");
        let body = AttachedDisk::new()
            .set_source(format!(
                "projects/{}/zones/{}/disks/{disk}",
                at.project, at.zone
            ))
            .set_device_name(disk)
            .set_mode(attached_disk::Mode::ReadWrite)
            .set_auto_delete(false);
        let call = self
            .instances
            .attach_disk()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_instance(instance)
            .set_request_id(request_id())
            .set_body(body)
            .with_options(idempotent())
            .send();
        bounded(&what, call).await?.map_err(|e| failure(&what, e))
    }

    /// Starts detaching device `device` from `instance`.
    pub async fn detach(
        &self,
        at: &Where,
        instance: &str,
        device: &str,
    ) -> Result<Operation, Failure> {
        let what = format!("instances.detachDisk {device} from {instance}");
        let call = self
            .instances
            .detach_disk()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_instance(instance)
            .set_device_name(device)
            .set_request_id(request_id())
            .with_options(idempotent())
            .send();
        bounded(&what, call).await?.map_err(|e| failure(&what, e))
    }

    /// Waits for `op` to finish, at most `timeout`; an operation that ends
    /// with an error is a failure with the operation's error code. A poll
    /// that fails for a passing reason (429, 5xx, no answer) is tried again
    /// with backoff until the deadline; the operation goes on meanwhile.
    pub async fn wait(
        &self,
        at: &Where,
        mut op: Operation,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let name = op.name.clone().unwrap_or_default();
        let started = Instant::now();
        let mut last_failure: Option<Failure> = None;
        let mut backoff = Backoff::start(WaitParams {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            timeout,
        });
        loop {
            if op.status == Some(operation::Status::Done) {
                return match op.error.as_ref().and_then(|e| e.errors.first()) {
                    None => Ok(()),
                    Some(e) => Err(Failure::new(
                        e.code
                            .clone()
                            .unwrap_or_else(|| codes::OPERATION_FAILED.into()),
                        format!(
                            "operation {name} ({}) failed: {}",
                            op.operation_type.as_deref().unwrap_or("?"),
                            e.message.as_deref().unwrap_or("no message")
                        ),
                    )),
                };
            }
            if name.is_empty() {
                return Err(Failure::new(
                    codes::API_ERROR,
                    "an unfinished operation came back without a name",
                ));
            }
            // zoneOperations.wait returns when the operation is done or after
            // a while (up to two minutes); between calls, back off.
            let what = format!("zoneOperations.wait {name}");
            let call = self
                .ops
                .wait()
                .set_project(&at.project)
                .set_zone(&at.zone)
                .set_operation(&name)
                .send();
            let remaining = backoff.remaining();
            op = match tokio::time::timeout(remaining.min(CALL_TIMEOUT), call).await {
                Ok(Ok(o)) => {
                    last_failure = None;
                    o
                }
                Ok(Err(e)) if is_transient(&e) => {
                    let f = failure(&what, e);
                    log::warn(format_args!(
                        "{} [{}]; polling again until the deadline",
                        f.message, f.code
                    ));
                    last_failure = Some(f);
                    op
                }
                Ok(Err(e)) => return Err(failure(&what, e)),
                Err(_) => op,
            };
            if op.status == Some(operation::Status::Done) {
                continue;
            }
            match backoff.next_delay() {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let last = last_failure
                        .map(|f| format!("; the last poll failed: {} [{}]", f.message, f.code))
                        .unwrap_or_default();
                    return Err(Failure::new(
                        codes::TIMEOUT,
                        format!(
                            "operation {name} did not finish within {:?} (waited {:?}){last}",
                            timeout,
                            started.elapsed()
                        ),
                    ));
                }
            }
        }
    }
}

fn info(d: Disk, name: &str, at: &Where) -> DiskInfo {
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
        users: d
            .users
            .iter()
            .map(|u| last_segment(u).to_string())
            .collect(),
        labels: d.labels.clone(),
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
