//! The `vaultd` binary.
//!
//! Exit codes: 0 success; 1 the daemon failed to start or stopped on an error;
//! 2 bad usage; 78 the configuration is invalid (`check-config`, `serve`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Registry, reload};
use vaultd::config::{Config, LogLevel};
use vaultd::daemon::{Daemon, LogLevelHook, Running};
use vaultd::dev::DevOptions;

mod snapshot_command;

/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// vaultd: a hardened secrets vault and credential broker.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The daemon log's format on stderr: `text`, or `json` (one object per line, for
    /// a log pipeline). Never holds a secret either way.
    #[arg(long, global = true, value_name = "FORMAT", env = "VAULTD_LOG_FORMAT",
          value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves with a configuration file. Starts sealed; custodians unseal it.
    Serve {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "FILE", env = "VAULTD_CONFIG")]
        config: PathBuf,
        /// The least severe log lines written (error, warn, info, debug, trace),
        /// instead of the configuration's `log_level` at start. A reload applies
        /// `log_level` when it changes in the file.
        #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
        log_level: Option<LogLevel>,
    },
    /// Validates a configuration file and the files it names, without serving.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
    /// Runs a throw-away development daemon: generated PKI, initialised, unsealed,
    /// example policies and a demo secret. Never for real secrets.
    Dev {
        /// An empty directory for the dev files (default: a new temporary one,
        /// deleted on exit).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Allow --dir outside the system temporary directory.
        #[arg(long)]
        allow_persistent_dir: bool,
        /// gRPC (mutual TLS) listen address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8200")]
        grpc: SocketAddr,
        /// Health and metrics listen address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8201")]
        http: SocketAddr,
    },
    /// Snapshots, offline: verify one, or restore one into a stopped or new node (take
    /// one with `vaultctl snapshot save`).
    #[command(subcommand)]
    Snapshot(snapshot_command::SnapshotCommand),
}

fn parse_level(text: &str) -> Result<LogLevel, String> {
    LogLevel::parse(text).ok_or_else(|| format!("{text:?}: use error, warn, info, debug or trace"))
}

/// Changes the level of the daemon's log.
type LevelHandle = reload::Handle<LevelFilter, Registry>;

fn level_hook(handle: LevelHandle) -> LogLevelHook {
    Box::new(move |level: LogLevel| handle.reload(level.filter()).map_err(|e| e.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon's log: stderr, for journald or whatever runs it, at a level the
    // configuration (and a reload) sets, as text or as JSON lines.
    let (level, handle) = reload::Layer::new(LevelFilter::INFO);
    let json = cli.log_format == "json";
    tracing_subscriber::registry()
        .with(level)
        .with((!json).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false)
        }))
        .with(json.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_current_span(false)
        }))
        .init();
    if let Err(e) = vaultd::hardening::harden_process() {
        tracing::error!("refusing to start: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config, log_level } => runtime.block_on(serve(config, log_level, handle)),
        Command::CheckConfig { config } => check_config(&config),
        Command::Dev {
            dir,
            allow_persistent_dir,
            grpc,
            http,
        } => runtime.block_on(dev(DevOptions {
            dir,
            allow_persistent: allow_persistent_dir,
            grpc,
            http,
        })),
        Command::Snapshot(command) => command.run(),
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        tracing::error!("invalid configuration: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let problems = vaultd::daemon::check(&config);
    for problem in &problems {
        eprintln!("vaultd: {}: {}", problem.key, problem.message);
    }
    let ok = problems.is_empty();
    if ok {
        println!("{}: ok", path.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

async fn serve(path: PathBuf, log_level: Option<LogLevel>, handle: LevelHandle) -> ExitCode {
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let level = log_level.unwrap_or(config.log_level);
    if let Err(e) = handle.reload(level.filter()) {
        tracing::warn!("the log level could not be set: {e}");
    }
    let running = match Daemon::open(config) {
        Ok(daemon) => {
            daemon
                .reload_from(path)
                .on_log_level(level_hook(handle))
                .serve()
                .await
        }
        Err(e) => Err(e),
    };
    match running {
        Ok(running) => {
            run_until_signalled(running, |running| {
                tracing::info!(
                    "serving gRPC (mutual TLS) on {} and health/metrics on http://{}",
                    running.grpc_addr,
                    running.http_addr
                );
            })
            .await
        }
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dev(options: DevOptions) -> ExitCode {
    let dev = match vaultd::dev::start(options).await {
        Ok(dev) => dev,
        Err(e) => {
            tracing::error!("vaultd dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let banner = dev.banner;
    let code = run_until_signalled(dev.running, |_| println!("{banner}")).await;
    if dev.temporary {
        let _ = std::fs::remove_dir_all(&dev.dir);
    }
    code
}

/// Reloads on SIGHUP; shuts down gracefully on SIGTERM or SIGINT. `ready` announces
/// the daemon once the signal handlers are in place, so a signal sent on that
/// announcement is never taken by the default action.
async fn run_until_signalled(running: Running, ready: impl FnOnce(&Running)) -> ExitCode {
    let signals = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) = signals else {
        tracing::error!("cannot install signal handlers; stopping");
        let _ = running.shutdown().await;
        return ExitCode::FAILURE;
    };
    ready(&running);
    loop {
        tokio::select! {
            // The reload logs and audits its own outcome.
            _ = hangup.recv() => drop(running.reload().await),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stopping");
    match running.shutdown().await.audit_failure {
        None => ExitCode::SUCCESS,
        Some(failure) => {
            // The daemon was refusing every audited request: its supervisor must know.
            tracing::error!("stopped after the audit log stopped vaultd serving: {failure}");
            ExitCode::FAILURE
        }
    }
}
