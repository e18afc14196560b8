//! Shared by the archive tests: a tree holding every kind of file a disk
//! holds (many files, a large sparse file, names with spaces and bytes not
//! UTF-8, hard links, extended attributes, permissions, owners, symlinks,
//! a FIFO, times to the nanosecond), its fingerprint (content and metadata,
//! path by path), a local disk up and mounted, and the repository options.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::{Value, json};

/// The repository password the tests use (never to be seen in a record,
/// a log line or `ps`).
pub const PASSWORD: &str = "correct-horse-battery-staple-5e1f";

/// Apparent size of the tree's sparse file.
pub const SPARSE_SIZE: u64 = 96 << 20;

/// Sets an extended attribute (no `setfattr` needed).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        nix::libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The `user.` extended attributes of `path`, sorted.
pub fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: a valid C string and a buffer of the given length.
    let n = unsafe { nix::libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let name_s = String::from_utf8_lossy(name).into_owned();
        if !name_s.starts_with("user.") {
            continue;
        }
        let cname = CString::new(name).unwrap();
        let mut val = vec![0u8; 4096];
        // SAFETY: as above.
        let m = unsafe {
            nix::libc::lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        val.truncate(m.max(0) as usize);
        out.push((name_s, val));
    }
    out.sort();
    out
}

