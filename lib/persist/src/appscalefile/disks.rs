//! Disk rules: the old format's top-level `disks` map, and the rules over
//! every disk (infrastructure, zone, names, uniqueness, roles).

use std::collections::{BTreeMap, HashMap};

use crate::record::ProviderKind;

use super::codes;
use super::keys::{DATA_ROLES, did_you_mean};
use super::layout::Format;
use super::layout::is_ip;
use super::plan::{DiskInfo, NodeInfo};
use super::yaml::{Node, Pos, Value};
use super::{Checker, Severity};

impl Checker {
    /// The old format's top-level `disks:` map of node id -> disk.
    pub(super) fn top_level_disks(&mut self, d: &Node, format: Format) {
        let entries = match &d.value {
            Value::Map(m) => m,
            _ if d.is_null() => {
                self.warning(
                    codes::DISKS_EMPTY,
                    "`disks` is empty: no disk will be persisted".into(),
                    d,
                    None,
                );
                return;
            }
            _ => {
                self.error(
                    codes::BAD_TYPE,
                    format!(
                        "--disks must be a dict: `disks` maps node ids to disks, not {}",
                        d.kind()
                    ),
                    d,
                    Some("write `disks:` then `  node-1: vol-...` lines under it".into()),
                );
                return;
            }
        };
        if entries.is_empty() {
            self.warning(
                codes::DISKS_EMPTY,
                "`disks` is empty: no disk will be persisted".into(),
                d,
                None,
            );
            return;
        }
        for (k, v) in entries {
            let Some(node) = k.as_str() else {
                self.bad_type("a key of `disks`", "a node id", k);
                continue;
            };
            let Some(disk) = v.as_str() else {
                self.bad_type(&format!("the disk of {node}"), "a disk name", v);
                continue;
            };
            let known = self.lint.deployment.nodes.iter().any(|n| n.id == node);
            if !known {
                let ids: Vec<&str> = self
                    .lint
                    .deployment
                    .nodes
                    .iter()
                    .map(|n| n.id.as_str())
                    .collect();
                let suggestion = did_you_mean(node, &ids)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                let help = if format == Format::Generated {
                    Some(format!(
                        "without `ips_layout`, AppScale named the machines node-1 (the controller) to node-N, N = `min_machines`: here {}{suggestion}",
                        ids.join(", ")
                    ))
                } else if ids.is_empty() {
                    None
                } else {
                    Some(format!(
                        "the layout's nodes are {}{}",
                        ids.join(", "),
                        did_you_mean(node, &ids)
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default()
                    ))
                };
                self.error(
                    codes::DISK_UNKNOWN_NODE,
                    format!("disk `{disk}` is for node `{node}`, which the layout does not have: AppScale would silently give it to no node"),
                    k,
                    help,
                );
                continue;
            }
            self.lint.deployment.disks.push(DiskInfo {
                node: node.to_string(),
                disk: disk.to_string(),
                pos: v.pos,
            });
        }
        self.facts.disk_map = true;
    }

    /// Rules over all disks: infrastructure, zone, names, uniqueness, roles.
    pub(super) fn disk_rules(
        &mut self,
        infrastructure: Option<&(String, &Node)>,
        zone: Option<&str>,
        disk_keys: &[&Node],
    ) {
        let disks = self.lint.deployment.disks.clone();
        let with_disks: Vec<&&Node> = disk_keys.iter().filter(|d| !d.is_null()).collect();
        let go_on = match infrastructure {
            None => self.disks_without_cloud(&disks, &with_disks),
            Some((name, at)) => self.disks_in_cloud(name, at, zone, &with_disks),
        };
        if !go_on {
            return;
        }
        self.disk_names(&disks);
        let by_node = self.disks_by_node(&disks);
        let nodes = self.lint.deployment.nodes.clone();
        let missing = self.disks_missing(&nodes, &by_node);
        self.disks_and_roles(&nodes, &by_node, &missing);
    }

