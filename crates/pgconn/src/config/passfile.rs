//! libpq's password file (`~/.pgpass`, or the file `PGPASSFILE` or `passfile` names).

use std::path::Path;

/// The password for one connection from the file at `path`: the first matching entry, or
/// `None` (also when the file is missing, not a plain file, or readable by group or others,
/// which libpq skips too, with a warning).
pub(crate) fn lookup(
    path: &Path,
    host: &str,
    is_unix: bool,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let contents = read_passfile(path)?;
    passfile_lookup(&contents, host, is_unix, port, dbname, user)
}

fn read_passfile(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        tracing::warn!(path = %path.display(), "password file is not a plain file; ignoring it");
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) or \
                 less; ignoring it"
            );
            return None;
        }
    }
    std::fs::read_to_string(path).ok()
}

/// Splits a `.pgpass` line on unescaped `:` into 5 fields, undoing `\`
/// escapes. The password (last field) takes the rest of the line.
fn split_passfile_line(line: &str) -> Option<[String; 5]> {
    let mut fields: [String; 5] = Default::default();
    let mut idx = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(e) = chars.next() {
                    fields[idx].push(e);
                }
            }
            ':' if idx < 4 => idx += 1,
            c => fields[idx].push(c),
        }
    }
    (idx == 4).then_some(fields)
}

/// The first `.pgpass` entry matching the connection (`*` matches anything;
/// an entry for `localhost` also matches Unix-socket connections).
fn passfile_lookup(
    contents: &str,
    host: &str,
    is_unix: bool,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    contents
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(split_passfile_line)
        .find(|[h, p, d, u, _]| {
            let host_ok = h == "*" || h == host || (is_unix && h == "localhost");
            host_ok
                && (p == "*" || *p == port)
                && (d == "*" || d == dbname)
                && (u == "*" || u == user)
        })
        .map(|[_, _, _, _, pw]| pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_matching() {
        let file = "# comment\n\
                    other:*:*:*:nope\n\
                    db.example.com:5432:app:bob:pw\\:with\\\\colon\n\
                    *:6000:*:*:wild\n\
                    localhost:5432:*:carol:sock\n";
        let look = |h: &str, unix: bool, port: u16, db: &str, u: &str| {
            passfile_lookup(file, h, unix, port, db, u)
        };
        assert_eq!(
            look("db.example.com", false, 5432, "app", "bob").as_deref(),
            Some(r"pw:with\colon")
        );
        assert_eq!(look("db.example.com", false, 5432, "other", "bob"), None);
        assert_eq!(look("anything", false, 6000, "x", "y").as_deref(), Some("wild"));
        assert_eq!(look("/run/pg", true, 5432, "x", "carol").as_deref(), Some("sock"));
        assert_eq!(look("h", false, 5432, "x", "carol"), None);
        assert_eq!(split_passfile_line("a:b:c"), None);
    }
}
