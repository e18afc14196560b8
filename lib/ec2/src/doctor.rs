//! `disk-doctor` on EC2 and Eucalyptus: whether the flows' calls would
//! work, changing nothing.
//!
//! * **credentials**: which source the SDK's chain found (environment,
//!   profile, instance role, the AppScalefile's keys), and whether EC2
//!   accepts them (the first call says);
//! * **clock**: this machine's clock against the `Date` header of EC2's
//!   answers (every call of the run is watched);
//! * **region**: the region requests go to holds the records' zones;
//! * **permission**, one check per action in [`NEEDS`] for the flows and
//!   role asked: the mutating calls by `DryRun` (`DryRunOperation`: allowed;
//!   `UnauthorizedOperation`: the action is named, with the policy that
//!   grants it), the reads by making them. Tags set as a volume or snapshot
//!   is made are authorised as `ec2:CreateTags` as well, so a denied create
//!   is asked again without tags to tell which of the two is missing. The
//!   calls are made once per provider, on the first record's volume and
//!   instance (a placeholder id where there is none yet);
//! * **disk**, **owner**, **zone**, **instance**, **attachment-room** for
//!   each record, from the same lookups the tools make.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use appscale_persist::appscalefile::ec2_region_of_zone;
use appscale_persist::checks::{self, Ask, Check, Flow, Role, Scope, Verdict};
use appscale_persist::codes;
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::step::{Ctx, Failure};
use appscale_persist_cloudkit::Deadline;
use aws_sdk_ec2::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, ProvideCredentials, RuntimeComponents};
use aws_sdk_ec2::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification, VolumeType};

use crate::api::Api;
use crate::instance::InstanceInfo;
use crate::owner::{Owner, TAG_DEPLOYMENT, TAG_NODE};
use crate::{Ec2, Run, limits, volume};

/// How a permission is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// A mutating call, sent with `DryRun`.
    DryRun,
    /// A read, made for real (it changes nothing).
    Read,
}

/// One EC2 action the flows call: in which flows, by which role, and how
/// disk-doctor tests it. The docs' IAM policies (docs/ec2.md) are these,
/// and a test holds the two together.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// The action (`AttachVolume`): the IAM action is `ec2:` and this.
    pub action: &'static str,
    /// The flows that call it.
    pub flows: &'static [Flow],
    /// Who calls it: the controller, the node, or both ([`Role::All`]).
    pub role: Role,
    /// How it is tested.
    pub how: How,
    /// What it is for, for messages.
    pub why: &'static str,
}

use Flow::{Backup, Down, Grow, Up};

/// Every action the flows call, and who calls it. The controller makes
/// and attaches disks, grows them, detaches them with the nodes' proof;
/// a node attaches its own disk at boot (`disk-attach --self`, adopting a
/// volume made by hand, undoing an attachment stuck `attaching`), takes
/// and prunes its own snapshots (`backup.yml`), and detaches its own disk
/// (`scripts/down -- --self`).
pub const NEEDS: &[Need] = &[
    Need {
        action: "DescribeVolumes",
        flows: &[Up, Down, Backup, Grow],
        role: Role::All,
        how: How::Read,
        why: "every tool's lookup of its volumes",
    },
    Need {
        action: "DescribeInstances",
        flows: &[Up],
        role: Role::All,
        how: How::Read,
        why: "disk-attach's lookup of the instance (zone, device names in use)",
    },
    Need {
        action: "DescribeInstanceTypes",
        flows: &[Up],
        role: Role::All,
        how: How::Read,
        why: "disk-attach's attachment limit of the instance's type (without it EC2 says when the limit is reached)",
    },
    Need {
        action: "CreateVolume",
        flows: &[Up],
        role: Role::Controller,
        how: How::DryRun,
        why: "disk-create makes the volume",
    },
    Need {
        action: "CreateTags",
        flows: &[Up, Backup],
        role: Role::All,
        how: How::DryRun,
        why: "tags of new volumes and snapshots (as they are made), adopting a volume made by hand, --retag",
    },
    Need {
        action: "AttachVolume",
        flows: &[Up],
        role: Role::All,
        how: How::DryRun,
        why: "disk-attach",
    },
    Need {
        action: "DetachVolume",
        flows: &[Up, Down],
        role: Role::All,
        how: How::DryRun,
        why: "disk-detach, and disk-attach undoing an attachment stuck `attaching`",
    },
    Need {
        action: "CreateSnapshot",
        flows: &[Backup],
        role: Role::All,
        how: How::DryRun,
        why: "disk-snapshot",
    },
    Need {
        action: "DescribeSnapshots",
        flows: &[Backup],
        role: Role::All,
        how: How::Read,
        why: "disk-snapshot's wait and retention (and disk-create --from-snapshot)",
    },
    Need {
        action: "DeleteSnapshot",
        flows: &[Backup],
        role: Role::All,
        how: How::DryRun,
        why: "retention (--keep, --keep-within)",
    },
    Need {
        action: "ModifyVolume",
        flows: &[Grow],
        role: Role::Controller,
        how: How::DryRun,
        why: "disk-create --grow",
    },
    Need {
        action: "DescribeVolumesModifications",
        flows: &[Grow],
        role: Role::Controller,
        how: How::Read,
        why: "disk-create --grow waiting for the resize",
    },
];

