//! The client side of the `tern` binary: commands that speak the Kafka protocol to tern or
//! to any Kafka cluster (`--bootstrap-server`, default 127.0.0.1:9092).

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod delete_records;
pub mod groups;
pub mod http;
pub mod mirror;
pub mod produce;

pub mod acls;
pub mod topics;
pub mod users;

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::client::ClientError;
use cluster::Cluster;

#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Broker to bootstrap from (host:port).
    #[arg(
        long = "bootstrap-server",
        short = 'b',
        env = "TERN_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
}

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Topic config, key=value (repeatable), e.g. --config retention.ms=86400000
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    /// List topic names.
    List,
    /// Show partitions, leaders and effective configs (and, for compacted topics, the
    /// cleaner's figures from the HTTP port).
    Describe {
        name: String,
        /// The tern's HTTP port (`http.listen`), for the cleaner's figures.
        #[arg(long, default_value = "127.0.0.1:9644")]
        http: String,
    },
    /// Add partitions and/or change configs.
    Alter {
        name: String,
        /// New (larger) partition count.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a topic config, key=value (repeatable).
        #[arg(long = "config")]
        configs: Vec<String>,
        /// Remove a topic config override (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// List consumer groups.
    List,
    /// Members, committed offsets, log ends and lag per partition.
    Describe { group: String },
    /// Move a stopped group's committed offsets (dry run unless --execute).
    ResetOffsets {
        group: String,
        #[arg(long, short)]
        topic: String,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// Milliseconds since the epoch.
        #[arg(long, group = "to")]
        to_datetime: Option<i64>,
        #[arg(long, group = "to", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group that has no members, with its committed offsets.
    Delete { group: String },
}

#[derive(Subcommand, Debug)]
pub enum RecordsCommand {
    /// Delete records before an offset (moves the log start offset).
    Delete {
        #[arg(long, short)]
        topic: String,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
        /// First offset to keep; -1 deletes everything up to the end.
        #[arg(long, allow_hyphen_values = true)]
        before: i64,
    },
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to (created on first use if the broker auto-creates topics).
    #[arg(long, short)]
    pub topic: String,
    /// Split each line into key and value at the first occurrence of this separator.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// all (or -1), 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Records per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Send a partial batch after this many milliseconds without a new line.
    #[arg(long, default_value_t = 10)]
    pub linger_ms: u64,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long, short)]
    pub topic: String,
    /// Start at the earliest offset (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (use with --partition).
    #[arg(long)]
    pub offset: Option<i64>,
    #[arg(long)]
    pub partition: Option<i32>,
    /// Exit after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit after this many milliseconds without a record.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[arg(long)]
    pub print_key: bool,
    #[arg(long)]
    pub print_headers: bool,
    #[arg(long)]
    pub print_offset: bool,
    /// Separator between printed fields.
    #[arg(long, default_value = "\t")]
    pub separator: String,
}

#[derive(Args, Debug)]
pub struct OffsetsArgs {
    #[arg(long, short)]
    pub topic: String,
    /// earliest, latest, or a timestamp in milliseconds since the epoch.
    #[arg(long, default_value = "latest")]
    pub time: String,
}

pub(crate) fn parse_acks(text: &str) -> Result<i16, ClientError> {
    match text {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        other => Err(ClientError::Kafka(format!(
            "--acks must be all, 1 or 0, not `{other}`"
        ))),
    }
}

pub async fn topics(connection: &Connection, command: TopicsCommand) -> Result<(), ClientError> {
    let mut cluster = Cluster::connect(&connection.bootstrap).await?;
    match command {
        TopicsCommand::Create {
            name,
            partitions,
            configs,
        } => {
            topics::create(
                &mut cluster,
                &name,
                partitions,
                &topics::parse_configs(&configs)?,
            )
            .await
        }
        TopicsCommand::List => topics::list(&mut cluster).await,
        TopicsCommand::Describe { name, http } => {
            let compacted = topics::describe(&mut cluster, &name).await?;
            if compacted {
                topics::print_cleaner(&http, &name).await;
            }
            Ok(())
        }
        TopicsCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => {
            topics::alter(
                &mut cluster,
                &name,
                partitions,
                &topics::parse_configs(&configs)?,
                &delete_configs,
            )
            .await
        }
        TopicsCommand::Delete { name } => topics::delete(&mut cluster, &name).await,
    }
}

