//! Snapshots: what `disk-snapshot` is asked to do ([`SnapshotArgs`]), the
//! retention rule every provider applies the same way ([`Retention`]), and
//! the time stamps snapshots carry ([`Stamp`]).
//!
//! Retention only ever chooses among the snapshots of **one disk of one
//! deployment** (the provider lists those alone), and never chooses the
//! snapshot just taken. Only a snapshot this toolkit made ([`Marks::ours`]:
//! every mark `disk-snapshot` puts on one) is ever listed, counted, deleted
//! or restored from: a snapshot made by hand or by another tool, even one
//! labelled with the deployment, is never touched.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::failure::Failure;

/// `disk-snapshot`'s own options.
#[derive(Debug, Clone, Default, Args)]
pub struct SnapshotArgs {
    /// List each disk's snapshots (newest first), one record each, instead
    /// of taking one.
    #[arg(long, help_heading = "Snapshot", conflicts_with_all = ["keep", "keep_within", "no_freeze"])]
    pub list: bool,
    /// After taking a snapshot, keep only the N newest completed snapshots
    /// of the same disk and deployment (the new one counts, and is never
    /// deleted); delete the other completed and any failed ones and report
    /// them. Snapshots still being made never count and are never deleted.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Snapshot"
    )]
    pub keep: Option<u32>,
    /// After taking a snapshot, keep the completed snapshots of the same
    /// disk and deployment taken within DURATION (30m, 12h, 7d, 4w); with --keep, a
    /// snapshot either rule keeps is kept.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Snapshot")]
    pub keep_within: Option<Duration>,
    /// Take the snapshot of a mounted filesystem without freezing it
    /// (crash-consistent only: writes in flight may be half there); the
    /// record notes it (`snapshot.freeze`: not-frozen).
    #[arg(long, help_heading = "Snapshot")]
    pub no_freeze: bool,
    /// The longest a filesystem stays frozen: a snapshot not taken by then
    /// is abandoned and the filesystem thawed.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        help_heading = "Snapshot"
    )]
    pub freeze_timeout: u64,
    /// Wait until every snapshot of the run is complete (EBS `completed`,
    /// Compute Engine `READY`; for at most --wait-timeout seconds). Without it, the tool returns
    /// once each snapshot is started (`snapshot.state` pending), which fixes its
    /// point in time. Local snapshots are complete when taken. Retention
    /// (--keep, --keep-within) always waits: nothing older is deleted before
    /// the new one is complete.
    #[arg(long, help_heading = "Snapshot", conflicts_with = "list")]
    pub wait: bool,
    /// The longest --wait (or retention) waits for the run's snapshots to
    /// complete: those still pending then are left to complete (never
    /// deleted), their records fail `snapshot-pending`, and nothing is
    /// pruned for them.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 3600,
        help_heading = "Snapshot"
    )]
    pub wait_timeout: u64,
    /// Compute Engine: store the snapshots in this location (a multi-region,
    /// `us`, `eu`, `asia`, or a region, `us-central1`) instead of the
    /// multi-region nearest the disk, for organisations whose policy
    /// restricts resource locations (`storageLocations`).
    #[arg(
        long,
        value_name = "LOCATION",
        value_parser = parse_location,
        help_heading = "Snapshot",
        conflicts_with = "list"
    )]
    pub snapshot_location: Option<String>,
}

/// A Compute Engine storage location: lowercase letters, digits and `-`.
fn parse_location(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a Compute Engine location (a multi-region such as `us` or `eu`, or a region such as `us-central1`)"
        ))
    }
}

impl SnapshotArgs {
    /// Whether the run waits for its snapshots to complete: --wait, or a
    /// retention rule (which deletes nothing before the new one is
    /// complete).
    pub fn waits(&self) -> bool {
        self.wait || self.retention().is_set()
    }

    /// The retention rule the flags give.
    pub fn retention(&self) -> Retention {
        Retention {
            keep: self.keep.map(|n| n as usize),
            keep_within: self.keep_within,
        }
    }
}

