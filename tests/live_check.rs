//! scripts/live-check against the emulators, through their endpoint
//! overrides: moto for EC2 (and Eucalyptus, which speaks its dialect of the
//! same API), the fake Compute Engine for gce. Against a real account the
//! script is what an operator runs once before trusting the tools; here it
//! must run every scenario, say each in its summary, and leave nothing of
//! its deployment behind: after success, after a failure, after SIGTERM.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

const ZONE: &str = "us-central1-a";

/// Runs scripts/live-check with `args`, the tools of this build, and `env`.
fn live_check(args: &[&str], env: &[(String, String)]) -> Run {
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bin = bin_dir().display().to_string();
    env.push(("APPSCALE_PERSIST_BIN", bin.as_str()));
    // The aws CLI scripts/setup installs beside moto.
    let path = path_with_venv();
    env.push(("PATH", path.as_str()));
    run_env(
        repo().join("scripts/live-check").to_str().unwrap(),
        args,
        "",
        &env,
    )
}

/// The scenarios that run from anywhere with an instance to attach to.
const FROM_ANYWHERE: &[&str] = &[
    "create",
    "attach",
    "status",
    "snapshot",
    "retention",
    "detach",
    "restore",
    "clean-up",
];

/// The scenarios that run on the node alone (`--self`).
const ON_THE_NODE: &[&str] = &["ensure-fs", "mount", "write", "unmount"];

/// live-check's arguments for the fake Compute Engine `g`, attaching to its
/// `vm-1` from here, a disk of 1G.
fn gce_args(g: &Gce) -> Vec<String> {
    let url = g.url();
    [
        "--provider",
        "gce",
        "--zone",
        ZONE,
        "--instance",
        "vm-1",
        "--size",
        "1G",
        "--yes",
        "--",
        "--endpoint",
        &url,
        "--project",
        "proj",
    ]
    .map(str::to_string)
    .to_vec()
}

/// live-check from here on the fake Compute Engine `g`.
fn gce_check(g: &Gce) -> Run {
    let args = gce_args(g);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    live_check(&args, &g.env())
}

/// Asserts each of `steps` has the row `result`.
fn assert_rows(r: &Run, steps: &[&str], result: &str) {
    let rows = rows(&r.stderr);
    for step in steps {
        assert_eq!(result_of(&rows, step), result, "{step}: {}", r.stderr);
    }
}

/// `$PATH` with the test venv's bin first (its aws CLI).
fn path_with_venv() -> String {
    format!(
        "{}:{}",
        venv().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The summary's rows: step → result.
fn rows(stderr: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .skip_while(|l| !l.starts_with("STEP "))
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

fn result_of<'a>(rows: &'a [(String, String)], step: &str) -> &'a str {
    rows.iter()
        .find(|(s, _)| s == step)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("no row {step}: {rows:?}"))
}

/// The fake's disks and snapshots that are left.
fn gce_left(g: &Gce) -> (Value, Value) {
    let s = g.state();
    (s["disks"].clone(), s["snapshots"].clone())
}

#[test]
fn without_yes_it_warns_and_makes_nothing() {
    let g = Gce::new(ZONE);
    let url = g.url();
    let r = live_check(
        &[
            "--provider",
            "gce",
            "--zone",
            ZONE,
            "--",
            "--endpoint",
            &url,
            "--project",
            "proj",
        ],
        &g.env(),
    )
    .expect(2);
    assert!(r.stderr.contains("billable"), "{}", r.stderr);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_eq!(g.state()["calls"], json!({}), "no call at all");
    let r = live_check(&["--provider", "azure", "--zone", ZONE, "--yes"], &g.env()).expect(2);
    assert!(r.stderr.contains("one of ec2, euca, gce"), "{}", r.stderr);
}

/// From a controller (`--instance`): create, attach, status, snapshot,
/// retention, detach, restore on the fake Compute Engine; the node steps
/// skipped and said so; nothing left.
#[test]
fn gce_from_elsewhere_runs_every_scenario_and_leaves_nothing() {
    let g = Gce::new(ZONE);
    g.control("config", json!({"op_delay": 0.2}));
    let r = gce_check(&g);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_rows(&r, FROM_ANYWHERE, "ok");
    assert_rows(&r, ON_THE_NODE, "skipped");
    let s = g.state();
    assert!(
        s["calls"]["disks.createSnapshot"].as_u64() == Some(2),
        "{s}"
    );
    assert!(
        s["calls"]["snapshots.delete"].as_u64() >= Some(2),
        "pruned, then swept: {s}"
    );
    assert_eq!(gce_left(&g), (json!({}), json!({})), "nothing left");
    // The boot disk of the instance is not touched.
    assert_eq!(
        s["instances"]["proj/us-central1-a/vm-1"],
        json!(["persistent-disk-0"])
    );
}