    /// Disks without `infrastructure`: device paths on a cluster's nodes
    /// are the static provider's (a kernel name is a warning); anything
    /// else is an error. Whether the other disk rules apply.
    fn disks_without_cloud(&mut self, disks: &[DiskInfo], with_disks: &[&&Node]) -> bool {
        let paths = disks.iter().all(|d| d.disk.starts_with("/dev/"));
        let cluster = self.lint.deployment.nodes.iter().all(|n| is_ip(&n.id));
        if !disks.is_empty() && paths && cluster {
            self.lint.deployment.provider = Some(ProviderKind::Static);
            for d in disks
                .iter()
                .filter(|d| crate::blockdev::is_kernel_name(std::path::Path::new(&d.disk)))
            {
                self.push(
                    Severity::Warning,
                    codes::DISK_KERNEL_NAME,
                    format!(
                        "`{}` is a kernel name: another disk may have it after a reboot, or once a disk is added",
                        d.disk
                    ),
                    d.pos,
                    d.disk.len(),
                    Some("name the disk by a link that lasts: `/dev/disk/by-id/...` (`ls -l /dev/disk/by-id` on the node)".into()),
                );
            }
            return true;
        }
        for key in with_disks {
            if cluster && !self.lint.deployment.nodes.is_empty() {
                self.error(
                        codes::DISKS_IN_CLUSTER,
                        "disks in cluster mode must be block device paths (`/dev/...`)".into(),
                        key,
                        Some("give each node a device path (the static provider), or set `infrastructure`".into()),
                    );
            } else {
                self.error(
                    codes::DISKS_WITHOUT_INFRASTRUCTURE,
                    "Can't specify persistent disks when infrastructure is not specified.".into(),
                    key,
                    Some("set `infrastructure` (ec2, euca, gce, or local for image files)".into()),
                );
            }
        }
        false
    }

    /// Disks on infrastructure `name` (at `at`): one it cannot manage them
    /// on is an error (and the other disk rules do not apply); a cloud
    /// needs a `zone`. Whether the other disk rules apply.
    fn disks_in_cloud(
        &mut self,
        name: &str,
        at: &Node,
        zone: Option<&str>,
        with_disks: &[&&Node],
    ) -> bool {
        if matches!(name, "azure" | "openstack") && !with_disks.is_empty() {
            self.error(
                codes::DISKS_UNSUPPORTED_INFRASTRUCTURE,
                format!("appscale-persist cannot manage disks on `{name}`"),
                at,
                Some("supported: ec2, euca, gce, local".into()),
            );
            return false;
        }
        if matches!(name, "ec2" | "euca" | "gce") && zone.is_none() {
            for key in with_disks {
                self.error(
                    codes::DISKS_WITHOUT_ZONE,
                    "Need an availability zone specified when persistent disks are specified."
                        .into(),
                    key,
                    Some("add a top-level `zone:`; the disks must live in it".into()),
                );
            }
        }
        true
    }

    /// Each disk's name, valid for the provider and given once.
    fn disk_names(&mut self, disks: &[DiskInfo]) {
        let provider = self.lint.deployment.provider;
        let mut first_use: HashMap<&str, &DiskInfo> = HashMap::new();
        for d in disks {
            if let Some(p) = provider
                && let Err(why) = check_disk_name(p, &d.disk)
            {
                let width = d.disk.chars().count();
                self.push(
                    Severity::Error,
                    codes::DISK_NAME_INVALID,
                    format!("`{}` is not a valid {p} disk: {why}", d.disk),
                    d.pos,
                    width,
                    None,
                );
            }
            match first_use.get(d.disk.as_str()) {
                Some(first) => {
                    let width = d.disk.chars().count();
                    self.push(
                        Severity::Error,
                        codes::DISK_DUPLICATE,
                        format!(
                            "Please specify a unique disk for every node: `{}` is given to {} (line {}) and to {}.",
                            d.disk, first.node, first.pos.line, d.node
                        ),
                        d.pos,
                        width,
                        None,
                    );
                }
                None => {
                    first_use.insert(&d.disk, d);
                }
            }
        }
    }

