//! Human messages on stderr, prefixed with the tool's name.
//!
//! stdout carries records only; everything a person reads goes through here.
//! Every message is one line: control characters in it (a newline, an
//! escape sequence, a carriage return, from a disk or node name in a record)
//! are written escaped (`\u{1b}`), so a record cannot forge or hide lines on
//! an operator's terminal. Secrets never reach a line: values registered
//! with [`add_secret`], the credentials in the environment (read at
//! [`init`]: `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `EC2_SECRET_KEY`,
//! any `*_TOKEN`, `*_SECRET*`, `*_PASSWORD`), and the values after an
//! `Authorization`, `x-amz-security-token`, `Signature`, `Bearer` and the
//! like are written `<redacted>` ([`redact`]).
//!
//! Lines go through `tracing`: our own under the target
//! [`TARGET`] (`appscale_persist`), in the form `tool: warning: ...`, and the
//! cloud SDKs' (AWS, Google), which log through `tracing` too, as
//! `tool: debug: TARGET: SPANS: message fields`. What is shown:
//!
//! | flags | our lines | SDK lines |
//! | --- | --- | --- |
//! | `-q` | errors | none |
//! | (none) | errors, warnings, what changed | none |
//! | `-v` | also debug (commands run, API calls) | none |
//! | `-vv` | the same | debug (retries, credentials, endpoints) |
//! | `-vvv` | the same | trace |
//!
//! `RUST_LOG` takes `target=level` directives separated by commas, and a
//! bare level for every target (`RUST_LOG=aws_config=debug,aws_smithy_runtime=debug`,
//! `RUST_LOG=debug`): when set, it decides the SDK lines instead of the
//! `-v` count; our own lines follow `-q`/`-v` unless it names
//! `appscale_persist` itself (`RUST_LOG=appscale_persist=debug`).
//! `APPSCALE_PERSIST_LOG` (`quiet`, `info`, `debug`) sets our own level
//! over both. Progress lines ([`crate::progress`]) are ours at the info
//! level, and log lines wait while a progress line is drawn.

use std::fmt::Arguments;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber, field};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

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

impl Level {
    fn from_u8(n: u8) -> Level {
        match n {
            0 => Level::Quiet,
            1 => Level::Info,
            _ => Level::Debug,
        }
    }

    /// The `tracing` filter for our own lines at this level.
    fn filter(self) -> LevelFilter {
        match self {
            Level::Quiet => LevelFilter::ERROR,
            Level::Info => LevelFilter::INFO,
            Level::Debug => LevelFilter::TRACE,
        }
    }

    fn from_filter(f: LevelFilter) -> Level {
        if f >= LevelFilter::DEBUG {
            Level::Debug
        } else if f >= LevelFilter::WARN {
            Level::Info
        } else {
            Level::Quiet
        }
    }
}

/// The `tracing` target of our own lines (`RUST_LOG=appscale_persist=debug`).
pub(crate) const TARGET: &str = "appscale_persist";

/// The environment variable with `RUST_LOG`-style filter directives.
pub(crate) const RUST_LOG_ENV: &str = "RUST_LOG";

/// The environment variable that sets our own level: `quiet`, `info`, `debug`.
pub(crate) const LEVEL_ENV: &str = "APPSCALE_PERSIST_LOG";

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static TOOL: OnceLock<String> = OnceLock::new();
/// Values never to print: credentials read by this run (see [`add_secret`]).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Which SDK (not our own) lines are shown; none until [`init`].
static SDK: RwLock<Option<Targets>> = RwLock::new(None);

/// Registers a secret (an access key's secret, a token) read by this run:
/// from now on every message writes it as `<redacted>` (also its
/// percent-encoded form, as it appears in a query string). Values shorter
/// than 4 characters are ignored (they would mask ordinary words).
pub(crate) fn add_secret(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    for v in [value.to_string(), percent_encoded(value)] {
        if !secrets.contains(&v) {
            secrets.push(v);
        }
    }
}

