//! Parsing, defaults and redaction of [`ConnConfig`].

use super::*;
use std::collections::HashMap;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> =
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |k| map.get(k).cloned()
}

fn parse(s: &str) -> ConnConfig {
    ConnConfig::parse_with_env(s, &env_of(&[("USER", "ignored")])).unwrap()
}

#[test]
fn url_full() {
    let c = parse(
        "postgres://al%40ice:p%3Ass%2Fw@db.example.com:6543/my%20db?sslmode=verify-full&\
         application_name=tail&sslrootcert=/etc/ca.pem&connect_timeout=7",
    );
    assert_eq!(c.host(), &Host::Tcp("db.example.com".into()));
    assert_eq!(c.port(), 6543);
    assert_eq!(c.user(), "al@ice");
    assert_eq!(c.password(), Some("p:ss/w"));
    assert_eq!(c.dbname(), "my db");
    assert_eq!(c.sslmode(), SslMode::VerifyFull);
    assert_eq!(c.application_name(), "tail");
    assert_eq!(c.sslrootcert(), Some("/etc/ca.pem"));
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(7)));
}

#[test]
fn url_variants() {
    let c = parse("postgresql://u@[::1]:5555/d");
    assert_eq!(c.host(), &Host::Tcp("::1".into()));
    assert_eq!(c.port(), 5555);
    assert_eq!(c.target(), "[::1]:5555");
    let c = parse("postgres://u@%2Fvar%2Frun%2Fpg/d");
    assert_eq!(c.host(), &Host::Unix("/var/run/pg".into()));
    assert_eq!(c.socket_path().unwrap(), PathBuf::from("/var/run/pg/.s.PGSQL.5432"));
    let c = parse("postgres:///d?host=/tmp/x&port=7000&user=bob");
    assert_eq!(c.host(), &Host::Unix("/tmp/x".into()));
    assert_eq!(c.port(), 7000);
    assert_eq!(c.user(), "bob");
    assert_eq!(c.dbname(), "d");
    // An unencoded '@' in the password: the last '@' splits.
    let c = parse("postgres://u:a@b@h/d");
    assert_eq!(c.password(), Some("a@b"));
    assert_eq!(c.host(), &Host::Tcp("h".into()));
    let c = parse("postgres://u@h/d?ssl=true");
    assert_eq!(c.sslmode(), SslMode::Require);
}

#[test]
fn url_errors() {
    let env = env_of(&[]);
    for bad in [
        "postgres://u@h/d?bogus=1",
        "postgres://u@h:notaport/d",
        "postgres://u@h:0/d",
        "postgres://u@h1,h2/d?port=1,2,3",
        "postgres://u@[::1/d",
        "postgres://u@h/d?sslmode=sometimes",
        "postgres://u:%zz@h/d",
        "postgres://u@h/d?port",
    ] {
        let err = ConnConfig::parse_with_env(bad, &env).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
    }
    // The password is never echoed, even when it is malformed.
    let err = ConnConfig::parse_with_env("postgres://u:sec%zret@h/d", &env).unwrap_err();
    assert!(!err.to_string().contains("sec"), "{err}");
}

#[test]
fn key_value() {
    let c = parse(
        r"host=10.0.0.1 port = 6000 user=bob password='a b\'c\\d' dbname=x\ y sslmode=disable",
    );
    assert_eq!(c.host(), &Host::Tcp("10.0.0.1".into()));
    assert_eq!(c.port(), 6000);
    assert_eq!(c.user(), "bob");
    assert_eq!(c.password(), Some(r"a b'c\d"));
    assert_eq!(c.dbname(), "x y");
    assert_eq!(c.sslmode(), SslMode::Disable);
    let c = parse("host=/run/pg user=u password='' dbname=''");
    assert_eq!(c.host(), &Host::Unix("/run/pg".into()));
    assert_eq!(c.password(), None);
    assert_eq!(c.dbname(), "u");
}

#[test]
fn key_value_errors() {
    let env = env_of(&[("PGUSER", "u")]);
    for bad in ["host", "host=a port", "password='abc", "nope=1", "connect_timeout=x"] {
        let err = ConnConfig::parse_with_env(bad, &env).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
    }
    let err = ConnConfig::parse_with_env("password='secret", &env).unwrap_err();
    assert!(!err.to_string().contains("secret"));
}

