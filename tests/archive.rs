//! disk-archive and disk-restore on real parts: restic (Debian's), local
//! images on loop devices, and repositories in a directory, in S3 (moto's
//! S3 server) and in Google Cloud Storage (fake-gcs-server, reached by
//! restic's own gs backend through a CONNECT proxy, as restic reaches the
//! real service through one). The trees restored are held against the
//! trees archived, byte for byte and metadata for metadata.

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod archive_common;
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use archive_common::*;
use common::*;
use serde_json::Value;

#[test]
fn a_local_disk_archived_is_restored_onto_xfs_identical() {
    let p = Place::new("arch-local");
    let rec = p.up("node-0", "data-0", "256M", "ext4");
    make_tree(&p.mnt("data-0"));
    let repo = p.t.s("repo");
    let input = ndjson(&[rec.clone()]);

    // --check creates nothing, not even the repository.
    let c = p
        .archive(&repo, &["--init", "--check"], &input, &[])
        .expect(0)
        .record();
    assert_eq!(c["archive"]["state"], "planned", "{c}");
    assert!(!Path::new(&repo).exists(), "--check made the repository");

    let a = p.archive(&repo, &["--init"], &input, &[]).expect(0);
    let arch = a.record()["archive"].clone();
    assert_eq!(arch["state"], "completed", "{}", a.stderr);
    assert_eq!(
        arch["freeze"], "frozen",
        "a mounted disk is frozen for its capture"
    );
    assert_eq!(arch["fs"], "ext4");
    assert!(arch["files"].as_u64().unwrap() > 300, "{arch}");
    assert_no_leftovers(&p, &["data-0"]);
    assert!(writable(&p.mnt("data-0"), 5), "thawed");

    // Restored onto a new disk of another filesystem type: the same tree.
    let args = p.restore_args(&repo, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = p
        .pipeline("node-0", "new-0", "512M", "xfs", &args)
        .expect(0);
    let restored = r.record();
    assert_eq!(restored["archive"]["state"], "restored", "{}", r.stderr);
    assert!(
        restored["archive"]["id"]
            .as_str()
            .unwrap()
            .starts_with(arch["id"].as_str().unwrap())
    );
    assert_eq!(restored["state"], "mounted");
    assert_same_tree(&p.mnt("data-0"), &p.mnt("new-0"));

    // A rerun on the disk it filled changes nothing.
    let again = p
        .run("disk-restore", &args, &ndjson(&[restored.clone()]), &[])
        .expect(0)
        .record();
    assert_eq!(again["changed"], false, "{again}");

    // An unchanged disk archived again adds next to nothing: its files are
    // not read again, only directory metadata is written anew (restic 0.14
    // keeps each file's device number, and the copy's loop device changes).
    let b = p.archive(&repo, &[], &input, &[]).expect(0).record();
    assert!(b["archive"]["added"].as_u64().unwrap() < 1 << 20, "{b}");
    let listed = p
        .archive(&repo, &["--list"], &input, &[])
        .expect(0)
        .records();
    assert_eq!(listed.len(), 2, "one record per archive");
    assert!(listed[0]["archive"]["time"].as_str() >= listed[1]["archive"]["time"].as_str());
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let p = Place::new("arch-bad");
    let rec = p.up("node-0", "data-0", "64M", "ext4");
    std::fs::write(p.mnt("data-0").join("kept"), b"data").unwrap();
    let repo = p.made_repo("repo");
    let input = ndjson(&[rec.clone()]);
    p.archive(&repo, &["--init"], &input, &[]).expect(0);
    let count = || sh_ok(&["find", &repo, "-type", "f"]).lines().count();
    let before = count();

    // No repository there (and no --init): nothing made.
    let none = p.t.s("no-repo");
    let r = p.archive(&none, &[], &input, &[]).expect(1).record();
    assert_eq!(r["error"]["code"], "no-repository", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("--init"));
    assert!(!Path::new(&none).exists());

    // A wrong password.
    let wrong = p.t.join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let mut args = p.repo_args(&repo);
    args[3] = wrong.display().to_string();
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = p
        .run("disk-archive", &args_ref, &input, &[])
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "repository-password", "{r}");

    // An unreachable bucket (nothing listens there).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = p
        .archive(
            &format!("s3:http://127.0.0.1:{port}/bucket"),
            &[],
            &input,
            &[("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")],
        )
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "unreachable", "{r}");

    // Another deployment's repository: neither archived into nor read.
    let mut other = rec.clone();
    other["deployment"] = "someone-else".into();
    let r = p
        .archive(&repo, &[], &ndjson(&[other.clone()]), &[])
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "other-deployment", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&p.deployment)
    );

    // An archive id that does not exist.
    let args = p.restore_args(&repo, &["--from", "0123abcd"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = p.run("disk-restore", &args, &input, &[]).expect(1).record();
    assert_eq!(r["error"]["code"], "no-such-archive", "{r}");

    // A restore onto a disk that is not blank (a filesystem that holds
    // data, mounted before): refused, nothing written.
    let args = p.restore_args(&repo, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = p.run("disk-restore", &args, &input, &[]).expect(1).record();
    assert_eq!(r["error"]["code"], "not-fresh", "{r}");
    let top: Vec<String> = std::fs::read_dir(p.mnt("data-0"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !top.iter().any(|n| n.starts_with(".appscale-persist")),
        "{top:?}"
    );
    assert_eq!(
        std::fs::read(p.mnt("data-0").join("kept")).unwrap(),
        b"data"
    );
    assert_eq!(count(), before, "the repository is as it was");
}

/// The environment of restic's S3 backend against moto, with a secret that
/// must never be seen.
const S3_SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";

fn s3_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "AKIAARCHIVETEST"),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// Runs disk-archive with `-vv` (every command it runs is logged) and
/// reads the process list while it runs: the arguments of every process
/// (disk-archive, restic) as `ps` shows them.
fn archive_watching_ps(
    p: &Place,
    repo: &str,
    args: &[&str],
    input: &str,
    env: &[(&str, &str)],
) -> (Run, String) {
    let mut a = p.repo_args(repo);
    a.push("-vv".into());
    a.extend(args.iter().map(|s| s.to_string()));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let child = spawn_tool(p, "disk-archive", &a, input, &env, Stdio::piped());
    let mut seen = String::new();
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| child.wait_with_output().unwrap());
        while !h.is_finished() {
            seen.push_str(&sh_ok(&["ps", "-eo", "args"]));
            std::thread::sleep(Duration::from_millis(20));
        }
        h.join().unwrap()
    });
    (finish(out), seen)
}

