//! Every finding's code: a contract with the operator's scripts
//! (`appscalefile-lint --format json | jq -r .code`), so each is a constant
//! here, never a string literal at the rule that finds it, and each is
//! documented in `docs/appscalefile-lint.md` ("Codes"), which a test holds
//! to this list both ways. The severity a rule gives is the rule's; the
//! one named here is the docs' usual one.

// AppScale's own rules.
/// Error: a top-level key no release's argument parser knew (with
/// did-you-mean). Warning for an unknown key in a role group, which AppScale
/// ignored.
pub const UNKNOWN_KEY: &str = "unknown-key";
/// Error: a key whose value has the wrong type: integers (`min_machines`,
/// `replication`, `appengine`, ...), a number for `max_spot_price`,
/// `true`/`false` for switches (`verbose`, `use_spot_instances`, ...), a map for
/// `disks` ("--disks must be a dict").
pub const BAD_TYPE: &str = "bad-type";
/// Error: a value AppScale refused: `table` other than `cassandra`,
/// `replication`/`n` or `appengine` below 1, `user_commands` not a list,
/// `min`/`max` machines below 1 or min above max.
pub const SETTING_INVALID: &str = "setting-invalid";
/// Error: a setting another needs: `machine` in a cloud, `max_machines` without
/// `ips_layout`, `admin_pass` with `admin_user` (and back),
/// `use_spot_instances` with `max_spot_price`, on GCE `project` and
/// `client_secrets` or `oauth2_storage`.
pub const SETTING_MISSING: &str = "setting-missing";
/// Error: settings AppScale refused together: `appengine` and `autoscale`,
/// `client_secrets` and `oauth2_storage`, `admin_user`/`admin_pass` with
/// `test`, spot instances off EC2.
pub const SETTINGS_CONFLICT: &str = "settings-conflict";
/// Error: `machine`, `static_ip`, `use_spot_instances` or `max_spot_price`
/// without `infrastructure`.
pub const SETTING_WITHOUT_INFRASTRUCTURE: &str = "setting-without-infrastructure";
/// Error: `zone` in cluster mode.
pub const ZONE_WITHOUT_INFRASTRUCTURE: &str = "zone-without-infrastructure";
/// Error: disks without `infrastructure` (and not cluster device paths).
pub const DISKS_WITHOUT_INFRASTRUCTURE: &str = "disks-without-infrastructure";
/// Error: disks on ec2, euca or gce without `zone`; also for per-group disks,
/// which AppScale did not check.
pub const DISKS_WITHOUT_ZONE: &str = "disks-without-zone";
/// Error: no `ips_layout` and no `infrastructure` ("A YAML file is required for
/// virtualized clusters").
pub const LAYOUT_MISSING: &str = "layout-missing";
/// Error: `ips_layout` is neither a map nor a list of groups.
pub const LAYOUT_UNKNOWN_FORMAT: &str = "layout-unknown-format";
/// Error: simple and advanced old-format keys mixed.
pub const LAYOUT_MIXED_FORMAT: &str = "layout-mixed-format";
/// Error: a role the format does not have (old format: "The flag X is not a
/// supported flag"; with did-you-mean).
pub const LAYOUT_UNKNOWN_ROLE: &str = "layout-unknown-role";
/// Error: no `master` (no `controller` in the simple format).
pub const LAYOUT_NO_MASTER: &str = "layout-no-master";
/// Error: more than one master or controller.
pub const LAYOUT_MANY_MASTERS: &str = "layout-many-masters";
/// Error: no database node.
pub const LAYOUT_NO_DATABASE: &str = "layout-no-database";
/// Error: no `appengine` (`compute`) node, in the advanced old format and in
/// role groups.
pub const LAYOUT_NO_COMPUTE: &str = "layout-no-compute";
/// Error: `login` in more than one role group.
pub const LAYOUT_MANY_LOGINS: &str = "layout-many-logins";
/// Error: `replication` (`n`) above the number of database nodes.
pub const REPLICATION_TOO_HIGH: &str = "replication-too-high";
/// Error: in a cloud, a role group with no `instance_type` and no top-level
/// one.
pub const INSTANCE_TYPE_MISSING: &str = "instance-type-missing";
/// Error: a group with `nodes: 0` or an empty list.
pub const NODES_ZERO: &str = "nodes-zero";
/// Error: `node-N` ids in the new format, IPs in cloud mode, non-IPs in cluster
/// mode.
pub const NODE_ID_FORMAT: &str = "node-id-format";
/// Error: the same IP twice in the simple format, or in one role group (in two
/// groups it is one machine with both groups' roles).
pub const DUPLICATE_IP: &str = "duplicate-ip";
/// Error: a group's `disks` list is not as long as its `nodes`.
pub const DISKS_COUNT: &str = "disks-count";
/// Error: one disk given to two nodes, anywhere in the file.
pub const DISK_DUPLICATE: &str = "disk-duplicate";
/// Error: a node without a disk in the old format's `disks` map ("Please
/// specify a disk for every node."); with `--data-nodes-only`, only nodes that
/// keep data.
pub const DISK_MISSING: &str = "disk-missing";

