//! disk-snapshot on EC2, against moto: CreateSnapshot tagged (deployment,
//! node, disk, time, tool), waited for in one loop, listed newest first, and
//! pruned with --keep among the same disk and deployment only.

mod common;

use common::*;
use serde_json::{Value, json};

fn tool(url: &str, name: &str, args: &[&str], input: &str) -> Run {
    let mut a = vec!["--endpoint-url", url, "--deployment", "snaps"];
    a.extend_from_slice(args);
    run_env(name, &a, input, &aws_env())
}

fn rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "ec2", "zone": "us-east-1b", "disk": disk})
}

fn ids(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["snapshot"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ebs_snapshots_are_tagged_listed_and_pruned_per_disk() {
    let moto = Server::moto();
    let url = moto.url();
    let both = ndjson(&[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    let created = tool(&url, "disk-create", &["--size", "1G"], &both).expect(0);

    // The filesystem cannot be frozen from here: --no-freeze is needed.
    let r = tool(&url, "disk-snapshot", &[], &created.stdout).expect(1);
    for r in r.records() {
        assert_eq!(r["error"]["code"], "freeze-failed");
    }
    let c = tool(
        &url,
        "disk-snapshot",
        &["--check", "--no-freeze"],
        &created.stdout,
    )
    .expect(0)
    .records();
    assert_eq!(c[0]["snapshot"]["state"], "planned");
    let l = tool(&url, "disk-snapshot", &["--list"], &created.stdout).expect(0);
    assert!(
        l.records().iter().all(|r| r.get("snapshot").is_none()),
        "none taken by --check"
    );

    let mut taken0 = Vec::new();
    for _ in 0..2 {
        let r = tool(&url, "disk-snapshot", &["--no-freeze"], &created.stdout)
            .expect(0)
            .records();
        assert_eq!(r[0]["snapshot"]["state"], "completed");
        assert_eq!(r[0]["snapshot"]["freeze"], "not-frozen");
        assert_eq!(r[0]["snapshot"]["size"], 1u64 << 30);
        taken0.push(r[0]["snapshot"]["id"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let disk0 = ndjson(&created.records()[..1]);
    let kept = tool(
        &url,
        "disk-snapshot",
        &["--no-freeze", "--keep", "1"],
        &disk0,
    )
    .expect(0)
    .record();
    assert_eq!(
        kept["snapshot"]["pruned"].as_array().unwrap().len(),
        2,
        "{kept}"
    );
    let list0 = tool(&url, "disk-snapshot", &["--list"], &disk0)
        .expect(0)
        .records();
    assert_eq!(ids(&list0), [kept["snapshot"]["id"].as_str().unwrap()]);
    let disk1 = ndjson(&created.records()[1..]);
    let list1 = tool(&url, "disk-snapshot", &["--list"], &disk1)
        .expect(0)
        .records();
    assert_eq!(list1.len(), 2, "another disk's snapshots are kept");
    assert!(
        list1[0]["snapshot"]["time"].as_str() >= list1[1]["snapshot"]["time"].as_str(),
        "newest first"
    );
    // Restore: a new volume from the disk's latest snapshot, the old one kept.
    let old_vol = created.records()[0]["disk_id"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = tool(&url, "disk-create", &["--from-snapshot", "latest"], &disk0)
        .expect(0)
        .record();
    let latest = kept["snapshot"]["id"].as_str().unwrap();
    assert_eq!(restored["restored_from"]["snapshot"], latest);
    assert_eq!(restored["restored_from"]["disk"], "data-0");
    assert!(
        restored["disk"]
            .as_str()
            .unwrap()
            .starts_with("data-0-restored-")
    );
    let new_vol = restored["disk_id"].as_str().unwrap();
    assert_ne!(new_vol, old_vol);
    assert_eq!(moto.ec2_admin(&["volume", new_vol])["snapshot"], latest);
    assert_eq!(
        moto.ec2_admin(&["volume", &old_vol])["state"],
        "available",
        "old one kept"
    );
    let again = tool(&url, "disk-create", &["--from-snapshot", "latest"], &disk0)
        .expect(0)
        .record();
    assert_eq!(
        (again["changed"].as_bool(), again["disk_id"].as_str()),
        (Some(false), Some(new_vol))
    );
    // An id of another disk's snapshot is refused.
    let other = list1[0]["snapshot"]["id"].as_str().unwrap();
    let r = tool(&url, "disk-create", &["--from-snapshot", other], &disk0)
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "no-such-snapshot");
    // The tags say whose they are.
    let all = moto.ec2_admin(&["snapshots"]);
    let text = all.to_string();
    for key in [
        "appscale-persist:deployment",
        "appscale-persist:node",
        "appscale-persist:disk",
        "appscale-persist:time",
        "appscale-persist:tool",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
}