#[test]
fn s3_through_moto_and_no_secret_reaches_ps_records_or_logs() {
    let p = Place::new("arch-s3");
    let moto = Server::moto();
    let rec = p.up("node-0", "data-0", "64M", "ext4");
    std::fs::create_dir_all(p.mnt("data-0").join("apps")).unwrap();
    std::fs::write(p.mnt("data-0").join("apps/app.tar.gz"), vec![7u8; 3 << 20]).unwrap();
    let repo = format!("s3:{}/appscale-archives/prod", moto.url());
    let input = ndjson(&[rec.clone()]);
    let (a, ps) = archive_watching_ps(&p, &repo, &["--init"], &input, &s3_env());
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(ps.contains("restic -r"), "restic was seen running: {ps}");
    for secret in [PASSWORD, S3_SECRET] {
        assert!(!ps.contains(secret), "a secret in `ps`");
        assert!(!a.stdout.contains(secret), "a secret in a record");
        assert!(!a.stderr.contains(secret), "a secret on stderr");
    }
    assert!(
        a.stderr.contains("running restic"),
        "-vv logs the commands: {}",
        a.stderr
    );
    let arch = a.record()["archive"].clone();
    assert_eq!(arch["repository"], repo.as_str());

    // Restored from S3 onto a new disk.
    let args = p.restore_args(&repo, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = p
        .pipeline_env("node-0", "new-0", "64M", "ext4", &args, &s3_env())
        .expect(0);
    assert!(!out.stderr.contains(S3_SECRET) && !out.stdout.contains(S3_SECRET));
    assert_eq!(
        std::fs::read(p.mnt("new-0").join("apps/app.tar.gz")).unwrap(),
        vec![7u8; 3 << 20]
    );
}

#[test]
fn google_cloud_storage_natively_through_its_json_api() {
    let p = Place::new("arch-gcs");
    let work = p.t.join("gcs");
    let gcs = Server::python("gcs.py", &[work.to_str().unwrap()]);
    let proxy = format!("http://127.0.0.1:{}", gcs.port);
    let env = [
        ("HTTPS_PROXY", proxy.as_str()),
        ("NO_PROXY", ""),
        ("GOOGLE_PROJECT_ID", "proj"),
        ("GOOGLE_ACCESS_TOKEN", "ya29.fake-token-for-the-emulator"),
    ];
    let cacert = work.join("ca.pem").display().to_string();
    let rec = p.up("node-0", "data-0", "64M", "ext4");
    std::fs::write(p.mnt("data-0").join("zk.log"), vec![3u8; 1 << 20]).unwrap();
    let repo = "gs:appscale-archives:/prod";
    let input = ndjson(&[rec]);
    let a = p
        .archive(repo, &["--init", "--cacert", &cacert], &input, &env)
        .expect(0);
    assert_eq!(a.record()["archive"]["state"], "completed");
    assert!(!a.stderr.contains("fake-token"), "the token is a secret");
    let l = p
        .archive(repo, &["--list", "--cacert", &cacert], &input, &env)
        .expect(0)
        .records();
    assert_eq!(l.len(), 1);
    let args = p.restore_args(repo, &["--cacert", &cacert]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = p
        .pipeline_env("node-0", "new-0", "64M", "ext4", &args, &env)
        .expect(0);
    assert_eq!(r.record()["archive"]["state"], "restored");
    assert_eq!(
        std::fs::read(p.mnt("new-0").join("zk.log")).unwrap(),
        vec![3u8; 1 << 20]
    );
}

#[test]
fn retention_listing_verify_and_the_status_metrics() {
    let p = Place::new("arch-keep");
    let rec = p.up("node-0", "data-0", "64M", "ext4");
    let repo = p.made_repo("repo");
    let input = ndjson(&[rec.clone()]);
    let mut ids = Vec::new();
    for i in 0..3 {
        std::fs::write(
            p.mnt("data-0").join(format!("gen-{i}")),
            vec![i as u8; 100_000],
        )
        .unwrap();
        let a = p
            .archive(&repo, &["--init", "--keep", "2"], &input, &[])
            .expect(0)
            .record();
        ids.push(a["archive"]["id"].as_str().unwrap().to_string());
        if i == 2 {
            let pruned = a["archive"]["pruned"].as_array().unwrap();
            assert_eq!(pruned.len(), 1, "{a}");
            assert!(
                pruned[0].as_str().unwrap().starts_with(&ids[0]),
                "the oldest goes: {a}"
            );
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    let listed = p
        .archive(&repo, &["--list"], &input, &[])
        .expect(0)
        .records();
    let listed: Vec<&str> = listed
        .iter()
        .map(|r| r["archive"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(
        listed[0].starts_with(&ids[2]) && listed[1].starts_with(&ids[1]),
        "{listed:?}"
    );

    // The drill restores the newest into a scratch directory and compares.
    let drills = p.t.join("drills");
    let verify = || {
        let d = drills.to_str().unwrap();
        p.archive(
            &repo,
            &["--verify", "--read-data", "100%", "--drill-dir", d],
            &input,
            &[],
        )
    };
    let v = verify().expect(0).record();
    assert_eq!(v["archive"]["state"], "verified", "{v}");
    assert!(v["archive"]["verified"].is_string());
    assert_eq!(
        std::fs::read_dir(&drills).unwrap().count(),
        0,
        "the drill's directory is gone"
    );

    // disk-status reports the last archive and the last verified restore.
    let s = p.run("disk-status", &["--format", "prometheus"], &input, &[]);
    for metric in [
        "appscale_persist_disk_archive_last_timestamp_seconds{",
        "appscale_persist_disk_archive_last_size_bytes{",
        "appscale_persist_disk_archive_verified_timestamp_seconds{",
    ] {
        assert!(s.stdout.contains(metric), "{metric} in {}", s.stdout);
    }
    let j = p.run("disk-status", &["--format", "json"], &input, &[]);
    let st: Value = serde_json::from_str(j.stdout.lines().next().unwrap()).unwrap();
    assert!(
        st["status"]["archive"]["last_id"]
            .as_str()
            .unwrap()
            .starts_with(&ids[2][..8]),
        "{st}"
    );

    // A damaged repository fails the check, named.
    let data = Path::new(&repo).join("data");
    let pack = sh_ok(&["find", data.to_str().unwrap(), "-type", "f"]);
    let pack = pack.lines().next().unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(pack, bytes).unwrap();
    let v = verify().expect(1).record();
    assert_eq!(v["error"]["code"], "verify-failed", "{v}");
}

#[test]
fn a_set_is_one_moment_all_or_nothing_and_restores_by_its_manifest() {
    let p = Place::new("arch-set");
    let r0 = p.up("node-0", "data-0", "64M", "ext4");
    let r1 = p.up("node-1", "data-1", "64M", "ext4");
    std::fs::write(p.mnt("data-0").join("who"), b"zero").unwrap();
    std::fs::write(p.mnt("data-1").join("who"), b"one").unwrap();
    let repo = p.made_repo("repo");
    let input = ndjson(&[r0.clone(), r1.clone()]);
    p.archive(&repo, &["--init", "--list"], "", &[]);
    // One member cannot be captured: none is archived.
    let mut missing = r1.clone();
    missing["disk"] = "no-such-disk".into();
    missing["node"] = "node-2".into();
    let bad = p
        .archive(
            &repo,
            &["--init", "--set", "broken"],
            &ndjson(&[r0.clone(), missing]),
            &[],
        )
        .expect(1)
        .records();
    assert!(bad.iter().all(|r| r["error"].is_object()), "{bad:?}");
    assert!(
        bad[0]["error"]["message"].as_str().unwrap().contains("set"),
        "{}",
        bad[0]
    );
    let listed = p
        .archive(&repo, &["--list"], &ndjson(&[r0.clone()]), &[])
        .expect(0)
        .records();
    assert!(
        listed.iter().all(|r| r["archive"].is_null()),
        "nothing archived: {listed:?}"
    );
    // A failed member: the set is not sealed.
    let r = p
        .archive(&repo, &["--seal", "broken"], &ndjson(&bad), &[])
        .expect(2);
    assert!(r.stderr.contains("not sealed"), "{}", r.stderr);

    let set = p
        .archive(&repo, &["--set", "nightly", "--hold", "1"], &input, &[])
        .expect(0);
    let recs = set.records();
    assert_eq!(
        recs[0]["archive"]["time"], recs[1]["archive"]["time"],
        "one moment"
    );
    assert!(
        recs.iter()
            .all(|r| r["archive"]["freeze"] == "frozen" && r["archive"]["set"] == "nightly")
    );
    let sealed = p
        .archive(&repo, &["--seal", "nightly"], &set.stdout, &[])
        .expect(0);
    assert!(
        sealed.stderr.contains("sealed set nightly: 2 archives"),
        "{}",
        sealed.stderr
    );

    // Later archives do not change what the set restores.
    std::fs::write(p.mnt("data-0").join("who"), b"changed").unwrap();
    p.archive(&repo, &[], &ndjson(&[r0.clone()]), &[]).expect(0);
    let args = p.restore_args(&repo, &["--from", "set:nightly"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (node, want) in [("node-0", b"zero".as_slice()), ("node-1", b"one")] {
        let disk = format!("new-{node}");
        p.pipeline(node, &disk, "64M", "ext4", &args).expect(0);
        assert_eq!(std::fs::read(p.mnt(&disk).join("who")).unwrap(), want);
    }
    assert_no_leftovers(&p, &["data-0", "data-1"]);
}

/// A writer that, until stopped, at each step n: rewrites `big` in place
/// (4 MiB of the byte n % 256, one write), writes `cur` whole under a
/// temporary name and renames it into place, then appends n to `log`. At
/// any one moment, with l the log's last line: `cur` holds l or l+1, and
/// `big` holds cur's byte (or, before cur is renamed, the next one); every
/// file is one whole version and every line of the log is whole.
struct Storm {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Storm {
    fn start(dir: &Path) -> Storm {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, dir) = (stop.clone(), dir.to_path_buf());
        let handle = std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("log"))
                .unwrap();
            let big = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("big"))
                .unwrap();
            let mut n = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                big.write_all_at(&vec![(n % 256) as u8; 4 << 20], 0)
                    .unwrap();
                let body = format!("{n}\n").repeat(2000);
                std::fs::write(dir.join("cur.tmp"), &body).unwrap();
                std::fs::rename(dir.join("cur.tmp"), dir.join("cur")).unwrap();
                log.write_all(format!("{n}\n").as_bytes()).unwrap();
            }
            n
        });
        Storm {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// Checks the storm's invariant on a restored tree; returns the last n.
fn one_moment(dir: &Path) -> u64 {
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(
        log.is_empty() || log.ends_with('\n'),
        "a torn line at the log's end"
    );
    let lines: Vec<u64> = log
        .lines()
        .map(|l| l.parse().expect("a whole line"))
        .collect();
    for (i, n) in lines.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "the log is whole, in order");
    }
    let last = lines.last().copied().unwrap_or(0);
    let cur = std::fs::read_to_string(dir.join("cur")).unwrap();
    let c: u64 = cur.lines().next().unwrap().parse().unwrap();
    assert_eq!(
        cur,
        format!("{c}\n").repeat(2000),
        "cur is one whole version"
    );
    assert!(
        c == last || c == last + 1,
        "cur holds {c} while the log ends at {last}: not one moment"
    );
    let big = std::fs::read(dir.join("big")).unwrap();
    let b = big[0];
    assert!(big.iter().all(|&x| x == b), "big is torn: not one moment");
    assert!(
        u64::from(b) == c % 256 || (c == last && u64::from(b) == (c + 1) % 256),
        "big holds {b} while cur holds {c}: not one moment"
    );
    last
}

#[test]
fn an_archive_during_a_write_storm_is_one_moment() {
    let p = Place::new("arch-storm");
    let rec = p.up("node-0", "data-0", "128M", "ext4");
    let repo = p.made_repo("repo");
    let input = ndjson(&[rec]);
    let storm = Storm::start(&p.mnt("data-0"));
    std::thread::sleep(Duration::from_millis(500));
    let a = p.archive(&repo, &["--init"], &input, &[]).expect(0);
    std::thread::sleep(Duration::from_millis(300));
    let written = storm.stop();
    let args = p.restore_args(&repo, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    p.pipeline("node-0", "new-0", "128M", "ext4", &args)
        .expect(0);
    let at = one_moment(&p.mnt("new-0"));
    assert!(
        at > 10 && at < written,
        "the moment is mid-storm: {at} of {written}"
    );
    assert_eq!(a.record()["archive"]["freeze"], "frozen");
}

#[test]
fn kill_9_at_any_moment_of_an_archive_leaves_no_freeze_and_the_rerun_converges() {
    let p = Place::new("arch-kill");
    let rec = p.up("node-0", "data-0", "128M", "ext4");
    // Should a freeze be left (the test failing), writers are let go.
    let _thaw = ThawOnDrop(p.mnt("data-0"));
    std::fs::write(p.mnt("data-0").join("data"), vec![9u8; 20 << 20]).unwrap();
    // Made by `--init` (restic init), not `made_repo`: the sweep kills 300 ms
    // into a backup, which on a repository cheap to open may be over by then.
    let repo = p.t.s("repo");
    let input = ndjson(&[rec]);
    p.archive(&repo, &["--init"], &input, &[]).expect(0);
    let args = p.repo_args(&repo);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (marker, delay) in [
        // While frozen: the thaw sentinel thaws.
        ("froze ", 0),
        // While the copy is read-only mounted and restic reads it.
        ("backup --json --host", 300),
        // Between the archive and its description.
        ("appscale-persist-archive.json", 0),
    ] {
        let (said, killed) = killed_at(
            &p,
            "disk-archive",
            &args,
            &input,
            marker,
            Duration::from_millis(delay),
        );
        assert!(killed, "killed at {marker}: {said}");
        assert!(
            writable(&p.mnt("data-0"), 10),
            "no freeze left after a kill at {marker}: {said}"
        );
        let again = p.archive(&repo, &[], &input, &[]).expect(0);
        assert_eq!(
            again.record()["archive"]["state"],
            "completed",
            "{}",
            again.stderr
        );
        assert_no_leftovers(&p, &["data-0"]);
    }
    // The repository is whole, and every archive in it restores.
    p.archive(
        &repo,
        &[
            "--verify",
            "--read-data",
            "100%",
            "--drill-dir",
            &p.t.s("drills"),
        ],
        &input,
        &[],
    )
    .expect(0);
}

#[test]
fn kill_9_during_a_restore_leaves_no_half_filled_disk_taken_for_a_finished_one() {
    let p = Place::new("arch-kill-restore");
    let rec = p.up("node-0", "data-0", "256M", "ext4");
    make_tree(&p.mnt("data-0"));
    let repo = p.made_repo("repo");
    p.archive(&repo, &["--init"], &ndjson(&[rec]), &[])
        .expect(0);
    let target = serde_json::json!({"v": 1, "node": "node-0", "provider": "local", "disk": "new-0", "deployment": p.deployment});
    let mut out = p.run("disk-create", &["--size", "512M"], &ndjson(&[target]), &[]);
    out = p.run("disk-attach", &[], &out.stdout, &[]);
    let formatted = p
        .run("disk-ensure-fs", &[], &out.stdout, &[])
        .expect(0)
        .stdout;
    let args = p.restore_args(&repo, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mnt = p.t.s("mnt/new-0");
    let mount = ["--mountpoint", mnt.as_str(), "--no-fstab"];
    for delay in [0, 150, 600] {
        let (said, killed) = killed_at(
            &p,
            "disk-restore",
            &args,
            &formatted,
            " restore ",
            Duration::from_millis(delay),
        );
        if !killed {
            continue;
        }
        // What the kill left is never mounted as if it were whole. (The
        // first disk-mount after a kill may find the killed run's temporary
        // mount, which it takes down, and refuse: mounted-elsewhere.)
        let mut code = String::new();
        for _ in 0..2 {
            let m = p.run("disk-mount", &mount, &formatted, &[]);
            if m.code == 0 {
                let top: Vec<_> = std::fs::read_dir(&mnt)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                panic!(
                    "a disk whose fill was cut short was mounted (holding {top:?}); disk-restore said: {said}"
                );
            }
            code = m.record()["error"]["code"].as_str().unwrap().to_string();
            if code == "seed-marker" {
                break;
            }
            assert_eq!(code, "mounted-elsewhere", "{}", m.stderr);
        }
        assert_eq!(code, "seed-marker");
    }
    let r = p.run("disk-restore", &args, &formatted, &[]).expect(0);
    let m = p.run("disk-mount", &mount, &r.stdout, &[]).expect(0);
    assert_eq!(m.record()["state"], "mounted");
    assert_same_tree(&p.mnt("data-0"), &p.mnt("new-0"));
}

/// scripts/up, then scripts/archive as a set, scripts/down; then
/// scripts/restore-archive onto the disks of another AppScalefile (XFS):
/// each node's data back, on its own new disk.
#[test]
fn the_flows_move_a_local_deployment_onto_new_disks() {
    let p = Place::new("arch-flows");
    let file = |name: &str, disks: &str| {
        let f = p.t.join(name);
        std::fs::write(
            &f,
            format!("infrastructure: local\nkeyname: {}\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 2\n    disks: [{disks}]\n", p.deployment),
        )
        .unwrap();
        f
    };
    let old = file("AppScalefile", "data-0, data-1");
    let new = file("AppScalefile.new", "moved-0, moved-1");
    let env = p.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    flow("up", &p.t, &old, &["--size", "64M"], &env).expect(0);
    for n in 0..2 {
        std::fs::write(
            p.t.join(&format!("mnt/node-{n}/whose")),
            format!("node-{n}"),
        )
        .unwrap();
    }
    let repo = p.made_repo("repo");
    let mut args = p.repo_args(&repo);
    args.extend(
        [
            "--init",
            "--set",
            "weekly",
            old.to_str().unwrap(),
            "--",
            "--deployment",
            &p.deployment,
        ]
        .map(String::from),
    );
    let script = repo_path("archive");
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = bin_dir().display().to_string();
    let mut env2 = env.clone();
    env2.push(("APPSCALE_PERSIST_BIN", bin.as_str()));
    let r = run_env(&script, &a, "", &env2).expect(0);
    assert_eq!(r.records().len(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("sealed set weekly"), "{}", r.stderr);
    assert!(r.stderr.contains("NODE"), "a summary: {}", r.stderr);
    flow("down", &p.t, &old, &[], &env).expect(0);

    let restore = repo_path("restore-archive");
    a = vec![];
    let mnt = p.t.s("mnt/{node}");
    let fstab = p.t.s("fstab");
    let mut args = p.repo_args(&repo);
    args.extend(
        [
            "--deployment",
            &p.deployment,
            "--from",
            "set:weekly",
            "--fstype",
            "xfs",
            "--mountpoint",
            &mnt,
            "--fstab",
            &fstab,
            new.to_str().unwrap(),
            "--",
            "--size",
            "512M",
        ]
        .map(String::from),
    );
    a.extend(args.iter().map(String::as_str));
    let r = run_env(&restore, &a, "", &env2).expect(0);
    let recs = r.records();
    assert!(
        recs.iter()
            .all(|r| r["archive"]["state"] == "restored" && r["state"] == "mounted"),
        "{}",
        r.stdout
    );
    for n in 0..2 {
        assert_eq!(
            std::fs::read_to_string(p.t.join(&format!("mnt/node-{n}/whose"))).unwrap(),
            format!("node-{n}")
        );
    }
    // Run again: nothing to do.
    let again = run_env(&restore, &a, "", &env2).expect(0);
    assert!(
        again.records().iter().all(|r| r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["changed"] == false)),
        "{}",
        again.stdout
    );
    flow("down", &p.t, &new, &[], &env).expect(0);
}

fn repo_path(script: &str) -> String {
    repo().join("scripts").join(script).display().to_string()
}

/// The node half links no cloud SDK: a cloud disk's scratch copy is
/// disk-scratch's work, run as a subprocess.
#[test]
fn the_node_tools_of_archives_link_no_cloud_sdk() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for tool in ["disk-archive", "disk-restore"] {
        let out = Command::new(&cargo)
            .args(["tree", "--offline", "-e", "normal", "-p", tool])
            .current_dir(repo())
            .output()
            .unwrap();
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(tree.contains("appscale-persist"), "{tree}");
        for sdk in ["aws-sdk", "aws-config", "google-cloud"] {
            assert!(!tree.contains(sdk), "{tool} links {sdk}");
        }
    }
}

/// A restic killed with SIGKILL while it holds the repository's lock (an
/// OOM kill, a run killed before restic could let go) leaves the lock
/// behind; the next run is not kept waiting for it (`--lock-wait`, 10
/// minutes by default, then `repository-locked`): a lock restic judges
/// stale (its process gone on this host) is removed first (`restic
/// unlock`), and the run goes on; a live holder's lock is only waited for.
/// Before, the kill -9 sweep's rerun could wait out the whole `--lock-wait`.
#[test]
fn a_lock_left_by_a_killed_restic_is_removed_not_waited_out() {
    let p = Place::new("arch-stale-lock");
    let rec = p.up("node-0", "data-0", "64M", "ext4");
    std::fs::write(p.mnt("data-0").join("a"), "A").unwrap();
    let repo = p.made_repo("repo");
    let input = ndjson(&[rec]);
    p.archive(&repo, &["--init"], &input, &[]).expect(0);
    // `restic backup --stdin` takes the lock and waits for its input.
    let mut held = Command::new("restic")
        .args(["-r", &repo, "--password-file", &p.t.s("password")])
        .args(["backup", "--stdin", "--stdin-filename", "held"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let locks = std::path::Path::new(&repo).join("locks");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&locks).map_or(0, |d| d.count()) == 0 {
        assert!(std::time::Instant::now() < deadline, "restic took no lock");
        std::thread::sleep(Duration::from_millis(100));
    }
    let drills = p.t.s("drills");
    // Two runs at once: a live holder's lock is never removed, only waited
    // for (here 2 s, then `repository-locked`).
    let r = p
        .archive(
            &repo,
            &["--verify", "--lock-wait", "2", "--drill-dir", &drills],
            &input,
            &[],
        )
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "repository-locked", "{r}");
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 1, "kept");
    held.kill().unwrap();
    held.wait().unwrap();
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 1, "left behind");
    let v = p
        .archive(
            &repo,
            &["--verify", "--lock-wait", "5", "--drill-dir", &drills],
            &input,
            &[],
        )
        .expect(0)
        .record();
    assert_eq!(v["archive"]["state"], "verified", "{v}");
}
