//! The floor under tern's request path: what a tokio server that does nothing but read a
//! size-prefixed request and write a size-prefixed answer costs per request, with the
//! shape of `tern bench produce --connections 1000 --batch 1` (1,000 connections on
//! loopback, one request in flight each, a 180-byte request and a 60-byte answer, about
//! an unbatched Produce and its response). No decoding, no log, no fsync: the CPU it
//! needs per request is the part of tern's figure that the kernel's loopback TCP path and
//! tokio's scheduling take on this machine, whatever a broker does.
//!
//!   cargo bench --bench request_floor                 # one task per connection
//!   cargo bench --bench request_floor -- --tasks 2    # a reader and a writer task, as tern
//!   cargo bench --bench request_floor -- --requests 600000 --connections 500
//!
//! The server runs in a child process (this executable with `--serve`), so its CPU time
//! is read from `/proc/<pid>` apart from the client's, by `tern bench`'s own probe.
//! Figures are in docs/BENCHMARKS.md ("The floor").

use std::error::Error;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use tern::cli::bench::probe::{spent, Probe};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const REQUEST_BYTES: usize = 180;
const RESPONSE_BYTES: usize = 60;
/// Largest request the server accepts (its requests are all REQUEST_BYTES).
const MAX_FRAME: usize = 64 * 1024;

struct Options {
    serve: bool,
    tasks: u32,
    connections: usize,
    requests: usize,
}

fn options() -> Result<Options> {
    let mut options = Options {
        serve: false,
        tasks: 1,
        connections: 1000,
        requests: 300_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<usize> {
            let text = args.next().ok_or(format!("{name} needs a value"))?;
            Ok(text.parse().map_err(|e| format!("{name} {text}: {e}"))?)
        };
        match arg.as_str() {
            "--serve" => options.serve = true,
            "--tasks" => {
                options.tasks = match value("--tasks")? {
                    1 => 1,
                    2 => 2,
                    _ => return Err("--tasks is 1 or 2".into()),
                }
            }
            "--connections" => options.connections = value("--connections")?.max(1),
            "--requests" => options.requests = value("--requests")?,
            // `cargo bench` passes --bench to harness-less benches.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    let options = options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if options.serve {
        runtime.block_on(serve(options.tasks))
    } else {
        runtime.block_on(measure(&options))
    }
}

/// The server: prints its port, then answers every connection until killed.
async fn serve(tasks: u32) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        if tasks == 1 {
            tokio::spawn(one_task(stream));
        } else {
            tokio::spawn(two_tasks(stream));
        }
    }
}

async fn read_frame<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    buffer: &mut [u8],
) -> Option<usize> {
    let size = reader.read_u32().await.ok()? as usize;
    if size > buffer.len() {
        return None;
    }
    reader.read_exact(&mut buffer[..size]).await.ok()?;
    Some(size)
}

/// Reads, answers, flushes: one task per connection.
async fn one_task(stream: TcpStream) {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(8 * 1024, reader);
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut buffer = vec![0u8; MAX_FRAME];
    while read_frame(&mut reader, &mut buffer).await.is_some() {
        let written = async {
            writer.write_u32(RESPONSE_BYTES as u32).await?;
            writer.write_all(&buffer[..RESPONSE_BYTES]).await?;
            writer.flush().await
        };
        if written.await.is_err() {
            return;
        }
    }
}

/// tern's shape: a reader task hands each answer to a writer task through a channel.
async fn two_tasks(stream: TcpStream) {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(8 * 1024, reader);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(5);
    let writer = tokio::spawn(async move {
        let mut writer = BufWriter::with_capacity(64 * 1024, writer);
        while let Some(answer) = rx.recv().await {
            let written = async {
                writer.write_u32(answer.len() as u32).await?;
                writer.write_all(&answer).await?;
                if rx.is_empty() {
                    writer.flush().await?;
                }
                Ok::<(), std::io::Error>(())
            };
            if written.await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0u8; MAX_FRAME];
    while read_frame(&mut reader, &mut buffer).await.is_some() {
        if tx.send(buffer[..RESPONSE_BYTES].to_vec()).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Kills the server when the measurement ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure(options: &Options) -> Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", "--tasks", &options.tasks.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let server = Server(child);
    let mut port = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut port)?;
    let address = format!("127.0.0.1:{}", port.trim());
    let probe = Probe {
        pid: Some(server.0.id()),
        http: None,
    };

    let per_connection = (options.requests / options.connections).max(1);
    let mut streams = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let stream = TcpStream::connect(&address).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    // Warm up (allocator, scheduler) before the measured run.
    let streams = run(streams, per_connection / 10 + 1).await?;
    let before = probe.read().await?;
    let started = Instant::now();
    run(streams, per_connection).await?;
    let elapsed = started.elapsed();
    let server = spent(&before, &probe.read().await?);
    let requests = (per_connection * options.connections) as f64;
    println!(
        "{} connections, {} requests, {} task(s) per connection: {:.0} requests/s; \
         server {:.2} µs CPU and {:.2} context switches per request",
        options.connections,
        requests,
        options.tasks,
        requests / elapsed.as_secs_f64(),
        server.cpu_seconds.unwrap_or(f64::NAN) / requests * 1e6,
        server.context_switches.unwrap_or(0) as f64 / requests,
    );
    Ok(())
}

/// Each connection sends `count` requests, one at a time, waiting for each answer.
async fn run(streams: Vec<TcpStream>, count: usize) -> Result<Vec<TcpStream>> {
    let mut clients = Vec::with_capacity(streams.len());
    for mut stream in streams {
        clients.push(tokio::spawn(async move {
            let mut request = vec![7u8; 4 + REQUEST_BYTES];
            request[..4].copy_from_slice(&(REQUEST_BYTES as u32).to_be_bytes());
            let mut answer = vec![0u8; 4 + RESPONSE_BYTES];
            for _ in 0..count {
                stream.write_all(&request).await?;
                tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut answer))
                    .await
                    .map_err(|_| std::io::Error::other("no answer within 30 s"))??;
            }
            Ok::<TcpStream, std::io::Error>(stream)
        }));
    }
    let mut streams = Vec::with_capacity(clients.len());
    for client in clients {
        streams.push(client.await??);
    }
    Ok(streams)
}
