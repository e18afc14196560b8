//! `disk-doctor` on Compute Engine: whether the flows' calls would work,
//! changing nothing.
//!
//! * **credentials**: which Application Default Credentials the client
//!   uses (a key file, gcloud's ADC file, the VM's service account), and
//!   whether Compute Engine accepts them (the first call says);
//! * **access-scopes**: on a VM whose service account gives the token,
//!   the scopes it was made with (the metadata server says): without
//!   `compute` or `cloud-platform` every call fails, whatever IAM allows;
//! * **permission**, one check per permission in [`NEEDS`] for the flows
//!   and role asked, by `testIamPermissions`: on the record's disk and
//!   instance when they exist (Compute Engine's own), and the rest on the
//!   project (Cloud Resource Manager's `projects.testIamPermissions`: a
//!   permission granted on the project holds for its disks, and
//!   `compute.disks.create` or `compute.snapshots.list` have no resource
//!   to test on);
//! * **clock**: this machine's clock against the `Date` of Resource
//!   Manager's answer;
//! * **disk**, **owner**, **zone**, **instance** for each record.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use appscale_persist::checks::{self, Ask, Check, Flow, Role, Scope};
use appscale_persist::codes;
use appscale_persist::record::Record;
use appscale_persist::release::identity;
use appscale_persist::step::{Ctx, Failure};
use google_cloud_compute_v1::model::TestPermissionsRequest;

use crate::api::Location;
use crate::disk::{self, InstanceKey};
use crate::owner::Owner;
use crate::{Gce, Run, Target};

/// What a permission is tested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The record's disk (when it exists; else the project).
    Disk,
    /// The record's instance (when named and found; else the project).
    Instance,
    /// The project: permissions of calls with no resource of their own.
    Project,
}

/// One Compute Engine permission the flows need: in which flows, by which
/// role, tested on what. The roles of docs/gce.md are these, and a test
/// holds the two together.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// The permission (`compute.disks.create`).
    pub permission: &'static str,
    /// The flows whose calls check it.
    pub flows: &'static [Flow],
    /// Who makes those calls: the controller, the node, or both.
    pub role: Role,
    /// What it is tested on.
    pub on: On,
}

use Flow::{Backup, Down, Grow, Up};

/// Every permission the flows' calls check (Compute Engine's IAM
/// reference), and who makes them: as on EC2, the controller makes,
/// attaches, grows and detaches; a node attaches its own disk at boot,
/// snapshots it, and may detach it.
pub const NEEDS: &[Need] = &[
    Need {
        permission: "compute.disks.get",
        flows: &[Up, Down, Backup, Grow],
        role: Role::All,
        on: On::Disk,
    },
    Need {
        permission: "compute.disks.list",
        flows: &[Up],
        role: Role::Controller,
        on: On::Project,
    },
    Need {
        permission: "compute.disks.create",
        flows: &[Up],
        role: Role::Controller,
        on: On::Project,
    },
    Need {
        permission: "compute.disks.setLabels",
        flows: &[Up],
        role: Role::All,
        on: On::Disk,
    },
    Need {
        permission: "compute.disks.use",
        flows: &[Up],
        role: Role::All,
        on: On::Disk,
    },
    Need {
        permission: "compute.disks.resize",
        flows: &[Grow],
        role: Role::Controller,
        on: On::Disk,
    },
    Need {
        permission: "compute.disks.createSnapshot",
        flows: &[Backup],
        role: Role::All,
        on: On::Disk,
    },
    Need {
        permission: "compute.instances.get",
        flows: &[Up, Down],
        role: Role::All,
        on: On::Instance,
    },
    Need {
        permission: "compute.instances.attachDisk",
        flows: &[Up],
        role: Role::All,
        on: On::Instance,
    },
    Need {
        permission: "compute.instances.detachDisk",
        flows: &[Down],
        role: Role::All,
        on: On::Instance,
    },
    Need {
        permission: "compute.zoneOperations.get",
        flows: &[Up, Down, Backup, Grow],
        role: Role::All,
        on: On::Project,
    },
    Need {
        permission: "compute.snapshots.create",
        flows: &[Backup],
        role: Role::All,
        on: On::Project,
    },
    Need {
        permission: "compute.snapshots.setLabels",
        flows: &[Backup],
        role: Role::All,
        on: On::Project,
    },
    Need {
        permission: "compute.snapshots.get",
        flows: &[Backup],
        role: Role::All,
        on: On::Project,
    },
    Need {
        permission: "compute.snapshots.list",
        flows: &[Backup],
        role: Role::All,
        on: On::Project,
    },
    Need {
        permission: "compute.snapshots.delete",
        flows: &[Backup],
        role: Role::All,
        on: On::Project,
    },
    Need {
        permission: "compute.globalOperations.get",
        flows: &[Backup],
        role: Role::All,
        on: On::Project,
    },
];

