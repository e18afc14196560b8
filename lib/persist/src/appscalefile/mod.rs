//! AppScalefiles: parse both layout formats, check them, and plan disks.
//!
//! [`lint`] reads a file's text and returns every [`Diagnostic`] plus the
//! deployment it describes ([`Deployment`]: nodes, their roles, their disks).
//! The rules are AppScale's own (so a file this accepts, AppScale accepts) and
//! the ones AppScale missed, where a file looked fine and persisted nothing.
//! Every rule has a stable code; `docs/appscalefile-lint.md` lists them.
//!
//! Node ids follow appscale-tools: in the old format they are written in the
//! file (`node-1`); in the new format an integer `nodes` count names them
//! `node-0`, `node-1`, ... in file order across groups, and in cluster mode a
//! node is its IP address.

pub mod diag;
pub mod inventory;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};

pub use diag::{Diagnostic, Severity};
use yaml::{Node, Pos, Value};

use crate::provider::discover::DEPLOYMENT_KEY;
use crate::record::{ProviderKind, Record};

/// Top-level keys appscale-tools reads from an AppScalefile.
const KNOWN_KEYS: &[&str] = &[
    "EC2_ACCESS_KEY",
    "EC2_SECRET_KEY",
    "EC2_URL",
    "admin_pass",
    "admin_user",
    "alter_etc_resolv",
    "app_id",
    "app_secret_key",
    "appengine",
    "autoscale",
    "aws_subnet_id",
    "aws_vpc_id",
    "clear_datastore",
    "client_secrets",
    "default_max_appserver_memory",
    "default_min_appservers",
    "disks",
    "flower_password",
    "force",
    "gce_instance_type",
    "group",
    "group_tag",
    "infrastructure",
    "instance_type",
    "ips",
    "ips_layout",
    "keyname",
    "login_host",
    "machine",
    "max",
    "max_images",
    "max_machines",
    "max_memory",
    "max_spot_price",
    "min",
    "min_images",
    "min_machines",
    "n",
    "oauth2_storage",
    "project",
    "replication",
    "resource_group",
    "scp",
    "static_ip",
    "storage_account",
    "subscription_id",
    "table",
    "tenant_id",
    "test",
    "use_spot_instances",
    "user_commands",
    "verbose",
    "zone",
];

/// Keys of a role group in the new layout format.
const GROUP_KEYS: &[&str] = &["roles", "nodes", "instance_type", "disks"];

/// Role keys of the old "simple" layout.
const SIMPLE_ROLES: &[&str] = &["controller", "servers"];

/// Roles appscale-tools accepts (advanced layout and role groups).
const ROLES: &[&str] = &[
    "master",
    "appengine",
    "database",
    "shadow",
    "open",
    "load_balancer",
    "login",
    "db_master",
    "db_slave",
    "zookeeper",
    "memcache",
    "taskqueue",
    "taskqueue_master",
    "taskqueue_slave",
    "search",
    "compute",
];

/// Roles whose data lives under the mountpoint: apps (master), Cassandra,
/// ZooKeeper. The simple layout's `controller` and `servers` both run the
/// database.
const DATA_ROLES: &[&str] = &[
    "master",
    "shadow",
    "database",
    "db_master",
    "db_slave",
    "zookeeper",
    "controller",
    "servers",
];

/// `infrastructure` values AppScale knew, plus this project's `local`.
const INFRASTRUCTURES: &[&str] = &["ec2", "euca", "gce", "azure", "openstack", "local"];

/// One node of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `node-3`, or an IP in cluster mode.
    pub id: String,
    /// Its roles as written (for old simple layouts, `controller`/`servers`).
    pub roles: Vec<String>,
    /// Where the node is defined.
    pub pos: Pos,
}

impl NodeInfo {
    /// Whether any role keeps data under the mountpoint.
    pub fn holds_data(&self) -> bool {
        self.roles.iter().any(|r| DATA_ROLES.contains(&r.as_str()))
    }
}

