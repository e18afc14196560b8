//! A small YAML tree with a position on every node, built from
//! `saphyr-parser` events.
//!
//! The tree is built with an explicit stack, never by recursion, so deep
//! nesting cannot overflow ours; nesting past [`MAX_DEPTH`] is refused.
//! Duplicate keys are reported with both locations, aliases are expanded
//! under a node budget (an alias bomb is refused, not expanded), and scalars
//! keep their text and style so the linter can resolve them by the YAML 1.2
//! core schema.

use std::collections::HashMap;

use super::codes;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// How deep collections may nest. An AppScalefile needs four levels.
pub const MAX_DEPTH: usize = 64;

/// How many nodes alias expansion may produce in all.
const ALIAS_BUDGET: usize = 10_000;

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
}

impl Pos {
    fn from_span(span: &Span) -> (Pos, Pos) {
        (
            Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            },
            Pos {
                line: span.end.line(),
                col: span.end.col() + 1,
            },
        )
    }
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar's text; `plain` is false for quoted and block scalars, which
    /// are always strings.
    Scalar {
        /// The scalar's text after unescaping.
        text: String,
        /// Whether it was written without quotes (and so may be a number).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Node, Node)>),
}

/// A value and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// Where it ends (exclusive); for scalars, used to size the caret.
    pub end: Pos,
    /// The value.
    pub value: Value,
}

/// A problem found while building the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlProblem {
    /// A stable code: `yaml-syntax`, `yaml-duplicate-key`, `yaml-too-deep`,
    /// `yaml-alias-limit`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// Where.
    pub pos: Pos,
    /// How to fix it, when we can say.
    pub help: Option<String>,
}

/// The documents of a file and the problems found building them. When a
/// problem is fatal (syntax, depth) `documents` holds what was complete.
#[derive(Debug, Default)]
pub struct Parsed {
    /// One root node per document.
    pub documents: Vec<Node>,
    /// Problems, in file order.
    pub problems: Vec<YamlProblem>,
    /// Whether a problem stopped the parse (the documents are incomplete).
    pub fatal: bool,
}

