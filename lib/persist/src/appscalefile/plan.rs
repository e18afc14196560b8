//! The plan: what an AppScalefile describes (nodes, roles, disks) and the
//! disk records it turns into for `disk-create`.

use crate::record::{ProviderKind, Record};

use super::cloud::CloudSettings;
use super::keys::DATA_ROLES;
use super::yaml::Pos;

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
    /// The settings the cloud tools take from the file (endpoint, project,
    /// credentials); never written into a record.
    pub cloud: CloudSettings,
}

impl Deployment {
    /// One record per node that has a disk, ready for `disk-create`.
    ///
    /// `mountpoint` may hold `{node}`, replaced by the node id (several nodes
    /// on one machine, as in tests, each get their own). Cloud records carry
    /// the deployment's [`name`](Deployment::name) as `deployment`, which
    /// scopes the tags, labels and client tokens of their disks; local
    /// records too (the owner of their images and snapshots).
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
                r.roles = Some(roles);
                if let (Some(name), true) = (
                    &self.name,
                    self.provider
                        .is_some_and(|p| p.is_cloud() || p == ProviderKind::Local),
                ) {
                    r.deployment = Some(name.clone());
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
