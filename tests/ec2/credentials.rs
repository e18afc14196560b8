//! Credentials: which provider the SDK used, and IMDS's silence named.

use super::*;

/// `-v` says which credential provider the SDK used. Without credentials,
/// where the SDK asked IMDS and got no answer (a container behind the
/// instance's default metadata hop limit of 1), the error names the fix;
/// and `--self` says the same when it cannot read the instance's identity.
#[test]
fn verbose_names_the_credentials_and_imds_silence_names_the_hop_limit() {
    let ec2 = Ec2::moto();
    let r = ec2
        .create(&["-v", "--size", "1G"], &[rec("node-0", "data-0")])
        .expect(0);
    assert!(
        r.stderr.contains("credentials from EnvironmentVariable"),
        "{}",
        r.stderr
    );
    let hop = fake_imds("i-0123456789abcdef0", &["--hop-limited"]);
    let (url, hop_url) = (ec2.url(), hop.url());
    let mut cmd = std::process::Command::new(bin("disk-create"));
    cmd.args([
        "--endpoint-url",
        &url,
        "--region",
        "us-east-1",
        "--size",
        "1G",
    ]);
    without_aws_credentials(&mut cmd).env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &hop_url);
    let r = run_cmd(cmd, &ndjson(&[rec("node-0", "data-1")]))
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "no-credentials", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("--http-put-response-hop-limit 2"), "{msg}");

    let here = [
        "--self",
        "--node",
        "node-0",
        "--metadata-endpoint",
        &hop_url,
    ];
    let r = ec2
        .attach(&here, &[rec("node-0", "data-0")])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "metadata", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("hop limit must be 2"), "{msg}");
}
