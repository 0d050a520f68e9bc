//! Writing values into servers' configuration files safely.

use std::path::Path;

use crate::Error;

/// Rejects setting names and values that could break out of a `name = value` line.
pub(crate) fn validate_setting(name: &str, value: &str) -> Result<(), Error> {
    let invalid = |reason| Err(Error::InvalidSetting { name: name.to_owned(), reason });
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return invalid("names may hold only ASCII letters, digits, '_', '-' and '.'");
    }
    if value.contains(['\n', '\r', '\0']) {
        return invalid("values may not contain line breaks or NUL");
    }
    Ok(())
}

/// A path in double quotes, as both MariaDB's option files and NATS's configuration read
/// it; paths needing escapes are refused rather than escaped in two dialects.
pub(crate) fn quoted_path(path: &Path) -> Result<String, Error> {
    let text = path.to_str().filter(|t| !t.contains(['"', '\\', '\n', '\r', '\0']));
    match text {
        Some(text) => Ok(format!("\"{text}\"")),
        None => Err(Error::UnsafePath(path.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        assert!(validate_setting("innodb_buffer_pool_size", "128M").is_ok());
        assert!(validate_setting("innodb-log-file-size", "64M").is_ok());
        assert!(validate_setting("x = 1\nport", "1").is_err());
        assert!(validate_setting("port", "1\nskip-grant-tables").is_err());
        assert!(validate_setting("", "1").is_err());
    }

    #[test]
    fn paths_are_quoted_or_refused() {
        assert_eq!(quoted_path(Path::new("/tmp/a b")).unwrap(), "\"/tmp/a b\"");
        assert!(matches!(quoted_path(Path::new("/tmp/a\"b")), Err(Error::UnsafePath(_))));
        assert!(matches!(quoted_path(Path::new("/tmp/a\\b")), Err(Error::UnsafePath(_))));
    }
}
