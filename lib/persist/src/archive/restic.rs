//! restic, the engine archives are kept with: a [`Repository`] is one
//! restic repository and how to reach it, and each method runs one restic
//! command through [`crate::run`] (an argv, never a shell string), with
//! `--json` where restic 0.14 (Debian 12's) has it, parsed for progress and
//! results.
//!
//! Secrets never reach an argument (what `ps` shows), a record or a log
//! line: the repository's password reaches restic as a file it reads
//! (`--password-file`, the operator's own, root-only file) or through the
//! environment it inherits (`RESTIC_PASSWORD`); the bucket's credentials
//! through the environment alone (`AWS_SECRET_ACCESS_KEY`,
//! `GOOGLE_ACCESS_TOKEN`, ...). Every one is registered with the log's
//! redaction ([`crate::log::add_secret`]) before restic runs, so a message
//! that quotes one writes `<redacted>`.
//!
//! A failure is classified from what restic said ([`classify`]): a wrong
//! password, no repository, an endpoint not answering, credentials
//! refused, a lock held by another run (waited for, up to
//! [`Repository::lock_wait`]), an unknown archive id.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::codes::{self, Code};
use crate::progress::Progress;
use crate::run::{Cmd, RunError};
use crate::step::Failure;
use crate::wait::{Backoff, WaitParams};

/// The program.
pub const RESTIC: &str = "restic";

/// One restic repository, and how to reach it.
#[derive(Debug, Clone)]
pub struct Repository {
    /// What restic's `-r` takes: `s3:https://host/bucket/prefix`,
    /// `gs:bucket:/prefix`, `/srv/archives`.
    pub location: String,
    /// The operator's file holding the password (else restic takes
    /// `RESTIC_PASSWORD` or `RESTIC_PASSWORD_FILE` from the environment).
    pub password_file: Option<PathBuf>,
    /// A CA certificate to trust for the endpoint (a private S3 store).
    pub cacert: Option<PathBuf>,
    /// restic's cache (made faster by being kept between runs).
    pub cache_dir: Option<PathBuf>,
    /// Variables for restic's environment beyond this process's own: the
    /// bucket's credentials taken from an AppScalefile.
    pub env: Vec<(String, String)>,
    /// The longest a quick command (listing, opening, forgetting) may take:
    /// past it the endpoint is taken as unreachable.
    pub timeout: Duration,
    /// The longest a transfer (archive, restore, check) may take.
    pub transfer_timeout: Duration,
    /// How long to wait for a lock another run holds on the repository
    /// (restic's own, taken by `prune` exclusively).
    pub lock_wait: Duration,
}

/// A snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Snap {
    /// The full id.
    pub id: String,
    /// When, RFC 3339 (the `--time` it was made with).
    pub time: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The host it names.
    #[serde(default)]
    pub hostname: String,
    /// The paths it was made of.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// What `restic backup --json` says at its end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Summary {
    /// The new snapshot.
    pub snapshot_id: String,
    /// Files seen.
    #[serde(default)]
    pub total_files_processed: u64,
    /// Bytes seen.
    #[serde(default)]
    pub total_bytes_processed: u64,
    /// Bytes the repository grew by.
    #[serde(default)]
    pub data_added: u64,
    /// Files new or changed since the parent.
    #[serde(default)]
    pub files_new: u64,
    /// Files changed since the parent.
    #[serde(default)]
    pub files_changed: u64,
}

/// A `restic backup --json` status line.
#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    total_bytes: u64,
    #[serde(default)]
    bytes_done: u64,
}

/// One line of `restic backup --json`.
#[derive(Debug, Deserialize)]
#[serde(tag = "message_type", rename_all = "lowercase")]
enum BackupLine {
    Status(Status),
    Summary(Summary),
    #[serde(other)]
    Other,
}

/// A file or directory as `restic ls --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    /// Its path in the snapshot, from its root (`/a/b`).
    pub path: String,
    /// `file`, `dir`, `symlink`, `dev`, `chardev`, `fifo`, `socket`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its size (files).
    #[serde(default)]
    pub size: u64,
    /// Owner.
    #[serde(default)]
    pub uid: u32,
    /// Group.
    #[serde(default)]
    pub gid: u32,
    /// Go's `os.FileMode` bits.
    #[serde(default)]
    pub mode: u32,
    /// Modification time, RFC 3339.
    #[serde(default)]
    pub mtime: String,
}

