//! The known-keys data: what appscale-tools read from an AppScalefile.
//!
//! Top-level keys, role-group keys, role names per layout format, the roles
//! that keep data under the mountpoint, and `infrastructure` values; plus the
//! did-you-mean helper every "unknown ..." finding uses.

/// Top-level keys appscale-tools reads from an AppScalefile.
pub(super) const KNOWN_KEYS: &[&str] = &[
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
pub(super) const GROUP_KEYS: &[&str] = &["roles", "nodes", "instance_type", "disks"];

/// Role keys of the old "simple" layout.
pub(super) const SIMPLE_ROLES: &[&str] = &["controller", "servers"];

/// Roles appscale-tools accepts (advanced layout and role groups).
pub(super) const ROLES: &[&str] = &[
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
pub(super) const DATA_ROLES: &[&str] = &[
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
pub(super) const INFRASTRUCTURES: &[&str] = &["ec2", "euca", "gce", "azure", "openstack", "local"];

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
}
