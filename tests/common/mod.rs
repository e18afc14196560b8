//! Shared test harness: find the built tools, run them, make loop devices,
//! temporary directories and servers that clean up after themselves.
//!
//! Everything here cleans up on drop, so a failing test (a panic) still
//! unmounts, detaches and deletes what it made.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

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

/// Every tool, in pipeline order.
#[allow(unused_imports)]
pub use appscale_persist::TOOLS;

/// Writes an image of `mib` MiB whose first MiB holds bytes no probe
/// recognises: data, but of no known kind.
pub fn junk_image(path: &Path, mib: u64) {
    let mut junk = vec![0x5Au8; 1 << 20];
    junk.resize((mib << 20) as usize, 0);
    std::fs::write(path, &junk).unwrap();
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

    /// Re-reads the backing file after its bytes were changed underneath.
    pub fn sha256(&self) -> String {
        sync_device(&self.device);
        sha256(&self.image)
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

/// SHA-256 of a file (coreutils' sha256sum).
pub fn sha256(path: &Path) -> String {
    sh_ok(&["sha256sum", path.to_str().unwrap()])
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

/// The Python virtual environment scripts/setup made (moto, ansible-core).
pub fn venv() -> PathBuf {
    let v = std::env::var_os("APPSCALE_PERSIST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"));
    assert!(
        v.join("bin/python").exists(),
        "{} has no Python: run `scripts/setup test` (scripts/test does)",
        v.display()
    );
    v
}

/// A test server on 127.0.0.1, killed on drop.
pub struct Server {
    child: std::process::Child,
    pub port: u16,
    /// Where the server may write (moto's request recording), removed after it.
    _scratch: Option<TempDir>,
}

impl Server {
    /// One of tests/servers/*.py, which prints its port on its first line.
    pub fn python(script: &str, args: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = Command::new(venv().join("bin/python"))
            .arg(repo().join("tests/servers").join(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {script}: {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{script} did not print its port (got {line:?})"));
        Server {
            child,
            port,
            _scratch: None,
        }
    }

    /// moto's EC2 emulator (moto_server from PyPI), warmed up.
    pub fn moto() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // moto writes its request recording to a file in its working
        // directory unless told where: keep it out of the repository.
        let scratch = TempDir::new("moto");
        let child = Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(&scratch.path)
            .env("MOTO_RECORDER_FILEPATH", scratch.join("recording"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let server = Server {
            child,
            port,
            _scratch: Some(scratch),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not listen on {port} within 30s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The first EC2 call loads moto's EC2 backend (seconds): do it now.
        server.ec2_admin(&["named", "warm-up"]);
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs tests/servers/ec2_admin.py against this server; returns its JSON.
    pub fn ec2_admin(&self, args: &[&str]) -> Value {
        let out = Command::new(venv().join("bin/python"))
            .arg(repo().join("tests/servers/ec2_admin.py"))
            .arg(self.url())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ec2_admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request to a local server; returns (status, body).
pub fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    use std::io::Read;
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
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

/// The environment of an AWS tool run against moto: test credentials, a
/// region, and no shared config files of the machine's.
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ]
}

/// An EC2 to run the AWS tools against: moto on 127.0.0.1, alone or behind
/// tests/servers/ec2_proxy.py (which answers as EC2 does where moto is
/// lenient, with `--euca` binds parameters as Eucalyptus 4.4 does, and
/// injects what its control rules say); killed on drop. Each tool runs
/// through one method, with the endpoint and the environment an AWS tool
/// needs ([`aws_env`]), as [`Gce::tool`] does for Compute Engine.
pub struct Ec2 {
    pub moto: Server,
    /// The proxy, when there is one ([`Ec2::proxied`]).
    pub proxy: Option<Server>,
    /// Options every run gets after `--endpoint-url` (`--deployment snaps`).
    args: Vec<String>,
}

impl Ec2 {
    /// A fresh moto, called directly.
    pub fn moto() -> Ec2 {
        Ec2 {
            moto: Server::moto(),
            proxy: None,
            args: Vec::new(),
        }
    }

    /// A fresh moto, and the proxy in front of it with `args` (`--euca`).
    pub fn proxied(args: &[&str]) -> Ec2 {
        let moto = Server::moto();
        let upstream = moto.url();
        let mut a = vec![upstream.as_str()];
        a.extend_from_slice(args);
        let proxy = Server::python("ec2_proxy.py", &a);
        Ec2 {
            moto,
            proxy: Some(proxy),
            args: Vec::new(),
        }
    }

    /// The same EC2, every tool run given `args` too (after the endpoint).
    pub fn with_args(mut self, args: &[&str]) -> Ec2 {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Where the tools call: the proxy when there is one, else moto.
    pub fn url(&self) -> String {
        self.proxy.as_ref().unwrap_or(&self.moto).url()
    }

    /// Runs AWS tool `name` with `args` and stdin `input`, against
    /// [`Ec2::url`], with [`aws_env`] and `env` besides.
    pub fn tool_env(&self, name: &str, args: &[&str], input: &str, env: &[(&str, &str)]) -> Run {
        let url = self.url();
        let mut a = vec!["--endpoint-url", url.as_str()];
        a.extend(self.args.iter().map(String::as_str));
        a.extend_from_slice(args);
        let mut e = aws_env();
        e.extend_from_slice(env);
        run_env(name, &a, input, &e)
    }

    /// Runs AWS tool `name` with `args` and stdin `input`.
    pub fn tool(&self, name: &str, args: &[&str], input: &str) -> Run {
        self.tool_env(name, args, input, &[])
    }

    /// `disk-create` of `input`.
    pub fn create(&self, args: &[&str], input: &(impl Stdin + ?Sized)) -> Run {
        self.tool("disk-create", args, &input.ndjson())
    }

    /// `disk-attach` of `input`.
    pub fn attach(&self, args: &[&str], input: &(impl Stdin + ?Sized)) -> Run {
        self.tool("disk-attach", args, &input.ndjson())
    }

    /// `disk-detach` of `input`.
    pub fn detach(&self, args: &[&str], input: &(impl Stdin + ?Sized)) -> Run {
        self.tool("disk-detach", args, &input.ndjson())
    }

    /// `disk-snapshot` of `input`.
    pub fn snapshot(&self, args: &[&str], input: &(impl Stdin + ?Sized)) -> Run {
        self.tool("disk-snapshot", args, &input.ndjson())
    }

    /// `disk-status` of `input`.
    pub fn status(&self, args: &[&str], input: &(impl Stdin + ?Sized)) -> Run {
        self.tool("disk-status", args, &input.ndjson())
    }

    /// Runs tests/servers/ec2_admin.py against moto itself; returns its JSON.
    pub fn admin(&self, args: &[&str]) -> Value {
        self.moto.ec2_admin(args)
    }

    /// `n` new instances in `zone`.
    pub fn instances(&self, zone: &str, n: usize) -> Vec<String> {
        self.admin(&["run-instances", zone, &n.to_string()])
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// A new instance in us-east-1b.
    pub fn instance(&self) -> String {
        self.instances("us-east-1b", 1).remove(0)
    }

    /// A new instance of type `ty` in us-east-1b (moto's AMI is HVM).
    pub fn instance_of(&self, ty: &str) -> String {
        self.admin(&["run-instances", "us-east-1b", "1", ty])[0]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A 1 GiB volume made by hand (no tool) in `zone`, tagged `Name=name`
    /// when `name` is given; its id.
    pub fn hand_made(&self, zone: &str, name: Option<&str>) -> String {
        let mut a = vec!["create-volume", zone, "1"];
        a.extend(name);
        self.admin(&a).as_str().unwrap().to_string()
    }

    /// What moto says of volume `id` (`state`, `attachments`, `tags`...).
    pub fn volume(&self, id: &str) -> Value {
        self.admin(&["volume", id])
    }

    /// Starts moto's request recording afresh.
    pub fn record_start(&self) {
        self.admin(&["record-start"]);
    }

    /// The requests moto recorded since [`Ec2::record_start`]: action → count.
    pub fn recorded(&self) -> Value {
        self.admin(&["actions"])
    }

    fn proxy(&self) -> &Server {
        self.proxy
            .as_ref()
            .expect("a control of the proxy, on an Ec2 without one: Ec2::proxied")
    }

    /// Merges `rule` into the proxy's state (`{"actions": {}}` resets
    /// what it saw).
    pub fn control(&self, rule: Value) {
        let (code, body) = http(
            "POST",
            &format!("{}/__proxy__", self.proxy().url()),
            &rule.to_string(),
        );
        assert_eq!(code, 200, "{body}");
    }

    /// What the proxy saw: `actions` (every request), `injected` (what it
    /// refused or rewrote), `tokens`.
    pub fn seen(&self) -> Value {
        serde_json::from_str(&http("GET", &format!("{}/__proxy__", self.proxy().url()), "").1)
            .unwrap()
    }

    /// How many requests of `action` the proxy saw.
    pub fn calls(&self, action: &str) -> u64 {
        self.seen()["actions"][action].as_u64().unwrap_or(0)
    }
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

/// A fake instance metadata service (tests/servers/fake_imds.py) for
/// `instance` in us-east-1b, IMDSv2, with `args` besides (`--v1`,
/// `--hop-limited`).
pub fn fake_imds(instance: &str, args: &[&str]) -> Server {
    let mut a = vec![instance, "us-east-1b"];
    a.extend_from_slice(args);
    Server::python("fake_imds.py", &a)
}

/// `cmd` with none of the credentials the AWS SDK would find: no keys or
/// profile in the environment, no shared config files.
pub fn without_aws_credentials(cmd: &mut Command) -> &mut Command {
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
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

/// The fake Compute Engine (tests/servers/fake_gce.py), its metadata server
/// describing instance `vm-1` in a zone of project `proj`; killed on drop.
pub struct Gce {
    pub server: Server,
}

impl Gce {
    /// A fake whose metadata server describes instance `vm-1` in `zone`.
    pub fn new(zone: &str) -> Gce {
        Gce {
            server: Server::python(
                "fake_gce.py",
                &["--instance", "vm-1", "--zone", zone, "--project", "proj"],
            ),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GCE_METADATA_HOST".into(), self.host()),
            ("CLOUDSDK_CONFIG".into(), "/nonexistent".into()),
        ]
    }

    pub fn tool(&self, name: &str, args: &[&str], input: &str) -> Run {
        let url = self.url();
        let mut a = vec!["--endpoint", url.as_str(), "--project", "proj"];
        a.extend_from_slice(args);
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_env(name, &a, input, &env)
    }

    pub fn control(&self, path: &str, body: Value) {
        let (status, text) = http(
            "POST",
            &format!("{}/__fake__/{path}", self.url()),
            &body.to_string(),
        );
        assert_eq!(status, 200, "{text}");
    }

    pub fn instance(&self, zone: &str, name: &str) {
        self.control(
            "instances",
            serde_json::json!({"project": "proj", "zone": zone, "name": name}),
        );
    }

    /// An instance of machine type `machine_type` (`c4-standard-8`).
    pub fn instance_of_type(&self, zone: &str, name: &str, machine_type: &str) {
        self.control(
            "instances",
            serde_json::json!({"project": "proj", "zone": zone, "name": name, "machineType": machine_type}),
        );
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(&http("GET", &format!("{}/__fake__/state", self.url()), "").1).unwrap()
    }

    /// Forgets the calls made so far (and the permissions they checked).
    pub fn reset_calls(&self) {
        self.control("reset-calls", serde_json::json!({}));
    }

    /// How many times `method` was called since the start (or the last
    /// [`Gce::reset_calls`]).
    pub fn calls(&self, method: &str) -> u64 {
        self.state()["calls"][method].as_u64().unwrap_or(0)
    }
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