    /// Each node's disk: a machine given two (in two role groups) is an
    /// error.
    fn disks_by_node<'d>(&mut self, disks: &'d [DiskInfo]) -> BTreeMap<&'d str, &'d DiskInfo> {
        let mut by_node: BTreeMap<&str, &DiskInfo> = BTreeMap::new();
        for d in disks {
            if let Some(first) = by_node.get(d.node.as_str()) {
                // One machine in two role groups, each giving it a disk.
                self.push(
                    Severity::Error,
                    codes::NODE_TWO_DISKS,
                    format!(
                        "node {} gets a second disk `{}` (it has `{}` on line {}): AppScale kept only the last, and the first holds nothing",
                        d.node, d.disk, first.disk, first.pos.line
                    ),
                    d.pos,
                    d.disk.chars().count(),
                    Some("give a machine listed in several role groups its disk in one group only".into()),
                );
                continue;
            }
            by_node.insert(&d.node, d);
        }
        by_node
    }

    /// The old format's map needed a disk for every node (or, with
    /// `data_nodes_only`, every node that keeps data): the nodes without,
    /// one error per place. Their ids.
    fn disks_missing<'n>(
        &mut self,
        nodes: &'n [NodeInfo],
        by_node: &BTreeMap<&str, &DiskInfo>,
    ) -> Vec<&'n str> {
        let mut missing: BTreeMap<Pos, Vec<&NodeInfo>> = BTreeMap::new();
        if self.facts.disk_map {
            for n in nodes {
                if !by_node.contains_key(n.id.as_str())
                    && (!self.options.data_nodes_only || n.holds_data())
                {
                    missing.entry(n.pos).or_default().push(n);
                }
            }
        }
        for (pos, group) in &missing {
            let who: Vec<String> = group
                .iter()
                .map(|n| format!("{} ({})", n.id, n.roles.join(", ")))
                .collect();
            self.push(
                Severity::Error,
                codes::DISK_MISSING,
                format!(
                    "Please specify a disk for every node: {} {} none in `disks`",
                    who.join(", "),
                    if group.len() == 1 { "has" } else { "have" }
                ),
                *pos,
                1,
                Some(if self.options.data_nodes_only {
                    "add a `node-N: disk` line under `disks:` for it (it keeps data)".into()
                } else {
                    "add a `node-N: disk` line under `disks:` for it (AppScale required one on every node; --data-nodes-only asks only for nodes that keep data)".into()
                }),
            );
        }
        missing.values().flatten().map(|n| n.id.as_str()).collect()
    }

    /// Roles against disks: a disk on a node that keeps no data (info); a
    /// node that keeps data without a disk, where disks persist (a warning
    /// per place, [`Self::data_without_disk`]).
    fn disks_and_roles(
        &mut self,
        nodes: &[NodeInfo],
        by_node: &BTreeMap<&str, &DiskInfo>,
        missing: &[&str],
    ) {
        let provider = self.lint.deployment.provider;
        let persisting = matches!(provider, Some(p) if p.is_cloud() || p == ProviderKind::Local);
        let mut bare: BTreeMap<Pos, Vec<&NodeInfo>> = BTreeMap::new();
        for n in nodes {
            match by_node.get(n.id.as_str()) {
                None if persisting && n.holds_data() && !missing.contains(&n.id.as_str()) => {
                    bare.entry(n.pos).or_default().push(n)
                }
                Some(d) if !n.holds_data() && !n.roles.is_empty() => self.push(
                    Severity::Info,
                    codes::DISK_ON_STATELESS_NODE,
                    format!(
                        "node {} ({}) keeps no data under the mountpoint; its disk `{}` is unused",
                        n.id,
                        n.roles.join(", "),
                        d.disk
                    ),
                    d.pos,
                    d.disk.chars().count(),
                    None,
                ),
                _ => {}
            }
        }
        self.data_without_disk(bare);
    }

    /// One warning per place for the nodes that keep data but have no disk.
    fn data_without_disk(&mut self, bare: BTreeMap<Pos, Vec<&NodeInfo>>) {
        for (pos, group) in bare {
            let ids: Vec<&str> = group.iter().map(|n| n.id.as_str()).collect();
            let roles: Vec<&str> = group[0]
                .roles
                .iter()
                .map(String::as_str)
                .filter(|r| DATA_ROLES.contains(r))
                .collect();
            let (who, has) = if ids.len() == 1 {
                (format!("node {}", ids[0]), "has")
            } else {
                (format!("nodes {}", ids.join(", ")), "have")
            };
            self.push(
                Severity::Warning,
                codes::DATA_NODE_WITHOUT_DISK,
                format!("{who} hold{} data ({}) but {has} no disk: the data will not survive `appscale down`", if ids.len() == 1 { "s" } else { "" }, roles.join(", ")),
                pos,
                1,
                Some("give it a disk".into()),
            );
        }
    }
}