/// What a backup is made of and said to be.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Tags, each one word (no commas: see [`super::tags`]).
    pub tags: Vec<String>,
    /// The host the snapshot names.
    pub host: String,
    /// The moment it is of, `YYYY-MM-DD HH:MM:SS` in UTC.
    pub time: String,
    /// The archive to compare with (files unchanged since are not read).
    pub parent: Option<String>,
    /// Patterns to leave out (restic's `--exclude`).
    pub excludes: Vec<String>,
}

impl Repository {
    /// `restic -r LOCATION` with the password file, CA and cache given.
    fn cmd(&self) -> Cmd {
        let mut c = Cmd::new(RESTIC)
            .arg("-r")
            .arg(&self.location)
            // restic reads `--time` and prints times in local time: UTC.
            .env("TZ", "UTC")
            // Killed with us: it must not go on reading a view that the
            // next run takes back.
            .ends_with_us()
            .timeout(self.timeout);
        if let Some(p) = &self.password_file {
            c = c.arg("--password-file").arg(p);
        }
        if let Some(p) = &self.cacert {
            c = c.arg("--cacert").arg(p);
        }
        match &self.cache_dir {
            Some(d) => c = c.arg("--cache-dir").arg(d),
            None => c = c.arg("--no-cache"),
        }
        for (k, v) in &self.env {
            c = c.env(k, v);
        }
        c
    }

    /// Runs `cmd`; a lock of a run that is gone is removed (once: restic's
    /// `unlock`), and one another run holds is waited for (at most
    /// [`Repository::lock_wait`]), any other failure classified.
    fn run(&self, what: &str, cmd: Cmd, code: Code) -> Result<String, Failure> {
        self.run_lines(what, cmd, code, |_| {})
    }

    /// [`Repository::run`], handing each stdout line to `line` as it comes.
    fn run_lines(
        &self,
        what: &str,
        cmd: Cmd,
        code: Code,
        mut line: impl FnMut(&str) + Send,
    ) -> Result<String, Failure> {
        let mut backoff = Backoff::start(WaitParams {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(15),
            timeout: self.lock_wait,
        });
        let mut unlocked = false;
        loop {
            let out = cmd.output_lines(&mut line);
            let failure = match out {
                Ok(o) if o.success() => return Ok(o.stdout),
                Ok(o) => classify(&self.location, what, cmd.failed(&o), code.clone()),
                // A quick command that does not finish: nothing answers.
                Err(RunError::TimedOut { timeout, .. }) if timeout == self.timeout => Failure::new(
                    codes::UNREACHABLE,
                    format!(
                        "{what} {}: no answer within {}s{}",
                        self.location,
                        timeout.as_secs(),
                        hint(&codes::UNREACHABLE)
                    ),
                ),
                Err(e) => classify(&self.location, what, e, code.clone()),
            };
            if failure.code != codes::REPOSITORY_LOCKED {
                return Err(failure);
            }
            // A lock whose holder died (a run killed with SIGKILL before
            // restic could let go) is never waited out: once, before any
            // waiting, restic removes the locks it judges stale (a process
            // gone on this host, or 30 minutes old), and the command runs
            // again at once. A live holder's lock stays, and is waited for.
            if !unlocked && what != UNLOCKING {
                unlocked = true;
                if self.unlock().is_ok() {
                    crate::log::debug(format_args!(
                        "{}: removed the locks of runs that are gone (restic unlock)",
                        self.location
                    ));
                    continue;
                }
            }
            match backoff.next_delay() {
                Some(d) => {
                    crate::log::info(format_args!("{}; waiting", failure.message));
                    std::thread::sleep(d);
                }
                None => return Err(failure),
            }
        }
    }

    /// Whether a repository is there: `Ok(false)` when there is none (no
    /// bucket, no directory, no config), an error when it cannot be told
    /// (wrong password, unreachable).
    pub fn exists(&self) -> Result<bool, Failure> {
        match self.run(
            "opening the repository",
            self.cmd().args(["cat", "config"]),
            codes::NO_REPOSITORY,
        ) {
            Ok(_) => Ok(true),
            Err(f) if f.code == codes::NO_REPOSITORY => Ok(false),
            Err(f) => Err(f),
        }
    }

    /// Creates the repository (`restic init`).
    pub fn init(&self) -> Result<(), Failure> {
        self.run(
            "creating the repository",
            self.cmd().arg("init"),
            codes::NO_REPOSITORY,
        )
        .map(drop)
    }

