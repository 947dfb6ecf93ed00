//! The rbuild command-line interface.

fn main() {}
