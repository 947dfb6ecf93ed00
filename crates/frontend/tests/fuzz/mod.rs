//! Support of the parser fuzz test (`tests/fuzz_parser.rs`): seeds, strategies and properties.

pub mod checks;
pub mod seeds;
pub mod strategy;
