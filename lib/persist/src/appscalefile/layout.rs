//! Layouts: the node ids and roles an `ips_layout` describes, in both
//! formats, the way appscale-tools named them.

use std::collections::HashMap;

use super::keys::{GROUP_KEYS, ROLES, SIMPLE_ROLES, did_you_mean};
use super::plan::{DiskInfo, NodeInfo};
use super::yaml::{Node, Pos, Value};
use super::{Checker, Mode};

impl Checker {
    /// Adds a node, or a role to a node already known.
    fn add_node(&mut self, id: &str, role: &str, at: &Node) {
        let nodes = &mut self.lint.deployment.nodes;
        match nodes.iter_mut().find(|n| n.id == id) {
            Some(n) => {
                if !n.roles.iter().any(|r| r == role) {
                    n.roles.push(role.to_string());
                }
            }
            None => nodes.push(NodeInfo {
                id: id.to_string(),
                roles: vec![role.to_string()],
                pos: at.pos,
            }),
        }
    }

    /// Checks a role name; returns whether it is known.
    fn role(&mut self, name: &str, at: &Node, allowed: &[&str]) -> bool {
        if allowed.contains(&name) {
            return true;
        }
        let help = did_you_mean(name, allowed).map(|s| format!("did you mean `{s}`?"));
        self.error(
            "layout-unknown-role",
            format!("unknown role `{name}`"),
            at,
            help,
        );
        false
    }

    /// Checks a node id written in the old format.
    fn node_id(&mut self, id: &str, at: &Node, mode: Mode) -> bool {
        match mode {
            Mode::Cloud if !is_node_id(id) => {
                self.error(
                    "node-id-format",
                    format!("`{id}` is not a valid node ID (must be node-int)"),
                    at,
                    Some(
                        "with `infrastructure` set, nodes are named `node-1`, `node-2`, ...".into(),
                    ),
                );
                false
            }
            Mode::Cluster if !is_ip(id) => {
                self.error(
                    "node-id-format",
                    format!("`{id}` must be an IP address in cluster mode"),
                    at,
                    Some("set `infrastructure` to use `node-N` ids".into()),
                );
                false
            }
            _ => true,
        }
    }

    /// The old format: `ips_layout` maps role -> node id(s).
    pub(super) fn old_layout(&mut self, layout: &Node, mode: Mode) {
        let entries = layout.as_map().unwrap_or_default();
        let simple = entries
            .iter()
            .any(|(k, _)| k.scalar().is_some_and(|s| SIMPLE_ROLES.contains(&s)));
        let advanced = entries
            .iter()
            .any(|(k, _)| k.scalar().is_some_and(|s| !SIMPLE_ROLES.contains(&s)));
        if simple && advanced {
            self.error(
                "layout-mixed-format",
                "Check your node layout and make sure not to mix simple and advanced deployment methods.".into(),
                layout,
                Some("use either `controller`/`servers` or the advanced roles (`master`, `database`, ...)".into()),
            );
        }
        let both: Vec<&str> = SIMPLE_ROLES.iter().chain(ROLES).copied().collect();
        let allowed: &[&str] = match (simple, advanced) {
            (true, false) => SIMPLE_ROLES,
            (true, true) => &both,
            _ => ROLES,
        };
        let mut seen_ips: HashMap<String, Pos> = HashMap::new();
        for (k, v) in entries {
            let Some(role) = k.scalar() else { continue };
            if !self.role(role, k, allowed) {
                continue;
            }
            let ids: Vec<&Node> = match &v.value {
                Value::Seq(items) => items.iter().collect(),
                Value::Scalar { .. } if v.is_null() => continue,
                Value::Scalar { .. } => vec![v],
                Value::Map(_) => {
                    self.bad_type(role, "a node id or a list of node ids", v);
                    continue;
                }
            };
            for id_node in ids {
                let Some(id) = id_node.as_str() else {
                    self.bad_type(role, "a node id or a list of node ids", id_node);
                    continue;
                };
                if !self.node_id(id, id_node, mode) {
                    continue;
                }
                if simple && !advanced {
                    if let Some(first) = seen_ips.get(id) {
                        self.error(
                            "duplicate-ip",
                            format!("Cannot specify the same IP address more than once (`{id}` is also on line {}).", first.line),
                            id_node,
                            None,
                        );
                        continue;
                    }
                    seen_ips.insert(id.to_string(), id_node.pos);
                }
                self.add_node(id, role, id_node);
            }
        }
    }

