//! wtgate-bench: placeholder until the bench issue lands.
fn main() {}
