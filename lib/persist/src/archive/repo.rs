//! Which repository a run uses and how it reaches it ([`RepoArgs`], shared
//! by `disk-archive` and `disk-restore`), checked before anything is done;
//! and opening it ([`open`]): made when asked (`--init`), and refused
//! unless it belongs to the records' deployment, which its mark says
//! ([`super::tags::Mark`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::restic::{BackupOptions, Repository};
use super::tags::{Kind, Labels, Listed, MARK_FILE, Mark, OURS};
use crate::codes;
use crate::log;
use crate::snapshot::Stamp;
use crate::step::Failure;

/// The environment variable naming the repository when `--repo` does not.
pub const REPO_ENV: &str = "APPSCALE_PERSIST_ARCHIVE_REPO";

/// The environment variable naming the password file when
/// `--password-file` does not.
pub const PASSWORD_FILE_ENV: &str = "APPSCALE_PERSIST_ARCHIVE_PASSWORD_FILE";

/// The environment variable naming restic's cache when `--cache-dir` does
/// not.
pub const CACHE_ENV: &str = "APPSCALE_PERSIST_ARCHIVE_CACHE";

/// Where restic keeps its cache unless told otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/appscale-persist/restic";

/// The repository options `disk-archive` and `disk-restore` take.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// The restic repository: `s3:https://HOST/BUCKET[/PREFIX]` (S3, or any
    /// S3-compatible store: Google Cloud Storage's XML API with HMAC keys is
    /// `s3:https://storage.googleapis.com/BUCKET`), `gs:BUCKET:/PREFIX`
    /// (Google Cloud Storage), or an absolute directory. Never put a
    /// credential in it: `ps` shows it.
    #[arg(long, value_name = "LOCATION", env = REPO_ENV, hide_env_values = true, help_heading = "Repository")]
    pub repo: Option<String>,
    /// A file holding the repository's password (root's alone: mode 0600);
    /// else RESTIC_PASSWORD_FILE or RESTIC_PASSWORD from the environment.
    /// Lose it and the archives cannot be read by anyone (docs/archive.md).
    #[arg(
        long,
        value_name = "PATH",
        env = PASSWORD_FILE_ENV,
        hide_env_values = true,
        help_heading = "Repository"
    )]
    pub password_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for the repository's endpoint.
    #[arg(long, value_name = "PATH", help_heading = "Repository")]
    pub cacert: Option<PathBuf>,
    /// restic's cache directory.
    #[arg(
        long,
        value_name = "DIR",
        env = CACHE_ENV,
        hide_env_values = true,
        default_value = DEFAULT_CACHE_DIR,
        help_heading = "Repository"
    )]
    pub cache_dir: PathBuf,
    /// Take an S3 repository's credentials of last resort from this
    /// AppScalefile (`EC2_ACCESS_KEY`, `EC2_SECRET_KEY`), when the
    /// environment has no AWS_ACCESS_KEY_ID; never printed.
    #[arg(long, value_name = "PATH", help_heading = "Repository")]
    pub appscalefile: Option<PathBuf>,
    /// Deployment the archives are of, for records that name none: a
    /// repository belongs to one deployment [default: the record's
    /// `deployment`, else `appscale`].
    #[arg(long, value_name = "NAME", help_heading = "Repository")]
    pub deployment: Option<String>,
    /// Seconds a quick call on the repository (opening, listing, deleting)
    /// may take before its endpoint is taken as unreachable.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 120,
        help_heading = "Repository"
    )]
    pub repo_timeout: u64,
    /// Seconds a transfer (archive, restore, check) may take.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 86_400,
        help_heading = "Repository"
    )]
    pub transfer_timeout: u64,
    /// Seconds to wait for a lock another run holds on the repository.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 600,
        help_heading = "Repository"
    )]
    pub lock_wait: u64,
}

impl RepoArgs {
    /// The deployment of `rec`: `--deployment`, else the record's, else the
    /// shared default.
    pub fn deployment_of(&self, rec: &crate::record::Record) -> String {
        self.deployment
            .clone()
            .or_else(|| rec.deployment.clone().filter(|d| !d.is_empty()))
            .unwrap_or_else(|| crate::record::DEFAULT_DEPLOYMENT.to_string())
    }

    /// Checks the records a run acts on (`todo`) can use one repository:
    /// it can be used, and they are of one deployment (a repository
    /// belongs to one); `fix` says what to do when they are not.
    pub fn one_deployment(&self, todo: &[&crate::record::Record], fix: &str) -> Result<(), String> {
        self.repository()?;
        let mut deployments: Vec<String> = todo.iter().map(|r| self.deployment_of(r)).collect();
        deployments.sort();
        deployments.dedup();
        if deployments.len() > 1 {
            return Err(format!(
                "the records are of several deployments ({}): a repository belongs to one; {fix}",
                deployments.join(", ")
            ));
        }
        Ok(())
    }

