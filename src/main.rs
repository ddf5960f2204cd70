//! The `vaultd` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

const USAGE: &str = "usage: vaultd dev | vaultd --version";

fn main() -> ExitCode {
    if let Err(e) = vaultd::hardening::harden_process() {
        eprintln!("vaultd: refusing to start: {e}");
        return ExitCode::FAILURE;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--version"] => {
            println!("vaultd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["dev"] => {
            eprintln!(
                "vaultd dev: the custody core (key hierarchy, seal lifecycle, store) is built, \
                 but the daemon does not serve a network API yet, so there is nothing to run. \
                 `cargo nextest run --workspace --locked` exercises what exists."
            );
            ExitCode::from(2)
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(64)
        }
    }
}