/// The scopes that let a token call Compute Engine to change things.
const WRITE_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/compute",
    "https://www.googleapis.com/auth/cloud-platform",
];

/// The environment variable naming Cloud Resource Manager's endpoint
/// (gcloud's own override), for a private endpoint or an emulator.
pub const RESOURCE_MANAGER_ENV: &str = appscale_persist::doctor::RESOURCE_MANAGER_ENDPOINT_ENV;

/// Resource Manager's endpoint.
const RESOURCE_MANAGER: &str = "https://cloudresourcemanager.googleapis.com/";

/// The flows of `need` asked, when its role is.
fn asked(need: &Need, ask: &Ask) -> Vec<Flow> {
    if ask.role.covers(need.role) {
        ask.of(need.flows)
    } else {
        Vec::new()
    }
}

/// Which Application Default Credentials the client uses.
fn credentials_source(metadata: Option<&str>) -> String {
    if let Ok(path) = std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
        let kind = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .unwrap_or_else(|| "unreadable".into());
        return format!("the key file in GOOGLE_APPLICATION_CREDENTIALS ({path}, {kind})");
    }
    let gcloud = std::env::var("CLOUDSDK_CONFIG")
        .map(std::path::PathBuf::from)
        .ok()
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config/gcloud"))
        })
        .map(|d| d.join("application_default_credentials.json"));
    if let Some(f) = gcloud.filter(|f| f.exists()) {
        return format!("gcloud's ADC file ({})", f.display());
    }
    match identity::gce_value(metadata, "instance/service-accounts/default/email") {
        Ok(Some(email)) => format!("the VM's service account ({email}, from the metadata server)"),
        _ => "the metadata server's service account".into(),
    }
}

/// The access scopes check: only where the VM's service account gives the
/// token (no key file, no gcloud ADC file).
fn scopes_check(metadata: Option<&str>, source: &str) -> Check {
    let name = checks::SCOPES;
    if !source.contains("service account (") && !source.contains("metadata server") {
        return Check::skip(
            name,
            Scope::Provider,
            "the token comes from a key file or gcloud: its scopes are the client's (cloud-platform)",
        );
    }
    let scopes = match identity::gce_value(metadata, "instance/service-accounts/default/scopes") {
        Ok(Some(text)) => text,
        Ok(None) => {
            return Check::skip(
                name,
                Scope::Provider,
                "the metadata server has no service account scopes",
            );
        }
        Err(e) => {
            return Check::skip(
                name,
                Scope::Provider,
                format!("not on a Compute Engine VM ({e})"),
            );
        }
    };
    let list: Vec<&str> = scopes.split_whitespace().collect();
    if list.iter().any(|s| WRITE_SCOPES.contains(s)) {
        return Check::ok(
            name,
            Scope::Provider,
            format!(
                "the VM's token may call Compute Engine ({})",
                list.join(" ")
            ),
        );
    }
    let readonly = list.contains(&"https://www.googleapis.com/auth/compute.readonly");
    Check::fail(
        name,
        Scope::Provider,
        format!(
            "the VM's service account has the scopes {}: {} Compute Engine call fails ACCESS_TOKEN_SCOPE_INSUFFICIENT (insufficient-scope), whatever IAM allows",
            if list.is_empty() {
                "(none)".to_string()
            } else {
                list.join(" ")
            },
            if readonly { "every changing" } else { "every" }
        ),
        "give the VM the cloud-platform (or compute) scope: stop it, then `gcloud compute instances set-service-account VM --service-account SA --scopes=cloud-platform`; or use a key file (GOOGLE_APPLICATION_CREDENTIALS)",
    )
}

