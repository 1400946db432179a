//! Decode benchmark (filled in later).

fn main() {}
