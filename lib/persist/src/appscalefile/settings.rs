//! Settings: the checks appscale-tools' argument parser made on the
//! top-level keys of an AppScalefile (`appscale up` passed every key to
//! `appscale-run-instances` as a flag): unknown keys, value types and
//! choices, settings that need a cloud, settings that need each other, and
//! settings that exclude each other.

use super::Checker;
use super::cloud::{Secret, is_http_url};
use super::codes;
use super::keys::{
    APPSCALE_CLOUDS, DATASTORES, EXTRA_KEYS, INT_KEYS, KNOWN_KEYS, SWITCH_KEYS, abbreviation_of,
    did_you_mean,
};
use super::yaml::Node;

/// Settings only a cloud could use, with AppScale's message when given in
/// cluster mode.
const CLOUD_ONLY: &[(&str, &str)] = &[
    (
        "machine",
        "Cannot specify a machine image when infrastructure is not specified.",
    ),
    (
        "static_ip",
        "Can't specify a static IP when infrastructure is not specified.",
    ),
    (
        "use_spot_instances",
        "Can't run spot instances when when infrastructure is not specified.",
    ),
    (
        "max_spot_price",
        "Can't run spot instances when when infrastructure is not specified.",
    ),
];

/// Whether a switch is on the way PyYAML (YAML 1.1, which appscale-tools
/// used) read it.
fn switch_value(n: &Node) -> Option<bool> {
    match n.scalar()? {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

impl Checker {
    /// Top-level keys appscale-tools' argument parser did not know.
    pub(super) fn unknown_keys(&mut self, entries: &[(Node, Node)]) {
        for (k, _) in entries {
            match k.scalar() {
                Some(name) if KNOWN_KEYS.contains(&name) => {}
                Some(name) if EXTRA_KEYS.contains(&name) => self.warning(
                    codes::KEY_NOT_IN_APPSCALE,
                    format!("`{name}` is checked here (an http(s) URL; no tool uses it), but appscale-tools (2.3 to 3.8) has no --{name} flag: `appscale up` refuses the file"),
                    k,
                    Some(format!("keep `{name}` in your eucarc (environment) for AppScale, or remove it before `appscale up`")),
                ),
                Some(name) => {
                    if let Some(full) = abbreviation_of(name) {
                        self.error(
                            codes::UNKNOWN_KEY,
                            format!("`{name}` is not a key; AppScale's argument parser took it as an abbreviation of `{full}`, this linter does not"),
                            k,
                            Some(format!("write the whole key, `{full}`")),
                        );
                        continue;
                    }
                    let help = did_you_mean(name, KNOWN_KEYS)
                        .map(|s| format!("did you mean `{s}`?"))
                        .or_else(|| Some("remove it: `appscale up` passes every key to its argument parser, which refuses keys it does not know".into()));
                    self.error(
                        codes::UNKNOWN_KEY,
                        format!("unknown key `{name}`: AppScale refuses it (unrecognized argument --{name})"),
                        k,
                        help,
                    );
                }
                None => self.error(
                    codes::BAD_TYPE,
                    format!("a key must be a plain name, not {}", k.kind()),
                    k,
                    None,
                ),
            }
        }
    }

    /// The argument checks over the top-level settings. `infrastructure` is
    /// the valid `infrastructure`, if any; `given` whether the key is set at
    /// all (an unknown value is reported elsewhere, and then nothing here
    /// depends on it).
    pub(super) fn settings(&mut self, root: &Node, infrastructure: Option<&str>, given: bool) {
        self.setting_types(root);
        self.setting_values(root);
        self.settings_exclusive(root);
        self.settings_together(root);
        self.cloud_settings(root, infrastructure, given);
    }

    /// The types: integers, a number, switches.
    fn setting_types(&mut self, root: &Node) {
        let get = |k: &str| root.get(k).filter(|n| !n.is_null());
        for key in INT_KEYS {
            if let Some(n) = get(key)
                && n.as_int().is_none()
            {
                self.bad_type(key, "an integer", n);
            }
        }
        if let Some(n) = get("max_spot_price")
            && !matches!(n.kind(), "an integer" | "a number")
        {
            self.bad_type("max_spot_price", "a number", n);
        }
        for key in SWITCH_KEYS {
            if let Some(n) = get(key)
                && switch_value(n).is_none()
            {
                self.error(
                    codes::BAD_TYPE,
                    format!("`{key}` is a switch: `true` or `false`, not {}", n.kind()),
                    n,
                    Some(format!("write `{key}: true` (or remove it)")),
                );
            }
        }
    }

    /// The values AppScale refused.
    fn setting_values(&mut self, root: &Node) {
        let get = |k: &str| root.get(k).filter(|n| !n.is_null());
        if let Some(n) = get("table")
            && n.scalar().is_none_or(|t| !DATASTORES.contains(&t))
        {
            self.error(
                codes::SETTING_INVALID,
                format!(
                    "invalid choice for `table`: {}",
                    n.scalar()
                        .map_or_else(|| n.kind().to_string(), |t| format!("`{t}`"))
                ),
                n,
                Some(
                    "AppScale runs on `cassandra`: remove `table` or set it to `cassandra`".into(),
                ),
            );
        }
        for key in ["replication", "n"] {
            if let Some(n) = get(key)
                && n.as_int().is_some_and(|v| v < 1)
            {
                self.error(
                    codes::SETTING_INVALID,
                    "Replication factor must exceed 0.".into(),
                    n,
                    Some("set it to 1 or more, or remove it".into()),
                );
            }
        }
        if let Some(n) = get("appengine")
            && n.as_int().is_some_and(|v| v < 1)
        {
            self.error(
                codes::SETTING_INVALID,
                "Number of application servers must exceed zero.".into(),
                n,
                Some("set it to 1 or more, or remove it".into()),
            );
        }
        if let Some(n) = get("user_commands")
            && n.as_seq().is_none()
        {
            self.error(
                codes::SETTING_INVALID,
                "user_commands must be a list. Please make it a list and try again.".into(),
                n,
                Some("write one `- command` line per command under `user_commands:`".into()),
            );
        }
    }

    /// Settings that exclude each other (the parser's mutually exclusive
    /// groups).
    fn settings_exclusive(&mut self, root: &Node) {
        let get = |k: &str| root.get(k).filter(|n| !n.is_null());
        let on = |k: &str| get(k).and_then(switch_value) == Some(true);
        for (a, b, a_on) in [
            ("appengine", "autoscale", on("autoscale")),
            (
                "client_secrets",
                "oauth2_storage",
                get("oauth2_storage").is_some(),
            ),
        ] {
            if let (Some(_), Some(second), true) = (get(a), get(b), a_on) {
                let key = root
                    .as_map()
                    .and_then(|m| m.iter().find(|(k, _)| k.scalar() == Some(b)))
                    .map_or(second, |(k, _)| k);
                self.error(
                    codes::SETTINGS_CONFLICT,
                    format!("argument --{b}: not allowed with argument --{a}"),
                    key,
                    Some(format!("keep one of `{a}` and `{b}`")),
                );
            }
        }
    }

    /// Settings that need each other (the admin account), or exclude `test`.
    fn settings_together(&mut self, root: &Node) {
        let get = |k: &str| root.get(k).filter(|n| !n.is_null());
        let on = |k: &str| get(k).and_then(switch_value) == Some(true);
        let admin_user = get("admin_user");
        let admin_pass = get("admin_pass");
        match (admin_user, admin_pass) {
            (Some(u), None) => self.error(
                codes::SETTING_MISSING,
                "If admin_user is set, admin_pass must also be set.".into(),
                u,
                Some("add `admin_pass:`, or remove `admin_user`".into()),
            ),
            (None, Some(p)) => self.error(
                codes::SETTING_MISSING,
                "If admin_pass is set, admin_user must also be set.".into(),
                p,
                Some("add `admin_user:`, or remove `admin_pass`".into()),
            ),
            (Some(u), Some(_)) if on("test") => self.error(
                codes::SETTINGS_CONFLICT,
                "Cannot set admin_user, admin_pass, and test.".into(),
                u,
                Some("remove `test: true`, or the admin account".into()),
            ),
            _ => {}
        }
    }

    /// Settings for a cloud: none without `infrastructure` (unless it is
    /// `given`, with a value reported elsewhere); in one, the image, the
    /// spot settings, and Compute Engine's credentials.
    fn cloud_settings(&mut self, root: &Node, infrastructure: Option<&str>, given: bool) {
        let get = |k: &str| root.get(k).filter(|n| !n.is_null());
        let on = |k: &str| get(k).and_then(switch_value) == Some(true);
        let spot = on("use_spot_instances");
        let price = get("max_spot_price");
        match infrastructure {
            None if !given => {
                for (key, message) in CLOUD_ONLY {
                    let Some(n) = get(key) else { continue };
                    if *key == "use_spot_instances" && !spot {
                        continue;
                    }
                    self.error(
                        codes::SETTING_WITHOUT_INFRASTRUCTURE,
                        (*message).into(),
                        n,
                        Some(format!(
                            "set `infrastructure`, or remove `{key}` in cluster mode"
                        )),
                    );
                }
            }
            None => {}
            Some(cloud) => {
                let appscale_cloud = APPSCALE_CLOUDS.contains(&cloud);
                if appscale_cloud && get("machine").is_none() {
                    self.error(
                        codes::SETTING_MISSING,
                        "Need a machine image (ami) when running in a cloud infrastructure.".into(),
                        root.get("infrastructure").unwrap_or(root),
                        Some("add `machine:` with the image that has AppScale installed (an ami/emi id, or the GCE image name)".into()),
                    );
                }
                if (spot || price.is_some()) && cloud != "ec2" {
                    let at = price.or_else(|| get("use_spot_instances")).unwrap_or(root);
                    self.error(
                        codes::SETTINGS_CONFLICT,
                        "Can't run spot instances unless Amazon EC2 is the infrastructure used."
                            .into(),
                        at,
                        Some("remove the spot settings, or run on `ec2`".into()),
                    );
                } else if let (Some(p), false) = (price, spot) {
                    self.error(
                        codes::SETTING_MISSING,
                        "Can't have a max spot instance price if --use_spot_instances is not set."
                            .into(),
                        p,
                        Some("add `use_spot_instances: true`, or remove `max_spot_price`".into()),
                    );
                }
                if cloud == "gce" {
                    self.gce_credentials(root);
                }
            }
        }
    }

    /// The settings the cloud tools take from the file (`project`,
    /// `EC2_URL`, `S3_URL`, `EC2_ACCESS_KEY`, `EC2_SECRET_KEY`): checked,
    /// and kept in the deployment's [`CloudSettings`]. The secret is
    /// registered as one ([`Secret::new`]) before anything else is done
    /// with it, and no finding quotes it.
    ///
    /// [`CloudSettings`]: super::cloud::CloudSettings
    pub(super) fn cloud_keys(&mut self, root: &Node, infrastructure: Option<&str>) {
        let get = |k: &str| root.get(k).filter(|n| !n.is_null());
        if let Some(n) = get("EC2_SECRET_KEY") {
            match n.scalar() {
                Some(v) => self.lint.deployment.cloud.secret_key = Some(Secret::new(v.trim())),
                None => self.bad_type("EC2_SECRET_KEY", "a string", n),
            }
        }
        let mut text = |key: &str| -> Option<String> {
            let n = get(key)?;
            match n.scalar() {
                Some(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                Some(_) => None,
                None => {
                    self.bad_type(key, "a string", n);
                    None
                }
            }
        };
        let project = text("project");
        let access_key = text("EC2_ACCESS_KEY");
        let ec2_url = text("EC2_URL");
        let s3_url = text("S3_URL");
        for (key, value) in [("EC2_URL", &ec2_url), ("S3_URL", &s3_url)] {
            if let (Some(v), Some(n)) = (value, get(key))
                && !is_http_url(v)
            {
                self.error(
                    codes::SETTING_INVALID,
                    format!("`{key}` must be an http:// or https:// URL, not `{v}`"),
                    n,
                    Some(format!(
                        "write the whole URL, like `{key}: http://192.0.2.10:8773/services/{}`",
                        if key == "EC2_URL" {
                            "compute"
                        } else {
                            "objectstorage"
                        }
                    )),
                );
            }
        }
        let secret_given = self.lint.deployment.cloud.secret_key.is_some();
        match (get("EC2_ACCESS_KEY"), get("EC2_SECRET_KEY")) {
            (Some(a), None) => self.error(
                codes::SETTING_MISSING,
                "`EC2_ACCESS_KEY` is set without `EC2_SECRET_KEY`: the pair is one credential".into(),
                a,
                Some("add `EC2_SECRET_KEY:`, or remove `EC2_ACCESS_KEY` (the AWS credential chain is used then)".into()),
            ),
            (None, Some(s)) if secret_given => self.error(
                codes::SETTING_MISSING,
                "`EC2_SECRET_KEY` is set without `EC2_ACCESS_KEY`: the pair is one credential".into(),
                s,
                Some("add `EC2_ACCESS_KEY:`, or remove `EC2_SECRET_KEY` (the AWS credential chain is used then)".into()),
            ),
            _ => {}
        }
        let cloud = &mut self.lint.deployment.cloud;
        cloud.infrastructure = infrastructure.map(str::to_string);
        cloud.project = project;
        cloud.access_key = access_key;
        cloud.ec2_url = ec2_url;
        cloud.s3_url = s3_url;
    }

    /// What the GCE agent needed from the file before any call.
    fn gce_credentials(&mut self, root: &Node) {
        let get = |k: &str| root.get(k).filter(|n| !n.is_null());
        let at = root.get("infrastructure").unwrap_or(root);
        if get("client_secrets").is_none() && get("oauth2_storage").is_none() {
            self.error(
                codes::SETTING_MISSING,
                "Please specify a client_secrets file or a oauth2_storage file in your AppScalefile when running over Google Compute Engine.".into(),
                at,
                Some("add `client_secrets: ~/client_secrets.json` (an OAuth client of your project)".into()),
            );
        }
        if get("project").is_none() {
            self.error(
                codes::SETTING_MISSING,
                "The required parameter, project, was not specified.".into(),
                at,
                Some("add `project:` with your Google Cloud project id".into()),
            );
        }
    }
}
