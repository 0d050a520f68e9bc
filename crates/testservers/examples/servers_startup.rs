//! Measures server starts: the first MariaDB server of a process (`mariadb-install-db` into
//! the template, copy, start) and further ones (copy + start), restarts and crash restarts;
//! a NATS server, its restarts, and a three-server JetStream cluster.
//!
//! `cargo run --release -p testservers --example servers_startup [N]`
use std::time::{Duration, Instant};

use testservers::{MariaDbBuilder, NatsCluster, NatsServer, Server};

fn main() -> Result<(), testservers::Error> {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let t = Instant::now();
    let first = MariaDbBuilder::new().start()?;
    println!("first MariaDB (mariadb-install-db + copy + start): {:?}", t.elapsed());
    report("further MariaDB (copy + start)", n, || MariaDbBuilder::new().start().map(drop))?;
    report("MariaDB stop + start", n, || first.restart())?;
    report("MariaDB kill9 + start (crash recovery)", n, || {
        first.kill9()?;
        first.start()
    })?;

    report("NATS server (JetStream)", n, || NatsServer::new().map(drop))?;
    let nats = NatsServer::new()?;
    report("NATS stop + start", n, || nats.restart())?;
    report("NATS kill9 + start", n, || {
        nats.kill9()?;
        nats.start()
    })?;
    report("NATS three-server cluster (until every server is healthy)", n.min(3), || {
        NatsCluster::new().map(drop)
    })?;
    Ok(())
}

fn report(
    what: &str,
    n: u32,
    mut f: impl FnMut() -> Result<(), testservers::Error>,
) -> Result<(), testservers::Error> {
    let mut samples: Vec<Duration> = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "{what}: n={} min {:?} median {:?} max {:?}",
        samples.len(),
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    Ok(())
}
