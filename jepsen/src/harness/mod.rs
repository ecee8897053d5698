//! The Jepsen-style fault harness behind `ringkv-jepsen test`. Placeholder until it lands.

pub mod cli;
