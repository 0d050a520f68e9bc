//! What may depend on what. The `pgmirror` package's modules import each other one way (no
//! module reaches itself through the modules it uses), its engine knows nothing of clap or of
//! the commands, and the library crates' errors say what is wrong without naming a
//! command-line flag (the CLI adds the flag where one fixes it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::flags::rust_files;

/// The modules that make up the command line; everything else is the engine.
const CLI_MODULES: &[&str] = &["cli", "commands", "conn"];

/// The module a file under `src/` defines (`commands::check` for `commands/check.rs` or
/// `commands/check/mod.rs`); `None` for the binary's `main.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> =
        rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("lib") if parts.len() == 1 => parts.clear(),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts.join("::"))
}

/// The code of a file without comments, string and char literals, and its unit tests.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            i += 2;
            while i < chars.len() && !chars[i..].starts_with(&['*', '/']) {
                i += 1;
            }
            i += 2;
        } else if chars[i] == 'r'
            && matches!(rest.get(1), Some('"' | '#'))
            && !chars.get(i.wrapping_sub(1)).is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            // A raw string: r"..." or r#"..."#.
            let hashes = rest[1..].iter().take_while(|c| **c == '#').count();
            i += 2 + hashes;
            let close: Vec<char> =
                std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            while i < chars.len() && !chars[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if chars[i] == '\'' {
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            if rest.get(2) == Some(&'\'') {
                i += 3;
            } else if rest.get(1) == Some(&'\\') {
                i += 2 + rest[2..].iter().position(|c| *c == '\'').map_or(0, |p| p + 1);
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    match out.find("#[cfg(test)]\nmod tests") {
        Some(at) => out[..at].to_owned(),
        None => out,
    }
}

/// `a::{b, c::d as e}` as `[a::b, a::c::d]`.
fn expand_use(tree: &str) -> Vec<String> {
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![squeeze(tree.split(" as ").next().unwrap_or_default())];
    };
    let prefix = squeeze(&tree[..open]);
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(|item| {
            expand_use(item).into_iter().map(|p| format!("{prefix}{p}")).collect::<Vec<_>>()
        })
        .collect()
}

/// A path used in `module` as segments from the crate root; `None` when it does not start in
/// this crate (another crate, a local item). `aliases` are the names `use` lines brought in.
fn absolute(
    modules: &BTreeSet<String>,
    module: &str,
    aliases: &BTreeMap<String, Vec<String>>,
    path: &[&str],
) -> Option<Vec<String>> {
    let here: Vec<String> =
        module.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let head = *path.first()?;
    let (mut base, rest) = match head {
        "crate" => (Vec::new(), &path[1..]),
        "super" | "self" => {
            let mut base = here;
            let up = path.iter().take_while(|s| matches!(**s, "super" | "self")).count();
            for s in &path[..up] {
                if *s == "super" {
                    base.pop();
                }
            }
            (base, &path[up..])
        }
        _ if aliases.contains_key(head) => (aliases[head].clone(), &path[1..]),
        // Relative to this module: only a child module counts.
        _ if modules.contains(
            &here.iter().map(String::as_str).chain([head]).collect::<Vec<_>>().join("::"),
        ) =>
        {
            (here, path)
        }
        _ => return None,
    };
    base.extend(rest.iter().filter(|s| **s != "self").map(|s| (*s).to_owned()));
    Some(base)
}

/// The module that defines what `path` names: its longest prefix that is a module.
fn owner(modules: &BTreeSet<String>, path: &[String]) -> Option<String> {
    (0..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains(m))
}

/// Every module of `src/` and the modules each one uses (outside its unit tests), with its code.
fn module_graph(src: &Path) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let files: BTreeMap<String, PathBuf> =
        files.into_iter().filter_map(|f| Some((module_of(src, &f)?, f))).collect();
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    let mut code = BTreeMap::new();
    for (module, file) in &files {
        let text = code_only(&std::fs::read_to_string(file).unwrap());
        let mut uses = BTreeSet::new();
        let mut aliases = BTreeMap::new();
        let add = |path: Option<Vec<String>>, uses: &mut BTreeSet<String>| {
            if let Some(target) = path.and_then(|p| owner(&modules, &p))
                && target != *module
            {
                uses.insert(target);
            }
        };
        for (at, _) in text.match_indices("use ") {
            let starts_word = !text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            let Some(end) = text[at..].find(';').filter(|_| starts_word) else { continue };
            for tree in expand_use(&text[at + 4..at + end]) {
                let segs: Vec<&str> = tree.split("::").collect();
                let Some(path) = absolute(&modules, module, &aliases, &segs) else { continue };
                let name = segs.iter().rev().find(|s| **s != "self").copied().unwrap_or_default();
                aliases.insert(name.to_owned(), path.clone());
                add(Some(path), &mut uses);
            }
        }
        // Every `a::b::c` path in the code.
        let chars: Vec<char> = text.chars().collect();
        let word = |i: usize| chars.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_');
        let mut i = 0;
        while i < chars.len() {
            if !word(i) || (i > 0 && (word(i - 1) || chars[i - 1] == ':')) {
                i += 1;
                continue;
            }
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while word(j) {
                    j += 1;
                }
                segs.push(chars[start..j].iter().collect::<String>());
                if chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') && word(j + 2) {
                    j += 2;
                } else {
                    break;
                }
            }
            if segs.len() > 1 {
                let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                add(absolute(&modules, module, &aliases, &segs), &mut uses);
            }
            i = j;
        }
        graph.insert(module.clone(), uses);
        code.insert(module.clone(), text);
    }
    (graph, code)
}