/// A disk given to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// The node id.
    pub node: String,
    /// The disk name, id or path, as written.
    pub disk: String,
    /// Where the disk is written.
    pub pos: Pos,
}

/// What an AppScalefile describes, as far as disks are concerned.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    /// The provider the disks belong to, once known.
    pub provider: Option<ProviderKind>,
    /// `zone`, when given.
    pub zone: Option<String>,
    /// The deployment's name: `keyname`, else `group` (what AppScale names
    /// the deployment's cloud resources after), when given.
    pub name: Option<String>,
    /// Every node, in appscale-tools' order.
    pub nodes: Vec<NodeInfo>,
    /// Every disk assignment, in file order.
    pub disks: Vec<DiskInfo>,
}

impl Deployment {
    /// One record per node that has a disk, ready for `disk-create`.
    ///
    /// `mountpoint` may hold `{node}`, replaced by the node id (several nodes
    /// on one machine, as in tests, each get their own). Cloud records carry
    /// the deployment's [`name`](Deployment::name) as `deployment`, which
    /// scopes the tags, labels and client tokens of their disks.
    pub fn plan(&self, mountpoint: &str) -> Vec<Record> {
        self.disks
            .iter()
            .map(|d| {
                let roles = self
                    .nodes
                    .iter()
                    .find(|n| n.id == d.node)
                    .map(|n| n.roles.clone())
                    .unwrap_or_default();
                let mut r = Record {
                    node: Some(d.node.clone()),
                    provider: self.provider,
                    zone: self.zone.clone(),
                    disk: Some(d.disk.clone()),
                    mountpoint: Some(mountpoint.replace("{node}", &d.node)),
                    ..Record::default()
                };
                r.extra.insert("roles".into(), roles.into());
                if let (Some(name), true) = (
                    &self.name,
                    self.provider.is_some_and(ProviderKind::is_cloud),
                ) {
                    r.extra.insert(DEPLOYMENT_KEY.into(), name.clone().into());
                }
                r
            })
            .collect()
    }

    /// The plan's record for `node` alone; an error naming the nodes that
    /// have disks when it has none (a typo in `--node` must not plan nothing
    /// and succeed).
    pub fn plan_node(&self, mountpoint: &str, node: &str) -> Result<Record, String> {
        self.plan(mountpoint)
            .into_iter()
            .find(|r| r.node.as_deref() == Some(node))
            .ok_or_else(|| {
                let with: Vec<&str> = self.disks.iter().map(|d| d.node.as_str()).collect();
                format!(
                    "node `{node}` has no disk (nodes with disks: {})",
                    if with.is_empty() {
                        "none".to_string()
                    } else {
                        with.join(", ")
                    }
                )
            })
    }
}

/// The result of linting one file.
#[derive(Debug, Default)]
pub struct Lint {
    /// Findings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The deployment, as far as it could be read.
    pub deployment: Deployment,
}

impl Lint {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// Whether any finding is a warning.
    pub fn has_warnings(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning)
    }

    /// `<file>: N error(s), M warning(s)`.
    pub fn summary(&self, file: &str) -> String {
        let count = |s| self.diagnostics.iter().filter(|d| d.severity == s).count();
        format!(
            "{file}: {} error(s), {} warning(s)",
            count(Severity::Error),
            count(Severity::Warning)
        )
    }
}

/// Lints a file's bytes: text that is not UTF-8 is an error at the line of
/// the first bad byte. Returns the text (lossily decoded) for rendering.
pub fn lint_bytes(bytes: &[u8]) -> (String, Lint) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), lint(s)),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = good.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            let mut l = Lint::default();
            l.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                code: "not-utf8",
                message: format!(
                    "the file is not UTF-8 text (byte 0x{:02x})",
                    bytes[e.valid_up_to()]
                ),
                pos: Pos { line, col },
                width: 1,
                help: Some("save the AppScalefile as UTF-8".into()),
            });
            (String::from_utf8_lossy(bytes).into_owned(), l)
        }
    }
}

