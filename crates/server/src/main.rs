//! `satchel`: a self-hostable, LNPay-compatible Lightning wallet API server.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use satchel::app::{StartOptions, start_with_http};
use satchel::config::{BackendKind, Config, ConfigArgs};
use satchel::devnet;
use satchel::logging::LogFormat;
use satchel::progress;
use satchel_domain::{Msat, WalletId};
use satchel_lightning::{DevnetControl, LightningBackend};
use satchel_scripted::{Completion, Script, ScriptedBackend};
use satchel_service::ServiceConfig;
use satchel_store::Store;

/// jemalloc instead of glibc malloc. Under write load glibc's allocator took about a fifth of the
/// server's CPU, much of it inside the SQLite writer's critical section: any allocation of 1 KiB
/// or more consolidates its fast bins. jemalloc cut CPU per request by 10-20%, at +3 MB RSS.
/// mimalloc was as fast but kept 180-220 MB resident. Its heaps are per thread, and tokio moves
/// work across many threads (`block_in_place` around each commit and flush). See
/// docs/benchmarks.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "satchel",
    version,
    about = "LNPay-compatible Lightning wallet API server"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the API (creates a development account on first start).
    Serve(ConfigArgs),
    /// Accounts.
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// Wallets.
    Wallet {
        #[command(subcommand)]
        cmd: WalletCmd,
    },
    /// Access keys.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Outgoing payments: list the unresolved ones, resolve one by hand.
    Payments {
        #[command(subcommand)]
        cmd: PaymentsCmd,
    },
    /// Recompute every balance from the ledger postings; exit 1 on any mismatch.
    Audit(ConfigArgs),
    /// The node of a running `satchel serve` (operator API; reads <data-dir>/.operator_cookie).
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Drive the development network of a running `satchel serve`.
    Devnet {
        #[command(subcommand)]
        cmd: DevnetCmd,
        /// Server base URL (default: http://<listen>).
        #[arg(long, global = true, env = "SATCHEL_SERVER")]
        server: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account and print its secret (sak_) and public (pak_) keys.
    Create {
        /// Account label.
        #[arg(long)]
        label: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Suspend a key (any kind): requests with it get LNPay's suspension errors. A running server
    /// notices within a minute (keys are cached for 60 s).
    Suspend {
        /// The key text (sak_…, pak_…, waka_…, …).
        key: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Lift a suspension.
    Reinstate {
        /// The key text.
        key: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum PaymentsCmd {
    /// Payments still holding a reserve (reserved, dispatched or unknown), oldest first.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Resolve a stuck payment by hand, with an audit-trail entry. Only do this once the node
    /// has been checked: `--succeeded` needs the preimage as proof; `--failed` refunds.
    Resolve {
        /// The payment (`lntx_…`).
        lntx_id: String,
        /// The node paid it.
        #[arg(long, conflicts_with = "failed", requires = "preimage")]
        succeeded: bool,
        /// The payment cannot have gone out.
        #[arg(long)]
        failed: bool,
        /// Proof of payment (hex), with --succeeded.
        #[arg(long)]
        preimage: Option<String>,
        /// Routing fee actually paid, with --succeeded.
        #[arg(long, default_value_t = 0)]
        fee_msat: u64,
        /// Why (kept in the audit trail).
        #[arg(long)]
        reason: String,
        /// Who (default: $USER).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The operator audit trail, newest first.
    Actions {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum WalletCmd {
    /// Import a wallet from LNPay (or elsewhere) keeping its id and access keys.
    Import {
        /// Owning account (`usr_…`, printed by `account create`).
        #[arg(long)]
        account: String,
        /// Original wallet id (`wal_…` or legacy `w_…`).
        #[arg(long)]
        id: String,
        /// Label.
        #[arg(long)]
        label: String,
        /// An original access key (`waka_…`, legacy `wa_…`, `wi_…`, `wr_…`); repeat for each.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Balance to carry over, in sats.
        #[arg(long, default_value_t = 0)]
        balance_sats: u64,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Network, block height, sync state, pubkey, alias.
    Info(NodeArgs),
    /// Peer, capacity, local and remote balance, state, confirmations of each channel.
    Channels(NodeArgs),
    /// The node's on-chain wallet.
    Onchain {
        #[command(subcommand)]
        cmd: OnchainCmd,
    },
    /// Connects to a peer: PUBKEY@HOST:PORT.
    Connect {
        /// `pubkey@host:port`.
        peer: String,
        #[command(flatten)]
        args: NodeArgs,
    },
    /// Opens a channel to a connected peer, funded from the node's wallet.
    OpenChannel {
        /// The peer's pubkey.
        pubkey: String,
        /// Capacity in sats.
        #[arg(long)]
        sats: u64,
        /// Given to the peer at open, in msat.
        #[arg(long, default_value_t = 0)]
        push_msat: u64,
        #[command(flatten)]
        args: NodeArgs,
    },
    /// Closes a channel (its id as `node channels --json` shows it).
    CloseChannel {
        /// The channel id.
        channel_id: String,
        /// Broadcast our latest commitment instead of closing cooperatively.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        args: NodeArgs,
    },
}

#[derive(Subcommand)]
enum OnchainCmd {
    /// A receive address never handed out before.
    Address(NodeArgs),
    /// Confirmed, unconfirmed and immature sats.
    Balance(NodeArgs),
    /// Pays ADDRESS from the wallet (fee on top) and broadcasts; prints the txid.
    Send {
        /// Where to.
        address: String,
        /// How much, in sats.
        #[arg(long)]
        sats: u64,
        #[command(flatten)]
        args: NodeArgs,
    },
}

#[derive(clap::Args)]
struct NodeArgs {
    /// Server base URL (default: http://<listen>).
    #[arg(long, env = "SATCHEL_SERVER")]
    server: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the operator cookie is: --data-dir (and --config, --listen for the default URL).
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Subcommand)]
enum DevnetCmd {
    /// Node pubkeys and peers.
    Info,
    /// An outside node creates an invoice.
    Invoice {
        /// Peer name.
        #[arg(long, default_value = "carol")]
        node: String,
        /// Amount in sats.
        #[arg(long)]
        sats: u64,
        /// Memo.
        #[arg(long)]
        memo: Option<String>,
    },
    /// An outside node pays one of our invoices.
    Pay {
        /// Peer name.
        #[arg(long, default_value = "alice")]
        node: String,
        /// BOLT11 to pay.
        payment_request: String,
        /// Amount for amountless invoices.
        #[arg(long)]
        sats: Option<u64>,
    },
    /// An outside node keysends to a pubkey.
    Keysend {
        /// Peer name.
        #[arg(long, default_value = "alice")]
        node: String,
        /// Destination pubkey.
        #[arg(long)]
        to: String,
        /// Amount in sats.
        #[arg(long)]
        sats: u64,
        /// TLV records as TYPE=VALUE.
        #[arg(long = "tlv")]
        tlv: Vec<String>,
    },
    /// Mine blocks on the devnet's chain (returns once the nodes have them).
    Mine {
        /// How many blocks (1 to 1008).
        blocks: u32,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Replace the chain's last N blocks with N+1 empty ones (their transactions go back to
    /// the mempool).
    Reorg {
        /// How many blocks to replace (1 to 1008).
        blocks: u32,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Pay sats on chain to a regtest address from the devnet's faucet.
    Fund {
        /// A regtest address (bcrt1...).
        address: String,
        /// Amount in sats.
        #[arg(long)]
        sats: u64,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
}

impl NodeCmd {
    fn split(self) -> anyhow::Result<(satchel::node_cli::NodeQuery, NodeArgs)> {
        Ok(match self {
            NodeCmd::Info(a) => (satchel::node_cli::NodeQuery::Info, a),
            NodeCmd::Channels(a) => (satchel::node_cli::NodeQuery::Channels, a),
            NodeCmd::Onchain { cmd } => match cmd {
                OnchainCmd::Address(a) => (satchel::node_cli::NodeQuery::OnchainAddress, a),
                OnchainCmd::Balance(a) => (satchel::node_cli::NodeQuery::OnchainBalance, a),
                OnchainCmd::Send {
                    address,
                    sats,
                    args,
                } => (
                    satchel::node_cli::NodeQuery::OnchainSend { address, sats },
                    args,
                ),
            },
            NodeCmd::Connect { peer, args } => {
                let Some((pubkey, address)) = peer.split_once('@') else {
                    anyhow::bail!("the peer is PUBKEY@HOST:PORT, not {peer:?}");
                };
                let (pubkey, address) = (pubkey.to_owned(), address.to_owned());
                (
                    satchel::node_cli::NodeQuery::Connect { pubkey, address },
                    args,
                )
            }
            NodeCmd::OpenChannel {
                pubkey,
                sats,
                push_msat,
                args,
            } => (
                satchel::node_cli::NodeQuery::OpenChannel {
                    pubkey,
                    sats,
                    push_msat,
                },
                args,
            ),
            NodeCmd::CloseChannel {
                channel_id,
                force,
                args,
            } => (
                satchel::node_cli::NodeQuery::CloseChannel { channel_id, force },
                args,
            ),
        })
    }
}

/// The log format the command's configuration asks for. Logging starts before the command
/// runs, so the configuration is resolved here once more; a configuration that does not
/// resolve logs in the default format, and the command then reports the error.
fn log_format(cmd: &Cmd) -> LogFormat {
    let args = match cmd {
        Cmd::Serve(a) | Cmd::Audit(a) => a,
        Cmd::Devnet { config, .. } => config,
        Cmd::Node {
            cmd:
                NodeCmd::Info(a)
                | NodeCmd::Channels(a)
                | NodeCmd::Onchain {
                    cmd: OnchainCmd::Address(a) | OnchainCmd::Balance(a),
                }
                | NodeCmd::Onchain {
                    cmd: OnchainCmd::Send { args: a, .. },
                }
                | NodeCmd::Connect { args: a, .. }
                | NodeCmd::OpenChannel { args: a, .. }
                | NodeCmd::CloseChannel { args: a, .. },
        } => &a.config,
        Cmd::Account {
            cmd: AccountCmd::Create { config, .. },
        } => config,
        Cmd::Key {
            cmd: KeyCmd::Suspend { config, .. } | KeyCmd::Reinstate { config, .. },
        } => config,
        Cmd::Payments {
            cmd:
                PaymentsCmd::List { config }
                | PaymentsCmd::Resolve { config, .. }
                | PaymentsCmd::Actions { config },
        } => config,
        Cmd::Wallet {
            cmd: WalletCmd::Import { config, .. },
        } => config,
    };
    args.resolve().map(|c| c.log_format).unwrap_or_default()
}

fn service_config(cfg: &Config) -> anyhow::Result<ServiceConfig> {
    let sats = |v: Option<u64>| -> anyhow::Result<Option<Msat>> {
        v.map(|s| Msat::from_sats(s).map_err(|e| anyhow::anyhow!("{e}")))
            .transpose()
    };
    Ok(ServiceConfig {
        payment_wait: cfg.payment_wait,
        default_keysend_wallet: cfg
            .default_keysend_wallet
            .as_deref()
            .map(WalletId::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("default_keysend_wallet: {e}"))?,
        max_receive: sats(cfg.max_receive_sats)?,
        max_send: sats(cfg.max_send_sats)?,
        min_fee_limit: Msat::from_msat(cfg.min_fee_limit_msat)
            .map_err(|e| anyhow::anyhow!("min_fee_limit_msat: {e}"))?,
        allow_private_webhook_targets: cfg.webhook_allow_private,
        lnurl_allow_private_targets: cfg.lnurl_allow_private_targets,
        webhook_max_per_account: cfg.webhook_max_per_account,
        webhook_redeliveries_per_minute: cfg.webhook_redeliveries_per_minute,
        idempotency_retention: cfg.idempotency_retention,
        public_url: cfg
            .public_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .map(satchel_service::lnurlw::PublicUrl::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("public_url {e}"))?,
        lnurlw_expiry: cfg.lnurl_withdraw_expiry,
        reserved_usernames: cfg.reserved_usernames.clone().unwrap_or_else(|| {
            satchel_service::lnurlp::DEFAULT_RESERVED_USERNAMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        }),
        backend_name: cfg.backend.name(),
        event_retention: cfg.event_retention,
        events: satchel_service::events::EventsConfig {
            max_streams: cfg.events_max_streams.0,
            max_streams_per_account: cfg.events_max_streams.1,
            ..Default::default()
        },
        ..ServiceConfig::default()
    })
}

/// The scripted node's seed lives in the data dir so its pubkey survives restarts.
fn scripted_seed(cfg: &Config) -> anyhow::Result<[u8; 32]> {
    let p = cfg.data_dir.join("scripted-node.seed");
    if let Ok(text) = std::fs::read_to_string(&p) {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed)
            .with_context(|| format!("bad seed in {}", p.display()))?;
        return Ok(seed);
    }
    let seed: [u8; 32] = rand::random();
    satchel_lightning::fs_private::write_private(&p, hex::encode(seed).as_bytes())
        .with_context(|| format!("writing {}", p.display()))?;
    Ok(seed)
}

/// The scripted node, keeping its state in `<data_dir>/scripted-node.json` like a real node
/// would, so it survives Satchel being stopped or killed. Applies `--scripted-default` and
/// `--scripted-complete-inflight`.
fn scripted_node(cfg: &Config) -> anyhow::Result<ScriptedBackend> {
    let default = cfg
        .scripted_default
        .as_deref()
        .map(str::parse::<Script>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("scripted default: {e}"))?;
    let complete = cfg
        .scripted_complete_inflight
        .as_deref()
        .map(str::parse::<Completion>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("scripted complete-inflight: {e}"))?;
    let path = cfg.data_dir.join("scripted-node.json");
    let node = ScriptedBackend::open(cfg.network, scripted_seed(cfg)?, path.clone())
        .with_context(|| format!("opening the scripted node state {}", path.display()))?;
    if let Some(s) = default {
        tracing::info!(script = ?s, "scripted node: default payment outcome");
        node.set_default_script(s);
    }
    if let Some(c) = complete {
        for hash in node.in_flight_payments() {
            tracing::info!(%hash, outcome = ?c, "scripted node: resolving a payment in flight");
            node.complete(hash, c.clone());
        }
    }
    Ok(node)
}

/// LND over REST. The macaroon may be a file (admin.macaroon) or hex; tls.cert is pinned.
async fn lnd_backend(cfg: &Config) -> anyhow::Result<satchel_lnd::LndRest> {
    let l = &cfg.lnd;
    let url = l
        .rest_url
        .clone()
        .context("backend lnd needs lnd_rest_url")?;
    let mac = l
        .macaroon
        .clone()
        .context("backend lnd needs lnd_macaroon (file path or hex)")?;
    let macaroon_hex = if std::path::Path::new(&mac).exists() {
        satchel_lnd::load_macaroon(std::path::Path::new(&mac))
            .map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        satchel_lnd::macaroon_hex(&mac).map_err(|e| anyhow::anyhow!("lnd_macaroon: {e}"))?
    };
    let cert = match &l.tls_cert {
        Some(p) => Some(satchel_lnd::load_tls_cert(p).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let lnd = satchel_lnd::LndRest::connect(satchel_lnd::LndConfig::new(
        url.clone(),
        cert,
        macaroon_hex,
        cfg.network,
    ))
    .await
    .map_err(|e| anyhow::anyhow!("connecting to LND at {url}: {e}"))?;
    tracing::info!(%url, "Lightning backend: LND (REST)");
    Ok(lnd)
}

/// Core Lightning over its JSON-RPC socket, or CLNRest with a rune.
async fn cln_backend(cfg: &Config) -> anyhow::Result<satchel_cln::ClnBackend> {
    let c = &cfg.cln;
    let conf = match (&c.rpc_path, &c.rest_url) {
        (Some(path), _) => satchel_cln::ClnConfig::socket(path.clone(), cfg.network),
        (None, Some(url)) => {
            let rune = c.rune.clone().context("CLNRest needs cln_rune")?;
            let cert_path = c
                .rest_cert
                .clone()
                .context("CLNRest needs cln_rest_cert (server.pem)")?;
            let pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("reading {}", cert_path.display()))?;
            satchel_cln::ClnConfig::rest(url.clone(), rune, pem, cfg.network)
        }
        (None, None) => {
            bail!("backend cln needs cln_rpc_path, or cln_rest_url with cln_rune and cln_rest_cert")
        }
    };
    let cln = satchel_cln::ClnBackend::connect(&conf)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to Core Lightning: {e}"))?;
    tracing::info!("Lightning backend: Core Lightning");
    Ok(cln)
}

async fn serve(args: ConfigArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let mut http = cfg.http.options()?;
    http.operator = Some(satchel::app::OperatorSettings {
        cookie_path: cfg.data_dir.join(satchel::app::OPERATOR_COOKIE_FILE),
        allow_remote: cfg.operator_allow_remote,
    });
    // Before anything opens files: each HTTP connection is a descriptor too.
    let fd_limit = satchel::listener::raise_fd_limit();
    tracing::info!(open_file_limit = ?fd_limit, "open-file limit");
    satchel_lightning::fs_private::ensure_private_dir(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    satchel::file_modes::warn_if_too_wide(
        &cfg.data_dir,
        &satchel::file_modes::database_files(&cfg.database_url),
    );
    type Backends = (
        Arc<dyn LightningBackend>,
        Option<Arc<dyn DevnetControl>>,
        Option<Arc<satchel_ldk::Devnet>>,
    );
    let (backend, devnet, ldk): Backends = match cfg.backend {
        BackendKind::Devnet => {
            if cfg.network != satchel_domain::Network::Regtest {
                bail!("the devnet backend runs on regtest only");
            }
            let dir = cfg.data_dir.join("devnet");
            let d = Arc::new(
                satchel_ldk::Devnet::start_on(
                    &dir,
                    satchel_ldk::DevnetOptions::default(),
                    match cfg.devnet_chain {
                        satchel::config::DevnetChainKind::Rpc => {
                            satchel_ldk::DevnetChain::BitcoindRpc
                        }
                        satchel::config::DevnetChainKind::Esplora => {
                            satchel_ldk::DevnetChain::Esplora
                        }
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("starting the devnet in {}: {e}", dir.display()))?,
            );
            tracing::info!(
                "Lightning backend: embedded LDK node on an in-process devnet (alice, hub, carol) following an in-process regtest chain; real Lightning payments. Drive it with `satchel devnet` (mine, reorg, fund, pay, ...)."
            );
            (d.node(), Some(d.clone() as Arc<dyn DevnetControl>), Some(d))
        }
        BackendKind::Scripted => {
            tracing::warn!(
                "Lightning backend: scripted simulation. NO REAL PAYMENTS HAPPEN; use /devnet or `satchel devnet` to move simulated money."
            );
            let s = Arc::new(scripted_node(&cfg)?);
            (s.clone(), Some(s), None)
        }
        BackendKind::Lnd => (Arc::new(lnd_backend(&cfg).await?), None, None),
        BackendKind::Cln => (Arc::new(cln_backend(&cfg).await?), None, None),
    };
    let running = start_with_http(
        StartOptions {
            database_url: cfg.database_url.clone(),
            listen: cfg.listen.clone(),
            backend,
            devnet,
            service: service_config(&cfg)?,
            webhooks: Some(satchel_api::webhooks::DispatcherConfig {
                allow_private: cfg.webhook_allow_private,
                ..Default::default()
            }),
        },
        http,
    )
    .await?;
    if let Some(d) = &ldk {
        let default_wallet = service_config(&cfg)?.default_keysend_wallet;
        d.node()
            .set_incoming_policy(Arc::new(satchel_service::incoming::KeysendPolicy::new(
                running.store.clone(),
                default_wallet,
            )));
    }
    if running.store.account_count().await? == 0 {
        let acct = satchel_service::wallets::create_account(&running.store, "development")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("Created development account {}", acct.id);
        println!("  secret key (sak): {}", acct.secret_key.expose());
        println!("  public key (pak): {}", acct.public_key.expose());
        println!("These keys are stored only as hashes and will not be shown again.");
    }
    tracing::info!(url = %running.url(), database = %redact(&cfg.database_url), "satchel serving LNPay v1 API at {}/v1", running.url());
    shutdown_signal().await;
    tracing::info!("shutting down: draining requests; pending payments resume on next start");
    running.shutdown().await;
    if let Some(d) = &ldk
        && let Err(e) = d.stop().await
    {
        tracing::error!(error = %e, "stopping the devnet");
    }
    Ok(())
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn open_store(args: &ConfigArgs) -> anyhow::Result<Store> {
    let cfg = args.resolve()?;
    if cfg.database_url.starts_with("sqlite:") {
        satchel_lightning::fs_private::ensure_private_dir(&cfg.data_dir)?;
    }
    Store::connect(&cfg.database_url)
        .await
        .context("opening database")
}

async fn payments_cmd(cmd: PaymentsCmd) -> anyhow::Result<bool> {
    match cmd {
        PaymentsCmd::List { config } => {
            let store = open_store(&config).await?;
            let live = satchel_service::operator::unresolved_payments(&store)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let now = satchel_domain::now_secs();
            println!(
                "{:<30} {:<20} {:>14} {:>12} {:<10} {:>8}  payment_hash",
                "lntx", "wallet", "amount_msat", "fee_limit", "status", "age_s"
            );
            for p in &live {
                println!(
                    "{:<30} {:<20} {:>14} {:>12} {:<10} {:>8}  {}",
                    p.id,
                    p.wallet_id
                        .as_ref()
                        .map(|w| w.to_string())
                        .unwrap_or_default(),
                    p.amount.as_msat(),
                    p.fee_limit.as_msat(),
                    p.status.map(|s| s.code()).unwrap_or("-"),
                    now - p.created_at,
                    p.payment_hash
                );
            }
            println!("{} unresolved payment(s)", live.len());
            Ok(true)
        }
        PaymentsCmd::Resolve {
            lntx_id,
            succeeded,
            failed,
            preimage,
            fee_msat,
            reason,
            operator,
            config,
        } => {
            if succeeded == failed {
                bail!("give exactly one of --succeeded or --failed");
            }
            // The same parsing and the same call as the operator API and console.
            let req = satchel_service::operator::ResolveRequest::parse(
                &lntx_id,
                if succeeded { "succeeded" } else { "failed" },
                preimage.as_deref(),
                fee_msat,
                &operator,
                &reason,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = open_store(&config).await?;
            let rec = satchel_service::operator::resolve_payment(&store, &req)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{} is now {}",
                rec.id,
                rec.status.map(|s| s.code()).unwrap_or("-")
            );
            Ok(true)
        }
        PaymentsCmd::Actions { config } => {
            let store = open_store(&config).await?;
            let actions = satchel_service::operator::operator_actions(&store, 100)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for a in actions {
                println!(
                    "{}  {:<12} {:<18} {:<30} {}  {}",
                    a.at,
                    a.operator,
                    a.action,
                    a.lntx_id.map(|l| l.to_string()).unwrap_or_default(),
                    a.reason,
                    a.details
                );
            }
            Ok(true)
        }
    }
}

async fn audit(args: ConfigArgs) -> anyhow::Result<bool> {
    let store = open_store(&args).await?;
    let bar = progress::bar(satchel_store::audit::AUDIT_STEPS, "audit");
    let r = store
        .audit_reporting(&|done, what| progress::step(&bar, done, what))
        .await;
    progress::finish(bar);
    let r = r?;
    println!(
        "audit: {} wallets, {} ledger transactions, {} postings; liabilities {} msat, in flight {} msat, unclaimed {} msat, revenue {} msat",
        r.wallets,
        r.transactions,
        r.postings,
        r.liabilities_msat,
        r.in_flight_msat,
        r.unclaimed_msat,
        r.revenue_msat
    );
    for p in &r.problems {
        println!("PROBLEM: {p}");
    }
    println!(
        "{}",
        if r.is_clean() {
            "audit clean"
        } else {
            "AUDIT FAILED"
        }
    );
    Ok(r.is_clean())
}

async fn devnet_cmd(
    cmd: DevnetCmd,
    server: Option<String>,
    config: ConfigArgs,
) -> anyhow::Result<()> {
    let base = match server {
        Some(s) => s,
        None => format!("http://{}", config.resolve()?.listen),
    };
    let http = reqwest::Client::new();
    // Commands with a one-line human answer; `--json` prints the server's JSON instead.
    let mut human: Option<fn(&serde_json::Value) -> String> = None;
    let (path, body) = match cmd {
        DevnetCmd::Info => ("/devnet/info", None),
        DevnetCmd::Mine { blocks, json } => {
            if !json {
                human = Some(|v| {
                    format!(
                        "mined {} block(s); tip {} {}",
                        v["blocks"].as_array().map_or(0, Vec::len),
                        v["tip"]["height"],
                        v["tip"]["hash"].as_str().unwrap_or("?")
                    )
                });
            }
            (
                "/devnet/mine",
                Some(serde_json::to_value(devnet::BlocksReq { blocks })?),
            )
        }
        DevnetCmd::Reorg { blocks, json } => {
            if !json {
                human = Some(|v| {
                    format!(
                        "reorganised: {} new block(s); tip {} {}",
                        v["blocks"].as_array().map_or(0, Vec::len),
                        v["tip"]["height"],
                        v["tip"]["hash"].as_str().unwrap_or("?")
                    )
                });
            }
            (
                "/devnet/reorg",
                Some(serde_json::to_value(devnet::BlocksReq { blocks })?),
            )
        }
        DevnetCmd::Fund {
            address,
            sats,
            json,
        } => {
            if !json {
                human = Some(|v| {
                    format!(
                        "sent in {} (the auto-miner confirms it shortly)",
                        v["txid"].as_str().unwrap_or("?")
                    )
                });
            }
            (
                "/devnet/fund",
                Some(serde_json::to_value(devnet::FundReq { address, sats })?),
            )
        }
        DevnetCmd::Invoice { node, sats, memo } => (
            "/devnet/invoice",
            Some(serde_json::to_value(devnet::InvoiceReq {
                node,
                sats,
                memo,
            })?),
        ),
        DevnetCmd::Pay {
            node,
            payment_request,
            sats,
        } => (
            "/devnet/pay",
            Some(serde_json::to_value(devnet::PayReq {
                node,
                payment_request,
                sats,
            })?),
        ),
        DevnetCmd::Keysend {
            node,
            to,
            sats,
            tlv,
        } => {
            let mut records = std::collections::BTreeMap::new();
            for t in tlv {
                let (k, v) = t.split_once('=').context("--tlv takes TYPE=VALUE")?;
                records.insert(
                    k.trim()
                        .parse::<u64>()
                        .context("TLV type must be an integer")?,
                    v.to_owned(),
                );
            }
            (
                "/devnet/keysend",
                Some(serde_json::to_value(devnet::KeysendReq {
                    node,
                    to,
                    sats,
                    tlv: records,
                })?),
            )
        }
    };
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let resp = match body {
        Some(b) => http.post(&url).json(&b).send().await,
        None => http.get(&url).send().await,
    }
    .with_context(|| format!("contacting {url} (is `satchel serve` running?)"))?;
    let status = resp.status();
    let text = resp.text().await?;
    let parsed = serde_json::from_str::<serde_json::Value>(&text).ok();
    match (human, &parsed) {
        (Some(line), Some(v)) if status.is_success() => println!("{}", line(v)),
        _ => {
            let pretty = parsed
                .as_ref()
                .and_then(|v| serde_json::to_string_pretty(v).ok())
                .unwrap_or(text);
            println!("{pretty}");
        }
    }
    if !status.is_success() {
        bail!("server answered {status}");
    }
    Ok(())
}

fn main() -> ExitCode {
    // Before anything creates a file: what libraries create in the data dir (LDK's kv store,
    // SQLite's database and its -wal/-shm) is then readable by this user only. Nothing Satchel
    // writes is meant for other local users.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    satchel::logging::init(log_format(&cli.cmd));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<bool> = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(a) => serve(a).await.map(|_| true),
            Cmd::Audit(a) => audit(a).await,
            Cmd::Account {
                cmd: AccountCmd::Create { label, config },
            } => {
                let store = open_store(&config).await?;
                let acct = satchel_service::wallets::create_account(&store, &label)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("account:    {}", acct.id);
                println!("secret key: {}", acct.secret_key.expose());
                println!("public key: {}", acct.public_key.expose());
                Ok(true)
            }
            Cmd::Payments { cmd } => payments_cmd(cmd).await,
            Cmd::Key { cmd } => {
                let (key, suspend, config) = match cmd {
                    KeyCmd::Suspend { key, config } => (key, true, config),
                    KeyCmd::Reinstate { key, config } => (key, false, config),
                };
                let store = open_store(&config).await?;
                let changed = store
                    .set_key_suspended(&satchel_domain::KeyHash::of(key.trim()), suspend)
                    .await?;
                if !changed {
                    bail!("no such key");
                }
                println!("key {}", if suspend { "suspended" } else { "reinstated" });
                Ok(true)
            }
            Cmd::Wallet {
                cmd:
                    WalletCmd::Import {
                        account,
                        id,
                        label,
                        keys,
                        balance_sats,
                        config,
                    },
            } => {
                let bar = progress::bar(2, "wallet import");
                progress::step(&bar, 0, "opening the database");
                let store = open_store(&config).await?;
                let account_id = satchel_domain::AccountId::parse(&account)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                progress::step(&bar, 1, "writing the wallet, its keys and opening balance");
                let w = satchel_service::wallets::import_wallet(
                    &store,
                    satchel_service::wallets::ImportWallet {
                        account_id,
                        id,
                        user_label: label,
                        keys,
                        opening_balance: Msat::from_sats(balance_sats)
                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                        node_id: ServiceConfig::default().node_id,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"));
                progress::finish(bar);
                let w = w?;
                println!(
                    "imported wallet {} ({}), balance {} msat",
                    w.id,
                    w.user_label,
                    w.balance.as_msat()
                );
                Ok(true)
            }
            Cmd::Devnet {
                cmd,
                server,
                config,
            } => devnet_cmd(cmd, server, config).await.map(|_| true),
            Cmd::Node { cmd } => {
                let (query, a) = cmd.split()?;
                satchel::node_cli::run(query, a.server, a.json, &a.config.resolve()?)
                    .await
                    .map(|_| true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
