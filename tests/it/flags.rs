//! Every `--flag` that pgmirror's messages, help texts and README name is one of its own
//! flags (a fix that says `--truncate` when the flag is `--truncate-target` sends the operator
//! nowhere), and the README's command table lists every flag that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// Flags of other programs that pgmirror passes on or that its documents name.
const FOREIGN: &[&str] = &[
    // initdb, postgres, pg_config, pg_recvlogical
    "--no-sync",
    "--no-locale",
    "--single",
    "--bindir",
    "--start",
    "--no-loop",
    "--pkglibdir",
    "--sharedir",
    // mariadb-install-db, mariadbd (the test servers of crates/testservers)
    "--defaults-file",
    "--init-file",
    "--datadir",
    "--extra-file",
    "--auth-root-authentication-method",
    "--skip-test-db",
    "--skip-name-resolve",
    // cargo, the test harness, criterion
    "--release",
    "--workspace",
    "--all-targets",
    "--test",
    "--list",
    "--example",
    "--bench",
    "--nocapture",
    "--warm-up-time",
    "--measurement-time",
    // the nats CLI, named in the fix for a stream's message size limit
    "--max-msg-size",
    // docker compose
    "--build",
    "--rm",
    // the examples' own flags
    "--limit",
];

/// Every long flag of every subcommand, and the global ones.
fn own_flags() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let cli = pgmirror::cli::Cli::command();
    let mut stack = vec![cli];
    while let Some(cmd) = stack.pop() {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                out.insert(format!("--{long}"));
            }
        }
        stack.extend(cmd.get_subcommands().cloned());
    }
    out.insert("--help".into());
    out.insert("--version".into());
    out
}

/// String literals and `///`/`//!` doc comments of a Rust file: what users read.
fn user_texts(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = source.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            let end = chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |p| i + p);
            let line: String = chars[i..end].iter().collect();
            if line.starts_with("///") || line.starts_with("//!") {
                out.push(line);
            }
            i = end;
        } else if c == '\'' {
            // A char literal such as '"' must not open a string; lifetimes are skipped too.
            i += if chars.get(i + 2) == Some(&'\'') {
                3
            } else if chars.get(i + 1) == Some(&'\\') {
                chars[i + 2..].iter().position(|&c| c == '\'').map_or(1, |p| p + 3)
            } else {
                1
            };
        } else if c == '"' {
            let mut text = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    text.push(c);
                }
                i += 1;
            }
            out.push(text);
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// `--name` words in `text`: a `--` that starts a word and is followed by a letter.
fn flags_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (i, _) in text.match_indices("--") {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-');
        let name: String =
            text[i + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if starts_word && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.push(format!("--{}", name.trim_end_matches('-')));
        }
    }
    out
}

/// Every `.rs` file below `dir`.
pub(crate) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_flag_named_in_a_message_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let own = own_flags();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for krate in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut unknown = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        for text in user_texts(&source) {
            for flag in flags_in(&text) {
                if !own.contains(&flag) && !FOREIGN.contains(&flag.as_str()) {
                    unknown.push(format!("{}: {flag} in {text:?}", file.display()));
                }
            }
        }
    }
    for doc in ["README.md", "ARCHITECTURE.md", "docs/docker.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for flag in flags_in(&text) {
            if !own.contains(&flag) && !FOREIGN.contains(&flag.as_str()) {
                unknown.push(format!("{doc}: {flag}"));
            }
        }
    }
    assert!(unknown.is_empty(), "flags that pgmirror does not have:\n{}", unknown.join("\n"));
}

#[test]
fn the_readme_command_table_lists_every_flag() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let cli = pgmirror::cli::Cli::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        let row = readme
            .lines()
            .filter(|l| l.starts_with("| `"))
            .find(|l| l.contains(&format!("`{name} ")) || l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("README's command table has no row for `{name}`"));
        for arg in sub.get_arguments() {
            if arg.is_hide_set() {
                continue;
            }
            // The source's psql-style options are the same for every command: the
            // "Commands" section describes them once.
            if arg.get_help_heading().is_some_and(|h| h.starts_with("Source")) {
                if let Some(long) = arg.get_long()
                    && !readme.contains(&format!("--{long}"))
                {
                    missing.push(format!("{name} --{long} (anywhere)"));
                }
                continue;
            }
            if let Some(long) = arg.get_long()
                && !row.contains(&format!("--{long}"))
            {
                missing.push(format!("{name} --{long}"));
            }
        }
    }
    assert!(missing.is_empty(), "README's command table misses:\n{}", missing.join("\n"));
}

#[test]
fn the_scanner_finds_flags_in_literals_and_doc_comments() {
    let source = "/// Use `--alpha`.\n// --not-this\nlet c = '\"'; let s = \"x --beta; y\";\n";
    let texts = user_texts(source);
    let flags: Vec<String> = texts.iter().flat_map(|t| flags_in(t)).collect();
    assert_eq!(flags, ["--alpha", "--beta"]);
    assert!(flags_in("a--b x---y -- z").is_empty());
}
