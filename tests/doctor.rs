//! disk-doctor: every check it makes, passing and failing, against moto
//! (EC2 DryRun), tests/servers/ec2_proxy.py (IAM denying one action at a
//! time, tags on create included; a skewed Date), the fake Compute Engine
//! (testIamPermissions, access scopes, IAM refusals, a skewed Date), the
//! fake IMDS (the hop limit seen from a container) and this machine (udev
//! links under a test sys and dev root, the mountpoint, the fstab read as
//! libmount reads it, the state directory's room, the AppScalefile's
//! `disks:`).

mod common;

use common::*;
use serde_json::{Value, json};

/// The checks of a record, as (name, subject, verdict).
fn checks(r: &Value) -> Vec<(String, String, String)> {
    r["doctor"]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no doctor checks: {r}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["subject"].as_str().unwrap_or_default().to_string(),
                c["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The check `name` about `subject` (any subject when empty).
fn check<'a>(r: &'a Value, name: &str, subject: &str) -> &'a Value {
    r["doctor"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name && (subject.is_empty() || c["subject"] == subject))
        .unwrap_or_else(|| panic!("no check {name} {subject}: {r:#}"))
}

/// The failed checks of a record, as (name, subject).
fn failed(r: &Value) -> Vec<(String, String)> {
    checks(r)
        .into_iter()
        .filter(|(_, _, v)| v == "fail")
        .map(|(n, s, _)| (n, s))
        .collect()
}

/// The EC2 actions the flows call (lib/ec2's NEEDS).
const EC2_ACTIONS: &[&str] = &[
    "DescribeVolumes",
    "DescribeInstances",
    "DescribeInstanceTypes",
    "CreateVolume",
    "CreateTags",
    "AttachVolume",
    "DetachVolume",
    "CreateSnapshot",
    "DescribeSnapshots",
    "DeleteSnapshot",
    "ModifyVolume",
    "DescribeVolumesModifications",
];

/// moto behind the IAM proxy, with one instance in us-east-1b.
struct Doctor {
    ec2: Ec2,
    instance: String,
}

impl Doctor {
    fn new() -> Doctor {
        let ec2 = Ec2::proxied(&[]);
        let instance = ec2.instance();
        Doctor { ec2, instance }
    }

    fn control(&self, body: Value) {
        self.ec2.control(body);
    }

    fn record(&self) -> Value {
        json!({"provider": "ec2", "disk": "data-1", "zone": "us-east-1b", "node": "node-1",
               "deployment": "dep", "instance": self.instance})
    }

    fn doctor(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let input = ndjson(&[self.record()]);
        self.ec2.tool_env("disk-doctor", args, &input, env)
    }
}

#[test]
fn ec2_everything_allowed_passes() {
    let ec2 = Doctor::new();
    let r = ec2.doctor(&[], &[]).expect(0);
    let rec = r.record();
    assert!(failed(&rec).is_empty(), "{rec:#}");
    for a in EC2_ACTIONS {
        assert_eq!(
            check(&rec, "permission", &format!("ec2:{a}"))["verdict"],
            "ok",
            "{a}"
        );
    }
    let creds = check(&rec, "credentials", "");
    assert!(
        creds["message"]
            .as_str()
            .unwrap()
            .contains("the environment (AWS_ACCESS_KEY_ID)"),
        "{creds}"
    );
    assert_eq!(check(&rec, "clock", "")["verdict"], "ok");
    assert_eq!(check(&rec, "region", "")["verdict"], "ok");
    assert_eq!(check(&rec, "instance", &ec2.instance)["verdict"], "ok");
    assert_eq!(
        check(&rec, "attachment-room", &ec2.instance)["verdict"],
        "ok"
    );
    assert!(
        check(&rec, "disk", "data-1")["message"]
            .as_str()
            .unwrap()
            .contains("does not exist yet"),
        "{rec:#}"
    );
    // The table says the same, once per check.
    let t = ec2.doctor(&["--format", "table"], &[]).expect(0);
    assert!(
        t.stdout.contains("ec2:AttachVolume: allowed (DryRun)"),
        "{}",
        t.stdout
    );
    assert!(t.stdout.contains("nothing in the way"), "{}", t.stdout);
}

