//! The EC2 calls this provider makes, each mapping SDK errors to record
//! failures with the AWS error code.

use appscale_persist::codes;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use appscale_persist::log;
use appscale_persist::step::Failure;
use appscale_persist::wait::{Backoff, WaitParams};
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification, Volume, VolumeType};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::owner::{TAG_DEPLOYMENT, TAG_NODE};
use crate::{Config, devices, trace};

/// A connected client.
pub struct Api {
    client: Client,
}

/// What the provider needs to know about an instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    /// Its availability zone.
    pub zone: String,
    /// Device names in use (normalised: `sdf`, never `xvdf` or `/dev/`).
    pub devices: HashSet<String>,
}

/// Turns an SDK error into a record failure: the AWS error code when there
/// is one, else what kind of failure it was.
pub fn failure<E, R>(what: &str, e: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let Some(code) = e.code() {
        let msg = e.message().unwrap_or("no message");
        return Failure::new(code, format!("{what}: {msg}"));
    }
    let chain = error_chain(&e);
    let code = if chain.contains("credential") {
        codes::NO_CREDENTIALS
    } else {
        match &e {
            SdkError::TimeoutError(_) => codes::TIMEOUT,
            SdkError::DispatchFailure(_) => codes::UNREACHABLE,
            _ => codes::API_ERROR,
        }
    };
    let hint = if code == codes::NO_CREDENTIALS {
        " (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role)"
    } else {
        ""
    };
    Failure::new(code, format!("{what}: {chain}{hint}"))
}

/// Error codes of calls that may succeed when tried again later:
/// throttling, server errors, and no answer at all.
const TRANSIENT: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    codes::TIMEOUT,
    codes::UNREACHABLE,
    codes::API_ERROR,
];

