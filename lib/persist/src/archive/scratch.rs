//! The node half of a cloud disk's capture: `disk-archive` (which links no
//! cloud SDK) runs `disk-scratch` (the cloud half, which does) for each
//! phase of the scratch copy ([`ScratchPhase`]), one record on its stdin,
//! and reads the record it gives back (`scratch`: the snapshot, then the
//! scratch disk and its device here). The filesystem is frozen around the
//! snapshot phase alone; the scratch disk's device is set read-only
//! (`blockdev --setro`) before it is mounted read-only; the drop phase
//! runs on every path, and the next run of the disk deletes what a killed
//! run left (the snapshot phase starts with it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::codes;
use crate::provider::ScratchPhase;
use crate::record::{self, Record};
use crate::run::Cmd;
use crate::step::Failure;

/// How `disk-scratch` reaches the cloud: the options disk-archive passes
/// on to it.
#[derive(Debug, Clone, Default, Args)]
pub struct CloudArgs {
    /// For a cloud disk's scratch copy: the API endpoint (Eucalyptus, an
    /// emulator, a private endpoint).
    #[arg(long, value_name = "URL", help_heading = "Cloud disks")]
    pub endpoint_url: Option<String>,
    /// For a cloud disk's scratch copy: the AWS region.
    #[arg(long, value_name = "REGION", help_heading = "Cloud disks")]
    pub region: Option<String>,
    /// For a cloud disk's scratch copy: the AWS profile.
    #[arg(long, value_name = "NAME", help_heading = "Cloud disks")]
    pub profile: Option<String>,
    /// For a cloud disk's scratch copy: the Google Cloud project.
    #[arg(long, value_name = "ID", help_heading = "Cloud disks")]
    pub project: Option<String>,
    /// For a cloud disk's scratch copy: the metadata service (this
    /// instance's identity).
    #[arg(long, value_name = "URL", help_heading = "Cloud disks")]
    pub metadata_endpoint: Option<String>,
    /// For a cloud disk's scratch copy: seconds to wait for the snapshot,
    /// the scratch disk and its attachment.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 3600,
        help_heading = "Cloud disks"
    )]
    pub scratch_timeout: u64,
}

impl CloudArgs {
    /// disk-scratch's arguments for these options (and `--appscalefile`,
    /// `--deployment`).
    pub fn argv(&self, appscalefile: Option<&Path>, deployment: &str) -> Vec<String> {
        let mut a = vec![
            "--self".to_string(),
            "--deployment".into(),
            deployment.into(),
            "--timeout".into(),
            self.scratch_timeout.to_string(),
        ];
        let pairs = [
            ("--endpoint-url", &self.endpoint_url),
            ("--region", &self.region),
            ("--profile", &self.profile),
            ("--project", &self.project),
            ("--metadata-endpoint", &self.metadata_endpoint),
        ];
        for (flag, v) in pairs {
            if let Some(v) = v {
                a.push(flag.into());
                a.push(v.clone());
            }
        }
        if let Some(f) = appscalefile {
            a.push("--appscalefile".into());
            a.push(f.display().to_string());
        }
        a
    }
}

/// The `disk-scratch` to run: beside this tool, else on `$PATH`.
fn program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("disk-scratch")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("disk-scratch"))
}

/// Runs `phase` of `rec`'s scratch copy (`args` from [`CloudArgs::argv`]);
/// the record it gives back, or its failure.
pub fn run(phase: ScratchPhase, rec: &Record, args: &[String]) -> Result<Record, Failure> {
    let word = match phase {
        ScratchPhase::Snapshot => "snapshot",
        ScratchPhase::Attach => "attach",
        ScratchPhase::Drop => "drop",
    };
    let mut input = rec.clone();
    input.steps.clear();
    let cmd = Cmd::new(program())
        .args(["--phase", word])
        .args(args)
        .stdin(format!("{}\n", input.to_line()))
        .ends_with_us()
        // Its own waits are bounded by --timeout; this bounds the rest.
        .timeout(Duration::from_secs(
            args.iter()
                .position(|a| a == "--timeout")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(3600)
                + 120,
        ));
    let out = cmd.output().map_err(|e| {
        Failure::new(
            codes::SNAPSHOT_FAILED,
            format!("disk-scratch --phase {word}: {e}"),
        )
    })?;
    let back = out
        .stdout
        .lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| record::parse_line(l).ok());
    match back {
        Some(r) => match &r.error {
            Some(e) => Err(Failure::api(e.code.clone(), e.message.clone())),
            None => Ok(r),
        },
        None => Err(Failure::new(
            codes::SNAPSHOT_FAILED,
            format!(
                "disk-scratch --phase {word} gave no record (exit {}): {}",
                out.code.map_or("by a signal".into(), |c| c.to_string()),
                out.stderr.trim()
            ),
        )),
    }
}

/// Makes a block device read-only (`blockdev --setro`) unless it is
/// already (a Compute Engine disk attached read-only): an EBS scratch
/// volume attaches read-write. `true` when this set it, and
/// [`set_writable`] must set it back (the flag outlives the attachment on
/// a device node that is reused, such as a loop device).
pub fn set_read_only(device: &Path) -> Result<bool, Failure> {
    let dev = crate::blockdev::Device::open(device)?;
    let ro = std::fs::read_to_string(dev.sysfs().join("ro")).unwrap_or_default();
    if ro.trim() == "1" {
        return Ok(false);
    }
    Cmd::new("blockdev")
        .arg("--setro")
        .arg(&dev.real)
        .run()
        .map(|_| true)
        .map_err(|e| Failure::new(codes::ARCHIVE_FAILED, e.to_string()))
}

/// Takes back [`set_read_only`] (`blockdev --setrw`).
pub fn set_writable(device: &Path) -> Result<(), String> {
    Cmd::new("blockdev")
        .arg("--setrw")
        .arg(device)
        .run()
        .map(drop)
        .map_err(|e| e.to_string())
}
