//! The AppScalefile for `appscale up`: the operator's file with every
//! `disks:` key (the old format's top-level map, each new-format group's)
//! commented out, so that AppScale does not attach, format or mount the
//! disks appscale-persist manages (it would run `mkfs.ext4 -F` on any mount
//! error). Everything else is kept byte for byte, so AppScale reads the
//! same layout, zone and credentials.

use super::lint;
use super::yaml::{self, Node, Value};

/// `source` without its `disks:` keys (commented out, with a header line
/// saying why), and how many were moved out. An error when the text cannot
/// be read as one YAML mapping, or the result would still hold disks.
pub fn without_disks(source: &str, name: &str) -> Result<(String, usize), String> {
    let parsed = yaml::parse(source);
    let root = match parsed.documents.as_slice() {
        [root] if !parsed.fatal => root,
        _ => {
            return Err(format!(
                "{name}: not one YAML document: fix what appscalefile-lint reports first"
            ));
        }
    };
    let groups = root
        .get("ips_layout")
        .and_then(Node::as_seq)
        .unwrap_or_default();
    let keys: Vec<(&Node, &Node)> = std::iter::once(root)
        .chain(groups)
        .flat_map(|map| map.as_map().unwrap_or_default())
        .filter(|(k, _)| k.scalar() == Some("disks"))
        .map(|(k, v)| (k, v))
        .collect();
    let mut lines: Vec<String> = source.split_inclusive('\n').map(str::to_string).collect();
    let mut moved = vec![false; lines.len()];
    for (k, v) in &keys {
        let first = k.pos.line - 1;
        let indent = k.pos.col - 1;
        let seq = matches!(v.value, Value::Seq(_));
        moved[first] = true;
        for (j, line) in lines.iter().enumerate().skip(first + 1) {
            let body = line.trim_end_matches(['\n', '\r']);
            let lead = body.len() - body.trim_start_matches(' ').len();
            let belongs = !body.trim().is_empty()
                && (lead > indent || (seq && lead == indent && body[lead..].starts_with('-')));
            if !belongs {
                break;
            }
            moved[j] = true;
        }
    }
    for (i, line) in lines.iter_mut().enumerate() {
        if !moved[i] {
            continue;
        }
        // Comment the line out after its indentation (and a list item's
        // `- `, which stays: the item's other keys follow).
        let at = keys
            .iter()
            .find(|(k, _)| k.pos.line - 1 == i)
            .map(|(k, _)| char_offset(line, k.pos.col - 1))
            .unwrap_or_else(|| line.len() - line.trim_start_matches(' ').len());
        line.insert_str(at, "# ");
    }
    let mut out = String::new();
    if !keys.is_empty() {
        out.push_str(&format!(
            "# Written by `appscalefile-lint --for-appscale {name}`: its `disks:` are commented out, as appscale-persist attaches, formats and mounts those disks (docs/appscale.md).\n"
        ));
    }
    out.push_str(&lines.concat());
    let errors = |l: &super::Lint| {
        l.diagnostics
            .iter()
            .filter(|d| d.severity == super::Severity::Error)
            .count()
    };
    let check = lint(&out);
    if errors(&check) > errors(&lint(source)) || !check.deployment.disks.is_empty() {
        return Err(format!(
            "{name}: the file without its disks: does not read back as it should ({}): report it, with the file",
            check.summary(name)
        ));
    }
    Ok((out, keys.len()))
}

/// The byte offset of character `col` (0-based) of `line`.
fn char_offset(line: &str, col: usize) -> usize {
    line.char_indices().nth(col).map_or(line.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_lose_their_disks_and_nothing_else() {
        let old = "infrastructure: ec2\nmachine: ami-0123abcd\nzone: us-east-1b\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: vol-0123456789abcdef0\nkeyname: k\n";
        let (out, n) = without_disks(old, "f").unwrap();
        assert_eq!(n, 1);
        assert!(
            out.contains("# disks:\n  # node-1: vol-0123456789abcdef0\nkeyname: k\n"),
            "{out}"
        );
        let new = "infrastructure: gce\nmachine: img\nclient_secrets: /c.json\ninstance_type: n2-standard-2\nproject: p\nzone: us-central1-a\nips_layout:\n  - disks: [d1]\n    roles: [master, database, zookeeper]\n    nodes: 1\n  - roles: appengine\n    nodes: 2\n    disks:\n    - d2\n    - d3\n";
        let (out, n) = without_disks(new, "f").unwrap();
        assert_eq!(n, 2);
        assert!(out.contains("  - # disks: [d1]\n    roles:"), "{out}");
        assert!(
            out.contains("    # disks:\n    # - d2\n    # - d3\n"),
            "{out}"
        );
        let l = lint(&out);
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        assert_eq!(l.deployment.nodes.len(), 3);
        let none = "infrastructure: ec2\nzone: us-east-1b\nips_layout:\n  - roles: [master]\n    nodes: 1\n";
        assert_eq!(without_disks(none, "f").unwrap(), (none.to_string(), 0));
    }
}
