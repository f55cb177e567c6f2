//! `meshd`: the mesh node binary.
//!
//! - `meshd demo`: a real local mesh of six nodes over WebRTC on loopback (see [`demo`]).
//! - `meshd run`: a long-running node (see [`daemon`]); settings from `meshd.toml`, `MESHD_*`
//!   variables and flags (see [`config`]).
//! - `meshd send`, `inbox`, `blob put/get`, `invite create/accept`, `recovery ...`, `status`,
//!   `stop`: ask the node running on the same data directory (see [`control`]).
//! - `meshd id`, `meshd pin`: offline helpers.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a program that reports what it does

mod client;
mod config;
mod control;
mod daemon;
mod demo;
mod http;
mod metrics;
mod pin;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// A node of mesh: serverless, end-to-end encrypted messaging over a Kademlia DHT, gossip and
/// WebRTC.
#[derive(Debug, Parser)]
#[command(name = "meshd", version, about, long_about = None)]
struct Cli {
    /// The node's data directory: identity, store, control file.
    #[arg(
        long,
        global = true,
        env = "MESHD_DATA_DIR",
        default_value = "meshd-data"
    )]
    data_dir: PathBuf,
    /// Config file (TOML); default: `DATA_DIR/meshd.toml` if it exists.
    #[arg(long, global = true, env = "MESHD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a local mesh of six nodes over WebRTC on loopback, shows the mission, reports.
    Demo,
    /// Runs a long-lived node: signaling endpoint, /health, /metrics, control API.
    Run(config::RunArgs),
    /// Prints this node's peer id (making the identity if there is none).
    Id,
    /// Shows the running node's state.
    Status,
    /// Sends an end-to-end encrypted message.
    Send {
        /// The recipient's peer id.
        to: String,
        /// The text.
        text: String,
        /// Seconds to wait for the delivery receipt (0: do not wait).
        #[arg(long, default_value_t = 10)]
        wait: u64,
        /// Find the recipient in the DHT and link to it first (otherwise: a link if one is
        /// open, the mesh if not).
        #[arg(long)]
        connect: bool,
    },
    /// Lists messages received.
    Inbox {
        /// Only those after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// Keep waiting for new ones.
        #[arg(long)]
        follow: bool,
    },
    /// Finds a peer through the DHT (or at an address) and links to it.
    Connect {
        /// Its peer id.
        peer: String,
        /// Its signaling URL, if known.
        #[arg(long)]
        address: Option<String>,
    },
    /// Stores and looks up signed records in the DHT.
    #[command(subcommand)]
    Dht(DhtCommand),
    /// Stores and fetches files.
    #[command(subcommand)]
    Blob(BlobCommand),
    /// Sends files end-to-end encrypted, and fetches received ones.
    #[command(subcommand)]
    File(FileCommand),
    /// Makes and accepts signed invites.
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Social recovery of identity keys.
    #[command(subcommand)]
    Recovery(RecoveryCommand),
    /// Prints the certificate pin of certificate or key files (PEM or DER).
    Pin {
        /// Certificates, public keys or private keys.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Stops the running node gracefully.
    Stop,
}

