//! Which instance this machine is, from the cloud's metadata service, over
//! plain HTTP with short timeouts (no cloud SDK: the node-side tools use
//! this too).
//!
//! * EC2 and Eucalyptus: IMDSv2 (a token from `PUT /latest/api/token`, then
//!   the `meta-data` paths with it); when the token call is refused, IMDSv1
//!   (the same paths without a token), as Eucalyptus has no IMDSv2.
//! * Compute Engine: the metadata server (`Metadata-Flavor: Google`).
//!
//! Where the service is: an explicit endpoint (`--metadata-endpoint`), else
//! `APPSCALE_PERSIST_METADATA_ENDPOINT`, else the SDKs' own variables
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, `GCE_METADATA_HOST`), else the
//! link-local defaults.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Environment variable naming the metadata service for every provider
/// (`http://HOST:PORT` or `HOST:PORT`); wins over the SDKs' variables.
pub(crate) const METADATA_ENDPOINT_ENV: &str = "APPSCALE_PERSIST_METADATA_ENDPOINT";

/// How long to wait for a connection: the link-local service answers at
/// once, and a machine without one should not hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long to wait for an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Why this machine's identity could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Nothing answered at the endpoint.
    #[error("no metadata service at {endpoint}: {reason}")]
    Unreachable {
        /// Where it was looked for.
        endpoint: String,
        /// The connection error.
        reason: String,
    },
    /// The service answered, but not with what was asked.
    #[error("reading {url}: {reason}")]
    Answer {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// IMDSv2's token call got no answer, and IMDSv1 is refused: what a
    /// container sees on an instance whose metadata hop limit is 1 (the
    /// token's answer dies one hop short).
    #[error(
        "IMDSv2's token call to {endpoint} got no answer ({reason}) and IMDSv1 is refused (HTTP 401): in a container on EC2, the instance's metadata hop limit must be 2 for the answer to reach it (aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2, or HttpPutResponseHopLimit: 2 in the launch template)"
    )]
    TokenLost {
        /// Where it was asked.
        endpoint: String,
        /// How the token call failed.
        reason: String,
    },
    /// `AWS_EC2_METADATA_DISABLED` is set.
    #[error("the instance metadata service is disabled (AWS_EC2_METADATA_DISABLED)")]
    Disabled,
}

/// An EC2 or Eucalyptus instance, as IMDS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Instance {
    /// `i-0123...`.
    pub id: String,
    /// Its availability zone.
    pub zone: String,
}

/// A Compute Engine instance, as the metadata server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceInstance {
    /// Instance name.
    pub name: String,
    /// Zone (the last segment of `projects/N/zones/Z`).
    pub zone: String,
    /// Project id.
    pub project: String,
}

/// `host:port` of a metadata service: `explicit`, else the environment
/// (`sdk_env`), else `default`.
fn host_port(explicit: Option<&str>, sdk_env: &str, default: &str) -> String {
    let raw = explicit
        .map(str::to_string)
        .or_else(|| std::env::var(METADATA_ENDPOINT_ENV).ok())
        .or_else(|| std::env::var(sdk_env).ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    let hp = raw
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if hp.contains(':') {
        hp
    } else {
        format!("{hp}:80")
    }
}

/// This EC2 or Eucalyptus instance (IMDSv2, else IMDSv1).
pub fn ec2(endpoint: Option<&str>) -> Result<Ec2Instance, IdentityError> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(IdentityError::Disabled);
    }
    let hp = host_port(
        endpoint,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "169.254.169.254",
    );
    // IMDSv2 first; a refused token call (Eucalyptus has no IMDSv2) means
    // IMDSv1. A service that does not answer at all is not asked again.
    let mut lost = None;
    let token = match request(
        &hp,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    ) {
        Ok((200, body)) => Some(body.trim().to_string()),
        Ok(_) => None,
        Err(Fail::Connect(reason)) => {
            return Err(IdentityError::Unreachable {
                endpoint: hp,
                reason,
            });
        }
        Err(Fail::Io(reason)) => {
            lost = Some(reason);
            None
        }
    };
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| vec![("X-aws-ec2-metadata-token", t)])
        .unwrap_or_default();
    let get = |path: &str| match (get_ok(&hp, path, &headers), &lost) {
        // The token's answer was lost, and IMDSv1 is refused: the hop limit.
        (Err(IdentityError::Answer { reason, .. }), Some(why)) if reason == "HTTP 401" => {
            Err(IdentityError::TokenLost {
                endpoint: hp.clone(),
                reason: why.clone(),
            })
        }
        (got, _) => got,
    };
    Ok(Ec2Instance {
        id: get("/latest/meta-data/instance-id")?,
        zone: get("/latest/meta-data/placement/availability-zone")?,
    })
}

/// This Compute Engine instance.
pub fn gce(host: Option<&str>) -> Result<GceInstance, IdentityError> {
    let hp = host_port(host, "GCE_METADATA_HOST", "metadata.google.internal");
    let headers = [("Metadata-Flavor", "Google")];
    let get = |path: &str| get_ok(&hp, &format!("/computeMetadata/v1/{path}"), &headers);
    let zone = get("instance/zone")?;
    Ok(GceInstance {
        name: get("instance/name")?,
        zone: zone.rsplit('/').next().unwrap_or(&zone).to_string(),
        project: get("project/project-id")?,
    })
}

