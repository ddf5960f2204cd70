//! Transit: data on stdin, result on stdout.

use std::io::Write;

use vault_client::{Client, ExposeSecret};

use crate::cli::{TransitAction, TransitArgs};
use crate::error::CliError;

pub(crate) async fn run(client: &Client, args: &TransitArgs) -> Result<(), CliError> {
    let input = crate::input::read_stdin()?;
    let mut stdout = std::io::stdout().lock();
    match args.action {
        TransitAction::Encrypt => {
            let envelope = client
                .encrypt(&args.tenant, args.env.into(), &input)
                .await?;
            writeln!(stdout, "{}", vault_crypto::hex::encode(&envelope).as_str())?;
        }
        TransitAction::Decrypt => {
            let plaintext = client
                .decrypt(&args.tenant, args.env.into(), &envelope(&input)?)
                .await?;
            stdout.write_all(plaintext.expose_secret())?;
        }
        TransitAction::Rewrap => {
            let rewrapped = client
                .rewrap(&args.tenant, args.env.into(), &envelope(&input)?)
                .await?;
            writeln!(stdout, "{}", vault_crypto::hex::encode(&rewrapped).as_str())?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// A hex envelope read from stdin.
fn envelope(input: &[u8]) -> Result<Vec<u8>, CliError> {
    let text = std::str::from_utf8(input)
        .map_err(|_| CliError::invalid("the envelope on stdin is not hex text"))?;
    vault_crypto::hex::decode(text.trim())
        .map(|bytes| bytes.to_vec())
        .ok_or_else(|| {
            CliError::invalid(
                "the envelope on stdin is not hex (as `vaultctl transit encrypt` prints it)",
            )
        })
}
