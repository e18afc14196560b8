//! Layouts: the node ids and roles an `ips_layout` describes, in both
//! formats, the way appscale-tools named them.

use std::collections::HashMap;

use super::codes;
use super::keys::{GROUP_KEYS, OLD_ROLES, ROLES, SIMPLE_ROLES, did_you_mean, implied_roles};
use super::plan::{DiskInfo, NodeInfo};
use super::yaml::{Node, Pos, Value};
use super::{Checker, Mode, Severity};

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
            codes::LAYOUT_UNKNOWN_ROLE,
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
                    codes::NODE_ID_FORMAT,
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
                    codes::NODE_ID_FORMAT,
                    format!("`{id}` must be an IP address in cluster mode"),
                    at,
                    Some("set `infrastructure` to use `node-N` ids".into()),
                );
                false
            }
            _ => true,
        }
    }

    /// The old format: `ips_layout` maps role -> node id(s), with either
    /// the simple keys (`controller`, `servers`) or the advanced ones.
    pub(super) fn old_layout(&mut self, layout: &Node, mode: Mode) {
        let entries = layout.as_map().unwrap_or_default();
        let names = || entries.iter().filter_map(|(k, _)| k.scalar());
        let simple = names().any(|s| SIMPLE_ROLES.contains(&s));
        let advanced = names().any(|s| OLD_ROLES.contains(&s));
        let unknown = names().any(|s| !SIMPLE_ROLES.contains(&s) && !OLD_ROLES.contains(&s));
        // appscale-tools named an unknown key first, and mixing only when
        // every key was known.
        if simple && advanced && !unknown {
            self.error(
                codes::LAYOUT_MIXED_FORMAT,
                "Check your node layout and make sure not to mix simple and advanced deployment methods.".into(),
                layout,
                Some("use either `controller`/`servers` or the advanced roles (`master`, `database`, ...)".into()),
            );
        }
        self.facts.format = if simple && !advanced {
            Format::Simple
        } else {
            Format::Advanced
        };
        let both: Vec<&str> = SIMPLE_ROLES.iter().chain(OLD_ROLES).copied().collect();
        let allowed: &[&str] = match (simple, advanced) {
            (true, false) => SIMPLE_ROLES,
            (true, true) => &both,
            _ => OLD_ROLES,
        };
        let mut seen_ips: HashMap<String, Pos> = HashMap::new();
        for (k, v) in entries {
            let Some(role) = k.scalar() else { continue };
            if !allowed.contains(&role) {
                let help = did_you_mean(role, allowed).map(|s| format!("did you mean `{s}`?"));
                self.error(
                    codes::LAYOUT_UNKNOWN_ROLE,
                    format!("The flag {role} is not a supported flag: `{role}` is not a role of the old `ips_layout` format"),
                    k,
                    help.or_else(|| Some(format!("the roles are {}", allowed.join(", ")))),
                );
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
                            codes::DUPLICATE_IP,
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
        self.facts.format = Format::Groups;
        let mut count = 0usize;
        for group in groups {
            let Some(entries) = group.as_map() else {
                self.error(
                    codes::LAYOUT_UNKNOWN_FORMAT,
                    format!(
                        "Node layout format was not recognized: a role group is a mapping, not {}",
                        group.kind()
                    ),
                    group,
                    Some("write `- roles: [master, database]` then `nodes: 1` under it".into()),
                );
                continue;
            };
            self.group_keys(entries);
            let roles = self.group_roles(group);
            let ids = self.group_nodes(group, &roles, mode, count);
            count += ids.len();
            self.group_facts(group, &roles, &ids);
            if let Some(d) = group.get("disks") {
                disk_keys.push(d);
                self.group_disks(group, d, &ids);
            }
        }
    }

    /// A role group's keys: an unknown one is a warning (AppScale ignored
    /// it).
    fn group_keys(&mut self, entries: &[(Node, Node)]) {
        for (k, _) in entries {
            if let Some(name) = k.scalar().filter(|n| !GROUP_KEYS.contains(n)) {
                let help = did_you_mean(name, GROUP_KEYS).map(|s| format!("did you mean `{s}`?"));
                self.warning(
                    codes::UNKNOWN_KEY,
                    format!("unknown key `{name}` in a role group: AppScale ignores it"),
                    k,
                    help,
                );
            }
        }
    }

    /// A role group's roles, each known; none is an error.
    fn group_roles(&mut self, group: &Node) -> Vec<String> {
        let mut roles = Vec::new();
        match group.get("roles") {
            None => self.error(
                codes::BAD_TYPE,
                "a role group needs `roles`".into(),
                group,
                None,
            ),
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
                    self.error(codes::BAD_TYPE, "`roles` is empty".into(), r, None);
                }
            }
        }
        roles
    }

    /// A role group's nodes: a count in cloud mode (ids numbered from
    /// `count`, the nodes of the groups before), IPs in cluster mode.
    fn group_nodes<'a>(
        &mut self,
        group: &'a Node,
        roles: &[String],
        mode: Mode,
        count: usize,
    ) -> Vec<(String, &'a Node)> {
        let mut ids: Vec<(String, &'a Node)> = Vec::new();
        let Some(n) = group.get("nodes") else {
            self.error(
                codes::BAD_TYPE,
                "a role group needs `nodes` (a count, or IP addresses)".into(),
                group,
                None,
            );
            return ids;
        };
        match n.as_int() {
            Some(c) => self.node_count(n, c, roles, mode, count, &mut ids),
            None => self.node_ips(n, roles, mode, &mut ids),
        }
        ids
    }

    /// `nodes: N`: ids `node-<count>` on, in cloud mode.
    fn node_count<'a>(
        &mut self,
        n: &'a Node,
        c: i64,
        roles: &[String],
        mode: Mode,
        count: usize,
        ids: &mut Vec<(String, &'a Node)>,
    ) {
        if c == 0 {
            self.error(
                codes::NODES_ZERO,
                format!(
                    "Node amount cannot be zero for role(s) {}.",
                    roles.join(", ")
                ),
                n,
                Some("remove the group, or give it at least one node".into()),
            );
        } else if !(0..=10_000).contains(&c) {
            self.error(
                codes::BAD_TYPE,
                format!("`nodes` must be a count from 1 to 10000, not {c}"),
                n,
                None,
            );
        } else if mode == Mode::Cluster {
            self.error(
                codes::NODE_ID_FORMAT,
                "a node count needs `infrastructure`; in cluster mode list the nodes' IP addresses"
                    .into(),
                n,
                None,
            );
        } else {
            for i in 0..c as usize {
                ids.push((format!("node-{}", count + i), n));
            }
        }
    }

    /// `nodes: [IP, ...]`, in cluster mode: each an IP address, none twice
    /// in the group (appscale-tools refused an IP twice in one group; in two
    /// groups it is one machine with both groups' roles).
    fn node_ips<'a>(
        &mut self,
        n: &'a Node,
        roles: &[String],
        mode: Mode,
        ids: &mut Vec<(String, &'a Node)>,
    ) {
        let mut seen_ips: HashMap<String, Pos> = HashMap::new();
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        if items.is_empty() {
            self.error(
                codes::NODES_ZERO,
                format!(
                    "Node amount cannot be zero for role(s) {}.",
                    roles.join(", ")
                ),
                n,
                None,
            );
        }
        for item in items {
            if let Some(ip) = self.node_ip(item, mode, &mut seen_ips) {
                ids.push((ip.to_string(), item));
            }
        }
    }

    /// One entry of `nodes: [IP, ...]`: the IP, when it is one, in cluster
    /// mode, and not already in the group (`seen_ips`).
    fn node_ip<'a>(
        &mut self,
        item: &'a Node,
        mode: Mode,
        seen_ips: &mut HashMap<String, Pos>,
    ) -> Option<&'a str> {
        let Some(ip) = item.as_str() else {
            self.bad_type("nodes", "a count or IP addresses", item);
            return None;
        };
        if is_node_id(ip) {
            self.error(
                codes::NODE_ID_FORMAT,
                "using node-id format is not supported with the ips_layout format being used"
                    .into(),
                item,
                Some("give `nodes` a count (cloud) or IP addresses (cluster)".into()),
            );
        } else if !is_ip(ip) {
            self.error(
                codes::NODE_ID_FORMAT,
                format!("`{ip}` is not an IP address"),
                item,
                None,
            );
        } else if mode == Mode::Cloud {
            self.error(
                codes::NODE_ID_FORMAT,
                "with `infrastructure` set, `nodes` is a count of machines to start, not IP addresses".into(),
                item,
                None,
            );
        } else if let Some(first) = seen_ips.get(ip) {
            self.error(
                codes::DUPLICATE_IP,
                format!("Cannot specify the same IP address more than once (`{ip}` is also on line {}).", first.line),
                item,
                None,
            );
        } else {
            seen_ips.insert(ip.to_string(), item.pos);
            return Some(ip);
        }
        None
    }

    /// What the rules over the whole layout need of a group (its masters,
    /// its login role, its instance type), and its nodes added.
    fn group_facts(&mut self, group: &Node, roles: &[String], ids: &[(String, &Node)]) {
        if roles.iter().any(|r| r == "master") {
            for (_, at) in ids {
                self.facts.masters.push((at.pos, at.width()));
            }
        }
        if let Some(r) = group.get("roles")
            && roles.iter().any(|r| r == "login")
        {
            self.facts.logins.push((r.pos, r.width()));
        }
        if self.facts.needs_instance_type && group.get("instance_type").is_none_or(Node::is_null) {
            self.error(
                codes::INSTANCE_TYPE_MISSING,
                "Must set a default instance type or specify instance type per role.".into(),
                group,
                Some("add `instance_type:` to this role group, or a top-level `instance_type:` for every group".into()),
            );
        }
        for (id, at) in ids {
            for role in roles {
                self.add_node(id, role, at);
            }
            if roles.is_empty() {
                self.add_node(id, "", at);
                if let Some(n) = self.lint.deployment.nodes.iter_mut().find(|n| &n.id == id) {
                    n.roles.retain(|r| !r.is_empty());
                }
            }
        }
    }

    /// A group's `disks` (`d`): one name, or a list as long as the group's
    /// nodes.
    fn group_disks(&mut self, group: &Node, d: &Node, ids: &[(String, &Node)]) {
        let names: Vec<&Node> = match &d.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Scalar { .. } if d.is_null() => Vec::new(),
            Value::Scalar { .. } => vec![d],
            Value::Map(_) => {
                self.bad_type("disks", "a disk name or a list of disk names", d);
                return;
            }
        };
        if names.is_empty() {
            self.warning(
                codes::DISKS_EMPTY,
                "`disks` is empty: no disk will be persisted for this group".into(),
                d,
                None,
            );
            return;
        }
        let wanted = match group.get("nodes") {
            Some(n) if n.as_int().is_some() => n.as_int().unwrap_or(0).max(0) as usize,
            _ => ids.len(),
        };
        if names.len() != wanted {
            self.error(
                codes::DISKS_COUNT,
                format!(
                    "When specifying disks you must have the same amount as nodes: {} disk(s) for {wanted} node(s).",
                    names.len()
                ),
                d,
                Some("list one disk per node of this group, in node order".into()),
            );
            return;
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

/// Which layout the nodes came from (appscale-tools checked each its way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Format {
    /// No nodes read yet.
    #[default]
    None,
    /// Old format, `controller`/`servers`.
    Simple,
    /// Old format, `master`, `database`, ...
    Advanced,
    /// The list of role groups.
    Groups,
    /// No `ips_layout`: `min`..`max` machines, laid out by appscale-tools.
    Generated,
}