/// The groups of modules that reach each other (Tarjan's strongly connected components with
/// more than one module).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().rposition(|m| *m == v).unwrap();
            let group: Vec<String> = s.stack.drain(at..).map(str::to_owned).collect();
            if group.len() > 1 {
                s.found.push(group);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn is_cli(module: &str) -> bool {
    CLI_MODULES.iter().any(|c| module == *c || module.starts_with(&format!("{c}::")))
}

/// One cycle and which of its modules uses which.
fn describe(graph: &BTreeMap<String, BTreeSet<String>>, group: &[String]) -> String {
    let mut out = format!("cycle: {}\n", group.join(", "));
    for m in group {
        let inside: Vec<&str> =
            graph[m].iter().filter(|t| group.contains(t)).map(String::as_str).collect();
        out.push_str(&format!("  {m} uses {}\n", inside.join(", ")));
    }
    out
}

#[test]
fn modules_import_each_other_one_way() {
    let (graph, _) = module_graph(&src());
    assert!(
        graph.len() > 20 && graph.values().map(BTreeSet::len).sum::<usize>() > 40,
        "{graph:#?}"
    );
    let mut report = String::new();
    for group in cycles(&graph) {
        report.push_str(&describe(&graph, &group));
    }
    assert!(report.is_empty(), "{report}");
}

/// Import cycles the library crates still have, by crate: a module split into files that
/// each add methods to one type defined in the parent (`impl PostgresTarget` in
/// `postgres/insert.rs` uses the parent, which calls it), crate roots whose re-exports the
/// modules use (`crate::Error`), and an error type with a variant for a module's own error
/// (`ApplyError::Nats`). A cycle outside these fails the test below, so they can only
/// shrink.
const KNOWN_CRATE_CYCLES: &[(&str, &[&str])] = &[
    ("tablesync", &["error", "ident"]),
    ("tablesync", &["schema", "schema::plan", "schema::sides", "schema::types"]),
    ("serverproc", &["", "ports", "program", "server", "template", "user"]),
    (
        "applier",
        &[
            "error",
            "nats",
            "json",
            "json::binary",
            "json::composite",
            "json::types",
            "json::textsearch",
            "json::value",
            "target",
        ],
    ),
    ("applier", &["", "mysql", "mysql::progress", "mysql::schema", "mysql::run", "mysql::session"]),
    (
        "applier",
        &[
            "postgres",
            "postgres::progress",
            "postgres::session",
            "postgres::runs",
            "postgres::identity",
            "postgres::insert",
            "postgres::update",
            "postgres::schema",
            "postgres::delete",
            "postgres::durability",
            "postgres::table",
            "postgres::value",
            "postgres::pipeline",
        ],
    ),
    ("pgcluster", &["", "bindir", "cluster", "template", "tls", "error"]),
    ("pgconn", &["config", "config::conninfo", "error", "config::modes", "config::service"]),
    ("pgoutput-decoder", &["message", "tuple"]),
    ("testservers", &["", "mariadb", "conf", "exit", "nats", "mariadb::install", "server"]),
    ("bench", &["", "harness", "mariadb", "pglogical", "report", "shards"]),
];

#[test]
fn no_crate_gains_an_import_cycle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut report = String::new();
    let mut read = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        read += 1;
        let (graph, _) = module_graph(&src);
        for group in cycles(&graph) {
            let known = KNOWN_CRATE_CYCLES
                .iter()
                .any(|(c, ms)| *c == name && group.iter().all(|m| ms.contains(&m.as_str())));
            if !known {
                report.push_str(&format!("{name}: {}", describe(&graph, &group)));
            }
        }
    }
    assert!(read >= 8, "read {read} crates under {}", crates.display());
    assert!(report.is_empty(), "{report}");
}