#[test]
fn env_defaults_and_precedence() {
    let env = env_of(&[
        ("PGHOST", "envhost"),
        ("PGPORT", "7777"),
        ("PGUSER", "envuser"),
        ("PGPASSWORD", "envpw"),
        ("PGDATABASE", "envdb"),
        ("PGSSLMODE", "require"),
        ("PGSSLROOTCERT", "/ca.pem"),
        ("PGAPPNAME", "envapp"),
        ("PGCONNECT_TIMEOUT", "1"),
        ("PGCHANNELBINDING", "require"),
    ]);
    let c = ConnConfig::parse_with_env("", &env).unwrap();
    assert_eq!(c.host(), &Host::Tcp("envhost".into()));
    assert_eq!(c.port(), 7777);
    assert_eq!(c.user(), "envuser");
    assert_eq!(c.password(), Some("envpw"));
    assert_eq!(c.dbname(), "envdb");
    assert_eq!(c.sslmode(), SslMode::Require);
    assert_eq!(c.sslrootcert(), Some("/ca.pem"));
    assert_eq!(c.application_name(), "envapp");
    // libpq raises 1 s to 2 s.
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(c.channel_binding(), ChannelBinding::Require);

    let c = ConnConfig::parse_with_env("host=h user=me dbname=mine sslmode=disable", &env).unwrap();
    assert_eq!(c.host(), &Host::Tcp("h".into()));
    assert_eq!(c.user(), "me");
    assert_eq!(c.dbname(), "mine");
    assert_eq!(c.sslmode(), SslMode::Disable);
    assert_eq!(c.port(), 7777);
}

#[test]
fn libpq_defaults() {
    let c = ConnConfig::parse_with_env("host=h", &env_of(&[])).unwrap();
    assert_eq!(c.port(), DEFAULT_PORT);
    assert_eq!(c.user(), whoami::username().unwrap());
    assert_eq!(c.dbname(), c.user());
    assert_eq!(c.sslmode(), SslMode::Prefer);
    assert_eq!(c.application_name(), DEFAULT_APPLICATION_NAME);
    assert_eq!(c.connect_timeout(), None);
    assert_eq!(c.passfile(), None);
    let c = ConnConfig::parse_with_env("host=h user=u", &env_of(&[("HOME", "/home/u")])).unwrap();
    assert_eq!(c.passfile(), Some(Path::new("/home/u/.pgpass")));
    let c = parse("host=h user=u fallback_application_name=fb");
    assert_eq!(c.application_name(), "fb");
    let c = parse("host=h user=u connect_timeout=0");
    assert_eq!(c.connect_timeout(), None);
    let c = ConnConfig::parse_with_env("user=u", &env_of(&[])).unwrap();
    assert!(matches!(c.host(), Host::Unix(_) | Host::Tcp(_)));
}

#[test]
fn redaction() {
    let c = parse("postgres://bob:hunter2@h:1/db?sslmode=require");
    let shown = [c.to_string(), format!("{c:?}"), c.redacted()];
    for s in &shown {
        assert!(!s.contains("hunter2"), "{s}");
    }
    assert_eq!(c.redacted(), "postgres://bob@h:1/db?sslmode=require&application_name=pgmirror");
    assert!(shown[1].contains("<redacted>"));
    // The redacted URL parses back to the same config minus the password.
    let back = parse(&c.redacted());
    assert_eq!(back, c.clone().with_password(None).with_passfile(None));
    let sock = parse("host='/tmp/s p' user=u dbname=d");
    let back = parse(&sock.redacted());
    assert_eq!(back.host(), &Host::Unix("/tmp/s p".into()));
}

#[test]
fn passfile_file_and_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgpass");
    std::fs::write(&path, "h:5432:d:u:from-file\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let env = env_of(&[("PGPASSFILE", path.to_str().unwrap())]);
    let c = ConnConfig::parse_with_env("host=h user=u dbname=d", &env).unwrap();
    assert_eq!(c.password(), None);
    assert_eq!(c.effective_password().as_deref(), Some("from-file"));
    // An explicit password wins.
    let c2 = c.clone().with_password(Some("explicit".into()));
    assert_eq!(c2.effective_password().as_deref(), Some("explicit"));
    // Group/world-readable files are ignored, like libpq.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(c.effective_password(), None);
    // So is a missing file.
    let c3 = c.with_passfile(Some(dir.path().join("missing")));
    assert_eq!(c3.effective_password(), None);
}

