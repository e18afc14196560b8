//! Ansible binary-module mode.
//!
//! ansible-core runs a binary module with one argument: a file holding a
//! flat JSON object, the task's arguments plus `_ansible_*` keys. Every tool
//! recognises that call ([`module_args_path`]) and then:
//!
//! * turns each argument into the flag of the same name (`fstab_path` would
//!   be `--fstab-path`), checked against the tool's own clap definition, so
//!   an unknown or wrongly typed argument fails with a message naming it
//!   (unless Ansible sets `_ansible_ignore_unknown_opts`, as the collection's
//!   action plugins do when `state:` hands a task to the other module);
//! * takes Ansible's conventions where the flags differ: booleans are
//!   positive ([`POSITIVE`]: `fsck: false` is `--no-fsck`; the negative
//!   spellings are still accepted), and `state:` names the end state
//!   ([`END_STATES`]: `disk_mount` reaches `mounted`);
//! * takes the optional `records` argument (a list of disk records) as its
//!   input instead of stdin;
//! * honours `_ansible_check_mode` exactly as `--check`, and
//!   `_ansible_diff` by returning the fstab change as a diff;
//! * prints one JSON object: `changed`, `failed`, `msg`, `records`, the
//!   single record's fields at the top level, and `rc`/`stderr` on failure.
//!
//! Nothing here may print a stack trace: a panic becomes `failed: true`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, Parser};
use serde_json::{Map, Value, json};

use crate::log;
use crate::record::{self, Record};
use crate::step::{Exit, Report};
use crate::tool::{self, ToolArgs};

/// The argument file, when the process was started as an Ansible module.
pub fn module_args_path(argv: &[String]) -> Option<PathBuf> {
    let [_, arg] = argv else { return None };
    if arg.starts_with('-') {
        return None;
    }
    let path = Path::new(arg);
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.as_object()?
        .keys()
        .any(|k| k.starts_with("_ansible_"))
        .then(|| path.to_path_buf())
}

/// Module arguments that say positively what a tool's negative flag says:
/// (argument, flag). `manage_fstab: false` is `--no-fstab` (the module's
/// `fstab` stays the fstab's path, as the flag is), `fsck: false` is
/// `--no-fsck`, `freeze: false` is `--no-freeze`; `true`, the default,
/// passes no flag. Used for the tools that have the flag.
pub const POSITIVE: &[(&str, &str)] = &[
    ("manage_fstab", "no-fstab"),
    ("fsck", "no-fsck"),
    ("freeze", "no-freeze"),
];

/// The end state a tool's module reaches, as its `state:` argument names
/// it, and the other end state with the module that reaches it: (tool,
/// state, other state, other module). A module takes `state:` only when it
/// is listed; `state` absent or its own runs the tool. The other state is
/// the collection's action plugin's work (plugins/action/disk_mount.py hands
/// `disk_mount` with `state: unmounted` to `disk_unmount`); the binary alone
/// refuses it, naming the module to use.
pub const END_STATES: &[(&str, &str, &str, &str)] = &[
    ("disk-mount", "mounted", "unmounted", "disk_unmount"),
    ("disk-unmount", "unmounted", "mounted", "disk_mount"),
    ("disk-attach", "attached", "detached", "disk_detach"),
    ("disk-detach", "detached", "attached", "disk_attach"),
];

/// What Ansible asked for besides the task's arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModuleFlags {
    /// `_ansible_check_mode`: change nothing (passed on as `--check`).
    pub check: bool,
    /// `_ansible_diff`: return file changes as a diff.
    pub diff: bool,
}

/// Runs tool `A` as a module with the arguments in `path`.
pub fn run<A: ToolArgs>(path: &Path) -> ExitCode {
    if A::STOPS_CLEANLY {
        crate::interrupt::install();
    }
    run_module::<A>(A::NAME, path, true, |args, records, flags| {
        step_output(run_step(args, records), flags)
    })
}

