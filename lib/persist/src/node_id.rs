//! Which node of the plan this machine is (`--node auto`), without any
//! per-node configuration, so that one image and one user-data serve every
//! node. The sources a node can read without a cloud SDK, in order:
//!
//! 1. **its addresses** (cluster mode, where node ids are IP addresses):
//!    the one node whose address this machine has (`ip -o addr`);
//! 2. **its instance's tag** (cloud mode): EC2's instance tag
//!    `appscale-persist:node`, which IMDS serves when the instance's
//!    metadata tags are enabled; Compute Engine's instance metadata
//!    attribute `appscale-persist-node`;
//! 3. **AppScale's own record of its nodes** (`locations-KEYNAME.json`, as
//!    appscale-tools writes it on the tools machine and the head node): the
//!    entry of this instance (its instance id, or one of its addresses), and
//!    the plan's node with that entry's address (cluster mode) or, in cloud
//!    mode, the only one with exactly its roles.
//!
//! The cloud tools add what only the cloud API says (the instance's tags
//! read with DescribeInstances, a volume of this deployment attached here
//! and the node its tag names): [`crate::provider::Provider::this_node`].
//! Nothing is guessed: a source that names no node of the plan, or several,
//! is said, and the next is tried.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::record::{ProviderKind, Record};
use crate::release::identity;
use crate::run::Cmd;

/// The value of `--node` that asks for this machine's node.
pub const AUTO: &str = "auto";

/// The instance tag (EC2) and metadata attribute (Compute Engine) naming a
/// machine's node.
pub const EC2_TAG: &str = "appscale-persist:node";
/// The Compute Engine metadata attribute naming a machine's node.
pub(crate) const GCE_ATTRIBUTE: &str = "appscale-persist-node";

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The metadata service (`--metadata-endpoint`), when not the default.
    pub metadata_endpoint: Option<String>,
    /// AppScale's record of its nodes (`--locations`).
    pub locations: Option<PathBuf>,
}

/// The node found, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The node id.
    pub node: String,
    /// How it was found, for the log.
    pub how: String,
}

/// This machine's addresses (`ip -o addr`, else `hostname -I`).
pub(crate) fn addresses() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(o) = Cmd::new("ip").args(["-o", "addr", "show"]).output() {
        for line in o.stdout.lines() {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                if (w == "inet" || w == "inet6")
                    && let Some(a) = words.next()
                {
                    out.insert(a.split('/').next().unwrap_or(a).to_string());
                }
            }
        }
    }
    if out.is_empty()
        && let Ok(o) = Cmd::new("hostname").arg("-I").output()
    {
        out.extend(o.stdout.split_whitespace().map(str::to_string));
    }
    out
}

/// The plan's nodes (in order, once each) with their roles.
fn nodes(records: &[Record]) -> Vec<(String, BTreeSet<String>)> {
    let mut out: Vec<(String, BTreeSet<String>)> = Vec::new();
    for r in records {
        let Some(n) = &r.node else { continue };
        if out.iter().any(|(m, _)| m == n) {
            continue;
        }
        let roles = r.roles.clone().unwrap_or_default().into_iter().collect();
        out.push((n.clone(), roles));
    }
    out
}

/// Whether a node id is an address (cluster mode).
fn is_address(id: &str) -> bool {
    id.parse::<std::net::IpAddr>().is_ok()
}

