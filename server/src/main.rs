//! `ringkv-server`: run one node, `dev` to run a local cluster, `restore` to seed a node's
//! data directory from a backup, or `certs` to generate a cluster's TLS certificates.

use clap::{Parser, Subcommand};
use ringkv_server::config::NodeArgs;
use ringkv_server::dev::{self, DevArgs};
use ringkv_server::log_limit::RepeatLimitLayer;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: under write load glibc's allocator (free-list
/// consolidation, arena locks) took about 15% of the server's CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "ringkv-server",
    version,
    about = "A RingKV node",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local cluster as child processes on 127.0.0.1 and wait for Ctrl-C.
    Dev(DevArgs),
    /// Seed a new node's data directory from a backup (`ringkv backup save`), then exit.
    Restore(ringkv_server::restore::RestoreArgs),
    /// Generate a CA, a certificate per node and an admin client certificate (PEM files).
    Certs(ringkv_server::tls::certs::CertsArgs),
}

fn init_logging(format: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,openraft=warn,openraft::core::heartbeat=error,sled=warn,h2=warn,tower=warn",
        )
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Repeated warnings are limited per callsite (see `log_limit`), before any output layer.
    let limit = RepeatLimitLayer::default();
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(limit.clone());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    if let Err(e) = limit.spawn_summaries() {
        tracing::warn!(error = %e, "cannot start the thread that summarizes repeated warnings");
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let cmd = Cli::command();
    let argv = match ringkv_server::config_file::expand(&cmd, std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringkv-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = match cmd
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // A bad configuration stops the server before anything starts: exit 2, one line.
    let cfg = match &cli.command {
        Some(_) => None,
        None => match cli.node.validate() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("ringkv-server: {e}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringkv-server: cannot start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Dev(args)) => {
                init_logging("text");
                dev::run(args, shutdown_signal()).await.map(|()| 0)
            }
            Some(Command::Certs(args)) => match ringkv_server::tls::certs::run(&args) {
                Ok(()) => Ok(0),
                Err(e @ ringkv_server::tls::certs::CertsError::Refused(_)) => {
                    eprintln!("ringkv-server: {e}");
                    Ok(2)
                }
                Err(e) => Err(e.into()),
            },
            Some(Command::Restore(args)) => {
                init_logging("text");
                match ringkv_server::restore::run(args).await {
                    Ok(()) => Ok(0),
                    // A bad backup or bad arguments: input rejected, exit 2.
                    Err(e @ ringkv_server::restore::RestoreError::Refused(_)) => {
                        eprintln!("ringkv-server: {e}");
                        Ok(2)
                    }
                    Err(ringkv_server::restore::RestoreError::Failed(e)) => Err(e),
                }
            }
            None => {
                let Some(cfg) = cfg else {
                    return Err(anyhow::anyhow!("no configuration"));
                };
                init_logging(&cli.node.log_format);
                let listener = tokio::net::TcpListener::bind(&cfg.listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
                let peer_listener = std::net::TcpListener::bind(&cfg.peer_listen).map_err(|e| {
                    anyhow::anyhow!("cannot listen on peer address {}: {e}", cfg.peer_listen)
                })?;
                ringkv_server::node::run(cfg, listener, peer_listener, shutdown_signal())
                    .await
                    .map(|()| 0)
            }
        }
    });
    // Blocking threads (sled, the log writer) get a bounded time to finish; a node stopping
    // because storage failed must not hang on them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) if e.is::<ringkv_server::storage::health::StorageFailed>() => {
            eprintln!("ringkv-server: {e:#}");
            std::process::ExitCode::from(ringkv_server::storage::health::StorageFailed::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("ringkv-server: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap validates argument definitions only when a command is built; check them all here.
    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
