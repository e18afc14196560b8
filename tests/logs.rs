//! Log lines on stderr (lib/persist/src/log.rs): `-vv` adds the AWS SDK's
//! own lines (endpoint, credentials, retries), `RUST_LOG` filters them by
//! target, and no credential ever reaches stderr, whatever the SDK prints.
//! Against moto's EC2 on 127.0.0.1.

mod common;

use common::*;
use serde_json::json;

/// Distinctive credentials: any trace of them in stderr is a leak.
const SECRET: &str = "Zq7SecretAccessKeyNeverPrinted0x5EC12E7";
const SESSION: &str = "Fq9SessionTokenNeverPrinted0x70CE9";

/// `disk-create` of one volume against moto, with `args` and `extra` env.
fn create(moto: &Server, disk: &str, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let url = moto.url();
    let mut a = vec!["--endpoint-url", url.as_str(), "--size", "1G"];
    a.extend_from_slice(args);
    let mut env: Vec<(&str, &str)> = aws_env()
        .into_iter()
        .filter(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY")
        .collect();
    env.push(("AWS_SECRET_ACCESS_KEY", SECRET));
    env.push(("AWS_SESSION_TOKEN", SESSION));
    env.extend_from_slice(extra);
    let input =
        json!({"v": 1, "node": "node-0", "provider": "ec2", "zone": "us-east-1b", "disk": disk});
    run_env("disk-create", &a, &format!("{input}\n"), &env).expect(0)
}

fn no_credentials_in(stderr: &str) {
    for leak in [SECRET, SESSION] {
        assert!(!stderr.contains(leak), "{leak} reached stderr:\n{stderr}");
    }
    // The parts of a SigV4 signature the SDK may print are not shown either.
    for line in stderr.lines() {
        let l = line.to_ascii_lowercase();
        if let Some(at) = l.find("signature=") {
            assert!(
                l[at + "signature=".len()..].starts_with("<redacted>"),
                "a signature reached stderr: {line}"
            );
        }
    }
}

#[test]
fn vv_shows_the_sdks_lines_and_never_a_credential() {
    let moto = Server::moto();
    let r = create(&moto, "logs-0", &["-vv"], &[]);
    let sdk = |target: &str| {
        r.stderr
            .lines()
            .any(|l| l.starts_with(&format!("disk-create: debug: {target}")))
    };
    assert!(
        sdk("aws_smithy_runtime"),
        "no SDK runtime lines:\n{}",
        r.stderr
    );
    assert!(
        sdk("aws_config"),
        "no SDK credential/config lines:\n{}",
        r.stderr
    );
    // Our own debug lines are there too, in their own form.
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("disk-create: debug: ") && !l.contains("::")),
        "{}",
        r.stderr
    );
    no_credentials_in(&r.stderr);
    // One record per stdout line, nothing else.
    assert_eq!(r.records().len(), 1);
}

#[test]
fn rust_log_picks_which_lines_show() {
    let moto = Server::moto();
    let r = create(
        &moto,
        "logs-1",
        &[],
        &[("RUST_LOG", "aws_smithy_runtime=debug")],
    );
    let debug: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("disk-create: debug: "))
        .collect();
    assert!(!debug.is_empty(), "no SDK lines:\n{}", r.stderr);
    assert!(
        debug
            .iter()
            .all(|l| l.starts_with("disk-create: debug: aws_smithy_runtime")),
        "only the target asked for (and none of ours without -v):\n{}",
        r.stderr
    );
    no_credentials_in(&r.stderr);

    // Naming our own target shows our debug lines, without the SDK's.
    let r = create(
        &moto,
        "logs-2",
        &[],
        &[("RUST_LOG", "appscale_persist=debug")],
    );
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("disk-create: debug: ")),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("aws_smithy"), "{}", r.stderr);

    // Everything the SDK says, request headers included: still no credential.
    let r = create(&moto, "logs-4", &[], &[("RUST_LOG", "trace")]);
    assert!(r.stderr.contains("disk-create: trace: "), "{}", r.stderr);
    no_credentials_in(&r.stderr);

    // The old switch still sets our level over RUST_LOG and the flags.
    let r = create(
        &moto,
        "logs-3",
        &["-v"],
        &[
            ("APPSCALE_PERSIST_LOG", "quiet"),
            ("RUST_LOG", "appscale_persist=debug"),
        ],
    );
    assert_eq!(r.stderr, "", "quiet: errors only");
}

#[test]
fn vv_shows_the_google_sdks_retries() {
    let g = Gce::new("us-central1-a");
    g.instance("us-central1-a", "vm-1");
    // The first disks.get fails (503); the SDK retries it and says so.
    g.control(
        "config",
        json!({"http_fail": {"disks.get": {"status": 503, "times": 1}}}),
    );
    let input = json!({"v": 1, "node": "vm-1", "provider": "gce", "zone": "us-central1-a", "disk": "logs-g"});
    let r = g
        .tool(
            "disk-create",
            &["--size", "1G", "-vv"],
            &format!("{input}\n"),
        )
        .expect(0);
    assert!(
        r.stderr.lines().any(|l| l
            .starts_with("disk-create: debug: experimental.transport.request: ")
            && l.contains("503")),
        "no line from the Google SDK about the failed attempt:\n{}",
        r.stderr
    );
    // Without -vv, none of the SDK's lines.
    let again = g
        .tool("disk-create", &["--size", "1G"], &format!("{input}\n"))
        .expect(0);
    assert!(!again.stderr.contains("experimental."), "{}", again.stderr);
}