/// This machine's node among `records`' (`Ok(None)`: no source names one;
/// an error when a source names a node the plan does not have, or several).
pub fn resolve(
    records: &[Record],
    kind: Option<ProviderKind>,
    src: &Sources,
) -> Result<Option<Found>, String> {
    let nodes = nodes(records);
    if nodes.is_empty() {
        return Ok(None);
    }
    let mine = addresses();
    // 1. Cluster mode: the node whose address is ours.
    if nodes.iter().any(|(n, _)| is_address(n)) {
        let hits: Vec<&String> = nodes
            .iter()
            .map(|(n, _)| n)
            .filter(|n| mine.contains(*n))
            .collect();
        match hits.as_slice() {
            [one] => {
                return Ok(Some(Found {
                    node: one.to_string(),
                    how: "this machine's address".into(),
                }));
            }
            [] => {}
            many => {
                return Err(format!(
                    "this machine has the addresses of several nodes ({}): pass --node",
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    // 2. The instance's tag, from the metadata service.
    let endpoint = src.metadata_endpoint.as_deref();
    let tagged = match kind {
        Some(ProviderKind::Ec2 | ProviderKind::Euca) => {
            identity::ec2_value(endpoint, &format!("tags/instance/{EC2_TAG}"))
                .ok()
                .flatten()
                .map(|n| (n, format!("the instance's tag {EC2_TAG} (IMDS)")))
        }
        Some(ProviderKind::Gce) => {
            identity::gce_value(endpoint, &format!("instance/attributes/{GCE_ATTRIBUTE}"))
                .ok()
                .flatten()
                .map(|n| {
                    (
                        n,
                        format!("the instance's metadata attribute {GCE_ATTRIBUTE}"),
                    )
                })
        }
        _ => None,
    };
    if let Some((node, how)) = tagged {
        if !nodes.iter().any(|(n, _)| *n == node) {
            return Err(format!(
                "{how} says `{node}`, which is not a node of the plan"
            ));
        }
        return Ok(Some(Found { node, how }));
    }
    // 3. AppScale's own record of its nodes.
    if let Some(path) = &src.locations {
        return from_locations(path, &nodes, kind, endpoint, &mine);
    }
    Ok(None)
}

/// This machine's node by AppScale's record at `path`.
fn from_locations(
    path: &Path,
    nodes: &[(String, BTreeSet<String>)],
    kind: Option<ProviderKind>,
    endpoint: Option<&str>,
    mine: &BTreeSet<String>,
) -> Result<Option<Found>, String> {
    let shown = path.display();
    if !path.exists() {
        return Ok(None);
    }
    let entries = read_locations(path)?;
    let instance = match kind {
        Some(ProviderKind::Ec2 | ProviderKind::Euca) => identity::ec2(endpoint).ok().map(|i| i.id),
        Some(ProviderKind::Gce) => identity::gce(endpoint).ok().map(|i| i.name),
        _ => None,
    };
    let this = entries.iter().find(|e| {
        let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        instance.as_deref().is_some_and(|i| s("instance_id") == i)
            || mine.contains(&s("private_ip"))
            || mine.contains(&s("public_ip"))
    });
    let Some(this) = this else {
        return Ok(None);
    };
    let how = format!("AppScale's record of its nodes ({shown})");
    // Cluster mode: the node is its address.
    for k in ["private_ip", "public_ip"] {
        if let Some(ip) = this[k].as_str()
            && nodes.iter().any(|(n, _)| n == ip)
        {
            return Ok(Some(Found {
                node: ip.to_string(),
                how,
            }));
        }
    }
    // Cloud mode: the one node of the plan with exactly its roles.
    let roles = entry_roles(this);
    let same: Vec<&String> = nodes
        .iter()
        .filter(|(_, r)| *r == roles)
        .map(|(n, _)| n)
        .collect();
    match same.as_slice() {
        [one] => Ok(Some(Found {
            node: one.to_string(),
            how,
        })),
        [] => Err(format!(
            "{how}: this instance runs {}, which no node of the plan does",
            roles.into_iter().collect::<Vec<_>>().join(", ")
        )),
        many => Err(format!(
            "{how}: nodes {} all run this instance's roles: tag the instance ({EC2_TAG}) or pass --node",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// AppScale's record at `path`: each entry's instance id, addresses and
/// roles.
fn read_locations(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{shown}: not AppScale's record: {e}"))?;
    v["node_info"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("{shown}: no node_info list (not AppScale's locations file)"))
}

/// The roles of an entry of AppScale's record (`jobs`, or `roles`).
fn entry_roles(e: &serde_json::Value) -> BTreeSet<String> {
    e["jobs"]
        .as_array()
        .or_else(|| e["roles"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|j| j.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Fills each record's `instance` from AppScale's record at `path`, for
/// the controller's half of `up` (it attaches each disk to its node's
/// instance): a node's entry is the one with its address (cluster mode),
/// or, in cloud mode, the one entry with its roles when no other node has
/// them. Records naming an instance keep it. Returns the nodes left
/// without one (several nodes with the same roles: tag their instances
/// instead, or name them in the inventory).
pub fn instances_from_locations(
    records: &mut [Record],
    path: &Path,
) -> Result<Vec<String>, String> {
    let entries = read_locations(path)?;
    let nodes = nodes(records);
    let mut left = Vec::new();
    for (node, roles) in &nodes {
        let ip = |e: &&serde_json::Value| {
            ["private_ip", "public_ip"]
                .iter()
                .any(|k| e[*k].as_str() == Some(node.as_str()))
        };
        let entry = if is_address(node) {
            entries.iter().find(ip)
        } else {
            let twins = nodes.iter().filter(|(_, r)| r == roles).count();
            let same: Vec<&serde_json::Value> = entries
                .iter()
                .filter(|e| entry_roles(e) == *roles)
                .collect();
            match (twins, same.as_slice()) {
                (1, [one]) => Some(*one),
                _ => None,
            }
        };
        match entry
            .and_then(|e| e["instance_id"].as_str())
            .filter(|i| !i.is_empty())
        {
            Some(id) => {
                for r in records
                    .iter_mut()
                    .filter(|r| r.node.as_deref() == Some(node))
                {
                    if r.instance.is_none() {
                        r.instance = Some(id.to_string());
                    }
                }
            }
            None => left.push(node.clone()),
        }
    }
    Ok(left)
}

/// The records of `node` only.
pub fn only(records: Vec<Record>, node: &str) -> Vec<Record> {
    records
        .into_iter()
        .filter(|r| r.node.as_deref() == Some(node))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(node: &str, roles: &[&str]) -> Record {
        Record {
            node: Some(node.into()),
            roles: Some(roles.iter().map(|r| r.to_string()).collect()),
            ..Record::default()
        }
    }

    #[test]
    fn appscales_record_names_a_node_by_address_or_unique_roles() {
        let dir = std::env::temp_dir().join(format!("node-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("locations-k.json");
        let ours = addresses()
            .into_iter()
            .next()
            .unwrap_or_else(|| "127.0.0.1".into());
        std::fs::write(
            &path,
            format!(r#"{{"node_info": [{{"public_ip": "203.0.113.9", "private_ip": "10.9.9.9", "jobs": ["appengine"]}}, {{"public_ip": "{ours}", "private_ip": "{ours}", "jobs": ["database", "master", "zookeeper"]}}]}}"#),
        )
        .unwrap();
        let recs = [
            rec("node-0", &["master", "database", "zookeeper"]),
            rec("node-1", &["appengine"]),
        ];
        let src = Sources {
            locations: Some(path.clone()),
            ..Sources::default()
        };
        let found = resolve(&recs, Some(ProviderKind::Local), &src)
            .unwrap()
            .unwrap();
        assert_eq!(found.node, "node-0");
        // Two nodes with its roles: not guessed.
        let twins = [
            rec("node-0", &["master", "database", "zookeeper"]),
            rec("node-1", &["master", "database", "zookeeper"]),
        ];
        assert!(
            resolve(&twins, Some(ProviderKind::Local), &src)
                .unwrap_err()
                .contains("node-0, node-1")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
