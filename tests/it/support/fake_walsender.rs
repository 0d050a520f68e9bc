//! A fake walsender: a TCP server on 127.0.0.1 speaking just enough of the protocol for a
//! replication client (startup, trust authentication, simple queries answered with one
//! plausible row, START_REPLICATION) and then sending a scripted, possibly hostile, list of
//! frames. Whatever the client sends afterwards (status updates) is read and ignored.

use bytes::{BufMut, Bytes, BytesMut};
use pgoutput_decoder::{LogicalMessage, Lsn, PgTimestamp, ReplicationMessage, XLogData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One thing the fake sends after CopyBothResponse.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A CopyData message with this payload.
    CopyData(Bytes),
    /// Bytes written as they are (for malformed framing).
    Raw(Bytes),
}

/// An XLogData CopyData frame carrying `msg` at `lsn`.
pub fn xlog(lsn: u64, msg: &LogicalMessage) -> Frame {
    xlog_bytes(lsn, msg.to_bytes())
}

/// An XLogData CopyData frame carrying raw pgoutput bytes at `lsn`.
pub fn xlog_bytes(lsn: u64, data: Bytes) -> Frame {
    let x = XLogData { wal_start: Lsn(lsn), wal_end: Lsn(lsn), send_time: PgTimestamp(0), data };
    Frame::CopyData(ReplicationMessage::XLogData(x).to_bytes())
}

/// A fake server; serves every connection with the same script until dropped.
#[derive(Debug)]
pub struct FakeWalsender {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl FakeWalsender {
    /// Starts listening on a free port.
    pub async fn start(script: Vec<Frame>) -> FakeWalsender {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake walsender");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let script = script.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, &script).await;
                });
            }
        });
        FakeWalsender { port, task }
    }

    /// A connection string for it (no TLS, trust).
    pub fn url(&self) -> String {
        format!("postgres://fake@127.0.0.1:{}/fake?sslmode=disable", self.port)
    }
}

impl Drop for FakeWalsender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn message(tag: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(tag);
    out.put_i32(i32::try_from(body.len() + 4).expect("small message"));
    out.put_slice(body);
    out
}

fn cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

fn parameter(name: &str, value: &str) -> BytesMut {
    let mut body = BytesMut::new();
    cstr(&mut body, name);
    cstr(&mut body, value);
    message(b'S', &body)
}

/// RowDescription + one DataRow of text columns + CommandComplete + ReadyForQuery.
fn one_row(columns: &[(&str, &str)], tag: &str) -> BytesMut {
    let mut desc = BytesMut::new();
    desc.put_i16(i16::try_from(columns.len()).expect("few columns"));
    for (name, _) in columns {
        cstr(&mut desc, name);
        desc.put_i32(0); // table oid
        desc.put_i16(0); // column number
        desc.put_u32(25); // text
        desc.put_i16(-1);
        desc.put_i32(-1);
        desc.put_i16(0);
    }
    let mut row = BytesMut::new();
    row.put_i16(i16::try_from(columns.len()).expect("few columns"));
    for (_, value) in columns {
        row.put_i32(i32::try_from(value.len()).expect("short value"));
        row.put_slice(value.as_bytes());
    }
    let mut complete = BytesMut::new();
    cstr(&mut complete, tag);
    let mut out = message(b'T', &desc);
    out.extend_from_slice(&message(b'D', &row));
    out.extend_from_slice(&message(b'C', &complete));
    out.extend_from_slice(&message(b'Z', b"I"));
    out
}

async fn read_exact_vec(sock: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0; n];
    sock.read_exact(&mut v).await?;
    Ok(v)
}

async fn serve(mut sock: TcpStream, script: &[Frame]) -> std::io::Result<()> {
    // Startup, after refusing TLS if the client asks for it.
    loop {
        let len = usize::try_from(sock.read_i32().await?).unwrap_or(0);
        let body = read_exact_vec(&mut sock, len.saturating_sub(4)).await?;
        if body.get(..4) == Some(&[0x04, 0xd2, 0x16, 0x2f])
            || body.get(..4) == Some(&[0x04, 0xd2, 0x16, 0x30])
        {
            sock.write_all(b"N").await?; // SSLRequest / GSSENCRequest: no
            continue;
        }
        break;
    }
    let mut hello = message(b'R', &0i32.to_be_bytes());
    for (name, value) in [
        ("server_version", "15.99 (fake)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
    ] {
        hello.extend_from_slice(&parameter(name, value));
    }
    let mut key = BytesMut::new();
    key.put_i32(4242);
    key.put_i32(1);
    hello.extend_from_slice(&message(b'K', &key));
    hello.extend_from_slice(&message(b'Z', b"I"));
    sock.write_all(&hello).await?;

    loop {
        let tag = sock.read_u8().await?;
        let len = usize::try_from(sock.read_i32().await?).unwrap_or(0);
        let body = read_exact_vec(&mut sock, len.saturating_sub(4)).await?;
        match tag {
            b'Q' => {
                let sql =
                    String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).to_string();
                let upper = sql.trim_start().to_ascii_uppercase();
                if upper.starts_with("START_REPLICATION") {
                    let mut both = BytesMut::new();
                    both.put_i8(0);
                    both.put_i16(0);
                    sock.write_all(&message(b'W', &both)).await?;
                    for frame in script {
                        match frame {
                            Frame::CopyData(payload) => {
                                sock.write_all(&message(b'd', payload)).await?;
                            }
                            Frame::Raw(bytes) => sock.write_all(bytes).await?,
                        }
                    }
                    sock.flush().await?;
                    // Ignore status updates until the client goes away.
                    let mut sink = vec![0; 8192];
                    while sock.read(&mut sink).await? > 0 {}
                    return Ok(());
                } else if upper.starts_with("IDENTIFY_SYSTEM") {
                    let cols = [
                        ("systemid", "7000000000000000001"),
                        ("timeline", "1"),
                        ("xlogpos", "0/1000000"),
                        ("dbname", "fake"),
                    ];
                    sock.write_all(&one_row(&cols, "IDENTIFY_SYSTEM")).await?;
                } else if upper.starts_with("SHOW") {
                    sock.write_all(&one_row(&[("setting", "60s")], "SHOW")).await?;
                } else {
                    sock.write_all(&one_row(&[("?column?", "1")], "SELECT 1")).await?;
                }
            }
            b'X' => return Ok(()),
            _ => {}
        }
    }
}