/// Parses a duration: a number and a unit, `s`, `m`, `h`, `d` or `w`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (like 30m, 12h, 7d, 4w)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("`{s}`: give a unit: s, m, h, d or w")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// The tool every snapshot this toolkit takes names as its maker (the
/// `tool` of a local snapshot's metadata, EBS tag `appscale-persist:tool`,
/// Compute Engine label `appscale-persist-tool`).
pub const TOOL: &str = "disk-snapshot";

/// The marks a snapshot carries, as its provider reads them (metadata,
/// tags, labels): what says who made it, and of what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks<'a> {
    /// The deployment it was taken for.
    pub deployment: Option<&'a str>,
    /// The disk it was taken of.
    pub disk: Option<&'a str>,
    /// When, as its time mark reads back (`None`: absent or unreadable).
    pub time: Option<Stamp>,
    /// The tool that made it.
    pub tool: Option<&'a str>,
}

impl Marks<'_> {
    /// Whether this toolkit made the snapshot: every mark `disk-snapshot`
    /// puts on one is there (a deployment and a disk, a time that reads
    /// back, and [`TOOL`] as its maker). Anything else is not ours, and is
    /// never counted, deleted or restored from: a snapshot made by hand
    /// with the deployment's label alone would otherwise count as the
    /// oldest (it has no time) and be pruned first.
    pub fn ours(&self) -> bool {
        let given = |v: Option<&str>| v.is_some_and(|s| !s.is_empty());
        given(self.deployment) && given(self.disk) && self.time.is_some() && self.tool == Some(TOOL)
    }
}

/// Which snapshots of one disk and deployment to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the N newest completed ones.
    pub keep: Option<usize>,
    /// Keep the completed ones taken within this long.
    pub keep_within: Option<Duration>,
}

/// One snapshot retention chooses among, as its provider lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its id.
    pub id: String,
    /// When it was taken, ms since the Unix epoch.
    pub ms: u64,
    /// Its state as the record says it: `completed`, `pending`, `error`,
    /// or another word (`deleting`, `unknown`).
    pub state: String,
}

impl Candidate {
    /// A candidate of `id`, taken at `ms`, in `state`.
    pub fn new(id: impl Into<String>, ms: u64, state: impl Into<String>) -> Candidate {
        Candidate {
            id: id.into(),
            ms,
            state: state.into(),
        }
    }
}

impl Retention {
    /// Whether any rule is set (without one, nothing is ever deleted).
    pub fn is_set(&self) -> bool {
        self.keep.is_some() || self.keep_within.is_some()
    }

    /// The ids to delete among `snaps` (all of one disk and deployment, in
    /// any order) at `now_ms`, by one rule for every provider:
    ///
    /// * only `completed` snapshots are usable: they alone count toward
    ///   --keep N (the N newest completed are kept) and --keep-within, and
    ///   those no set rule keeps are deleted;
    /// * an `error` snapshot holds nothing restorable: it never counts and
    ///   is deleted;
    /// * any other (`pending`: still being made, perhaps left by an earlier
    ///   --wait-timeout; `deleting`; `unknown`) is never deleted;
    /// * `taken` (the snapshot just taken) is never deleted.
    pub fn prune<'a>(&self, snaps: &'a [Candidate], taken: &str, now_ms: u64) -> Vec<&'a str> {
        if !self.is_set() {
            return Vec::new();
        }
        let mut newest: Vec<&Candidate> = snaps.iter().collect();
        newest.sort_by(|a, b| b.ms.cmp(&a.ms).then_with(|| b.id.cmp(&a.id)));
        let mut completed = 0;
        let mut out = Vec::new();
        for c in newest {
            let delete = match c.state.as_str() {
                "completed" => {
                    let by_count = self.keep.is_some_and(|n| completed < n);
                    completed += 1;
                    let by_age = self
                        .keep_within
                        .is_some_and(|d| now_ms.saturating_sub(c.ms) <= d.as_millis() as u64);
                    !by_count && !by_age
                }
                "error" => true,
                _ => false,
            };
            if delete && c.id != taken {
                out.push(c.id.as_str());
            }
        }
        out
    }
}