#[derive(Debug, Subcommand)]
enum DhtCommand {
    /// Signs NAME = VALUE with this node's key and stores it at the closest nodes.
    Put {
        /// The record's name (the key is this node's id and the name).
        name: String,
        /// Its value.
        value: String,
        /// Hours it lives (1 to 168, default 24).
        #[arg(long)]
        ttl_hours: Option<u64>,
    },
    /// Looks up AUTHOR's record NAME and prints its value (after verifying its signature).
    Get {
        /// The author's peer id.
        author: String,
        /// The record's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum FileCommand {
    /// Encrypts FILE to PEER, keeps it here for a week, and sends PEER an offer to fetch it.
    Send {
        /// The recipient's peer id.
        to: String,
        /// The file.
        file: PathBuf,
    },
    /// Fetches the file offered in inbox message ID from its sender, decrypts it and writes
    /// it to OUTPUT.
    Get {
        /// The message id (64 hex digits) the inbox shows.
        id: String,
        /// The file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BlobCommand {
    /// Stores a file (pinned, held by this node) and prints its id.
    Put {
        /// The file.
        file: PathBuf,
    },
    /// Writes a blob to a file, fetching it from peers if it is not stored here.
    Get {
        /// The blob id (64 hex digits).
        id: String,
        /// Peers that have it.
        #[arg(long, value_delimiter = ',')]
        from: Vec<String>,
        /// The file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum InviteCommand {
    /// Prints a signed invite link to this node.
    Create {
        /// A display name to put in it.
        #[arg(long)]
        name: Option<String>,
        /// Hours it stays valid (default 7 days).
        #[arg(long)]
        ttl_hours: Option<u64>,
    },
    /// Verifies an invite link and links to its inviter.
    Accept {
        /// The `mesh://invite/...` link.
        link: String,
    },
}

#[derive(Debug, Subcommand)]
enum RecoveryCommand {
    /// Shares this node's identity key among guardians, any THRESHOLD of whom recover it.
    Setup {
        /// How many guardians it takes.
        #[arg(long)]
        threshold: u8,
        /// The guardians' peer ids.
        #[arg(required = true)]
        guardians: Vec<String>,
    },
    /// Agrees to keep a share of OWNER's key (guardians do this first).
    Guard {
        /// The owner's peer id.
        owner: String,
        /// Stop guarding instead.
        #[arg(long)]
        stop: bool,
    },
    /// Lists requests waiting for this guardian's approval, with their codes.
    Requests,
    /// Approves a request (after comparing its code with the owner's new device).
    Approve {
        /// The request id.
        request: String,
    },
    /// Denies a request.
    Deny {
        /// The request id.
        request: String,
    },
    /// On a new device: asks OWNER's guardians for the key.
    Start {
        /// The lost identity's peer id.
        #[arg(long)]
        owner: String,
        /// Its guardians' peer ids.
        #[arg(required = true)]
        guardians: Vec<String>,
        /// Seconds to wait for the key (0: do not wait).
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Shows recovery events and recovered keys.
    Status,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn init_logging(filter: &str) -> Result<(), Error> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("log filter {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|e| e.to_string().into())
}

async fn demo_command() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    match tokio::time::timeout(Duration::from_secs(180), demo::demo(dir.path())).await {
        Ok(r) => r.map_err(|e| e.to_string().into()),
        Err(_) => Err("the demo did not finish within 180 s".into()),
    }
}

fn pin_command(files: &[PathBuf]) -> Result<(), Error> {
    let mut failed = false;
    for f in files {
        match pin::pin_of_file(f) {
            Ok((kind, pin)) => println!(
                "{}  {} ({kind})",
                mesh_platform::pinning::pin_to_string(&pin),
                f.display()
            ),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        Err("some files gave no pin".into())
    } else {
        Ok(())
    }
}

async fn dispatch(cli: Cli) -> Result<(), Error> {
    let data_dir = cli.data_dir;
    let control = || client::Control::open(&data_dir);
    match cli.command {
        Command::Demo => demo_command().await,
        Command::Run(args) => {
            let file = config::read_file(&data_dir, cli.config.as_deref())?;
            let settings = config::merge(data_dir.clone(), file, args)?;
            init_logging(&settings.log)?;
            daemon::run(settings).await
        }
        Command::Id => {
            std::fs::create_dir_all(&data_dir)?;
            let passphrase = std::env::var("MESHD_PASSPHRASE").ok();
            let (id, _) = daemon::load_or_create_identity(
                &data_dir.join(daemon::IDENTITY_FILE),
                passphrase.as_deref(),
            )?;
            println!("{}", id.peer_id());
            println!("fingerprint {}", id.peer_id().fingerprint());
            Ok(())
        }
        Command::Status => client::status(&control()?).await,
        Command::Send {
            to,
            text,
            wait,
            connect,
        } => client::send(&control()?, &to, &text, wait, connect).await,
        Command::Inbox { after, follow } => client::inbox(&control()?, after, follow).await,
        Command::Connect { peer, address } => {
            client::connect(&control()?, &peer, address.as_deref()).await
        }
        Command::Dht(DhtCommand::Put {
            name,
            value,
            ttl_hours,
        }) => client::dht_put(&control()?, &name, &value, ttl_hours).await,
        Command::Dht(DhtCommand::Get { author, name }) => {
            client::dht_get(&control()?, &author, &name).await
        }
        Command::Blob(BlobCommand::Put { file }) => client::blob_put(&control()?, &file).await,
        Command::Blob(BlobCommand::Get { id, from, output }) => {
            client::blob_get(&control()?, &id, &from, &output).await
        }
        Command::File(f) => match f {
            FileCommand::Send { to, file } => client::file_send(&control()?, &to, &file).await,
            FileCommand::Get { id, output } => client::file_get(&control()?, &id, &output).await,
        },
        Command::Invite(InviteCommand::Create { name, ttl_hours }) => {
            client::invite_create(&control()?, name.as_deref(), ttl_hours).await
        }
        Command::Invite(InviteCommand::Accept { link }) => {
            client::invite_accept(&control()?, &link).await
        }
        Command::Recovery(r) => {
            let c = control()?;
            match r {
                RecoveryCommand::Setup {
                    threshold,
                    guardians,
                } => client::recovery_setup(&c, threshold, &guardians).await,
                RecoveryCommand::Guard { owner, stop } => {
                    client::recovery_guard(&c, &owner, stop).await
                }
                RecoveryCommand::Requests => client::recovery_requests(&c).await,
                RecoveryCommand::Approve { request } => {
                    client::recovery_decide(&c, &request, true).await
                }
                RecoveryCommand::Deny { request } => {
                    client::recovery_decide(&c, &request, false).await
                }
                RecoveryCommand::Start {
                    owner,
                    guardians,
                    wait,
                } => client::recovery_start(&c, &owner, &guardians, wait).await,
                RecoveryCommand::Status => client::recovery_status(&c).await,
            }
        }
        Command::Pin { files } => pin_command(&files),
        Command::Stop => client::stop(&control()?).await,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
