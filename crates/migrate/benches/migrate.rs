//! Placeholder until the migration benchmarks land.
fn main() {}
