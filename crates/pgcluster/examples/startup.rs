//! Measures cluster creation: the first cluster of a process (initdb into the template, copy,
//! start) and further ones (copy + start), plus stop/start and a crash restart.
//!
//! `cargo run --release -p pgcluster --example startup [N]`
use std::time::{Duration, Instant};

use pgcluster::{ClusterBuilder, StopMode};

fn main() -> Result<(), pgcluster::Error> {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let t = Instant::now();
    let first = ClusterBuilder::new().start()?;
    println!("first cluster (initdb + copy + start): {:?}", t.elapsed());

    let mut copies = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let c = ClusterBuilder::new().start()?;
        copies.push(t.elapsed());
        drop(c);
    }
    report("further cluster (copy + start)", &copies);

    let mut restarts = Vec::new();
    let mut crashes = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        first.stop(StopMode::Fast)?;
        first.start()?;
        restarts.push(t.elapsed());
        let t = Instant::now();
        first.kill9()?;
        first.start()?;
        crashes.push(t.elapsed());
    }
    report("stop(Fast) + start", &restarts);
    report("kill9 + start (crash recovery)", &crashes);
    Ok(())
}

fn report(what: &str, samples: &[Duration]) {
    let mut s = samples.to_vec();
    s.sort();
    println!(
        "{what}: n={} min {:?} median {:?} max {:?}",
        s.len(),
        s[0],
        s[s.len() / 2],
        s[s.len() - 1]
    );
}
