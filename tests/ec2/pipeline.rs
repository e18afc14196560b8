//! The whole pipeline: create, attach, detach again and again, in --check mode,
//! and up and down on an AppScalefile.

use super::*;

fn steps_changed(r: &Value) -> bool {
    r["changed"].as_bool().unwrap()
}

#[test]
fn create_attach_detach_are_idempotent() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let input = [rec("node-0", "data-0")];

    let created = ec2
        .create(&["--size", "1G", "--deployment", "test"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (created["state"].as_str(), steps_changed(&created)),
        (Some("created"), true)
    );
    let vol = created["disk_id"].as_str().unwrap().to_string();
    assert!(vol.starts_with("vol-"));
    let again = ec2
        .create(&["--size", "1G", "--deployment", "test"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (again["disk_id"].as_str(), steps_changed(&again)),
        (Some(vol.as_str()), false)
    );
    assert_eq!(
        ec2.admin(&["named", "data-0"]),
        json!([vol]),
        "one volume, found again by its Name tag"
    );
    let v = ec2.volume(&vol);
    assert_eq!(v["tags"]["appscale-persist:deployment"], "test");
    assert_eq!(v["tags"]["appscale-persist:node"], "node-0");
    assert_eq!(
        (v["size"].as_u64(), v["zone"].as_str()),
        (Some(1), Some("us-east-1b"))
    );

    let attached = ec2
        .attach(&["--instance", &inst], &[created.clone()])
        .expect(0)
        .record();
    assert_eq!(
        (attached["state"].as_str(), steps_changed(&attached)),
        (Some("attached"), true)
    );
    assert_eq!(attached["attached_as"], "/dev/sdf");
    assert_eq!(attached["instance"], inst.as_str());
    let v = ec2.volume(&vol);
    assert_eq!(
        v["attachments"],
        json!([{"instance": inst, "state": "attached", "device": "/dev/sdf"}])
    );
    let again = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert!(!steps_changed(&again), "already attached here: unchanged");

    // No node ever used it: detached from here without a node's proof.
    let detached = ec2
        .detach(&["--force"], &[attached.clone()])
        .expect(0)
        .record();
    assert_eq!(
        (detached["state"].as_str(), steps_changed(&detached)),
        (Some("detached"), true)
    );
    assert_eq!(ec2.volume(&vol)["state"], "available");
    let again = ec2.detach(&[], &[attached]).expect(0).record();
    assert!(!steps_changed(&again), "not attached: unchanged");

    // A disk named by its volume id works the same way.
    let id_rec = ec2
        .create(
            &[
                "--provider",
                "ec2",
                "--disk",
                &vol,
                "--zone",
                "us-east-1b",
                "--deployment",
                "test",
            ],
            &[],
        )
        .expect(0)
        .record();
    assert!(!steps_changed(&id_rec));
    ec2.attach(
        &[
            "--provider",
            "ec2",
            "--disk",
            &vol,
            "--instance",
            &inst,
            "--deployment",
            "test",
        ],
        &[],
    )
    .expect(0);
}

/// A whole pipeline in --check mode, for a volume that does not exist yet:
/// every step says what it would do, and nothing is made.
#[test]
fn a_check_mode_pipeline_makes_nothing() {
    let ec2 = Ec2::moto();
    let url = ec2.url();
    let inst = ec2.instance();
    let mut recs = ndjson(&[rec("node-0", "not-yet")]);
    for (tool_name, args) in [
        ("disk-create", vec!["--check", "--endpoint-url", &url]),
        (
            "disk-attach",
            vec!["--check", "--endpoint-url", &url, "--instance", &inst],
        ),
        ("disk-ensure-fs", vec!["--check"]),
        ("disk-mount", vec!["--check", "--no-fstab"]),
    ] {
        let r = run_env(tool_name, &args, &recs, &aws_env()).expect(0);
        let rec = r.record();
        assert_eq!(
            (rec["changed"].as_bool(), rec["check"].as_bool()),
            (Some(true), Some(true)),
            "{tool_name}: {rec}"
        );
        recs = r.stdout;
    }
    assert_eq!(
        ec2.admin(&["named", "not-yet"]),
        json!([]),
        "no volume was created"
    );
}

#[test]
fn up_and_down_on_an_ec2_appscalefile() {
    require_root();
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-flow");
    let inst = ec2.instance();
    let imds = fake_imds(&inst, &[]);
    // As on the seed page: create the volume first, then name it.
    let vol = ec2.hand_made("us-east-1b", None);
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        format!("infrastructure: ec2\nmachine: ami-0123456789abcdef0\nzone: us-east-1b\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: {vol}\n"),
    )
    .unwrap();
    let _dev = stand_in(&t, &vol);
    let root = t.s("dev");
    let mut env = aws_env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT", root.as_str()));
    let (url, imds_url) = (ec2.url(), imds.url());
    let provider = [
        "--endpoint-url",
        url.as_str(),
        "--self",
        "--metadata-endpoint",
        imds_url.as_str(),
    ];
    let up = || flow("up", &t, &file, &provider, &env);
    let down = || flow("down", &t, &file, &provider, &env);

    let r = up().expect(0).record();
    assert_eq!(r["state"], "mounted");
    assert_eq!(
        r["instance"],
        inst.as_str(),
        "the instance came from IMDSv2"
    );
    assert!(
        r["device"]
            .as_str()
            .unwrap()
            .contains("nvme-Amazon_Elastic_Block_Store_")
    );
    assert_eq!(
        ec2.volume(&vol)["attachments"][0]["instance"],
        inst.as_str()
    );
    let data = t.join("mnt/node-1/cassandra");
    std::fs::write(&data, "rows").unwrap();

    // Detaching a mounted volume is refused, here on the node.
    let by_id = ["--provider", "ec2", "--disk", &vol];
    let mut here = vec!["--self", "--metadata-endpoint", &imds_url];
    here.extend(by_id);
    let r = ec2
        .tool_env(
            "disk-detach",
            &here,
            "",
            &[("APPSCALE_PERSIST_DEV_ROOT", &root)],
        )
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "mounted");

    let r = down().expect(0).record();
    assert_eq!(r["state"], "detached");
    assert_eq!(ec2.volume(&vol)["state"], "available");
    assert!(!Path::new(&data).exists());

    let r = up().expect(0).record();
    assert_eq!(r["state"], "mounted");
    assert_eq!(
        std::fs::read_to_string(&data).unwrap(),
        "rows",
        "the data survived down and up"
    );
    let again = up().expect(0).record();
    assert!(all_unchanged(std::slice::from_ref(&again)), "{again}");
    // disk-create's own options go to it alone (disk-attach would refuse
    // them): the found volume is tagged.
    let mut tagged = provider.to_vec();
    tagged.extend([
        "--size",
        "1G",
        "--tag",
        "team=db",
        "--tag=tier=gold",
        "--retag",
    ]);
    let r = flow("up", &t, &file, &tagged, &env).expect(0).record();
    assert_eq!(r["state"], "mounted", "{r}");
    let tags = &ec2.volume(&vol)["tags"];
    assert_eq!(
        (tags["team"].as_str(), tags["tier"].as_str()),
        (Some("db"), Some("gold")),
        "{tags}"
    );
    down().expect(0);
}
