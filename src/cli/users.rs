//! `tern users`: SASL users of the Kafka listeners, stored as SCRAM credentials in
//! `<data_dir>/users.json` (a running tern picks changes up at the next login).

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::config::Config;
use crate::users::{self, Mechanism};

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Add a user or change its password (read from the first line of stdin).
    Add {
        name: String,
        /// SCRAM-SHA-256 and/or SCRAM-SHA-512 (repeatable; default both). PLAIN logins
        /// are checked against these.
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
    },
    /// Remove a user.
    Delete { name: String },
    /// List users and their mechanisms.
    List,
}

/// Where the users file lives: `--data-dir`, else `broker.data_dir` of `--config`, else
/// the embedded default's.
pub fn data_dir(data_dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = data_dir {
        return Ok(dir);
    }
    let config = match config {
        Some(path) => Config::load(&path)?,
        None => Config::embedded_default()?,
    };
    Ok(config.broker.data_dir)
}

pub fn run(dir: PathBuf, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add {
            name,
            mechanisms,
            iterations,
        } => {
            let mechanisms: Vec<Mechanism> = if mechanisms.is_empty() {
                vec![Mechanism::Sha256, Mechanism::Sha512]
            } else {
                mechanisms
                    .iter()
                    .map(|m| {
                        Mechanism::parse(m)
                            .with_context(|| format!("{m:?}: use SCRAM-SHA-256 or SCRAM-SHA-512"))
                    })
                    .collect::<Result<_, _>>()?
            };
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("no password on stdin (e.g. `echo 's3cret' | tern users add alice`)");
            }
            users::add(&dir, &name, password, &mechanisms, iterations)?;
            let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
            println!(
                "user {name}: {} credentials stored in {}",
                names.join(", "),
                users::users_path(&dir).display()
            );
        }
        UsersCommand::Delete { name } => {
            if !users::delete(&dir, &name)? {
                bail!("no user {name:?}");
            }
            println!("user {name} deleted");
        }
        UsersCommand::List => {
            for (name, mechanisms) in users::list(&dir)? {
                let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
                println!("{name}\t{}", names.join(","));
            }
        }
    }
    Ok(())
}