/// Checks a disk name against what its provider accepts.
pub fn check_disk_name(provider: ProviderKind, name: &str) -> Result<(), String> {
    let hex = |s: &str, upper: bool| {
        (s.len() == 8 || s.len() == 17)
            && s.bytes().all(|b| {
                b.is_ascii_digit()
                    || (b'a'..=b'f').contains(&b)
                    || (upper && (b'A'..=b'F').contains(&b))
            })
    };
    match provider {
        ProviderKind::Ec2 | ProviderKind::Euca => {
            let upper = provider == ProviderKind::Euca;
            match name.strip_prefix("vol-") {
                Some(id) if hex(id, upper) => Ok(()),
                Some(_) => Err(format!(
                    "a volume id is `vol-` and 8 or 17 {}hex digits (any other name is looked up as a Name tag, but not one starting with `vol-`)",
                    if upper { "" } else { "lowercase " }
                )),
                None if name.is_empty() || name.chars().count() > 255 => {
                    Err("a Name tag is 1 to 255 characters".into())
                }
                None => Ok(()),
            }
        }
        ProviderKind::Gce => {
            let b = name.as_bytes();
            let ok = !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_lowercase()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[b.len() - 1] != b'-';
            if ok {
                Ok(())
            } else {
                Err("Compute Engine names are 1-63 characters of lowercase letters, digits and `-`, start with a letter and do not end with `-` (RFC 1035)".into())
            }
        }
        ProviderKind::Local => crate::provider::local::check_name(name),
        ProviderKind::Static => {
            if name.starts_with("/dev/") && !name.contains("/../") && !name.ends_with('/') {
                Ok(())
            } else {
                Err("a static disk is a block device path under /dev".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_follow_their_provider() {
        assert!(check_disk_name(ProviderKind::Ec2, "vol-0123456789abcdef0").is_ok());
        assert!(check_disk_name(ProviderKind::Ec2, "vol-1234abcd").is_ok());
        assert!(check_disk_name(ProviderKind::Ec2, "vol-ABCDEFG").is_err());
        assert!(
            check_disk_name(ProviderKind::Ec2, "my-data").is_ok(),
            "a Name tag"
        );
        assert!(check_disk_name(ProviderKind::Euca, "vol-4D9B3BF9").is_ok());
        assert!(check_disk_name(ProviderKind::Gce, "mydisk1").is_ok());
        assert!(check_disk_name(ProviderKind::Gce, "My_Disk").is_err());
        assert!(check_disk_name(ProviderKind::Gce, "disk-").is_err());
        assert!(check_disk_name(ProviderKind::Gce, &"a".repeat(64)).is_err());
        assert!(check_disk_name(ProviderKind::Static, "/dev/sdb").is_ok());
        assert!(check_disk_name(ProviderKind::Static, "sdb").is_err());
    }
}
