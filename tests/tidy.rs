//! House style as tests: reads the source tree under `src/`, starts no broker.
//!
//! Each test checks one rule and reports every violation of it at once, as
//! `path:line: what`, so one run gives the whole list to fix.
//!
//! The checks are line-based heuristics, not a Rust parser:
//! - a line whose first non-blank characters are `//` is a comment and is not
//!   code;
//! - test code is a file whose name ends in `_tests.rs` or `_test.rs`, a file
//!   declared as `#[cfg(test)] mod name;`, everything after a
//!   `#[cfg(test)] mod name {` line, and any other `#[cfg(test)]` item (up to
//!   its closing brace or semicolon).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Longest line allowed, in characters.
const LINE_CHARS_MAX: usize = 120;
/// Longest file allowed, in lines. A ratchet: lower it when the longest file
/// shrinks, never raise it (split the file instead); the style guide says
/// about 800. The longest today (2026-12-05, once `ring::spsc`'s tests moved
/// to `spsc_tests.rs`): `src/bin/lepus-perf/main.rs`.
const FILE_LINES_MAX: usize = 789;
/// Longest function allowed, in lines from its `fn` line to its closing brace
/// (test code aside). A ratchet like [`FILE_LINES_MAX`]; issue 11 aims at
/// about 80. The longest on 2026-12-05, once lepus-perf's `run`,
/// `consume_loop`, `publish_loop` and `Conn::open`, `storage::recover::open`,
/// the binary's `main`, `Server::start` and `durable::apply` were split:
/// `control` in `src/bin/lepus-perf/fake.rs` (78).
const FN_LINES_MAX: usize = 78;
/// Generated from the spec XML: exempt from the size rules.
const GENERATED: &str = "src/amqp/spec.rs";
/// How many lines above an `unsafe` block its `// SAFETY:` comment may start.
const SAFETY_LINES_ABOVE: usize = 3;
/// The data path: every module a message passes through, from the codec to
/// the rings (directories, and single-file modules). No `Mutex` or `RwLock`
/// here: shards share nothing mutable, they pass envelopes.
const LOCK_FREE_DIRS: [&str; 10] = [
    "src/amqp/",
    "src/connection/",
    "src/channel/",
    "src/routing/",
    "src/envelope.rs",
    "src/queue/",
    "src/shard/",
    "src/ring/",
    "src/ids.rs",
    "src/message.rs",
];
/// Locks allowed on the data path, each with the most lines of its file that
/// may name a lock, and why. Only the control path may take them.
const LOCK_EXCEPTIONS: [(&str, usize, &str); 1] = [(
    "src/routing/topology.rs",
    3,
    "Registry's writer lock: declares, deletes and binds serialize their copy-and-swap of a vhost's \
     topology (control path; routing reads the ArcSwap snapshot without it)",
)];

