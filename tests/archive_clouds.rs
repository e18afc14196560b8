//! A deployment moved across providers through an off-site archive, end to
//! end: up on the local default, every kind of file written, archived;
//! then restored onto an EC2 volume (moto, with a loop device standing in
//! for the volume on the node, behind its NVMe link) through S3, and onto a
//! Compute Engine disk (the fake, likewise, behind its google- link)
//! through Google Cloud Storage: the trees identical, byte for byte and
//! metadata for metadata.

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod archive_common;
mod common;

use archive_common::*;
use common::*;
use serde_json::{Value, json};

/// The node side of a cloud disk: the record after disk-attach, a loop
/// device standing in for it behind `link`, filled by disk-ensure-fs,
/// disk-restore and disk-mount with `env`.
fn fill_and_mount(
    p: &Place,
    attached: &Value,
    link: &str,
    restore: &[String],
    env: &[(&str, &str)],
) -> (LoopDev, Value) {
    let dev = LoopDev::new(&p.t, "stand-in", 1024);
    let by_id = p.t.join("dev/disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    std::os::unix::fs::symlink(&dev.device, by_id.join(link)).unwrap();
    let root = p.t.s("dev");
    let mut env = env.to_vec();
    env.push(("APPSCALE_PERSIST_DEV_ROOT", &root));
    let fs = p
        .run(
            "disk-ensure-fs",
            &["--fstype", "xfs"],
            &ndjson(&[attached.clone()]),
            &env,
        )
        .expect(0);
    let args: Vec<&str> = restore.iter().map(String::as_str).collect();
    let filled = p.run("disk-restore", &args, &fs.stdout, &env).expect(0);
    assert_eq!(
        filled.record()["archive"]["state"],
        "restored",
        "{}",
        filled.stderr
    );
    let mnt = p.t.s("mnt/moved-0");
    let m = p
        .run(
            "disk-mount",
            &["--mountpoint", &mnt, "--no-fstab"],
            &filled.stdout,
            &env,
        )
        .expect(0)
        .record();
    (dev, m)
}

#[test]
fn a_local_deployment_moves_to_ec2_through_s3() {
    let p = Place::new("move-ec2");
    let moto = Server::moto();
    let url = moto.url();
    let rec = p.up("node-0", "data-0", "256M", "ext4");
    make_tree(&p.mnt("data-0"));
    let repo = format!("s3:{url}/archives/{}", p.deployment);
    let aws = aws_env();
    p.archive(&repo, &["--init"], &ndjson(&[rec]), &aws)
        .expect(0);

    // The new deployment on EC2: node-0's disk is a new volume.
    let inst = moto.ec2_admin(&["run-instances", "us-east-1b", "1"])[0]
        .as_str()
        .unwrap()
        .to_string();
    let ec2 = json!({"v": 1, "node": "node-0", "provider": "ec2", "zone": "us-east-1b", "disk": "moved-0", "deployment": p.deployment});
    let cloud = ["--endpoint-url", url.as_str()];
    let created = p
        .run(
            "disk-create",
            &[&cloud[..], &["--size", "1G"]].concat(),
            &ndjson(&[ec2]),
            &aws,
        )
        .expect(0);
    let attached = p
        .run(
            "disk-attach",
            &[&cloud[..], &["--instance", &inst]].concat(),
            &created.stdout,
            &aws,
        )
        .expect(0)
        .record();
    let vol = attached["disk_id"].as_str().unwrap().to_string();
    let link = format!(
        "nvme-Amazon_Elastic_Block_Store_{}",
        vol.replacen('-', "", 1)
    );
    let (_dev, mounted) = fill_and_mount(&p, &attached, &link, &p.restore_args(&repo, &[]), &aws);
    assert_eq!(mounted["state"], "mounted");
    assert_eq!(mounted["fs"]["type"], "xfs");
    assert_same_tree(&p.mnt("data-0"), &p.mnt("moved-0"));
}

#[test]
fn a_local_deployment_moves_to_compute_engine_through_cloud_storage() {
    let p = Place::new("move-gce");
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let gcs = Server::python("gcs.py", &[p.t.s("gcs").as_str()]);
    let proxy = format!("http://127.0.0.1:{}", gcs.port);
    let storage = [
        ("HTTPS_PROXY", proxy.as_str()),
        ("NO_PROXY", ""),
        ("GOOGLE_PROJECT_ID", "proj"),
        ("GOOGLE_ACCESS_TOKEN", "ya29.emulator-token"),
    ];
    let cacert = p.t.s("gcs/ca.pem");
    let rec = p.up("node-0", "data-0", "256M", "ext4");
    make_tree(&p.mnt("data-0"));
    let repo = "gs:archives:/prod";
    p.archive(
        repo,
        &["--init", "--cacert", &cacert],
        &ndjson(&[rec]),
        &storage,
    )
    .expect(0);

    let gce = json!({"v": 1, "node": "node-0", "provider": "gce", "zone": zone, "disk": "moved-0", "deployment": p.deployment});
    g.tool(
        "disk-create",
        &["--size", "1G", "--deployment", &p.deployment],
        &ndjson(&[gce.clone()]),
    )
    .expect(0);
    let attached = g
        .tool(
            "disk-attach",
            &["--instance", "vm-1", "--deployment", &p.deployment],
            &ndjson(&[gce]),
        )
        .expect(0)
        .record();
    let mut env: Vec<(&str, &str)> = storage.to_vec();
    let genv = g.env();
    env.extend(genv.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (_dev, mounted) = fill_and_mount(
        &p,
        &attached,
        "google-moved-0",
        &p.restore_args(repo, &["--cacert", &cacert]),
        &env,
    );
    assert_eq!(mounted["state"], "mounted");
    assert_same_tree(&p.mnt("data-0"), &p.mnt("moved-0"));
}

/// An EBS volume with its node here: moto behind tests/servers/ebs_node.py
/// (volumes with content, devices on attach), a fake IMDS saying this
/// machine is the instance, the volume attached, formatted and mounted.
struct Ebs {
    p: Place,
    url: String,
    rec: Value,
    env: Vec<(String, String)>,
    _imds: Server,
    _proxy: Server,
    _moto: Server,
}

impl Ebs {
    fn new(tag: &str) -> Ebs {
        let p = Place::new(tag);
        let moto = Server::moto();
        let inst = moto.ec2_admin(&["run-instances", "us-east-1b", "1"])[0]
            .as_str()
            .unwrap()
            .to_string();
        let proxy = Server::python(
            "ebs_node.py",
            &[&moto.url(), &p.t.s("dev"), &p.t.s("ebs"), &inst],
        );
        let imds = Server::python("fake_imds.py", &[&inst, "us-east-1b"]);
        let url = proxy.url();
        let mut env: Vec<(String, String)> = aws_env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("APPSCALE_PERSIST_DEV_ROOT".into(), p.t.s("dev")));
        env.push(("APPSCALE_PERSIST_METADATA_ENDPOINT".into(), imds.url()));
        let mut e = Ebs {
            p,
            url,
            rec: Value::Null,
            env,
            _imds: imds,
            _proxy: proxy,
            _moto: moto,
        };
        let rec = json!({"v": 1, "node": "node-0", "provider": "ec2", "zone": "us-east-1b", "disk": "data-0", "deployment": e.p.deployment});
        let created = e.run(
            "disk-create",
            &["--endpoint-url", &e.url.clone(), "--size", "1G"],
            &ndjson(&[rec]),
        );
        let attached = e.run(
            "disk-attach",
            &["--endpoint-url", &e.url.clone(), "--instance", &inst],
            &created.stdout,
        );
        let fs = e.run("disk-ensure-fs", &[], &attached.stdout);
        let mnt = e.p.t.s("mnt/data-0");
        e.rec = e
            .run(
                "disk-mount",
                &["--mountpoint", &mnt, "--no-fstab"],
                &fs.stdout,
            )
            .record();
        e
    }

    fn run(&self, tool: &str, args: &[&str], input: &str) -> Run {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.p.run(tool, args, input, &env).expect(0)
    }

    /// disk-archive of the volume into `repo`, with `args`.
    fn archive(&self, repo: &str, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut a = vec!["--endpoint-url", self.url.as_str()];
        a.extend_from_slice(args);
        self.p.archive(repo, &a, &ndjson(&[self.rec.clone()]), &env)
    }

    /// What the proxy holds: volumes and snapshots with content, devices.
    fn node(&self) -> Value {
        serde_json::from_str(&http("GET", &format!("{}/__node__", self.url), "").1).unwrap()
    }

    /// Nothing of a scratch copy is left: one volume (the node's), no
    /// snapshot, one device.
    fn assert_clean(&self) {
        let n = self.node();
        assert_eq!(n["volumes"].as_object().unwrap().len(), 1, "{n}");
        assert_eq!(n["snapshots"].as_object().unwrap().len(), 0, "{n}");
        assert_eq!(n["devices"].as_object().unwrap().len(), 1, "{n}");
        assert_no_leftovers_of(&self.p);
    }
}

/// No view of ours is mounted under /run/appscale-persist/archive for the
/// place's deployment's EC2 disk.
fn assert_no_leftovers_of(p: &Place) {
    let key = appscale_persist::archive::ledger::key(
        &p.deployment,
        appscale_persist::record::ProviderKind::Ec2,
        "data-0",
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("/run/appscale-persist/archive/{key} ")),
        "the view is still mounted"
    );
}

