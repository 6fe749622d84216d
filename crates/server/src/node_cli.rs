//! `satchel node info | channels | onchain address|balance|send`: the operator API of a running
//! server, authenticated with the secret `serve` wrote to `<data_dir>/.operator_cookie` (so only
//! a user who can read the data dir can use it); and `connect | open-channel | close-channel`.

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::app::OPERATOR_COOKIE_FILE;
use crate::config::Config;

/// What to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeQuery {
    /// `GET /operator/v1/node`.
    Info,
    /// `GET /operator/v1/channels`.
    Channels,
    /// `POST /operator/v1/onchain/address`.
    OnchainAddress,
    /// `GET /operator/v1/onchain/balance`.
    OnchainBalance,
    /// `POST /operator/v1/onchain/send`.
    OnchainSend {
        /// Where to.
        address: String,
        /// How much, in sats (the fee comes on top).
        sats: u64,
    },
    /// `POST /operator/v1/peers/connect`.
    Connect {
        /// The peer's pubkey.
        pubkey: String,
        /// `host:port`.
        address: String,
    },
    /// `POST /operator/v1/channels/open`.
    OpenChannel {
        /// The (connected) peer's pubkey.
        pubkey: String,
        /// Capacity in sats.
        sats: u64,
        /// Given to the peer at open, msat.
        push_msat: u64,
    },
    /// `POST /operator/v1/channels/close`.
    CloseChannel {
        /// As `node channels --json` shows it.
        channel_id: String,
        /// Broadcast our commitment instead of closing cooperatively.
        force: bool,
    },
}

#[derive(Debug, Deserialize)]
struct OnchainAddress {
    address: String,
}

#[derive(Debug, Deserialize)]
struct OnchainBalance {
    confirmed_sats: u64,
    unconfirmed_sats: u64,
    immature_sats: u64,
}

#[derive(Debug, Deserialize)]
struct OnchainSent {
    txid: String,
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
    let path = match &query {
        NodeQuery::Info => "/operator/v1/node",
        NodeQuery::Channels => "/operator/v1/channels",
        NodeQuery::OnchainAddress => "/operator/v1/onchain/address",
        NodeQuery::OnchainBalance => "/operator/v1/onchain/balance",
        NodeQuery::OnchainSend { .. } => "/operator/v1/onchain/send",
        NodeQuery::Connect { .. } => "/operator/v1/peers/connect",
        NodeQuery::OpenChannel { .. } => "/operator/v1/channels/open",
        NodeQuery::CloseChannel { .. } => "/operator/v1/channels/close",
    };
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let client = reqwest::Client::new();
    let req = match &query {
        NodeQuery::Info | NodeQuery::Channels | NodeQuery::OnchainBalance => client.get(&url),
        NodeQuery::OnchainAddress => client.post(&url).json(&serde_json::json!({})),
        NodeQuery::OnchainSend { address, sats } => client
            .post(&url)
            .json(&serde_json::json!({ "address": address, "sats": sats })),
        NodeQuery::Connect { pubkey, address } => client
            .post(&url)
            .json(&serde_json::json!({ "pubkey": pubkey, "address": address })),
        NodeQuery::OpenChannel {
            pubkey,
            sats,
            push_msat,
        } => client
            .post(&url)
            .json(&serde_json::json!({ "pubkey": pubkey, "sats": sats, "push_msat": push_msat })),
        NodeQuery::CloseChannel { channel_id, force } => client
            .post(&url)
            .json(&serde_json::json!({ "channel_id": channel_id, "force": force })),
    };
    let resp = req
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
        NodeQuery::OnchainAddress => {
            let a: OnchainAddress = serde_json::from_str(&text).context("the server's answer")?;
            println!("{}", a.address);
        }
        NodeQuery::OnchainBalance => {
            let b: OnchainBalance = serde_json::from_str(&text).context("the server's answer")?;
            println!("confirmed_sats:   {}", b.confirmed_sats);
            println!("unconfirmed_sats: {}", b.unconfirmed_sats);
            println!("immature_sats:    {}", b.immature_sats);
        }
        NodeQuery::OnchainSend { .. } => {
            let t: OnchainSent = serde_json::from_str(&text).context("the server's answer")?;
            println!("sent; txid {}", t.txid);
        }
        NodeQuery::Connect { pubkey, .. } => println!("connected to {pubkey}"),
        NodeQuery::OpenChannel { pubkey, sats, .. } => {
            println!("opening a {sats} sat channel to {pubkey} (see `satchel node channels`)")
        }
        NodeQuery::CloseChannel { channel_id, force } => {
            let how = if force { "force-closing" } else { "closing" };
            println!("{how} channel {channel_id}")
        }
    }
    Ok(())
}
