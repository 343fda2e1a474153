//! `hearth node ...`: join tokens and what admins do to joined machines.

use crate::http::Client;
use crate::output::{self, Format};
use anyhow::Result;
use clap::Subcommand;
use hearth_model::api;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Join tokens: `create` prints the exact `hearth agent` command (admins)
    Token {
        #[command(subcommand)]
        cmd: TokenCommand,
    },
    /// Place no new work on a node; running work finishes (admins)
    Drain { name: String },
    /// Let a drained node take work again (admins)
    Undrain { name: String },
    /// Accept what a node offers now, as it is: a held node (offering more than it was
    /// approved for, or than its machine measures) takes work again (admins)
    Approve { name: String },
    /// Remove a node: its certificate is revoked now, its connection cut (admins)
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print the command that joins a machine with it
    Create {
        /// Lifetime, e.g. 1h, 30m, 7d
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many machines may join with it (default: one)
        #[arg(long, default_value_t = 1)]
        uses: u64,
        /// The most a node joining with it may offer; more is held until `hearth node approve`
        #[arg(long)]
        max_cores: Option<u32>,
        /// Likewise for memory, e.g. 64g
        #[arg(long)]
        max_memory: Option<String>,
    },
    /// List join tokens (never their secrets)
    List {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Revoke a join token: no machine can join with it any more
    Revoke { id: u64 },
}

pub fn run(client: &Client, cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Token {
            cmd:
                TokenCommand::Create {
                    ttl,
                    uses,
                    max_cores,
                    max_memory,
                },
        } => {
            let ttl_seconds = Some(crate::parse_ttl(&ttl)?);
            let max_memory_mib = max_memory
                .map(|m| {
                    hearth_model::parse_mib(&m)
                        .map_err(|e| anyhow::anyhow!("--max-memory {m}: {e}"))
                })
                .transpose()?;
            let created: api::CreatedNodeToken = client.send(
                "POST",
                "/node-tokens",
                &api::CreateNodeToken {
                    ttl_seconds,
                    uses: Some(uses),
                    max_cores,
                    max_memory_mib,
                },
            )?;
            let machines = if uses == 1 {
                "one machine".to_string()
            } else {
                format!("{uses} machines")
            };
            eprintln!(
                "Join token {} (shown only this once; expires in {ttl}; for {machines}). On the machine to join, as root:",
                created.token.id
            );
            println!("{}", created.command);
        }
        NodeCommand::Token {
            cmd: TokenCommand::List { output },
        } => {
            let list: Vec<api::NodeToken> = client.get("/node-tokens")?;
            output::print_node_tokens(&list, output)?;
        }
        NodeCommand::Token {
            cmd: TokenCommand::Revoke { id },
        } => {
            client.delete(&format!("/node-tokens/{id}"))?;
            eprintln!("Revoked join token {id}.");
        }
        NodeCommand::Approve { name } => {
            // What it offers now, as `hearth nodes` shows it: the server approves exactly
            // that, or says it changed.
            let nodes: Vec<api::NodeInfo> = client.get("/nodes")?;
            let node = nodes
                .iter()
                .find(|n| n.name == name)
                .ok_or_else(|| anyhow::anyhow!("no node named {name}: see `hearth nodes`"))?;
            let offer = api::ApproveNode {
                cores: node.cores,
                memory_mib: node.memory_mib,
            };
            client.call(
                client.request("POST", &format!("/nodes/{name}/approve")),
                Some(&serde_json::to_value(&offer)?),
            )?;
            eprintln!(
                "Node {name}'s offer ({} cores, {}) is approved: it takes work.",
                offer.cores,
                hearth_model::format_mib(offer.memory_mib)
            );
        }
        NodeCommand::Drain { name } => {
            client.call(
                client.request("POST", &format!("/nodes/{name}/drain")),
                None,
            )?;
            eprintln!("Node {name} is draining: nothing new is placed there.");
        }
        NodeCommand::Undrain { name } => {
            client.call(
                client.request("POST", &format!("/nodes/{name}/undrain")),
                None,
            )?;
            eprintln!("Node {name} takes work again.");
        }
        NodeCommand::Remove { name } => {
            client.delete(&format!("/nodes/{name}"))?;
            eprintln!("Removed node {name}: its certificate is revoked and it was disconnected.");
        }
    }
    Ok(())
}
