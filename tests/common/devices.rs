//! What the tests make on the machine: temporary directories, loop devices,
//! mounts and freezes, each undone on drop (a failing test still unmounts,
//! detaches and deletes what it made).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Writes an image of `mib` MiB whose first MiB holds bytes no probe
/// recognises: data, but of no known kind.
pub fn junk_image(path: &Path, mib: u64) {
    let mut junk = vec![0x5Au8; 1 << 20];
    junk.resize((mib << 20) as usize, 0);
    std::fs::write(path, &junk).unwrap();
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory, removed on drop after unmounting anything left
/// mounted inside it.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "appscale-persist-test-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    pub fn s(&self, p: &str) -> String {
        self.join(p).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Loops first, while their backing files' paths still show under
        // the directory (a filesystem lazily unmounted shows them from its
        // own root): a busy one is set to go once its user lets go.
        detach_loops_under(&self.path);
        unmount_under(&self.path);
        detach_loops_under(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Unmounts everything mounted at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut targets: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|t| t.replace("\\040", " "))
        .filter(|t| Path::new(t).starts_with(dir))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        // A test that failed while a filesystem was frozen (a kill sweep)
        // must not leave it frozen with no mountpoint left to thaw it
        // through: thaw first (an error when it is not frozen, ignored).
        let _ = Command::new("fsfreeze")
            .arg("--unfreeze")
            .arg(&t)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&t)
            .stderr(Stdio::null())
            .status();
    }
}