    /// The new format: a list of role groups.
    pub(super) fn new_layout<'a>(
        &mut self,
        groups: &'a [Node],
        mode: Mode,
        disk_keys: &mut Vec<&'a Node>,
    ) {
        let mut count = 0usize;
        let mut seen_ips: HashMap<String, Pos> = HashMap::new();
        for group in groups {
            let Some(entries) = group.as_map() else {
                self.error(
                    "layout-unknown-format",
                    format!(
                        "Node layout format was not recognized: a role group is a mapping, not {}",
                        group.kind()
                    ),
                    group,
                    Some("write `- roles: [master, database]` then `nodes: 1` under it".into()),
                );
                continue;
            };
            for (k, _) in entries {
                if let Some(name) = k.scalar().filter(|n| !GROUP_KEYS.contains(n)) {
                    let help =
                        did_you_mean(name, GROUP_KEYS).map(|s| format!("did you mean `{s}`?"));
                    self.warning(
                        "unknown-key",
                        format!("unknown key `{name}` in a role group: AppScale ignores it"),
                        k,
                        help,
                    );
                }
            }
            // Roles.
            let mut roles = Vec::new();
            match group.get("roles") {
                None => self.error("bad-type", "a role group needs `roles`".into(), group, None),
                Some(r) => {
                    let items: Vec<&Node> = match &r.value {
                        Value::Seq(items) => items.iter().collect(),
                        _ => vec![r],
                    };
                    for item in items {
                        match item.as_str() {
                            Some(name) => {
                                if self.role(name, item, ROLES) {
                                    roles.push(name.to_string());
                                }
                            }
                            None => self.bad_type("roles", "a role or a list of roles", item),
                        }
                    }
                    if roles.is_empty() && r.as_seq().is_some_and(|s| s.is_empty()) {
                        self.error("bad-type", "`roles` is empty".into(), r, None);
                    }
                }
            }
            // Nodes: a count in cloud mode, IPs in cluster mode.
            let mut ids: Vec<(String, &Node)> = Vec::new();
            match group.get("nodes") {
                None => self.error(
                    "bad-type",
                    "a role group needs `nodes` (a count, or IP addresses)".into(),
                    group,
                    None,
                ),
                Some(n) => {
                    if let Some(c) = n.as_int() {
                        if c == 0 {
                            self.error(
                                "nodes-zero",
                                format!(
                                    "Node amount cannot be zero for role(s) {}.",
                                    roles.join(", ")
                                ),
                                n,
                                Some("remove the group, or give it at least one node".into()),
                            );
                        } else if !(0..=10_000).contains(&c) {
                            self.error(
                                "bad-type",
                                format!("`nodes` must be a count from 1 to 10000, not {c}"),
                                n,
                                None,
                            );
                        } else if mode == Mode::Cluster {
                            self.error(
                                "node-id-format",
                                "a node count needs `infrastructure`; in cluster mode list the nodes' IP addresses".into(),
                                n,
                                None,
                            );
                        } else {
                            for i in 0..c as usize {
                                ids.push((format!("node-{}", count + i), n));
                            }
                        }
                    } else {
                        let items: Vec<&Node> = match &n.value {
                            Value::Seq(items) => items.iter().collect(),
                            _ => vec![n],
                        };
                        if items.is_empty() {
                            self.error(
                                "nodes-zero",
                                format!(
                                    "Node amount cannot be zero for role(s) {}.",
                                    roles.join(", ")
                                ),
                                n,
                                None,
                            );
                        }
                        for item in items {
                            let Some(ip) = item.as_str() else {
                                self.bad_type("nodes", "a count or IP addresses", item);
                                continue;
                            };
                            if is_node_id(ip) {
                                self.error(
                                    "node-id-format",
                                    "using node-id format is not supported with the ips_layout format being used".into(),
                                    item,
                                    Some("give `nodes` a count (cloud) or IP addresses (cluster)".into()),
                                );
                            } else if !is_ip(ip) {
                                self.error(
                                    "node-id-format",
                                    format!("`{ip}` is not an IP address"),
                                    item,
                                    None,
                                );
                            } else if mode == Mode::Cloud {
                                self.error(
                                    "node-id-format",
                                    "with `infrastructure` set, `nodes` is a count of machines to start, not IP addresses".into(),
                                    item,
                                    None,
                                );
                            } else if let Some(first) = seen_ips.get(ip) {
                                self.error(
                                    "duplicate-ip",
                                    format!("Cannot specify the same IP address more than once (`{ip}` is also on line {}).", first.line),
                                    item,
                                    None,
                                );
                            } else {
                                seen_ips.insert(ip.to_string(), item.pos);
                                ids.push((ip.to_string(), item));
                            }
                        }
                    }
                }
            }
            count += ids.len();
            for (id, at) in &ids {
                for role in &roles {
                    self.add_node(id, role, at);
                }
                if roles.is_empty() {
                    self.add_node(id, "", at);
                    if let Some(n) = self.lint.deployment.nodes.iter_mut().find(|n| &n.id == id) {
                        n.roles.retain(|r| !r.is_empty());
                    }
                }
            }
            // Disks: one name, or a list as long as the group's nodes.
            let Some(d) = group.get("disks") else {
                continue;
            };
            disk_keys.push(d);
            let names: Vec<&Node> = match &d.value {
                Value::Seq(items) => items.iter().collect(),
                Value::Scalar { .. } if d.is_null() => Vec::new(),
                Value::Scalar { .. } => vec![d],
                Value::Map(_) => {
                    self.bad_type("disks", "a disk name or a list of disk names", d);
                    continue;
                }
            };
            if names.is_empty() {
                self.warning(
                    "disks-empty",
                    "`disks` is empty: no disk will be persisted for this group".into(),
                    d,
                    None,
                );
                continue;
            }
            let wanted = match group.get("nodes") {
                Some(n) if n.as_int().is_some() => n.as_int().unwrap_or(0).max(0) as usize,
                _ => ids.len(),
            };
            if names.len() != wanted {
                self.error(
                    "disks-count",
                    format!(
                        "When specifying disks you must have the same amount as nodes: {} disk(s) for {wanted} node(s).",
                        names.len()
                    ),
                    d,
                    Some("list one disk per node of this group, in node order".into()),
                );
                continue;
            }
            for ((id, _), name) in ids.iter().zip(names) {
                match name.as_str() {
                    Some(disk) => self.lint.deployment.disks.push(DiskInfo {
                        node: id.clone(),
                        disk: disk.to_string(),
                        pos: name.pos,
                    }),
                    None => self.bad_type("disks", "a disk name or a list of disk names", name),
                }
            }
        }
    }
}

/// Whether `s` is an old-format cloud node id (`node-<integer>`).
pub(super) fn is_node_id(s: &str) -> bool {
    s.strip_prefix("node-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `s` is an IPv4 address (AppScale's own test: four dotted numbers).
pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::lint;

    #[test]
    fn new_format_names_nodes_across_groups() {
        let l = lint(
            "infrastructure: ec2\nzone: us-east-1b\nips_layout:\n- roles: [master, zookeeper]\n  nodes: 1\n  disks: vol-11111111\n- roles: [appengine]\n  nodes: 2\n- roles: database\n  nodes: 2\n  disks: [vol-22222222, vol-33333333]\n",
        );
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        let ids: Vec<_> = l.deployment.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["node-0", "node-1", "node-2", "node-3", "node-4"]);
        let disks: Vec<_> = l
            .deployment
            .disks
            .iter()
            .map(|d| (d.node.as_str(), d.disk.as_str()))
            .collect();
        assert_eq!(
            disks,
            [
                ("node-0", "vol-11111111"),
                ("node-3", "vol-22222222"),
                ("node-4", "vol-33333333")
            ]
        );
    }
}
