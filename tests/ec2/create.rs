//! disk-create: new volumes and the options they are held to, volumes found by
//! Name tag or id, and the client token.

use super::*;

#[test]
fn a_missing_volume_is_a_clear_error() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let r = ec2
        .create(
            &[
                "--provider",
                "ec2",
                "--disk",
                "vol-0123456789abcdef0",
                "--zone",
                "us-east-1b",
            ],
            &[],
        )
        .expect(1);
    let e = &r.record()["error"];
    assert_eq!(
        (e["code"].as_str(), e["tool"].as_str()),
        (Some("no-such-disk"), Some("disk-create"))
    );
    assert_eq!(e["message"], "no such volume: vol-0123456789abcdef0");
    let r = ec2
        .attach(
            &["--provider", "ec2", "--disk", "data-x", "--instance", &inst],
            &[],
        )
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "no-such-disk");
    let r = ec2
        .attach(
            &[
                "--provider",
                "ec2",
                "--disk",
                "vol-0123456789abcdef0",
                "--instance",
                "i-0000000000000dead",
            ],
            &[],
        )
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "no-such-disk");
}

#[test]
fn throttling_and_server_errors_are_retried() {
    let ec2 = Ec2::proxied(&[]);
    let rule = json!({"fail": {
        "DescribeVolumes": {"status": 503, "code": "RequestLimitExceeded", "times": 2},
        "CreateVolume": {"status": 500, "code": "InternalError", "times": 1},
    }});
    ec2.control(rule);
    let r = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    assert_eq!(r["state"], "created");
    let injected = ec2.seen();
    assert_eq!(
        injected["injected"],
        json!({"DescribeVolumes": 2, "CreateVolume": 1})
    );
    assert_eq!(
        ec2.admin(&["named", "data-0"]).as_array().unwrap().len(),
        1,
        "the retried create made one volume"
    );
}

/// As local and GCE: `--size` or `--type`, when given, must be what an
/// existing volume has; without them, any volume will do.
#[test]
fn an_existing_volume_of_another_size_or_type_is_refused() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    for args in [&["--size", "1G"][..], &[], &["--type", "gp3"]] {
        let r = ec2.create(args, &input).expect(0).record();
        assert_eq!(r["changed"], false, "{args:?}: {r}");
    }
    ec2.record_start();
    let r = ec2.create(&["--size", "2G"], &input).expect(1).record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&vol) && msg.contains("1G") && msg.contains("2G"),
        "{msg}"
    );
    let r = ec2.create(&["--type", "io1"], &input).expect(1).record();
    assert_eq!(error_code(&r), "type-mismatch", "{r}");
    // Named by its id, the same.
    let by_id = [
        "--provider",
        "ec2",
        "--disk",
        vol.as_str(),
        "--zone",
        "us-east-1b",
        "--size",
        "5G",
    ];
    let r = ec2.create(&by_id, &[]).expect(1).record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    let actions = ec2.recorded();
    for a in ["CreateVolume", "CreateTags"] {
        assert_eq!(actions.get(a), None, "nothing made or changed: {actions}");
    }
}