/// disk-doctor's checks on `p`'s records.
pub(crate) fn preflight(p: &mut Gce, records: &[Record], ask: &Ask) -> Vec<Vec<Check>> {
    let mut records = records.to_vec();
    let n = records.len();
    let (run, targets) = match p.start(&mut records, Ctx { check: true }) {
        Ok(started) => started,
        Err(f) => {
            let c = Check::fail(
                checks::CREDENTIALS,
                Scope::Provider,
                f.message,
                "see the message",
            );
            return vec![vec![c]; n];
        }
    };
    let metadata = p.cfg.metadata_endpoint.clone();
    p.rt.block_on(check_all(&run, &records, targets, ask, metadata.as_deref()))
}

/// Every check, once the clients are built.
async fn check_all(
    run: &Run,
    records: &[Record],
    targets: Vec<Result<Target, Failure>>,
    ask: &Ask,
    metadata: Option<&str>,
) -> Vec<Vec<Check>> {
    let source = credentials_source(metadata);
    let mut shared = Vec::new();
    let mut each: Vec<Vec<Check>> = records.iter().map(|_| Vec::new()).collect();

    let found = disk::find_disks(run, &targets).await;
    let refused = found.iter().find_map(|f| match f {
        Err(f)
            if [
                codes::NO_CREDENTIALS,
                codes::UNREACHABLE,
                codes::TIMEOUT,
                codes::INSUFFICIENT_SCOPE,
                codes::Code::from_api("UNAUTHENTICATED"),
            ]
            .contains(&f.code) =>
        {
            Some(f.clone())
        }
        _ => None,
    });
    let scopes = scopes_check(metadata, &source);
    match refused {
        Some(f) if f.code != codes::INSUFFICIENT_SCOPE => {
            let c = Check::fail(
                checks::CREDENTIALS,
                Scope::Provider,
                format!("{source}: Compute Engine did not take them: {}", f.message),
                "give the tools Application Default Credentials (docs/gce.md, Configuration)",
            );
            return records
                .iter()
                .map(|_| vec![c.clone(), scopes.clone()])
                .collect();
        }
        _ => shared.push(Check::ok(
            checks::CREDENTIALS,
            Scope::Provider,
            format!("{source}: Compute Engine answers"),
        )),
    }
    shared.push(scopes);

    let wanted: Vec<InstanceKey> = targets
        .iter()
        .flatten()
        .filter_map(|t| Some((t.location.clone(), t.instance.clone()?)))
        .collect();
    let instances = disk::find_instances(run, wanted).await;

    for (i, r) in records.iter().enumerate() {
        let out = &mut each[i];
        let t = match &targets[i] {
            Ok(t) => t,
            Err(f) => {
                out.push(Check::fail(
                    checks::DISK,
                    Scope::Disk,
                    format!("{} [{}]", f.message, f.code),
                    "see the message",
                ));
                continue;
            }
        };
        disk_checks(r, t, &found[i], ask, out);
        if let Some(name) = &t.instance {
            match instances.get(&(t.location.clone(), name.clone())) {
                Some(Ok(info)) => out.push(
                    Check::ok(
                        checks::INSTANCE,
                        Scope::Disk,
                        format!(
                            "exists in {}{}",
                            t.location.zone,
                            info.machine_type.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
                        ),
                    )
                    .about(name),
                ),
                Some(Err(f)) if f.code == codes::INSUFFICIENT_SCOPE => out.push(
                    Check::skip(checks::INSTANCE, Scope::Disk, "not looked up: the token's scopes are refused (access-scopes)").about(name),
                ),
                Some(Err(f)) => out.push(
                    Check::fail(checks::INSTANCE, Scope::Disk, format!("{} [{}]", f.message, f.code), "name an instance of the project in the record's zone (--instance), or run on the node with --self")
                        .about(name),
                ),
                None => {}
            }
        } else if ask.any(&[Up]) {
            out.push(Check::skip(
                checks::INSTANCE,
                Scope::Disk,
                "no instance named: disk-attach needs the record's instance, --instance, or --self on the node (the boot unit)",
            ));
        }
    }

    // Permissions, once: on the first record's disk and instance when they
    // exist, the rest on the project.
    let first = targets
        .iter()
        .zip(&found)
        .find_map(|(t, f)| Some((t.as_ref().ok()?, f)));
    let disk_exists = first.is_some_and(|(_, f)| matches!(f, Ok(Some(_))));
    let instance_exists = first.is_some_and(|(t, _)| {
        t.instance
            .as_ref()
            .is_some_and(|i| matches!(instances.get(&(t.location.clone(), i.clone())), Some(Ok(_))))
    });
    let project = first.map(|(t, _)| t.location.project.clone());
    let (perms, clock) = permission_checks(
        run,
        first.map(|(t, _)| t),
        disk_exists,
        instance_exists,
        project,
        ask,
    )
    .await;
    shared.extend(clock);
    shared.extend(perms);
    each.into_iter()
        .map(|mut c| {
            let mut all = shared.clone();
            all.append(&mut c);
            all
        })
        .collect()
}

