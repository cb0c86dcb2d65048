//! The `lrp` command line: `lrp [CONFIG]` serves, `lrp check [CONFIG]` validates,
//! `lrp healthcheck [CONFIG]` asks a running lrp whether it is healthy.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lrp::config::Config;
use lrp::server::{Server, listen};
use tokio::signal::unix::{Signal, SignalKind, signal};
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
    /// Exit 0 if the lrp this configuration describes answers 200 on {prefix}/healthz, else 1
    /// (for container health checks: reads the same configuration as the server).
    Healthcheck {
        #[arg(env = "LRP_CONFIG")]
        config: Option<PathBuf>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s")]
        timeout: humantime::Duration,
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
        Some(Command::Healthcheck { config, timeout }) => healthcheck(config.as_deref(), *timeout),
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
/// Request lines take a shorter way in the same layout: see `lrp::access_log`.
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
    lrp::access_log::init(match format {
        LogFormat::Text => lrp::access_log::Style::Text,
        LogFormat::Json => lrp::access_log::Style::Json,
    });
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

#[tokio::main(flavor = "current_thread")]
async fn healthcheck(path: Option<&Path>, timeout: std::time::Duration) -> anyhow::Result<()> {
    let config = load(path)?;
    lrp::healthcheck::check(&config, timeout)
        .await
        .map_err(|e| anyhow::anyhow!("unhealthy: {e}"))
}

/// Binds the sockets, then serves on one single-threaded runtime per core: this thread's runs
/// the first worker, and signals and reloads besides.
fn run(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load(path)?;
    if path.is_none() {
        tracing::warn!("no configuration file given: serving internal routes only");
    }
    match lrp::open_files::raise_to_hard_limit() {
        Ok((before, after)) if after > before => {
            tracing::debug!(before, after, "open-file limit raised to the hard limit");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let workers = listen::worker_count();
    let http = listen::bind(&config.host, config.port, workers)
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    let lambda_api = match config.lambda_api_port {
        Some(port) => listen::bind(&config.host, port, workers)
            .with_context(|| format!("cannot listen on {}:{port}", config.host))?,
        None => Vec::new(),
    };
    let served = lrp::server::worker_runtime()?.block_on(serve(path, config, http, lambda_api));
    lrp::access_log::flush();
    served
}

async fn serve(
    path: Option<&Path>,
    config: Config,
    http: Vec<std::net::TcpListener>,
    lambda_api: Vec<std::net::TcpListener>,
) -> anyhow::Result<()> {
    // Registered before serving: SIGHUP's default action would end the process.
    let hangups = signal(SignalKind::hangup())?;
    if let Some(address) = http
        .first()
        .map(std::net::TcpListener::local_addr)
        .transpose()?
    {
        let workers = http.len();
        tracing::info!(%address, rules = config.rules.len(), workers, "listening on {address}");
    }
    if let Some(address) = lambda_api
        .first()
        .map(std::net::TcpListener::local_addr)
        .transpose()?
    {
        tracing::info!(%address, "Lambda Invoke API listening on {address}");
    }
    let server = Server::new(&config).await;
    tokio::spawn(reload_on_hangup(
        hangups,
        server.clone(),
        path.map(Path::to_path_buf),
        config,
    ));
    server.serve(http, lambda_api, shutdown_signal()?).await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP re-reads the file and swaps in its rules if it is valid; an invalid file is logged
/// and the running rules stay. The listen address cannot change without a restart.
async fn reload_on_hangup(
    mut hangups: Signal,
    server: Server,
    path: Option<PathBuf>,
    mut current: Config,
) {
    while hangups.recv().await.is_some() {
        let Some(path) = &path else {
            tracing::warn!("SIGHUP: there is no configuration file to reload");
            continue;
        };
        match Config::from_file(path) {
            Err(e) => tracing::error!("SIGHUP: {e}; keeping the running rules"),
            Ok(config) => {
                if (&config.host, config.port) != (&current.host, current.port) {
                    tracing::warn!(
                        "SIGHUP: the listen address {}:{} takes a restart; still listening on {}:{}",
                        config.host,
                        config.port,
                        current.host,
                        current.port
                    );
                }
                server.reload(&config).await;
                tracing::info!(
                    rules = config.rules.len(),
                    "SIGHUP: reloaded {}",
                    path.display()
                );
                current = config;
            }
        }
    }
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
