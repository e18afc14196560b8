//! This instance's name, zone and project from the metadata server
//! (`--self`), over plain HTTP as the server speaks it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use appscale_persist::step::Failure;

/// This instance, as the metadata server describes it.
#[derive(Debug, Clone)]
pub struct Me {
    /// Instance name.
    pub name: String,
    /// Zone (the last segment of `projects/N/zones/Z`).
    pub zone: String,
    /// Project id.
    pub project: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// Reads name, zone and project. `host` (`host:port`, optionally with
/// `http://`) overrides `GCE_METADATA_HOST` and the default
/// `metadata.google.internal`.
pub fn me(host: Option<&str>) -> Result<Me, Failure> {
    let host = host
        .map(str::to_string)
        .or_else(|| std::env::var("GCE_METADATA_HOST").ok())
        .unwrap_or_else(|| "metadata.google.internal".into());
    let host = host
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let get = |path: &str| get(&host, &format!("/computeMetadata/v1/{path}"));
    let zone = get("instance/zone")?;
    Ok(Me {
        name: get("instance/name")?,
        zone: zone.rsplit('/').next().unwrap_or(&zone).to_string(),
        project: get("project/project-id")?,
    })
}

fn get(host: &str, path: &str) -> Result<String, Failure> {
    let fail = |why: String| {
        Failure::new(
            "metadata",
            format!("reading http://{host}{path} from the metadata server: {why}"),
        )
    };
    let with_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| fail(e.to_string()))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n").map_err(|e| fail(e.to_string()))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("malformed answer".into()))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(fail(format!("HTTP {status}")));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(fail(
            "chunked answers are not expected from the metadata server".into(),
        ));
    }
    Ok(body.trim().to_string())
}