/// Runs any tool as a module: reads and checks the arguments in `path`
/// against `C`'s clap definition, then calls `body` with the parsed
/// arguments and the `records` argument (when `takes_records`). Prints the
/// one JSON object Ansible reads; a panic becomes `failed: true`.
pub fn run_module<C: Parser>(
    name: &str,
    path: &Path,
    takes_records: bool,
    body: impl FnOnce(C, Option<Vec<Record>>, ModuleFlags) -> Value + std::panic::UnwindSafe,
) -> ExitCode {
    let quiet_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result =
        std::panic::catch_unwind(move || match parse_module::<C>(name, path, takes_records) {
            Ok((args, records, flags)) => body(args, records, flags),
            Err(msg) => fail(msg),
        });
    std::panic::set_hook(quiet_panic);
    let out = match result {
        Ok(v) => v,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            fail(format!(
                "{name} hit an internal error (a bug, please report it): {what}"
            ))
        }
    };
    let failed = out.get("failed").and_then(Value::as_bool).unwrap_or(false);
    print_json(&out);
    ExitCode::from(if failed { 1 } else { 0 })
}

/// Runs a tool's step for the module: `args` are already parsed from the
/// module's arguments, `records` come from its `records` argument or from
/// the flags.
fn run_step<A: ToolArgs>(args: A, records: Option<Vec<Record>>) -> Report {
    log::init(A::NAME, log::level_from(true, 0));
    if let Err(e) = args.validate() {
        return Report {
            records: Vec::new(),
            diffs: Vec::new(),
            messages: vec![e],
            exit: Exit::Usage,
        };
    }
    let records = match records {
        Some(r) => r,
        None => args
            .single()
            .or_else(|| args.fallback())
            .into_iter()
            .collect(),
    };
    tool::run(args, records)
}

/// Writes one line of JSON to stdout.
fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// A failed module result.
pub fn fail(msg: String) -> Value {
    json!({ "changed": false, "failed": true, "msg": msg })
}

type Parsed<C> = (C, Option<Vec<Record>>, ModuleFlags);

fn parse_module<C: Parser>(
    name: &str,
    path: &Path,
    takes_records: bool,
) -> Result<Parsed<C>, String> {
    let module = name.replace('-', "_");
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading module arguments {}: {e}", path.display()))?;
    let Ok(Value::Object(mut params)) = serde_json::from_str::<Value>(&text) else {
        return Err(format!(
            "module arguments in {} are not a JSON object",
            path.display()
        ));
    };
    let flags = ModuleFlags {
        check: params
            .get("_ansible_check_mode")
            .and_then(as_bool)
            .unwrap_or(false),
        diff: params
            .get("_ansible_diff")
            .and_then(as_bool)
            .unwrap_or(false),
    };
    let ignore_unknown = params
        .get("_ansible_ignore_unknown_opts")
        .and_then(as_bool)
        .unwrap_or(false);
    params.retain(|k, _| !k.starts_with("_ansible_"));
    take_state(name, &module, &mut params)?;
    let records = if takes_records {
        match params.remove("records") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    out.push(
                        record::from_value(item)
                            .map_err(|e| format!("argument records[{i}]: {e}"))?,
                    );
                }
                Some(out)
            }
            Some(other) => {
                return Err(format!(
                    "argument records must be a list of disk records, not {}",
                    record::json_kind(&other)
                ));
            }
        }
    } else {
        None
    };
    let argv = to_argv::<C>(
        name,
        &module,
        &params,
        flags.check,
        takes_records,
        ignore_unknown,
    )?;
    let m = C::command()
        .try_get_matches_from(&argv)
        .map_err(|e| format!("{module}: {}", first_line(&e.to_string())))?;
    let args =
        C::from_arg_matches(&m).map_err(|e| format!("{module}: {}", first_line(&e.to_string())))?;
    Ok((args, records, flags))
}