/// How IMDS answered the IMDSv2 token request (`PUT /latest/api/token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenAnswer {
    /// A token was issued: IMDSv2 answers.
    Issued,
    /// The call was refused with this HTTP status (Eucalyptus, which has
    /// no IMDSv2; IMDSv1 is then asked).
    Refused(u16),
    /// Connected, but no answer came back: what a container behind one more
    /// network hop sees when the instance's IMDS response hop limit is 1
    /// (the answer's TTL runs out on the way).
    NoAnswer(String),
}

/// Asks IMDS (as [`ec2`] finds it) for an IMDSv2 token, and says how it
/// answered; an error when nothing answers at all.
pub(crate) fn ec2_token(endpoint: Option<&str>) -> Result<TokenAnswer, IdentityError> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(IdentityError::Disabled);
    }
    let hp = host_port(
        endpoint,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "169.254.169.254",
    );
    match request(
        &hp,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    ) {
        Ok((200, _)) => Ok(TokenAnswer::Issued),
        Ok((status, _)) => Ok(TokenAnswer::Refused(status)),
        Err(Fail::Io(reason)) => Ok(TokenAnswer::NoAnswer(reason)),
        Err(Fail::Connect(reason)) => Err(IdentityError::Unreachable {
            endpoint: hp,
            reason,
        }),
    }
}

/// One value of this EC2 or Eucalyptus instance's metadata (`path` under
/// `/latest/meta-data/`, as `tags/instance/KEY`), IMDSv2 else IMDSv1;
/// `Ok(None)` when IMDS says it has no such value (404).
pub(crate) fn ec2_value(
    endpoint: Option<&str>,
    path: &str,
) -> Result<Option<String>, IdentityError> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(IdentityError::Disabled);
    }
    let hp = host_port(
        endpoint,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "169.254.169.254",
    );
    let token = match request(
        &hp,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    ) {
        Ok((200, body)) => Some(body.trim().to_string()),
        Ok(_) | Err(Fail::Io(_)) => None,
        Err(Fail::Connect(reason)) => {
            return Err(IdentityError::Unreachable {
                endpoint: hp,
                reason,
            });
        }
    };
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| vec![("X-aws-ec2-metadata-token", t)])
        .unwrap_or_default();
    optional(&hp, &format!("/latest/meta-data/{path}"), &headers)
}

/// One value of this Compute Engine instance's metadata (`path` under
/// `/computeMetadata/v1/`, as `instance/service-accounts/default/scopes`);
/// `Ok(None)` when the metadata server has no such value (404).
pub fn gce_value(host: Option<&str>, path: &str) -> Result<Option<String>, IdentityError> {
    let hp = host_port(host, "GCE_METADATA_HOST", "metadata.google.internal");
    optional(
        &hp,
        &format!("/computeMetadata/v1/{path}"),
        &[("Metadata-Flavor", "Google")],
    )
}

/// A GET whose 404 means "no such value".
fn optional(
    hp: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Option<String>, IdentityError> {
    match request(hp, "GET", path, headers) {
        Ok((404, _)) => Ok(None),
        answer => judge(hp, path, answer).map(Some),
    }
}

/// A GET that must answer 200 with a non-empty body.
fn get_ok(hp: &str, path: &str, headers: &[(&str, &str)]) -> Result<String, IdentityError> {
    judge(hp, path, request(hp, "GET", path, headers))
}

/// The value of a GET's `answer`: a 200 with a non-empty body.
fn judge(
    hp: &str,
    path: &str,
    answer: Result<(u16, String), Fail>,
) -> Result<String, IdentityError> {
    let url = format!("http://{hp}{path}");
    match answer {
        Ok((200, body)) if !body.trim().is_empty() => Ok(body.trim().to_string()),
        Ok((200, _)) => Err(IdentityError::Answer {
            url,
            reason: "an empty answer".into(),
        }),
        Ok((status, _)) => Err(IdentityError::Answer {
            url,
            reason: format!("HTTP {status}"),
        }),
        Err(Fail::Connect(reason)) => Err(IdentityError::Unreachable {
            endpoint: hp.to_string(),
            reason,
        }),
        Err(Fail::Io(reason)) => Err(IdentityError::Answer { url, reason }),
    }
}

/// How a request failed.
enum Fail {
    /// No connection was made.
    Connect(String),
    /// Connected, but the exchange failed (reset, timeout, garbage).
    Io(String),
}

/// One HTTP/1.1 request (`Connection: close`); returns status and body.
fn request(
    hp: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), Fail> {
    let addr = hp
        .to_socket_addrs()
        .map_err(|e| Fail::Connect(e.to_string()))?
        .next()
        .ok_or_else(|| Fail::Connect("no address".into()))?;
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| Fail::Connect(e.to_string()))?;
    let io = |e: std::io::Error| Fail::Io(e.to_string());
    s.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    let host = hp.split(':').next().unwrap_or(hp);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(io)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Fail::Io("a malformed answer".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Fail::Io("a malformed status line".into()))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(Fail::Io(
            "chunked answers are not expected from a metadata service".into(),
        ));
    }
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_urls_or_host_ports() {
        assert_eq!(
            host_port(Some("http://127.0.0.1:8080/"), "X_UNSET", "d"),
            "127.0.0.1:8080"
        );
        assert_eq!(host_port(Some("10.0.0.1"), "X_UNSET", "d"), "10.0.0.1:80");
    }
}
