//! The cloud settings of an AppScalefile that the cloud tools honour
//! (`disk-create`, `disk-attach`, `disk-detach`, `disk-snapshot`,
//! `disk-status` with `--appscalefile PATH`): `project` (GCE), `EC2_URL`
//! (the EC2 or Eucalyptus endpoint), `S3_URL` (checked, not used: the tools
//! make no images), and `EC2_ACCESS_KEY`/`EC2_SECRET_KEY`, the credentials
//! of last resort after the AWS default chain.
//!
//! The secret key is held as a [`Secret`], whose `Debug` prints
//! `<redacted>` and which has no `Display`; it is registered with
//! [`crate::log::add_secret`] the moment the file is read, so no message of
//! the run can carry it. It never goes into a record: `--plan` records
//! carry the deployment, provider and zone only.

use std::path::Path;

/// A credential read from a file: printed as `<redacted>` by `Debug`, and
/// reached only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value` and registers it with [`crate::log::add_secret`].
    pub fn new(value: &str) -> Secret {
        crate::log::add_secret(value);
        Secret(value.to_string())
    }

    /// The value, for the one call that needs it (the SDK's credentials).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Registers with [`crate::log::add_secret`] the value of every line of
/// `source` whose key looks like a credential's ([`crate::log::is_secret_env`]:
/// `EC2_SECRET_KEY`, but also a misspelling such as `ec2_secret_key` or
/// `EC2_SECRET`, which the linter reports as an unknown key and would
/// otherwise quote). `key: value` and `key = value` lines, quotes removed.
pub fn register_secret_looking_values(source: &str) {
    for line in source.lines() {
        let line = line.trim_start().trim_start_matches("- ");
        let Some(at) = line.find([':', '=']) else {
            continue;
        };
        let key = line[..at].trim().trim_matches(['"', '\'']);
        if key.is_empty() || !crate::log::is_secret_env(key) {
            continue;
        }
        let value = line[at + 1..].trim().trim_matches(['"', '\'']).trim();
        crate::log::add_secret(value);
    }
}

/// The settings of an AppScalefile a cloud tool takes, when given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudSettings {
    /// `infrastructure`.
    pub infrastructure: Option<String>,
    /// `project`: the Google Cloud project (GCE).
    pub project: Option<String>,
    /// `EC2_URL`: the EC2 API endpoint (Eucalyptus, a private endpoint).
    pub ec2_url: Option<String>,
    /// `S3_URL`: Eucalyptus's object store (Walrus), where AppScale's
    /// images were bundled. Checked as a URL; no tool uses it.
    pub s3_url: Option<String>,
    /// `EC2_ACCESS_KEY`: the access key id.
    pub access_key: Option<String>,
    /// `EC2_SECRET_KEY`: its secret.
    pub secret_key: Option<Secret>,
}

impl CloudSettings {
    /// The access key pair, when both halves are given.
    pub fn credentials(&self) -> Option<(&str, &Secret)> {
        Some((self.access_key.as_deref()?, self.secret_key.as_ref()?))
    }
}

/// Reads the cloud settings of the AppScalefile at `path`. The file must
/// lint without error (the message names the file and the count, never a
/// value: run `appscalefile-lint` for the findings).
pub fn read(path: &Path) -> Result<CloudSettings, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read AppScalefile {}: {e}", path.display()))?;
    let (_, lint) = super::lint_bytes(&bytes);
    if lint.has_errors() {
        let n = lint
            .diagnostics
            .iter()
            .filter(|d| d.severity == super::Severity::Error)
            .count();
        return Err(format!(
            "AppScalefile {} has {n} error(s): run `appscalefile-lint {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(lint.deployment.cloud)
}

/// Whether `s` is an `http://` or `https://` URL with a host.
pub(super) fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or_default();
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        !host.is_empty() && !host.starts_with(':') && !host.contains(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("wJalrXUtnFEMIdistinct");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let c = CloudSettings {
            secret_key: Some(s),
            ..CloudSettings::default()
        };
        assert!(!format!("{c:?}").contains("wJalr"));
        assert_eq!(
            crate::log::redact("x wJalrXUtnFEMIdistinct y"),
            "x <redacted> y"
        );
    }

    #[test]
    fn misspelled_secret_keys_are_registered_too() {
        register_secret_looking_values(
            "infrastructure: ec2\nec2_secret_key: 'Misspelt/Secret+Value1'\nEC2_SECRET = Other/Secret2\nkeyname: not-secret\n",
        );
        assert_eq!(
            crate::log::redact("a Misspelt/Secret+Value1 b Other/Secret2 not-secret"),
            "a <redacted> b <redacted> not-secret"
        );
    }

    #[test]
    fn urls() {
        assert!(is_http_url("http://10.0.0.1:8773/services/compute"));
        assert!(is_http_url("https://ec2.us-east-1.amazonaws.com"));
        assert!(!is_http_url("10.0.0.1:8773"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("ftp://x"));
    }
}