/// Checks and removes the `state` argument of a tool listed in
/// [`END_STATES`]; other tools keep it, to be refused as unknown.
fn take_state(name: &str, module: &str, params: &mut Map<String, Value>) -> Result<(), String> {
    let Some(&(_, own, other, other_module)) = END_STATES.iter().find(|e| e.0 == name) else {
        return Ok(());
    };
    match params.remove("state") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == own => Ok(()),
        Some(Value::String(s)) if s == other => Err(format!(
            "{module}: state {other} is the work of appscale.persist.{other_module}; run the task \
             through the collection (its action plugin hands it over) or call that module"
        )),
        Some(v) => Err(format!(
            "{module}: argument state must be {own} or {other}, not {}",
            match &v {
                Value::String(s) => format!("{s:?}"),
                v => record::json_kind(v).to_string(),
            }
        )),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string()
}

/// The module result of a step run.
fn step_output(report: Report, flags: ModuleFlags) -> Value {
    let mut out = Map::new();
    if let [single] = report.records.as_slice()
        && let Value::Object(fields) = serde_json::to_value(single).unwrap_or_default()
    {
        out.extend(fields);
    }
    let changed = report.records.iter().any(|r| r.changed == Some(true));
    let failed = report.exit != Exit::Ok;
    out.insert("changed".into(), changed.into());
    out.insert("failed".into(), failed.into());
    let msg = if report.messages.is_empty() {
        "no disk records to act on".to_string()
    } else {
        report.messages.join("; ")
    };
    out.insert("msg".into(), msg.into());
    out.insert(
        "records".into(),
        serde_json::to_value(&report.records).unwrap_or_default(),
    );
    if failed {
        out.insert("rc".into(), (report.exit as i32).into());
        out.insert("stderr".into(), report.messages.join("\n").into());
    }
    if flags.diff && !report.diffs.is_empty() {
        let diffs: Vec<Value> = report
            .diffs
            .iter()
            .map(|d| json!({ "before": d.before, "after": d.after, "before_header": d.path, "after_header": d.path }))
            .collect();
        out.insert("diff".into(), Value::Array(diffs));
    }
    Value::Object(out)
}

/// Ansible's boolean spellings.
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" | "y" => Some(true),
            "no" | "false" | "off" | "0" | "n" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