    /// Every snapshot carrying `tag`, oldest first.
    pub fn snapshots(&self, tag: &str) -> Result<Vec<Snap>, Failure> {
        let out = self.run(
            "listing the repository",
            self.cmd().args(["snapshots", "--json", "--tag", tag]),
            codes::ARCHIVE_FAILED,
        )?;
        let list: Option<Vec<Snap>> = serde_json::from_str(out.trim()).map_err(|e| {
            Failure::new(
                codes::ARCHIVE_FAILED,
                format!("`restic snapshots --json` gave what is not a list of snapshots: {e}"),
            )
        })?;
        Ok(list.unwrap_or_default())
    }

    /// Archives the directory `dir` (the root of a read-only mount), as its
    /// own root: the snapshot holds what `dir` holds. `progress` counts MiB.
    pub fn backup(
        &self,
        dir: &Path,
        opts: &BackupOptions,
        progress: &Progress,
    ) -> Result<Summary, Failure> {
        let mut c = self
            .cmd()
            .timeout(self.transfer_timeout)
            .current_dir(dir)
            .args([
                "backup", "--json", "--host", &opts.host, "--time", &opts.time,
            ]);
        for t in &opts.tags {
            c = c.arg("--tag").arg(t);
        }
        if let Some(p) = &opts.parent {
            c = c.arg("--parent").arg(p);
        }
        for x in &opts.excludes {
            c = c.arg("--exclude").arg(x);
        }
        let c = c.arg(".");
        let mut summary = None;
        let out =
            self.run_lines(
                "archiving",
                c,
                codes::ARCHIVE_FAILED,
                |line| match serde_json::from_str::<BackupLine>(line) {
                    Ok(BackupLine::Status(s)) => {
                        progress.set_total(s.total_bytes >> 20);
                        progress.set_done(s.bytes_done >> 20);
                    }
                    Ok(BackupLine::Summary(s)) => summary = Some(s),
                    _ => {}
                },
            )?;
        summary.ok_or_else(|| {
            Failure::new(
                codes::ARCHIVE_FAILED,
                format!(
                    "`restic backup` ended without a summary: {}",
                    out.lines().last().unwrap_or("no output")
                ),
            )
        })
    }

    /// Stores `bytes` as the file `/name` of a snapshot of their own (a
    /// repository's mark, an archive's description, a set's manifest);
    /// returns its id.
    pub fn backup_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        opts: &BackupOptions,
    ) -> Result<String, Failure> {
        let mut c = self
            .cmd()
            .stdin(bytes)
            .args(["backup", "--json", "--stdin", "--stdin-filename", name])
            .args(["--host", &opts.host, "--time", &opts.time]);
        for t in &opts.tags {
            c = c.arg("--tag").arg(t);
        }
        let out = self.run("recording", c, codes::ARCHIVE_FAILED)?;
        out.lines()
            .filter_map(|l| serde_json::from_str::<BackupLine>(l).ok())
            .find_map(|l| match l {
                BackupLine::Summary(s) => Some(s.snapshot_id),
                _ => None,
            })
            .ok_or_else(|| {
                Failure::new(
                    codes::ARCHIVE_FAILED,
                    "`restic backup --stdin` ended without a summary",
                )
            })
    }

    /// The file `/name` of the snapshot `id`.
    pub fn dump(&self, id: &str, name: &str) -> Result<String, Failure> {
        self.run(
            "reading the archive's description",
            self.cmd().args(["dump", id, &format!("/{name}")]),
            codes::NO_SUCH_ARCHIVE,
        )
    }

    /// Restores the snapshot `id` into the directory `target` (its root
    /// becomes `target`), with `sparse` (restic 0.15 and later) writing no
    /// blocks of zeros, and with `verify` reading every file back to check
    /// its content against the archive.
    pub fn restore(
        &self,
        id: &str,
        target: &Path,
        sparse: bool,
        verify: bool,
    ) -> Result<(), Failure> {
        let mut c = self
            .cmd()
            .timeout(self.transfer_timeout)
            .args(["restore", id, "--target"])
            .arg(target);
        if sparse {
            c = c.arg("--sparse");
        }
        if verify {
            c = c.arg("--verify");
        }
        self.run("restoring", c, codes::RESTORE_FAILED).map(drop)
    }

    /// Every file and directory of the snapshot `id`.
    pub fn ls(&self, id: &str) -> Result<Vec<Entry>, Failure> {
        let out = self.run(
            "listing the archive",
            self.cmd()
                .timeout(self.transfer_timeout)
                .args(["ls", "--json", id]),
            codes::NO_SUCH_ARCHIVE,
        )?;
        Ok(out
            .lines()
            .filter(|l| l.contains("\"struct_type\":\"node\""))
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .collect())
    }

    /// Forgets the snapshots `ids`, then (`prune`) deletes the data only
    /// they held.
    pub fn forget(&self, ids: &[String], prune: bool) -> Result<(), Failure> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut c = self.cmd().timeout(self.transfer_timeout).arg("forget");
        if prune {
            c = c.arg("--prune");
        }
        self.run("deleting archives", c.args(ids), codes::PRUNE_FAILED)
            .map(drop)
    }

    /// `restic check`, reading back `subset` of the data too (`5%`,
    /// `1/10`); returns what it said.
    pub fn check(&self, subset: Option<&str>) -> Result<String, Failure> {
        let mut c = self.cmd().timeout(self.transfer_timeout).arg("check");
        if let Some(s) = subset {
            c = c.arg(format!("--read-data-subset={s}"));
        }
        self.run("checking the repository", c, codes::VERIFY_FAILED)
    }

    /// Removes the locks of runs that are gone (restic's own judgement: a
    /// lock of a process no longer alive on this host, or 30 minutes old).
    pub fn unlock(&self) -> Result<(), Failure> {
        self.run(
            UNLOCKING,
            self.cmd().arg("unlock"),
            codes::REPOSITORY_LOCKED,
        )
        .map(drop)
    }
}

