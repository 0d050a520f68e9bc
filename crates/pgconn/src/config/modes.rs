//! The typed values of connection settings: TLS mode, channel binding, host, the session a
//! connection must reach, TCP keepalives.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// `sslmode`: whether and how TLS is used (same meaning as in libpq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS if the server insists; handled like `prefer` (the server is
    /// asked first, a plaintext fallback is used if it says no).
    Allow,
    /// Use TLS if the server supports it, without verifying the certificate.
    #[default]
    Prefer,
    /// Always use TLS; verify the certificate only if a root certificate is
    /// configured (then it behaves like `verify-ca`, as libpq does).
    Require,
    /// Always use TLS and verify that the certificate chains to a trusted root.
    VerifyCa,
    /// Like `verify-ca`, and also check that the certificate matches the host.
    VerifyFull,
}

impl SslMode {
    /// The keyword as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl std::str::FromStr for SslMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(Error::Config(format!("invalid sslmode value: \"{other}\""))),
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `channel_binding`: whether SCRAM-SHA-256-PLUS (binding the authentication
/// to the TLS session) is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    /// Never use channel binding.
    Disable,
    /// Use it when TLS is active and the server offers it.
    #[default]
    Prefer,
    /// Fail unless the server authenticates with channel binding.
    Require,
}

impl ChannelBinding {
    /// The keyword as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

impl std::str::FromStr for ChannelBinding {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            other => {
                return Err(Error::Config(format!("invalid channel_binding value: \"{other}\"")));
            }
        })
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// A directory holding the Unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl Host {
    pub(crate) fn parse(s: &str) -> Host {
        // libpq: a host starting with a slash is a socket directory.
        if s.starts_with('/') { Host::Unix(PathBuf::from(s)) } else { Host::Tcp(s.to_owned()) }
    }

    /// The host as written in a connection string (a path for sockets).
    pub fn as_string(&self) -> String {
        match self {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        }
    }
}

/// `target_session_attrs`: which of several hosts is acceptable (libpq 14+ semantics). Hosts
/// are tried in the order given; one that does not qualify is disconnected and the next
/// tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// Any server.
    #[default]
    Any,
    /// A session that accepts writes: not in hot standby and without
    /// `default_transaction_read_only`.
    ReadWrite,
    /// A session that does not accept writes (a standby, or `default_transaction_read_only`).
    ReadOnly,
    /// A server that is not in hot standby.
    Primary,
    /// A server in hot standby.
    Standby,
    /// A standby if one of the hosts is, else any server.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// The keyword as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Why a server in `state` does not qualify, as libpq words it; `None` when it does.
    /// `PreferStandby` accepts any server: the caller tries standbys first.
    pub(crate) fn mismatch(self, state: ServerState) -> Option<&'static str> {
        match self {
            TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => None,
            TargetSessionAttrs::ReadWrite => state.read_only.then_some("session is read-only"),
            TargetSessionAttrs::ReadOnly => {
                (!state.read_only).then_some("session is not read-only")
            }
            TargetSessionAttrs::Primary => {
                state.in_recovery.then_some("server is in hot standby mode")
            }
            TargetSessionAttrs::Standby => {
                (!state.in_recovery).then_some("server is not in hot standby mode")
            }
        }
    }
}

impl std::str::FromStr for TargetSessionAttrs {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            "prefer-standby" => TargetSessionAttrs::PreferStandby,
            other => {
                return Err(Error::Config(format!(
                    "invalid target_session_attrs value: \"{other}\" (any, read-write, \
                     read-only, primary, standby or prefer-standby)"
                )));
            }
        })
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `target_session_attrs` looks at on a connected server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerState {
    /// `pg_is_in_recovery()`: a hot standby.
    pub(crate) in_recovery: bool,
    /// `transaction_read_only` at the start of the session (a standby, or
    /// `default_transaction_read_only = on`).
    pub(crate) read_only: bool,
}

/// TCP keepalive settings (`keepalives_idle`, `keepalives_interval`, `keepalives_count`);
/// `None` fields keep the operating system's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalives {
    /// Idle time before the first probe.
    pub idle: Option<Duration>,
    /// Time between unanswered probes.
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection counts as dead.
    pub count: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_attrs_as_libpq_defines_them() {
        use TargetSessionAttrs::*;
        let primary = ServerState { in_recovery: false, read_only: false };
        let read_only_primary = ServerState { in_recovery: false, read_only: true };
        let standby = ServerState { in_recovery: true, read_only: true };
        let accepts = |a: TargetSessionAttrs, s| a.mismatch(s).is_none();
        for (attrs, want) in [
            (Any, [true, true, true]),
            (ReadWrite, [true, false, false]),
            (ReadOnly, [false, true, true]),
            (Primary, [true, true, false]),
            (Standby, [false, false, true]),
            (PreferStandby, [true, true, true]),
        ] {
            let got = [primary, read_only_primary, standby].map(|s| accepts(attrs, s));
            assert_eq!(got, want, "{attrs}");
            assert_eq!(attrs.as_str().parse::<TargetSessionAttrs>().unwrap(), attrs);
        }
        assert!("master".parse::<TargetSessionAttrs>().is_err());
    }
}
