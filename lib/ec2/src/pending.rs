//! Eucalyptus's create in two calls, CreateVolume then CreateTags, and what
//! a later run does about a run killed between them.
//!
//! Eucalyptus 4.4 binds no `TagSpecification` ([`crate::euca`]): a new
//! volume carries no tag until its CreateTags, and a volume without tags
//! is one no later run can find by its Name. Nothing in CreateVolume's
//! parameters can mark it either (no description, no client token), and a
//! distinctive size, zone and creation time is no proof that an untagged
//! volume is ours. The proof is CreateVolume's answer, kept on this
//! machine:
//!
//! 1. before CreateVolume, a **note** is written (atomically) in
//!    [`notes_dir`]: the endpoint, region, deployment, node, disk name,
//!    zone, size, the tags to give, and the time;
//! 2. the volume id is added to it the moment CreateVolume answers;
//! 3. CreateTags; the note is removed.
//!
//! CreateVolume is never resent there (no token would make a resend safe).
//! A first SIGTERM or SIGINT does not stop the run between the calls (the
//! signal is only noted until the next wait). After a harder stop (SIGKILL,
//! a crash), the next `disk-create` for that disk, on this machine, reads
//! the notes first ([`recover`]): a note with an id is a volume this tool
//! made, proven by EC2's own answer, and it gets its tags now (so it is
//! found, and no second volume is made); a note without one (stopped
//! during CreateVolume itself, its answer never read) proves nothing, so
//! the untagged volumes of its zone and size created around its time are
//! **named** in a warning, for the operator to tag or delete, and never
//! touched. A note that cannot be acted on (the API refuses) fails the
//! record, and nothing is created for it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use appscale_persist::codes;
use appscale_persist::log;
use appscale_persist::record::Record;
use appscale_persist::step::Failure;
use appscale_persist_cloudkit::{ApiError, Fault};
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::types::{Filter, Volume};
use serde_json::{Value, json};

use crate::Run;
use crate::api::{Api, NewVolume, api_error};
use crate::owner::{self, TAG_DEPLOYMENT};
use crate::volume::{self, VolumeRef};
use crate::{euca, snapshot, trace};

/// Environment variable naming the notes' directory (tests).
pub const NOTES_DIR_ENV: &str = "APPSCALE_PERSIST_PENDING_DIR";

/// The notes' directory when root.
const ROOT_NOTES_DIR: &str = "/var/lib/appscale-persist/pending";

/// How far around a note's time an untagged volume's creation may be to
/// be named as maybe the one its run made.
const AROUND: Duration = Duration::from_secs(600);

/// Where the notes are: [`NOTES_DIR_ENV`], else (root)
/// `/var/lib/appscale-persist/pending`, else
/// `$XDG_STATE_HOME/appscale-persist/pending` (`~/.local/state/...`).
pub fn notes_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(NOTES_DIR_ENV) {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(ROOT_NOTES_DIR);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("appscale-persist/pending")
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whose notes these are: one disk name of one deployment at one endpoint
/// and region (the file names start with its hash).
fn key(api: &Api, deployment: &str, name: &str) -> String {
    let text = format!(
        "{}\0{}\0{deployment}\0{name}",
        api.endpoint.as_deref().unwrap_or(""),
        api.region
    );
    format!(
        "{:016x}",
        appscale_persist::hash::fnv1a64(0, text.as_bytes())
    )
}

/// A note of one CreateVolume, on disk until its CreateTags is done.
struct Note {
    path: PathBuf,
    body: Value,
}

impl Note {
    /// Writes the note of `v`, about to be created.
    fn begin(api: &Api, v: &NewVolume, tags: &[(String, String)]) -> Result<Note, Failure> {
        let dir = notes_dir();
        let made = appscale_persist::files::create_dir_all_nofollow(&dir);
        made.map_err(|e| state_failure(&dir, e))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!(
            "{}-{}-{}{nanos:09}.json",
            key(api, &v.deployment, &v.name),
            std::process::id(),
            now()
        ));
        let note = Note {
            path,
            body: json!({
                "endpoint": api.endpoint, "region": api.region,
                "deployment": v.deployment, "node": v.node, "name": v.name,
                "zone": v.zone, "gib": v.gib, "tags": tags, "time": now(), "volume": null,
            }),
        };
        note.write()?;
        Ok(note)
    }

    fn write(&self) -> Result<(), Failure> {
        let text = format!("{}\n", self.body);
        appscale_persist::fstab::write_atomic(&self.path, text.as_bytes(), None)
            .map_err(Failure::from)
    }

    /// Adds the id CreateVolume answered.
    fn made(&mut self, vol: &str) -> Result<(), Failure> {
        self.body["volume"] = json!(vol);
        self.write()
    }

    /// The tagging is done: the note goes.
    fn done(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The notes earlier runs left for `deployment`'s disk `name`.
    fn left(api: &Api, deployment: &str, name: &str) -> Vec<Note> {
        let prefix = format!("{}-", key(api, deployment, name));
        let Ok(entries) = std::fs::read_dir(notes_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let body: Value = serde_json::from_str(&text).ok()?;
                Some(Note {
                    path: e.path(),
                    body,
                })
            })
            .filter(|n| n.body["name"] == name && n.body["deployment"] == deployment)
            .collect()
    }

    fn tags(&self) -> Vec<(String, String)> {
        serde_json::from_value(self.body["tags"].clone()).unwrap_or_default()
    }
}