/// What [`Repository::unlock`] is doing, in its messages (and how
/// [`Repository::run_lines`] knows not to unlock for it).
const UNLOCKING: &str = "removing stale locks";

/// The version of the restic installed, `(major, minor)`.
pub fn version() -> Result<(u32, u32), Failure> {
    let out = Cmd::new(RESTIC)
        .arg("version")
        .run()
        .map_err(|e| classify("", "running restic", e, codes::NO_RESTIC))?;
    let v = out.stdout.split_whitespace().nth(1).unwrap_or("");
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(Failure::new(
            codes::NO_RESTIC,
            format!(
                "`restic version` said {:?}: not a version",
                out.stdout.trim()
            ),
        )),
    }
}

/// What restic's answers mean, from its messages (restic 0.14 gives no
/// codes): the first match wins.
const MEANINGS: &[(&str, Code)] = &[
    ("wrong password or no key found", codes::REPOSITORY_PASSWORD),
    ("empty password", codes::REPOSITORY_PASSWORD),
    ("reading password", codes::REPOSITORY_PASSWORD),
    ("resolving password failed", codes::REPOSITORY_PASSWORD),
    ("repository is already locked", codes::REPOSITORY_LOCKED),
    ("dial tcp", codes::UNREACHABLE),
    ("no such host", codes::UNREACHABLE),
    ("connection refused", codes::UNREACHABLE),
    ("i/o timeout", codes::UNREACHABLE),
    ("tls handshake", codes::UNREACHABLE),
    ("x509:", codes::UNREACHABLE),
    ("network is unreachable", codes::UNREACHABLE),
    ("access denied", codes::NO_CREDENTIALS),
    ("accessdenied", codes::NO_CREDENTIALS),
    ("invalidaccesskeyid", codes::NO_CREDENTIALS),
    ("signaturedoesnotmatch", codes::NO_CREDENTIALS),
    ("403 forbidden", codes::NO_CREDENTIALS),
    ("could not find default credentials", codes::NO_CREDENTIALS),
    ("error 401", codes::NO_CREDENTIALS),
    ("error 403", codes::NO_CREDENTIALS),
    (
        "is there a repository at the following location",
        codes::NO_REPOSITORY,
    ),
    ("bucket does not exist", codes::NO_REPOSITORY),
    ("no matching id found", codes::NO_SUCH_ARCHIVE),
    ("invalid id", codes::NO_SUCH_ARCHIVE),
    ("no snapshot found", codes::NO_SUCH_ARCHIVE),
];

