//! Progress on stderr during a long wait (lib/persist/src/progress.rs):
//! drawn on a terminal (a pseudo-terminal made by util-linux `script`),
//! plain log lines when stderr is a pipe, nothing with `-q`, and stdout
//! pure NDJSON throughout. The wait is real: the fake Compute Engine keeps
//! an attach operation running for a few seconds.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

const ZONE: &str = "us-central1-a";
/// How long the fake keeps each operation running: past the 2 s after
/// which progress shows.
const OP_SECONDS: f64 = 3.5;

fn rec(disk: &str) -> Value {
    json!({"v": 1, "node": "vm-1", "provider": "gce", "zone": ZONE, "disk": disk})
}

/// A fake with instance `vm-1` and `disks` created, whose operations from
/// now on take [`OP_SECONDS`].
fn slow_gce(disks: &[&str]) -> (Gce, String) {
    let g = Gce::new(ZONE);
    g.instance(ZONE, "vm-1");
    let recs: Vec<Value> = disks.iter().map(|d| rec(d)).collect();
    let created = g
        .tool("disk-create", &["--size", "1G"], &ndjson(&recs))
        .expect(0)
        .records();
    g.control("config", json!({"op_delay": OP_SECONDS, "wait_max": 0.5}));
    (g, ndjson(&created))
}

/// Every stdout line is one JSON record; returns them.
fn pure_ndjson(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn a_slow_attach_shows_progress_on_a_terminal_and_stdout_stays_records() {
    let (g, input) = slow_gce(&["p-0", "p-1"]);
    let dir = TempDir::new("progress-tty");
    std::fs::write(dir.join("in.ndjson"), &input).unwrap();
    // A terminal wide enough for the whole line (indicatif cuts it to the
    // width, as it should on a real one).
    let cmd = format!(
        "stty rows 50 cols 200; {} --endpoint {} --project proj --instance vm-1 < {} > {}",
        bin("disk-attach").display(),
        g.url(),
        dir.s("in.ndjson"),
        dir.s("out.ndjson"),
    );
    // `script` runs the tool on a new pseudo-terminal (its stderr), and
    // copies what the tool draws there to its own stdout.
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .envs(g.env())
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("running script (util-linux)");
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(
        terminal.contains("waiting for Compute Engine operations to finish: 0 of 2 done,"),
        "no progress on the terminal: {terminal:?}"
    );
    assert!(terminal.contains("elapsed, deadline in "), "{terminal:?}");
    let recs = pure_ndjson(&std::fs::read_to_string(dir.join("out.ndjson")).unwrap());
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r["error"].is_null()), "{recs:?}");
}

#[test]
fn without_a_terminal_progress_is_a_plain_line_every_interval_and_q_hides_it() {
    let (g, input) = slow_gce(&["p-0"]);
    let env = g.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Every second instead of every 10 s, to keep the test short.
    env.push(("APPSCALE_PERSIST_PROGRESS_EVERY", "1"));
    let url = g.url();
    let args = [
        "--endpoint",
        url.as_str(),
        "--project",
        "proj",
        "--instance",
        "vm-1",
    ];
    let r = run_env("disk-attach", &args, &input, &env).expect(0);
    let line = "disk-attach: waiting for Compute Engine operations to finish: 0 of 1 done, ";
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with(line) && l.contains("deadline in")),
        "no plain progress line: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains('\r'),
        "drawn, not logged: {:?}",
        r.stderr
    );
    assert_eq!(pure_ndjson(&r.stdout).len(), 1);

    let detached = run_env(
        "disk-detach",
        &[&args[..4], &["-q", "--force"]].concat(),
        &r.stdout,
        &env,
    )
    .expect(0);
    assert!(
        !detached.stderr.contains("waiting for"),
        "-q shows no progress: {}",
        detached.stderr
    );
    assert_eq!(pure_ndjson(&detached.stdout).len(), 1);
}
