//! disk-status as a table: one row per disk, then one line per problem
//! with its fix.

use crate::log;
use crate::record::Record;

/// A size for the table: `10G`, `512M`, `-`.
pub(super) fn human(bytes: Option<u64>) -> String {
    let Some(b) = bytes else {
        return "-".into();
    };
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v >= 10.0 || u == 0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// The table's header.
pub const TABLE_HEADER: [&str; 10] = [
    "NODE",
    "DISK",
    "CLOUD",
    "ATTACHED TO",
    "DEVICE",
    "FS",
    "MOUNTED",
    "FSTAB",
    "USED",
    "PROBLEMS",
];

/// One table row per record.
pub fn table_rows(records: &[Record]) -> Vec<[String; 10]> {
    records.iter().map(row).collect()
}

fn row(r: &Record) -> [String; 10] {
    let dash = || "-".to_string();
    let s = r.status.clone().unwrap_or_default();
    let cloud = match &s.cloud {
        None => dash(),
        Some(c) => match c.exists {
            Some(false) => "missing".into(),
            None => "?".into(),
            Some(true) => c.state.clone().unwrap_or_else(|| "exists".into()),
        },
    };
    let attached = s
        .cloud
        .as_ref()
        .map(|c| c.attached_to.join(","))
        .filter(|a| !a.is_empty())
        .unwrap_or_else(dash);
    let n = s.node.clone().unwrap_or_default();
    let fs = n.fs.as_ref().map(|f| f.fstype.clone()).unwrap_or_else(dash);
    let fstab = match &n.fstab {
        None => dash(),
        Some(f) if !f.present => "none".into(),
        Some(f) if !f.matching => "other".into(),
        Some(f) if f.nofail => "ok".into(),
        Some(_) => "ok (no nofail)".into(),
    };
    let used = match (n.used_bytes, n.used_percent) {
        (Some(u), Some(p)) => format!("{} {p}%", human(Some(u))),
        _ => dash(),
    };
    let mut problems: Vec<String> = s.problems.iter().map(|p| p.code.clone()).collect();
    if let Some(e) = &r.error {
        problems.push(format!("error: {}", e.code));
    }
    let cells = [
        r.node.clone().unwrap_or_else(dash),
        r.disk
            .clone()
            .or_else(|| r.device.clone())
            .unwrap_or_else(dash),
        cloud,
        attached,
        n.device.unwrap_or_else(dash),
        fs,
        n.mounted_at.unwrap_or_else(dash),
        fstab,
        used,
        if problems.is_empty() {
            "ok".into()
        } else {
            problems.join(",")
        },
    ];
    cells.map(|c| log::escape_controls(&c))
}

/// The records as a table, one line each, then one line per problem with
/// its fix.
pub fn table(records: &[Record]) -> String {
    let mut rows = vec![TABLE_HEADER.map(str::to_string)];
    rows.extend(table_rows(records));
    let mut widths = [0usize; 10];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for r in records {
        for p in r.status.iter().flat_map(|s| &s.problems) {
            out.push_str(&log::escape_controls(&format!(
                "{}: [{}] {}; fix: {}",
                r.label(),
                p.code,
                p.message,
                p.fix
            )));
            out.push('\n');
        }
        if let Some(e) = &r.error {
            out.push_str(&log::escape_controls(&format!(
                "{}: [{}] {} (from {})",
                r.label(),
                e.code,
                e.message,
                e.tool
            )));
            out.push('\n');
        }
    }
    out
}