/// What the operator is told to do, by code.
fn hint(code: &str) -> &'static str {
    match code {
        c if c == codes::REPOSITORY_PASSWORD => {
            ": give the repository's password (--password-file, or RESTIC_PASSWORD in the environment)"
        }
        c if c == codes::UNREACHABLE => {
            ": check the location, the network, and for a private endpoint its CA (--cacert)"
        }
        c if c == codes::NO_CREDENTIALS => {
            ": give the bucket's credentials in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_ACCESS_TOKEN)"
        }
        c if c == codes::NO_REPOSITORY => {
            ": check the location, or pass --init to create a repository there"
        }
        c if c == codes::REPOSITORY_LOCKED => {
            ": another run holds it (restic's lock); let it finish, or remove a stale lock with `restic unlock`"
        }
        c if c == codes::NO_RESTIC => ": install the restic package",
        _ => "",
    }
}

/// The record's failure for a restic run that failed: what was being done
/// on which repository, what restic said (its last lines), and the code
/// its message means, else `code`.
pub fn classify(repo: &str, what: &str, e: RunError, code: Code) -> Failure {
    let on = if repo.is_empty() {
        String::new()
    } else {
        format!(" {repo}")
    };
    let (said, code) = match e {
        RunError::NotFound { .. } => ("restic is not installed".to_string(), codes::NO_RESTIC),
        RunError::Interrupted { signal, .. } => return crate::interrupt::failure(signal),
        RunError::TimedOut { timeout, .. } => (
            format!(
                "restic did not finish within {}s and was stopped",
                timeout.as_secs()
            ),
            code,
        ),
        RunError::Spawn { error, .. } => (format!("restic could not start: {error}"), code),
        RunError::Failed { stderr, status, .. } => {
            let lower = stderr.to_ascii_lowercase();
            let meant = MEANINGS
                .iter()
                .find(|(pat, _)| lower.contains(pat))
                .map_or(code, |(_, c)| c.clone());
            let lines: Vec<&str> = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .filter(|l| !l.starts_with("Is there a repository") && *l != repo)
                .collect();
            let tail = lines[lines.len().saturating_sub(3)..].join("; ");
            let said = if tail.is_empty() {
                format!("restic failed ({status})")
            } else {
                format!("restic said: {}", tail.trim_start_matches("Fatal: "))
            };
            (said, meant)
        }
    };
    let message = crate::log::escape_controls(&format!("{what}{on}: {said}{}", hint(&code)));
    Failure::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stderr: &str) -> RunError {
        RunError::Failed {
            cmdline: "restic".into(),
            status: "exit 1".into(),
            code: Some(1),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn restic_messages_are_read_for_their_meaning() {
        let f = classify(
            "/r",
            "opening",
            failed("Fatal: wrong password or no key found"),
            codes::NO_REPOSITORY,
        );
        assert_eq!(f.code, codes::REPOSITORY_PASSWORD, "{f:?}");
        assert!(
            f.message
                .contains("opening /r: restic said: wrong password"),
            "{f:?}"
        );
        let f = classify(
            "s3:http://127.0.0.1:9/b",
            "opening",
            failed(
                "Fatal: unable to open config file: Stat: Get \"http://127.0.0.1:9/b/?location=\": dial tcp 127.0.0.1:9: connect: connection refused\nIs there a repository at the following location?\ns3:http://127.0.0.1:9/b",
            ),
            codes::NO_REPOSITORY,
        );
        assert_eq!(
            f.code,
            codes::UNREACHABLE,
            "a refused connection is not a missing repository"
        );
        let f = classify(
            "s3:http://h/b",
            "opening",
            failed(
                "Fatal: unable to open config file: Stat: The specified bucket does not exist\nIs there a repository at the following location?\ns3:http://h/b",
            ),
            codes::NO_REPOSITORY,
        );
        assert_eq!(f.code, codes::NO_REPOSITORY);
        assert!(f.message.contains("--init"), "{f:?}");
        let f = classify(
            "/r",
            "restoring",
            failed("Fatal: invalid id \"feedbeef\": no matching ID found for prefix \"feedbeef\""),
            codes::RESTORE_FAILED,
        );
        assert_eq!(f.code, codes::NO_SUCH_ARCHIVE);
        let f = classify(
            "/r",
            "archiving",
            failed(
                "unable to create lock in backend: repository is already locked exclusively by PID 7",
            ),
            codes::ARCHIVE_FAILED,
        );
        assert_eq!(f.code, codes::REPOSITORY_LOCKED);
        let f = classify(
            "/r",
            "archiving",
            failed("something else"),
            codes::ARCHIVE_FAILED,
        );
        assert_eq!(f.code, codes::ARCHIVE_FAILED);
    }
}