/// The record's disk, and whose it is.
fn disk_checks(
    r: &Record,
    t: &Target,
    found: &Result<disk::Found, Failure>,
    ask: &Ask,
    out: &mut Vec<Check>,
) {
    let disk = t.disk.clone();
    match found {
        Ok(Some((d, owner))) => {
            out.push(
                Check::ok(
                    checks::DISK,
                    Scope::Disk,
                    format!("exists: {}", d.describe()),
                )
                .about(&disk),
            );
            out.push(
                match owner {
                    Owner::Ours => Check::ok(checks::OWNER, Scope::Disk, "labelled for this deployment"),
                    Owner::HandMade => Check::ok(
                        checks::OWNER,
                        Scope::Disk,
                        "made by hand (no deployment label): the tools adopt it, labelling it (compute.disks.setLabels)",
                    ),
                }
                .about(&disk),
            );
            if let Some(zone) = r.zone.as_deref()
                && zone != d.zone
                && !d.zone.is_empty()
            {
                out.push(
                    Check::fail(
                        checks::ZONE,
                        Scope::Disk,
                        format!("the disk is in {}, the record's zone is {zone}", d.zone),
                        "use a disk in the deployment's zone (or fix the AppScalefile's zone)",
                    )
                    .about(&disk),
                );
            }
        }
        Ok(None) => {
            if ask.of(&[Up, Backup, Grow]).is_empty() {
                out.push(
                    Check::ok(
                        checks::DISK,
                        Scope::Disk,
                        "does not exist: nothing to take down",
                    )
                    .about(&disk),
                );
            } else if ask.role != Role::Node && ask.any(&[Up]) {
                let why = format!(
                    "does not exist yet in {}: disk-create makes it (compute.disks.create, below)",
                    t.location
                );
                out.push(Check::ok(checks::DISK, Scope::Disk, why).about(&disk));
            } else {
                out.push(
                    Check::fail(
                        checks::DISK,
                        Scope::Disk,
                        format!("no disk {disk} in {}: nothing to attach, snapshot or grow", t.location),
                        "make it first from the controller (scripts/up --cloud-only), or check its name and zone",
                    )
                    .about(&disk)
                    .gating(&ask.of(&[Up, Backup, Grow])),
                );
            }
        }
        Err(f)
            if [
                codes::OTHER_DEPLOYMENT,
                codes::OTHER_NODE,
                codes::NOT_ADOPTABLE,
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
        Err(f) if f.code == codes::INSUFFICIENT_SCOPE => out.push(
            Check::skip(
                checks::DISK,
                Scope::Disk,
                "not looked up: the token's scopes are refused (access-scopes)",
            )
            .about(&disk),
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

/// The IAM fix for a missing permission.
fn grant(permission: &str, flows: &[Flow], role: Role) -> String {
    let flows: Vec<&str> = flows.iter().map(|f| f.as_str()).collect();
    format!(
        "grant {permission} to these credentials (the {} role for {} in docs/gce.md, Access scopes and IAM), then rerun disk-doctor",
        if role == Role::Node {
            "node"
        } else {
            "controller"
        },
        flows.join(", ")
    )
}

/// The permissions asked, tested; and the clock, from Resource Manager's
/// answer.
async fn permission_checks(
    run: &Run,
    target: Option<&Target>,
    disk_exists: bool,
    instance_exists: bool,
    project: Option<String>,
    ask: &Ask,
) -> (Vec<Check>, Option<Check>) {
    let wanted: Vec<(&Need, Vec<Flow>)> = NEEDS
        .iter()
        .map(|n| (n, asked(n, ask)))
        .filter(|(_, f)| !f.is_empty())
        .collect();
    let mut granted: BTreeSet<String> = BTreeSet::new();
    let mut tested: BTreeSet<&str> = BTreeSet::new();
    let mut unclear: HashMap<&str, String> = HashMap::new();
    let on = |o: On| {
        wanted
            .iter()
            .filter(move |(n, _)| n.on == o)
            .map(|(n, _)| n.permission)
            .collect::<Vec<_>>()
    };
    if let Some(t) = target {
        if disk_exists {
            let perms = on(On::Disk);
            match test_disk(run, &t.location, &t.disk, &perms).await {
                Ok(g) => {
                    granted.extend(g);
                    tested.extend(perms);
                }
                Err(f) => perms.iter().for_each(|p| {
                    unclear.insert(p, f.message.clone());
                }),
            }
        }
        if let (true, Some(instance)) = (instance_exists, &t.instance) {
            let perms = on(On::Instance);
            match test_instance(run, &t.location, instance, &perms).await {
                Ok(g) => {
                    granted.extend(g);
                    tested.extend(perms);
                }
                Err(f) => perms.iter().for_each(|p| {
                    unclear.insert(p, f.message.clone());
                }),
            }
        }
    }
    let rest: Vec<&str> = wanted
        .iter()
        .map(|(n, _)| n.permission)
        .filter(|p| !tested.contains(p))
        .collect();
    let mut clock = None;
    if let Some(project) = &project
        && !rest.is_empty()
    {
        match test_project(project, &rest).await {
            Ok((g, date)) => {
                granted.extend(g);
                tested.extend(rest.iter().copied());
                for p in &rest {
                    unclear.remove(p);
                }
                clock = date.map(|d| clock_check(&d, ask));
            }
            Err(why) => rest.iter().for_each(|p| {
                unclear.entry(p).or_insert_with(|| why.clone());
            }),
        }
    }
    let mut out = Vec::new();
    for (need, flows) in &wanted {
        let p = need.permission;
        let role = if need.role == Role::All {
            ask.role
        } else {
            need.role
        };
        let check = if granted.contains(p) {
            Check::ok(
                checks::PERMISSION,
                Scope::Provider,
                format!(
                    "granted (testIamPermissions on the {})",
                    match need.on {
                        On::Disk if disk_exists => "disk",
                        On::Instance if instance_exists => "instance",
                        _ => "project",
                    }
                ),
            )
        } else if tested.contains(p) {
            Check::fail(
                checks::PERMISSION,
                Scope::Provider,
                "not granted: the call that checks it fails PERMISSION_DENIED",
                grant(p, flows, role),
            )
        } else {
            Check::warn(
                checks::PERMISSION,
                Scope::Provider,
                format!(
                    "could not be tested: {}",
                    unclear
                        .get(p)
                        .cloned()
                        .unwrap_or_else(|| "no project".into())
                ),
                "see the message; the flow will say for sure",
            )
        };
        out.push(check.about(p).gating(flows));
    }
    (out, clock)
}

/// `disks.testIamPermissions` of `perms` on a disk: those granted.
async fn test_disk(
    run: &Run,
    at: &Location,
    disk: &str,
    perms: &[&str],
) -> Result<Vec<String>, Failure> {
    if perms.is_empty() {
        return Ok(Vec::new());
    }
    let what = format!("disks.testIamPermissions {disk}");
    let req = run
        .api
        .disks
        .test_iam_permissions()
        .set_project(&at.project)
        .set_zone(&at.zone)
        .set_resource(disk)
        .set_body(
            TestPermissionsRequest::new().set_permissions(perms.iter().map(|p| p.to_string())),
        )
        .send();
    Ok(crate::api::call(&what, req).await?.permissions)
}

/// `instances.testIamPermissions` of `perms` on an instance.
async fn test_instance(
    run: &Run,
    at: &Location,
    instance: &str,
    perms: &[&str],
) -> Result<Vec<String>, Failure> {
    if perms.is_empty() {
        return Ok(Vec::new());
    }
    let what = format!("instances.testIamPermissions {instance}");
    let req = run
        .api
        .instances
        .test_iam_permissions()
        .set_project(&at.project)
        .set_zone(&at.zone)
        .set_resource(instance)
        .set_body(
            TestPermissionsRequest::new().set_permissions(perms.iter().map(|p| p.to_string())),
        )
        .send();
    Ok(crate::api::call(&what, req).await?.permissions)
}

/// Resource Manager's `projects.testIamPermissions` of `perms` on the
/// project: those granted, and the answer's `Date`.
async fn test_project(
    project: &str,
    perms: &[&str],
) -> Result<(Vec<String>, Option<String>), String> {
    let base = std::env::var(RESOURCE_MANAGER_ENV).unwrap_or_else(|_| RESOURCE_MANAGER.to_string());
    let url = format!(
        "{}/v1/projects/{project}:testIamPermissions",
        base.trim_end_matches('/')
    );
    let creds = google_cloud_auth::credentials::Builder::default()
        .build()
        .map_err(|e| format!("Application Default Credentials: {e}"))?;
    let headers = match tokio::time::timeout(
        Duration::from_secs(60),
        creds.headers(http::Extensions::new()),
    )
    .await
    {
        Ok(Ok(google_cloud_auth::credentials::CacheableResource::New { data, .. })) => data,
        Ok(Ok(google_cloud_auth::credentials::CacheableResource::NotModified)) => {
            return Err("the credentials gave no headers".into());
        }
        Ok(Err(e)) => return Err(format!("Application Default Credentials: {e}")),
        Err(_) => {
            return Err(
                "no token within 60s (are Application Default Credentials available?)".into(),
            );
        }
    };
    let body = serde_json::json!({ "permissions": perms }).to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("an HTTP client: {e}"))?;
    let resp = client
        .post(&url)
        .headers(headers)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let date = resp
        .headers()
        .get("date")
        .and_then(|d| d.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status != 200 {
        let msg = v["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!(
            "Cloud Resource Manager (projects.testIamPermissions) answered HTTP {status}: {msg}{}",
            if msg.contains("has not been used") || msg.contains("disabled") {
                " (`gcloud services enable cloudresourcemanager.googleapis.com` lets disk-doctor test the project's permissions)"
            } else {
                ""
            }
        ));
    }
    let granted = v["permissions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((granted, date))
}

/// The clock against a `Date` header.
fn clock_check(date: &str, ask: &Ask) -> Check {
    let Some(theirs) = parse_http_date(date) else {
        return Check::skip(
            checks::CLOCK,
            Scope::Provider,
            format!("the Date header `{date}` could not be read"),
        );
    };
    let ours = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let skew = ours - theirs;
    let secs = skew.unsigned_abs();
    if secs > ask.max_skew.as_secs() {
        Check::fail(
            checks::CLOCK,
            Scope::Provider,
            format!(
                "this machine's clock is {}s {} Google's (Date: {date}): tokens and snapshot times go wrong",
                secs,
                if skew > 0 { "ahead of" } else { "behind" }
            ),
            "set the clock right and keep it so: `timedatectl set-ntp true` (or chrony: `chronyc makestep`)",
        )
    } else {
        Check::ok(
            checks::CLOCK,
            Scope::Provider,
            format!("within {}s of Google's clock", secs.max(1)),
        )
    }
}

/// Seconds since the epoch of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<i64> {
    let f: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, _] = f.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == month)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, se] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_read_as_seconds() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("garbage"), None);
    }
}
