//! The man pages and shell completions (`TOOL --generate KIND`) stay in step
//! with `--help`: they are made from the same clap definitions, and every
//! long option `--help` shows appears in each of them, for every tool.

mod common;

use common::*;

/// The long options (`--device`) `tool --help` lists.
fn long_options(tool: &str) -> Vec<String> {
    let help = run_alone(tool, &["--help"]).expect(0).stdout;
    let mut opts: Vec<String> = help
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            // Option lines: "-q, --quiet" or "--device <PATH>".
            let l = l
                .strip_prefix('-')
                .and_then(|r| r.split_once(", "))
                .map_or(l, |(_, rest)| rest);
            let name = l.strip_prefix("--")?;
            let end = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(name.len());
            Some(name[..end].to_string())
        })
        .filter(|n| !n.is_empty())
        .collect();
    opts.sort();
    opts.dedup();
    opts
}

fn generate(tool: &str, kind: &str) -> String {
    let r = run_alone(tool, &["--generate", kind]).expect(0);
    assert!(
        !r.stdout.is_empty(),
        "{tool} --generate {kind} printed nothing"
    );
    r.stdout
}

#[test]
fn man_pages_and_completions_list_every_long_option_of_help() {
    for &tool in TOOLS {
        let opts = long_options(tool);
        assert!(
            opts.iter().any(|o| o == "help") && opts.iter().any(|o| o == "version"),
            "{tool}: options read from --help: {opts:?}"
        );
        let man = generate(tool, "man");
        assert!(
            man.contains(&format!(".TH {tool} 1")),
            "{tool}: man page header"
        );
        // roff writes a hyphen as `\-`.
        let man_text = man.replace("\\-", "-");
        let bash = generate(tool, "complete-bash");
        let zsh = generate(tool, "complete-zsh");
        let fish = generate(tool, "complete-fish");
        for o in &opts {
            let flag = format!("--{o}");
            assert!(
                man_text.contains(&flag),
                "{tool}: {flag} not in the man page"
            );
            assert!(
                bash.contains(&flag),
                "{tool}: {flag} not in the bash completion"
            );
            assert!(
                zsh.contains(&flag),
                "{tool}: {flag} not in the zsh completion"
            );
            assert!(
                fish.contains(&format!("-l {o}")),
                "{tool}: {flag} not in the fish completion"
            );
        }
    }
}

#[test]
fn generate_is_hidden_and_refuses_an_unknown_kind() {
    for &tool in TOOLS {
        let help = run_alone(tool, &["--help"]).expect(0).stdout;
        assert!(
            !help.contains("--generate"),
            "{tool} --help shows --generate"
        );
        let r = run_alone(tool, &["--generate", "troff"]).expect(2);
        assert!(
            r.stderr.contains("man, complete-bash"),
            "{tool}: {}",
            r.stderr
        );
    }
}

/// Every man page says what clap cannot: ENVIRONMENT (the variables the
/// tool reads), FILES and SEE ALSO (every other tool), before VERSION.
#[test]
fn man_pages_have_environment_files_and_see_also() {
    for &tool in TOOLS {
        let man = generate(tool, "man").replace("\\-", "-");
        let at = |s: &str| man.find(s).unwrap_or_else(|| panic!("{tool}: no {s}"));
        let (env, files, see) = (
            at(".SH ENVIRONMENT"),
            at(".SH FILES"),
            at(".SH \"SEE ALSO\""),
        );
        assert!(
            env < files && files < see && see < at(".SH VERSION"),
            "{tool}: order"
        );
        assert!(man[env..files].contains("APPSCALE_PERSIST_LOG"), "{tool}");
        for &other in TOOLS.iter().filter(|t| **t != tool) {
            assert!(
                man[see..].contains(&format!("\\fB{other}\\fR(1)")),
                "{tool}: SEE ALSO {other}"
            );
        }
    }
    let doctor = generate("disk-doctor", "man");
    assert!(doctor.contains("CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER"));
    assert!(generate("disk-create", "man").contains("AWS_ACCESS_KEY_ID"));
}
