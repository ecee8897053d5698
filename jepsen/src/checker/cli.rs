//! `ringkv-jepsen check` arguments and entry point.

use std::path::PathBuf;

/// Arguments of `ringkv-jepsen check` (design §8).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The sequential model to check against.
    #[arg(long, value_enum, default_value_t = super::ModelKind::Register)]
    pub model: super::ModelKind,
    /// Give up and answer "unknown" (exit 2) after this many seconds.
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// The history file.
    pub file: PathBuf,
}

/// Runs the check and returns the process exit code.
pub fn run(_args: CheckArgs) -> u8 {
    eprintln!("ringkv-jepsen check: not implemented yet");
    3
}