/// Whether a failed call may succeed when tried again later (after the
/// SDK's own retries gave up): throttling, 5xx, a dropped connection.
pub fn is_transient(f: &Failure) -> bool {
    TRANSIENT.contains(&f.code.as_str())
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

/// Region `us-east-1` from zone `us-east-1b`.
fn region_of_zone(zone: &str) -> Option<String> {
    zone.strip_suffix(|c: char| c.is_ascii_lowercase())
        .filter(|r| r.ends_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

impl Api {
    /// Builds a client from the standard AWS configuration chain and `cfg`.
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
        let sdk = loader.load().await;
        let mut conf = aws_sdk_ec2::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            let region = zone_hint.and_then(region_of_zone).ok_or_else(|| {
                Failure::new(codes::NO_REGION, "no AWS region: set AWS_REGION, pass --region, or give the AppScalefile a `zone`")
            })?;
            conf = conf.region(Region::new(region));
        }
        Ok(Api {
            client: Client::from_conf(conf.build()),
        })
    }

    /// Volumes by id, in one call when all exist (unknown ones absent).
    pub async fn volumes_by_id(&self, ids: &[String]) -> Result<HashMap<String, Volume>, Failure> {
        batch_or_each(ids, "InvalidVolume", |chunk| async move {
            self.describe(&chunk).await
        })
        .await
    }

    async fn describe(&self, ids: &[String]) -> Result<HashMap<String, Volume>, Failure> {
        trace(format_args!("DescribeVolumes {}", ids.join(" ")));
        let out = self
            .client
            .describe_volumes()
            .set_volume_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| failure("DescribeVolumes", e))?;
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
    ) -> Result<HashMap<String, Vec<Volume>>, Failure> {
        let mut out: HashMap<String, Vec<Volume>> = HashMap::new();
        if names.is_empty() {
            return Ok(out);
        }
        trace(format_args!("DescribeVolumes tag:Name={}", names.join(",")));
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_volumes()
                .filters(
                    Filter::builder()
                        .name("tag:Name")
                        .set_values(Some(names.to_vec()))
                        .build(),
                )
                .filters(
                    Filter::builder()
                        .name("status")
                        .values("creating")
                        .values("available")
                        .values("in-use")
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| failure("DescribeVolumes", e))?;
            for v in page.volumes() {
                if let Some(name) = v
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("Name"))
                    .and_then(|t| t.value())
                {
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
    ) -> Result<HashMap<String, InstanceInfo>, Failure> {
        batch_or_each(ids, "InvalidInstanceID", |chunk| async move {
            self.describe_instances(&chunk).await
        })
        .await
    }

    async fn describe_instances(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, InstanceInfo>, Failure> {
        trace(format_args!("DescribeInstances {}", ids.join(" ")));
        let out = self
            .client
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| failure("DescribeInstances", e))?;
        let mut m = HashMap::new();
        for res in out.reservations() {
            for i in res.instances() {
                let Some(id) = i.instance_id() else { continue };
                m.insert(
                    id.to_string(),
                    InstanceInfo {
                        zone: i
                            .placement()
                            .and_then(|p| p.availability_zone())
                            .unwrap_or_default()
                            .to_string(),
                        devices: i
                            .block_device_mappings()
                            .iter()
                            .filter_map(|b| b.device_name())
                            .chain(i.root_device_name())
                            .map(devices::normalize)
                            .collect(),
                    },
                );
            }
        }
        Ok(m)
    }

    /// Creates a volume tagged for `deployment` and `node` and returns its
    /// id. The client token is derived from deployment, node and name, so a
    /// retried call cannot make a second volume on real EC2, and two
    /// deployments never share one; the tags make it findable on the next
    /// run, by this deployment only.
    pub async fn create_volume(
        &self,
        cfg: &Config,
        deployment: &str,
        name: &str,
        node: &str,
        zone: &str,
    ) -> Result<String, Failure> {
        let token = client_token(deployment, node, name);
        trace(format_args!(
            "CreateVolume Name={name} zone={zone} token={token}"
        ));
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let out = self
            .client
            .create_volume()
            .availability_zone(zone)
            .size(i32::try_from(cfg.size.gib()).unwrap_or(i32::MAX))
            .volume_type(VolumeType::from(cfg.volume_type.as_str()))
            .encrypted(cfg.encrypted)
            .client_token(token)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .tags(tag("Name", name))
                    .tags(tag(TAG_DEPLOYMENT, deployment))
                    .tags(tag(TAG_NODE, node))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failure(&format!("CreateVolume Name={name}"), e))?;
        out.volume_id()
            .map(str::to_string)
            .ok_or_else(|| Failure::new(codes::API_ERROR, "CreateVolume returned no volume id"))
    }

    /// Tags a volume made by hand for `deployment` (and `node`, when known):
    /// adopting it, so that no other deployment takes it afterwards.
    pub async fn adopt(
        &self,
        vol: &str,
        deployment: &str,
        node: Option<&str>,
    ) -> Result<(), Failure> {
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
            .map_err(|e| failure(&format!("CreateTags {vol}"), e))
    }

    /// Sends every AttachVolume, at most `concurrency` at once.
    pub async fn attach_all(
        self: &Arc<Self>,
        calls: Vec<(String, String, String)>,
        concurrency: usize,
    ) -> HashMap<String, Result<(), Failure>> {
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut set = JoinSet::new();
        for (vol, instance, dev) in calls {
            let (api, sem) = (self.clone(), sem.clone());
            set.spawn(async move {
                let _permit = sem.acquire().await;
                trace(format_args!("AttachVolume {vol} {instance} {dev}"));
                let r = api
                    .client
                    .attach_volume()
                    .volume_id(&vol)
                    .instance_id(&instance)
                    .device(&dev)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| failure(&format!("AttachVolume {vol} to {instance}"), e));
                (vol, r)
            });
        }
        set.join_all().await.into_iter().collect()
    }

    /// Sends every DetachVolume, at most `concurrency` at once.
    pub async fn detach_all(
        self: &Arc<Self>,
        calls: Vec<(String, String)>,
        force: bool,
        concurrency: usize,
    ) -> HashMap<String, Result<(), Failure>> {
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut set = JoinSet::new();
        for (vol, instance) in calls {
            let (api, sem) = (self.clone(), sem.clone());
            set.spawn(async move {
                let _permit = sem.acquire().await;
                let r = api.detach(&vol, &instance, force).await;
                (vol, r)
            });
        }
        set.join_all().await.into_iter().collect()
    }

    /// Detaches one volume from its instance (always naming the instance).
    pub async fn detach(&self, vol: &str, instance: &str, force: bool) -> Result<(), Failure> {
        trace(format_args!("DetachVolume {vol} {instance} force={force}"));
        self.client
            .detach_volume()
            .volume_id(vol)
            .instance_id(instance)
            .force(force)
            .send()
            .await
            .map(drop)
            .map_err(|e| failure(&format!("DetachVolume {vol} from {instance}"), e))
    }

    /// Polls the volumes `ids`, one DescribeVolumes per round for all still
    /// pending, until `check` says each is done (`Some(Ok)`) or failed
    /// (`Some(Err)`), or the deadline passes (absent from the answer, or a
    /// `timeout` failure naming the last failed poll). A poll that fails
    /// for a passing reason (throttling, 5xx, no answer: [`is_transient`])
    /// is tried again with backoff until the deadline; it fails nothing.
    pub async fn wait_volumes(
        &self,
        ids: &[String],
        params: WaitParams,
        check: impl Fn(&Volume) -> Option<Result<(), String>>,
    ) -> HashMap<String, Result<Volume, Failure>> {
        let mut done = HashMap::new();
        let mut pending: Vec<String> = ids.to_vec();
        let mut backoff = Backoff::start(params);
        let mut last_failure: Option<Failure> = None;
        while !pending.is_empty() {
            match self.volumes_by_id(&pending).await {
                Err(f) if is_transient(&f) => {
                    log::warn(format_args!(
                        "{} [{}]; polling again until the deadline",
                        f.message, f.code
                    ));
                    last_failure = Some(f);
                }
                Err(f) => {
                    for id in pending.drain(..) {
                        done.insert(id, Err(f.clone()));
                    }
                }
                Ok(found) => {
                    last_failure = None;
                    pending.retain(|id| match found.get(id) {
                        None => {
                            done.insert(
                                id.clone(),
                                Err(Failure::new(
                                    codes::NO_SUCH_DISK,
                                    format!("volume {id} disappeared"),
                                )),
                            );
                            false
                        }
                        Some(v) => match check(v) {
                            None => true,
                            Some(Ok(())) => {
                                done.insert(id.clone(), Ok(v.clone()));
                                false
                            }
                            Some(Err(why)) => {
                                done.insert(
                                    id.clone(),
                                    Err(Failure::new(codes::WAIT_FAILED, format!("{id}: {why}"))),
                                );
                                false
                            }
                        },
                    });
                }
            }
            if pending.is_empty() {
                break;
            }
            match backoff.next_delay() {
                Some(d) => tokio::time::sleep(d).await,
                None => break,
            }
        }
        if let Some(f) = last_failure {
            for id in pending {
                done.insert(
                    id.clone(),
                    Err(Failure::new(
                        codes::TIMEOUT,
                        format!(
                            "{id}: no answer to wait on within {:?}; the last poll failed: {} [{}]",
                            params.timeout, f.message, f.code
                        ),
                    )),
                );
            }
        }
        done
    }
}

/// Describes `ids` in one call. EC2 fails the whole call when one id is
/// unknown (an error code starting with `not_found`); then each id is asked
/// alone, and the unknown ones are simply absent from the answer.
async fn batch_or_each<T, F, Fut>(
    ids: &[String],
    not_found: &str,
    describe: F,
) -> Result<HashMap<String, T>, Failure>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<HashMap<String, T>, Failure>>,
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
    match describe(unique.clone()).await {
        Err(f) if f.code.starts_with(not_found) => {
            let mut all = HashMap::new();
            for id in &unique {
                match describe(vec![id.clone()]).await {
                    Ok(m) => all.extend(m),
                    Err(f) if f.code.starts_with(not_found) => {}
                    Err(f) => return Err(f),
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
}