/// The library's top-level modules, top to bottom, and the modules each may
/// use (`crate::…` paths and `super::` chains to the crate root, in non-test
/// code). A module uses only modules below it: the table itself has no
/// circle (checked), so neither has the code, apart from `IMPORT_EXCEPTIONS`.
/// A new module gets a row here, in the layer where its job belongs.
///
/// Layers: `server` starts the broker; `shard` runs the event loop;
/// `connection` and `channel` are the protocol state machines; `broker` is
/// the shard's broker service (what one shard's channels ask of queues, the
/// message log and other shards); `routing` is the topology; `envelope` is what crosses cores, carrying the queue's
/// values; `queue` is one queue; `auth` is the users and SASL mechanisms;
/// `config` is the settings, and names the defaults and bounds of the
/// modules below it (which take plain values, never a `Config`); `alarm` is
/// the shared alarm state and the monitor thread that sets it and rings the
/// shards' doorbells; `ring` moves any `T` between cores (atomics only: it
/// may name a shard and nothing else); `storage` is files; `message`, `amqp`
/// and `ids` are values every layer may use.
#[rustfmt::skip]
const ALLOWED_IMPORTS: &[(&str, &[&str])] = &[
    ("server", &[
        "management", "definitions", "shard", "connection", "channel", "broker", "routing", "envelope", "queue", "access", "config", "stats", "alarm", "ring",
        "storage", "message", "amqp", "ids"
    ]),
    ("management", &[
        "definitions", "shard", "connection", "channel", "broker", "routing", "envelope", "queue", "access", "config", "stats", "alarm", "ring",
        "storage", "message", "amqp", "ids"
    ]),
    ("definitions", &["routing", "queue", "access", "stats", "storage", "amqp", "ids"]),
    ("shard", &[
        "connection", "channel", "broker", "routing", "envelope", "queue", "access", "config", "stats", "alarm", "ring",
        "storage", "message", "amqp", "ids"
    ]),
    ("connection", &[
        "channel", "broker", "routing", "envelope", "queue", "access", "config", "stats", "alarm", "ring", "storage", "message",
        "amqp", "ids"
    ]),
    ("channel", &[
        "broker", "routing", "envelope", "queue", "access", "config", "stats", "alarm", "ring", "storage", "message",
        "amqp", "ids"
    ]),
    ("broker", &[
        "routing", "envelope", "queue", "access", "config", "stats", "alarm", "ring", "storage", "message", "amqp",
        "ids"
    ]),
    ("routing", &[
        "envelope", "queue", "access", "config", "stats", "alarm", "ring", "storage", "message", "amqp", "ids"
    ]),
    ("envelope", &["queue", "access", "config", "stats", "alarm", "ring", "storage", "message", "amqp", "ids"]),
    ("queue", &["access", "config", "stats", "alarm", "ring", "storage", "message", "amqp", "ids"]),
    ("access", &["config", "stats", "alarm", "ring", "storage", "message", "amqp", "ids"]),
    ("config", &["alarm", "ring", "storage", "message", "amqp", "ids"]),
    ("stats", &["amqp", "ids"]),
    ("alarm", &["ring", "storage", "message", "amqp", "ids"]),
    ("ring", &["ids"]),
    ("storage", &["message", "amqp", "ids"]),
    ("message", &["amqp", "ids"]),
    ("amqp", &[]),
    ("ids", &[]),
];

/// Upward imports that exist and are waiting for a move, as (module, module
/// it uses), each with a comment saying which move. Each must still be
/// needed: when the code stops using one, the test says so and the line
/// goes. Empty since issue 11 moved the broker service out of `shard` and the
/// channel's connection helpers into `channel`.
const IMPORT_EXCEPTIONS: &[(&str, &str)] = &[];

/// One source file, read once.
struct Source {
    /// Relative to the crate root, with `/` separators, e.g. `src/amqp/frame.rs`.
    path: String,
    lines: Vec<String>,
    /// Whole file is test code.
    test_file: bool,
    /// Per line: inside test code.
    test_line: Vec<bool>,
}

impl Source {
    fn is_comment(&self, index: usize) -> bool {
        self.lines[index].trim_start().starts_with("//")
    }

    /// Lines that are code (not comments), as (1-based number, text, in test code).
    fn code_lines(&self) -> impl Iterator<Item = (usize, &str, bool)> + '_ {
        self.lines
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.is_comment(*i))
            .map(|(i, line)| (i + 1, line.as_str(), self.test_file || self.test_line[i]))
    }
}

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())).path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under `src/`, sorted, with its test code marked.
fn sources() -> Vec<Source> {
    let root = crate_root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut sources: Vec<Source> = files
        .iter()
        .map(|file| {
            let text =
                std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            let rel = file.strip_prefix(&root).unwrap_or(file);
            let path =
                rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            Source {
                path,
                test_file: name.ends_with("_tests.rs") || name.ends_with("_test.rs"),
                test_line: vec![false; lines.len()],
                lines,
            }
        })
        .collect();
    // Modules declared as `#[cfg(test)] mod name;`: (declaring file's dir, name).
    let mut test_modules = BTreeSet::new();
    for source in &mut sources {
        mark_test_code(source, &mut test_modules);
    }
    for source in &mut sources {
        let (dir, file) = source.path.rsplit_once('/').unwrap_or(("", &source.path));
        let stem = file.trim_end_matches(".rs");
        // `dir/name.rs` or `dir/name/mod.rs`, declared from a file in `dir`.
        let declared_in_parent = test_modules.contains(&(dir.to_owned(), stem.to_owned()));
        let declared_as_dir = stem == "mod"
            && dir
                .rsplit_once('/')
                .is_some_and(|(parent, name)| test_modules.contains(&(parent.to_owned(), name.to_owned())));
        if declared_in_parent || declared_as_dir {
            source.test_file = true;
        }
    }
    sources
}