impl Node {
    /// The scalar's text, quoted or not.
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A string by the core schema: a quoted scalar, or a plain one that is
    /// not null, a boolean or a number.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, plain: false } => Some(text),
            Value::Scalar { text, plain: true }
                if !is_null(text)
                    && !is_bool(text)
                    && parse_int(text).is_none()
                    && !is_float(text) =>
            {
                Some(text)
            }
            _ => None,
        }
    }

    /// An integer by the core schema (plain scalars only).
    pub fn as_int(&self) -> Option<i64> {
        match &self.value {
            Value::Scalar { text, plain: true } => parse_int(text),
            _ => None,
        }
    }

    /// Whether the node is null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null(text))
    }

    /// The entries, when a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, when a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value of key `key` in a mapping (the last, as PyYAML would take).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .rev()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(_, v)| v)
    }

    /// A word for the node's type, for messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar { .. } if self.is_null() => "nothing (null)",
            Value::Scalar { text, plain: true } if is_bool(text) => "a boolean",
            Value::Scalar { text, plain: true } if parse_int(text).is_some() => "an integer",
            Value::Scalar { text, plain: true } if is_float(text) => "a number",
            Value::Scalar { .. } => "a string",
        }
    }

    /// How many characters the caret under this node should span.
    pub fn width(&self) -> usize {
        match &self.value {
            Value::Scalar { .. }
                if self.end.line == self.pos.line && self.end.col > self.pos.col =>
            {
                self.end.col - self.pos.col
            }
            _ => 1,
        }
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn is_bool(s: &str) -> bool {
    matches!(s, "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
}

fn parse_int(s: &str) -> Option<i64> {
    if let Some(hex) = s.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_float(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    matches!(lower.as_str(), ".inf" | "-.inf" | "+.inf" | ".nan")
        || (s.bytes().any(|b| b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            && s.parse::<f64>().is_ok())
}

enum Frame {
    Seq {
        start: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Builds the tree of `source`.
pub fn parse(source: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut expanded = 0usize;

    for event in Parser::new_from_str(source) {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                let m = e.marker();
                let mut pos = Pos {
                    line: m.line(),
                    col: m.col() + 1,
                };
                if e.info().contains("tab") {
                    // Point at the tab itself, not just after it.
                    if let Some(c) = source
                        .lines()
                        .nth(pos.line.saturating_sub(1))
                        .and_then(|l| l.chars().position(|c| c == '\t'))
                    {
                        pos.col = c + 1;
                    }
                }
                parsed.problems.push(syntax_problem(e.info(), pos));
                parsed.fatal = true;
                return parsed;
            }
        };
        let (pos, end) = Pos::from_span(&span);
        let complete = match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Node {
                    pos,
                    end,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    parsed.problems.push(YamlProblem {
                        code: codes::YAML_TOO_DEEP,
                        message: format!("collections nest more than {MAX_DEPTH} levels deep"),
                        pos,
                        help: Some("an AppScalefile needs no more than four levels".into()),
                    });
                    parsed.fatal = true;
                    return parsed;
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        start: pos,
                        anchor,
                        items: Vec::new(),
                    }
                } else {
                    Frame::Map {
                        start: pos,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq {
                        start,
                        anchor,
                        items,
                    }) => (
                        Node {
                            pos: start,
                            end,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        start,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            pos: start,
                            end,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => continue,
                };
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(target) => {
                    expanded += count_nodes(target);
                    if expanded > ALIAS_BUDGET {
                        parsed.problems.push(YamlProblem {
                            code: codes::YAML_ALIAS_LIMIT,
                            message: format!("aliases expand to more than {ALIAS_BUDGET} values"),
                            pos,
                            help: Some("write the values out instead of repeating aliases".into()),
                        });
                        parsed.fatal = true;
                        return parsed;
                    }
                    let mut node = target.clone();
                    node.pos = pos;
                    node.end = end;
                    Some(node)
                }
                None => {
                    parsed
                        .problems
                        .push(syntax_problem("alias to an unknown anchor", pos));
                    parsed.fatal = true;
                    return parsed;
                }
            },
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => None,
        };
        if let Some(node) = complete {
            match stack.last_mut() {
                None => parsed.documents.push(node),
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map { entries, key, .. }) => match key.take() {
                    None => *key = Some(node),
                    Some(k) => {
                        if let Some(name) = k.scalar()
                            && let Some((first, _)) =
                                entries.iter().find(|(e, _)| e.scalar() == Some(name))
                        {
                            parsed.problems.push(YamlProblem {
                                    code: codes::YAML_DUPLICATE_KEY,
                                    message: format!(
                                        "key `{name}` appears twice (first on line {}); AppScale would silently keep only this one",
                                        first.pos.line
                                    ),
                                    pos: k.pos,
                                    help: Some("remove one of the two".into()),
                                });
                        }
                        entries.push((k, node));
                    }
                },
            }
        }
    }
    parsed
}

fn count_nodes(node: &Node) -> usize {
    // Iterative, like the builder: an anchored value may be deep.
    let mut count = 0;
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        count += 1;
        match &n.value {
            Value::Seq(items) => todo.extend(items),
            Value::Map(entries) => todo.extend(entries.iter().flat_map(|(k, v)| [k, v])),
            Value::Scalar { .. } => {}
        }
    }
    count
}

fn syntax_problem(info: &str, pos: Pos) -> YamlProblem {
    let help = if info.contains("tabs") {
        Some("YAML indents with spaces only: replace the tab with spaces".to_string())
    } else if info.contains("mapping values are not allowed") {
        Some(
            "a `key: value` line is indented under something that is not a mapping; \
             check the indentation (a `node-1: vol-...` line belongs under `disks:`)"
                .to_string(),
        )
    } else if info.contains("did not find expected") || info.contains("while parsing") {
        Some("check the indentation and that every `[`, `{` and quote is closed".to_string())
    } else {
        None
    };
    YamlProblem {
        code: codes::YAML_SYNTAX,
        message: format!("YAML syntax error: {info}"),
        pos,
        help,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(src: &str) -> Node {
        let p = parse(src);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        p.documents.into_iter().next().unwrap()
    }

    #[test]
    fn positions_are_one_based_and_point_at_values() {
        let d = doc("zone: us-east-1b\ndisks:\n  node-1: vol-1234abcd\n");
        assert_eq!(d.get("zone").unwrap().pos, Pos { line: 1, col: 7 });
        let disks = d.get("disks").unwrap().as_map().unwrap();
        assert_eq!(disks[0].0.pos, Pos { line: 3, col: 3 });
        assert_eq!(disks[0].1.pos, Pos { line: 3, col: 11 });
        assert_eq!(disks[0].1.width(), "vol-1234abcd".len());
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        let d = doc("a: 3\nb: '3'\nc: yes\nd: true\ne: ~\nf: 1.5\ng:\n");
        assert_eq!(d.get("a").unwrap().as_int(), Some(3));
        assert_eq!(d.get("a").unwrap().as_str(), None);
        assert_eq!(d.get("b").unwrap().as_str(), Some("3"));
        assert_eq!(
            d.get("c").unwrap().as_str(),
            Some("yes"),
            "YAML 1.2: yes is a string"
        );
        assert_eq!(d.get("d").unwrap().kind(), "a boolean");
        assert!(d.get("e").unwrap().is_null());
        assert_eq!(d.get("f").unwrap().kind(), "a number");
        assert!(d.get("g").unwrap().is_null());
    }

    #[test]
    fn duplicate_keys_name_both_lines() {
        let p = parse("zone: a\nmax: 1\nzone: b\n");
        assert_eq!(p.problems.len(), 1);
        assert_eq!(p.problems[0].code, "yaml-duplicate-key");
        assert_eq!(p.problems[0].pos, Pos { line: 3, col: 1 });
        assert!(p.problems[0].message.contains("first on line 1"));
        assert_eq!(p.documents[0].get("zone").unwrap().as_str(), Some("b"));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "- ".repeat(20_000) + "x\n";
        let p = parse(&deep);
        assert!(p.fatal);
        assert_eq!(p.problems[0].code, "yaml-too-deep");
        let flow = "[".repeat(100_000);
        assert!(parse(&flow).fatal);
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut src = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for name in 'b'..='k' {
            src.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = name;
        }
        let p = parse(&src);
        assert!(p.fatal);
        assert_eq!(p.problems.last().unwrap().code, "yaml-alias-limit");
    }

    #[test]
    fn syntax_errors_carry_their_line_and_a_hint() {
        let p = parse("zone: us-east-1b\n\n node-1: vol-ABCDEFG\n");
        assert!(p.fatal);
        let e = &p.problems[0];
        assert_eq!((e.code, e.pos.line), ("yaml-syntax", 3));
        assert!(e.help.as_deref().unwrap().contains("disks:"));
        let p = parse("a:\n\tb: 1\n");
        assert_eq!(p.problems[0].pos.line, 2);
        assert!(p.problems[0].help.as_deref().unwrap().contains("tab"));
    }
}