#[test]
fn several_hosts() {
    let c = parse("host=a,/run/pg,b port=1,2,3 user=u target_session_attrs=read-write");
    let hosts: Vec<_> = c.hosts().map(|(h, p)| (h.clone(), p)).collect();
    assert_eq!(
        hosts,
        [(Host::Tcp("a".into()), 1), (Host::Unix("/run/pg".into()), 2), (Host::Tcp("b".into()), 3)]
    );
    assert_eq!(c.target(), "a:1,/run/pg/.s.PGSQL.2,b:3");
    assert_eq!(c.target_session_attrs(), TargetSessionAttrs::ReadWrite);
    let per_host: Vec<String> = c.per_host().map(|h| h.target()).collect();
    assert_eq!(per_host, ["a:1", "/run/pg/.s.PGSQL.2", "b:3"]);
    // One port for every host; a URL with a port per host; an empty port is 5432.
    let c = parse("host=a,b port=7 user=u");
    assert_eq!(c.hosts().map(|(_, p)| p).collect::<Vec<_>>(), [7, 7]);
    let c = parse("postgres://u@a:5,[::1],c:6/db");
    assert_eq!(c.target(), "a:5,[::1]:5432,c:6");
    // The redacted URL lists them all and parses back.
    assert_eq!(parse(&c.redacted()).target(), c.target());
    let err = ConnConfig::parse_with_env("host=a,b,c port=1,2", &env_of(&[])).unwrap_err();
    assert!(err.to_string().contains("could not match 2 port numbers to 3 hosts"), "{err}");
}

#[test]
fn options_keepalives_and_session_attrs() {
    let c = parse(
        "host=h user=u options='-c search_path=a,b' keepalives_idle=30 keepalives_interval=5 \
         keepalives_count=3 tcp_user_timeout=9000 target_session_attrs=prefer-standby",
    );
    assert_eq!(c.options(), Some("-c search_path=a,b"));
    let k = c.keepalives().unwrap();
    assert_eq!(k.idle, Some(Duration::from_secs(30)));
    assert_eq!(k.interval, Some(Duration::from_secs(5)));
    assert_eq!(k.count, Some(3));
    assert_eq!(c.tcp_user_timeout(), Some(Duration::from_millis(9000)));
    assert_eq!(c.target_session_attrs(), TargetSessionAttrs::PreferStandby);
    assert_eq!(parse(&c.redacted()), c.clone().with_passfile(None));
    // Keepalives are on by default (as in libpq) with the system's timings.
    let c = parse("host=h user=u");
    assert_eq!(c.keepalives(), Some(Keepalives::default()));
    assert_eq!(c.options(), None);
    assert_eq!(c.tcp_user_timeout(), None);
    assert_eq!(parse("host=h user=u keepalives=0").keepalives(), None);
    let env = env_of(&[("PGOPTIONS", "-c work_mem=1MB"), ("PGTARGETSESSIONATTRS", "standby")]);
    let c = ConnConfig::parse_with_env("host=h user=u", &env).unwrap();
    assert_eq!(c.options(), Some("-c work_mem=1MB"));
    assert_eq!(c.target_session_attrs(), TargetSessionAttrs::Standby);
}

#[test]
fn options_that_cannot_be_honoured_are_refused() {
    let env = env_of(&[("PGUSER", "u")]);
    for (s, want) in [
        ("gssencmode=require", "gssencmode=require is not supported"),
        ("sslnegotiation=direct", "sslnegotiation=direct is not supported"),
        ("load_balance_hosts=random", "load_balance_hosts=random is not supported"),
        ("client_encoding=LATIN1", "client_encoding=LATIN1 is not supported"),
        ("sslcertmode=require", "sslcertmode=require is not supported"),
        ("sslcompression=maybe", "invalid sslcompression value"),
        ("keepalives_idle=soon", "invalid keepalives_idle value"),
        ("target_session_attrs=master", "invalid target_session_attrs value"),
        ("sslpassword=x", "\"sslpassword\" is not supported"),
        ("sslrootcert=system sslmode=require", "weak sslmode \"require\" may not be used"),
    ] {
        let err = ConnConfig::parse_with_env(s, &env).unwrap_err().to_string();
        assert!(err.contains(want), "{s}: {err}");
    }
    // What libpq accepts without effect here is accepted.
    for s in ["gssencmode=prefer", "gssencmode=disable", "sslcompression=0", "sslsni=0"] {
        ConnConfig::parse_with_env(s, &env).unwrap();
    }
    let c = ConnConfig::parse_with_env("client_encoding=UTF8 sslsni=0", &env).unwrap();
    assert!(!c.sslsni());
    // sslrootcert=system means verify-full unless said otherwise.
    let c = ConnConfig::parse_with_env("sslrootcert=system", &env).unwrap();
    assert_eq!(c.sslmode(), SslMode::VerifyFull);
}

