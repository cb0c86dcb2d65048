//! The `lrp` command line: `lrp [CONFIG]` serves, `lrp check [CONFIG]` validates.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lrp::config::Config;
use lrp::server::{self, Proxy};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "lrp", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The configuration file (the Go tool's `lrp.yaml` works as it is). Without one, lrp
    /// serves only its internal routes.
    #[arg(env = "LRP_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text or as JSON objects; the level comes from RUST_LOG (default info).
    #[arg(long, global = true, env = "LRP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print the resolved rule table, without serving.
    Check {
        #[arg(env = "LRP_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let outcome = match cli.command {
        Some(Command::Check { config }) => check(config.as_deref()),
        None => run(cli.config.as_deref()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lrp: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One line per event on stderr, written by the thread that logs it. (A background writer
/// thread was measured with bench/run and cost more CPU per request: a wake-up per line.)
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::from_file(path)?),
        None => Ok(Config::empty()),
    }
}

fn check(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load(path)?;
    print!("{config}");
    Ok(())
}

#[tokio::main]
async fn run(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load(path)?;
    if path.is_none() {
        tracing::warn!("no configuration file given: serving internal routes only");
    }
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, rules = config.rules.len(), "listening on {address}");
    let proxy = Proxy::new(&config).await;
    server::serve(proxy, listener, shutdown_signal()?).await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or SIGINT. In a container lrp is PID 1, which has no default action for SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
        }
    })
}
