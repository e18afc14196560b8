//! The known-keys data: what appscale-tools read from an AppScalefile.
//!
//! Top-level keys, role-group keys, role names per layout format, the roles
//! that keep data under the mountpoint, and `infrastructure` values; plus the
//! did-you-mean helper every "unknown ..." finding uses.

/// Top-level keys: every `appscale-run-instances` flag of appscale-tools
/// 2.3 to 3.8 (`appscale up` turned each key into `--key value`, and the
/// argument parser refused any other), less `help` and `version`.
pub(super) const KNOWN_KEYS: &[&str] = &[
    "EC2_ACCESS_KEY",
    "EC2_SECRET_KEY",
    "EC2_URL",
    "admin_pass",
    "admin_user",
    "alter_etc_resolv",
    "appengine",
    "autoscale",
    "aws_subnet_id",
    "aws_vpc_id",
    "azure_app_id",
    "azure_app_secret_key",
    "azure_group_tag",
    "azure_resource_group",
    "azure_storage_account",
    "azure_subscription_id",
    "azure_tenant_id",
    "clear_datastore",
    "client_secrets",
    "default_max_appserver_memory",
    "default_min_appservers",
    "disks",
    "fdb_clusterfile_content",
    "flower_password",
    "force",
    "gce_instance_type",
    "group",
    "infrastructure",
    "instance_type",
    "ips",
    "ips_layout",
    "keyname",
    "login_host",
    "machine",
    "max",
    "max_machines",
    "max_memory",
    "max_spot_price",
    "min",
    "min_machines",
    "n",
    "oauth2_storage",
    "project",
    "replication",
    "rsync_source",
    "scp",
    "static_ip",
    "table",
    "test",
    "use_spot_instances",
    "user_commands",
    "verbose",
    "zone",
];

/// Keys this project reads that appscale-tools 2.3 to 3.8 had no flag for
/// (`S3_URL`, from Eucalyptus's `eucarc`): not unknown here, but
/// `key-not-in-appscale` warns that `appscale up` refuses them.
pub(super) const EXTRA_KEYS: &[&str] = &["S3_URL"];

/// Keys whose value the argument parser read as an integer.
pub(super) const INT_KEYS: &[&str] = &[
    "min",
    "max",
    "min_machines",
    "max_machines",
    "replication",
    "n",
    "appengine",
    "max_memory",
    "default_max_appserver_memory",
    "default_min_appservers",
];

/// Keys the argument parser took as on/off switches: `true` passes the
/// flag, `false` leaves it out, any other value was refused.
pub(super) const SWITCH_KEYS: &[&str] = &[
    "alter_etc_resolv",
    "autoscale",
    "clear_datastore",
    "force",
    "test",
    "use_spot_instances",
    "verbose",
];

/// The one datastore every release accepted for `table`.
pub(super) const DATASTORES: &[&str] = &["cassandra"];

/// Keys of a role group in the new layout format.
pub(super) const GROUP_KEYS: &[&str] = &["roles", "nodes", "instance_type", "disks"];

/// Role keys of the old "simple" layout.
pub(super) const SIMPLE_ROLES: &[&str] = &["controller", "servers"];

/// Role keys of the old "advanced" layout (appscale-tools 2.3 to 3.3; other
/// roles were "not a supported flag" there).
pub(super) const OLD_ROLES: &[&str] = &[
    "master",
    "database",
    "appengine",
    "open",
    "login",
    "zookeeper",
    "memcache",
    "taskqueue",
    "search",
    "load_balancer",
];

/// Roles a role group may name (appscale-tools 3.4 to 3.8: `login` until
/// 3.7, `compute` and `search2` from 3.8 on).
pub(super) const ROLES: &[&str] = &[
    "master",
    "appengine",
    "compute",
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
    "search2",
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

/// The clouds AppScale itself started machines in (not this project's
/// `local`): only they need `machine`, instance types and credentials.
pub(super) const APPSCALE_CLOUDS: &[&str] = &["ec2", "euca", "gce", "azure", "openstack"];

/// The roles a role name stands for, as appscale-tools expanded them
/// (`controller` and `servers` in the simple layout, `master`, and the
/// renamed `appengine`), the role itself included.
pub(super) fn implied_roles(role: &str) -> &'static [&'static str] {
    match role {
        "controller" => &[
            "shadow",
            "load_balancer",
            "database",
            "memcache",
            "login",
            "zookeeper",
            "taskqueue",
        ],
        "servers" => &["appengine", "compute", "memcache", "database", "taskqueue"],
        "master" => &["master", "shadow", "load_balancer"],
        "appengine" | "compute" => &["appengine", "compute"],
        "database" | "db_master" | "db_slave" => &["database"],
        _ => &[],
    }
}

/// The one known key `word` is a prefix of, when only one and `word` is not
/// a key itself: Python's argument parser took such an abbreviation for the
/// whole flag.
pub(super) fn abbreviation_of(word: &str) -> Option<&'static str> {
    let mut matches = KNOWN_KEYS
        .iter()
        .filter(|k| k.len() > word.len() && k.starts_with(word));
    match (matches.next(), matches.next()) {
        (Some(k), None) if !word.is_empty() && !KNOWN_KEYS.contains(&word) => Some(k),
        _ => None,
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
    fn abbreviations_are_unique_prefixes_of_a_key() {
        assert_eq!(abbreviation_of("infra"), Some("infrastructure"));
        assert_eq!(abbreviation_of("zon"), Some("zone"));
        assert_eq!(
            abbreviation_of("min"),
            None,
            "a key itself, and a prefix of two"
        );
        assert_eq!(abbreviation_of("azure_app"), None, "ambiguous");
        assert_eq!(abbreviation_of("zome"), None);
    }

    #[test]
    fn old_role_names_imply_their_roles() {
        assert!(implied_roles("controller").contains(&"database"));
        assert!(implied_roles("controller").contains(&"shadow"));
        assert!(implied_roles("servers").contains(&"appengine"));
        assert!(implied_roles("master").contains(&"shadow"));
        assert!(implied_roles("compute").contains(&"appengine"));
        assert!(implied_roles("open").is_empty());
    }
}
