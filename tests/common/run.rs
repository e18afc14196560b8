//! Running the built tools (alone, in a pipeline, through scripts/up and
//! scripts/down, signalled mid-run) and reading what they said: the [`Run`]
//! of a finished tool, its records, and the helpers tests assert with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::*;

/// The directory holding the built binaries: the test executable lives in
/// its `deps/`. That is `target/debug` for a plain `cargo test`, and
/// `target/x86_64-unknown-linux-musl/debug` for scripts/test, which builds
/// the tools and the tests for that target: the tests run the static tools
/// that ship.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .to_path_buf()
}

/// The target directory (`target`, or `$CARGO_TARGET_DIR`): [`bin_dir`]'s
/// parent, or its grandparent when the build named a target
/// (`target/TRIPLE/debug`).
pub fn target_dir() -> PathBuf {
    let bins = bin_dir();
    let above = bins.parent().expect("target directory");
    let named_target = above
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("-linux-"));
    let root = if named_target {
        above.parent().expect("target directory")
    } else {
        above
    };
    root.to_path_buf()
}

/// Path of a built tool; panics with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` first (scripts/test does)",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tests touch devices and mounts: they must run as root, and say so
/// rather than skip.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests make loop devices and mounts: run them as root (scripts/test)"
    );
}

/// A finished tool run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The NDJSON records on stdout.
    pub fn records(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "stdout line is not JSON ({e}): {l}\nstderr: {}",
                        self.stderr
                    )
                })
            })
            .collect()
    }

    /// The one record on stdout.
    pub fn record(&self) -> Value {
        let r = self.records();
        assert_eq!(
            r.len(),
            1,
            "expected one record, got {}:\n{}\nstderr: {}",
            r.len(),
            self.stdout,
            self.stderr
        );
        r.into_iter().next().unwrap()
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The [`Run`] of a finished command.
pub fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a tool with arguments, stdin `input`, and extra environment.
pub fn run_env(name: &str, args: &[&str], input: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = if name.contains('/') {
        Command::new(name)
    } else {
        Command::new(bin(name))
    };
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("waiting for tool");
    writer.join().unwrap();
    finish(out)
}

/// Runs a tool with arguments and stdin `input`.
pub fn run(name: &str, args: &[&str], input: &str) -> Run {
    run_env(name, args, input, &[])
}

/// Runs any command (argv), for setup and checks.
pub fn sh(argv: &[&str]) -> Run {
    finish(
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}")),
    )
}

/// Like [`sh`], but the command must succeed.
pub fn sh_ok(argv: &[&str]) -> String {
    let r = sh(argv);
    assert_eq!(r.code, 0, "{argv:?} failed: {}", r.stderr);
    r.stdout
}

/// Whether every step of every record reported `changed: false` (a rerun
/// that found everything as wanted).
pub fn all_unchanged(recs: &[Value]) -> bool {
    recs.iter().all(|r| {
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["changed"] == false)
    })
}

/// The records as NDJSON text.
pub fn ndjson(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// What a tool reads on stdin: NDJSON text as it is (another tool's
/// stdout), or records.
pub trait Stdin {
    /// The NDJSON text.
    fn ndjson(&self) -> String;
}

impl Stdin for str {
    fn ndjson(&self) -> String {
        self.to_string()
    }
}

impl Stdin for String {
    fn ndjson(&self) -> String {
        self.clone()
    }
}

impl Stdin for [Value] {
    fn ndjson(&self) -> String {
        ndjson(self)
    }
}

impl Stdin for Vec<Value> {
    fn ndjson(&self) -> String {
        ndjson(self)
    }
}

impl<const N: usize> Stdin for [Value; N] {
    fn ndjson(&self) -> String {
        ndjson(self)
    }
}

/// Runs `scripts/up` or `scripts/down` on `file` with mountpoints under
/// `t/mnt/{node}` and fstab `t/fstab`, the tools of this build, and
/// `provider` options after `--`.
pub fn flow(
    script: &str,
    t: &TempDir,
    file: &Path,
    provider: &[&str],
    env: &[(&str, &str)],
) -> Run {
    flow_with(script, t, file, &[], provider, env)
}

/// Runs a tool alone, with stdin `/dev/null` (as from cron or a unit):
/// flags such as `disk-unmount --mountpoint` then name the record.
pub fn run_alone(name: &str, args: &[&str]) -> Run {
    finish(
        Command::new(bin(name))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("starting {name}: {e}")),
    )
}