/// Each action the flows call, denied alone (as IAM denies it, DryRun or
/// not): disk-doctor fails naming that action, with the policy that
/// grants it, and nothing else; DescribeInstanceTypes, which disk-attach
/// can do without, is a warning.
#[test]
fn ec2_each_denied_action_is_named_with_its_fix() {
    let ec2 = Doctor::new();
    for &action in EC2_ACTIONS {
        ec2.control(json!({"deny": [action]}));
        let optional = action == "DescribeInstanceTypes";
        let r = ec2.doctor(&[], &[]);
        assert_eq!(
            r.code,
            if optional { 0 } else { 1 },
            "{action}: {}",
            r.stdout
        );
        let rec = r.record();
        let subject = format!("ec2:{action}");
        let c = check(&rec, "permission", &subject);
        assert_eq!(
            c["verdict"],
            if optional { "warn" } else { "fail" },
            "{action}: {c}"
        );
        assert!(
            c["fix"]
                .as_str()
                .unwrap()
                .contains(&format!("allow {subject}")),
            "{action}: {c}"
        );
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("UnauthorizedOperation"),
            "{c}"
        );
        // Only that action fails (a lookup it gates says so too).
        for (name, s) in failed(&rec) {
            assert_eq!(s, subject, "{action}: {name} {s} failed too: {rec:#}");
        }
    }
    ec2.control(json!({"deny": []}));
}

/// Tags given as a volume is made are authorised as ec2:CreateTags: with
/// CreateTags denied, the tagged CreateVolume is denied as well, and
/// disk-doctor tells which action is missing (asking again without tags).
#[test]
fn ec2_tags_on_create_are_told_apart_from_create() {
    let ec2 = Doctor::new();
    ec2.control(json!({"deny": ["CreateTags"]}));
    let rec = ec2.doctor(&[], &[]).expect(1).record();
    assert_eq!(
        check(&rec, "permission", "ec2:CreateVolume")["verdict"],
        "ok"
    );
    assert_eq!(
        check(&rec, "permission", "ec2:CreateSnapshot")["verdict"],
        "ok"
    );
    let tags = check(&rec, "permission", "ec2:CreateTags");
    assert_eq!(tags["verdict"], "fail", "{tags}");
    assert!(
        tags["message"].as_str().unwrap().contains("as it is made"),
        "{tags}"
    );
}

#[test]
fn ec2_a_wrong_region_is_named() {
    let ec2 = Doctor::new();
    // A region from the environment gives way to the zone's (EC2 refuses a
    // zone outside the signing region): nothing to fix.
    let rec = ec2
        .doctor(&[], &[("AWS_REGION", "us-west-2")])
        .expect(0)
        .record();
    let c = check(&rec, "region", "");
    assert_eq!(c["verdict"], "ok", "{c}");
    assert!(c["message"].as_str().unwrap().contains("us-east-1"), "{c}");
    // --region naming another region than the zone's: named, with the fix.
    let rec = ec2
        .doctor(&["--region", "us-west-2"], &[])
        .expect(1)
        .record();
    let c = check(&rec, "region", "");
    assert_eq!(c["verdict"], "fail", "{c}");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains("us-east-1") && msg.contains("us-west-2"),
        "{c}"
    );
    assert!(c["fix"].as_str().unwrap().contains("--region"), "{c}");
}

