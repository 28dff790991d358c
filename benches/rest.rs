//! REST API throughput (filled in below).
fn main() {}