impl Retention {
    /// The ids to delete once `taken` (the snapshot just taken, as
    /// retention weighs it) is there, among `earlier` (of its disk and
    /// deployment; `taken` itself, listed again, is left out): [`Retention::prune`]
    /// over both, never `taken`.
    pub fn after(
        &self,
        earlier: impl IntoIterator<Item = Candidate>,
        taken: Candidate,
        now_ms: u64,
    ) -> Vec<String> {
        let mut all: Vec<Candidate> = earlier.into_iter().filter(|c| c.id != taken.id).collect();
        let id = taken.id.clone();
        all.push(taken);
        self.prune(&all, &id, now_ms)
            .into_iter()
            .map(str::to_string)
            .collect()
    }
}

/// What retention did for one record: the older snapshots it deleted, and
/// those it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Deleted, in the order retention chose them.
    pub deleted: Vec<String>,
    /// Chosen, but not deleted: each with why.
    pub failed: Vec<NotPruned>,
}

/// A snapshot retention chose whose delete failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPruned {
    /// Its id.
    pub id: String,
    /// Why it is still there.
    pub failure: Failure,
}

/// A moment, in ms since the Unix epoch, as snapshots write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(pub u64);

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    }

    /// The moment of a date and time in UTC, `None` when it is not one
    /// (month 13, hour 24, ...).
    pub fn from_civil(y: i64, mo: u64, d: u64, h: u64, mi: u64, s: u64, ms: u64) -> Option<Stamp> {
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        if ms > 999 {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (mo + 9) % 12;
        let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
        Some(Stamp((days * 86_400 + h * 3600 + mi * 60 + s) * 1000 + ms))
    }

    /// Reads an RFC 3339 time: what [`Stamp::rfc3339`] writes
    /// (`2026-11-27T02:35:12.123Z`), and what the clouds write (any number
    /// of fraction digits, none, or an offset: `2026-11-26T18:35:12.123-08:00`);
    /// `None` for anything else.
    pub fn parse_rfc3339(t: &str) -> Option<Stamp> {
        let b = t.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<u64> {
            let s = t.get(r)?;
            s.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| s.parse().ok())?
        };
        let shape = b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && matches!(b[10], b'T' | b't')
            && b[13] == b':'
            && b[16] == b':';
        if !shape {
            return None;
        }
        let mut rest = &t[19..];
        let mut ms = 0;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            ms = format!("{:0<3}", &frac[..digits.min(3)]).parse().ok()?;
            rest = &frac[digits..];
        }
        let offset_s: i64 = match rest {
            "Z" | "z" => 0,
            o if o.len() == 6 && o.as_bytes()[3] == b':' => {
                let sign = match o.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let h: i64 = o[1..3].parse().ok()?;
                let m: i64 = o[4..6].parse().ok()?;
                sign * (h * 3600 + m * 60)
            }
            _ => return None,
        };
        let local = Stamp::from_civil(
            num(0..4)? as i64,
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
            ms,
        )?;
        u64::try_from(local.0 as i64 - offset_s * 1000)
            .ok()
            .map(Stamp)
    }

    /// Reads back what [`Stamp::compact`] writes (`20261127T023512.123Z`);
    /// `None` for anything else.
    pub fn parse_compact(t: &str) -> Option<Stamp> {
        let b = t.as_bytes();
        if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u64> {
            let s = t.get(r)?;
            s.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| s.parse().ok())?
        };
        Stamp::from_civil(
            num(0..4)? as i64,
            num(4..6)?,
            num(6..8)?,
            num(9..11)?,
            num(11..13)?,
            num(13..15)?,
            num(16..19)?,
        )
    }

    /// The date and time in UTC: (year, month, day, hour, minute, second, ms).
    fn parts(self) -> (i64, u32, u32, u64, u64, u64, u64) {
        let secs = self.0 / 1000;
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (
            y,
            m,
            d,
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            self.0 % 1000,
        )
    }

    /// RFC 3339 in UTC, with milliseconds: `2026-11-27T02:35:12.123Z`.
    pub fn rfc3339(self) -> String {
        let (y, mo, d, h, mi, s, ms) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }

    /// Compact, for names: `20261127T023512.123Z`.
    pub fn compact(self) -> String {
        let (y, mo, d, h, mi, s, ms) = self.parts();
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{ms:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc() {
        assert_eq!(Stamp(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Stamp(1_795_746_912_123).rfc3339(),
            "2026-11-27T02:35:12.123Z"
        );
        assert_eq!(Stamp(951_782_400_000).rfc3339(), "2000-02-29T00:00:00.000Z");
        assert_eq!(Stamp(1_795_746_912_123).compact(), "20261127T023512.123Z");
    }

    #[test]
    fn stamps_read_back() {
        for t in [0, 951_782_400_000, 1_795_746_912_123] {
            assert_eq!(Stamp::parse_rfc3339(&Stamp(t).rfc3339()), Some(Stamp(t)));
        }
        assert_eq!(
            Stamp::parse_rfc3339("2026-11-26T18:35:12.123456-08:00"),
            Some(Stamp(1_795_746_912_123))
        );
        assert_eq!(
            Stamp::parse_compact(&Stamp(1_795_746_912_123).compact()),
            Some(Stamp(1_795_746_912_123))
        );
        assert_eq!(Stamp::parse_compact("20261127T023512Z"), None);
        assert_eq!(
            Stamp::parse_rfc3339("2026-11-27T02:35:12Z"),
            Some(Stamp(1_795_746_912_000))
        );
        for bad in [
            "",
            "2026-11-27",
            "2026-13-27T02:35:12Z",
            "2026-11-27T02:35:12.Z",
            "2026-11-27T02:35:12+0800",
            "x026-11-27T02:35:12Z",
        ] {
            assert_eq!(Stamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_snapshot_with_every_mark_is_ours() {
        let ours = Marks {
            deployment: Some("prod"),
            disk: Some("data-1"),
            time: Some(Stamp(1)),
            tool: Some(TOOL),
        };
        assert!(ours.ours());
        for not in [
            Marks {
                deployment: None,
                ..ours
            },
            Marks {
                deployment: Some(""),
                ..ours
            },
            Marks { disk: None, ..ours },
            Marks { time: None, ..ours },
            Marks { tool: None, ..ours },
            Marks {
                tool: Some("backup.sh"),
                ..ours
            },
        ] {
            assert!(!not.ours(), "{not:?}");
        }
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
    }

    #[test]
    fn retention_keeps_the_newest_and_the_recent_and_never_the_new_one() {
        let s = |id: &str, at: u64| Candidate::new(id, at, "completed");
        let snaps = [s("a", 1000), s("b", 2000), s("c", 3000), s("d", 4000)];
        let keep2 = Retention {
            keep: Some(2),
            keep_within: None,
        };
        assert_eq!(keep2.prune(&snaps, "d", 5000), ["b", "a"]);
        // The one just taken is kept even when it is not among the newest
        // (a clock that went back).
        assert_eq!(keep2.prune(&snaps, "a", 5000), ["b"]);
        let within = Retention {
            keep: None,
            keep_within: Some(Duration::from_millis(2500)),
        };
        assert_eq!(within.prune(&snaps, "d", 5000), ["b", "a"]);
        let both = Retention {
            keep: Some(1),
            keep_within: Some(Duration::from_millis(2500)),
        };
        assert_eq!(both.prune(&snaps, "d", 5000), ["b", "a"]);
        assert!(Retention::default().prune(&snaps, "d", 5000).is_empty());
    }

    #[test]
    fn only_completed_snapshots_count_and_pending_ones_are_never_deleted() {
        let snaps = [
            Candidate::new("good", 1000, "completed"),
            Candidate::new("failed", 2000, "error"),
            Candidate::new("slow", 3000, "pending"),
            Candidate::new("gone", 3500, "deleting"),
            Candidate::new("new", 4000, "completed"),
        ];
        let keep2 = Retention {
            keep: Some(2),
            keep_within: None,
        };
        // The last good one is kept: the pending and errored ones do not
        // count; the errored one is deleted, the pending one never.
        assert_eq!(keep2.prune(&snaps, "new", 5000), ["failed"]);
        let keep1 = Retention {
            keep: Some(1),
            keep_within: None,
        };
        assert_eq!(keep1.prune(&snaps, "new", 5000), ["failed", "good"]);
        let within = Retention {
            keep: None,
            keep_within: Some(Duration::from_millis(10_000)),
        };
        assert_eq!(within.prune(&snaps, "new", 5000), ["failed"]);
    }
}
