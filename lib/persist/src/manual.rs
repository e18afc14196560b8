//! The man page sections clap does not make: ENVIRONMENT (the variables a
//! tool reads), FILES (the files it reads or writes) and SEE ALSO (the
//! other tools and the flows), per tool, in roff; [`crate::generate`] puts
//! them before the page's VERSION section.

use crate::lock;
use crate::log;
use crate::progress;
use crate::provider::local;
use crate::release::identity::METADATA_ENDPOINT_ENV;

/// What a tool is, for which variables and files concern it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// appscalefile-lint.
    Linter,
    /// The tools that call a cloud API (and the local provider).
    Cloud,
    /// The node-side tools.
    Node,
}

fn kind(tool: &str) -> Kind {
    match tool {
        "appscalefile-lint" => Kind::Linter,
        "disk-ensure-fs" | "disk-mount" | "disk-unmount" => Kind::Node,
        _ => Kind::Cloud,
    }
}

/// `(name, what it does)` of the variables `tool` reads.
fn environment(tool: &str) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        (
            log::LEVEL_ENV,
            "quiet, info or debug: our own log level, over -q/-v and RUST_LOG.",
        ),
        (
            log::RUST_LOG_ENV,
            "target=level directives picking the cloud SDKs' log lines (aws_config=debug,...).",
        ),
        (
            progress::INTERVAL_ENV,
            "seconds between progress lines of a long wait when stderr is not a terminal (10).",
        ),
    ];
    match kind(tool) {
        Kind::Linter => {
            v.push((
                METADATA_ENDPOINT_ENV,
                "the metadata service for --node auto (IMDS, the Compute Engine metadata server).",
            ));
        }
        Kind::Node => {
            v.push((
                lock::TIMEOUT_ENV,
                "seconds to wait for the node lock held by another run.",
            ));
            v.push((
                local::STATE_DIR_ENV,
                "the directory of local disk images (/var/lib/appscale-persist/disks).",
            ));
            v.push((METADATA_ENDPOINT_ENV, "the metadata service, for the unmount proof (IMDS, the Compute Engine metadata server)."));
        }
        Kind::Cloud => {
            v.extend([
                (lock::TIMEOUT_ENV, "seconds to wait for the node lock held by another run."),
                (local::STATE_DIR_ENV, "the directory of local disk images (/var/lib/appscale-persist/disks)."),
                ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "EC2 and Eucalyptus credentials (else a profile, SSO, web identity, the container's or instance's role; the AppScalefile's EC2_ACCESS_KEY last). Never printed."),
                ("AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE", "the shared config profile and its files."),
                ("AWS_REGION", "the AWS region (else the profile's, else the zone's)."),
                ("AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_EC2", "the EC2 endpoint, when neither --endpoint-url nor the AppScalefile's EC2_URL says one."),
                ("GOOGLE_APPLICATION_CREDENTIALS", "a Google service account key file (else gcloud's ADC file, else the VM's service account)."),
                ("GOOGLE_CLOUD_PROJECT", "the Google Cloud project, when neither --project nor the AppScalefile says one."),
                (METADATA_ENDPOINT_ENV, "the metadata service for --self and --node auto (IMDS, the Compute Engine metadata server)."),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT, GCE_METADATA_HOST", "the SDKs' own metadata service variables, read after the one above."),
            ]);
            if tool == "disk-doctor" {
                v.push((
                    crate::doctor::RESOURCE_MANAGER_ENDPOINT_ENV,
                    "Cloud Resource Manager's endpoint, for the project's permissions (gcloud's override).",
                ));
            }
        }
    }
    v
}

/// `(path, what it is)` of the files `tool` reads or writes.
fn files(tool: &str) -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    if kind(tool) != Kind::Linter {
        v.extend([
            ("/etc/fstab", "the fstab whose entries of ours (x-appscale-persist) disk-mount keeps and disk-unmount removes (--fstab)."),
            ("/run/appscale-persist/lock", "the node lock: one run at a time changes the node."),
            ("/var/lib/appscale-persist/disks", "local disk images, and their snapshots under snapshots/ (--state-dir)."),
        ]);
    }
    v.extend([
        (
            "/etc/appscale-persist/AppScalefile",
            "the AppScalefile the boot unit and the backup timer plan from.",
        ),
        (
            "/etc/appscale-persist/node.env",
            "the boot unit's settings (APPSCALEFILE, APPSCALE_NODE, APPSCALE_MOUNTPOINT).",
        ),
    ]);
    if tool == "appscalefile-lint" || tool == "disk-attach" {
        v.push((
            "~/.appscale/locations-KEYNAME.json",
            "AppScale's record of its nodes (--locations).",
        ));
    }
    v
}

/// `name` with roff's hyphen escaped.
fn roff(s: &str) -> String {
    s.replace('\\', "\\\\").replace('-', "\\-")
}

/// The ENVIRONMENT, FILES and SEE ALSO sections of `tool`'s man page.
pub fn sections(tool: &str) -> String {
    let mut out = String::from(".SH ENVIRONMENT\n");
    for (name, what) in environment(tool) {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(name), roff(what)));
    }
    out.push_str(".SH FILES\n");
    for (path, what) in files(tool) {
        out.push_str(&format!(".TP\n\\fI{}\\fR\n{}\n", roff(path), roff(what)));
    }
    out.push_str(".SH \"SEE ALSO\"\n");
    let others: Vec<String> = crate::TOOLS
        .iter()
        .filter(|t| **t != tool)
        .map(|t| format!("\\fB{}\\fR(1)", roff(t)))
        .collect();
    out.push_str(&others.join(",\n"));
    out.push_str(
        "\n.PP\nThe flows \\fBappscale\\-persist\\-up\\fR, \\-down, \\-status, \\-backup and \\-restore (their \\-\\-help), and the documentation in /usr/share/doc/appscale\\-persist (README.md, docs/).\n",
    );
    out
}