/// A volume id that names nothing, for a call whose volume does not exist
/// yet.
const NO_VOLUME: &str = "vol-00000000000000000";
/// An instance id that names nothing.
const NO_INSTANCE: &str = "i-00000000000000000";
/// A snapshot id that names nothing.
const NO_SNAPSHOT: &str = "snap-00000000000000000";

/// The `Date` header of the latest answer EC2 gave, with the time (ours,
/// seconds since the epoch) it arrived: the skew is read against the
/// moment of the answer, not of the check, which may come seconds later.
#[derive(Debug, Clone, Default)]
struct DateSeen(Arc<Mutex<Option<(String, f64)>>>);

impl DateSeen {
    fn get(&self) -> Option<(String, f64)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Now, in seconds since the epoch.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Intercept for DateSeen {
    fn name(&self) -> &'static str {
        "DateSeen"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(date) = context.response().headers().get("date") {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((date.to_string(), now_secs()));
        }
        Ok(())
    }
}

/// The AWS error codes that mean the credentials themselves are refused
/// (not a permission).
const BAD_CREDENTIALS: &[&str] = &[
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "RequestExpired",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "OptInRequired",
    "Blocked",
    "PendingVerification",
];

/// The AWS error codes of a denied action.
const DENIED: &[&str] = &[
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
];

/// What an action's test said.
#[derive(Debug, Clone)]
enum Answer {
    /// Allowed (`DryRunOperation`, or a read that succeeded).
    Allowed,
    /// Denied (`UnauthorizedOperation`): the message EC2 gave.
    Denied(String),
    /// The credentials were refused, or none found: the failure.
    Credentials(Failure),
    /// Something else: could not tell.
    Unclear(Failure),
}

/// Classifies the outcome of a test call.
fn answer_of<E>(
    result: Result<(), SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>,
    what: &str,
) -> Answer
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let e = match result {
        Ok(()) => return Answer::Allowed,
        Err(e) => e,
    };
    let code = e.code().unwrap_or_default().to_string();
    if code == "DryRunOperation" {
        return Answer::Allowed;
    }
    let f = crate::api::api_error(what, e).failure;
    if DENIED.contains(&code.as_str()) {
        Answer::Denied(f.message)
    } else if BAD_CREDENTIALS.contains(&code.as_str())
        || f.code == codes::NO_CREDENTIALS
        || f.code == codes::UNREACHABLE
    {
        Answer::Credentials(f)
    } else {
        Answer::Unclear(f)
    }
}

/// What the tests of the actions are made on: the first record's volume,
/// instance and zone, and a snapshot of the deployment when there is one.
#[derive(Debug, Clone)]
struct Probe {
    volume: Option<String>,
    size_gib: i32,
    instance: Option<String>,
    zone: String,
    deployment: String,
    node: String,
    snapshot: Option<String>,
}

/// The name operators know a credentials provider by, from the name the
/// SDK gives it.
fn source_name(provider: &str) -> String {
    let p = provider.to_ascii_lowercase();
    let known: &[(&str, &str)] = &[
        (
            "appscalefile",
            "the AppScalefile's EC2_ACCESS_KEY/EC2_SECRET_KEY",
        ),
        ("environment", "the environment (AWS_ACCESS_KEY_ID)"),
        ("profile", "a shared config profile (AWS_PROFILE, ~/.aws)"),
        ("sso", "AWS SSO (a profile's sso_session)"),
        ("webidentity", "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)"),
        ("ecs", "the container's role (ECS, EKS Pod Identity)"),
        ("container", "the container's role (ECS, EKS Pod Identity)"),
        ("imds", "the instance role (IMDS)"),
        ("ec2instancemetadata", "the instance role (IMDS)"),
        ("process", "a credential_process"),
    ];
    known
        .iter()
        .find(|(k, _)| p.replace(['_', '-', ' '], "").contains(k))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| format!("`{provider}`"))
}