/// What reading the layout found, for the rules over the whole layout.
#[derive(Debug, Default)]
pub(super) struct LayoutFacts {
    /// The layout's format.
    pub(super) format: Format,
    /// Where each master is declared (role groups: one per node).
    pub(super) masters: Vec<(Pos, usize)>,
    /// Where each role group naming `login` is.
    pub(super) logins: Vec<(Pos, usize)>,
    /// Whether each role group needs an instance type (an AppScale cloud
    /// and no top-level `instance_type`).
    pub(super) needs_instance_type: bool,
    /// Whether the old format's top-level `disks` map gave any disk.
    pub(super) disk_map: bool,
}

impl Checker {
    /// No `ips_layout` in a cloud: appscale-tools (to 3.4) started `min`
    /// machines, `node-1` the controller and the rest servers.
    pub(super) fn generated_layout(&mut self, root: &Node, anchor: &Node) {
        let read = |this: &mut Self, keys: [&str; 2]| -> Option<(i64, Node)> {
            let n = keys
                .iter()
                .find_map(|k| root.get(k).filter(|n| !n.is_null()))?;
            match n.as_int() {
                Some(v) => Some((v, n.clone())),
                None => {
                    this.bad_type(keys[0], "an integer", n);
                    None
                }
            }
        };
        let min = read(self, ["min_machines", "min"]);
        let max = read(self, ["max_machines", "max"]);
        self.facts.format = Format::Generated;
        let Some((max, max_at)) = max else {
            let at = min.as_ref().map_or(anchor, |(_, n)| n);
            self.error(
                codes::SETTING_MISSING,
                "Must specify max if not using a YAML file: without `ips_layout`, AppScale needs the number of machines".into(),
                at,
                Some("add `max_machines: N` (and `min_machines`, which defaults to it), or an `ips_layout`".into()),
            );
            return;
        };
        // appscale-tools set min to max when only max was given.
        let (min, min_at) = min.unwrap_or((max, max_at.clone()));
        let mut ok = true;
        for (value, at, which) in [(min, &min_at, "Min"), (max, &max_at, "Max")] {
            if value < 1 {
                self.error(
                    codes::SETTING_INVALID,
                    format!("{which} cannot be less than 1."),
                    at,
                    Some("start at least one machine".into()),
                );
                ok = false;
            }
        }
        if ok && min > max {
            self.error(
                codes::SETTING_INVALID,
                format!("Min cannot exceed max ({min} > {max})."),
                &min_at,
                Some("make `min_machines` at most `max_machines`".into()),
            );
            ok = false;
        }
        if !ok || min > 10_000 {
            return;
        }
        self.add_node("node-1", "controller", &min_at);
        for i in 2..=min {
            self.add_node(&format!("node-{i}"), "servers", &min_at);
        }
    }

