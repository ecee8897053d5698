//! `ringkv-jepsen test` arguments and entry point.

/// Arguments of `ringkv-jepsen test` (design §8).
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Number of server processes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
}

/// Runs the test and returns the process exit code.
pub fn run(_args: TestArgs) -> u8 {
    eprintln!("ringkv-jepsen test: not implemented yet");
    3
}
