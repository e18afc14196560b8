//! AppScalefiles: parse both layout formats, check them, and plan disks.
//!
//! [`lint`] reads a file's text and returns every [`Diagnostic`] plus the
//! deployment it describes ([`Deployment`]: nodes, their roles, their disks).
//! The rules are AppScale's own (so a file this accepts, AppScale accepts) and
//! the ones AppScale missed, where a file looked fine and persisted nothing.
//! Every rule has a stable code ([`codes`]); `docs/appscalefile-lint.md`
//! lists them.
//!
//! Node ids follow appscale-tools: in the old format they are written in the
//! file (`node-1`); in the new format an integer `nodes` count names them
//! `node-0`, `node-1`, ... in file order across groups, and in cluster mode a
//! node is its IP address.
//!
//! The modules: [`yaml`] builds a positioned tree; `keys` holds the
//! known-keys data (keys, roles, infrastructures); `layout` reads both
//! `ips_layout` formats into nodes; `disks` holds the disk rules;
//! [`Deployment`] (`plan`) is what the file describes and the records it
//! plans; `zones` checks `zone` against each cloud's table of zones;
//! [`cloud`] holds the settings the cloud tools take from the file
//! (endpoint, project, credentials, the secret kept out of every message);
//! [`diag`] renders findings and [`inventory`] writes Ansible
//! inventories; `for_appscale` writes the file `appscale up` reads, without
//! `disks:`. This module reads the top-level keys and runs the rest.

pub mod cloud;
pub mod codes;
pub(crate) mod diag;
mod disks;
mod for_appscale;
pub(crate) mod inventory;
mod keys;
mod layout;
mod plan;
mod settings;
pub mod yaml;
mod zones;

pub use cloud::{CloudSettings, Secret};
pub use diag::{Diagnostic, Severity};
pub use disks::check_disk_name;
pub use for_appscale::without_disks;
pub use keys::did_you_mean;
pub use plan::{Deployment, DiskInfo, NodeInfo};
use yaml::{Node, Pos, Value};
pub use zones::ec2_region_of_zone;

use crate::record::ProviderKind;
use keys::{APPSCALE_CLOUDS, INFRASTRUCTURES};
use layout::LayoutFacts;

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

/// Choices that change which files pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// In the old format's top-level `disks` map, require a disk only on
    /// nodes that keep data (`master`, `database`, `zookeeper`, and the
    /// simple layout's `controller`/`servers`), the seed page's future work.
    /// AppScale required one on every node: off by default.
    pub data_nodes_only: bool,
}

/// Lints a file's bytes: text that is not UTF-8 is an error at the line of
/// the first bad byte. Returns the text (lossily decoded) for rendering.
pub fn lint_bytes(bytes: &[u8]) -> (String, Lint) {
    lint_bytes_with(bytes, Options::default())
}

/// [`lint_bytes`] with [`Options`].
pub fn lint_bytes_with(bytes: &[u8], options: Options) -> (String, Lint) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), lint_with(s, options)),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = good.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            let mut l = Lint::default();
            l.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                code: codes::NOT_UTF8,
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
    lint_with(source, Options::default())
}

/// [`lint`] with [`Options`].
pub fn lint_with(source: &str, options: Options) -> Lint {
    let mut cx = Checker {
        options,
        ..Checker::default()
    };
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
                codes::YAML_EMPTY,
                "the AppScalefile is empty".into(),
                Pos { line: 1, col: 1 },
                1,
                Some("start from `appscale init cloud` or docs/appscalefile-lint.md".into()),
            ),
            [root] => cx.check(root),
            [_, second, ..] => cx.error(
                codes::YAML_MULTIPLE_DOCUMENTS,
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
pub(super) struct Checker {
    lint: Lint,
    options: Options,
    facts: LayoutFacts,
}

/// How nodes are named in this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `infrastructure` is set: nodes are `node-N` ids or counts.
    Cloud,
    /// No infrastructure: nodes are IP addresses.
    Cluster,
}

