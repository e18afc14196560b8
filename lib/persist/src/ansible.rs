//! Ansible binary-module mode.
//!
//! ansible-core runs a binary module with one argument: a file holding a
//! flat JSON object, the task's arguments plus `_ansible_*` keys. Every tool
//! recognises that call ([`module_args_path`]) and then:
//!
//! * turns each argument into the flag of the same name (`fstab_path` would
//!   be `--fstab-path`), checked against the tool's own clap definition, so
//!   an unknown or wrongly typed argument fails with a message naming it;
//! * takes the optional `records` argument (a list of disk records) as its
//!   input instead of stdin;
//! * honours `_ansible_check_mode` exactly as `--check`, and
//!   `_ansible_diff` by returning the fstab change as a diff;
//! * prints one JSON object: `changed`, `failed`, `msg`, `records`, the
//!   single record's fields at the top level, and `rc`/`stderr` on failure.
//!
//! Nothing here may print a stack trace: a panic becomes `failed: true`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory};
use serde_json::{Map, Value, json};

use crate::record;
use crate::tool::{self, Exit, ToolArgs};

/// The argument file, when the process was started as an Ansible module.
pub fn module_args_path(argv: &[String]) -> Option<PathBuf> {
    let [_, arg] = argv else { return None };
    if arg.starts_with('-') {
        return None;
    }
    let path = Path::new(arg);
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.as_object()?.keys().any(|k| k.starts_with("_ansible_")).then(|| path.to_path_buf())
}

/// Runs tool `A` as a module with the arguments in `path`.
pub fn run<A: ToolArgs>(path: &Path) -> ExitCode {
    // Whatever happens, Ansible gets one JSON object and exit 0 or 1.
    let quiet_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| run_inner::<A>(path));
    std::panic::set_hook(quiet_panic);
    let out = match result {
        Ok(v) => v,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            fail(format!("{} hit an internal error (a bug, please report it): {what}", A::NAME))
        }
    };
    let failed = out.get("failed").and_then(Value::as_bool).unwrap_or(false);
    tool::print_json(&out);
    ExitCode::from(if failed { 1 } else { 0 })
}

fn fail(msg: String) -> Value {
    json!({ "changed": false, "failed": true, "msg": msg })
}

fn run_inner<A: ToolArgs>(path: &Path) -> Value {
    let module = A::NAME.replace('-', "_");
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return fail(format!("reading module arguments {}: {e}", path.display())),
    };
    let Ok(Value::Object(mut params)) = serde_json::from_str::<Value>(&text) else {
        return fail(format!("module arguments in {} are not a JSON object", path.display()));
    };
    let check = params.get("_ansible_check_mode").and_then(as_bool).unwrap_or(false);
    let diff = params.get("_ansible_diff").and_then(as_bool).unwrap_or(false);
    params.retain(|k, _| !k.starts_with("_ansible_"));

    let records = match params.remove("records") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match record::from_value(item) {
                    Ok(r) => out.push(r),
                    Err(e) => return fail(format!("argument records[{i}]: {e}")),
                }
            }
            Some(out)
        }
        Some(other) => return fail(format!("argument records must be a list of disk records, not {}", record::json_kind(&other))),
    };

    let argv = match to_argv::<A>(&module, &params, check) {
        Ok(a) => a,
        Err(msg) => return fail(msg),
    };
    let args = match tool::try_parse::<A>(&argv) {
        Ok(a) => a,
        Err(msg) => return fail(format!("{module}: {msg}")),
    };
    let report = tool::execute_for_module(args, records);

    let mut out = Map::new();
    if let [single] = report.records.as_slice() {
        if let Value::Object(fields) = serde_json::to_value(single).unwrap_or_default() {
            out.extend(fields);
        }
    }
    let changed = report.records.iter().any(|r| r.changed == Some(true));
    let failed = report.exit != Exit::Ok;
    out.insert("changed".into(), changed.into());
    out.insert("failed".into(), failed.into());
    let msg = if report.messages.is_empty() { "no disk records to act on".to_string() } else { report.messages.join("; ") };
    out.insert("msg".into(), msg.into());
    out.insert("records".into(), serde_json::to_value(&report.records).unwrap_or_default());
    if failed {
        out.insert("rc".into(), (report.exit as i32).into());
        out.insert("stderr".into(), report.messages.join("\n").into());
    }
    if diff && !report.diffs.is_empty() {
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
fn to_argv<A: CommandFactory + ToolArgs>(module: &str, params: &Map<String, Value>, check: bool) -> Result<Vec<String>, String> {
    let cmd = A::command();
    let mut argv = vec![A::NAME.to_string()];
    let mut unknown = Vec::new();
    let hidden = ["help", "version", "check", "quiet", "verbose"];
    for (key, value) in params {
        let long = key.replace('_', "-");
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(long.as_str()) && !hidden.contains(&long.as_str())) else {
            unknown.push(key.clone());
            continue;
        };
        if value.is_null() {
            continue;
        }
        let flag = format!("--{long}");
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match as_bool(value) {
                Some(true) => argv.push(flag),
                Some(false) => {}
                None => return Err(format!("argument {key} must be a boolean, not {}", record::json_kind(value))),
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
    if !unknown.is_empty() {
        let mut supported: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !hidden.contains(l))
            .map(|l| l.replace('-', "_"))
            .collect();
        supported.push("records".into());
        supported.sort();
        return Err(format!(
            "Unsupported parameters for ({module}) module: {}. Supported parameters include: {}.",
            unknown.join(", "),
            supported.join(", ")
        ));
    }
    if check {
        argv.push("--check".into());
    }
    Ok(argv)
}

fn scalar(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("argument {key} must be a string, not {}", record::json_kind(other))),
    }
}