    /// AppScale's rules over the whole layout: one master, a database, a
    /// compute node where required, one login group, and a replication
    /// factor the database nodes can hold. `anchor` is where layout-wide
    /// findings point; `replication` the `replication` (or `n`) setting.
    pub(super) fn role_rules(&mut self, anchor: &Node, replication: Option<(i64, &Node)>) {
        let format = self.facts.format;
        let nodes = self.lint.deployment.nodes.clone();
        if format == Format::None || nodes.is_empty() {
            return;
        }
        let effective: Vec<Vec<&str>> = nodes
            .iter()
            .map(|n| {
                let mut all: Vec<&str> = n.roles.iter().map(String::as_str).collect();
                for r in &n.roles {
                    all.extend(implied_roles(r));
                }
                if format == Format::Simple && nodes.len() == 1 {
                    all.push("appengine");
                }
                all
            })
            .collect();
        let count = |role: &str| effective.iter().filter(|r| r.contains(&role)).count();
        let (what, add) = match format {
            Format::Simple | Format::Generated => ("controller", "`controller: <node>`"),
            Format::Advanced => ("master", "`master: <node>`"),
            _ => (
                "master",
                "a role group with `roles: [master]` and `nodes: 1`",
            ),
        };
        let masters: Vec<(Pos, usize)> = match format {
            Format::Groups => self.facts.masters.clone(),
            _ => nodes
                .iter()
                .zip(&effective)
                .filter(|(_, r)| r.contains(&"shadow"))
                .map(|(n, _)| (n.pos, 1))
                .collect(),
        };
        match masters.as_slice() {
            [] => self.error(
                codes::LAYOUT_NO_MASTER,
                match format {
                    Format::Groups => "Need to specify one master node.".to_string(),
                    _ => format!("No {what} was specified"),
                },
                anchor,
                Some(format!("add {add}")),
            ),
            [_, rest @ ..] => {
                for (pos, width) in rest.iter().take(1) {
                    self.push(
                        Severity::Error,
                        codes::LAYOUT_MANY_MASTERS,
                        format!("Only one {what} is allowed ({} given)", masters.len()),
                        *pos,
                        *width,
                        Some(format!("keep one {what} node: AppScale runs one head node")),
                    );
                }
            }
        }
        let databases = count("database");
        if databases == 0 {
            self.error(
                codes::LAYOUT_NO_DATABASE,
                "At least one database node must be provided.".into(),
                anchor,
                Some("give the `database` role to at least one node".into()),
            );
        }
        if matches!(format, Format::Advanced | Format::Groups) && count("appengine") == 0 {
            let role = if format == Format::Groups {
                "compute"
            } else {
                "appengine"
            };
            self.error(
                codes::LAYOUT_NO_COMPUTE,
                format!("Need to specify at least one {role} node."),
                anchor,
                Some(format!(
                    "give the `{role}` role to at least one node (it serves the apps)"
                )),
            );
        }
        if let [_, second, ..] = self.facts.logins.as_slice() {
            let (pos, width) = *second;
            self.push(
                Severity::Error,
                codes::LAYOUT_MANY_LOGINS,
                "Only one login is allowed.".into(),
                pos,
                width,
                Some("name `login` in one role group only".into()),
            );
        }
        if let Some((factor, at)) = replication
            && databases > 0
            && factor > databases as i64
        {
            self.error(
                codes::REPLICATION_TOO_HIGH,
                format!("Replication factor cannot exceed # of databases ({factor} > {databases} database node(s))."),
                at,
                Some(format!("lower it to at most {databases}, or add database nodes")),
            );
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
            "infrastructure: ec2\nmachine: ami-1\ninstance_type: m3.medium\nzone: us-east-1b\nips_layout:\n- roles: [master, zookeeper]\n  nodes: 1\n  disks: vol-11111111\n- roles: [appengine]\n  nodes: 2\n- roles: database\n  nodes: 2\n  disks: [vol-22222222, vol-33333333]\n",
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
