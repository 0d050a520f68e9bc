//! Free TCP ports on the loopback interface.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::Error;
use crate::error::IoContext;

/// A port of 127.0.0.1 that was free a moment ago and was not handed out before in this
/// process. Another process may still take it before the server binds it: servers retry on
/// a fresh port when [`Error::is_port_clash`] says so.
///
/// # Errors
/// Binding failed, or every port the kernel offered was handed out already.
pub fn free_port() -> Result<u16, Error> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").ctx(|| "bind a free port")?;
        let port = listener.local_addr().ctx(|| "local address")?.port();
        if handed.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::io("no free port found", std::io::Error::other("exhausted")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: HashSet<u16> = (0..20).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.len(), 20);
        assert!(!ports.contains(&0));
    }
}