/// `s` with every byte but the unreserved ones (RFC 3986) as `%XX`.
fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Environment variables whose values are credentials, whatever their
/// form: registered as secrets by [`init`].
pub(crate) fn is_secret_env(name: &str) -> bool {
    const NAMED: [&str; 5] = [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "EC2_SECRET_KEY",
        "GOOGLE_OAUTH_ACCESS_TOKEN",
        "CLOUDSDK_AUTH_ACCESS_TOKEN",
    ];
    let n = name.to_ascii_uppercase();
    NAMED.contains(&n.as_str())
        || n.ends_with("_TOKEN")
        || n.contains("SECRET")
        || n.ends_with("_PASSWORD")
}

/// Names after which a line carries a credential: the value that follows
/// (after `:` or `=`, quoted or not) is written `<redacted>`.
const SECRET_KEYS: [&str; 8] = [
    "authorization",
    "x-amz-security-token",
    "x-amz-signature",
    "signature",
    "x-goog-iam-authorization-token",
    "access_token",
    "secret_access_key",
    "session_token",
];

/// `s` with every registered secret, and every value after a credential's
/// name (an `Authorization` header, `x-amz-security-token`, `Signature=`,
/// `Bearer ...`), replaced by `<redacted>`.
pub fn redact(s: &str) -> String {
    let mut out = s.to_string();
    {
        let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
    }
    // `Bearer TOKEN` first: an unquoted `Authorization: Bearer TOKEN` then
    // loses both words.
    out = redact_after(&out, "bearer ", false);
    for key in SECRET_KEYS {
        out = redact_after(&out, key, true);
    }
    out
}

/// `s` with the value after each (ASCII case-insensitive) `key` replaced
/// by `<redacted>`. With `assigned`, the key must be followed by `:` or `=`
/// (quotes and spaces around allowed), so prose naming it stays intact.
fn redact_after(s: &str, key: &str, assigned: bool) -> String {
    let lower = s.to_ascii_lowercase();
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(key) {
        let at = from + found;
        let mut i = at + key.len();
        from = i;
        // A longer word ending in the key (`x-amz-signature` has been
        // handled by its own key; `nosignature` is not a credential).
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        if assigned {
            while i < bytes.len() && matches!(bytes[i], b'"' | b'\'' | b' ') {
                i += 1;
            }
            if i >= bytes.len() || !matches!(bytes[i], b':' | b'=') {
                continue;
            }
            i += 1;
        }
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let quote = match bytes.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                i += 1;
                Some(q)
            }
            _ => None,
        };
        let end = bytes[i..]
            .iter()
            .position(|&b| match quote {
                Some(q) => b == q,
                None => {
                    b.is_ascii_whitespace() || matches!(b, b',' | b'&' | b';' | b'}' | b')' | b'"')
                }
            })
            .map_or(bytes.len(), |n| i + n);
        if end == i || s[i..end].starts_with("<redacted>") {
            continue;
        }
        out.push_str(&s[copied..i]);
        out.push_str("<redacted>");
        copied = end;
        from = end;
    }
    out.push_str(&s[copied..]);
    out
}

/// Sets the tool name used as prefix and the level of our own lines, and
/// sends every `tracing` line (ours and the SDKs') to stderr, filtered as
/// the module doc says (SDK lines only from `RUST_LOG`). Call once from
/// `main`; [`setup`] also takes the `-v` count.
pub fn init(tool: &str, level: Level) {
    init_with(tool, level, 0);
}

/// [`init`] from the `-q` flag and the `-v` count: `-vv` adds the SDKs'
/// debug lines, `-vvv` their trace lines.
pub fn setup(tool: &str, quiet: bool, verbose: u8) {
    init_with(
        tool,
        level_from(quiet, verbose),
        if quiet { 0 } else { verbose },
    );
}

fn init_with(tool: &str, level: Level, verbose: u8) {
    let _ = TOOL.set(tool.to_string());
    for (name, value) in std::env::vars_os() {
        if let (Some(name), Some(value)) = (name.to_str(), value.to_str())
            && is_secret_env(name)
        {
            add_secret(value);
        }
    }
    let rust_log = std::env::var(RUST_LOG_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty());
    let (sdk, ours) = filters(verbose, rust_log.as_deref());
    let level = match (std::env::var(LEVEL_ENV).is_ok(), ours) {
        (false, Some(f)) => Level::from_filter(f),
        _ => level,
    };
    LEVEL.store(level as u8, Ordering::Relaxed);
    *SDK.write().unwrap_or_else(PoisonError::into_inner) = Some(sdk);
    let subscriber = tracing_subscriber::registry().with(Lines);
    // A second call (the Ansible mode after the driver) keeps the first
    // subscriber, which reads the level and filter set above.
    let _ = tracing::subscriber::set_global_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
}

