//! libpq's connection service file (`pg_service.conf`): named groups of connection settings,
//! chosen with `service=NAME` or `PGSERVICE`.
//!
//! Looked up as libpq does: the file `PGSERVICEFILE` names (else `~/.pg_service.conf`) first;
//! when the service is not defined there, `pg_service.conf` in `PGSYSCONFDIR` (else in
//! `/etc/postgresql-common`, where Debian's libpq looks).

use std::path::{Path, PathBuf};

use super::conninfo::Params;
use crate::error::Error;

/// Debian's libpq system configuration directory.
const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// The settings of service `name`.
///
/// # Errors
/// The service is defined in none of the files, or the file defining it is malformed (a
/// line without `=`, an unknown or nested `service` keyword).
pub(crate) fn lookup(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Params, Error> {
    let set = |var: &str| env(var).filter(|v| !v.is_empty());
    let user_file = set("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|h| Path::new(&h).join(".pg_service.conf")));
    let system_file = Path::new(&set("PGSYSCONFDIR").unwrap_or_else(|| DEFAULT_SYSCONFDIR.into()))
        .join("pg_service.conf");
    let mut looked_in = Vec::new();
    for path in user_file.into_iter().chain([system_file]) {
        looked_in.push(path.display().to_string());
        // A missing file is skipped, as in libpq.
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        if let Some(params) = parse_group(&text, name, &path)? {
            return Ok(params);
        }
    }
    Err(Error::Config(format!(
        "definition of service \"{name}\" not found (looked in {})",
        looked_in.join(" and ")
    )))
}

/// The settings of group `[name]` in a service file's `text`, or `None` when it has no such
/// group.
fn parse_group(text: &str, name: &str, path: &Path) -> Result<Option<Params>, Error> {
    let mut found = None;
    let mut in_group = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |what: &str| {
            Error::Config(format!("{what} in service file \"{}\", line {}", path.display(), i + 1))
        };
        if let Some(group) = line.strip_prefix('[') {
            let group = group.strip_suffix(']').ok_or_else(|| syntax("syntax error"))?;
            in_group = group == name;
            if in_group && found.is_none() {
                found = Some(Params::default());
            }
            continue;
        }
        let Some(params) = found.as_mut().filter(|_| in_group) else { continue };
        let (key, value) = line.split_once('=').ok_or_else(|| syntax("syntax error"))?;
        let key = key.trim();
        if key == "service" {
            return Err(syntax("nested service specifications not supported"));
        }
        // The first value of a keyword counts, as in libpq.
        if !params.has(key) {
            params.set(key, value.trim().to_owned()).map_err(|e| match e {
                Error::Config(msg) => syntax(&msg),
                other => other,
            })?;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<&str, String> = pairs.into_iter().collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn groups_and_errors() {
        let p = Path::new("svc.conf");
        let text = "# comment\n[other]\nhost=elsewhere\n\n[mine]\nhost = db1\nport=6000\n\
                    port=7000\noptions=-c search_path=a,b\n";
        let params = parse_group(text, "mine", p).unwrap().unwrap();
        assert_eq!(params.get("host"), Some("db1"));
        assert_eq!(params.get("port"), Some("6000"));
        assert_eq!(params.get("options"), Some("-c search_path=a,b"));
        assert!(parse_group(text, "absent", p).unwrap().is_none());
        for (bad, want) in [
            ("[mine]\nservice=x\n", "nested service"),
            ("[mine]\njusttext\n", "syntax error in service file \"svc.conf\", line 2"),
            ("[mine]\nbogus=1\n", "line 2"),
            ("[mine\n", "syntax error"),
        ] {
            let err = parse_group(bad, "mine", p).unwrap_err().to_string();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
    }

    #[test]
    fn user_file_then_system_file() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.conf");
        std::fs::write(&user, "[a]\nhost=from-user\n").unwrap();
        std::fs::write(dir.path().join("pg_service.conf"), "[a]\nhost=sys\n[b]\nhost=sys-b\n")
            .unwrap();
        let env = env_of(vec![
            ("PGSERVICEFILE", user.display().to_string()),
            ("PGSYSCONFDIR", dir.path().display().to_string()),
        ]);
        assert_eq!(lookup("a", &env).unwrap().get("host"), Some("from-user"));
        assert_eq!(lookup("b", &env).unwrap().get("host"), Some("sys-b"));
        let err = lookup("c", &env).unwrap_err().to_string();
        assert!(err.contains("service \"c\" not found"), "{err}");
        assert!(err.contains("user.conf") && err.contains("pg_service.conf"), "{err}");
        // ~/.pg_service.conf when PGSERVICEFILE is unset.
        std::fs::write(dir.path().join(".pg_service.conf"), "[h]\nport=7\n").unwrap();
        let env = env_of(vec![
            ("HOME", dir.path().display().to_string()),
            ("PGSYSCONFDIR", "/nonexistent".into()),
        ]);
        assert_eq!(lookup("h", &env).unwrap().get("port"), Some("7"));
    }
}
