//! The AppScalefile's cloud settings in the cloud tools (`--appscalefile`):
//! `EC2_URL` as the endpoint and `EC2_ACCESS_KEY`/`EC2_SECRET_KEY` as the
//! credentials when the AWS chain has none, against moto, with the secret
//! kept out of every record, message and error.

mod common;

use std::process::{Command, Stdio};

use common::*;

const SECRET: &str = "Zq7SECRETdistinct+k3y/wJalrXUtnFEMI";
const KEY_ID: &str = "AKIAAPPSCALEFILE0001";

/// An EC2 AppScalefile with one node whose disk is `disk`, and the
/// credentials and endpoint in the file.
fn appscalefile(t: &TempDir, name: &str, endpoint: &str, extra: &str) -> String {
    let path = t.s(name);
    std::fs::write(
        &path,
        format!(
            "infrastructure: ec2\nmachine: ami-03cf127a\ninstance_type: m3.medium\nzone: us-east-1b\nkeyname: settings\nEC2_URL: {endpoint}\nEC2_ACCESS_KEY: {KEY_ID}\nEC2_SECRET_KEY: {SECRET}\n{extra}ips_layout:\n- roles: [master, database, zookeeper, appengine]\n  nodes: 1\n  disks: settings-data\n"
        ),
    )
    .unwrap();
    path
}

/// Runs a tool with no AWS credentials, region, endpoint or profile in its
/// environment: whatever it reaches, it reaches through the AppScalefile.
fn bare(tool: &str, args: &[&str], input: &str) -> Run {
    bare_with_imds(tool, args, input, None)
}

/// [`bare`], with the metadata service at `imds` (else none: no instance
/// role to find here, and no network to look for one).
fn bare_with_imds(tool: &str, args: &[&str], input: &str, imds: Option<&str>) -> Run {
    let mut cmd = Command::new(bin(tool));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    match imds {
        Some(url) => cmd.env("AWS_EC2_METADATA_SERVICE_ENDPOINT", url),
        None => cmd.env("AWS_EC2_METADATA_DISABLED", "true"),
    };
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    finish(child.wait_with_output().unwrap())
}

fn no_secret(what: &str, r: &Run) {
    for (stream, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        assert!(
            !text.contains(SECRET) && !text.contains("Zq7SECRET"),
            "{what}: the secret reached {stream}:\n{text}"
        );
    }
}

#[test]
fn the_appscalefiles_credentials_and_endpoint_are_used_and_the_secret_never_shown() {
    let moto = Server::moto();
    let t = TempDir::new("settings");
    let file = appscalefile(&t, "AppScalefile", &moto.url(), "");

    let plan = run("appscalefile-lint", &["--plan", &file], "").expect(0);
    no_secret("appscalefile-lint --plan", &plan);
    assert_eq!(plan.records().len(), 1);

    moto.ec2_admin(&["record-start"]);
    let created = bare(
        "disk-create",
        &["-v", "--appscalefile", &file],
        &plan.stdout,
    )
    .expect(0);
    no_secret("disk-create -v", &created);
    let r = created.record();
    assert_eq!(r["state"], "created", "{}", created.stderr);
    // moto accepts any key: that its requests were signed with the file's
    // key id shows the file's credentials were the ones used.
    let keys = moto.ec2_admin(&["access-keys"]);
    assert_eq!(keys, serde_json::json!([KEY_ID]));

    // Without --appscalefile there are no credentials (nor region): the
    // test's environment really is bare.
    let without = bare(
        "disk-create",
        &["-v", "--endpoint-url", &moto.url(), "--region", "us-east-1"],
        &plan.stdout,
    );
    assert_ne!(without.code, 0);
    assert_eq!(without.record()["error"]["code"], "no-credentials");

    // An error path with the file's settings: the endpoint does not answer.
    let dead = appscalefile(&t, "Dead", "http://127.0.0.1:9", "");
    let plan = run("appscalefile-lint", &["--plan", &dead], "").expect(0);
    let failed = bare(
        "disk-create",
        &["-v", "--appscalefile", &dead, "--timeout", "5"],
        &plan.stdout,
    );
    assert_ne!(failed.code, 0);
    assert!(failed.record()["error"].is_object());
    no_secret("disk-create against a dead endpoint", &failed);
}

#[test]
fn a_broken_appscalefile_never_shows_its_secret() {
    let t = TempDir::new("settings-broken");
    // The secret without its key id: an error pointing at the secret's line.
    let path = t.s("AppScalefile");
    std::fs::write(
        &path,
        format!(
            "infrastructure: ec2\nmachine: ami-1\ninstance_type: m3.medium\nzone: us-east-1b\nEC2_SECRET_KEY: {SECRET}\nips_layout:\n- roles: [master, database, zookeeper, appengine]\n  nodes: 1\n  disks: d-1\n"
        ),
    )
    .unwrap();
    let human = run("appscalefile-lint", &[&path], "");
    assert_eq!(human.code, 1, "{}", human.stderr);
    assert!(
        human.stderr.contains("EC2_SECRET_KEY: <redacted>"),
        "{}",
        human.stderr
    );
    assert!(human.stderr.contains(":5:1"), "{}", human.stderr);
    no_secret("appscalefile-lint", &human);
    let json = run("appscalefile-lint", &["--format", "json", &path], "");
    no_secret("appscalefile-lint --format json", &json);

    // A cloud tool given it refuses before any call, naming the file only.
    let rec = r#"{"v":1,"node":"node-0","provider":"ec2","zone":"us-east-1b","disk":"d-1"}"#;
    let refused = bare("disk-create", &["-v", "--appscalefile", &path], rec);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("run `appscalefile-lint"),
        "{}",
        refused.stderr
    );
    no_secret("disk-create --appscalefile (broken)", &refused);
}

/// An instance's metadata service answering 403 to every call (turned
/// off, or a hop limit) is no reason to skip the AppScalefile's
/// credentials: the AWS chain finds none there, and the file's are used.
/// They were skipped (the chain's IMDS error ended the search).
#[test]
fn the_appscalefiles_credentials_are_used_when_the_metadata_service_answers_403() {
    let moto = Server::moto();
    let t = TempDir::new("settings-imds-403");
    let file = appscalefile(&t, "AppScalefile", &moto.url(), "");
    let imds = Server::python(
        "fake_imds.py",
        &["i-0123456789abcdef0", "us-east-1b", "--forbidden"],
    );
    let plan = run("appscalefile-lint", &["--plan", &file], "").expect(0);
    moto.ec2_admin(&["record-start"]);
    let created = bare_with_imds(
        "disk-create",
        &["-v", "--appscalefile", &file],
        &plan.stdout,
        Some(&imds.url()),
    );
    no_secret("disk-create with IMDS answering 403", &created);
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert_eq!(
        moto.ec2_admin(&["access-keys"]),
        serde_json::json!([KEY_ID]),
        "signed with the file's key"
    );
}