fn state_failure(dir: &std::path::Path, e: std::io::Error) -> Failure {
    Failure::new(
        codes::STATE_DIR,
        format!(
            "{}: {e}: the note that keeps a Eucalyptus volume from leaking between CreateVolume and CreateTags cannot be written; nothing was created (set {NOTES_DIR_ENV} to a writable directory)",
            dir.display()
        ),
    )
}

impl Api {
    /// Eucalyptus: CreateVolume with only what it binds, then CreateTags,
    /// with a note kept between the two (see the module doc).
    pub async fn create_then_tag(&self, v: &NewVolume) -> Result<String, ApiError> {
        let tags = v.all_tags();
        let answered = |f: Failure| ApiError::new(Fault::Answered, f);
        let mut note = Note::begin(self, v, &tags).map_err(answered)?;
        trace(format_args!(
            "CreateVolume Name={} zone={} (then CreateTags)",
            v.name, v.zone
        ));
        let made = self
            .client
            .create_volume()
            .availability_zone(&v.zone)
            .size(i32::try_from(v.gib).unwrap_or(i32::MAX))
            .set_snapshot_id(v.snapshot.clone())
            .customize()
            .mutate_request(euca::without_client_token)
            // Without a token, a resend after a lost answer would make a
            // second volume: never resent (the note stays, and the next
            // run names what a lost answer may have made).
            .config_override(
                aws_sdk_ec2::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await;
        let id = match made {
            Ok(out) => out.volume_id().map(str::to_string),
            Err(e) => {
                // Refused: nothing was made (a lost answer would have been
                // an error of another kind, and the note stays for it).
                let e = api_error(&format!("CreateVolume Name={}", v.name), e);
                if e.fault == Fault::Answered {
                    note.done();
                }
                return Err(e);
            }
        };
        let id = id.ok_or_else(|| {
            let f = Failure::new(codes::API_ERROR, "CreateVolume returned no volume id");
            ApiError::new(Fault::ServerError, f)
        })?;
        note.made(&id).map_err(answered)?;
        self.tag(&id, &tags).await?;
        note.done();
        Ok(id)
    }

    /// The untagged volumes of `zone` and `gib` GiB created within
    /// [`AROUND`] of `time` (seconds since the epoch).
    async fn untagged_around(
        &self,
        zone: &str,
        gib: u64,
        time: u64,
    ) -> Result<Vec<Volume>, ApiError> {
        trace(format_args!("DescribeVolumes zone={zone} size={gib}"));
        let filter = |k: &str, v: String| Filter::builder().name(k).values(v).build();
        let out = self
            .client
            .describe_volumes()
            .filters(filter("availability-zone", zone.to_string()))
            .filters(filter("size", gib.to_string()))
            .send()
            .await
            .map_err(|e| api_error("DescribeVolumes", e))?;
        let near = |v: &&Volume| {
            v.create_time()
                .is_some_and(|t| t.secs().max(0).abs_diff(time as i64) <= AROUND.as_secs())
        };
        Ok(out
            .volumes()
            .iter()
            .filter(|v| owner::tag(v, TAG_DEPLOYMENT).is_none())
            .filter(near)
            .cloned()
            .collect())
    }
}

/// Before disk-create on Eucalyptus plans: the notes earlier runs left for
/// the records' disks (by Name) are acted on: a volume made is tagged now,
/// a create whose answer was lost has its possible volumes named (with
/// `--check`, only said). A record whose note cannot be acted on fails
/// (`placed`), and nothing is created for it.
pub async fn recover(run: &Run, records: &[Record], placed: &mut [Result<(), Failure>]) {
    for (r, placed) in records.iter().zip(placed.iter_mut()) {
        let Ok(VolumeRef::NameTag(name)) = VolumeRef::of(r) else {
            continue;
        };
        if placed.is_err() {
            continue;
        }
        let deployment = run.deployment_of(r);
        for note in Note::left(&run.api, &deployment, &name) {
            if let Err(f) = act_on(&run.api, r, note, run.check).await {
                *placed = Err(f);
                break;
            }
        }
    }
}

/// One note left by an earlier run (see [`recover`]); with `check`
/// (`--check`), only said, and kept.
async fn act_on(api: &Api, r: &Record, note: Note, check: bool) -> Result<(), Failure> {
    let name = note.body["name"].as_str().unwrap_or("?").to_string();
    let Some(vol) = note.body["volume"].as_str().map(str::to_string) else {
        let zone = note.body["zone"].as_str().unwrap_or_default();
        let (gib, time) = (
            note.body["gib"].as_u64().unwrap_or(0),
            note.body["time"].as_u64().unwrap_or(0),
        );
        let maybe = api.untagged_around(zone, gib, time).await?;
        if !maybe.is_empty() {
            let ids: Vec<&str> = maybe.iter().map(volume::id).collect();
            log::warn(format_args!(
                "{}: an earlier disk-create was stopped during CreateVolume for {name} (at {time}, {gib} GiB in {zone}); it may have made one of these untagged volumes: {}. They are left alone: tag the one that is this disk's (Name={name}, {TAG_DEPLOYMENT}=...) to use it, or delete it",
                r.label(),
                ids.join(", ")
            ));
        }
        if !check {
            note.done();
        }
        return Ok(());
    };
    let found = api.volumes_by_id(std::slice::from_ref(&vol)).await?;
    if let Some(v) = found.get(&vol)
        && owner::tag(v, TAG_DEPLOYMENT).is_none()
    {
        if check {
            log::warn(format_args!(
                "{}: would tag {vol}, which an earlier disk-create made for {name} and was stopped before tagging",
                r.label()
            ));
            return Ok(());
        }
        api.tag(&vol, &note.tags()).await?;
        log::warn(format_args!(
            "{}: tagged {vol}, which an earlier disk-create made for {name} and was stopped before tagging",
            r.label()
        ));
    }
    note.done();
    Ok(())
}

impl Api {
    /// Eucalyptus: this account's snapshots of `deployment` that carry no
    /// tags (a run stopped between CreateSnapshot and its CreateTags, or a
    /// twin a resent CreateSnapshot made) are found by their description
    /// ([`snapshot::DESCRIPTION_PREFIX`]), which says whose they are, and
    /// given their tags: retention counts them, and nothing leaks (with
    /// `check`, only said).
    pub async fn tag_untagged_snapshots(
        &self,
        deployment: &str,
        check: bool,
    ) -> Result<(), ApiError> {
        trace(format_args!(
            "DescribeSnapshots description={}*",
            snapshot::DESCRIPTION_PREFIX
        ));
        let ours = Filter::builder()
            .name("description")
            .values(format!("{}*", snapshot::DESCRIPTION_PREFIX))
            .build();
        for s in self.describe_snapshots(vec![ours], &[]).await? {
            let tagged = s.tags().iter().any(|t| t.key() == Some(TAG_DEPLOYMENT));
            let (Some(id), Some(tags)) = (
                s.snapshot_id(),
                s.description().and_then(snapshot::tags_of_description),
            ) else {
                continue;
            };
            let theirs = tags.iter().find(|(k, _)| k == TAG_DEPLOYMENT);
            if tagged || theirs.is_none_or(|(_, d)| d != deployment) {
                continue;
            }
            if check {
                log::warn(format_args!(
                    "would tag snapshot {id}, which an earlier disk-snapshot took and left untagged"
                ));
                continue;
            }
            self.tag(id, &tags).await?;
            log::warn(format_args!(
                "tagged snapshot {id}, which an earlier disk-snapshot took and left untagged (stopped before its CreateTags, or a twin of a CreateSnapshot sent again): retention counts it now"
            ));
        }
        Ok(())
    }
}