/// A new volume gets the key, IOPS, throughput and tags asked; found again
/// it is held to them: another key, an unencrypted volume, other IOPS are
/// errors, never accepted; tags are added to it only with --retag.
#[test]
fn a_new_volume_has_the_key_performance_and_tags_asked_and_is_held_to_them() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    let opts = [
        "--size",
        "10G",
        "--type",
        "gp3",
        "--kms-key",
        "alias/appscale-data",
        "--iops",
        "4000",
        "--throughput",
        "250",
        "--tag",
        "team=db",
        "--tag",
        "cost-center=42",
    ];
    let r = ec2.create(&opts, &input).expect(0).record();
    assert_eq!(r["changed"], true, "{r}");
    let vol = r["disk_id"].as_str().unwrap().to_string();
    let v = ec2.volume(&vol);
    assert_eq!(v["encrypted"], true, "{v}");
    assert_eq!(v["kms_key"], "alias/appscale-data", "{v}");
    assert_eq!(
        (v["iops"].as_u64(), v["throughput"].as_u64()),
        (Some(4000), Some(250))
    );
    assert_eq!(v["tags"]["team"], "db", "{v}");
    assert_eq!(v["tags"]["cost-center"], "42", "{v}");
    assert_eq!(v["tags"]["appscale-persist:kms-key"], "alias/appscale-data");

    // Found again with the same options (the alias confirmed by its tag),
    // or none: nothing to do.
    for args in [&opts[..], &["--encrypted"], &[]] {
        let r = ec2.create(args, &input).expect(0).record();
        assert_eq!(r["changed"], false, "{args:?}: {r}");
    }
    ec2.record_start();
    for (args, code) in [
        (&["--kms-key", "alias/other"][..], "encryption-mismatch"),
        (&["--iops", "5000"], "performance-mismatch"),
        (
            &["--throughput", "300", "--iops", "4000"],
            "performance-mismatch",
        ),
    ] {
        let r = ec2.create(args, &input).expect(1).record();
        assert_eq!(error_code(&r), code, "{args:?}: {r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(&vol),
            "{r}"
        );
    }
    // A tag with another value: left alone without --retag.
    let r = ec2
        .create(&["--tag", "team=web"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "{r}");
    for a in ["CreateVolume", "CreateTags", "ModifyVolume"] {
        assert_eq!(calls(&ec2, a), 0, "nothing changed: {a}");
    }
    let retag = ["--tag", "team=web", "--tag", "tier=gold", "--retag"];
    let r = ec2.create(&retag, &input).expect(0).record();
    assert_eq!(r["changed"], true, "{r}");
    assert!(r["steps"][0]["ms"].is_u64());
    let v = ec2.volume(&vol);
    assert_eq!(
        (v["tags"]["team"].as_str(), v["tags"]["tier"].as_str()),
        (Some("web"), Some("gold"))
    );
    assert_eq!(v["tags"]["cost-center"], "42", "other tags kept: {v}");
    assert_eq!(v["tags"]["appscale-persist:deployment"], "appscale", "{v}");
    let r = ec2.create(&retag, &input).expect(0).record();
    assert_eq!(r["changed"], false, "tagged once: {r}");
    assert_eq!(calls(&ec2, "CreateTags"), 1);
}

/// A volume found unencrypted, or encrypted with another key, is an
/// error when encryption is asked, named by its Name tag or by its id; a key
/// named by its id matches the ARN EC2 says.
#[test]
fn a_volume_encrypted_otherwise_than_asked_is_reported() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    let plain = ec2.create(&["--size", "1G"], &input).expect(0).record();
    let plain_id = plain["disk_id"].as_str().unwrap().to_string();
    ec2.record_start();
    let r = ec2.create(&["--encrypted"], &input).expect(1).record();
    assert_eq!(error_code(&r), "encryption-mismatch", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unencrypted"),
        "{r}"
    );
    let by_id = [
        "--provider",
        "ec2",
        "--disk",
        &plain_id,
        "--zone",
        "us-east-1b",
    ];
    let mut args = by_id.to_vec();
    args.extend(["--kms-key", "1234abcd-12ab-34cd-56ef-1234567890ab"]);
    let r = ec2.create(&args, &[]).expect(1).record();
    assert_eq!(error_code(&r), "encryption-mismatch", "{r}");
    assert_eq!(calls(&ec2, "CreateVolume"), 0);

    // Made by hand with a key given by its ARN: named by its id, it matches.
    let key = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let arn = format!("arn:aws:kms:us-east-1:123456789012:key/{key}");
    let spec =
        json!({"AvailabilityZone": "us-east-1b", "Size": 1, "Encrypted": true, "KmsKeyId": arn});
    let keyed = ec2.admin(&["create-volume-with", &spec.to_string()]);
    let keyed = keyed.as_str().unwrap();
    let by_id = ["--provider", "ec2", "--disk", keyed, "--zone", "us-east-1b"];
    for k in [key, arn.as_str()] {
        let mut args = by_id.to_vec();
        args.extend(["--kms-key", k]);
        ec2.create(&args, &[]).expect(0);
    }
    let mut args = by_id.to_vec();
    args.extend(["--kms-key", "alias/other"]);
    let r = ec2.create(&args, &[]).expect(1).record();
    assert_eq!(error_code(&r), "encryption-mismatch", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains(&arn),
        "{r}"
    );
}

/// Values beyond EBS's limits are usage errors before any call: exit 2,
/// no record out, no request at all.
#[test]
fn options_beyond_the_volume_types_limits_are_refused_before_any_call() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    ec2.record_start();
    let refused: &[(&[&str], &str)] = &[
        (&["--type", "gp3", "--iops", "90000"], "3000 to 80000"),
        (
            &["--type", "gp3", "--size", "10G", "--iops", "6000"],
            "at most 5000",
        ),
        (&["--type", "gp3", "--throughput", "800"], "at most 750"),
        (
            &["--type", "io2", "--iops", "1000", "--throughput", "200"],
            "gp3 does",
        ),
        (&["--type", "gp2", "--iops", "3000"], "no provisioned IOPS"),
        (&["--tag", "aws:owner=x"], "AWS's own"),
        (&["--tag", "appscale-persist:node=x"], "itself"),
        (
            &[
                "--kms-key",
                "projects/p/locations/l/keyRings/r/cryptoKeys/k",
            ],
            "KMS key id",
        ),
        (&["--tag", "novalue"], "KEY=VALUE"),
        (&["--retag"], "--tag"),
    ];
    for (args, why) in refused {
        let r = ec2.create(args, &input).expect(2);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    let actions = ec2.recorded();
    assert_eq!(actions, json!({}), "no call at all: {actions}");
    // A new io1 volume needs --iops (a volume found has its own): the
    // record fails before any CreateVolume.
    let r = ec2.create(&["--type", "io1"], &input).expect(1).record();
    assert_eq!(error_code(&r), "create-failed", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs --iops"),
        "{r}"
    );
    assert_eq!(ec2.recorded().get("CreateVolume"), None);
}