/// Lints the text of an AppScalefile.
pub fn lint(source: &str) -> Lint {
    let mut cx = Checker::default();
    let parsed = yaml::parse(source);
    for p in &parsed.problems {
        let severity = Severity::Error;
        cx.push(
            severity,
            p.code,
            p.message.clone(),
            p.pos,
            1,
            p.help.clone(),
        );
    }
    if !parsed.fatal {
        match parsed.documents.as_slice() {
            [] => cx.push(
                Severity::Error,
                "yaml-empty",
                "the AppScalefile is empty".into(),
                Pos { line: 1, col: 1 },
                1,
                Some("start from `appscale init cloud` or docs/appscalefile-lint.md".into()),
            ),
            [root] => cx.check(root),
            [_, second, ..] => cx.error(
                "yaml-multiple-documents",
                "the AppScalefile holds several YAML documents; AppScale reads exactly one".into(),
                second,
                Some("remove the `---` separators and merge the documents".into()),
            ),
        }
    }
    cx.lint.diagnostics.sort_by_key(|d| (d.pos, d.severity));
    cx.lint
}

#[derive(Default)]
struct Checker {
    lint: Lint,
}

/// How nodes are named in this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `infrastructure` is set: nodes are `node-N` ids or counts.
    Cloud,
    /// No infrastructure: nodes are IP addresses.
    Cluster,
}

