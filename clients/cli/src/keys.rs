//! `lextral keys`: create, list and revoke API keys in a keys file. The file
//! keeps hashes only; a new key is printed once, as the last line of stdout.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use lextral_common::auth::{parse_expires_in, KeysFile, Scope};

/// What to do with the keys file.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a key, record its hash, print the key (once).
    Create(CreateArgs),
    /// List the keys: name, scope, created, expires, state.
    List(FileArg),
    /// Revoke a key by name; servers refuse it within a second or two.
    Revoke(RevokeArgs),
}

/// The file every subcommand works on.
#[derive(Args)]
pub struct FileArg {
    /// Keys file (created by the first `create`).
    #[arg(long = "keys-file", env = "LEXTRAL_KEYS_FILE")]
    keys_file: PathBuf,
}

/// `keys create`.
#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    file: FileArg,
    /// classify (Classify, Labels, Info), ingest (also Ingest, Upsert) or
    /// admin (everything, Delete and Reload included).
    #[arg(long, value_parser = |v: &str| v.parse::<Scope>())]
    scope: Scope,
    /// A unique name for listing and revoking; default `key-N`.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime, e.g. 90d, 12h; default: no expiry.
    #[arg(long = "expires-in", value_parser = parse_expires_in)]
    expires_in: Option<Duration>,
}

/// `keys revoke`.
#[derive(Args)]
pub struct RevokeArgs {
    /// The key's name.
    name: String,
    #[command(flatten)]
    file: FileArg,
}

/// Runs a keys subcommand.
pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match command {
        KeysCommand::Create(args) => {
            let path = &args.file.keys_file;
            let mut file = KeysFile::read_or_default(path)?;
            let name = args
                .name
                .unwrap_or_else(|| format!("key-{}", file.keys.len() + 1));
            let key = file
                .create(&name, args.scope, args.expires_in, now)
                .map_err(anyhow::Error::msg)?;
            file.write(path)?;
            eprintln!(
                "created key {name:?} (scope {}) in {}; it is shown once, below",
                args.scope,
                path.display()
            );
            println!("{}", key.expose());
        }
        KeysCommand::List(args) => {
            let file = KeysFile::read(&args.keys_file)?;
            println!(
                "{:<24} {:<9} {:<21} {:<21} STATE",
                "NAME", "SCOPE", "CREATED", "EXPIRES"
            );
            for key in &file.keys {
                let state = match (&key.revoked, key.is_expired(now)) {
                    (Some(at), _) => format!("revoked {at}"),
                    (None, true) => "expired".to_owned(),
                    (None, false) => "active".to_owned(),
                };
                println!(
                    "{:<24} {:<9} {:<21} {:<21} {state}",
                    key.name,
                    key.scope,
                    key.created,
                    key.expires.as_deref().unwrap_or("never"),
                );
            }
        }
        KeysCommand::Revoke(args) => {
            let path = &args.file.keys_file;
            let mut file = KeysFile::read(path)?;
            file.revoke(&args.name, now).map_err(anyhow::Error::msg)?;
            file.write(path)?;
            eprintln!("revoked key {:?} in {}", args.name, path.display());
        }
    }
    Ok(())
}