/// EC2 remembers a client token for hours: the same token with the same
/// parameters answers the first volume again, even once it is deleted;
/// with other parameters it is `IdempotentParameterMismatch`
/// (docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html; the
/// EBS CSI driver moves to a new token). Neither stops the next run.
#[test]
fn a_dead_volume_or_a_mismatch_behind_a_client_token_never_stops_a_run() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    // A lost answer: the SDK sends CreateVolume again, on the same token,
    // and gets the same volume.
    ec2.control(json!({"lose": {"CreateVolume": 1}}));
    let first = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    let first = first["disk_id"].as_str().unwrap().to_string();
    assert_eq!(ec2.admin(&["named", "data-0"]), json!([first]));
    let sent = &ec2.seen()["tokens"];
    assert_eq!(sent[0], sent[1], "one token for the run's retries");
    ec2.admin(&["delete-volume", &first]);
    // An earlier run's answer is told from this run's by its time.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let second = ec2
        .create(&["--size", "1G", "--timeout", "60"], &input)
        .expect(0)
        .record();
    let second = second["disk_id"].as_str().unwrap().to_string();
    assert_ne!(second, first, "not the dead volume");
    ec2.admin(&["delete-volume", &second]);
    let third = ec2
        .create(&["--size", "2G", "--timeout", "60"], &input)
        .expect(0)
        .record();
    assert_eq!(third["size_bytes"], 2u64 << 30, "{third}");
    assert_eq!(ec2.admin(&["named", "data-0"]), json!([third["disk_id"]]));
    let tokens = ec2.tokens();
    assert!(
        tokens[0] != tokens[tokens.len() - 1] && tokens.iter().all(|t| t.starts_with(&tokens[0])),
        "the same disk's tokens, the next attempt's after: {tokens:?}"
    );
}

/// The zone names the region: a region from the environment (here
/// `AWS_REGION`; equally the profile or IMDS) never sends a zone's volume
/// to another region (EC2 refuses a zone outside the signing region:
/// `Invalid availability zone`), and `--region` naming another region is
/// refused before any call, naming both.
#[test]
fn the_zone_names_the_region() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    // AWS_REGION given twice: the later value is the one the tool sees.
    let env = [("AWS_REGION", "us-west-2")];
    let r = ec2
        .tool_env("disk-create", &["--size", "1G"], &ndjson(&input), &env)
        .expect(0)
        .record();
    let vol = r["disk_id"].as_str().unwrap();
    assert_eq!(
        ec2.admin(&["named", "data-0"]),
        json!([vol]),
        "made in us-east-1, the zone's region"
    );
    ec2.control(json!({"actions": {}}));
    let other = ndjson(&[rec("node-1", "data-1")]);
    let r = ec2
        .tool_env("disk-create", &["--region", "us-west-2"], &other, &env)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "region-mismatch", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("us-east-1") && msg.contains("us-west-2"),
        "{msg}"
    );
    assert_eq!(ec2.seen()["actions"], json!({}), "nothing sent");
}

/// Sizes per volume type (CreateVolume's `Size`: st1 and sc1 from 125
/// GiB, standard up to 1 TiB) are checked before any call: a `--size` out
/// of range is a usage error; the default size for st1 fails the record
/// before CreateVolume.
#[test]
fn sizes_per_type_are_checked_before_any_call() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    let r = ec2
        .create(&["--type", "st1", "--size", "10G"], &input)
        .expect(2);
    assert!(r.stderr.contains("125 to 16384 GiB"), "{}", r.stderr);
    let r = ec2.create(&["--type", "st1"], &input).expect(1).record();
    assert_eq!(error_code(&r), "create-failed", "{r}");
    assert!(ec2.seen()["actions"].get("CreateVolume").is_none());
    ec2.create(&["--type", "st1", "--size", "125G"], &input)
        .expect(0);
}
