//! `satchel node info | channels`: the operator API of a running server, authenticated with
//! the secret `serve` wrote to `<data_dir>/.operator_cookie` (so only a user who can read the
//! data dir can use it). Connecting peers, opening and closing channels and on-chain commands
//! are not here: they need the node on a real chain, which is not wired yet.

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::app::OPERATOR_COOKIE_FILE;
use crate::config::Config;

/// What to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeQuery {
    /// `GET /operator/v1/node`.
    Info,
    /// `GET /operator/v1/channels`.
    Channels,
}

#[derive(Debug, Deserialize)]
struct Node {
    backend: String,
    network: String,
    pubkey: String,
    alias: String,
    block_height: Option<u32>,
    synced: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Channel {
    peer: String,
    capacity_sats: u64,
    local_balance_msat: u64,
    remote_balance_msat: u64,
    state: String,
    confirmations: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Channels {
    channels: Vec<Channel>,
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |x| x.to_string())
}

/// Asks the server and prints the answer (its JSON with `json`, else a table).
pub async fn run(
    query: NodeQuery,
    server: Option<String>,
    json: bool,
    cfg: &Config,
) -> anyhow::Result<()> {
    let base = server.unwrap_or_else(|| format!("http://{}", cfg.listen));
    let cookie_path = cfg.data_dir.join(OPERATOR_COOKIE_FILE);
    let secret = std::fs::read_to_string(&cookie_path).with_context(|| {
        format!(
            "reading the operator cookie {} (is `satchel serve` running with this --data-dir?)",
            cookie_path.display()
        )
    })?;
    let path = match query {
        NodeQuery::Info => "/operator/v1/node",
        NodeQuery::Channels => "/operator/v1/channels",
    };
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(secret.trim())
        .send()
        .await
        .with_context(|| format!("contacting {url} (is `satchel serve` running?)"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("server answered {status}: {text}");
    }
    if json {
        println!("{text}");
        return Ok(());
    }
    match query {
        NodeQuery::Info => {
            let n: Node = serde_json::from_str(&text).context("the server's answer")?;
            println!("backend:      {}", n.backend);
            println!("network:      {}", n.network);
            println!("pubkey:       {}", n.pubkey);
            println!("alias:        {}", n.alias);
            println!("block height: {}", opt(n.block_height));
            println!("synced:       {}", opt(n.synced));
        }
        NodeQuery::Channels => {
            let c: Channels = serde_json::from_str(&text).context("the server's answer")?;
            println!(
                "{:<66} {:>13} {:>16} {:>16} {:<9} {:>6}",
                "peer", "capacity_sats", "local_msat", "remote_msat", "state", "confs"
            );
            for ch in &c.channels {
                println!(
                    "{:<66} {:>13} {:>16} {:>16} {:<9} {:>6}",
                    ch.peer,
                    ch.capacity_sats,
                    ch.local_balance_msat,
                    ch.remote_balance_msat,
                    ch.state,
                    opt(ch.confirmations)
                );
            }
            println!("{} channel(s)", c.channels.len());
        }
    }
    Ok(())
}
