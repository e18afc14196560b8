//! Ansible inventories from an AppScalefile: one host per node, one group
//! per role, and each node's disk, provider, zone and mountpoint as host
//! variables (`appscale_disk`, `appscale_provider`, `appscale_zone`,
//! `appscale_mountpoint`, `appscale_roles`, `appscale_node`).
//!
//! Two shapes of the same content: [`Deployment::inventory`] is the static
//! form Ansible's `yaml` inventory plugin reads (save it as `*.json` and pass
//! it with `-i`); [`Deployment::inventory_list`] is what an inventory script
//! prints for `--list`.

use serde_json::{Map, Value, json};

use super::Deployment;

impl Deployment {
    /// Host variables of each node, in layout order.
    fn hostvars(&self, mountpoint: &str) -> Vec<(String, Map<String, Value>)> {
        self.nodes
            .iter()
            .map(|n| {
                let mut v = Map::new();
                v.insert("appscale_node".into(), n.id.clone().into());
                v.insert("appscale_roles".into(), json!(n.roles));
                if n.id.parse::<std::net::Ipv4Addr>().is_ok() {
                    v.insert("ansible_host".into(), n.id.clone().into());
                }
                if let Some(d) = self.disks.iter().find(|d| d.node == n.id) {
                    v.insert("appscale_disk".into(), d.disk.clone().into());
                    if let Some(p) = self.provider {
                        v.insert("appscale_provider".into(), p.as_str().into());
                    }
                    if let Some(z) = &self.zone {
                        v.insert("appscale_zone".into(), z.clone().into());
                    }
                    v.insert(
                        "appscale_mountpoint".into(),
                        mountpoint.replace("{node}", &n.id).into(),
                    );
                }
                (n.id.clone(), v)
            })
            .collect()
    }

    /// Roles in first-seen order, with their nodes.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for n in &self.nodes {
            for r in &n.roles {
                match groups.iter_mut().find(|(g, _)| g == r) {
                    Some((_, hosts)) => hosts.push(n.id.clone()),
                    None => groups.push((r.clone(), vec![n.id.clone()])),
                }
            }
        }
        groups
    }

    /// The static inventory (the `yaml` plugin's format, as JSON).
    pub fn inventory(&self, mountpoint: &str) -> Value {
        let hosts: Map<String, Value> = self
            .hostvars(mountpoint)
            .into_iter()
            .map(|(h, v)| (h, Value::Object(v)))
            .collect();
        let children: Map<String, Value> = self
            .groups()
            .into_iter()
            .map(|(g, members)| {
                let hosts: Map<String, Value> =
                    members.into_iter().map(|m| (m, json!({}))).collect();
                (g, json!({ "hosts": hosts }))
            })
            .collect();
        json!({ "all": { "hosts": hosts, "children": children } })
    }

    /// The inventory-script form (`--list`), with `_meta.hostvars`.
    pub fn inventory_list(&self, mountpoint: &str) -> Value {
        let mut out = Map::new();
        let hostvars: Map<String, Value> = self
            .hostvars(mountpoint)
            .into_iter()
            .map(|(h, v)| (h, Value::Object(v)))
            .collect();
        out.insert("_meta".into(), json!({ "hostvars": hostvars }));
        let groups = self.groups();
        let hosts: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let children: Vec<String> = groups.iter().map(|(g, _)| g.clone()).collect();
        out.insert(
            "all".into(),
            json!({ "hosts": hosts, "children": children }),
        );
        for (g, members) in groups {
            out.insert(g, json!({ "hosts": members }));
        }
        Value::Object(out)
    }
}
