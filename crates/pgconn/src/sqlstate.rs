//! What a server error's SQLSTATE says, with tokio-postgres's typed codes ([`SqlState`]), so
//! errors are told apart by code and never by the text of their message where a code exists.

pub use tokio_postgres::error::SqlState;

/// Class 08, connection exception: the connection failed, is gone, or the server refused to
/// make it. Every code of the class counts, also ones a newer server or a pooler may send.
pub fn is_connection_exception(code: &SqlState) -> bool {
    // The class is the first two characters of the code (SQL standard).
    code.code().starts_with("08")
}

/// The server ended the session, or does not start one yet: admin or crash shutdown,
/// starting up or in recovery, the database dropped, the session idle too long.
pub fn is_session_end(code: &SqlState) -> bool {
    matches!(
        *code,
        SqlState::ADMIN_SHUTDOWN
            | SqlState::CRASH_SHUTDOWN
            | SqlState::CANNOT_CONNECT_NOW
            | SqlState::DATABASE_DROPPED
            | SqlState::IDLE_SESSION_TIMEOUT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_session_ends() {
        assert!(is_connection_exception(&SqlState::CONNECTION_FAILURE));
        assert!(is_connection_exception(&SqlState::PROTOCOL_VIOLATION));
        assert!(is_connection_exception(&SqlState::from_code("08ZZZ")), "any code of class 08");
        assert!(!is_connection_exception(&SqlState::ADMIN_SHUTDOWN));
        assert!(is_session_end(&SqlState::ADMIN_SHUTDOWN));
        assert!(is_session_end(&SqlState::from_code("57P03")), "parsed codes compare equal");
        assert!(is_session_end(&SqlState::IDLE_SESSION_TIMEOUT));
        assert!(!is_session_end(&SqlState::QUERY_CANCELED), "57014 is class 57 but no end");
        assert!(!is_session_end(&SqlState::UNDEFINED_OBJECT));
    }
}