// What AppScale missed.
/// Error: a disk for a node the layout does not have (AppScale gave it to no
/// node, silently; without `ips_layout` the help names the machines AppScale
/// started).
pub const DISK_UNKNOWN_NODE: &str = "disk-unknown-node";
/// Error: a machine in two role groups given a disk by each (AppScale kept the
/// last; the first held nothing).
pub const NODE_TWO_DISKS: &str = "node-two-disks";
/// Error: top-level `disks` with a list `ips_layout`: AppScale accepted it and
/// persisted nothing.
pub const DISKS_IGNORED: &str = "disks-ignored";
/// Error: not a valid name for the provider: GCE RFC 1035 names; EC2 `vol-` + 8
/// or 17 hex digits (other names are Name tags); local image names; static
/// `/dev/...` paths.
pub const DISK_NAME_INVALID: &str = "disk-name-invalid";
/// Error: cluster-mode disks that are not device paths.
pub const DISKS_IN_CLUSTER: &str = "disks-in-cluster";
/// Error: disks on `azure` or `openstack`.
pub const DISKS_UNSUPPORTED_INFRASTRUCTURE: &str = "disks-unsupported-infrastructure";
/// Error: an `infrastructure` value nobody knows (with did-you-mean).
pub const INFRASTRUCTURE_UNKNOWN: &str = "infrastructure-unknown";
/// Error: a key twice in one mapping (names both lines; PyYAML kept the last
/// silently).
pub const YAML_DUPLICATE_KEY: &str = "yaml-duplicate-key";
/// Error: a `zone` that cannot be a zone of the file's cloud, by its shape:
/// Compute Engine zones are `<region>-<letter>` (`us-central1-a`; the seed
/// page's `us-central-1a` is not one), EC2 zones `<region><letter>`
/// (`us-east-1b`) or Local Zones (`us-east-1-bos-1a`); with did-you-mean from
/// the zone tables.
pub const ZONE_INVALID: &str = "zone-invalid";
/// Warning: an ec2 or gce `zone` of the right shape that is not in the zone
/// tables: a typo (with did-you-mean), or a zone newer than the tables.
pub const ZONE_UNKNOWN: &str = "zone-unknown";
/// Warning: `S3_URL`: read by these tools (checked as a URL), but
/// appscale-tools 2.3 to 3.8 had no flag for it, so `appscale up` refuses the
/// file.
pub const KEY_NOT_IN_APPSCALE: &str = "key-not-in-appscale";
/// Warning: a node running `master`, `database` or `zookeeper` (or the simple
/// layout's `controller`/`servers`) in a cloud or local deployment has no disk:
/// its data will not survive `down`.
pub const DATA_NODE_WITHOUT_DISK: &str = "data-node-without-disk";
/// Warning: a static disk named by its kernel name (`/dev/sdb`), which another
/// disk may have after a reboot or once a disk is added: name it by a
/// `/dev/disk/by-id/...` link (disk-attach gives the record that link as its
/// `device`, and says so).
pub const DISK_KERNEL_NAME: &str = "disk-kernel-name";
/// Warning: `disks: []` or an empty `disks:`.
pub const DISKS_EMPTY: &str = "disks-empty";
/// Info: a disk on a node that keeps nothing under the mountpoint.
pub const DISK_ON_STATELESS_NODE: &str = "disk-on-stateless-node";

// The file as a whole.
/// Error: the file is not YAML (the parser's position, and a hint).
pub const YAML_SYNTAX: &str = "yaml-syntax";
/// Error: the file holds nothing.
pub const YAML_EMPTY: &str = "yaml-empty";
/// Error: the file holds several YAML documents.
pub const YAML_MULTIPLE_DOCUMENTS: &str = "yaml-multiple-documents";
/// Error: nesting deeper than 64 levels.
pub const YAML_TOO_DEEP: &str = "yaml-too-deep";
/// Error: alias expansion past 10,000 values.
pub const YAML_ALIAS_LIMIT: &str = "yaml-alias-limit";
/// Error: the file is not UTF-8 (at the first bad byte).
pub const NOT_UTF8: &str = "not-utf8";
/// Error: the file is not a mapping of keys.
pub const NOT_A_MAPPING: &str = "not-a-mapping";