/// Detaches every loop device backed by a file below `dir`.
pub fn detach_loops_under(dir: &Path) {
    let Ok(out) = Command::new("losetup")
        .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        if let (Some(name), Some(back)) = (f.next(), f.next())
            && Path::new(back).starts_with(dir)
        {
            let _ = Command::new("losetup")
                .arg("--detach")
                .arg(name)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A sparse image on a loop device; detached and deleted on drop (after
/// unmounting anything mounted from it).
pub struct LoopDev {
    pub image: PathBuf,
    pub device: String,
}

impl LoopDev {
    /// A blank (all zeros) device of `size_mib`.
    pub fn new(dir: &TempDir, name: &str, size_mib: u64) -> LoopDev {
        let image = dir.join(&format!("{name}.img"));
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(size_mib << 20).unwrap();
        drop(f);
        let device = sh_ok(&["losetup", "--find", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        LoopDev { image, device }
    }

    /// The [`digest`] of the device's bytes (of its backing file, once the
    /// device's buffers are flushed to it).
    pub fn digest(&self) -> String {
        sync_device(&self.device);
        digest(&self.image)
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // The loop device may have been detached by the test and reused by
        // another one since: touch it only while it is still backed by our
        // image.
        let name = self.device.trim_start_matches("/dev/");
        let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
            .unwrap_or_default();
        let ours = std::fs::canonicalize(&self.image)
            .is_ok_and(|img| Path::new(backing.trim_end()) == img);
        if ours {
            let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            for l in text.lines() {
                let f: Vec<&str> = l.split(' ').collect();
                if let Some(i) = f.iter().position(|x| *x == "-")
                    && f.get(i + 2) == Some(&self.device.as_str())
                {
                    let _ = Command::new("umount")
                        .arg("--lazy")
                        .arg(f[4].replace("\\040", " "))
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = Command::new("losetup")
                .arg("--detach")
                .arg(&self.device)
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Flushes a block device's buffers so its backing file shows every write.
pub fn sync_device(device: &str) {
    let _ = Command::new("blockdev")
        .args(["--flushbufs", device])
        .status();
}

/// A digest of a file's bytes: equal for two files exactly when they hold
/// the same bytes (a hole reads as zeros, so where a file is sparse does
/// not matter). It is the SHA-256 (coreutils' sha256sum) of the file's
/// length and of its 4 KiB blocks that are not all zeros, each with its
/// offset: the test images are mostly holes and zeros, and hashing every
/// byte of them was a minute of CPU a run (docs/bench.md).
pub fn digest(path: &Path) -> String {
    use nix::unistd::{Whence, lseek};
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 4096;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let len = file.metadata().unwrap().len();
    let mut sum = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    let mut to_sum = std::io::BufWriter::new(sum.stdin.take().unwrap());
    writeln!(to_sum, "length {len}").unwrap();
    let mut buf = vec![0u8; 256 * BLOCK];
    let b = BLOCK as u64;
    // Block by block from `at` (always a block boundary), reading only the
    // data ranges, widened to whole blocks: a hole reads as zeros.
    let mut at = 0u64;
    while at < len {
        let start = match lseek(&file, at as i64, Whence::SeekData) {
            Ok(o) => o as u64 / b * b,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => panic!("{}: SEEK_DATA: {e}", path.display()),
        };
        let end = lseek(&file, start as i64, Whence::SeekHole).unwrap() as u64;
        let end = (end.div_ceil(b) * b).min(len);
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                if block != &ZEROS[..block.len()] {
                    writeln!(to_sum, "block at {}", pos as usize + i * BLOCK).unwrap();
                    to_sum.write_all(block).unwrap();
                }
            }
            pos += n as u64;
        }
        at = end.div_ceil(b) * b;
    }
    drop(to_sum);
    let out = sum.wait_with_output().unwrap();
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Whether `dir` is a mountpoint right now.
pub fn is_mounted(dir: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().any(|l| {
        l.split(' ').nth(4).map(|t| t.replace("\\040", " ")) == Some(dir.display().to_string())
    })
}

/// Thaws the filesystem at a mountpoint on drop (`fsfreeze -u`), so a test
/// that fails while a tool left it frozen does not hang the machine's
/// writers; declare it after the [`TempDir`] holding the mountpoint, so it
/// runs before the unmount.
pub struct ThawOnDrop(pub PathBuf);

impl Drop for ThawOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether a write (and its flush) to a new file in `dir` finishes within
/// `secs`: false while the filesystem is frozen. A writer blocked on a
/// frozen filesystem cannot be killed (it sleeps uninterruptibly), so it
/// runs on a thread of its own, left to finish once the filesystem thaws
/// ([`ThawOnDrop`]).
pub fn accepts_writes(dir: &Path, secs: u64) -> bool {
    let file = dir.join("written-after");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ok = Command::new("sh")
            .args(["-c", "echo after > \"$1\" && sync -f \"$1\"", "sh"])
            .arg(&file)
            .status()
            .is_ok_and(|s| s.success());
        let _ = tx.send(ok);
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or(false)
}

/// A path in the temporary directory shared by every test run on this
/// machine, `appscale-persist-{tag}-{hash of key}{ext}`: the same for the
/// same key, so that what one test makes there (a server's socket, a
/// template) serves the tests after it.
pub fn machine_temp(tag: &str, key: impl std::hash::Hash, ext: &str) -> PathBuf {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    std::env::temp_dir().join(format!("appscale-persist-{tag}-{:016x}{ext}", h.finish()))
}

/// Makes `at` a local restic repository with one key, for `password`: what
/// `restic init` makes, copied from one made once per restic version and
/// password, whose key tests/servers/restic_cheap_key.py made cheap to open.
/// `restic init` costs some 1.7 CPU-seconds (it times its key derivation
/// on the machine) and every command on its repository another 0.3 to 0.5 (that
/// derivation again); the archive tests run restic some 300 times. Use it
/// where the repository is not the subject: a test of `--init` keeps
/// `restic init`'s own.
pub fn restic_repo(at: &Path, password: &str) {
    let version = sh_ok(&["restic", "version"]);
    let template = machine_temp("restic-repo", (version.trim(), password), "");
    if !template.join("config").exists() {
        // Made aside and renamed into place: two tests making it at once
        // each make one, and the first rename wins.
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let new = template.with_extension(format!("new-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&new);
        let pw = format!("RESTIC_PASSWORD={password}");
        sh_ok(&[
            "env",
            &pw,
            "restic",
            "init",
            "--quiet",
            "--repo",
            new.to_str().unwrap(),
        ]);
        cheapen_restic_key(&new, password);
        if std::fs::rename(&new, &template).is_err() {
            let _ = std::fs::remove_dir_all(&new);
        }
    }
    sh_ok(&["cp", "-a", template.to_str().unwrap(), at.to_str().unwrap()]);
}

/// Gives the local restic repository at `repo`, made by `restic init` with
/// one key for `password`, a key as cheap to open as [`restic_repo`]'s
/// (tests/servers/restic_cheap_key.py): for a test that had a tool make its
/// repository and then runs restic on it many more times.
pub fn cheapen_restic_key(repo_dir: &Path, password: &str) {
    sh_ok(&[
        venv().join("bin/python").to_str().unwrap(),
        repo()
            .join("tests/servers/restic_cheap_key.py")
            .to_str()
            .unwrap(),
        repo_dir.to_str().unwrap(),
        password,
    ]);
}