impl Checker {
    fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        message: String,
        pos: Pos,
        width: usize,
        help: Option<String>,
    ) {
        self.lint.diagnostics.push(Diagnostic {
            severity,
            code,
            message,
            pos,
            width,
            help,
        });
    }

    fn error(&mut self, code: &'static str, message: String, at: &Node, help: Option<String>) {
        self.push(Severity::Error, code, message, at.pos, at.width(), help);
    }

    fn warning(&mut self, code: &'static str, message: String, at: &Node, help: Option<String>) {
        self.push(Severity::Warning, code, message, at.pos, at.width(), help);
    }

    fn bad_type(&mut self, key: &str, expected: &str, at: &Node) {
        self.error(
            "bad-type",
            format!("`{key}` must be {expected}, not {}", at.kind()),
            at,
            None,
        );
    }

    fn check(&mut self, root: &Node) {
        let Some(entries) = root.as_map() else {
            self.error(
                "not-a-mapping",
                format!(
                    "an AppScalefile is a mapping of `key: value` lines, not {}",
                    root.kind()
                ),
                root,
                None,
            );
            return;
        };
        for (k, _) in entries {
            match k.scalar() {
                Some(name) if KNOWN_KEYS.contains(&name) => {}
                Some(name) => {
                    let help =
                        did_you_mean(name, KNOWN_KEYS).map(|s| format!("did you mean `{s}`?"));
                    self.warning(
                        "unknown-key",
                        format!("unknown key `{name}`: AppScale ignores it"),
                        k,
                        help,
                    );
                }
                None => self.error(
                    "bad-type",
                    format!("a key must be a plain name, not {}", k.kind()),
                    k,
                    None,
                ),
            }
        }

        let infrastructure = self.infrastructure(root);
        let zone = match root.get("zone") {
            None => None,
            Some(z) if z.is_null() => None,
            Some(z) => match z.as_str() {
                Some(s) => {
                    if infrastructure.is_none() {
                        self.error(
                            "zone-without-infrastructure",
                            "Cannot specify an availability zone when infrastructure is not specified.".into(),
                            z,
                            Some("set `infrastructure`, or remove `zone` in cluster mode".into()),
                        );
                    }
                    Some(s.to_string())
                }
                None => {
                    self.bad_type("zone", "a string", z);
                    None
                }
            },
        };
        let mode = if infrastructure.is_some() {
            Mode::Cloud
        } else {
            Mode::Cluster
        };
        self.lint.deployment.zone = zone.clone();
        self.lint.deployment.name = self.deployment_name(root);

        // Each `disks` key found, with the disks it assigns.
        let mut disk_keys: Vec<&Node> = Vec::new();
        let layout = root.get("ips_layout");
        let top_disks = root.get("disks");
        match layout {
            None => {}
            Some(l) if l.is_null() => {}
            Some(l) => match &l.value {
                Value::Map(_) => self.old_layout(l, mode),
                Value::Seq(groups) => {
                    self.new_layout(groups, mode, &mut disk_keys);
                    if let Some(d) = top_disks {
                        self.error(
                            "disks-ignored",
                            "top-level `disks` is ignored with a list `ips_layout`: AppScale would persist nothing".into(),
                            d,
                            Some("give each role group its own `disks:` (one name, or a list as long as `nodes`)".into()),
                        );
                    }
                }
                Value::Scalar { .. } => self.error(
                    "layout-unknown-format",
                    "Node layout format was not recognized.".into(),
                    l,
                    Some("`ips_layout` is a list of role groups (`- roles: [...]`), or in old files a mapping of role to node ids".into()),
                ),
            },
        }
        let old_format = layout.is_none_or(|l| l.is_null() || l.as_map().is_some());
        if let (Some(d), true) = (top_disks, old_format) {
            self.top_level_disks(d, layout.is_none_or(Node::is_null));
            disk_keys.push(d);
        }

        self.disk_rules(infrastructure.as_ref(), zone.as_deref(), &disk_keys);
    }

    /// The deployment's name: `keyname`, else `group`, as AppScale reads
    /// them (any scalar; a list or map is an error).
    fn deployment_name(&mut self, root: &Node) -> Option<String> {
        let mut found = None;
        for key in ["keyname", "group"] {
            match root.get(key) {
                None => {}
                Some(n) if n.is_null() => {}
                Some(n) => match n.scalar() {
                    Some(text) if !text.trim().is_empty() => {
                        found = found.or_else(|| Some(text.trim().to_string()));
                    }
                    Some(_) => {}
                    None => self.bad_type(key, "a name", n),
                },
            }
        }
        found
    }

    /// Reads `infrastructure`; returns its value and node when valid.
    fn infrastructure<'a>(&mut self, root: &'a Node) -> Option<(String, &'a Node)> {
        let node = root.get("infrastructure")?;
        if node.is_null() {
            return None;
        }
        let Some(value) = node.as_str() else {
            self.bad_type("infrastructure", "a string", node);
            return None;
        };
        if !INFRASTRUCTURES.contains(&value) {
            let help = did_you_mean(value, INFRASTRUCTURES)
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| Some(format!("one of: {}", INFRASTRUCTURES.join(", "))));
            self.error(
                "infrastructure-unknown",
                format!("unknown infrastructure `{value}`"),
                node,
                help,
            );
            return None;
        }
        self.lint.deployment.provider = ProviderKind::parse(value);
        Some((value.to_string(), node))
    }

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
    fn old_layout(&mut self, layout: &Node, mode: Mode) {
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
    fn new_layout<'a>(&mut self, groups: &'a [Node], mode: Mode, disk_keys: &mut Vec<&'a Node>) {
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

    /// The old format's top-level `disks:` map of node id -> disk.
    fn top_level_disks(&mut self, d: &Node, no_layout: bool) {
        let entries = match &d.value {
            Value::Map(m) => m,
            _ if d.is_null() => {
                self.warning(
                    "disks-empty",
                    "`disks` is empty: no disk will be persisted".into(),
                    d,
                    None,
                );
                return;
            }
            _ => {
                self.error(
                    "bad-type",
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
                "disks-empty",
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
                let help = if no_layout {
                    Some("add an `ips_layout` that names the nodes".to_string())
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
                    "disk-unknown-node",
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
    }

    /// Rules over all disks: infrastructure, zone, names, uniqueness, roles.
    fn disk_rules(
        &mut self,
        infrastructure: Option<&(String, &Node)>,
        zone: Option<&str>,
        disk_keys: &[&Node],
    ) {
        let disks = self.lint.deployment.disks.clone();
        let with_disks: Vec<&&Node> = disk_keys.iter().filter(|d| !d.is_null()).collect();
        match infrastructure {
            None => {
                let paths = disks.iter().all(|d| d.disk.starts_with("/dev/"));
                let cluster = self.lint.deployment.nodes.iter().all(|n| is_ip(&n.id));
                if !disks.is_empty() && paths && cluster {
                    self.lint.deployment.provider = Some(ProviderKind::Static);
                } else {
                    for key in &with_disks {
                        if cluster && !self.lint.deployment.nodes.is_empty() {
                            self.error(
                                "disks-in-cluster",
                                "disks in cluster mode must be block device paths (`/dev/...`)".into(),
                                key,
                                Some("give each node a device path (the static provider), or set `infrastructure`".into()),
                            );
                        } else {
                            self.error(
                                "disks-without-infrastructure",
                                "Can't specify persistent disks when infrastructure is not specified.".into(),
                                key,
                                Some("set `infrastructure` (ec2, euca, gce, or local for image files)".into()),
                            );
                        }
                    }
                    return;
                }
            }
            Some((name, at)) => {
                if matches!(name.as_str(), "azure" | "openstack") && !with_disks.is_empty() {
                    self.error(
                        "disks-unsupported-infrastructure",
                        format!("appscale-persist cannot manage disks on `{name}`"),
                        at,
                        Some("supported: ec2, euca, gce, local".into()),
                    );
                    return;
                }
                if matches!(name.as_str(), "ec2" | "euca" | "gce") && zone.is_none() {
                    for key in &with_disks {
                        self.error(
                            "disks-without-zone",
                            "Need an availability zone specified when persistent disks are specified.".into(),
                            key,
                            Some("add a top-level `zone:`; the disks must live in it".into()),
                        );
                    }
                }
            }
        }
        let provider = self.lint.deployment.provider;
        let mut first_use: HashMap<&str, &DiskInfo> = HashMap::new();
        for d in &disks {
            if let Some(p) = provider
                && let Err(why) = check_disk_name(p, &d.disk)
            {
                let width = d.disk.chars().count();
                self.push(
                    Severity::Error,
                    "disk-name-invalid",
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
                        "disk-duplicate",
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
        // Roles: which nodes keep data, and which disks guard none.
        let persisting = matches!(provider, Some(p) if p.is_cloud() || p == ProviderKind::Local);
        let mut by_node: BTreeMap<&str, &DiskInfo> = BTreeMap::new();
        for d in &disks {
            by_node.insert(&d.node, d);
        }
        let nodes = self.lint.deployment.nodes.clone();
        // Nodes made from one `nodes: N` share a position: one warning each place.
        let mut bare: BTreeMap<Pos, Vec<&NodeInfo>> = BTreeMap::new();
        for n in &nodes {
            match by_node.get(n.id.as_str()) {
                None if persisting && n.holds_data() => bare.entry(n.pos).or_default().push(n),
                Some(d) if !n.holds_data() && !n.roles.is_empty() => self.push(
                    Severity::Info,
                    "disk-on-stateless-node",
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
                "data-node-without-disk",
                format!("{who} hold{} data ({}) but {has} no disk: the data will not survive `appscale down`", if ids.len() == 1 { "s" } else { "" }, roles.join(", ")),
                pos,
                1,
                Some("give it a disk".into()),
            );
        }
    }
}

/// Whether `s` is an old-format cloud node id (`node-<integer>`).
fn is_node_id(s: &str) -> bool {
    s.strip_prefix("node-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `s` is an IPv4 address (AppScale's own test: four dotted numbers).
fn is_ip(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
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

/// The closest candidate to `word` by edit distance, when close enough to
/// be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(did_you_mean("zome", KNOWN_KEYS), Some("zone"));
        assert_eq!(
            did_you_mean("infrastucture", KNOWN_KEYS),
            Some("infrastructure")
        );
        assert_eq!(did_you_mean("completely_else", KNOWN_KEYS), None);
    }

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