/// Which credentials the client's chain finds: the source, and the access
/// key id's last four characters; or why none.
async fn credentials_source(api: &Api) -> Result<String, String> {
    let Some(provider) = api.credentials.as_ref() else {
        return Err("the client has no credentials provider".into());
    };
    match provider.provide_credentials().await {
        Ok(creds) => {
            // The SDK keeps the provider's name private; its Debug form
            // says it first (the secret is redacted there).
            let debug = format!("{creds:?}");
            let name = debug
                .split_once("provider_name: \"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(n, _)| n.to_string())
                .unwrap_or_else(|| "unknown".into());
            let key = creds.access_key_id();
            let tail: String = key
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Ok(format!("{} (access key …{tail})", source_name(&name)))
        }
        Err(e) => Err(format!(
            "no credentials: {e} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, run with an instance role, or give the AppScalefile EC2_ACCESS_KEY/EC2_SECRET_KEY with --appscalefile)"
        )),
    }
}

/// The flows of `need` that `ask` asks, when its role is asked.
fn asked(need: &Need, ask: &Ask) -> Vec<Flow> {
    if ask.role.covers(need.role) {
        ask.of(need.flows)
    } else {
        Vec::new()
    }
}

/// The IAM fix for a denied action.
fn grant(action: &str, flows: &[Flow], role: Role) -> String {
    let flows: Vec<&str> = flows.iter().map(|f| f.as_str()).collect();
    format!(
        "allow ec2:{action} to these credentials (the {} role's policy for {} in docs/ec2.md, IAM policies), then rerun disk-doctor",
        match role {
            Role::Node => "node",
            _ => "controller",
        },
        flows.join(", ")
    )
}

/// disk-doctor's checks on `p`'s records.
pub(crate) fn preflight(p: &mut Ec2, records: &[Record], ask: &Ask) -> Vec<Vec<Check>> {
    let mut records = records.to_vec();
    let n = records.len();
    let (run, placed) = match p.start(&mut records, Ctx { check: true }) {
        Ok(started) => started,
        Err(f) => {
            let (name, fix) = if f.code == codes::REGION_MISMATCH {
                (
                    checks::REGION,
                    "drop --region (the zone decides the region), or run the records of each region separately",
                )
            } else if f.code == codes::NO_REGION {
                (checks::REGION, "see the message")
            } else {
                (checks::CREDENTIALS, "see the message")
            };
            let c = Check::fail(name, Scope::Provider, f.message, fix);
            return vec![vec![c]; n];
        }
    };
    let seen = DateSeen::default();
    let watched = Api {
        client: aws_sdk_ec2::Client::from_conf(
            run.api
                .client
                .config()
                .to_builder()
                .interceptor(seen.clone())
                .build(),
        ),
        credentials: run.api.credentials.clone(),
        kind: run.api.kind,
        region: run.api.region.clone(),
        endpoint: run.api.endpoint.clone(),
    };
    let run = Run {
        api: Arc::new(watched),
        cfg: run.cfg.clone(),
        check: true,
        deadline: Deadline::start(Duration::from_secs(120)),
        started: run.started,
    };
    let kind = p.cfg.kind;
    p.rt.block_on(check_all(&run, kind, &mut records, placed, ask, &seen))
}

/// Every check, once the client is built.
async fn check_all(
    run: &Run,
    kind: ProviderKind,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
    ask: &Ask,
    seen: &DateSeen,
) -> Vec<Vec<Check>> {
    let mut shared: Vec<Check> = Vec::new();
    let mut each: Vec<Vec<Check>> = records.iter().map(|_| Vec::new()).collect();

    // Credentials: which the chain finds.
    let source = match credentials_source(&run.api).await {
        Ok(s) => s,
        Err(why) => {
            let c = Check::fail(
                checks::CREDENTIALS,
                Scope::Provider,
                why,
                "give the tools credentials (docs/ec2.md, Configuration)",
            );
            return records.iter().map(|_| vec![c.clone()]).collect();
        }
    };

    // The region against the zones (said after the credentials).
    let regions = region_checks(run, kind, records);

    // The volumes, as the tools look them up: the first call.
    let found = volume::find_volumes(run, records, placed.clone()).await;
    let api_failure = found.iter().find_map(|f| match f {
        Err(f) if is_api_failure(f) => Some(f.clone()),
        _ => None,
    });
    match &api_failure {
        Some(f) if is_credentials_failure(f) => {
            let c = Check::fail(
                checks::CREDENTIALS,
                Scope::Provider,
                format!("{source}: EC2 refused them: {}", f.message),
                "give the tools working credentials (docs/ec2.md, Configuration)",
            );
            let mut out: Vec<Vec<Check>> = records.iter().map(|_| vec![c.clone()]).collect();
            if let Some(clock) = clock_check(seen, ask) {
                for o in &mut out {
                    o.push(clock.clone());
                }
            }
            return out;
        }
        _ => shared.push(Check::ok(
            checks::CREDENTIALS,
            Scope::Provider,
            format!("{source}: EC2 accepts them"),
        )),
    }

    // The instances the records name (this one's with --self).
    let instances = volume::find_instances(run, records, |_| true).await;

    // Per record: disk, owner, zone, instance, room.
    for (i, r) in records.iter().enumerate() {
        let out = &mut each[i];
        if let Err(f) = &placed[i] {
            out.push(
                Check::fail(
                    checks::INSTANCE,
                    Scope::Disk,
                    f.message.clone(),
                    "see the message",
                )
                .about(r.instance.clone().unwrap_or_else(|| "this instance".into())),
            );
        }
        disk_checks(r, &found[i], ask, out);
        instance_checks(run, r, found[i].as_ref().ok(), &instances, ask, out).await;
    }

    // Permissions, once, on the first record's volume and instance.
    let probe = probe(run, records, &found).await;
    let permissions = permission_checks(run, &probe, ask).await;
    shared.extend(clock_check(seen, ask));
    shared.extend(regions);
    shared.extend(permissions);
    each.into_iter()
        .map(|mut c| {
            let mut all = shared.clone();
            all.append(&mut c);
            all
        })
        .collect()
}

/// Whether a lookup's failure came from the API itself (rather than from
/// what was found: no such disk, another deployment's).
fn is_api_failure(f: &Failure) -> bool {
    is_credentials_failure(f) || DENIED.contains(&f.code.as_str()) || f.code == codes::API_ERROR
}

/// Whether a failure means the credentials were refused or missing.
fn is_credentials_failure(f: &Failure) -> bool {
    BAD_CREDENTIALS.contains(&f.code.as_str())
        || f.code == codes::NO_CREDENTIALS
        || f.code == codes::UNREACHABLE
}

/// The region requests go to, against each record's zone (EC2 only: a
/// Eucalyptus cloud is one region, its zones name none).
fn region_checks(run: &Run, kind: ProviderKind, records: &[Record]) -> Vec<Check> {
    let region = run
        .api
        .client
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_default();
    if kind == ProviderKind::Euca {
        return vec![Check::ok(
            checks::REGION,
            Scope::Provider,
            format!("Eucalyptus: one region per cloud, requests signed for `{region}`"),
        )];
    }
    let mut zones: Vec<&str> = records.iter().filter_map(|r| r.zone.as_deref()).collect();
    zones.sort_unstable();
    zones.dedup();
    let wrong: Vec<String> = zones
        .iter()
        .filter(|z| ec2_region_of_zone(z).is_some_and(|zr| zr != region))
        .map(|z| format!("{z} (in {})", ec2_region_of_zone(z).unwrap_or("?")))
        .collect();
    if wrong.is_empty() {
        vec![Check::ok(
            checks::REGION,
            Scope::Provider,
            format!("requests go to {region}, which holds the disks' zones"),
        )]
    } else {
        vec![
            Check::fail(
                checks::REGION,
                Scope::Provider,
                format!(
                    "requests go to region {region}, but the disks' zone(s) {} are not in it: EC2 there knows neither the zone nor the volumes",
                    wrong.join(", ")
                ),
                "set the region of the zone (unset AWS_REGION or set it to the zone's region, or pass --region), or fix the AppScalefile's zone",
            )
            .about(region),
        ]
    }
}

/// The clock against the latest `Date` header EC2 sent.
fn clock_check(seen: &DateSeen, ask: &Ask) -> Option<Check> {
    let (date, arrived) = seen.get()?;
    let theirs = match DateTime::from_str(&date, DateTimeFormat::HttpDate) {
        Ok(d) => d,
        Err(_) => {
            return Some(Check::skip(
                checks::CLOCK,
                Scope::Provider,
                format!("EC2's Date header `{date}` could not be read"),
            ));
        }
    };
    // The header is cut to the whole second: EC2's time was, on average,
    // half a second past it.
    let skew = arrived - (theirs.as_secs_f64() + 0.5);
    let secs = skew.abs().round() as u64;
    let side = if skew > 0.0 { "ahead of" } else { "behind" };
    Some(if secs > ask.max_skew.as_secs() {
        Check::fail(
            checks::CLOCK,
            Scope::Provider,
            format!(
                "this machine's clock is {} {side} EC2's (its Date header: {date}): requests signed more than {} minutes off are refused (Signature Version 4), and snapshot times and unmount proofs go wrong",
                human(secs),
                ask.max_skew.as_secs() / 60
            ),
            "set the clock right and keep it so: `timedatectl set-ntp true` (or chrony: `chronyc makestep`)",
        )
    } else {
        Check::ok(
            checks::CLOCK,
            Scope::Provider,
            format!("within {} of EC2's clock", human(secs.max(1))),
        )
    })
}

/// `3h 12m`, `4m 10s`, `7s`.
fn human(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The record's disk, and whose it is.
fn disk_checks(
    r: &Record,
    found: &Result<crate::owner::Found, Failure>,
    ask: &Ask,
    out: &mut Vec<Check>,
) {
    let disk = r.disk.clone().unwrap_or_default();
    match found {
        Ok(f) => {
            let v = &f.vol;
            out.push(
                Check::ok(
                    checks::DISK,
                    Scope::Disk,
                    format!(
                        "{} exists: {} GiB {}, {}, in {}",
                        volume::id(v),
                        v.size().unwrap_or(0),
                        v.volume_type().map(|t| t.as_str()).unwrap_or("?"),
                        v.state().map(|s| s.as_str()).unwrap_or("?"),
                        v.availability_zone().unwrap_or("?")
                    ),
                )
                .about(&disk),
            );
            out.push(match f.owner {
                Owner::Ours => Check::ok(
                    checks::OWNER,
                    Scope::Disk,
                    format!(
                        "tagged for this deployment ({}{})",
                        crate::owner::tag(v, TAG_DEPLOYMENT).unwrap_or("?"),
                        crate::owner::tag(v, TAG_NODE)
                            .map(|n| format!(", node {n}"))
                            .unwrap_or_default()
                    ),
                ),
                Owner::HandMadeByName | Owner::HandMadeById => Check::ok(
                    checks::OWNER,
                    Scope::Disk,
                    "made by hand (no deployment tag): the tools adopt it, tagging it for this deployment (ec2:CreateTags)",
                ),
            }.about(&disk));
            if let (Some(zone), Some(vz)) = (r.zone.as_deref(), v.availability_zone())
                && zone != vz
            {
                out.push(
                    Check::fail(
                        checks::ZONE,
                        Scope::Disk,
                        format!("the volume is in {vz}, the record's zone is {zone}: it cannot be attached to an instance there"),
                        "use a volume in the deployment's zone (or fix the AppScalefile's zone)",
                    )
                    .about(&disk),
                );
            }
        }
        Err(f) if f.code == codes::NO_SUCH_DISK => {
            let makes = ask.role != Role::Node && ask.any(&[Up]);
            if makes {
                out.push(
                    Check::ok(
                        checks::DISK,
                        Scope::Disk,
                        "does not exist yet: disk-create makes it (ec2:CreateVolume, below)",
                    )
                    .about(&disk),
                );
            } else if ask.of(&[Up, Backup, Grow]).is_empty() {
                out.push(
                    Check::ok(
                        checks::DISK,
                        Scope::Disk,
                        "does not exist: nothing to take down",
                    )
                    .about(&disk),
                );
            } else {
                let flows = ask.of(&[Up, Backup, Grow]);
                out.push(
                    Check::fail(
                        checks::DISK,
                        Scope::Disk,
                        format!("{}: nothing to attach, snapshot or grow", f.message),
                        "make it first from the controller (scripts/up --cloud-only), or check its name and zone",
                    )
                    .about(&disk)
                    .gating(&flows),
                );
            }
        }
        Err(f)
            if [
                codes::OTHER_DEPLOYMENT,
                codes::OTHER_NODE,
                codes::NOT_ADOPTABLE,
                codes::AMBIGUOUS_DISK,
                codes::DUPLICATE_DISK,
            ]
            .contains(&f.code) =>
        {
            out.push(
                Check::fail(
                    checks::OWNER,
                    Scope::Disk,
                    format!("{} [{}]", f.message, f.code),
                    appscale_persist::status::fix(&f.code),
                )
                .about(&disk),
            );
        }
        Err(f) if DENIED.contains(&f.code.as_str()) => out.push(
            Check::fail(
                checks::PERMISSION,
                Scope::Disk,
                format!("looking the volume up was denied: {}", f.message),
                grant("DescribeVolumes", &ask.flows, ask.role),
            )
            .about("ec2:DescribeVolumes"),
        ),
        Err(f) => out.push(
            Check::fail(
                checks::DISK,
                Scope::Disk,
                format!("{} [{}]", f.message, f.code),
                "see the message",
            )
            .about(&disk),
        ),
    }
}

/// The record's instance: it exists, in the record's zone, with room for
/// the volume.
async fn instance_checks(
    run: &Run,
    r: &Record,
    found: Option<&crate::owner::Found>,
    instances: &Result<std::collections::HashMap<String, InstanceInfo>, Failure>,
    ask: &Ask,
    out: &mut Vec<Check>,
) {
    let Some(id) = r.instance.as_deref() else {
        if ask.any(&[Up]) {
            out.push(Check::skip(
                checks::INSTANCE,
                Scope::Disk,
                "no instance named: disk-attach needs the record's instance, --instance, or --self on the node (the boot unit)",
            ));
        }
        return;
    };
    let info = match instances {
        Ok(m) => m.get(id),
        Err(f) => {
            let denied = DENIED.contains(&f.code.as_str());
            out.push(
                Check::fail(
                    if denied {
                        checks::PERMISSION
                    } else {
                        checks::INSTANCE
                    },
                    Scope::Disk,
                    format!("looking {id} up failed: {}", f.message),
                    if denied {
                        grant("DescribeInstances", &[Up], ask.role)
                    } else {
                        "see the message".into()
                    },
                )
                .about(if denied {
                    "ec2:DescribeInstances".to_string()
                } else {
                    id.to_string()
                })
                .gating(&ask.of(&[Up])),
            );
            return;
        }
    };
    let Some(info) = info else {
        out.push(
            Check::fail(
                checks::INSTANCE,
                Scope::Disk,
                format!("EC2 knows no instance {id} [{}]", codes::NO_SUCH_INSTANCE),
                "name a running instance of this account and region (the record's instance, --instance), or run on the node with --self",
            )
            .about(id),
        );
        return;
    };
    out.push(
        Check::ok(
            checks::INSTANCE,
            Scope::Disk,
            format!(
                "exists in {}{}",
                info.zone,
                info.instance_type
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ),
        )
        .about(id),
    );
    if let Some(zone) = r.zone.as_deref()
        && !info.zone.is_empty()
        && zone != info.zone
    {
        out.push(
            Check::fail(
                checks::ZONE,
                Scope::Disk,
                format!("the instance is in {}, the record's zone is {zone}: a volume there cannot be attached to it [{}]", info.zone, codes::ZONE_MISMATCH),
                "run the instance in the deployment's zone, or fix the AppScalefile's zone",
            )
            .about(id),
        );
    }
    let attached_here = found.is_some_and(|f| volume::attachment_to(&f.vol, id).is_some());
    if !ask.any(&[Up]) || attached_here || run.cfg.kind == ProviderKind::Euca {
        return;
    }
    let Some(ty) = info.instance_type.clone() else {
        return;
    };
    match run.api.ebs_limits(std::slice::from_ref(&ty)).await {
        Ok(limits) => {
            let one: std::collections::HashMap<String, InstanceInfo> =
                [(id.to_string(), info.clone())].into();
            match limits::room(&one, &limits).remove(id) {
                Some(room) if room.left == 0 => out.push(
                    Check::fail(
                        checks::ATTACHMENT_ROOM,
                        Scope::Disk,
                        room.full(id).message,
                        "detach a volume the instance no longer needs, or use an instance type that takes more",
                    )
                    .about(id)
                    .gating(&[Up]),
                ),
                Some(room) => out.push(
                    Check::ok(
                        checks::ATTACHMENT_ROOM,
                        Scope::Disk,
                        format!("{ty} takes {} EBS volumes; {} attached, room for {}", room.limit, room.attached, room.left),
                    )
                    .about(id),
                ),
                None => out.push(Check::skip(
                    checks::ATTACHMENT_ROOM,
                    Scope::Disk,
                    format!("EC2 gave no attachment limit for {ty}: it says when the limit is reached"),
                ).about(id)),
            }
        }
        Err(e) => out.push(
            Check::warn(
                checks::ATTACHMENT_ROOM,
                Scope::Disk,
                format!("the attachment limit of {ty} is unknown: {}", e.failure.message),
                "allow ec2:DescribeInstanceTypes (optional: without it EC2 says when the limit is reached)",
            )
            .about(id),
        ),
    }
}

/// What the permission tests are made on.
async fn probe(
    run: &Run,
    records: &[Record],
    found: &[Result<crate::owner::Found, Failure>],
) -> Probe {
    let first = records.first();
    let vol = found.iter().find_map(|f| f.as_ref().ok());
    let deployment = first
        .map(|r| run.deployment_of(r))
        .unwrap_or_else(|| run.cfg.deployment.clone());
    let snapshot = match run.api.snapshots(&deployment, true).await {
        Ok(s) => s.first().map(|s| s.id.clone()),
        Err(_) => None,
    };
    Probe {
        volume: vol.map(|f| volume::id(&f.vol).to_string()),
        size_gib: vol.and_then(|f| f.vol.size()).unwrap_or(1),
        instance: records.iter().find_map(|r| r.instance.clone()),
        zone: records
            .iter()
            .find_map(|r| r.zone.clone())
            .or_else(|| run.cfg.zone.clone())
            .unwrap_or_default(),
        deployment,
        node: first.and_then(|r| r.node.clone()).unwrap_or_default(),
        snapshot,
    }
}

/// The tags a volume or snapshot is made with, as the tools set them.
fn tags(resource: ResourceType, p: &Probe) -> TagSpecification {
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    TagSpecification::builder()
        .resource_type(resource)
        .tags(tag(TAG_DEPLOYMENT, &p.deployment))
        .tags(tag(TAG_NODE, &p.node))
        .build()
}

/// Tests `action` (tagging as the tools do when `with_tags`).
async fn test(run: &Run, action: &str, p: &Probe, with_tags: bool) -> Answer {
    let c = &run.api.client;
    let vol = p.volume.clone().unwrap_or_else(|| NO_VOLUME.into());
    let instance = p.instance.clone().unwrap_or_else(|| NO_INSTANCE.into());
    match action {
        "DescribeVolumes" => answer_of(
            c.describe_volumes().max_results(5).send().await.map(drop),
            action,
        ),
        "DescribeInstances" => answer_of(
            c.describe_instances().max_results(5).send().await.map(drop),
            action,
        ),
        "DescribeInstanceTypes" => answer_of(
            c.describe_instance_types()
                .instance_types(aws_sdk_ec2::types::InstanceType::M5Large)
                .send()
                .await
                .map(drop),
            action,
        ),
        "DescribeSnapshots" => answer_of(
            c.describe_snapshots()
                .owner_ids("self")
                .max_results(5)
                .send()
                .await
                .map(drop),
            action,
        ),
        "DescribeVolumesModifications" => answer_of(
            c.describe_volumes_modifications()
                .max_results(5)
                .send()
                .await
                .map(drop),
            action,
        ),
        "CreateVolume" => {
            let mut req = c
                .create_volume()
                .availability_zone(&p.zone)
                .size(1)
                .volume_type(VolumeType::Gp3)
                .dry_run(true);
            if with_tags {
                req = req.tag_specifications(tags(ResourceType::Volume, p));
            }
            answer_of(req.send().await.map(drop), action)
        }
        "CreateTags" => answer_of(
            c.create_tags()
                .resources(&vol)
                .tags(
                    Tag::builder()
                        .key(TAG_DEPLOYMENT)
                        .value(&p.deployment)
                        .build(),
                )
                .dry_run(true)
                .send()
                .await
                .map(drop),
            action,
        ),
        "AttachVolume" => answer_of(
            c.attach_volume()
                .volume_id(&vol)
                .instance_id(&instance)
                .device("/dev/sdf")
                .dry_run(true)
                .send()
                .await
                .map(drop),
            action,
        ),
        "DetachVolume" => answer_of(
            c.detach_volume()
                .volume_id(&vol)
                .instance_id(&instance)
                .dry_run(true)
                .send()
                .await
                .map(drop),
            action,
        ),
        "CreateSnapshot" => {
            let mut req = c.create_snapshot().volume_id(&vol).dry_run(true);
            if with_tags {
                req = req.tag_specifications(tags(ResourceType::Snapshot, p));
            }
            answer_of(req.send().await.map(drop), action)
        }
        "DeleteSnapshot" => answer_of(
            c.delete_snapshot()
                .snapshot_id(p.snapshot.clone().unwrap_or_else(|| NO_SNAPSHOT.into()))
                .dry_run(true)
                .send()
                .await
                .map(drop),
            action,
        ),
        "ModifyVolume" => answer_of(
            c.modify_volume()
                .volume_id(&vol)
                .size(p.size_gib.saturating_add(1))
                .dry_run(true)
                .send()
                .await
                .map(drop),
            action,
        ),
        other => Answer::Unclear(Failure::new(
            codes::INTERNAL,
            format!("no test for {other}"),
        )),
    }
}

/// One check per action the flows and role asked need.
async fn permission_checks(run: &Run, p: &Probe, ask: &Ask) -> Vec<Check> {
    let mut out = Vec::new();
    // Tags on create: authorised as ec2:CreateTags too. Asked without tags
    // when the create is denied, to tell which action is missing.
    let mut tags_on_create: Option<bool> = None;
    // CreateTags last: the creates' tags may be all there is to judge it by.
    let mut order: Vec<&Need> = NEEDS.iter().filter(|n| n.action != "CreateTags").collect();
    order.extend(NEEDS.iter().filter(|n| n.action == "CreateTags"));
    for need in order {
        let flows = asked(need, ask);
        if flows.is_empty() {
            continue;
        }
        let subject = format!("ec2:{}", need.action);
        let tagged = matches!(need.action, "CreateVolume" | "CreateSnapshot");
        let mut answer = test(run, need.action, p, tagged).await;
        if tagged && matches!(answer, Answer::Denied(_)) {
            let untagged = test(run, need.action, p, false).await;
            if matches!(untagged, Answer::Allowed) {
                tags_on_create = Some(false);
                answer = Answer::Allowed;
            }
        } else if tagged && matches!(answer, Answer::Allowed) && tags_on_create.is_none() {
            tags_on_create = Some(true);
        }
        if need.action == "CreateTags" && p.volume.is_none() {
            // No volume to tag yet: the creates' tags said it.
            answer = match tags_on_create {
                Some(true) => Answer::Allowed,
                Some(false) => Answer::Denied(
                    "tagging a new volume or snapshot as it is made was denied (ec2:CreateTags)"
                        .into(),
                ),
                None => Answer::Unclear(Failure::new(
                    codes::NO_SUCH_DISK,
                    "no volume to test it on yet: rerun disk-doctor once the volume exists",
                )),
            };
        } else if need.action == "CreateTags" && tags_on_create == Some(false) {
            answer = Answer::Denied(
                "tagging a new volume or snapshot as it is made was denied (ec2:CreateTags)".into(),
            );
        }
        let check = match answer {
            Answer::Allowed => Check::ok(
                checks::PERMISSION,
                Scope::Provider,
                format!(
                    "allowed ({})",
                    if need.how == How::DryRun {
                        "DryRun"
                    } else {
                        "read"
                    }
                ),
            ),
            Answer::Denied(msg) => {
                let optional = need.action == "DescribeInstanceTypes";
                let c = Check::new(
                    checks::PERMISSION,
                    Scope::Provider,
                    if optional {
                        Verdict::Warn
                    } else {
                        Verdict::Fail
                    },
                    format!("denied (UnauthorizedOperation): {}: {msg}", need.why),
                );
                c.fixed_by(grant(
                    need.action,
                    &flows,
                    if need.role == Role::All {
                        ask.role
                    } else {
                        need.role
                    },
                ))
            }
            Answer::Credentials(f) => Check::fail(
                checks::CREDENTIALS,
                Scope::Provider,
                format!("{}: {}", subject, f.message),
                "give the tools working credentials (docs/ec2.md, Configuration)",
            ),
            Answer::Unclear(f) => Check::warn(
                checks::PERMISSION,
                Scope::Provider,
                format!("could not tell: {} [{}]", f.message, f.code),
                "see the message; the flow will say for sure",
            ),
        };
        out.push(check.about(&subject).gating(&flows));
    }
    // In the order of NEEDS.
    out.sort_by_key(|c| {
        NEEDS
            .iter()
            .position(|n| c.subject.as_deref() == Some(&format!("ec2:{}", n.action)))
    });
    out
}
