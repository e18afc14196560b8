//! Man pages and shell completions, made from a tool's own clap definition
//! so they cannot drift from `--help`.
//!
//! Every tool answers `TOOL --generate KIND` (exactly that argument list;
//! not shown in `--help`) by printing on stdout one of:
//!
//! * `man`: the man page (roff, section 1), by clap_mangen, with the
//!   ENVIRONMENT, FILES and SEE ALSO sections of [`crate::manual`];
//! * `complete-bash`, `complete-zsh`, `complete-fish`: the completion script
//!   for that shell, by clap_complete.
//!
//! scripts/install and scripts/package call it on the built binaries; the
//! test `tests/generate.rs` checks every long option of `--help` appears in
//! each output.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// The hidden flag that asks for generated documentation.
pub(crate) const FLAG: &str = "--generate";

/// What `--generate` can make.
pub(crate) const KINDS: [&str; 4] = ["man", "complete-bash", "complete-zsh", "complete-fish"];

/// When `argv` is `[program, "--generate", KIND]`, writes that output for
/// `C` on stdout and returns the exit code (2 for an unknown kind); else
/// `None`, and the tool goes on as usual.
pub fn from_argv<C: CommandFactory>(argv: &[String]) -> Option<ExitCode> {
    let [_, flag, kind] = argv else { return None };
    if flag != FLAG {
        return None;
    }
    let mut out = Vec::new();
    if let Err(e) = write::<C>(kind, &mut out) {
        eprintln!("{e}");
        return Some(ExitCode::from(2));
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Some(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("writing stdout: {e}");
            Some(ExitCode::from(1))
        }
    }
}

/// Writes the `kind` output (one of [`KINDS`]) for `C` into `out`.
pub fn write<C: CommandFactory>(kind: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut cmd = C::command();
    let name = cmd.get_name().to_string();
    let shell = match kind {
        "man" => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .map_err(|e| format!("{name}: rendering the man page: {e}"))?;
            // ENVIRONMENT, FILES and SEE ALSO before VERSION, as man-pages(7)
            // orders them.
            let page = String::from_utf8_lossy(&page).into_owned();
            let extra = crate::manual::sections(&name);
            let page = match page.find("\n.SH VERSION") {
                Some(at) => format!("{}\n{}{}", &page[..at], extra.trim_end(), &page[at..]),
                None => format!("{page}{extra}"),
            };
            out.extend_from_slice(page.as_bytes());
            return Ok(());
        }
        "complete-bash" => Shell::Bash,
        "complete-zsh" => Shell::Zsh,
        "complete-fish" => Shell::Fish,
        other => {
            return Err(format!(
                "{name}: --generate takes one of {}, not {other:?}",
                KINDS.join(", ")
            ));
        }
    };
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}
