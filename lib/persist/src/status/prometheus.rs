//! disk-status as node_exporter textfile-collector metrics (Prometheus
//! text exposition format 0.0.4).

use std::collections::BTreeSet;

use crate::record::Record;

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "appscale_persist_disk";

/// A label value, escaped as the text exposition format wants.
pub(super) fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The records as node_exporter textfile-collector metrics (Prometheus
/// text exposition format 0.0.4): per disk, size, used and free bytes,
/// whether it is mounted and attached, whether it is healthy, and one
/// `problem` series per problem code it has.
pub fn prometheus(records: &[Record]) -> String {
    let mut out = String::new();
    for (name, help, value) in METRICS {
        out.push_str(&format!(
            "# HELP {METRIC_PREFIX}_{name} {help}\n# TYPE {METRIC_PREFIX}_{name} gauge\n"
        ));
        for r in records {
            if let Some(v) = value(r) {
                out.push_str(&format!("{METRIC_PREFIX}_{name}{{{}}} {v}\n", labels(r)));
            }
        }
    }
    out.push_str(&problems(records));
    out
}

/// A metric: its name (after [`METRIC_PREFIX`]), its help, its value for a
/// record (none: no series for it).
type Metric = (&'static str, &'static str, fn(&Record) -> Option<f64>);

/// The metrics, one series per disk each.
const METRICS: [Metric; 9] = [
    (
        "size_bytes",
        "Size of the disk in bytes (the cloud's word, else the device's).",
        |r| {
            let s = r.status.as_ref()?;
            s.cloud
                .as_ref()
                .and_then(|c| c.size_bytes)
                .or(s.node.as_ref().and_then(|n| n.size_bytes))
                .map(|b| b as f64)
        },
    ),
    (
        "used_bytes",
        "Bytes used on the disk's filesystem, when mounted.",
        |r| {
            r.status
                .as_ref()?
                .node
                .as_ref()?
                .used_bytes
                .map(|b| b as f64)
        },
    ),
    (
        "free_bytes",
        "Bytes free on the disk's filesystem, when mounted.",
        |r| {
            r.status
                .as_ref()?
                .node
                .as_ref()?
                .free_bytes
                .map(|b| b as f64)
        },
    ),
    (
        "mounted",
        "1 when the disk's filesystem is mounted at its mountpoint.",
        |r| {
            let n = r.status.as_ref()?.node.as_ref()?;
            Some(f64::from(u8::from(
                n.mounted_at.as_deref() == Some(r.mountpoint()),
            )))
        },
    ),
    (
        "attached",
        "1 when the cloud says the disk is attached.",
        |r| {
            let c = r.status.as_ref()?.cloud.as_ref()?;
            Some(f64::from(u8::from(!c.attached_to.is_empty())))
        },
    ),
    (
        "archive_last_timestamp_seconds",
        "When the moment of the disk's last archive was (disk-archive), seconds since the epoch.",
        |r| {
            let a = r.status.as_ref()?.archive.as_ref()?;
            archive_time(&a.last_time)
        },
    ),
    (
        "archive_last_size_bytes",
        "Bytes of files in the disk's last archive.",
        |r| {
            r.status
                .as_ref()?
                .archive
                .as_ref()?
                .last_size
                .map(|b| b as f64)
        },
    ),
    (
        "archive_verified_timestamp_seconds",
        "When a restore drill (disk-archive --verify) last matched an archive of the disk, seconds since the epoch.",
        |r| {
            let a = r.status.as_ref()?.archive.as_ref()?;
            archive_time(&a.verified_time)
        },
    ),
    (
        "healthy",
        "1 when no problem was found with the disk.",
        |r| {
            let bad =
                r.error.is_some() || r.status.as_ref().is_some_and(|s| !s.problems.is_empty());
            Some(f64::from(u8::from(!bad)))
        },
    ),
];

/// A disk's labels: its node, disk (or device) and mountpoint.
fn labels(r: &Record) -> String {
    format!(
        "node=\"{}\",disk=\"{}\",mountpoint=\"{}\"",
        label_value(r.node.as_deref().unwrap_or("")),
        label_value(r.disk.as_deref().or(r.device.as_deref()).unwrap_or("")),
        label_value(r.mountpoint())
    )
}

/// The `problem` series: one per disk and problem code.
fn problems(records: &[Record]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# HELP {METRIC_PREFIX}_problem 1 for each problem the disk has, by code.\n# TYPE {METRIC_PREFIX}_problem gauge\n"
    ));
    for r in records {
        let mut seen = BTreeSet::new();
        let codes = r
            .status
            .clone()
            .unwrap_or_default()
            .problems
            .into_iter()
            .map(|p| p.code)
            .chain(r.error.iter().map(|e| e.code.clone()));
        for code in codes {
            if seen.insert(code.clone()) {
                out.push_str(&format!(
                    "{METRIC_PREFIX}_problem{{{},code=\"{}\"}} 1\n",
                    labels(r),
                    label_value(&code)
                ));
            }
        }
    }
    out
}

/// An RFC 3339 time as seconds since the epoch.
fn archive_time(t: &Option<String>) -> Option<f64> {
    t.as_deref()
        .and_then(crate::archive::tags::parse_time)
        .map(|ms| ms as f64 / 1000.0)
}