impl Checker {
    pub(super) fn push(
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

    pub(super) fn error(
        &mut self,
        code: &'static str,
        message: String,
        at: &Node,
        help: Option<String>,
    ) {
        self.push(Severity::Error, code, message, at.pos, at.width(), help);
    }

    pub(super) fn warning(
        &mut self,
        code: &'static str,
        message: String,
        at: &Node,
        help: Option<String>,
    ) {
        self.push(Severity::Warning, code, message, at.pos, at.width(), help);
    }

    pub(super) fn bad_type(&mut self, key: &str, expected: &str, at: &Node) {
        self.error(
            codes::BAD_TYPE,
            format!("`{key}` must be {expected}, not {}", at.kind()),
            at,
            None,
        );
    }

    fn check(&mut self, root: &Node) {
        let Some(entries) = root.as_map() else {
            self.error(
                codes::NOT_A_MAPPING,
                format!(
                    "an AppScalefile is a mapping of `key: value` lines, not {}",
                    root.kind()
                ),
                root,
                None,
            );
            return;
        };
        self.unknown_keys(entries);

        let infrastructure = self.infrastructure(root);
        self.cloud_keys(root, infrastructure.as_ref().map(|(name, _)| name.as_str()));
        let zone = match root.get("zone") {
            None => None,
            Some(z) if z.is_null() => None,
            Some(z) => match z.as_str() {
                Some(s) => {
                    match &infrastructure {
                        None => self.error(
                            codes::ZONE_WITHOUT_INFRASTRUCTURE,
                            "Cannot specify an availability zone when infrastructure is not specified.".into(),
                            z,
                            Some("set `infrastructure`, or remove `zone` in cluster mode".into()),
                        ),
                        Some((cloud, _)) => self.zone_rules(cloud, s, z),
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

        let given = root.get("infrastructure").is_some_and(|n| !n.is_null());
        let cloud = infrastructure.as_ref().map(|(name, _)| name.as_str());
        self.settings(root, cloud, given);
        self.facts.needs_instance_type = cloud.is_some_and(|c| APPSCALE_CLOUDS.contains(&c))
            && root.get("instance_type").is_none_or(Node::is_null);

        // Each `disks` key found, with the disks it assigns.
        let mut disk_keys: Vec<&Node> = Vec::new();
        let layout = root.get("ips_layout").filter(|l| !l.is_null());
        let top_disks = root.get("disks");
        let errors_before = self.errors();
        match layout {
            None if infrastructure.is_some() => {
                let (_, at) = infrastructure.as_ref().expect("matched Some");
                self.generated_layout(root, at);
            }
            None if !given => self.error(
                codes::LAYOUT_MISSING,
                "A YAML file is required for virtualized clusters: without `infrastructure`, AppScale needs an `ips_layout`".into(),
                root,
                Some("add an `ips_layout` listing the machines' IP addresses, or set `infrastructure`".into()),
            ),
            None => {}
            Some(l) => match &l.value {
                Value::Map(_) => self.old_layout(l, mode),
                Value::Seq(groups) => {
                    self.new_layout(groups, mode, &mut disk_keys);
                    if let Some(d) = top_disks {
                        self.error(
                            codes::DISKS_IGNORED,
                            "top-level `disks` is ignored with a list `ips_layout`: AppScale would persist nothing".into(),
                            d,
                            Some("give each role group its own `disks:` (one name, or a list as long as `nodes`)".into()),
                        );
                    }
                }
                Value::Scalar { .. } => self.error(
                    codes::LAYOUT_UNKNOWN_FORMAT,
                    "Node layout format was not recognized.".into(),
                    l,
                    Some("`ips_layout` is a list of role groups (`- roles: [...]`), or in old files a mapping of role to node ids".into()),
                ),
            },
        }
        let layout_read = self.errors() == errors_before;
        let old_format = layout.is_none_or(|l| l.as_map().is_some());
        if let (Some(d), true) = (top_disks, old_format) {
            self.top_level_disks(d, self.facts.format);
            disk_keys.push(d);
        }

        // AppScale's rules over the whole layout: only for files AppScale
        // could take (not this project's `local` or device-path disks in
        // cluster mode), and only of a layout that read without error.
        let extension = cloud == Some("local")
            || (!given
                && !self.lint.deployment.disks.is_empty()
                && self
                    .lint
                    .deployment
                    .disks
                    .iter()
                    .all(|d| d.disk.starts_with("/dev/")));
        if layout_read && !extension {
            let anchor = layout
                .or(infrastructure.as_ref().map(|(_, at)| *at))
                .unwrap_or(root);
            let replication = ["replication", "n"]
                .iter()
                .find_map(|k| root.get(k))
                .and_then(|n| n.as_int().map(|v| (v, n)));
            self.role_rules(anchor, replication);
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

    /// How many errors were found so far.
    fn errors(&self) -> usize {
        self.lint
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
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
                codes::INFRASTRUCTURE_UNKNOWN,
                format!("unknown infrastructure `{value}`"),
                node,
                help,
            );
            return None;
        }
        self.lint.deployment.provider = ProviderKind::parse(value);
        Some((value.to_string(), node))
    }
}
