//! Diagnostics: what the linter found, where, and how it is shown.

use std::fmt::Write as _;

use serde::Serialize;

use super::yaml::Pos;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never fails.
    Info,
    /// Probably a mistake; fails with `--deny-warnings`.
    Warning,
    /// The file is wrong: AppScale would refuse it, or it would lose data.
    Error,
}

impl Severity {
    /// The word shown before the message.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// How bad.
    pub severity: Severity,
    /// A stable code (`disk-duplicate`); `docs/appscalefile-lint.md` lists them.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// Where (1-based).
    pub pos: Pos,
    /// How many characters to underline.
    pub width: usize,
    /// How to fix it.
    pub help: Option<String>,
}

/// The JSON form: one object per diagnostic, one per line.
#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    file: &'a str,
    line: usize,
    column: usize,
    severity: Severity,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<&'a str>,
}

impl Diagnostic {
    /// The JSON line for this diagnostic in `file`.
    pub fn to_json(&self, file: &str) -> String {
        self.to_value(file).to_string()
    }

    /// The JSON object for this diagnostic in `file`.
    pub fn to_value(&self, file: &str) -> serde_json::Value {
        serde_json::to_value(&JsonDiagnostic {
            file,
            line: self.pos.line,
            column: self.pos.col,
            severity: self.severity,
            code: self.code,
            message: &self.message,
            help: self.help.as_deref(),
        })
        .expect("a diagnostic always serializes")
    }

    /// The human form, like rustc's: header, location, the source line with
    /// a caret under the spot, and help.
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}[{}]: {}",
            self.severity.as_str(),
            self.code,
            self.message
        );
        let line_no = self.pos.line.to_string();
        let pad = " ".repeat(line_no.len());
        let _ = writeln!(out, "{pad}--> {file}:{}:{}", self.pos.line, self.pos.col);
        if let Some(text) = source.lines().nth(self.pos.line.saturating_sub(1)) {
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{line_no} | {text}");
            // Keep tabs as tabs so the caret lines up however they render.
            let lead: String = text
                .chars()
                .take(self.pos.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(self.width.max(1)));
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}