    /// The repository these options name, checked (a usage error, exit 2,
    /// when it cannot be used): the location's form, a password to give
    /// restic, the credentials of last resort; every secret registered with
    /// the log's redaction.
    pub fn repository(&self) -> Result<Repository, String> {
        let location = self.repo.clone().unwrap_or_default();
        check_location(&location)?;
        // restic runs in the view's directory: every path absolute.
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let password_file = self.password_file.as_deref().map(absolute);
        match &password_file {
            Some(p) => register_password_file(p)?,
            None => match std::env::var_os("RESTIC_PASSWORD_FILE") {
                Some(p) => register_password_file(Path::new(&p))?,
                None if std::env::var_os("RESTIC_PASSWORD").is_some_and(|v| !v.is_empty()) => {
                    if let Ok(v) = std::env::var("RESTIC_PASSWORD") {
                        log::add_secret(&v);
                    }
                }
                None => {
                    return Err(format!(
                        "no password for the repository: pass --password-file PATH (or set {PASSWORD_FILE_ENV}, RESTIC_PASSWORD_FILE or RESTIC_PASSWORD)"
                    ));
                }
            },
        }
        let mut env = Vec::new();
        if location.starts_with("s3:")
            && std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && let Some(file) = &self.appscalefile
        {
            let settings = crate::appscalefile::cloud::read(file)?;
            if let Some((id, secret)) = settings.credentials() {
                log::add_secret(secret.expose());
                env.push(("AWS_ACCESS_KEY_ID".to_string(), id.to_string()));
                env.push((
                    "AWS_SECRET_ACCESS_KEY".to_string(),
                    secret.expose().to_string(),
                ));
            }
        }
        if let Some(c) = &self.cacert
            && !c.is_file()
        {
            return Err(format!("--cacert {}: no such file", c.display()));
        }
        Ok(Repository {
            location,
            password_file,
            cacert: self.cacert.as_deref().map(absolute),
            cache_dir: Some(absolute(&self.cache_dir)),
            env,
            timeout: Duration::from_secs(self.repo_timeout),
            transfer_timeout: Duration::from_secs(self.transfer_timeout),
            lock_wait: Duration::from_secs(self.lock_wait),
        })
    }
}

/// Checks a repository location: one restic takes, absolute when a
/// directory, and with no credential in it (it is an argument: `ps`
/// shows it).
pub fn check_location(location: &str) -> Result<(), String> {
    if location.is_empty() {
        return Err(format!(
            "no repository: pass --repo LOCATION (or set {REPO_ENV}): s3:https://HOST/BUCKET, gs:BUCKET:/PREFIX, or an absolute directory"
        ));
    }
    if location.chars().any(char::is_control) {
        return Err("the repository location holds a control character".into());
    }
    const SCHEMES: [&str; 8] = [
        "s3:", "gs:", "local:", "sftp:", "rest:", "b2:", "azure:", "swift:",
    ];
    let scheme = SCHEMES.iter().find(|s| location.starts_with(**s));
    match scheme {
        None if location.starts_with('/') => {}
        None => {
            return Err(format!(
                "`{location}` is not a repository location: s3:https://HOST/BUCKET, gs:BUCKET:/PREFIX, or an absolute directory"
            ));
        }
        Some(&"local:") if !location["local:".len()..].starts_with('/') => {
            return Err(format!(
                "`{location}`: give the directory as an absolute path"
            ));
        }
        Some(_) => {}
    }
    // `scheme://user:password@host`: a credential where `ps` shows it.
    if let Some((_, rest)) = location.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            log::add_secret(userinfo);
            return Err(
                "the repository location holds a password (user:password@): it would show in `ps` and in every record; give credentials in the environment instead".into(),
            );
        }
    }
    Ok(())
}

/// Checks a password file (a regular file, not empty; a warning when others
/// may read it) and registers its content as a secret.
fn register_password_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("password file {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("password file {}: not a file", path.display()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn(format_args!(
            "password file {} may be read by others (mode {:o}): chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("password file {}: {e}", path.display()))?;
    // restic takes the first line.
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(format!("password file {} is empty", path.display()));
    }
    log::add_secret(first);
    Ok(())
}

/// What [`open`] found.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// Every snapshot of ours, oldest first.
    pub listed: Vec<Listed>,
    /// The repository was made by this run (`--init`).
    pub made: bool,
}

/// How [`open`] may change the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only (restore, verify, list): nothing is written.
    Read,
    /// Archiving: the repository is marked as the deployment's if it bears
    /// no mark yet (a repository made with `restic init` by hand).
    Write,
    /// Archiving with `--init`: also made if there is none.
    Create,
}