/// Every code, in the order docs/appscalefile-lint.md lists them.
pub const ALL: &[&str] = &[
    UNKNOWN_KEY,
    BAD_TYPE,
    SETTING_INVALID,
    SETTING_MISSING,
    SETTINGS_CONFLICT,
    SETTING_WITHOUT_INFRASTRUCTURE,
    ZONE_WITHOUT_INFRASTRUCTURE,
    DISKS_WITHOUT_INFRASTRUCTURE,
    DISKS_WITHOUT_ZONE,
    LAYOUT_MISSING,
    LAYOUT_UNKNOWN_FORMAT,
    LAYOUT_MIXED_FORMAT,
    LAYOUT_UNKNOWN_ROLE,
    LAYOUT_NO_MASTER,
    LAYOUT_MANY_MASTERS,
    LAYOUT_NO_DATABASE,
    LAYOUT_NO_COMPUTE,
    LAYOUT_MANY_LOGINS,
    REPLICATION_TOO_HIGH,
    INSTANCE_TYPE_MISSING,
    NODES_ZERO,
    NODE_ID_FORMAT,
    DUPLICATE_IP,
    DISKS_COUNT,
    DISK_DUPLICATE,
    DISK_MISSING,
    DISK_UNKNOWN_NODE,
    NODE_TWO_DISKS,
    DISKS_IGNORED,
    DISK_NAME_INVALID,
    DISKS_IN_CLUSTER,
    DISKS_UNSUPPORTED_INFRASTRUCTURE,
    INFRASTRUCTURE_UNKNOWN,
    YAML_DUPLICATE_KEY,
    ZONE_INVALID,
    ZONE_UNKNOWN,
    KEY_NOT_IN_APPSCALE,
    DATA_NODE_WITHOUT_DISK,
    DISK_KERNEL_NAME,
    DISKS_EMPTY,
    DISK_ON_STATELESS_NODE,
    YAML_SYNTAX,
    YAML_EMPTY,
    YAML_MULTIPLE_DOCUMENTS,
    YAML_TOO_DEEP,
    YAML_ALIAS_LIMIT,
    NOT_UTF8,
    NOT_A_MAPPING,
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::ALL;

    /// The codes docs/appscalefile-lint.md's "Codes" section names: the
    /// first column of its tables, and the file-level list.
    fn documented() -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/appscalefile-lint.md");
        let text = std::fs::read_to_string(path).unwrap();
        let section = text
            .split("\n## Codes\n")
            .nth(1)
            .expect("docs/appscalefile-lint.md has a `## Codes` section");
        let section = section.split("\n## ").next().unwrap_or_default();
        let mut codes: Vec<String> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();
        let file_level = section
            .split("File-level codes")
            .nth(1)
            .expect("the section lists the file-level codes");
        let file_level = file_level.split("\n\n").next().unwrap_or_default();
        // Backquoted words that are codes (the paragraph quotes `disks:` too).
        let is_code = |w: &&str| {
            w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        codes.extend(
            file_level
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(is_code)
                .map(str::to_string),
        );
        codes
    }

    /// The linter's sources, their tests left out.
    fn sources() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/appscalefile");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "codes.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .split("\n#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            out.push((path.display().to_string(), code.to_string()));
        }
        out
    }

    #[test]
    fn every_code_is_documented_and_used_by_name() {
        let listed: BTreeSet<String> = ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(listed.len(), ALL.len(), "a code listed twice in ALL");
        let docs: BTreeSet<String> = documented().into_iter().collect();
        let undocumented: Vec<_> = listed.difference(&docs).collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/appscalefile-lint.md: {undocumented:?}"
        );
        let unknown: Vec<_> = docs.difference(&listed).collect();
        assert!(
            unknown.is_empty(),
            "documented, but no such code: {unknown:?}"
        );
        let literals: Vec<String> = sources()
            .iter()
            .flat_map(|(path, code)| {
                ALL.iter()
                    .filter(|c| code.contains(&format!("\"{c}\"")))
                    .map(move |c| format!("{path}: \"{c}\""))
            })
            .collect();
        assert!(
            literals.is_empty(),
            "a code written as a literal, not by its name: {literals:?}"
        );
    }
}