/// The SDK lines' filter, and our own level when `RUST_LOG` names
/// [`TARGET`]: from `RUST_LOG` when set (a malformed value is reported and
/// ignored), else from the `-v` count.
pub fn filters(verbose: u8, rust_log: Option<&str>) -> (Targets, Option<LevelFilter>) {
    let from_flags = || match verbose {
        0 | 1 => Targets::new(),
        2 => Targets::new().with_default(LevelFilter::DEBUG),
        _ => Targets::new().with_default(LevelFilter::TRACE),
    };
    let Some(spec) = rust_log else {
        return (from_flags(), None);
    };
    match Targets::from_str(spec) {
        Ok(t) => {
            let ours = t
                .iter()
                .find(|(target, _)| *target == TARGET)
                .map(|(_, f)| f);
            (t, ours)
        }
        Err(e) => {
            emit(
                "warning: ",
                format_args!("ignoring {RUST_LOG_ENV}={spec:?}: {e}"),
            );
            (from_flags(), None)
        }
    }
}

/// Whether any SDK line can show (`-vv`, or `RUST_LOG` set): the Google
/// SDK's clients log only when built with tracing on.
pub fn sdk_lines_wanted() -> bool {
    SDK.read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .is_some_and(|t| {
            t.iter().next().is_some() || t.default_level().is_some_and(|l| l > LevelFilter::OFF)
        })
}

/// The level from `-q` and `-v` counts, overridden by `APPSCALE_PERSIST_LOG`.
pub fn level_from(quiet: bool, verbose: u8) -> Level {
    match std::env::var(LEVEL_ENV).as_deref() {
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

/// Writes one line, redacted and escaped, out of the way of a progress line.
fn write_line(text: &str) {
    let line = escape_controls(&redact(text));
    crate::progress::suspend(|| {
        let mut err = std::io::stderr().lock();
        // stderr going away is no reason to fail the tool.
        let _ = writeln!(err, "{}: {line}", tool());
    });
}

fn emit(prefix: &str, args: Arguments<'_>) {
    write_line(&format!("{prefix}{args}"));
}

/// One of our lines: through `tracing` once [`init`] has run (so that a
/// `RUST_LOG` filter and the subscriber see it), else straight to stderr.
fn ours(level: tracing::Level, prefix: &str, args: Arguments<'_>) {
    if !tracing::dispatcher::has_been_set() {
        emit(prefix, args);
        return;
    }
    match level {
        tracing::Level::ERROR => tracing::error!(target: TARGET, "{args}"),
        tracing::Level::WARN => tracing::warn!(target: TARGET, "{args}"),
        tracing::Level::INFO => tracing::info!(target: TARGET, "{args}"),
        _ => tracing::debug!(target: TARGET, "{args}"),
    }
}

/// The `tracing` layer that writes every line shown.
struct Lines;

/// The fields of a span or an event: `message`, and the others as
/// ` name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl field::Visit for Fields {
    fn record_str(&mut self, f: &field::Field, value: &str) {
        if f.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest.push_str(&format!(" {}={value}", f.name()));
        }
    }

    fn record_debug(&mut self, f: &field::Field, value: &dyn std::fmt::Debug) {
        if f.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.rest.push_str(&format!(" {}={value:?}", f.name()));
        }
    }
}

fn lines_enabled(meta: &Metadata<'_>) -> bool {
    if meta.target() == TARGET {
        return *meta.level() <= Level::from_u8(LEVEL.load(Ordering::Relaxed)).filter();
    }
    SDK.read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .is_some_and(|t| t.would_enable(meta.target(), meta.level()))
}