/// Marks the lines of `#[cfg(test)]` items; records `#[cfg(test)] mod name;`.
fn mark_test_code(source: &mut Source, test_modules: &mut BTreeSet<(String, String)>) {
    let dir = source.path.rsplit_once('/').map(|(d, _)| d.to_owned()).unwrap_or_default();
    let mut i = 0;
    while i < source.lines.len() {
        if !source.lines[i].contains("#[cfg(test)]") || source.is_comment(i) {
            i += 1;
            continue;
        }
        // The item the attribute applies to: the next line that is not an attribute or comment.
        let mut item = i + 1;
        while item < source.lines.len() {
            let t = source.lines[item].trim_start();
            if t.starts_with("#[") || t.starts_with("//") || t.is_empty() {
                item += 1;
            } else {
                break;
            }
        }
        let Some(item_line) = source.lines.get(item) else { break };
        let words: Vec<&str> = item_line.split_whitespace().collect();
        let mod_at = words.iter().position(|w| *w == "mod");
        if let Some(name) = mod_at.and_then(|at| words.get(at + 1)) {
            if let Some(name) = name.strip_suffix(';') {
                test_modules.insert((dir.clone(), name.to_owned()));
                for flag in &mut source.test_line[i..=item] {
                    *flag = true;
                }
                i = item + 1;
            } else {
                // An inline test module: the rest of the file.
                for flag in &mut source.test_line[i..] {
                    *flag = true;
                }
                break;
            }
            continue;
        }
        // Any other item: up to its closing brace, or its semicolon.
        let mut depth = 0i64;
        let mut end = item;
        while end < source.lines.len() {
            let line = &source.lines[end];
            depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            if depth <= 0 && (line.contains('}') || line.trim_end().ends_with(';')) {
                break;
            }
            end += 1;
        }
        let end = end.min(source.lines.len() - 1);
        for flag in &mut source.test_line[i..=end] {
            *flag = true;
        }
        i = end + 1;
    }
}

/// Fails with every violation, one per line.
fn assert_clean(rule: &str, violations: Vec<String>) {
    assert!(violations.is_empty(), "{rule}: {} violation(s):\n{}", violations.len(), violations.join("\n"));
}

/// `unsafe {` or `unsafe impl` as a word (not `unsafe_op_in_unsafe_fn`).
fn opens_unsafe(code: &str) -> bool {
    let mut from = 0;
    while let Some(at) = code[from..].find("unsafe") {
        let start = from + at;
        let end = start + "unsafe".len();
        let word_start = code[..start].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let rest = code[end..].trim_start();
        let spaced = code[end..].starts_with(char::is_whitespace) || rest.starts_with('{');
        if word_start && spaced && (rest.starts_with('{') || rest.starts_with("impl ")) {
            return true;
        }
        from = end;
    }
    false
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let mut violations = Vec::new();
    for source in sources() {
        for (number, code, _) in source.code_lines() {
            if !opens_unsafe(code) {
                continue;
            }
            let index = number - 1;
            // The 3 lines above, plus the whole comment block directly above
            // (a long SAFETY comment may start further up).
            let mut above = index.saturating_sub(SAFETY_LINES_ABOVE)..index;
            let mut first = index;
            while first > 0 && source.is_comment(first - 1) {
                first -= 1;
            }
            if first < above.start {
                above.start = first;
            }
            let documented = code.contains("// SAFETY:")
                || source.lines[above].iter().any(|line| line.contains("// SAFETY:"));
            if !documented {
                violations.push(format!(
                    "{}:{number}: unsafe without a `// SAFETY:` comment within {SAFETY_LINES_ABOVE} lines above",
                    source.path
                ));
            }
        }
    }
    assert_clean("every `unsafe {` / `unsafe impl` needs a `// SAFETY:` comment", violations);
}

