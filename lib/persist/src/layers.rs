//! The floors of this crate, held by tests that read the sources' `crate::`
//! paths (as `codes.rs`'s tests read the failing places): a module imports
//! only from its own floor and the floors below, the ground floor imports
//! nothing above it, and no import cycle runs between modules but those
//! listed here, each with its reason. docs/architecture.md ("Layers")
//! describes the floors.
//!
//! A module is a file directly under `src/` or a folder (`provider/`,
//! `steps/`, `record/status.rs` is part of `record`); what a folder's files
//! import of each other is the folder's own business. `#[cfg(test)] mod
//! tests` and comments are not read: a test may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, ground first. A new module goes on the lowest floor that
/// holds everything it imports (the test names any module missing here).
const FLOORS: &[(&str, &[&str])] = &[
    (
        "ground: the record and its wire types, its failure and codes, talking to the operator",
        &[
            "codes", "failure", "record", "checks", "snapshot", "log", "progress", "files", "hash",
        ],
    ),
    (
        "processes: signals, waiting, subprocesses",
        &["interrupt", "wait", "run"],
    ),
    (
        "the node: devices, mounts, fstab, locks, loop devices, filesystems",
        &[
            "blockdev",
            "mount",
            "fstab",
            "lock",
            "loopdev",
            "filesystem",
            "nvme",
        ],
    ),
    ("the step vocabulary", &["step"]),
    (
        "this node: a record's disk on it (finding, freezing, letting go, seeding), which node it is",
        &["discover", "freeze", "release", "seed", "node_id"],
    ),
    ("providers", &["provider"]),
    (
        "what each tool does",
        &["steps", "status", "doctor", "archive", "appscalefile"],
    ),
    (
        "drivers: a tool, the command line, Ansible, generated pages",
        &["tool", "cli", "ansible", "generate", "manual"],
    ),
];

/// The import cycles allowed, each with its reason; any other fails, and so
/// does one listed here that is gone (take it off).
const CYCLES: &[(&[&str], &str)] = &[(
    &["log", "progress"],
    "a log line clears the progress display first, and progress lines go through log's filter",
)];

/// Imports from a floor to a higher one, each with its reason; any other
/// fails, and so does one listed that is gone. Never from the ground floor.
const UPWARD: &[(&str, &str, &str)] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module a source file belongs to (`provider/local/owner.rs`:
/// `provider`); `None` for the crate root.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

/// The crate's modules a source text names through `crate::` (and, in a
/// file directly under `src/`, `super::`), its tests and comments left out.
fn imports(text: &str, top_level: bool) -> BTreeSet<String> {
    let code: String = text
        .split("\n#[cfg(test)]\nmod ")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let prefixes: &[&str] = if top_level {
        &["crate::", "super::"]
    } else {
        &["crate::"]
    };
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            let Some(group) = rest.strip_prefix('{') else {
                found.insert(ident(rest));
                continue;
            };
            // `crate::{a, b::{c, d}, e}`: the first name of each item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

/// Every module and the modules it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = src();
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        // This file is tests alone.
        let Some(module) = module_of(rel).filter(|m| m != "layers") else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let mut names = imports(&text, rel.components().count() == 1);
        names.remove(&module);
        g.entry(module).or_default().extend(names);
    }
    let modules: BTreeSet<String> = g.keys().cloned().collect();
    for names in g.values_mut() {
        names.retain(|n| modules.contains(n));
    }
    g
}

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The imports that run from a floor to a higher one.
fn upward(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<(String, String)> {
    let mut up = BTreeSet::new();
    for (m, names) in g {
        for n in names {
            if floor_of(n) > floor_of(m) {
                up.insert((m.clone(), n.clone()));
            }
        }
    }
    up
}

/// The import cycles: each set of two or more modules that reach each
/// other.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Vec<String>> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for n in g.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|m| (m, reach(m))).collect();
    let mut out = BTreeSet::new();
    for (m, r) in &reached {
        let circle: Vec<String> = r
            .iter()
            .filter(|n| reached[n].contains(*m))
            .cloned()
            .collect();
        if circle.len() > 1 {
            out.insert(circle);
        }
    }
    out
}

/// The exceptions of a list, each of which must give its reason.
fn reasoned<T: Ord + std::fmt::Debug>(
    list: impl Iterator<Item = (T, &'static str)>,
) -> BTreeSet<T> {
    list.map(|(item, why)| {
        assert!(
            !why.trim().is_empty(),
            "{item:?} is listed without a reason"
        );
        item
    })
    .collect()
}

/// Fails on what is `found` but not `listed` (`what`), and on what is
/// listed in `list` but no longer found.
fn same_as_listed<T: Ord + std::fmt::Debug>(
    found: &BTreeSet<T>,
    listed: &BTreeSet<T>,
    what: &str,
    list: &str,
) {
    let new: Vec<&T> = found.difference(listed).collect();
    assert!(new.is_empty(), "{what}: {new:?}");
    let gone: Vec<&T> = listed.difference(found).collect();
    assert!(
        gone.is_empty(),
        "listed in {list} but gone (take them off): {gone:?}"
    );
}

#[test]
fn every_module_stands_on_one_floor() {
    let g = graph();
    let modules: BTreeSet<&str> = g.keys().map(String::as_str).collect();
    let listed: Vec<&str> = FLOORS
        .iter()
        .flat_map(|(_, ms)| ms.iter().copied())
        .collect();
    let on_floors: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(on_floors.len(), listed.len(), "a module on two floors");
    same_as_listed(
        &modules,
        &on_floors,
        "modules on no floor (put each on the lowest floor that holds what it imports)",
        "FLOORS",
    );
}

#[test]
fn no_module_imports_from_a_higher_floor_but_those_listed() {
    let g = graph();
    let found = upward(&g);
    let ground: Vec<_> = UPWARD
        .iter()
        .filter(|(from, ..)| floor_of(from) == Some(0))
        .collect();
    assert!(
        ground.is_empty(),
        "the ground floor has no exception: {ground:?}"
    );
    let allowed = reasoned(
        UPWARD
            .iter()
            .map(|(from, to, why)| ((from.to_string(), to.to_string()), *why)),
    );
    same_as_listed(
        &found,
        &allowed,
        "imports from a floor to a higher one (move what is imported down, or register a hook; see docs/architecture.md)",
        "UPWARD",
    );
}

#[test]
fn no_import_cycle_but_those_listed() {
    let g = graph();
    let found = cycles(&g);
    let allowed = reasoned(CYCLES.iter().map(|(ms, why)| {
        let mut circle: Vec<String> = ms.iter().map(|m| m.to_string()).collect();
        circle.sort();
        (circle, *why)
    }));
    same_as_listed(&found, &allowed, "import cycles between modules", "CYCLES");
}

/// The reader itself: grouped, nested and plain paths, and what it skips.
#[test]
fn imports_are_read_from_paths_not_from_comments_or_tests() {
    let text = "use crate::{a, b::{c, d}, e::f};\nuse crate::g::H;\n// crate::no\nfn x() { crate::i::j(); my_crate::k(); }\n\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\n";
    let want: BTreeSet<String> = ["a", "b", "e", "g", "i"].map(String::from).into();
    assert_eq!(imports(text, false), want);
    assert!(imports("use super::m;", true).contains("m"));
    assert!(imports("use super::m;", false).is_empty());
}
