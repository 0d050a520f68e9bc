//! Placeholder; replaced by the apply benchmark.
fn main() {}