pub async fn groups(connection: &Connection, command: GroupsCommand) -> Result<(), ClientError> {
    let mut cluster = Cluster::connect(&connection.bootstrap).await?;
    match command {
        GroupsCommand::List => groups::list(&mut cluster).await,
        GroupsCommand::Describe { group } => groups::describe(&mut cluster, &group).await,
        GroupsCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            shift_by,
            execute,
        } => {
            let to = match (to_earliest, to_latest, to_offset, to_datetime, shift_by) {
                (true, _, _, _, _) => groups::ResetTo::Earliest,
                (_, true, _, _, _) => groups::ResetTo::Latest,
                (_, _, Some(o), _, _) => groups::ResetTo::Offset(o),
                (_, _, _, Some(t), _) => groups::ResetTo::Datetime(t),
                (_, _, _, _, Some(n)) => groups::ResetTo::ShiftBy(n),
                _ => {
                    return Err(ClientError::Kafka(
                        "say where to: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by".to_string(),
                    ))
                }
            };
            groups::reset_offsets(&mut cluster, &group, &topic, to, execute).await
        }
        GroupsCommand::Delete { group } => groups::delete(&mut cluster, &group).await,
    }
}

pub async fn records(connection: &Connection, command: RecordsCommand) -> Result<(), ClientError> {
    let mut cluster = Cluster::connect(&connection.bootstrap).await?;
    match command {
        RecordsCommand::Delete {
            topic,
            partition,
            before,
        } => delete_records::run(&mut cluster, &topic, partition, before).await,
    }
}

pub async fn produce(connection: &Connection, args: ProduceArgs) -> Result<(), ClientError> {
    let mut cluster = Cluster::connect(&connection.bootstrap).await?;
    let options = produce::ProduceOptions {
        topic: args.topic,
        key_separator: args.key_separator,
        partition: args.partition,
        acks: parse_acks(&args.acks)?,
        batch_size: args.batch_size.max(1),
        linger: Duration::from_millis(args.linger_ms),
    };
    let sent = produce::run(&mut cluster, options).await?;
    eprintln!("{sent} records produced");
    Ok(())
}

pub async fn consume(connection: &Connection, args: ConsumeArgs) -> Result<(), ClientError> {
    let mut cluster = Cluster::connect(&connection.bootstrap).await?;
    let start = match (args.from_beginning, args.offset) {
        (true, _) => consume::Start::Beginning,
        (false, Some(o)) => consume::Start::Offset(o),
        (false, None) => consume::Start::Latest,
    };
    let options = consume::ConsumeOptions {
        topic: args.topic,
        partition: args.partition,
        start,
        max_messages: args.max_messages,
        idle_timeout: args.timeout_ms.map(Duration::from_millis),
        print_key: args.print_key,
        print_headers: args.print_headers,
        print_offset: args.print_offset,
        separator: args.separator,
    };
    let printed = consume::run(&mut cluster, options).await?;
    eprintln!("Processed a total of {printed} messages");
    Ok(())
}

/// `tern offsets`: `topic:partition:offset` per partition, like GetOffsetShell.
pub async fn offsets(connection: &Connection, args: OffsetsArgs) -> Result<(), ClientError> {
    let mut cluster = Cluster::connect(&connection.bootstrap).await?;
    let timestamp = match args.time.as_str() {
        "latest" | "-1" => -1,
        "earliest" | "-2" => -2,
        other => other.parse::<i64>().map_err(|_| {
            ClientError::Kafka(format!(
                "--time must be earliest, latest or milliseconds, not `{other}`"
            ))
        })?,
    };
    let partitions = cluster.partitions(&args.topic)?;
    for (partition, offset) in
        consume::list_offsets(&mut cluster, &args.topic, &partitions, timestamp).await?
    {
        println!("{}:{partition}:{offset}", args.topic);
    }
    Ok(())
}