/// [`flow`] with options for the script itself, given before the
/// AppScalefile (`--node node-1`).
pub fn flow_with(
    script: &str,
    t: &TempDir,
    file: &Path,
    script_args: &[&str],
    provider: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let mnt = t.s("mnt/{node}");
    let fstab = t.s("fstab");
    let mut args = vec!["--mountpoint", mnt.as_str(), "--fstab", fstab.as_str()];
    args.extend_from_slice(script_args);
    args.push(file.to_str().unwrap());
    args.push("--");
    args.extend_from_slice(provider);
    let bin = bin_dir().display().to_string();
    let mut env = env.to_vec();
    env.push(("APPSCALE_PERSIST_BIN", bin.as_str()));
    run_env(
        repo().join("scripts").join(script).to_str().unwrap(),
        &args,
        "",
        &env,
    )
}

/// The record without `key` (as another machine, which cannot see it,
/// would have it).
pub fn without(rec: &Value, key: &str) -> Value {
    let mut r = rec.clone();
    r.as_object_mut().unwrap().remove(key);
    r
}

/// Starts `cmd` with its stdout and stderr piped, and writes `input` to
/// its stdin (then closed).
pub fn start(mut cmd: Command, input: &str) -> std::process::Child {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child
}

/// Runs `cmd` with `input` on stdin, to its end.
pub fn run_cmd(cmd: Command, input: &str) -> Run {
    finish(start(cmd, input).wait_with_output().unwrap())
}

/// Runs `cmd` with `input` on stdin and, once a stderr line contains
/// `marker` (`froze `: the filesystem is frozen), sends it SIGTERM and, with
/// `signals` 2, SIGINT right after (a different signal: two pending SIGTERMs
/// would be one); returns its run, stderr whole.
pub fn signalled_at(cmd: Command, input: &str, marker: &str, signals: usize) -> Run {
    use nix::sys::signal::Signal;
    let sigs = [Signal::SIGTERM, Signal::SIGINT];
    signals_at(
        cmd,
        input,
        marker,
        std::time::Duration::ZERO,
        &sigs[..signals],
    )
}

/// Runs `cmd` with `input` on stdin and, `after` a stderr line contains
/// `marker`, sends it `signals` one after the other (SIGKILL: killed where
/// it stands); returns its run, stderr whole.
pub fn signals_at(
    cmd: Command,
    input: &str,
    marker: &str,
    after: std::time::Duration,
    signals: &[nix::sys::signal::Signal],
) -> Run {
    signals_to(cmd, false, input, marker, after, signals)
}

/// [`signals_at`], the signals sent to the whole process group `cmd` is
/// made to lead, as a Ctrl-C at a terminal is.
pub fn group_signals_at(
    mut cmd: Command,
    input: &str,
    marker: &str,
    after: std::time::Duration,
    signals: &[nix::sys::signal::Signal],
) -> Run {
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    signals_to(cmd, true, input, marker, after, signals)
}

fn signals_to(
    cmd: Command,
    group: bool,
    input: &str,
    marker: &str,
    after: std::time::Duration,
    signals: &[nix::sys::signal::Signal],
) -> Run {
    use std::io::BufRead;
    let mut child = start(cmd, input);
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            std::thread::sleep(after);
            // A negative pid: the whole process group (of a `cmd` started
            // with `process_group(0)`, as a terminal's Ctrl-C reaches it).
            let pid = nix::unistd::Pid::from_raw(child.id() as i32 * if group { -1 } else { 1 });
            for sig in signals {
                nix::sys::signal::kill(pid, *sig).unwrap();
            }
            break;
        }
    }
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: seen,
    }
}

/// The `snapshot.id` of each record, in order.
pub fn ids(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["snapshot"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// A record's `snapshot.pruned`, sorted (empty when it has none).
pub fn pruned_sorted(r: &Value) -> Vec<String> {
    let mut pruned: Vec<String> = r["snapshot"]["pruned"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    pruned.sort();
    pruned
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `rec`, unmounted, carrying the node's word that it let go of `disk` on
/// `instance` at `at` (as disk-unmount there stamps it), as NDJSON.
pub fn unmount_proven(rec: &Value, instance: &str, disk: &str, at: u64) -> String {
    let mut r = rec.clone();
    r["state"] = serde_json::json!("unmounted");
    r["unmount_proof"] =
        serde_json::json!({"instance": instance, "disk": disk, "device": "/dev/sdb", "at": at});
    ndjson(&[r])
}
