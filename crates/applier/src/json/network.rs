//! Network addresses as PostgreSQL prints them (`inet`, `cidr`, `macaddr`, `macaddr8`).

use std::fmt::Write as _;
use std::net::IpAddr;

use postgres_protocol::types::inet_from_sql;

/// `inet` (the netmask only when not the whole address) or `cidr` (always the netmask).
pub(super) fn inet(b: &[u8], cidr: bool) -> Option<String> {
    let inet = inet_from_sql(b).ok()?;
    let bits = inet.netmask();
    let (mut s, full) = match inet.addr() {
        IpAddr::V4(a) => (a.to_string(), 32),
        IpAddr::V6(a) => (ipv6(&a.octets()), 128),
    };
    if cidr || bits != full {
        let _ = write!(s, "/{bits}");
    }
    Some(s)
}

/// PostgreSQL's IPv6 text (`inet_net_ntop`): the longest run of two or more zero words as
/// `::` (the first when tied), and the last 32 bits dotted after six zero words (`::1.2.3.4`)
/// or five and `ffff` (`::ffff:1.2.3.4`).
fn ipv6(a: &[u8; 16]) -> String {
    let words: Vec<u16> = a.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    // Runs of zero words as (first word, length).
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, w) in words.iter().enumerate() {
        if *w == 0 {
            let run = cur.map_or((i, 1), |(start, len)| (start, len + 1));
            cur = Some(run);
            if best.is_none_or(|(_, len)| run.1 > len) {
                best = Some(run);
            }
        } else {
            cur = None;
        }
    }
    let best = best.filter(|&(_, len)| len >= 2);
    let mut s = String::with_capacity(40);
    for (i, w) in words.iter().enumerate() {
        if let Some((start, len)) = best
            && (start..start + len).contains(&i)
        {
            if i == start {
                s.push(':');
            }
            continue;
        }
        if i != 0 {
            s.push(':');
        }
        let dotted = i == 6
            && best.is_some_and(|(start, len)| {
                start == 0 && (len == 6 || (len == 5 && words[5] == 0xffff))
            });
        if dotted {
            let _ = write!(s, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            return s;
        }
        let _ = write!(s, "{w:x}");
    }
    if best.is_some_and(|(start, len)| start + len == 8) {
        s.push(':');
    }
    s
}

/// `macaddr` (6 bytes) or `macaddr8` (8): lowercase hex pairs joined by colons.
pub(super) fn mac(b: &[u8], len: usize) -> Option<String> {
    (b.len() == len).then(|| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> String {
        ipv6(&s.parse::<std::net::Ipv6Addr>().unwrap().octets())
    }

    #[test]
    fn ipv6_as_postgres_prints_it() {
        assert_eq!(v6("::"), "::");
        assert_eq!(v6("::1"), "::1");
        assert_eq!(v6("1::"), "1::");
        assert_eq!(v6("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(v6("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(v6("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
        assert_eq!(v6("1:0:0:2:3:0:0:4"), "1::2:3:0:0:4");
        assert_eq!(v6("1:0:2:3:4:5:6:7"), "1:0:2:3:4:5:6:7");
        assert_eq!(v6("fe80::abcd:1"), "fe80::abcd:1");
    }
}
