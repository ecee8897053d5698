//! `ringkv-jepsen check`: reads a history file, checks it, prints the JSON verdict on stdout
//! and exits 0 (linearizable), 1 (not), 2 (unknown: time or memory limit) or 3 (bad input).

use std::path::PathBuf;
use std::time::Duration;

use super::{CheckOptions, ModelKind, Validity, Verdict, check_history, html};
use crate::history::{Format, ops};

/// Arguments of `ringkv-jepsen check` (design §8).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The sequential model to check against.
    #[arg(long, value_enum, default_value_t = ModelKind::Register)]
    pub model: ModelKind,
    /// The file's format (auto: decided from its first line).
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Give up and answer "unknown" (exit 2) after this many seconds.
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// Memory the search may use, in MiB, before answering "unknown".
    #[arg(long, default_value_t = 1024)]
    pub memory_limit_mb: u64,
    /// Also write a self-contained HTML timeline of the history here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// The history file.
    pub file: PathBuf,
}

fn bad_input(message: String) -> u8 {
    let json = serde_json::json!({"valid": "unknown", "error": message});
    println!("{json}");
    eprintln!("ringkv-jepsen check: {message}");
    3
}

/// Runs the check and returns the process exit code.
pub fn run(args: CheckArgs) -> u8 {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return bad_input(format!("cannot read {}: {e}", args.file.display())),
    };
    let history = match ops::parse(&text, args.format) {
        Ok(h) => h,
        Err(e) => return bad_input(format!("{}: {e}", args.file.display())),
    };
    let time_limit = match args.time_limit {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return bad_input(format!(
                "--time-limit must be a positive number of seconds, got {s}"
            ));
        }
        None => None,
    };
    let opts = CheckOptions {
        model: args.model,
        time_limit,
        memo_bytes_max: args.memory_limit_mb.saturating_mul(1 << 20),
        threads: 0,
    };
    let verdict: Verdict = match check_history(&history, &opts) {
        Ok(v) => v,
        Err(e) => return bad_input(format!("{}: {e}", args.file.display())),
    };
    match serde_json::to_string_pretty(&verdict) {
        Ok(s) => println!("{s}"),
        Err(e) => return bad_input(format!("cannot encode verdict: {e}")),
    }
    if let Some(path) = &args.html
        && let Err(e) = std::fs::write(path, html::render(&history, &verdict))
    {
        eprintln!("ringkv-jepsen check: cannot write {}: {e}", path.display());
        return 3;
    }
    if verdict.valid == Validity::Invalid {
        eprintln!("{}", verdict.reason);
    }
    verdict.exit_code()
}
