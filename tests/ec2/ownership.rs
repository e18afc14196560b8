//! Whose disk is it: deployments' tags and tokens, volumes made by hand, one
//! instance per node, one record per volume.

use super::*;

fn in_deployment(mut r: Value, deployment: &str) -> Value {
    r["deployment"] = json!(deployment);
    r
}

#[test]
fn a_volume_tagged_for_another_deployment_is_never_adopted() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    // Deployment alpha made the volume Name=data for its node-0.
    let made = create(&ec2, &[in_deployment(rec("node-0", "data"), "alpha")]).remove(0);
    let vol = made["disk_id"].as_str().unwrap().to_string();

    // Deployment beta's AppScalefile names a disk `data` for its node-0 too.
    ec2.record_start();
    let theirs = in_deployment(rec("node-0", "data"), "beta");
    let mut by_id = theirs.clone();
    by_id["disk"] = json!(vol);
    for (tool_name, r) in [
        ("disk-create", &theirs),
        ("disk-attach", &theirs),
        ("disk-attach", &by_id),
    ] {
        let out = ec2
            .tool(tool_name, &["--instance", &inst], &ndjson(&[r.clone()]))
            .expect(1)
            .record();
        assert_eq!(error_code(&out), "other-deployment", "{tool_name}: {out}");
        assert!(
            out["error"]["message"]
                .as_str()
                .unwrap()
                .contains("deployment alpha"),
            "the error names the owner: {out}"
        );
    }
    let actions = ec2.recorded();
    for a in ["CreateVolume", "CreateTags", "AttachVolume"] {
        assert_eq!(actions.get(a), None, "no {a}: {actions}");
    }
    assert_eq!(ec2.admin(&["named", "data"]), json!([vol]));
    assert_eq!(
        ec2.volume(&vol)["attachments"],
        json!([]),
        "still alpha's, unattached"
    );
    // --deployment names the deployment over the record's.
    let again = ec2
        .create(&["--deployment", "alpha"], &[theirs])
        .expect(0)
        .record();
    assert_eq!(
        (again["disk_id"].as_str(), again["changed"].as_bool()),
        (Some(vol.as_str()), Some(false))
    );
}

#[test]
fn a_hand_made_volume_is_adopted_only_when_available_and_in_the_zone() {
    let ec2 = Ec2::moto();
    let other = ec2.instance();
    let hand = |zone: &str, name: &str| {
        ec2.admin(&["create-volume", zone, "1", name])
            .as_str()
            .unwrap()
            .to_string()
    };
    // In use by an instance: whose data is on it is unknown. Not adopted.
    let busy = hand("us-east-1b", "busy-data");
    ec2.admin(&["attach", &busy, &other, "/dev/sdf"]);
    let r = ec2
        .create(&[], &[rec("node-0", "busy-data")])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "not-adoptable", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("in-use"),
        "{r}"
    );
    // In another zone: not adopted either.
    hand("us-east-1a", "far-data");
    let r = ec2
        .create(&[], &[rec("node-0", "far-data")])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "zone-mismatch", "{r}");
    // Available, in the zone: adopted, tagged, and the record says so.
    let free = hand("us-east-1b", "free-data");
    let mine = in_deployment(rec("node-0", "free-data"), "gamma");
    let r = ec2.create(&[], &[mine.clone()]).expect(0).record();
    assert_eq!(
        (
            r["disk_id"].as_str(),
            r["adopted"].as_bool(),
            r["changed"].as_bool()
        ),
        (Some(free.as_str()), Some(true), Some(true)),
        "{r}"
    );
    let tags = &ec2.volume(&free)["tags"];
    assert_eq!(
        (
            tags["appscale-persist:deployment"].as_str(),
            tags["appscale-persist:node"].as_str()
        ),
        (Some("gamma"), Some("node-0"))
    );
    let again = ec2.create(&[], &[mine]).expect(0).record();
    assert_eq!(
        (again["changed"].as_bool(), again.get("adopted")),
        (Some(false), None),
        "now gamma's own: {again}"
    );
    // Adopted, it is no longer free for another deployment to take.
    let r = ec2
        .create(&[], &[in_deployment(rec("node-0", "free-data"), "delta")])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "other-deployment");
}