/// On the node (`--self`): the disk is found here (a loop device linked as
/// the guest's rules link it), made a filesystem, mounted, written and read,
/// described, unmounted, and detached from here.
#[test]
fn gce_on_the_node_mounts_writes_and_unmounts_too() {
    require_root();
    let g = Gce::new(ZONE);
    let t = TempDir::new("live-check-node");
    let dev = LoopDev::new(&t, "lc-disk", 1024);
    std::fs::create_dir_all(t.join("dev/disk/by-id")).unwrap();
    std::os::unix::fs::symlink(&dev.device, t.join("dev/disk/by-id/google-lc-disk")).unwrap();
    let mut env = g.env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT".into(), t.s("dev")));
    env.push(("TMPDIR".into(), t.s("")));
    let url = g.url();
    let args = [
        "--provider",
        "gce",
        "--self",
        "--name",
        "lc-disk",
        "--size",
        "1G",
        "--yes",
    ];
    let r = live_check(&[&args[..], &["--", "--endpoint", &url]].concat(), &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_rows(&r, FROM_ANYWHERE, "ok");
    assert_rows(&r, ON_THE_NODE, "ok");
    assert_eq!(gce_left(&g), (json!({}), json!({})));
    let fs = sh_ok(&["blkid", "-o", "value", "-s", "TYPE", &dev.device]);
    assert_eq!(fs.trim(), "ext4");
}

/// A scenario that fails (Compute Engine refuses the snapshot: a missing
/// IAM permission) ends the run with exit 1, the failure in the summary,
/// and still everything deleted.
#[test]
fn gce_a_failure_is_reported_and_still_cleaned_up() {
    let g = Gce::new(ZONE);
    let refused = json!({"answer": "forbidden", "message": "Required 'compute.snapshots.create' permission", "times": -1});
    g.control(
        "config",
        json!({"http_fail": {"disks.createSnapshot": refused}}),
    );
    let r = gce_check(&g).expect(1);
    assert_rows(&r, &["snapshot"], "FAILED");
    assert!(
        r.stderr.contains("compute.snapshots.create"),
        "{}",
        r.stderr
    );
    assert_rows(&r, &["clean-up"], "ok");
    assert_eq!(gce_left(&g), (json!({}), json!({})));
    assert_eq!(
        g.state()["instances"]["proj/us-central1-a/vm-1"],
        json!(["persistent-disk-0"]),
        "detached before it was deleted"
    );
}

/// SIGTERM in the middle (while the snapshot is being waited for): the run
/// stops, says so, and deletes what it made.
#[test]
fn gce_an_interrupted_run_still_cleans_up() {
    let g = Gce::new(ZONE);
    // Snapshots take a while to be READY: time to be interrupted.
    g.control("config", json!({"snapshot_ready_after": 3.0}));
    let mut cmd = Command::new(repo().join("scripts/live-check"));
    cmd.args(gce_args(&g)).envs(g.env());
    cmd.env("APPSCALE_PERSIST_BIN", bin_dir());
    cmd.env("PATH", path_with_venv());
    let r = signalled_at(cmd, "", "live-check: snapshot:", 1);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_rows(&r, &["interrupted"], "FAILED");
    assert_rows(&r, &["clean-up"], "ok");
    assert_eq!(gce_left(&g), (json!({}), json!({})), "{}", r.stderr);
}

/// The EC2 tools' scenarios on moto (`--endpoint-url`), the clean-up
/// through the aws CLI at the same endpoint; and `euca`, which the script
/// runs the same way against a Eucalyptus endpoint.
#[test]
fn ec2_and_euca_run_every_scenario_on_moto_and_leave_nothing() {
    let moto = Server::moto();
    let zone = "us-east-1a";
    let inst = moto.ec2_admin(&["run-instances", zone, "1"])[0]
        .as_str()
        .unwrap()
        .to_string();
    let env: Vec<(String, String)> = aws_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let url = moto.url();
    for kind in ["ec2", "euca"] {
        let r = live_check(
            &[
                "--provider",
                kind,
                "--zone",
                zone,
                "--instance",
                &inst,
                "--size",
                "1G",
                "--yes",
                "--",
                "--endpoint-url",
                &url,
            ],
            &env,
        );
        assert_rows(&r, FROM_ANYWHERE, "ok");
        assert_eq!(r.code, 0, "{}", r.stderr);
        let left = moto.ec2_admin(&["attached", &inst]);
        assert!(
            left.as_object().unwrap().values().all(|d| d == "/dev/sda1"),
            "{kind}: nothing attached but the root volume: {left}"
        );
    }
    // Every volume left is the instance's root volume: the live checks'
    // were deleted (found by their deployment tag).
    let out = Command::new(venv().join("bin/aws"))
        .args([
            "ec2",
            "describe-volumes",
            "--endpoint-url",
            &url,
            "--region",
            "us-east-1",
        ])
        .args([
            "--filters",
            "Name=tag-key,Values=appscale-persist:deployment",
        ])
        .args(["--query", "Volumes[].VolumeId", "--output", "json"])
        .envs(aws_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(left, json!([]), "no live-check volume left");
}