#[test]
fn ec2_a_skewed_clock_is_named() {
    let ec2 = Doctor::new();
    // EC2's clock an hour ahead: this machine's is an hour behind.
    ec2.control(json!({"date_offset": 3600}));
    let rec = ec2.doctor(&[], &[]).expect(1).record();
    let c = check(&rec, "clock", "");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert!(
        c["message"].as_str().unwrap().contains("1h 0m behind"),
        "{c}"
    );
    assert!(c["fix"].as_str().unwrap().contains("timedatectl"), "{c}");
    assert_eq!(failed(&rec), [("clock".to_string(), String::new())]);
    // Within the tolerance: fine.
    ec2.control(json!({"date_offset": 120}));
    ec2.doctor(&[], &[]).expect(0);
}

#[test]
fn ec2_the_node_role_checks_the_calls_a_node_makes() {
    let ec2 = Doctor::new();
    let imds = fake_imds(&ec2.instance, &[]);
    let t = TempDir::new("doctor-node-role");
    let url = imds.url();
    let fstab = t.s("fstab");
    let mnt = t.s("mnt");
    let r = ec2
        .doctor(
            &[
                "--self",
                "--metadata-endpoint",
                &url,
                "--fstab",
                &fstab,
                "--mountpoint",
                &mnt,
            ],
            &[
                ("APPSCALE_PERSIST_DEV_ROOT", t.s("dev").as_str()),
                ("APPSCALE_PERSIST_SYS_ROOT", t.s("sys").as_str()),
            ],
        )
        .expect(1);
    let rec = r.record();
    // The node makes no volume and grows none: those are the controller's.
    let subjects: Vec<String> = checks(&rec).into_iter().map(|(_, s, _)| s).collect();
    assert!(
        !subjects
            .iter()
            .any(|s| s == "ec2:CreateVolume" || s == "ec2:ModifyVolume"),
        "{subjects:?}"
    );
    assert_eq!(
        check(&rec, "permission", "ec2:AttachVolume")["verdict"],
        "ok"
    );
    assert!(
        check(&rec, "metadata", "")["message"]
            .as_str()
            .unwrap()
            .contains("IMDSv2 answers")
    );
    // The node cannot make the disk: it must exist first.
    let disk = check(&rec, "disk", "data-1");
    assert_eq!(disk["verdict"], "fail", "{disk}");
    assert!(
        disk["fix"].as_str().unwrap().contains("--cloud-only"),
        "{disk}"
    );
}

/// A container one hop from IMDS, on an instance whose response hop limit
/// is 1: the token's answer never comes, and the check says how to raise
/// the limit.
#[test]
fn ec2_the_imds_hop_limit_is_named() {
    let ec2 = Doctor::new();
    let imds = fake_imds(&ec2.instance, &["--hop-limited"]);
    let t = TempDir::new("doctor-hop");
    let url = imds.url();
    let fstab = t.s("fstab");
    let r = ec2.doctor(
        &[
            "--self",
            "--metadata-endpoint",
            &url,
            "--fstab",
            &fstab,
            "--flow",
            "down",
        ],
        &[("APPSCALE_PERSIST_SYS_ROOT", t.s("sys").as_str())],
    );
    let rec = r.expect(1).record();
    let c = check(&rec, "metadata", "");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert!(
        c["message"].as_str().unwrap().contains("got no answer"),
        "{c}"
    );
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("--http-put-response-hop-limit 2"),
        "{c}"
    );
}