/// Turns module parameters into the tool's command line, checking each
/// against the tool's own argument definitions.
fn to_argv<C: CommandFactory>(
    name: &str,
    module: &str,
    params: &Map<String, Value>,
    check: bool,
    takes_records: bool,
    ignore_unknown: bool,
) -> Result<Vec<String>, String> {
    let cmd = C::command();
    let has_flag = |long: &str| cmd.get_arguments().any(|a| a.get_long() == Some(long));
    // `manage_fstab: false` (or its old spelling `no_fstab: true`) makes
    // the fstab's path moot (and --fstab conflicts with --no-fstab): drop an
    // `fstab` set alongside, as module_defaults does.
    let mooted: Vec<&str> = POSITIVE
        .iter()
        .filter(|(arg, neg)| {
            has_flag(neg)
                && (params.get(*arg).and_then(as_bool) == Some(false)
                    || params.get(&neg.replace('-', "_")).and_then(as_bool) == Some(true))
        })
        .filter_map(|(_, neg)| neg.strip_prefix("no-"))
        .collect();
    let mut argv = vec![name.to_string()];
    let mut positional = Vec::new();
    let mut unknown = Vec::new();
    let hidden = ["help", "version", "check", "quiet", "verbose"];
    for (key, value) in params {
        if let Some(&(_, negative)) = POSITIVE.iter().find(|p| p.0 == key)
            && has_flag(negative)
        {
            match (value, as_bool(value)) {
                (Value::Null, _) | (_, Some(true)) => {}
                (_, Some(false)) => argv.push(format!("--{negative}")),
                (v, None) => {
                    return Err(format!(
                        "argument {key} must be a boolean, not {}",
                        record::json_kind(v)
                    ));
                }
            }
            continue;
        }
        if mooted.contains(&key.as_str()) {
            continue;
        }
        let long = key.replace('_', "-");
        let found = cmd.get_arguments().find(|a| {
            (a.get_long() == Some(long.as_str())
                || (a.is_positional() && a.get_id().as_str() == key.as_str()))
                && !hidden.contains(&long.as_str())
        });
        let Some(arg) = found else {
            unknown.push(key.clone());
            continue;
        };
        if value.is_null() {
            continue;
        }
        if arg.is_positional() {
            positional.push(scalar(key, value)?);
            continue;
        }
        let flag = format!("--{long}");
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match as_bool(value) {
                Some(true) => argv.push(flag),
                Some(false) => {}
                None => {
                    return Err(format!(
                        "argument {key} must be a boolean, not {}",
                        record::json_kind(value)
                    ));
                }
            },
            ArgAction::Append => {
                let items: Vec<&Value> = match value {
                    Value::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                for item in items {
                    argv.push(format!("{flag}={}", scalar(key, item)?));
                }
            }
            _ => argv.push(format!("{flag}={}", scalar(key, value)?)),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        let mut supported: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?;
                // The positive spelling of a negative flag.
                Some(match POSITIVE.iter().find(|p| p.1 == long) {
                    Some(p) => p.0.to_string(),
                    None => long.replace('-', "_"),
                })
            })
            .chain(
                cmd.get_arguments()
                    .filter(|a| a.is_positional())
                    .map(|a| a.get_id().to_string()),
            )
            .filter(|l| !hidden.contains(&l.as_str()))
            .collect();
        if takes_records {
            supported.push("records".into());
        }
        if END_STATES.iter().any(|e| e.0 == name) {
            supported.push("state".into());
        }
        supported.sort();
        return Err(format!(
            "Unsupported parameters for ({module}) module: {}. Supported parameters include: {}.",
            unknown.join(", "),
            supported.join(", ")
        ));
    }
    if check && cmd.get_arguments().any(|a| a.get_long() == Some("check")) {
        argv.push("--check".into());
    }
    if !positional.is_empty() {
        argv.push("--".into());
        argv.extend(positional);
    }
    Ok(argv)
}

fn scalar(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "argument {key} must be a string, not {}",
            record::json_kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fstab flags of disk-mount, as the tool defines them.
    #[derive(clap::Parser)]
    struct Fstab {
        #[arg(long, default_value = "/etc/fstab", conflicts_with = "no_fstab")]
        fstab: String,
        #[arg(long)]
        no_fstab: bool,
    }

    fn argv(params: Value) -> Vec<String> {
        let params = params.as_object().unwrap().clone();
        to_argv::<Fstab>("disk-mount", "disk_mount", &params, false, false, false).unwrap()
    }

    /// `fstab` set for the whole play (module_defaults) and the fstab left
    /// alone by either spelling: only --no-fstab is passed (--fstab with it
    /// is a usage error of the tool).
    #[test]
    fn leaving_the_fstab_alone_drops_its_path_in_either_spelling() {
        for off in [
            json_object("manage_fstab", false),
            json_object("no_fstab", true),
        ] {
            let mut params = off.clone();
            params["fstab"] = Value::from("/etc/fstab");
            let argv = argv(params);
            assert!(argv.contains(&"--no-fstab".to_string()), "{off}: {argv:?}");
            assert!(
                !argv.iter().any(|a| a.starts_with("--fstab")),
                "{off}: {argv:?}"
            );
        }
        let argv = argv(serde_json::json!({"fstab": "/tmp/fstab"}));
        assert!(argv.contains(&"--fstab=/tmp/fstab".to_string()), "{argv:?}");
    }

    fn json_object(key: &str, v: bool) -> Value {
        serde_json::json!({ key: v })
    }
}