#[test]
fn two_deployments_never_share_tags_or_client_tokens() {
    let ec2 = Ec2::proxied(&[]);
    let t = TempDir::new("ec2-deployments");
    let body = "infrastructure: ec2\nmachine: ami-0123456789abcdef0\nzone: us-east-1b\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: data\n";
    // Each deployment in its own moto account, as two AWS accounts would
    // keep them; the disk, node and name are the same.
    let mut ids = Vec::new();
    for (head, account, want) in [
        ("keyname: alpha\n", "111111111111", "alpha"),
        ("group: beta\n", "222222222222", "beta"),
        ("", "333333333333", "appscale"),
    ] {
        ec2.control(json!({"account": account}));
        let file = t.join(&format!("AppScalefile-{want}"));
        std::fs::write(&file, format!("{head}{body}")).unwrap();
        let plan = run("appscalefile-lint", &["--plan", file.to_str().unwrap()], "")
            .expect(0)
            .stdout;
        let r = ec2.create(&["--size", "1G"], &plan).expect(0);
        let created = r.record();
        let vol = created["disk_id"].as_str().unwrap().to_string();
        // Asked through the proxy: in the account it plays now.
        let proxy = ec2.proxy.as_ref().unwrap();
        let tags = &proxy.ec2_admin(&["volume", &vol])["tags"];
        assert_eq!(
            tags["appscale-persist:deployment"].as_str(),
            Some(want),
            "{created}"
        );
        assert_eq!(created["deployment"], want);
        assert_eq!(
            r.stderr.contains("no deployment name"),
            want == "appscale",
            "the shared default is warned about, and only it: {}",
            r.stderr
        );
        ids.push(vol);
    }
    let tokens = ec2.tokens();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "no two deployments share a token: {tokens:?}"
    );
}

#[test]
fn one_instance_never_receives_the_disks_of_several_nodes() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let node = fake_imds(&inst, &[]);
    let created = create(&ec2, &[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    ec2.record_start();
    let imds_url = node.url();
    for (tool_name, args) in [
        ("disk-attach", vec!["--instance", inst.as_str()]),
        (
            "disk-attach",
            vec!["--self", "--metadata-endpoint", imds_url.as_str()],
        ),
        (
            "disk-create",
            vec!["--self", "--metadata-endpoint", imds_url.as_str()],
        ),
        ("disk-detach", vec!["--instance", inst.as_str()]),
    ] {
        let r = ec2.tool(tool_name, &args, &ndjson(&created)).expect(2);
        assert!(r.stdout.is_empty(), "{tool_name}: {}", r.stdout);
        assert!(
            r.stderr.contains("node-0, node-1")
                && r.stderr.contains("--node")
                && r.stderr.contains("nothing was done"),
            "{tool_name} {args:?}: {}",
            r.stderr
        );
    }
    // --node takes one node's records, and refuses the others.
    let r = ec2
        .attach(&["--instance", &inst, "--node", "node-0"], &created)
        .expect(2);
    assert!(r.stderr.contains("node-1"), "{}", r.stderr);
    let actions = ec2.recorded();
    assert_eq!(actions.get("AttachVolume"), None, "{actions}");
    let r = ec2
        .attach(&["--instance", &inst, "--node", "node-0"], &created[..1])
        .expect(0)
        .record();
    assert_eq!(
        (r["node"].as_str(), r["state"].as_str()),
        (Some("node-0"), Some("attached"))
    );
    // With --self, a record for another instance is refused.
    let mut elsewhere = created[1].clone();
    elsewhere["instance"] = json!("i-0000000000000beef");
    let r = ec2
        .attach(&["--self", "--metadata-endpoint", &imds_url], &[elsewhere])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "other-instance", "{r}");
    assert_eq!(
        ec2.admin(&["volume", created[1]["disk_id"].as_str().unwrap()])["attachments"],
        json!([])
    );
}

#[test]
fn two_records_for_one_volume_are_refused_up_front() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let mut created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    created["instance"] = json!(inst);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    ec2.record_start();
    let r = ec2
        .attach(&[], &[created.clone(), created.clone()])
        .expect(2);
    assert!(
        r.stderr.contains("records 1 and 2 both name disk")
            && r.stderr.contains("nothing was done"),
        "{}",
        r.stderr
    );
    // A Name tag and an id of one volume: found out once both are looked
    // up, and still before anything is done.
    let mut by_name = rec("node-0", "data-0");
    by_name["instance"] = json!(inst);
    let mut by_id = by_name.clone();
    by_id["disk"] = json!(vol);
    let recs = ec2.attach(&[], &[by_name, by_id]).expect(1).records();
    for r in &recs {
        assert_eq!(error_code(r), "duplicate-disk", "{r}");
    }
    let actions = ec2.recorded();
    assert_eq!(actions.get("AttachVolume"), None, "{actions}");
}