/// Opens the repository for `deployment`: lists our snapshots, makes the
/// repository (`Access::Create`, unless `check`), and refuses one that
/// belongs to another deployment (`other-deployment`): marked for another,
/// or, unmarked, holding only other deployments' archives.
pub fn open(
    repo: &Repository,
    deployment: &str,
    access: Access,
    check: bool,
) -> Result<Opened, Failure> {
    let listed = match repo.snapshots(OURS) {
        Ok(s) => Listed::all(s),
        Err(f) if f.code == codes::NO_REPOSITORY && access == Access::Create => {
            if check {
                return Ok(Opened {
                    listed: Vec::new(),
                    made: true,
                });
            }
            // Two runs on this machine making one repository at once would
            // leave it with two configs: one at a time, and the second finds
            // it made. (Across machines, make it once first: archive.yml
            // does.)
            let _one = crate::lock::NodeLock::take_file(
                &Path::new(super::capture::RUN_DIR).join("init.lock"),
            )?;
            if repo.exists()? {
                return open(repo, deployment, Access::Write, check);
            }
            if let Err(f) = repo.init() {
                // Another node made it meanwhile (a first archive on every
                // node at once).
                if !repo.exists()? {
                    return Err(f);
                }
            } else {
                log::info(format_args!(
                    "created the repository {} for deployment {deployment}",
                    repo.location
                ));
            }
            mark(repo, deployment)?;
            return Ok(Opened {
                listed: Listed::all(repo.snapshots(OURS)?),
                made: true,
            });
        }
        Err(f) => return Err(f),
    };
    let marks: Vec<&Listed> = listed.iter().filter(|l| l.is(Kind::Mark)).collect();
    if let Some(other) = marks
        .iter()
        .find(|m| m.labels.deployment.as_deref() != Some(deployment))
    {
        return Err(other_deployment(
            repo,
            deployment,
            other.labels.deployment.as_deref().unwrap_or("?"),
        ));
    }
    if marks.is_empty() {
        let theirs: Vec<&str> = listed
            .iter()
            .filter(|l| l.is(Kind::Archive))
            .filter_map(|l| l.labels.deployment.as_deref())
            .collect();
        if !theirs.is_empty() && !theirs.contains(&deployment) {
            return Err(other_deployment(repo, deployment, theirs[0]));
        }
        if access != Access::Read && !check {
            mark(repo, deployment)?;
        }
    }
    Ok(Opened {
        listed,
        made: false,
    })
}

fn other_deployment(repo: &Repository, ours: &str, theirs: &str) -> Failure {
    Failure::new(
        codes::OTHER_DEPLOYMENT,
        format!(
            "the repository {} belongs to deployment `{}`, not `{}`: nothing read or written; give this deployment a repository of its own (or, to restore that deployment's archives, pass --deployment {})",
            repo.location,
            log::escape_controls(theirs),
            log::escape_controls(ours),
            log::escape_controls(theirs),
        ),
    )
}

/// Writes the repository's mark: it belongs to `deployment`.
fn mark(repo: &Repository, deployment: &str) -> Result<(), Failure> {
    let now = Stamp::now();
    let body = serde_json::to_vec_pretty(&Mark {
        deployment: deployment.to_string(),
        created: now.rfc3339(),
        tool: format!("{} {}", log::tool(), env!("CARGO_PKG_VERSION")),
    })
    .map_err(|e| Failure::new(codes::INTERNAL, e.to_string()))?;
    let labels = Labels {
        deployment: Some(deployment.to_string()),
        ..Labels::of(Kind::Mark)
    };
    repo.backup_bytes(
        MARK_FILE,
        &body,
        &BackupOptions {
            tags: labels.to_tags(),
            host: OURS.to_string(),
            time: restic_time(now),
            ..BackupOptions::default()
        },
    )
    .map(drop)
}

/// A moment as restic's `--time` takes it (UTC, as [`Repository`] runs it).
pub fn restic_time(at: Stamp) -> String {
    let r = at.rfc3339();
    // 2026-11-27T02:35:12.123Z -> 2026-11-27 02:35:12
    format!("{} {}", &r[..10], &r[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked_before_restic_sees_them() {
        for ok in [
            "s3:https://s3.amazonaws.com/bucket/prefix",
            "s3:http://127.0.0.1:9000/b",
            "gs:bucket:/appscale",
            "/srv/archives",
            "local:/srv/archives",
        ] {
            assert_eq!(check_location(ok), Ok(()), "{ok}");
        }
        for bad in ["", "archives", "local:archives", "ftp:x", "a\nb"] {
            assert!(check_location(bad).is_err(), "{bad}");
        }
        let e = check_location("rest:https://user:hunter22@host/repo").unwrap_err();
        assert!(e.contains("password"), "{e}");
        assert!(!e.contains("hunter22"), "{e}");
    }

    #[test]
    fn restic_time_is_whole_seconds_in_utc() {
        assert_eq!(restic_time(Stamp(1_795_746_912_123)), "2026-11-27 02:35:12");
    }
}
