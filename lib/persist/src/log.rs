//! Human messages on stderr, prefixed with the tool's name.
//!
//! stdout carries records only; everything a person reads goes through here.
//! Every message is one line: control characters in it (a newline, an
//! escape sequence, a carriage return, from a disk or node name in a record)
//! are written escaped (`\u{1b}`), so a record cannot forge or hide lines on
//! an operator's terminal. The level is set once at start-up from `-q`/`-v` (or `APPSCALE_PERSIST_LOG`
//! = `quiet`, `info`, `debug`).

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Errors only.
    Quiet = 0,
    /// Errors, warnings and what changed (the default).
    Info = 1,
    /// Also every command run and every API call.
    Debug = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static TOOL: OnceLock<String> = OnceLock::new();
/// Values never to print: credentials read by this run (see [`add_secret`]).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Registers a secret (an access key's secret, a token) read by this run:
/// from now on every message writes it as `<redacted>`. Values shorter than
/// 4 characters are ignored (they would mask ordinary words).
pub fn add_secret(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
    }
}

/// `s` with every registered secret replaced by `<redacted>`.
pub fn redact(s: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = s.to_string();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "<redacted>");
        }
    }
    out
}

/// Sets the tool name used as prefix and the level. Call once from `main`.
pub fn init(tool: &str, level: Level) {
    let _ = TOOL.set(tool.to_string());
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The level from `-q` and `-v` counts, overridden by `APPSCALE_PERSIST_LOG`.
pub fn level_from(quiet: bool, verbose: u8) -> Level {
    match std::env::var("APPSCALE_PERSIST_LOG").as_deref() {
        Ok("quiet") => return Level::Quiet,
        Ok("debug") => return Level::Debug,
        Ok("info") => return Level::Info,
        _ => {}
    }
    if quiet {
        Level::Quiet
    } else if verbose > 0 {
        Level::Debug
    } else {
        Level::Info
    }
}

/// Whether messages at `level` are shown.
pub fn enabled(level: Level) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as u8
}

/// The tool name given to [`init`].
pub fn tool() -> &'static str {
    TOOL.get().map(String::as_str).unwrap_or("appscale-persist")
}

fn emit(prefix: &str, args: Arguments<'_>) {
    let line = escape_controls(&redact(&args.to_string()));
    let mut err = std::io::stderr().lock();
    // stderr going away is no reason to fail the tool.
    let _ = writeln!(err, "{}: {prefix}{line}", tool());
}

/// `s` with every control character written as `\u{..}`, so it prints as
/// one inert line.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An error, always shown.
pub fn error(args: Arguments<'_>) {
    emit("error: ", args);
}

/// A warning: something an operator should look at.
pub fn warn(args: Arguments<'_>) {
    if enabled(Level::Info) {
        emit("warning: ", args);
    }
}

/// What happened: a change made, or found already made.
pub fn info(args: Arguments<'_>) {
    if enabled(Level::Info) {
        emit("", args);
    }
}

/// Detail for debugging: commands run, API calls, probes.
pub fn debug(args: Arguments<'_>) {
    if enabled(Level::Debug) {
        emit("debug: ", args);
    }
}

#[cfg(test)]
mod tests {
    use super::{add_secret, escape_controls, redact};

    #[test]
    fn registered_secrets_are_redacted() {
        add_secret("wJalrXUtnFEMI/K7MDENG");
        assert_eq!(
            redact("signing with wJalrXUtnFEMI/K7MDENG failed"),
            "signing with <redacted> failed"
        );
        add_secret("ab");
        assert_eq!(redact("ab cd"), "ab cd");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain/dev/loop3"), "plain/dev/loop3");
        assert_eq!(
            escape_controls("a\u{1b}[2J\rb\nc\td"),
            "a\\u{1b}[2J\\u{d}b\\u{a}c\\u{9}d"
        );
    }
}