/// `.expect("…")` stays allowed: it states one of our own invariants, which
/// the style asks us to assert. An `unwrap()` says nothing and is banned.
#[test]
fn no_unwrap_outside_tests() {
    let mut violations = Vec::new();
    for source in sources() {
        for (number, code, test) in source.code_lines() {
            if test {
                continue;
            }
            for needle in [".unwrap()"] {
                if code.contains(needle) {
                    violations.push(format!("{}:{number}: `{needle}` outside test code", source.path));
                }
            }
        }
    }
    assert_clean("no `.unwrap()` outside tests", violations);
}

#[test]
fn the_data_path_takes_no_locks() {
    let mut violations = Vec::new();
    for source in sources() {
        if !LOCK_FREE_DIRS.iter().any(|path| source.path.starts_with(path)) {
            continue;
        }
        let mut found = Vec::new();
        for (number, code, _) in source.code_lines() {
            for needle in ["Mutex", "RwLock"] {
                if code.contains(needle) {
                    found.push(format!("{}:{number}: `{needle}` on the data path", source.path));
                }
            }
        }
        let allowed = LOCK_EXCEPTIONS.iter().find(|(path, _, _)| *path == source.path).map_or(0, |e| e.1);
        if found.len() > allowed {
            violations.extend(found);
        }
    }
    assert_clean(
        &format!("no `Mutex` / `RwLock` in {} (except LOCK_EXCEPTIONS)", LOCK_FREE_DIRS.join(", ")),
        violations,
    );
}

#[test]
fn the_codec_does_not_copy_with_to_vec() {
    let mut violations = Vec::new();
    for source in sources() {
        if !source.path.starts_with("src/amqp/") {
            continue;
        }
        for (number, code, test) in source.code_lines() {
            if !test && code.contains("to_vec(") {
                violations.push(format!("{}:{number}: `to_vec(` in the codec", source.path));
            }
        }
    }
    assert_clean("no `to_vec(` in src/amqp/ outside tests", violations);
}

#[test]
fn no_source_file_is_too_long() {
    let violations: Vec<String> = sources()
        .into_iter()
        .filter(|s| s.path != GENERATED && s.lines.len() > FILE_LINES_MAX)
        .map(|s| format!("{}: {} lines (max {FILE_LINES_MAX})", s.path, s.lines.len()))
        .collect();
    assert_clean(&format!("no source file over {FILE_LINES_MAX} lines (except {GENERATED})"), violations);
}

/// `{` and `}` on each line, outside string, char and byte literals and `//`
/// comments. Strings may span lines; raw strings and block comments are not
/// understood (src/ has none).
fn braces_per_line(lines: &[String]) -> Vec<(usize, usize)> {
    let mut in_string = false;
    let mut counts = Vec::with_capacity(lines.len());
    for line in lines {
        let (mut opens, mut closes) = (0, 0);
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if in_string {
                match c {
                    '\\' => i += 1,
                    '"' => in_string = false,
                    _ => {}
                }
            } else {
                match c {
                    '"' => in_string = true,
                    '/' if chars.get(i + 1) == Some(&'/') => break,
                    // A char literal: '{', '\'', '\u{7b}'; a lifetime ('a) is not one.
                    '\'' if chars.get(i + 1) == Some(&'\\') => {
                        i += 2;
                        while i < chars.len() && chars[i] != '\'' {
                            i += 1;
                        }
                    }
                    '\'' if chars.get(i + 2) == Some(&'\'') => i += 2,
                    '{' => opens += 1,
                    '}' => closes += 1,
                    _ => {}
                }
            }
            i += 1;
        }
        counts.push((opens, closes));
    }
    counts
}