/// Sets a file's modification time to the nanosecond (symlinks too).
pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsec);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Fills `root` with every kind of file a disk holds.
pub fn make_tree(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    };
    // Many files, of many sizes.
    for i in 0..300u32 {
        let data: Vec<u8> = (0..(i * 37 % 5000)).map(|j| (i * 7 + j) as u8).collect();
        w(&format!("cassandra/data/sstable-{i:04}.db"), &data);
    }
    w("zookeeper/version-2/log.1", &vec![0x42; 200_000]);
    w("apps/guestbook/app.yaml", b"runtime: python27\n");
    // Names with spaces and bytes that are not UTF-8.
    w("apps/with space/file one.txt", b"one");
    let bad = root.join(OsStr::from_bytes(b"apps/bad\xffname\xfe"));
    std::fs::write(&bad, b"not utf-8").unwrap();
    // Hard links: three names, one file.
    let h = w("apps/linked", b"shared by three names");
    std::fs::hard_link(&h, root.join("apps/with space/linked too")).unwrap();
    std::fs::hard_link(&h, root.join("zookeeper/linked three")).unwrap();
    // Extended attributes.
    set_xattr(&h, "user.appscale", b"kept");
    set_xattr(&root.join("apps"), "user.dir", b"on a directory");
    // Permissions and owners.
    let suid = w("apps/tool", b"#!/bin/sh\n");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4751)).unwrap();
    std::os::unix::fs::chown(&suid, Some(1234), Some(5678)).unwrap();
    let sticky = root.join("tmp");
    std::fs::create_dir_all(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let private = root.join("cassandra/private");
    std::fs::create_dir_all(&private).unwrap();
    std::os::unix::fs::chown(&private, Some(999), Some(998)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Symlinks (one dangling), a FIFO, an empty file and directory.
    std::os::unix::fs::symlink("../apps/with space/file one.txt", root.join("tmp/to one")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at all", root.join("tmp/dangling")).unwrap();
    nix::unistd::mkfifo(
        &root.join("tmp/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    w("empty", b"");
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    // A large sparse file: a little data, many holes.
    let f = std::fs::File::create(root.join("cassandra/commitlog.sparse")).unwrap();
    f.set_len(SPARSE_SIZE).unwrap();
    for at in [0u64, 5 << 20, 40 << 20, SPARSE_SIZE - 4096] {
        std::os::unix::fs::FileExt::write_at(&f, &[0xAB; 4096], at).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    // Times to the nanosecond, set last (writing into a directory moves
    // its time).
    set_mtime(&root.join("apps/tool"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("tmp/to one"), 1_500_000_000, 1);
    set_mtime(&root.join("empty dir"), 1_400_000_000, 999_999_999);
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::chown(root, Some(4321), Some(4321)).unwrap();
}

/// What a tree holds, path by path (from its root, as bytes): content and
/// metadata; hard links as groups of paths. `lost+found` (the
/// filesystem's own) is left out.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub entries: BTreeMap<Vec<u8>, String>,
    pub links: BTreeSet<Vec<Vec<u8>>>,
    /// Bytes allocated to the sparse file.
    pub sparse_allocated: u64,
}

/// The [`Fingerprint`] of the tree at `root`.
pub fn fingerprint(root: &Path) -> Fingerprint {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut sparse_allocated = 0;
    let root_meta = std::fs::symlink_metadata(root).unwrap();
    entries.insert(
        b"/".to_vec(),
        format!(
            "root mode={:o} owner={}:{}",
            root_meta.mode() & 0o7777,
            root_meta.uid(),
            root_meta.gid()
        ),
    );
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let rel_path = rel.join(e.file_name());
            if rel_path == Path::new("lost+found") {
                continue;
            }
            let path = root.join(&rel_path);
            let m = std::fs::symlink_metadata(&path).unwrap();
            let key = rel_path.as_os_str().as_bytes().to_vec();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                todo.push(rel_path.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!(
                    "symlink -> {:?}",
                    std::fs::read_link(&path).unwrap().as_os_str()
                )
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    inodes.entry(m.ino()).or_default().push(key.clone());
                }
                if rel_path.ends_with("commitlog.sparse") {
                    sparse_allocated = m.blocks() * 512;
                }
                let data = std::fs::read(&path).unwrap();
                format!(
                    "file size={} hash={:016x}",
                    data.len(),
                    appscale_persist::hash::fnv1a64(0, &data)
                )
            } else {
                format!("special {:?}", ft)
            };
            let mtime = if ft.is_dir() {
                // A directory's time moves with its entries; compared
                // for the ones set on purpose.
                if rel_path == Path::new("empty dir") {
                    format!("{}.{:09}", m.mtime(), m.mtime_nsec())
                } else {
                    "-".into()
                }
            } else {
                format!("{}.{:09}", m.mtime(), m.mtime_nsec())
            };
            entries.insert(
                key,
                format!(
                    "{what} mode={:o} owner={}:{} mtime={mtime} xattrs={:?}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    xattrs(&path)
                ),
            );
        }
    }
    let links = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Fingerprint {
        entries,
        links,
        sparse_allocated,
    }
}

/// Asserts two trees hold the same, byte for byte and metadata for
/// metadata, and that the sparse file stayed sparse.
pub fn assert_same_tree(from: &Path, to: &Path) {
    let a = fingerprint(from);
    let b = fingerprint(to);
    for (k, v) in &a.entries {
        assert_eq!(
            b.entries.get(k),
            Some(v),
            "{} differs",
            String::from_utf8_lossy(k)
        );
    }
    for k in b.entries.keys() {
        assert!(
            a.entries.contains_key(k),
            "{} restored, but not in the source",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(a.links, b.links, "hard links");
    assert!(a.entries.len() > 300, "the tree is the whole tree");
    assert!(
        b.sparse_allocated <= a.sparse_allocated + (1 << 20),
        "the sparse file stays sparse: {} bytes allocated, {} in the source",
        b.sparse_allocated,
        a.sparse_allocated
    );
}

/// A scratch place for one test: disks, ledger, restic cache, password.
pub struct Place {
    pub t: TempDir,
    /// The deployment its records name (the test's own: its disks' keys,
    /// locks and views are apart from the other tests').
    pub deployment: String,
}

impl Place {
    pub fn new(tag: &str) -> Place {
        require_root();
        let t = TempDir::new(tag);
        let pw = t.join("password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        Place {
            t,
            deployment: tag.to_string(),
        }
    }

    /// The environment every tool gets.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("APPSCALE_PERSIST_STATE_DIR".into(), self.t.s("disks")),
            ("APPSCALE_PERSIST_ARCHIVE_LEDGER".into(), self.t.s("ledger")),
            ("APPSCALE_PERSIST_ARCHIVE_CACHE".into(), self.t.s("cache")),
        ]
    }

    /// A local restic repository `name` in this place, made beforehand (as
    /// an earlier `--init` would have) and cheap to open
    /// ([`restic_repo`]): for the tests whose subject is not its making.
    pub fn made_repo(&self, name: &str) -> String {
        restic_repo(&self.t.join(name), PASSWORD);
        self.t.s(name)
    }

    /// The repository options for `repo`.
    pub fn repo_args(&self, repo: &str) -> Vec<String> {
        vec![
            "--repo".into(),
            repo.into(),
            "--password-file".into(),
            self.t.s("password"),
        ]
    }

    /// Runs a tool with this place's environment and `extra`.
    pub fn run(&self, tool: &str, args: &[&str], input: &str, extra: &[(&str, &str)]) -> Run {
        let env = self.env();
        let mut e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        e.extend_from_slice(extra);
        run_env(tool, args, input, &e)
    }

    /// disk-archive into `repo` with `args`.
    pub fn archive(&self, repo: &str, args: &[&str], input: &str, extra: &[(&str, &str)]) -> Run {
        let mut a: Vec<String> = self.repo_args(repo);
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.run("disk-archive", &a, input, extra)
    }

    /// A local disk `disk` of node `node`, created, attached, formatted
    /// `fstype` and mounted at `<t>/mnt/<disk>` (no fstab); its record.
    pub fn up(&self, node: &str, disk: &str, size: &str, fstype: &str) -> Value {
        let r = self.pipeline(node, disk, size, fstype, &[]);
        r.expect(0).record()
    }

    /// `disk-create | disk-attach | disk-ensure-fs | [disk-restore] |
    /// disk-mount` for a local disk, with `restore` as disk-restore's
    /// arguments when given.
    pub fn pipeline(
        &self,
        node: &str,
        disk: &str,
        size: &str,
        fstype: &str,
        restore: &[&str],
    ) -> Run {
        self.pipeline_env(node, disk, size, fstype, restore, &[])
    }

    /// `disk-create | disk-attach | disk-ensure-fs` for a new local disk:
    /// the records (a new filesystem, fresh).
    pub fn fresh(&self, node: &str, disk: &str, size: &str, fstype: &str) -> String {
        let rec = json!({"v": 1, "node": node, "provider": "local", "disk": disk, "deployment": self.deployment});
        let mut out = self.run("disk-create", &["--size", size], &ndjson(&[rec]), &[]);
        out = self.run("disk-attach", &[], &out.stdout, &[]);
        self.run("disk-ensure-fs", &["--fstype", fstype], &out.stdout, &[])
            .expect(0)
            .stdout
    }

    /// [`Place::pipeline`], disk-restore run with `env` too.
    pub fn pipeline_env(
        &self,
        node: &str,
        disk: &str,
        size: &str,
        fstype: &str,
        restore: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        let mut out = Run {
            code: 0,
            stdout: self.fresh(node, disk, size, fstype),
            stderr: String::new(),
        };
        if !restore.is_empty() {
            out = self.run("disk-restore", restore, &out.stdout, env);
            if out.code != 0 {
                return out;
            }
        }
        let mnt = self.t.s(&format!("mnt/{disk}"));
        self.run(
            "disk-mount",
            &["--mountpoint", &mnt, "--no-fstab"],
            &out.stdout,
            &[],
        )
    }

    /// The mountpoint of a disk `up` mounted.
    pub fn mnt(&self, disk: &str) -> PathBuf {
        self.t.join(&format!("mnt/{disk}"))
    }

    /// disk-restore's arguments for `repo`, then `more`.
    pub fn restore_args(&self, repo: &str, more: &[&str]) -> Vec<String> {
        let mut a = self.repo_args(repo);
        a.extend(more.iter().map(|s| s.to_string()));
        a
    }
}

/// Nothing an archive run made is left of `disks`: no scratch image, no
/// loop device on one, no view mounted, no freeze marker.
pub fn assert_no_leftovers(p: &Place, disks: &[&str]) {
    let scratch = p.t.join("disks/archive-scratch");
    let left: Vec<String> = std::fs::read_dir(&scratch)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch copies left: {left:?}");
    let loops = sh_ok(&["losetup", "--list", "--noheadings", "--output", "BACK-FILE"]);
    assert!(
        !loops.contains(scratch.to_str().unwrap()),
        "a loop device on a scratch copy: {loops}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for d in disks {
        let key = appscale_persist::archive::ledger::key(
            &p.deployment,
            appscale_persist::record::ProviderKind::Local,
            d,
        );
        let view = format!("/run/appscale-persist/archive/{key}");
        assert!(
            !mounts.contains(&format!(" {view} ")),
            "{view} still mounted"
        );
        assert!(
            !Path::new(&format!("{view}.frozen")).exists(),
            "a freeze marker left for {d}"
        );
    }
}

/// Whether the filesystem at `dir` takes a write within `secs` (false
/// while it is frozen).
pub fn writable(dir: &Path, secs: u64) -> bool {
    let ok = accepts_writes(dir, secs);
    if ok {
        let _ = std::fs::remove_file(dir.join("written-after"));
    }
    ok
}

/// Runs `tool` (with `-v`) on `input` with this place's environment, and
/// once a stderr line contains `marker`, waits `delay` and SIGKILLs it;
/// returns its stderr (the tool's run until killed), and whether it was
/// killed (false: it ended before).
pub fn killed_at(
    p: &Place,
    tool: &str,
    args: &[&str],
    input: &str,
    marker: &str,
    delay: Duration,
) -> (String, bool) {
    killed_after(p, tool, args, input, marker, delay, &[])
}

/// [`killed_at`], at once, with `extra` in the environment.
pub fn killed_at_env(
    p: &Place,
    tool: &str,
    args: &[&str],
    input: &str,
    marker: &str,
    extra: &[(String, String)],
) -> (String, bool) {
    killed_after(p, tool, args, input, marker, Duration::ZERO, extra)
}

/// Starts `tool` with `args` in `p`'s environment and `extra`, `input` on
/// its stdin (then closed), stdout to `stdout` and stderr piped.
pub fn spawn_tool(
    p: &Place,
    tool: &str,
    args: &[String],
    input: &str,
    extra: &[(String, String)],
    stdout: std::process::Stdio,
) -> std::process::Child {
    let mut cmd = std::process::Command::new(bin(tool));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(stdout)
        .stderr(std::process::Stdio::piped());
    for (k, v) in p.env().into_iter().chain(extra.iter().cloned()) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
    drop(stdin);
    child
}

fn killed_after(
    p: &Place,
    tool: &str,
    args: &[&str],
    input: &str,
    marker: &str,
    delay: Duration,
    extra: &[(String, String)],
) -> (String, bool) {
    use std::io::BufRead;
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.insert(0, "-v".into());
    let mut child = spawn_tool(p, tool, &args, input, extra, std::process::Stdio::null());
    let mut seen = String::new();
    let mut killed = false;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            std::thread::sleep(delay);
            killed = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    (seen, killed)
}

use std::time::Duration;