#[test]
fn service_file_between_string_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services");
    std::fs::write(&file, "[app]\nhost=svc-host\nport=6001\ndbname=svcdb\nuser=svcuser\n").unwrap();
    let file = file.display().to_string();
    let env = env_of(&[("PGSERVICEFILE", &file), ("PGPORT", "7000"), ("PGUSER", "envuser")]);
    let c = ConnConfig::parse_with_env("service=app dbname=mine", &env).unwrap();
    assert_eq!(c.host(), &Host::Tcp("svc-host".into()));
    assert_eq!(c.port(), 6001, "the service file wins over PGPORT");
    assert_eq!(c.user(), "svcuser");
    assert_eq!(c.dbname(), "mine", "the string wins over the service file");
    let env = env_of(&[("PGSERVICEFILE", &file), ("PGSERVICE", "app")]);
    assert_eq!(ConnConfig::parse_with_env("", &env).unwrap().dbname(), "svcdb");
    let err = ConnConfig::parse_with_env("service=nope", &env).unwrap_err();
    assert!(err.to_string().contains("service \"nope\" not found"), "{err}");
}

#[test]
fn overrides_and_defaults_only() {
    let env = env_of(&[]);
    let c = ConnConfig::from_params(
        "postgres://u@h:1/db?sslmode=disable",
        &[("host", "other"), ("port", "2"), ("dbname", ""), ("user", "v")],
        &env,
    )
    .unwrap();
    assert_eq!(c.target(), "other:2");
    assert_eq!(c.dbname(), "db", "an empty override is skipped");
    assert_eq!(c.user(), "v");
    assert_eq!(c.sslmode(), SslMode::Disable);
    assert!(!c.is_all_defaults());
    assert!(ConnConfig::parse_with_env("", &env).unwrap().is_all_defaults());
    assert!(ConnConfig::parse_with_env("sslmode=disable", &env).unwrap().is_all_defaults());
    let env = env_of(&[("PGDATABASE", "d")]);
    assert!(!ConnConfig::parse_with_env("", &env).unwrap().is_all_defaults());
}

#[test]
fn client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pg = dir.path().join(".postgresql");
    std::fs::create_dir(&pg).unwrap();
    let home = dir.path().display().to_string();
    let env = env_of(&[("HOME", &home), ("PGUSER", "u")]);
    // No default certificate: none is sent.
    let c = ConnConfig::parse_with_env("host=h", &env).unwrap();
    assert_eq!(c.sslcert(), None);
    // A default certificate without its key is not sent; a named one must have it.
    let cert = pg.join("postgresql.crt");
    std::fs::write(&cert, "x").unwrap();
    assert_eq!(ConnConfig::parse_with_env("host=h", &env).unwrap().sslcert(), None);
    let named = format!("host=h sslcert={}", cert.display());
    let err = ConnConfig::parse_with_env(&named, &env).unwrap_err();
    assert!(err.to_string().contains("not its private key"), "{err}");
    std::fs::write(pg.join("postgresql.key"), "x").unwrap();
    let c = ConnConfig::parse_with_env("host=h", &env).unwrap();
    assert_eq!(c.sslcert(), Some(pg.join("postgresql.crt").as_path()));
    assert_eq!(c.sslkey(), Some(pg.join("postgresql.key").as_path()));
    // sslcertmode=disable sends none; a named certificate must exist.
    let c = ConnConfig::parse_with_env("host=h sslcertmode=disable", &env).unwrap();
    assert_eq!(c.sslcert(), None);
    let err = ConnConfig::parse_with_env("host=h sslcert=/nonexistent.crt", &env).unwrap_err();
    assert!(err.to_string().contains("sslcert /nonexistent.crt"), "{err}");
}
