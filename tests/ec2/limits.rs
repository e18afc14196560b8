//! More volumes per instance, and many disks within EC2's request limits:
//! batched polls, attachment limits, filters and pages.

use super::*;

#[test]
fn fifty_volumes_attach_concurrently_with_batched_polling() {
    let ec2 = Ec2::moto();
    let inst = ec2.instances("us-east-1b", 5);
    let recs: Vec<Value> = (0..50)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("data-{i}"));
            r["instance"] = json!(inst[i / 10]);
            r
        })
        .collect();
    let created = create(&ec2, &recs);
    assert_eq!(created.len(), 50);

    ec2.record_start();
    let started = std::time::Instant::now();
    let attached = ec2
        .attach(&["--concurrency", "16"], &created)
        .expect(0)
        .records();
    let took = started.elapsed();
    assert!(
        attached
            .iter()
            .all(|r| r["state"] == "attached" && r["changed"] == true)
    );
    let actions = ec2.recorded();
    assert_eq!(actions["AttachVolume"], 50, "{actions}");
    let describes = actions["DescribeVolumes"].as_u64().unwrap();
    assert!(
        describes <= 3,
        "one DescribeVolumes to resolve, one per poll round: {actions}"
    );
    assert_eq!(actions["DescribeInstances"], 1, "{actions}");
    eprintln!("50 attachments: {took:?}, {describes} DescribeVolumes calls");
    // Each instance got ten distinct device names.
    for i in &inst {
        let mut names: Vec<&str> = attached
            .iter()
            .filter(|r| r["instance"] == i.as_str())
            .map(|r| r["attached_as"].as_str().unwrap())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 10, "{i}: {names:?}");
    }

    ec2.record_start();
    let detached = ec2.detach(&["--force"], &attached).expect(0).records();
    assert!(detached.iter().all(|r| r["state"] == "detached"));
    let actions = ec2.recorded();
    assert_eq!(actions["DetachVolume"], 50);
    assert!(
        actions["DescribeVolumes"].as_u64().unwrap() <= 3,
        "{actions}"
    );
}

/// HVM instances take volumes beyond `/dev/sdz` (`/dev/xvdba` on), where
/// the 22nd volume used to find no name.
#[test]
fn sixty_volumes_attach_to_one_hvm_instance() {
    let ec2 = Ec2::moto();
    // A type that takes 128 EBS volumes.
    let inst = ec2.instance_of("m7i.48xlarge");
    let created = create(&ec2, &recs_for(&inst, 60));
    let attached = ec2
        .attach(&["--concurrency", "16"], &created)
        .expect(0)
        .records();
    let mut names: Vec<&str> = attached
        .iter()
        .map(|r| r["attached_as"].as_str().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 60, "{names:?}");
    for n in [
        "/dev/sdf",
        "/dev/sdz",
        "/dev/xvdba",
        "/dev/xvdbz",
        "/dev/xvdca",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let on_instance = ec2.admin(&["attached", &inst]);
    for r in &attached {
        assert_eq!(
            on_instance[r["disk_id"].as_str().unwrap()],
            r["attached_as"]
        );
    }
    // Found attached, under the names they were given.
    let again = ec2.attach(&[], &created).expect(0).records();
    assert!(again.iter().all(|r| r["changed"] == false));
    assert_eq!(
        again
            .iter()
            .map(|r| r["attached_as"].clone())
            .collect::<Vec<_>>(),
        attached
            .iter()
            .map(|r| r["attached_as"].clone())
            .collect::<Vec<_>>()
    );
}

/// An m5.large takes 27 EBS volumes (one network interface): its root
/// volume and 26 more. The volumes beyond fail `attachment-limit` before
/// any call; the others attach.
#[test]
fn an_instance_types_attachment_limit_is_reported_before_any_call() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance_of("m5.large");
    let created = create(&ec2, &recs_for(&inst, 28));
    ec2.record_start();
    let r = ec2.attach(&[], &created).expect(1);
    let out = r.records();
    let failed: Vec<&Value> = out.iter().filter(|r| r.get("error").is_some()).collect();
    assert_eq!(out.len() - failed.len(), 26, "{}", r.stdout);
    assert_eq!(failed.len(), 2);
    for f in &failed {
        assert_eq!(error_code(f), "attachment-limit", "{f}");
        let msg = f["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&inst) && msg.contains("m5.large") && msg.contains("at most 27"),
            "{msg}"
        );
    }
    assert_eq!(
        (failed[0]["node"].as_str(), failed[1]["node"].as_str()),
        (Some("node-26"), Some("node-27")),
        "the first ones fit"
    );
    assert_eq!(ec2.recorded()["AttachVolume"], 26);
    // One detached makes room for one more; the last still does not fit.
    let first = out[0].clone();
    ec2.detach(&["--force"], &[first]).expect(0);
    let rest = [created[26].clone(), created[27].clone()];
    let r = ec2.attach(&[], &rest).expect(1);
    let out = r.records();
    assert_eq!(out[0]["state"], "attached", "{}", r.stdout);
    assert_eq!(error_code(&out[1]), "attachment-limit");
}