/// The name a line declares a function of (`fn name`, after `pub`,
/// `pub(crate)`, `const`, `async`, `unsafe`, `extern "C"`), if it does.
fn declared_fn(code: &str) -> Option<&str> {
    let mut rest = code.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("pub(") {
            rest = after.split_once(')')?.1.trim_start();
            continue;
        }
        let qualifier =
            ["pub ", "const ", "async ", "unsafe ", "extern \"C\" "].iter().find(|q| rest.starts_with(*q));
        match qualifier {
            Some(q) => rest = rest[q.len()..].trim_start(),
            None => break,
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Every function with a body outside test code, as (1-based first line,
/// name, lines from the `fn` line to the closing brace).
fn functions(source: &Source) -> Vec<(usize, String, usize)> {
    let braces = braces_per_line(&source.lines);
    let mut found = Vec::new();
    for (number, code, test) in source.code_lines() {
        let Some(name) = declared_fn(code).filter(|_| !test) else { continue };
        let (mut depth, mut opened) = (0i64, false);
        for (index, line) in source.lines.iter().enumerate().skip(number - 1) {
            let (opens, closes) = braces[index];
            if !opened && opens == 0 && line.trim_end().ends_with(';') {
                break; // A declaration without a body (in a trait).
            }
            opened |= opens > 0;
            depth += opens as i64 - closes as i64;
            if opened && depth <= 0 {
                found.push((number, name.to_owned(), index + 2 - number));
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_is_too_long() {
    let mut violations = Vec::new();
    for source in sources() {
        if source.path == GENERATED || source.test_file {
            continue;
        }
        for (number, name, lines) in functions(&source) {
            if lines > FN_LINES_MAX {
                violations.push(format!(
                    "{}:{number}: fn {name} is {lines} lines (max {FN_LINES_MAX})",
                    source.path
                ));
            }
        }
    }
    assert_clean(
        &format!("functions at most {FN_LINES_MAX} lines (except {GENERATED} and tests)"),
        violations,
    );
}

#[test]
fn no_line_is_too_long() {
    let mut violations = Vec::new();
    for source in sources() {
        if source.path == GENERATED {
            continue;
        }
        for (index, line) in source.lines.iter().enumerate() {
            let chars = line.chars().count();
            if chars > LINE_CHARS_MAX {
                violations.push(format!(
                    "{}:{}: {chars} characters (max {LINE_CHARS_MAX})",
                    source.path,
                    index + 1
                ));
            }
        }
    }
    assert_clean(&format!("lines at most {LINE_CHARS_MAX} characters (except {GENERATED})"), violations);
}

#[test]
fn the_heuristics_see_what_they_should() {
    assert!(opens_unsafe("    let x = unsafe { f() };"));
    assert!(opens_unsafe("unsafe impl Send for X {}"));
    assert!(!opens_unsafe("#![deny(unsafe_op_in_unsafe_fn)]"));
    assert!(!opens_unsafe("pub unsafe fn f() {"));
    let all = sources();
    let unsafe_sites =
        all.iter().flat_map(|s| s.code_lines()).filter(|(_, code, _)| opens_unsafe(code)).count();
    assert!(unsafe_sites > 0, "the unsafe rule finds the unsafe code in src/ring");
    assert!(all.iter().any(|s| s.path == "src/lib.rs"), "the walk finds src/lib.rs");
    assert!(all.iter().any(|s| s.path == GENERATED), "the walk finds {GENERATED}");
    assert!(
        all.iter().filter(|s| s.path.ends_with("_tests.rs")).all(|s| s.test_file),
        "*_tests.rs files are test code"
    );
    assert_eq!(module_of("src/queue/mod.rs"), Some(("queue", 1)));
    assert_eq!(module_of("src/queue/tail.rs"), Some(("queue", 2)));
    assert_eq!(module_of("src/ids.rs"), Some(("ids", 1)));
    assert_eq!(module_of("src/lib.rs"), None);
    assert_eq!(modules_named("use crate::queue::QueueMeta;", 2), Ok(vec!["queue".to_owned()]));
    assert_eq!(modules_named("    x: crate::ids::ShardId, // crate::shard", 2), Ok(vec!["ids".to_owned()]));
    assert_eq!(modules_named("use super::tail::Tail;", 2), Ok(vec![]));
    assert_eq!(modules_named("use super::super::shard::X;", 2), Ok(vec!["shard".to_owned()]));
    assert_eq!(modules_named("use super::shard::X;", 1), Ok(vec!["shard".to_owned()]));
    assert_eq!(modules_named("$crate::ring::spsc", 1), Ok(vec!["ring".to_owned()]));
    assert!(modules_named("use crate::{ids::ShardId, ring::Mesh};", 1).is_err());
    let (edges, _) = module_imports(&all);
    assert!(
        edges.iter().any(|(from, to, _)| from == "shard" && to == "connection"),
        "the import walk finds shard -> connection"
    );
    let braces = |line: &str| braces_per_line(&[line.to_owned()])[0];
    assert_eq!(braces("let c = '{'; let d = b'}'; let e = '\\'';"), (0, 0));
    assert_eq!(braces("write!(f, \"{{ {x} \\\" }}\"); // {"), (0, 0));
    assert_eq!(braces("fn f<'a>(x: &'a str) -> &'a str { x }"), (1, 1));
    assert_eq!(declared_fn("    pub(crate) const unsafe fn get_mut(&mut self)"), Some("get_mut"));
    assert_eq!(declared_fn("    let f: fn(u8) = g;"), None);
    assert_eq!(declared_fn("    // fn commented_out() {"), None);
    let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
    let source = Source {
        path: "src/example.rs".to_owned(),
        lines: lines(
            "trait T {\n    fn declared(&self);\n    fn body(&self) {\n        let _ = \"}\";\n    }\n}",
        ),
        test_file: false,
        test_line: vec![false; 6],
    };
    assert_eq!(functions(&source), vec![(3, "body".to_owned(), 3)]);
    let dispatch = all
        .iter()
        .filter(|s| s.path == "src/channel/methods.rs")
        .flat_map(functions)
        .find(|(_, name, _)| name == "dispatch");
    assert!(
        dispatch.as_ref().is_some_and(|(_, _, lines)| (30..=80).contains(lines)),
        "Channel::dispatch measured: {dispatch:?}"
    );
}

/// The library's top-level module a file under `src/` belongs to, and how
/// deep the file's module sits (`src/a.rs` and `src/a/mod.rs`: 1,
/// `src/a/b.rs`: 2). `None` for the crate root and the binaries.
fn module_of(path: &str) -> Option<(&str, usize)> {
    let rest = path.strip_prefix("src/")?;
    if rest == "lib.rs" || rest == "main.rs" || rest.starts_with("bin/") {
        return None;
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let top = parts[0].trim_end_matches(".rs");
    let depth = if parts.last() == Some(&"mod.rs") { parts.len() - 1 } else { parts.len() };
    Some((top, depth))
}

/// The identifier at the start of `s`.
fn leading_ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a line of code names: `crate::x…` paths, and
/// `super::` chains that climb to the crate root (from a file at `depth`).
/// `Err` for a path the check cannot follow (`crate::{…}`).
fn modules_named(code: &str, depth: usize) -> Result<Vec<String>, String> {
    // A trailing comment is not code (`//` after whitespace, so `"a://b"` stays).
    let code = match code.find(" //") {
        Some(at) => &code[..at],
        None => code,
    };
    let mut named = Vec::new();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        let end = start + "crate::".len();
        from = end;
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[end..];
        if rest.starts_with('{') {
            return Err("`crate::{…}`: write one `use crate::module::…` per module".to_owned());
        }
        named.push(leading_ident(rest).to_owned());
    }
    let mut from = 0;
    while let Some(at) = code[from..].find("super::") {
        let start = from + at;
        if code[..start].chars().next_back().is_some_and(|c| is_ident(c) || c == ':') {
            from = start + "super::".len();
            continue;
        }
        let mut rest = &code[start..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            climbs += 1;
        }
        from = code.len() - rest.len();
        if climbs >= depth {
            if rest.starts_with('{') {
                return Err("`super::{…}` at the crate root: name the module with `crate::`".to_owned());
            }
            named.push(leading_ident(rest).to_owned());
        }
    }
    Ok(named)
}

/// Every use of another top-level module in non-test code, as
/// (from, to, `path:line`).
fn module_imports(sources: &[Source]) -> (Vec<(String, String, String)>, Vec<String>) {
    let mut edges = Vec::new();
    let mut unreadable = Vec::new();
    for source in sources {
        let Some((from, depth)) = module_of(&source.path) else { continue };
        for (number, code, test) in source.code_lines() {
            if test {
                continue;
            }
            match modules_named(code, depth) {
                Ok(named) => {
                    for to in named {
                        if to != from {
                            edges.push((from.to_owned(), to, format!("{}:{number}", source.path)));
                        }
                    }
                }
                Err(why) => unreadable.push(format!("{}:{number}: {why}", source.path)),
            }
        }
    }
    (edges, unreadable)
}

/// The row of `module` in [`ALLOWED_IMPORTS`].
fn allowed_imports(module: &str) -> Option<&'static [&'static str]> {
    ALLOWED_IMPORTS.iter().find(|(m, _)| *m == module).map(|(_, allowed)| *allowed)
}

#[test]
fn modules_use_only_the_modules_below_them() {
    let all = sources();
    let mut violations = Vec::new();
    for source in &all {
        if let Some((module, _)) = module_of(&source.path) {
            if allowed_imports(module).is_none() {
                violations.push(format!("{}: module {module} has no row in ALLOWED_IMPORTS", source.path));
            }
        }
    }
    let (edges, unreadable) = module_imports(&all);
    violations.extend(unreadable);
    let mut used_exceptions = BTreeSet::new();
    for (from, to, at) in &edges {
        let Some(allowed) = allowed_imports(from) else { continue };
        if allowed.contains(&to.as_str()) {
            continue;
        }
        if IMPORT_EXCEPTIONS.contains(&(from.as_str(), to.as_str())) {
            used_exceptions.insert((from.as_str(), to.as_str()));
            continue;
        }
        violations.push(format!("{at}: module {from} may not use {to}"));
    }
    for (from, to) in IMPORT_EXCEPTIONS {
        if !used_exceptions.contains(&(*from, *to)) {
            violations.push(format!("IMPORT_EXCEPTIONS: {from} no longer uses {to}: remove the exception"));
        }
    }
    assert_clean("the allowed-import table (ALLOWED_IMPORTS, IMPORT_EXCEPTIONS)", violations);
}

#[test]
fn the_allowed_import_table_has_no_circle() {
    let mut violations = Vec::new();
    for (position, (module, allowed)) in ALLOWED_IMPORTS.iter().enumerate() {
        for used in *allowed {
            // Rows run top to bottom: a module may only name rows after its own.
            match ALLOWED_IMPORTS.iter().position(|(m, _)| m == used) {
                Some(at) if at > position => {}
                Some(_) => violations.push(format!("{module} may use {used}, which is not below it")),
                None => violations.push(format!("{module} may use {used}, which has no row")),
            }
        }
    }
    for (from, to) in IMPORT_EXCEPTIONS {
        if allowed_imports(from).is_none_or(|allowed| allowed.contains(to)) {
            violations.push(format!("exception {from} -> {to}: no row, or already allowed"));
        }
    }
    assert_clean("rows of ALLOWED_IMPORTS name only rows below them", violations);
}

/// Prints the module graph: `cargo test --test tidy -- --ignored --nocapture import_graph`.
#[test]
#[ignore = "prints the import graph; run by hand"]
fn import_graph() {
    let (edges, _) = module_imports(&sources());
    let mut graph: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for (from, to, _) in &edges {
        graph.entry(from.clone()).or_default().insert(to.clone());
    }
    for (from, to) in &graph {
        println!("{from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    println!();
    for (from, to, at) in &edges {
        println!("{at}: {from} -> {to}");
    }
}

/// The Python package behind the perf tools in `scripts/`.
const PERF_PACKAGE: &str = "scripts/lepusperf";

/// The package modules one import statement names: `from .m import x`,
/// `from . import m, n`, `from lepusperf.m import x`, `from lepusperf import m`,
/// `import lepusperf.m`. Anything else (the standard library, pika) is empty.
fn package_imports(statement: &str) -> Vec<String> {
    let code = statement.split('#').next().unwrap_or("").trim();
    let names = |list: &str| -> Vec<String> {
        list.trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace())
            .split(',')
            .filter_map(|name| name.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    if let Some(rest) = code.strip_prefix("from ") {
        let Some((from, list)) = rest.split_once(" import ") else { return Vec::new() };
        return match from.trim() {
            "." | "lepusperf" => names(list),
            from => from
                .strip_prefix('.')
                .or_else(|| from.strip_prefix("lepusperf."))
                .map(|module| vec![module.to_owned()])
                .unwrap_or_default(),
        };
    }
    code.strip_prefix("import ")
        .map(|list| {
            names(list).iter().filter_map(|m| m.strip_prefix("lepusperf.")).map(str::to_owned).collect()
        })
        .unwrap_or_default()
}

/// Module → the package modules it imports (at any depth: a function's own
/// import counts too), for every `.py` file in `dir`.
fn python_imports(dir: &Path) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut graph = std::collections::BTreeMap::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())).path();
        let Some(module) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".py"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut imports = BTreeSet::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let trimmed = line.trim_start();
            if !(trimmed.starts_with("from ") || trimmed.starts_with("import ")) {
                continue;
            }
            // `from . import (a,\n b)`: the statement runs to the closing parenthesis.
            let mut statement = trimmed.to_owned();
            while statement.contains('(') && !statement.contains(')') {
                let Some(next) = lines.next() else { break };
                statement.push(' ');
                statement.push_str(next.trim());
            }
            imports.extend(package_imports(&statement));
        }
        graph.insert(module.to_owned(), imports);
    }
    graph
}

/// A cycle of `graph` as the path that closes it (`a -> b -> a`), if any.
fn import_cycle(graph: &std::collections::BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit<'a>(
        module: &'a str,
        graph: &'a std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            let mut cycle: Vec<String> = path[at..].iter().map(|m| m.to_string()).collect();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_perf_package_imports_form_no_cycle() {
    let root = crate_root();
    let graph = python_imports(&root.join(PERF_PACKAGE));
    assert!(graph.len() >= 10 && graph.contains_key("cli"), "the walk finds the package: {graph:?}");
    assert!(graph.values().map(BTreeSet::len).sum::<usize>() >= 10, "the walk finds its imports: {graph:?}");
    let missing: Vec<String> = graph
        .iter()
        .flat_map(|(module, imports)| imports.iter().map(move |i| (module, i)))
        .filter(|(_, imported)| !graph.contains_key(*imported))
        .map(|(module, imported)| {
            format!("{PERF_PACKAGE}/{module}.py imports {imported}, which is not in it")
        })
        .collect();
    assert_clean("the perf package imports only modules it has", missing);
    if let Some(cycle) = import_cycle(&graph) {
        panic!("{PERF_PACKAGE}: imports go round in a cycle: {}", cycle.join(" -> "));
    }
    // No module makes itself importable under another name to break a cycle.
    let scripts = [root.join("scripts"), root.join(PERF_PACKAGE)];
    let mut aliased = Vec::new();
    for dir in &scripts {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())).path();
            if path.extension().is_some_and(|e| e == "py") {
                let text =
                    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                if text.contains("sys.modules") {
                    let rel = path.strip_prefix(&root).unwrap_or(&path);
                    aliased.push(format!("{}: uses sys.modules", rel.display()));
                }
            }
        }
    }
    assert_clean("no sys.modules tricks in scripts/", aliased);
}

#[test]
fn the_import_heuristics_see_what_they_should() {
    assert_eq!(package_imports("from .proc import ROOT, stop"), ["proc"]);
    assert_eq!(package_imports("    from . import durable, idle as i  # kinds"), ["durable", "idle"]);
    assert_eq!(package_imports("from . import (a, b)"), ["a", "b"]);
    assert_eq!(package_imports("from lepusperf import cli"), ["cli"]);
    assert_eq!(package_imports("from lepusperf.report import si"), ["report"]);
    assert_eq!(package_imports("import lepusperf.wire, json"), ["wire"]);
    assert!(
        package_imports("import json").is_empty() && package_imports("from pathlib import Path").is_empty()
    );
    let graph = |edges: &[(&str, &str)]| {
        let mut g = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
        for (from, to) in edges {
            g.entry(from.to_string()).or_default().insert(to.to_string());
            g.entry(to.to_string()).or_default();
        }
        g
    };
    assert_eq!(import_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        import_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "b")])),
        Some(vec!["b".into(), "c".into(), "b".into()])
    );
}
