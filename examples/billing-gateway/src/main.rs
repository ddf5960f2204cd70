//! `billing-gateway --config FILE`: the platform's API gateway.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use billing_gateway::Gateway;
use billing_gateway::config::Config;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let mut args = std::env::args().skip(1);
    let config = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--config"), Some(path), None) => path,
        _ => {
            eprintln!("usage: billing-gateway --config FILE");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let config = match Config::load(std::path::Path::new(&config)) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("invalid configuration: {e}");
                return ExitCode::from(78);
            }
        };
        let started = match Gateway::new(&config) {
            Ok(gateway) => gateway.bind(config.listen).await,
            Err(e) => Err(e),
        };
        match started {
            Ok((addr, serving)) => {
                tracing::info!("serving on http://{addr}");
                tokio::select! {
                    _ = serving => ExitCode::FAILURE,
                    _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                tracing::error!("refusing to start: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