#[test]
fn an_ebs_volume_is_archived_from_a_scratch_copy_deleted_after() {
    let e = Ebs::new("arch-ebs");
    make_tree(&e.p.mnt("data-0"));
    let repo = e.p.made_repo("repo");
    let a = e.archive(&repo, &["--init"]).expect(0);
    let arch = a.record()["archive"].clone();
    assert_eq!(arch["freeze"], "frozen", "{}", a.stderr);
    assert_eq!(arch["state"], "completed");
    e.assert_clean();
    assert!(writable(&e.p.mnt("data-0"), 5));
    // The archive is the disk: restored onto a local disk, the same tree.
    let args = e.p.restore_args(&repo, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    e.p.pipeline("node-0", "moved-0", "512M", "ext4", &args)
        .expect(0);
    assert_same_tree(&e.p.mnt("data-0"), &e.p.mnt("moved-0"));

    // Killed at any step of the scratch copy: the next run deletes what it
    // left, and archives.
    for marker in [
        "--phase snapshot",
        "--phase attach",
        "backup --json --host",
        "--phase drop",
    ] {
        let mut args = e.p.repo_args(&repo);
        args.extend(["--endpoint-url".to_string(), e.url.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (said, killed) = killed_at_env(
            &e.p,
            "disk-archive",
            &args,
            &ndjson(&[e.rec.clone()]),
            marker,
            &e.env,
        );
        assert!(killed, "killed at {marker}: {said}");
        assert!(
            writable(&e.p.mnt("data-0"), 10),
            "no freeze left after a kill at {marker}: {said}"
        );
        e.archive(&repo, &[]).expect(0);
        e.assert_clean();
    }
}

#[test]
fn a_compute_engine_disk_is_archived_from_a_read_only_scratch_copy_deleted_after() {
    let p = Place::new("arch-pd");
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let node = Server::python(
        "gce_node.py",
        &[&g.url(), &p.t.s("dev"), &p.t.s("pd"), "vm-1"],
    );
    let url = node.url();
    let mut env: Vec<(String, String)> = g.env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT".into(), p.t.s("dev")));
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cloud = ["--endpoint", url.as_str(), "--project", "proj"];
    let rec = json!({"v": 1, "node": "node-0", "provider": "gce", "zone": zone, "disk": "data-0", "deployment": p.deployment});
    let created = p
        .run(
            "disk-create",
            &[&cloud[..], &["--size", "1G"]].concat(),
            &ndjson(&[rec]),
            &envs,
        )
        .expect(0);
    let attached = p
        .run(
            "disk-attach",
            &[&cloud[..], &["--instance", "vm-1"]].concat(),
            &created.stdout,
            &envs,
        )
        .expect(0);
    let fs = p
        .run("disk-ensure-fs", &[], &attached.stdout, &envs)
        .expect(0);
    let mnt = p.t.s("mnt/data-0");
    let mounted = p
        .run(
            "disk-mount",
            &["--mountpoint", &mnt, "--no-fstab"],
            &fs.stdout,
            &envs,
        )
        .expect(0)
        .record();
    make_tree(&p.mnt("data-0"));
    let repo = p.made_repo("repo");
    let a = p
        .archive(
            &repo,
            &["--init", "--endpoint-url", &url, "--project", "proj"],
            &ndjson(&[mounted]),
            &envs,
        )
        .expect(0);
    let arch = a.record()["archive"].clone();
    assert_eq!(arch["freeze"], "frozen", "{}", a.stderr);
    assert!(
        a.stderr.contains("read-only") || arch["state"] == "completed",
        "{}",
        a.stderr
    );
    // Nothing of the scratch copy is left: one disk, no snapshot, one device.
    let state = g.state();
    assert_eq!(state["disks"].as_object().unwrap().len(), 1, "{state}");
    assert_eq!(state["snapshots"].as_object().unwrap().len(), 0, "{state}");
    let devices: Value =
        serde_json::from_str(&http("GET", &format!("{url}/__node__"), "").1).unwrap();
    assert_eq!(
        devices["devices"].as_object().unwrap().len(),
        1,
        "{devices}"
    );
    let args = p.restore_args(&repo, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    p.pipeline("node-0", "moved-0", "512M", "xfs", &args)
        .expect(0);
    assert_same_tree(&p.mnt("data-0"), &p.mnt("moved-0"));
}
