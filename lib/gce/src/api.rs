//! The Compute Engine calls this provider makes: every call bounded by a
//! timeout, every error mapped to a record failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use appscale_persist::log;
use appscale_persist::step::Failure;
use appscale_persist::wait::{Backoff, WaitParams};
use google_cloud_compute_v1::client::{Disks, Instances, ZoneOperations};
use google_cloud_compute_v1::model::{AttachedDisk, Disk, Operation, attached_disk, operation};
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};

/// No single API call may take longer than this. Without credentials the
/// client waits for ever before sending anything; this turns that into an
/// error that says so.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A project and zone.
#[derive(Debug, Clone, PartialEq, Eq)]
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
            "no-credentials".to_string(),
            format!(
                "{e} (Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, or run on an instance with a service account)"
            ),
        ),
        (None, None) if e.is_timeout() => ("timeout".to_string(), e.to_string()),
        (None, None) if e.is_connect() || e.is_transport() => {
            ("unreachable".to_string(), e.to_string())
        }
        (None, None) => ("api-error".to_string(), e.to_string()),
    };
    Failure::new(code, format!("{what}: {msg}"))
}

fn is_not_found(e: &google_cloud_gax::error::Error) -> bool {
    e.http_status_code() == Some(404)
}

/// Awaits one call under [`CALL_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    fut: impl std::future::Future<Output = google_cloud_gax::Result<T>>,
) -> Result<google_cloud_gax::Result<T>, Failure> {
    log::debug(format_args!("{what}"));
    tokio::time::timeout(CALL_TIMEOUT, fut).await.map_err(|_| {
        Failure::new(
            "timeout",
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
            Aip194Strict
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
                            "timeout",
                            "building the Compute Engine client took too long",
                        )
                    })?
                    .map_err(|e| {
                        Failure::new("credentials", format!("Compute Engine client: {e}"))
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
                "no-such-instance",
                format!(
                    "no instance {name} in {} of project {}",
                    at.zone, at.project
                ),
            )),
            Err(e) => Err(failure(&what, e)),
        }
    }

    /// Starts creating a disk.
    pub async fn insert_disk(
        &self,
        at: &Where,
        name: &str,
        size_gb: i64,
        disk_type: &str,
    ) -> Result<Operation, Failure> {
        let what = format!("disks.insert {name} in {}", at.zone);
        let body = Disk::new()
            .set_name(name)
            .set_size_gb(size_gb)
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
    /// with an error is a failure with the operation's error code.
    pub async fn wait(
        &self,
        at: &Where,
        mut op: Operation,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let name = op.name.clone().unwrap_or_default();
        let started = Instant::now();
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
                        e.code.clone().unwrap_or_else(|| "operation-failed".into()),
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
                    "api-error",
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
                Ok(r) => r.map_err(|e| failure(&what, e))?,
                Err(_) => op,
            };
            if op.status == Some(operation::Status::Done) {
                continue;
            }
            match backoff.next_delay() {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    return Err(Failure::new(
                        "timeout",
                        format!(
                            "operation {name} did not finish within {:?} (waited {:?})",
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
    fn resource_urls_end_in_names() {
        assert_eq!(
            last_segment("https://x/compute/v1/projects/p/zones/us-central1-a"),
            "us-central1-a"
        );
        assert_eq!(last_segment("mydisk"), "mydisk");
    }
}