impl<S> Layer<S> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, _meta: &'static Metadata<'static>) -> Interest {
        // Levels can change at run time ([`init`]): ask every time.
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        lines_enabled(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = *meta.level();
        if meta.target() == TARGET {
            let prefix = match level {
                tracing::Level::ERROR => "error: ",
                tracing::Level::WARN => "warning: ",
                tracing::Level::INFO => "",
                _ => "debug: ",
            };
            write_line(&format!("{prefix}{}{}", fields.message, fields.rest));
            return;
        }
        let name = match level {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        let mut line = format!("{name}: {}: ", meta.target());
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                line.push_str(span.name());
                if let Some(f) = span.extensions().get::<Fields>()
                    && !(f.message.is_empty() && f.rest.is_empty())
                {
                    line.push_str(&format!("{{{}{}}}", f.message, f.rest.trim_start()));
                }
                line.push_str(": ");
            }
        }
        line.push_str(&fields.message);
        line.push_str(&fields.rest);
        write_line(&line);
    }
}

/// `s` with every control character written as `\u{..}`, so it prints as
/// one inert line.
pub(crate) fn escape_controls(s: &str) -> String {
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
    ours(tracing::Level::ERROR, "error: ", args);
}

/// A warning: something an operator should look at.
pub fn warn(args: Arguments<'_>) {
    if enabled(Level::Info) {
        ours(tracing::Level::WARN, "warning: ", args);
    }
}

/// What happened: a change made, or found already made.
pub fn info(args: Arguments<'_>) {
    if enabled(Level::Info) {
        ours(tracing::Level::INFO, "", args);
    }
}

/// Detail for debugging: commands run, API calls, probes.
pub fn debug(args: Arguments<'_>) {
    if enabled(Level::Debug) {
        ours(tracing::Level::DEBUG, "debug: ", args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_after_their_names_are_redacted() {
        let line = r#"headers: {"authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7", "x-amz-security-token": "FQoGZXIvYXdzEJr"}"#;
        let r = redact(line);
        assert!(!r.contains("5d672d79"), "{r}");
        assert!(!r.contains("FQoGZXIvYXdzEJr"), "{r}");
        assert!(!r.contains("AWS4-HMAC"), "{r}");
        assert_eq!(
            redact("X-Amz-Signature=abc123&X-Amz-Date=1"),
            "X-Amz-Signature=<redacted>&X-Amz-Date=1"
        );
        assert_eq!(
            redact("authorization: Bearer ya29.a0AfH6SMB"),
            "authorization: <redacted> <redacted>"
        );
        assert_eq!(redact("sent Bearer ya29.tok"), "sent Bearer <redacted>");
        // Prose naming a credential is not one.
        assert_eq!(
            redact("the signature does not match; authorization failed"),
            "the signature does not match; authorization failed"
        );
    }

    #[test]
    fn credential_variables_are_known_by_name() {
        for n in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "EC2_SECRET_KEY",
            "GOOGLE_OAUTH_ACCESS_TOKEN",
        ] {
            assert!(is_secret_env(n), "{n}");
        }
        for n in [
            "AWS_ACCESS_KEY_ID",
            "AWS_REGION",
            "RUST_LOG",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ] {
            assert!(!is_secret_env(n), "{n}");
        }
    }

    #[test]
    fn rust_log_decides_sdk_lines_and_may_name_ours() {
        let (t, ours) = filters(0, None);
        assert!(!t.would_enable("aws_config", &tracing::Level::ERROR));
        assert_eq!(ours, None);
        let (t, _) = filters(2, None);
        assert!(t.would_enable("aws_smithy_runtime::client", &tracing::Level::DEBUG));
        assert!(!t.would_enable("aws_smithy_runtime::client", &tracing::Level::TRACE));
        let (t, ours) = filters(0, Some("aws_config=debug,appscale_persist=warn"));
        assert!(t.would_enable("aws_config::default_provider", &tracing::Level::DEBUG));
        assert!(!t.would_enable("aws_smithy_runtime", &tracing::Level::DEBUG));
        assert_eq!(ours, Some(LevelFilter::WARN));
    }

    #[test]
    fn registered_secrets_are_redacted() {
        add_secret("wJalrXUtnFEMI/K7MDENG");
        assert_eq!(
            redact("signing with wJalrXUtnFEMI/K7MDENG failed"),
            "signing with <redacted> failed"
        );
        assert_eq!(
            redact("?key=wJalrXUtnFEMI%2FK7MDENG&x=1"),
            "?key=<redacted>&x=1"
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