/// EBS NVMe volumes are found by udev's by-id links: a device with no link
/// fails, naming the device, its serial and the rules to install.
#[test]
fn a_missing_udev_link_is_named() {
    let ec2 = Doctor::new();
    let imds = fake_imds(&ec2.instance, &[]);
    let t = TempDir::new("doctor-udev");
    let dev = t.join("sys/block/nvme1n1/device");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(
        dev.join("model"),
        "Amazon Elastic Block Store              \n",
    )
    .unwrap();
    std::fs::write(dev.join("serial"), "vol0123456789abcdef0\n").unwrap();
    std::fs::create_dir_all(t.join("dev/disk/by-id")).unwrap();
    let url = imds.url();
    let fstab = t.s("fstab");
    let env = [
        ("APPSCALE_PERSIST_DEV_ROOT", t.s("dev")),
        ("APPSCALE_PERSIST_SYS_ROOT", t.s("sys")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = [
        "--self",
        "--metadata-endpoint",
        &url,
        "--fstab",
        &fstab,
        "--flow",
        "down",
    ];
    let rec = ec2.doctor(&args, &env).expect(1).record();
    let c = check(&rec, "udev-links", "");
    assert_eq!(c["verdict"], "fail", "{c}");
    let m = c["message"].as_str().unwrap();
    assert!(
        m.contains("nvme1n1") && m.contains("vol0123456789abcdef0"),
        "{m}"
    );
    assert!(
        c["fix"].as_str().unwrap().contains("udevadm trigger"),
        "{c}"
    );
    // The link made, as udev would: fine.
    std::os::unix::fs::symlink(
        "../../nvme1n1",
        t.join("dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"),
    )
    .unwrap();
    let rec = ec2.doctor(&args, &env).record();
    assert_eq!(check(&rec, "udev-links", "")["verdict"], "ok", "{rec:#}");
}

/// The Compute Engine permissions the flows need (lib/gce's NEEDS).
const GCE_PERMISSIONS: &[&str] = &[
    "compute.disks.get",
    "compute.disks.list",
    "compute.disks.create",
    "compute.disks.setLabels",
    "compute.disks.use",
    "compute.disks.resize",
    "compute.disks.createSnapshot",
    "compute.instances.get",
    "compute.instances.attachDisk",
    "compute.instances.detachDisk",
    "compute.zoneOperations.get",
    "compute.snapshots.create",
    "compute.snapshots.setLabels",
    "compute.snapshots.get",
    "compute.snapshots.list",
    "compute.snapshots.delete",
    "compute.globalOperations.get",
];

fn gce_doctor(gce: &Gce, disk: &str, args: &[&str]) -> Run {
    let rec = json!({"provider": "gce", "disk": disk, "zone": "us-central1-a", "node": "node-1",
                     "deployment": "dep", "instance": "vm-1"});
    let url = gce.url();
    let mut a = vec!["--endpoint", url.as_str(), "--project", "proj"];
    a.extend_from_slice(args);
    let crm = format!("{}/", gce.url());
    let mut env = gce.env();
    env.push((
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER".into(),
        crm,
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_env("disk-doctor", &a, &ndjson(&[rec]), &env)
}

#[test]
fn gce_everything_granted_passes_and_each_denied_permission_is_named() {
    let gce = Gce::new("us-central1-a");
    // One disk that exists (its permissions tested on it), one to be made
    // (tested on the project).
    gce.control(
        "disks",
        json!({"project": "proj", "zone": "us-central1-a", "name": "data-0",
               "labels": {"appscale-persist-deployment": "dep", "appscale-persist-node": "node-1"}}),
    );
    for disk in ["data-0", "data-1"] {
        let rec = gce_doctor(&gce, disk, &[]).expect(0).record();
        for p in GCE_PERMISSIONS {
            assert_eq!(
                check(&rec, "permission", p)["verdict"],
                "ok",
                "{disk} {p}: {rec:#}"
            );
        }
        assert_eq!(check(&rec, "access-scopes", "")["verdict"], "ok");
        assert_eq!(check(&rec, "clock", "")["verdict"], "ok");
    }
    let on_disk = gce_doctor(&gce, "data-0", &[]).record();
    assert!(
        check(&on_disk, "permission", "compute.disks.use")["message"]
            .as_str()
            .unwrap()
            .contains("on the disk"),
        "{on_disk:#}"
    );
    for p in GCE_PERMISSIONS {
        gce.control("config", json!({"iam_denied": [p]}));
        for disk in ["data-0", "data-1"] {
            let r = gce_doctor(&gce, disk, &[]);
            let rec = r.record();
            let c = check(&rec, "permission", p);
            assert_eq!(c["verdict"], "fail", "{disk} {p}: {rec:#}");
            assert!(
                c["fix"].as_str().unwrap().contains(&format!("grant {p}")),
                "{c}"
            );
            // Only that permission fails (a lookup it gates says so too).
            for (name, s) in failed(&rec) {
                assert!(
                    s == *p || name != "permission",
                    "{disk} {p}: {name} {s} failed too: {rec:#}"
                );
            }
            assert_eq!(r.code, 1);
        }
    }
    gce.control("config", json!({"iam_denied": []}));
}

#[test]
fn gce_a_missing_scope_and_a_skewed_clock_are_named() {
    let gce = Gce::new("us-central1-a");
    gce.control(
        "config",
        json!({"scopes": ["https://www.googleapis.com/auth/devstorage.read_only"]}),
    );
    let rec = gce_doctor(&gce, "data-1", &[]).expect(1).record();
    let c = check(&rec, "access-scopes", "");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("--scopes=cloud-platform"),
        "{c}"
    );
    gce.control(
        "config",
        json!({"scopes": ["https://www.googleapis.com/auth/cloud-platform"], "date_offset": -900}),
    );
    let rec = gce_doctor(&gce, "data-1", &[]).expect(1).record();
    let c = check(&rec, "clock", "");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert!(c["message"].as_str().unwrap().contains("ahead of"), "{c}");
    assert_eq!(failed(&rec), [("clock".to_string(), String::new())]);
}

/// The node's own checks on a local disk: a refused mountpoint, a foreign
/// fstab entry for it, lines libmount ignores, and a state directory too
/// small for a snapshot of the image.
#[test]
fn local_node_checks_name_what_is_in_the_way() {
    require_root();
    let t = TempDir::new("doctor-local");
    let state = t.join("disks");
    std::fs::create_dir_all(&state).unwrap();
    let fstab = t.join("fstab");
    let mnt = t.s("mnt");
    std::fs::write(&fstab, "# comment\n\nUUID=abcd / ext4 defaults 0 1\n").unwrap();
    let doctor = |rec: Value| {
        run(
            "disk-doctor",
            &[
                "--state-dir",
                state.to_str().unwrap(),
                "--fstab",
                fstab.to_str().unwrap(),
            ],
            &ndjson(&[rec]),
        )
    };
    let rec = doctor(json!({"provider": "local", "disk": "d1", "mountpoint": mnt}))
        .expect(0)
        .record();
    assert_eq!(check(&rec, "mountpoint", &mnt)["verdict"], "ok");
    assert!(
        check(&rec, "fstab", "")["message"]
            .as_str()
            .unwrap()
            .contains("findmnt --verify"),
        "{rec:#}"
    );
    assert_eq!(check(&rec, "state-dir", "")["verdict"], "ok");

    // A system directory.
    let rec = doctor(json!({"provider": "local", "disk": "d1", "mountpoint": "/etc"}))
        .expect(1)
        .record();
    assert_eq!(check(&rec, "mountpoint", "/etc")["verdict"], "fail");

    // A foreign entry for the mountpoint, and a line mount(8) ignores.
    std::fs::write(
        &fstab,
        format!("UUID=abcd / ext4 defaults 0 1\nbroken\n/dev/sdz {mnt} xfs defaults 0 2\n"),
    )
    .unwrap();
    let rec = doctor(json!({"provider": "local", "disk": "d1", "mountpoint": mnt}))
        .expect(1)
        .record();
    let whole = check(&rec, "fstab", fstab.to_str().unwrap());
    assert_eq!(whole["verdict"], "warn", "{whole}");
    assert!(
        whole["message"].as_str().unwrap().contains("line(s) 2"),
        "{whole}"
    );
    let entry = check(&rec, "fstab", &format!("{}:3", fstab.display()));
    assert_eq!(entry["verdict"], "fail", "{entry}");

    // A state directory with less room than a copy of the image takes.
    std::fs::write(&fstab, "").unwrap();
    let small = t.join("small");
    std::fs::create_dir_all(&small).unwrap();
    sh_ok(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=4m,mode=0700",
        "tmpfs",
        small.to_str().unwrap(),
    ]);
    sh_ok(&[
        "dd",
        "if=/dev/urandom",
        &format!("of={}/d1.img", small.display()),
        "bs=1M",
        "count=3",
        "status=none",
    ]);
    let r = run(
        "disk-doctor",
        &[
            "--state-dir",
            small.to_str().unwrap(),
            "--fstab",
            fstab.to_str().unwrap(),
        ],
        &ndjson(&[json!({"provider": "local", "disk": "d1", "mountpoint": mnt})]),
    )
    .expect(1);
    let rec = r.record();
    let c = check(&rec, "state-dir", small.to_str().unwrap());
    assert_eq!(c["verdict"], "fail", "{c}");
    assert_eq!(c["flows"], json!(["backup"]));
    assert!(c["fix"].as_str().unwrap().contains("reflinks"), "{c}");
}

/// The AppScalefile `appscale up` reads must not hold `disks:`; the one
/// `appscalefile-lint --for-appscale` writes does not.
#[test]
fn appscales_own_disks_are_refused_and_the_linter_writes_the_fix() {
    let t = TempDir::new("doctor-appscale");
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        "infrastructure: ec2\nkeyname: dep\nmachine: ami-0123abcd\ninstance_type: m5.large\nzone: us-east-1b\nips_layout:\n  - roles: [master, appengine, database, zookeeper]\n    nodes: 1\n    disks: data-1 # the node's disk\n",
    )
    .unwrap();
    let state = t.s("disks");
    let fstab = t.s("fstab");
    let args = |f: &str| {
        vec![
            "--appscale-file".to_string(),
            f.to_string(),
            "--state-dir".into(),
            state.clone(),
            "--fstab".into(),
            fstab.clone(),
        ]
    };
    let rec = json!({"provider": "local", "disk": "d1", "mountpoint": t.s("mnt")});
    let a = args(file.to_str().unwrap());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = run("disk-doctor", &a, &ndjson(std::slice::from_ref(&rec))).expect(1);
    let c = check(&r.record(), "appscale-disks", file.to_str().unwrap()).clone();
    assert_eq!(c["verdict"], "fail", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("node-0 data-1 (line 9)"),
        "{c}"
    );
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("appscalefile-lint --for-appscale"),
        "{c}"
    );

    let out = run(
        "appscalefile-lint",
        &["--for-appscale", file.to_str().unwrap()],
        "",
    )
    .expect(0);
    assert!(
        out.stdout.lines().all(|l| !l
            .trim_start()
            .trim_start_matches("- ")
            .starts_with("disks:")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("    # disks: data-1 # the node's disk\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("keyname: dep"), "{}", out.stdout);
    let fixed = t.join("AppScalefile.appscale");
    std::fs::write(&fixed, &out.stdout).unwrap();
    run("appscalefile-lint", &[fixed.to_str().unwrap()], "").expect(0);
    let a = args(fixed.to_str().unwrap());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = run("disk-doctor", &a, &ndjson(&[rec])).expect(0);
    assert_eq!(
        check(&r.record(), "appscale-disks", fixed.to_str().unwrap())["verdict"],
        "ok"
    );
}

/// Every check name is documented in docs/doctor.md, in the order of
/// appscale_persist::checks::ALL.
#[test]
fn every_check_is_documented() {
    let doc = std::fs::read_to_string(repo().join("docs/doctor.md")).unwrap();
    let table = doc
        .split("## Checks")
        .nth(1)
        .expect("docs/doctor.md has a `## Checks` section");
    let names: Vec<&str> = table
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert_eq!(names, appscale_persist::checks::ALL);
}