/// EC2 itself refusing an attach for the limit (it counts what the plan
/// cannot see) is the same code.
#[test]
fn ec2_refusing_an_attach_for_its_limit_is_attachment_limit() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &recs_for(&inst, 1));
    let rule =
        json!({"fail": {"AttachVolume": {"status": 400, "code": "AttachmentLimitExceeded"}}});
    ec2.control(rule);
    let r = ec2.attach(&[], &created).expect(1).record();
    assert_eq!(error_code(&r), "attachment-limit", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected AttachmentLimitExceeded"),
        "{r}"
    );
}

/// 250 disks in one deployment: create, attach, status, snapshot with
/// retention, every request within EC2's limits (at most 200 values a
/// filter, `FilterLimitExceeded` beyond; at most 1,000 ids a Describe;
/// DescribeSnapshots pages followed: ec2-api-pagination.html), which the
/// proxy enforces: it refused nothing.
#[test]
fn two_hundred_fifty_disks_stay_within_ec2s_request_limits() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instances("us-east-1b", 25);
    let recs: Vec<Value> = (0..250)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("data-{i}"));
            r["instance"] = json!(inst[i / 10]);
            r
        })
        .collect();
    ec2.control(json!({"page_size": 100}));
    let busy = ["--concurrency", "16", "--timeout", "600"];
    let run_all = |name: &str, extra: &[&str], input: &str| {
        let mut a = busy.to_vec();
        a.extend_from_slice(extra);
        ec2.tool(name, &a, input).expect(0).records()
    };
    let started = std::time::Instant::now();
    let created = run_all("disk-create", &["--size", "1G"], &ndjson(&recs));
    assert_eq!(created.len(), 250);
    let again = run_all("disk-create", &["--size", "1G"], &ndjson(&recs));
    assert!(all_unchanged(&again), "found again by their Name tags");
    let attached = run_all("disk-attach", &[], &ndjson(&created));
    assert!(attached.iter().all(|r| r["state"] == "attached"));
    let status = ec2.status(&[], &attached).expect(0);
    assert_eq!(status.records().len(), 250);
    let first = run_all("disk-snapshot", &["--no-freeze"], &ndjson(&attached));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = run_all(
        "disk-snapshot",
        &["--no-freeze", "--keep", "1", "--wait"],
        &ndjson(&attached),
    );
    let older: Vec<String> = ids(&first);
    let mut pruned: Vec<String> = second.iter().flat_map(pruned_sorted).collect();
    pruned.sort();
    let mut want = older.clone();
    want.sort();
    assert_eq!(
        pruned, want,
        "every disk's older snapshot, seen across pages"
    );
    eprintln!(
        "250 disks: create, attach, status, 2 snapshots in {:?}",
        started.elapsed()
    );
    assert_eq!(ec2.seen()["injected"], json!({}), "nothing refused");
}
