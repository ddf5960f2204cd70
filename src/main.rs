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
use vaultd::config::Config;
use vaultd::daemon::{Daemon, Running};
use vaultd::dev::DevOptions;

/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// vaultd: a hardened secrets vault and credential broker.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
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
}

fn main() -> ExitCode {
    if let Err(e) = vaultd::hardening::harden_process() {
        eprintln!("vaultd: refusing to start: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vaultd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config } => runtime.block_on(serve(config)),
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
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("vaultd: invalid configuration: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let checks = [
        (
            "tls",
            vaultd::tls::server_config(&config.tls)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        ),
        (
            "policy.dir",
            vault_policy::PolicySet::load_dir(&config.policy_dir)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        ),
        (
            "audit.path",
            config
                .audit
                .path
                .parent()
                .filter(|p| p.as_os_str().is_empty() || p.is_dir())
                .map(|_| ())
                .ok_or_else(|| "its directory does not exist".to_owned()),
        ),
        (
            "storage.path",
            config
                .storage_path
                .parent()
                .filter(|p| p.as_os_str().is_empty() || p.is_dir())
                .map(|_| ())
                .ok_or_else(|| "its directory does not exist".to_owned()),
        ),
    ];
    let mut ok = true;
    for (key, result) in checks {
        if let Err(e) = result {
            eprintln!("vaultd: {key}: {e}");
            ok = false;
        }
    }
    if ok {
        println!("{}: ok", path.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let running = match Daemon::open(config) {
        Ok(daemon) => daemon.serve().await,
        Err(e) => Err(e),
    };
    match running {
        Ok(running) => {
            eprintln!(
                "vaultd: serving gRPC (mutual TLS) on {} and health/metrics on http://{}",
                running.grpc_addr, running.http_addr
            );
            run_until_signalled(running).await
        }
        Err(e) => {
            eprintln!("vaultd: refusing to start: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dev(options: DevOptions) -> ExitCode {
    let dev = match vaultd::dev::start(options).await {
        Ok(dev) => dev,
        Err(e) => {
            eprintln!("vaultd dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = run_until_signalled(dev.running).await;
    if dev.temporary {
        let _ = std::fs::remove_dir_all(&dev.dir);
    }
    code
}

/// Reloads on SIGHUP; shuts down gracefully on SIGTERM or SIGINT.
async fn run_until_signalled(running: Running) -> ExitCode {
    let signals = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) = signals else {
        eprintln!("vaultd: cannot install signal handlers; stopping");
        running.shutdown().await;
        return ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let report = running.reload().await;
                match report.tls {
                    Ok(()) => eprintln!("vaultd: reloaded TLS certificates, key, client CA and CRLs"),
                    Err(e) => eprintln!("vaultd: TLS reload failed, the previous files stay in force: {e}"),
                }
                match report.policies {
                    Ok((grants, denies, roles)) => eprintln!(
                        "vaultd: reloaded policies: {grants} grants, {denies} denies, {roles} roles"
                    ),
                    Err(e) => eprintln!("vaultd: policy reload failed, the previous policies stay in force: {e}"),
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    eprintln!("vaultd: stopping");
    running.shutdown().await;
    ExitCode::SUCCESS
}
