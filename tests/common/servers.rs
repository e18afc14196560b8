//! The servers the cloud tools call, all on 127.0.0.1 and killed on drop:
//! moto (alone or behind ec2_proxy.py) as [`Ec2`], the fake instance
//! metadata service, the fake Compute Engine as [`Gce`], and the
//! tests/servers/*.py scripts; and the environment each tool needs to reach
//! them.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::*;

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
    child: Started,
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
            child: Started::Child(child),
            port,
            _scratch: None,
        }
    }

    /// moto's EC2 emulator (moto_server from PyPI), warmed up: a fresh
    /// server forked from tests/servers/moto_zygote.py, which imported moto
    /// and made the first EC2 call once for the whole run (see
    /// [`moto_zygote`]).
    pub fn moto() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // moto writes its request recording to a file in its working
        // directory unless told where: keep it out of the repository.
        let scratch = TempDir::new("moto");
        let pid = moto_zygote(&format!(
            "{port}\t{}\t{}",
            scratch.path.display(),
            scratch.join("recording").display()
        ));
        let pid = nix::unistd::Pid::from_raw(
            pid.trim()
                .parse()
                .unwrap_or_else(|_| panic!("moto_zygote.py answered {pid:?}, not a pid")),
        );
        let server = Server {
            child: Started::Forked(pid),
            port,
            _scratch: Some(scratch),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not listen on {port} within 30s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What `tests/servers/ec2_admin.py URL ARGS...` prints, for this
    /// server: asked of the moto zygote, which has boto3 and the EC2 model
    /// loaded (see [`moto_zygote`]).
    pub fn ec2_admin(&self, args: &[&str]) -> Value {
        let mut argv = vec![self.url()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let reply = moto_zygote(&format!("admin\t{}", Value::from(argv)));
        let reply: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("ec2_admin {args:?}: {e} in {reply:?}"));
        match reply.get("ok") {
            Some(out) => out.clone(),
            None => panic!(
                "ec2_admin {args:?}: {}",
                reply["error"].as_str().unwrap_or("")
            ),
        }
    }
}

/// How a [`Server`] was started: our child, or forked by the moto zygote
/// (which reaps it).
enum Started {
    Child(std::process::Child),
    Forked(nix::unistd::Pid),
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.child {
            Started::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Started::Forked(pid) => {
                let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
                // Gone before its directory is removed (the zygote reaps it).
                let proc = PathBuf::from(format!("/proc/{pid}"));
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while proc.exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
}

/// Sends `request` (one line) to tests/servers/moto_zygote.py and returns
/// its whole answer: `PORT<TAB>DIR<TAB>RECORDING` asks for a fresh moto
/// server on PORT, working in DIR, recording requests to RECORDING, and is
/// answered its pid; `admin<TAB>JSON` asks an ec2_admin.py query. The
/// zygote is one per checkout (its socket is named for the repository
/// path), started by the first test that needs it, under a lock so that
/// tests starting at once start one; it exits by itself 30 s after the last
/// request. Starting moto_server costs about two CPU-seconds, a fork next to
/// nothing (docs/bench.md).
// The zygote outlives the test that started it, by design: it is never
// waited for here (init reaps it once this test has exited).
#[allow(clippy::zombie_processes)]
fn moto_zygote(request: &str) -> String {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    let sock = machine_temp("moto", (repo(), venv()), ".sock");
    // Nothing answered means nothing was done (the zygote exiting idle as
    // we connected): asking again is safe.
    let ask = |mut stream: UnixStream| -> Option<String> {
        writeln!(stream, "{request}").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        (!answer.is_empty()).then_some(answer)
    };
    for _ in 0..3 {
        if let Some(answer) = UnixStream::connect(&sock).ok().and_then(ask) {
            return answer;
        }
        // None listens (or it was just exiting): start one, once.
        let lock = std::fs::File::create(sock.with_extension("lock")).unwrap();
        lock.lock().unwrap();
        if UnixStream::connect(&sock).is_err() {
            Command::new(venv().join("bin/python"))
                .arg(repo().join("tests/servers/moto_zygote.py"))
                .arg(&sock)
                .stdin(Stdio::null())
                // Nothing of the test's: it outlives the test (nextest
                // would wait on a child holding its output).
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(sock.with_extension("log")).unwrap())
                .process_group(0)
                .spawn()
                .expect("starting tests/servers/moto_zygote.py");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while UnixStream::connect(&sock).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "tests/servers/moto_zygote.py did not listen on {} within 60s",
                    sock.display()
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        drop(lock);
    }
    panic!(
        "tests/servers/moto_zygote.py at {} did not answer",
        sock.display()
    );
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

    /// The client tokens the proxy saw, in order.
    pub fn tokens(&self) -> Vec<String> {
        self.seen()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
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
