//! `vaultctl`: the admin CLI for vaultd. See `vaultctl --help`; exit codes are listed
//! there and in README.md.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod connect;
mod custodians;
mod error;
mod input;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use serde_json::json;

use crate::cli::{Cli, Command, LeaseCommand, RootKeyCommand};
use crate::commands::{
    apikey, audit, breakglass, ceremony, lease, operator, pki, policy, secret, snapshot, transit,
};
use crate::connect::Via;
use crate::error::CliError;
use crate::output::Output;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output {
        json: cli.global.json,
    };
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli, out)),
        Err(e) => Err(CliError::from(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error, out);
            ExitCode::from(error.exit as u8)
        }
    }
}

fn report(error: &CliError, out: Output) {
    if out.json {
        let body = json!({ "error": { "kind": error.kind(), "message": error.message, "hint": error.hint } });
        eprintln!("{body}");
        return;
    }
    eprintln!("vaultctl: {}", error.message);
    if let Some(hint) = &error.hint {
        eprintln!("  {hint}");
    }
}

async fn run(cli: Cli, out: Output) -> Result<(), CliError> {
    let global = &cli.global;
    let connect = |via| connect::client(global, via, None);
    match &cli.command {
        Command::Status => operator::status(&connect(Via::SocketOrTls)?, out).await,
        Command::Init(args) => operator::init(&connect(Via::SocketOrTls)?, args, out).await,
        Command::Unseal(args) => operator::unseal(&connect(Via::SocketOrTls)?, args, out).await,
        Command::Seal(args) => operator::seal(&connect(Via::SocketOrTls)?, args, out).await,
        Command::Reload => operator::reload(&connect(Via::Tls)?, out).await,
        Command::Rekey(args) => operator::rekey(&connect(Via::Tls)?, args, out).await,
        Command::RekeyVerify(args) => operator::verify_rekey(&connect(Via::Tls)?, args, out).await,
        Command::RootKey(RootKeyCommand::Rotate(args)) => {
            operator::rotate_root_key(&connect(Via::Tls)?, args, out).await
        }
        Command::Ceremony(command) => {
            let via = match command {
                ceremony::CeremonyCommand::Start(_) => Via::Tls,
                _ => Via::SocketOrTls,
            };
            ceremony::run(&connect(via)?, command, out).await
        }
        Command::Secret(command) => secret::run(&connect(Via::Tls)?, command, out).await,
        Command::Tenant(command) => secret::tenant(&connect(Via::Tls)?, command, out).await,
        Command::BreakGlass(command) => breakglass::run(&connect(Via::Tls)?, command, out).await,
        Command::Lease(command) => {
            let ttl = match command {
                LeaseCommand::Get { ttl, .. } => Some(input::duration(ttl)?),
                _ => None,
            };
            lease::run(&connect::client(global, Via::Tls, ttl)?, command, out).await
        }
        Command::ApiKey(command) => {
            apikey::refuse_key_as_argument(global)?;
            apikey::run(&connect(Via::Tls)?, command, out).await
        }
        Command::Transit(args) => transit::run(&connect(Via::Tls)?, args).await,
        Command::Policy(command) => {
            let client = match policy::needs_daemon(command) {
                true => Some(connect(Via::Tls)?),
                false => None,
            };
            policy::run(client.as_ref(), command, out).await
        }
        Command::Audit(cli::AuditCommand::Verify { files, public_key }) => {
            audit::verify(files, public_key.as_deref(), out)
        }
        Command::Audit(command) => audit::search(&connect(Via::Tls)?, command).await,
        Command::Pki(command) => pki::run(command, out),
        Command::Snapshot(command) => snapshot::run(&connect(Via::Tls)?, command, out).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "vaultctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(Cli::command(), dir)?;
            out.emit(
                || format!("wrote man pages to {}", dir.display()),
                || json!({ "dir": dir }),
            );
            Ok(())
        }
    }
}
