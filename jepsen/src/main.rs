//! `ringkv-jepsen`: `check` judges a history for linearizability; `test` runs the fault
//! harness against real `ringkv-server` processes. Exit codes for both (design §8): 0 valid,
//! 1 invalid, 2 unknown, 3 bad input or harness failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ringkv-jepsen",
    version,
    about = "RingKV linearizability checker and fault harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a recorded history for linearizability and print a JSON verdict.
    Check(ringkv_jepsen::checker::cli::CheckArgs),
    /// Run a fault-injection test against a real cluster and check what it recorded.
    Test(ringkv_jepsen::harness::cli::TestArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are successes; anything else is bad input (exit 3).
            return if e.use_stderr() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let code = match cli.command {
        Command::Check(args) => ringkv_jepsen::checker::cli::run(args),
        Command::Test(args) => ringkv_jepsen::harness::cli::run(args),
    };
    ExitCode::from(code)
}