#[test]
fn the_engine_knows_nothing_of_the_command_line() {
    let (graph, code) = module_graph(&src());
    let mut wrong = Vec::new();
    for (module, uses) in graph.iter().filter(|(m, _)| !m.is_empty() && !is_cli(m)) {
        for used in uses.iter().filter(|u| is_cli(u)) {
            wrong.push(format!("{module} uses {used}"));
        }
        if code[module].contains("clap") {
            wrong.push(format!("{module} uses clap"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The graph finds what it should: a child's `super::` item, an aliased module's child, a
/// `use` group, and nothing in strings, comments or unit tests.
#[test]
fn the_module_graph_reads_paths_as_rust_does() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |name: &str, text: &str| {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write("a/mod.rs", "mod kid;\nuse crate::{b, c::X};\nfn f() { b::deep::g(); kid::h(); }\n");
    write("a/kid.rs", "use super::Thing;\n");
    write("b/mod.rs", "pub mod deep;\n// crate::a::nothing\nconst S: &str = \"crate::a::x\";\n");
    write("b/deep.rs", "pub fn g() {}\n#[cfg(test)]\nmod tests {\n    use crate::a::Y;\n}\n");
    write("c.rs", "pub struct X;\nfn f(x: &'static str) -> char { '\"' }\n");
    let (graph, _) = module_graph(src);
    let uses = |m: &str| graph[m].iter().map(String::as_str).collect::<Vec<_>>();
    assert_eq!(uses("a"), ["a::kid", "b", "b::deep", "c"]);
    assert_eq!(uses("a::kid"), ["a"]);
    assert!(uses("b").is_empty() && uses("b::deep").is_empty() && uses("c").is_empty());
    let mut found = cycles(&graph);
    found.iter_mut().for_each(|group| group.sort());
    assert_eq!(found, [vec!["a".to_owned(), "a::kid".to_owned()]]);
}

/// String literals inside the `#[error(...)]` attributes of a Rust file.
fn error_messages(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in source.match_indices("#[error(") {
        let body = &source[at..];
        let end = body.find(")]\n").unwrap_or(body.len());
        let mut rest = &body[..end];
        while let Some(open) = rest.find('"') {
            let after = &rest[open + 1..];
            let mut close = 0;
            let bytes = after.as_bytes();
            while close < bytes.len() && bytes[close] != b'"' {
                close += if bytes[close] == b'\\' { 2 } else { 1 };
            }
            out.push(after[..close.min(after.len())].to_owned());
            rest = &after[(close + 1).min(after.len())..];
        }
    }
    out
}

#[test]
fn library_errors_name_no_command_line_flag() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    let mut named = Vec::new();
    for file in files.iter().filter(|f| f.components().any(|c| c.as_os_str() == "src")) {
        for message in error_messages(&std::fs::read_to_string(file).unwrap()) {
            let flag = message.match_indices("--").any(|(i, _)| {
                let word_start = i == 0 || !message[..i].ends_with(|c: char| c.is_alphanumeric());
                word_start && message[i + 2..].starts_with(|c: char| c.is_ascii_lowercase())
            });
            if flag {
                named.push(format!("{}: {message}", file.display()));
            }
        }
    }
    assert!(named.is_empty(), "library errors that name a flag:\n{}", named.join("\n"));
}

/// The benchmark harness says what is wrong with its options; `pgmirror bench` names the flag.
#[tokio::test]
async fn the_bench_harness_names_no_flag() {
    let opts = bench::BenchOptions {
        workloads: Vec::new(),
        scale: "1".parse().unwrap(),
        runs: 0,
        pgmirror_exe: PathBuf::from("pgmirror"),
        latency_samples: 0,
        verbose: false,
        run_timeout: std::time::Duration::from_secs(1),
        mariadb: false,
        shards: Vec::new(),
        durable: false,
    };
    let err = bench::run(opts).await.expect_err("no runs").to_string();
    assert!(err.contains("at least one run") && !err.contains("--"), "{err}");
}
