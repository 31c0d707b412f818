//! The `tern` binary: `serve` runs the broker; the other commands are Kafka clients.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use tern::cli;
use tern::config::{Config, DEFAULT_TOML};

#[derive(Parser)]
#[command(name = "tern", version, about = "An event broker for edge gateways")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (embedded default configuration unless --config is given).
    Serve {
        /// TOML configuration file; keys not in it take their defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Verify every stored batch offline (CRC, structure, records); exits 1 on damage.
    Check {
        /// The data directory (`broker.data_dir`); tern need not run.
        data_dir: PathBuf,
    },
    /// Create certificates for mirroring: a CA, a hub, edges (PEM files).
    Certs {
        #[command(subcommand)]
        command: cli::mirror::CertsCommand,
    },
    /// SASL users of the Kafka listeners (SCRAM credentials in <data_dir>/users.json).
    Users {
        /// The data directory (default: `broker.data_dir` of --config).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// The configuration whose `broker.data_dir` holds the users.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: cli::users::UsersCommand,
    },
    /// ACLs of the Kafka listeners (<data_dir>/acls.json), with kafka-acls' flags.
    Acls {
        /// The data directory (default: `broker.data_dir` of --config).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// The configuration whose `broker.data_dir` holds the ACLs.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: cli::acls::AclsCommand,
    },
    /// Mirror links: `[mirror]` on an edge, `[hub]` on a hub.
    Mirror {
        #[command(subcommand)]
        command: cli::mirror::MirrorCommand,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create, list, describe, alter and delete topics.
    Topics {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::TopicsCommand,
    },
    /// List, describe (with lag), reset offsets of and delete consumer groups.
    Groups {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::GroupsCommand,
    },
    /// Delete records before an offset (like kafka-delete-records).
    Records {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::RecordsCommand,
    },
    /// Produce stdin lines as records (like kafka-console-producer).
    Produce {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(flatten)]
        args: cli::ProduceArgs,
    },
    /// Print records of a topic (like kafka-console-consumer).
    Consume {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(flatten)]
        args: cli::ConsumeArgs,
    },
    /// Load tests: produce and consume throughput and latency (like kafka-producer-perf-test
    /// and kafka-consumer-perf-test), against tern or any Kafka broker.
    Bench {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::bench::BenchCommand,
    },
    /// Earliest / latest / by-time offsets per partition (like GetOffsetShell).
    Offsets {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(flatten)]
        args: cli::OffsetsArgs,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the documented default configuration.
    Default,
    /// Check a configuration file and exit.
    Check { path: PathBuf },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TERN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn shutdown_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}

/// Runs a client command on a small single-threaded runtime.
fn run_client<F: std::future::Future<Output = Result<(), tern::client::ClientError>>>(
    future: F,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(future)?;
    Ok(())
}

fn main() {
    tern::alloc::tune_for_a_gateway();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Topics {
            connection,
            command,
        } => run_client(cli::topics(&connection, command)),
        Command::Groups {
            connection,
            command,
        } => run_client(cli::groups(&connection, command)),
        Command::Records {
            connection,
            command,
        } => run_client(cli::records(&connection, command)),
        Command::Produce { connection, args } => run_client(cli::produce(&connection, args)),
        Command::Consume { connection, args } => run_client(cli::consume(&connection, args)),
        Command::Offsets { connection, args } => run_client(cli::offsets(&connection, args)),
        Command::Bench {
            connection,
            command,
        } => Ok(cli::bench::run(&connection.bootstrap, command)?),
        Command::Certs { command } => cli::mirror::certs(command),
        Command::Users {
            data_dir,
            config,
            command,
        } => cli::users::run(cli::users::data_dir(data_dir, config)?, command),
        Command::Acls {
            data_dir,
            config,
            command,
        } => cli::acls::run(&cli::users::data_dir(data_dir, config)?, command),
        Command::Mirror { command } => match command {
            cli::mirror::MirrorCommand::Status { http, json } => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                runtime.block_on(cli::mirror::status(&http, json))
            }
        },
        Command::Serve { config } => {
            init_tracing();
            tern::kafka::decode_guard::install_quiet_panic_hook();
            let config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::embedded_default()?,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let token = CancellationToken::new();
                tokio::spawn(shutdown_signal(token.clone()));
                tern::server::run(config, token).await
            })?;
            Ok(())
        }
        Command::Check { data_dir } => {
            let report = tern::log::check::check_data_dir(&data_dir)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", data_dir.display()))?;
            for f in &report.findings {
                println!(
                    "DAMAGED {} bytes {}..{}: {}",
                    f.segment.display(),
                    f.from_byte,
                    f.to_byte,
                    f.reason
                );
            }
            println!(
                "{} segments, {} bytes, {} intact batches, {} damaged ranges",
                report.segments,
                report.bytes,
                report.batches,
                report.findings.len()
            );
            if !report.findings.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Config { command } => match command {
            ConfigCommand::Default => {
                print!("{DEFAULT_TOML}");
                Ok(())
            }
            ConfigCommand::Check { path } => {
                Config::load(&path)?;
                println!("{}: ok", path.display());
                Ok(())
            }
        },
    }
}
