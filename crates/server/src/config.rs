//! Configuration: defaults < TOML file < environment (`SATCHEL_*`) < command-line flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Which Lightning backend `serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The embedded LDK node plus an in-process development network (alice, hub, carol):
    /// real Lightning payments over an in-process regtest chain. The default.
    Devnet,
    /// Deterministic simulation; no real payments.
    Scripted,
    /// An LND node over its REST API.
    Lnd,
    /// A Core Lightning node over JSON-RPC (unix socket) or CLNRest.
    Cln,
}

/// How our devnet node reads the devnet's chain (the peers always use bitcoind RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevnetChainKind {
    /// bitcoind JSON-RPC.
    #[default]
    Rpc,
    /// Esplora REST.
    Esplora,
}

impl BackendKind {
    /// The configuration's name of the backend (also the `backend` metrics label).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Devnet => "devnet",
            BackendKind::Scripted => "scripted",
            BackendKind::Lnd => "lnd",
            BackendKind::Cln => "cln",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<BackendKind> {
        match s {
            "devnet" => Ok(BackendKind::Devnet),
            "scripted" => Ok(BackendKind::Scripted),
            "lnd" => Ok(BackendKind::Lnd),
            "cln" => Ok(BackendKind::Cln),
            other => bail!("unknown backend {other:?} (available: devnet, scripted, lnd, cln)"),
        }
    }
}

/// The TOML file (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address.
    pub listen: Option<String>,
    /// Database URL.
    pub database_url: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Backend name.
    pub backend: Option<String>,
    /// Network for the scripted backend.
    pub network: Option<String>,
    /// How our devnet node reads the devnet chain: `rpc` or `esplora`.
    pub devnet_chain: Option<String>,
    /// Seconds a payment request waits before answering "pending".
    pub payment_wait_secs: Option<u64>,
    /// Wallet receiving keysends without a routing TLV.
    pub default_keysend_wallet: Option<String>,
    /// Per-invoice receive limit.
    pub max_receive_sats: Option<u64>,
    /// Per-request send limit.
    pub max_send_sats: Option<u64>,
    /// Floor of the default fee limit, in msat.
    pub min_fee_limit_msat: Option<u64>,
    /// Let webhooks target loopback/private addresses.
    pub webhook_allow_private: Option<bool>,
    /// Let LNURL-pay requests reach loopback/private addresses.
    pub lnurl_allow_private_targets: Option<bool>,
    /// Active webhooks per account.
    pub webhook_max_per_account: Option<u32>,
    /// Webhook redeliveries per account per minute.
    pub webhook_redeliveries_per_minute: Option<u32>,
    /// LND REST URL.
    pub lnd_rest_url: Option<String>,
    /// LND tls.cert path.
    pub lnd_tls_cert: Option<PathBuf>,
    /// LND macaroon: a file path or hex.
    pub lnd_macaroon: Option<String>,
    /// Core Lightning JSON-RPC socket path.
    pub cln_rpc_path: Option<PathBuf>,
    /// CLNRest URL.
    pub cln_rest_url: Option<String>,
    /// CLNRest rune.
    pub cln_rune: Option<String>,
    /// CLNRest server certificate path.
    pub cln_rest_cert: Option<PathBuf>,
    /// Seconds an `Idempotency-Key` is kept (at least 86400).
    pub idempotency_retention_secs: Option<u64>,
    /// Open HTTP connections at most.
    pub max_connections: Option<usize>,
    /// Open HTTP connections per client address at most.
    pub max_connections_per_ip: Option<usize>,
    /// Seconds an idle HTTP connection is kept.
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a request head may take.
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body may take.
    pub body_timeout_secs: Option<u64>,
    /// Failed authentications per address per window.
    pub auth_fail_limit: Option<u32>,
    /// Window of `auth_fail_limit`, in seconds.
    pub auth_fail_window_secs: Option<u64>,
    /// Proxies whose X-Forwarded-For is believed (addresses or CIDR networks).
    pub trusted_proxies: Option<Vec<String>>,
    /// Public base URL of this server (LNURLs and their callbacks are built from it).
    pub public_url: Option<String>,
    /// Lifetime of a one-time LNURL-withdraw link, in seconds.
    pub lnurl_withdraw_expiry_secs: Option<u64>,
    /// Lightning Address usernames nobody may take (replaces the default list).
    pub reserved_usernames: Option<Vec<String>>,
    /// Where to serve Prometheus `/metrics`; empty: nowhere.
    pub metrics_listen: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Let non-loopback peers reach the operator API and console (they still need the secret).
    pub operator_allow_remote: Option<bool>,
    /// Days finished webhook events and deliveries are kept.
    pub event_retention_days: Option<u64>,
    /// Live event streams (SSE) open at once, all accounts.
    pub events_max_streams: Option<u32>,
    /// Live event streams one account may have open at once.
    pub events_max_streams_per_account: Option<u32>,
}

/// Flags/env, as parsed by clap (every value optional so the file can fill gaps).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file (default: <data-dir>/satchel.toml if it exists).
    #[arg(long, env = "SATCHEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve on.
    #[arg(long, env = "SATCHEL_LISTEN")]
    pub listen: Option<String>,
    /// `sqlite://path` or `postgres://user@host/db`.
    #[arg(long, env = "SATCHEL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where Satchel keeps its files.
    #[arg(long, env = "SATCHEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Lightning backend.
    #[arg(long, env = "SATCHEL_BACKEND")]
    pub backend: Option<String>,
    /// How our devnet node reads the devnet's chain: `rpc` (bitcoind JSON-RPC, default) or
    /// `esplora`.
    #[arg(long, env = "SATCHEL_DEVNET_CHAIN")]
    pub devnet_chain: Option<String>,
    /// Network (scripted backend): regtest, testnet, signet, bitcoin.
    #[arg(long, env = "SATCHEL_NETWORK")]
    pub network: Option<String>,
    /// Seconds a withdraw/keysend request waits for the outcome before answering 202 pending.
    #[arg(long, env = "SATCHEL_PAYMENT_WAIT_SECS")]
    pub payment_wait_secs: Option<u64>,
    /// Wallet id that receives keysends without a wallet TLV.
    #[arg(long, env = "SATCHEL_DEFAULT_KEYSEND_WALLET")]
    pub default_keysend_wallet: Option<String>,
    /// Per-invoice receive limit in sats (default: none).
    #[arg(long, env = "SATCHEL_MAX_RECEIVE_SATS")]
    pub max_receive_sats: Option<u64>,
    /// Per-request send limit in sats (default: none).
    #[arg(long, env = "SATCHEL_MAX_SEND_SATS")]
    pub max_send_sats: Option<u64>,
    /// Floor of the fee limit of payments that give none, in msat: the limit is
    /// max(LNPay's 5% rounded up to the sat, this) (default 0: LNPay's rule).
    #[arg(long, env = "SATCHEL_MIN_FEE_LIMIT_MSAT")]
    pub min_fee_limit_msat: Option<u64>,
    /// Allow webhook URLs that resolve to loopback/private/link-local addresses (default: no).
    #[arg(long, env = "SATCHEL_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: Option<bool>,
    /// Allow LNURL-pay links and Lightning Addresses on loopback/private/link-local addresses
    /// (and http to such hosts) (default: no).
    #[arg(long, env = "SATCHEL_LNURL_ALLOW_PRIVATE_TARGETS")]
    pub lnurl_allow_private_targets: Option<bool>,
    /// Active webhooks an account may have (default: 20).
    #[arg(long, env = "SATCHEL_WEBHOOK_MAX_PER_ACCOUNT")]
    pub webhook_max_per_account: Option<u32>,
    /// Webhook redeliveries an account may request per minute, also the burst (default: 10).
    #[arg(long, env = "SATCHEL_WEBHOOK_REDELIVERIES_PER_MINUTE")]
    pub webhook_redeliveries_per_minute: Option<u32>,
    /// Scripted backend only: outcome of payments without a script of their own
    /// (`succeed:<fee_msat>`, `fail:<REASON>`, `unknown`, `pending:<fee_msat>`). Unset: keep the
    /// node's stored default (initially `succeed:0`).
    #[arg(long, env = "SATCHEL_SCRIPTED_DEFAULT")]
    pub scripted_default: Option<String>,
    /// Scripted backend only: at start, resolve every payment the scripted node still has in
    /// flight (`succeed:<fee_msat>` or `fail:<REASON>`), as if it finished while Satchel was down.
    #[arg(long, env = "SATCHEL_SCRIPTED_COMPLETE_INFLIGHT")]
    pub scripted_complete_inflight: Option<String>,
    /// LND: REST URL, e.g. https://127.0.0.1:8080.
    #[arg(long, env = "SATCHEL_LND_REST_URL")]
    pub lnd_rest_url: Option<String>,
    /// LND: path of tls.cert (pinned: LND's certificate is self-signed).
    #[arg(long, env = "SATCHEL_LND_TLS_CERT")]
    pub lnd_tls_cert: Option<PathBuf>,
    /// LND: macaroon, as a file path (admin.macaroon) or hex.
    #[arg(long, env = "SATCHEL_LND_MACAROON")]
    pub lnd_macaroon: Option<String>,
    /// Core Lightning: path of the JSON-RPC socket (<lightning-dir>/<network>/lightning-rpc).
    #[arg(long, env = "SATCHEL_CLN_RPC_PATH")]
    pub cln_rpc_path: Option<PathBuf>,
    /// Core Lightning: CLNRest URL (instead of the socket).
    #[arg(long, env = "SATCHEL_CLN_REST_URL")]
    pub cln_rest_url: Option<String>,
    /// Core Lightning: CLNRest rune.
    #[arg(long, env = "SATCHEL_CLN_RUNE")]
    pub cln_rune: Option<String>,
    /// Core Lightning: path of CLNRest's server.pem (pinned).
    #[arg(long, env = "SATCHEL_CLN_REST_CERT")]
    pub cln_rest_cert: Option<PathBuf>,
    /// Seconds an `Idempotency-Key` is remembered (default and minimum: 86400).
    #[arg(long, env = "SATCHEL_IDEMPOTENCY_RETENTION_SECS")]
    pub idempotency_retention_secs: Option<u64>,
    /// Days webhook events and their finished deliveries are kept (default 30, at least 1).
    #[arg(long, env = "SATCHEL_EVENT_RETENTION_DAYS")]
    pub event_retention_days: Option<u64>,
    /// Live event streams (SSE) open at once, all accounts together (default 1000).
    #[arg(long, env = "SATCHEL_EVENTS_MAX_STREAMS")]
    pub events_max_streams: Option<u32>,
    /// Live event streams one account may have open at once (default 20).
    #[arg(long, env = "SATCHEL_EVENTS_MAX_STREAMS_PER_ACCOUNT")]
    pub events_max_streams_per_account: Option<u32>,
    /// Open HTTP connections at most (default: from the open-file limit, with headroom). At the
    /// cap a new connection closes the longest-idle one.
    #[arg(long, env = "SATCHEL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open HTTP connections per client address (IPv6: per /64) at most (default 256).
    #[arg(long, env = "SATCHEL_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds an HTTP connection may stay idle, before or between requests (default 60).
    #[arg(long, env = "SATCHEL_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a request head may take from its first byte (default 10).
    #[arg(long, env = "SATCHEL_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body may take after its head (default 30).
    #[arg(long, env = "SATCHEL_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Failed authentications a client address may make per window before 429 (default 20;
    /// 0 disables the throttle).
    #[arg(long, env = "SATCHEL_AUTH_FAIL_LIMIT")]
    pub auth_fail_limit: Option<u32>,
    /// Window of the auth throttle in seconds (default 60).
    #[arg(long, env = "SATCHEL_AUTH_FAIL_WINDOW_SECS")]
    pub auth_fail_window_secs: Option<u64>,
    /// Reverse proxies whose X-Forwarded-For names the client (comma-separated addresses or
    /// CIDR networks; default none).
    #[arg(long, env = "SATCHEL_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Public base URL wallets reach this server at, e.g. https://pay.example.com (https unless
    /// the host is loopback). LNURLs and callbacks are built only from it; unset: LNURL
    /// endpoints answer that LNURL is not enabled.
    #[arg(long, env = "SATCHEL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a one-time LNURL-withdraw link stays usable (default 86400).
    #[arg(long, env = "SATCHEL_LNURL_WITHDRAW_EXPIRY_SECS")]
    pub lnurl_withdraw_expiry_secs: Option<u64>,
    /// Lightning Address usernames nobody may take, comma-separated (replaces the default:
    /// admin, root, postmaster, support and other names that look official).
    #[arg(long, env = "SATCHEL_RESERVED_USERNAMES", value_delimiter = ',')]
    pub reserved_usernames: Option<Vec<String>>,
    /// Address of the Prometheus `/metrics` listener, separate from the API (default
    /// 127.0.0.1:9464; an empty string or `off` turns it off).
    #[arg(long, env = "SATCHEL_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Log lines as `text` (default) or `json` (one object per line).
    #[arg(long, env = "SATCHEL_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Let non-loopback peers (and requests forwarded by a proxy) reach the operator API and
    /// console under `/operator`; they still need the secret of `<data-dir>/.operator_cookie`
    /// (default: false, loopback only).
    #[arg(long, env = "SATCHEL_OPERATOR_ALLOW_REMOTE")]
    pub operator_allow_remote: Option<bool>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: String,
    /// Database URL.
    pub database_url: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Backend.
    pub backend: BackendKind,
    /// Our devnet node's chain dialect.
    pub devnet_chain: DevnetChainKind,
    /// Network.
    pub network: satchel_domain::Network,
    /// Wait for payment outcomes.
    pub payment_wait: Duration,
    /// Default keysend wallet.
    pub default_keysend_wallet: Option<String>,
    /// Receive limit.
    pub max_receive_sats: Option<u64>,
    /// Send limit.
    pub max_send_sats: Option<u64>,
    /// Floor of the default fee limit, in msat (0: LNPay's rule).
    pub min_fee_limit_msat: u64,
    /// Webhooks may target private addresses.
    pub webhook_allow_private: bool,
    /// LNURL-pay requests may target private addresses.
    pub lnurl_allow_private_targets: bool,
    /// Active webhooks per account.
    pub webhook_max_per_account: u32,
    /// Webhook redeliveries per account per minute (at least 1).
    pub webhook_redeliveries_per_minute: u32,
    /// Scripted backend: default payment outcome to set at start.
    pub scripted_default: Option<String>,
    /// Scripted backend: how to resolve payments in flight at start.
    pub scripted_complete_inflight: Option<String>,
    /// LND connection (`backend = "lnd"`).
    pub lnd: LndSettings,
    /// Core Lightning connection (`backend = "cln"`).
    pub cln: ClnSettings,
    /// How long `Idempotency-Key`s are kept.
    pub idempotency_retention: Duration,
    /// How long webhook events and finished deliveries are kept.
    pub event_retention: Duration,
    /// Live event streams open at once (all accounts, per account).
    pub events_max_streams: (u32, u32),
    /// HTTP connection limits, timeouts, auth throttle, trusted proxies, metrics listener.
    pub http: HttpSettings,
    /// Public base URL (parsed and checked when the services are configured).
    pub public_url: Option<String>,
    /// Lifetime of one-time LNURL-withdraw links.
    pub lnurl_withdraw_expiry: Duration,
    /// Reserved Lightning Address usernames (lower case); `None`: the default list.
    pub reserved_usernames: Option<Vec<String>>,
    /// How log lines are written.
    pub log_format: crate::logging::LogFormat,
    /// Operator endpoints accept non-loopback peers.
    pub operator_allow_remote: bool,
}

/// The HTTP edge's limits (see `crate::listener` and `satchel_api::http::throttle`).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Open connections at most (`None`: from the open-file limit).
    pub max_connections: Option<usize>,
    /// Open connections per client address at most.
    pub max_connections_per_ip: usize,
    /// Idle connection timeout.
    pub idle_timeout: Duration,
    /// Request head timeout.
    pub header_timeout: Duration,
    /// Request body timeout.
    pub body_timeout: Duration,
    /// Failed authentications per address per window (0: no throttle).
    pub auth_fail_limit: u32,
    /// The throttle's window.
    pub auth_fail_window: Duration,
    /// Trusted proxies (addresses or CIDR networks).
    pub trusted_proxies: Vec<String>,
    /// The Prometheus `/metrics` listener (`None`: off).
    pub metrics_listen: Option<String>,
}

/// Default address of the `/metrics` listener (9464: the port OpenTelemetry's and many other
/// Prometheus exporters use). Loopback: the figures are for the operator.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// How to reach LND.
#[derive(Debug, Clone, Default)]
pub struct LndSettings {
    /// REST URL.
    pub rest_url: Option<String>,
    /// tls.cert path.
    pub tls_cert: Option<PathBuf>,
    /// Macaroon file path or hex.
    pub macaroon: Option<String>,
}

/// How to reach Core Lightning.
#[derive(Debug, Clone, Default)]
pub struct ClnSettings {
    /// JSON-RPC socket.
    pub rpc_path: Option<PathBuf>,
    /// CLNRest URL.
    pub rest_url: Option<String>,
    /// Rune.
    pub rune: Option<String>,
    /// CLNRest server.pem path.
    pub rest_cert: Option<PathBuf>,
}

impl ConfigArgs {
    /// Merges flags/env over the file over defaults.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let data_dir_hint = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./satchel-data"));
        let file_path = self.config.clone().or_else(|| {
            let p = data_dir_hint.join("satchel.toml");
            p.exists().then_some(p)
        });
        let file = match &file_path {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or(data_dir_hint);
        let database_url = self
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("satchel.db").display()));
        let backend = self
            .backend
            .clone()
            .or(file.backend)
            .unwrap_or_else(|| "devnet".into())
            .parse()?;
        let webhook_redeliveries_per_minute = self
            .webhook_redeliveries_per_minute
            .or(file.webhook_redeliveries_per_minute)
            .unwrap_or(10);
        if webhook_redeliveries_per_minute == 0 {
            bail!("webhook_redeliveries_per_minute must be at least 1");
        }
        let network = self
            .network
            .clone()
            .or(file.network)
            .unwrap_or_else(|| "regtest".into())
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let devnet_chain = match self
            .devnet_chain
            .clone()
            .or(file.devnet_chain)
            .as_deref()
            .map(str::trim)
        {
            None | Some("rpc") => DevnetChainKind::Rpc,
            Some("esplora") => DevnetChainKind::Esplora,
            Some(other) => bail!("devnet_chain must be `rpc` or `esplora`, not {other:?}"),
        };
        let listener_defaults = crate::listener::ListenerSettings::default();
        let throttle_defaults = satchel_api::http::throttle::AuthThrottleConfig::default();
        Ok(Config {
            listen: self
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            database_url,
            data_dir,
            backend,
            devnet_chain,
            network,
            payment_wait: Duration::from_secs(
                self.payment_wait_secs
                    .or(file.payment_wait_secs)
                    .unwrap_or(30),
            ),
            default_keysend_wallet: self
                .default_keysend_wallet
                .clone()
                .or(file.default_keysend_wallet),
            max_receive_sats: self.max_receive_sats.or(file.max_receive_sats),
            max_send_sats: self.max_send_sats.or(file.max_send_sats),
            min_fee_limit_msat: self
                .min_fee_limit_msat
                .or(file.min_fee_limit_msat)
                .unwrap_or(0),
            webhook_allow_private: self
                .webhook_allow_private
                .or(file.webhook_allow_private)
                .unwrap_or(false),
            lnurl_allow_private_targets: self
                .lnurl_allow_private_targets
                .or(file.lnurl_allow_private_targets)
                .unwrap_or(false),
            webhook_max_per_account: self
                .webhook_max_per_account
                .or(file.webhook_max_per_account)
                .unwrap_or(20),
            webhook_redeliveries_per_minute,
            scripted_default: self.scripted_default.clone(),
            scripted_complete_inflight: self.scripted_complete_inflight.clone(),
            lnd: LndSettings {
                rest_url: self.lnd_rest_url.clone().or(file.lnd_rest_url),
                tls_cert: self.lnd_tls_cert.clone().or(file.lnd_tls_cert),
                macaroon: self.lnd_macaroon.clone().or(file.lnd_macaroon),
            },
            cln: ClnSettings {
                rpc_path: self.cln_rpc_path.clone().or(file.cln_rpc_path),
                rest_url: self.cln_rest_url.clone().or(file.cln_rest_url),
                rune: self.cln_rune.clone().or(file.cln_rune),
                rest_cert: self.cln_rest_cert.clone().or(file.cln_rest_cert),
            },
            idempotency_retention: {
                let secs = self
                    .idempotency_retention_secs
                    .or(file.idempotency_retention_secs)
                    .unwrap_or(MIN_IDEMPOTENCY_RETENTION_SECS);
                // Clients are promised that a key works for a day.
                if secs < MIN_IDEMPOTENCY_RETENTION_SECS {
                    bail!(
                        "idempotency_retention_secs must be at least {MIN_IDEMPOTENCY_RETENTION_SECS}"
                    );
                }
                Duration::from_secs(secs)
            },
            event_retention: {
                let days = self
                    .event_retention_days
                    .or(file.event_retention_days)
                    .unwrap_or(30);
                if days == 0 {
                    bail!("event_retention_days must be at least 1");
                }
                Duration::from_secs(days.saturating_mul(86_400))
            },
            events_max_streams: (
                self.events_max_streams
                    .or(file.events_max_streams)
                    .unwrap_or(1_000),
                self.events_max_streams_per_account
                    .or(file.events_max_streams_per_account)
                    .unwrap_or(20),
            ),
            public_url: self.public_url.clone().or(file.public_url),
            reserved_usernames: self
                .reserved_usernames
                .clone()
                .or(file.reserved_usernames)
                .map(|v| {
                    v.iter()
                        .map(|u| u.trim().to_ascii_lowercase())
                        .filter(|u| !u.is_empty())
                        .collect()
                }),
            lnurl_withdraw_expiry: {
                let secs = self
                    .lnurl_withdraw_expiry_secs
                    .or(file.lnurl_withdraw_expiry_secs)
                    .unwrap_or(86_400);
                if secs == 0 {
                    bail!("lnurl_withdraw_expiry_secs must be at least 1");
                }
                Duration::from_secs(secs)
            },
            http: HttpSettings {
                max_connections: self.max_connections.or(file.max_connections),
                max_connections_per_ip: self
                    .max_connections_per_ip
                    .or(file.max_connections_per_ip)
                    .unwrap_or(listener_defaults.max_connections_per_ip),
                idle_timeout: secs_or(
                    self.idle_timeout_secs.or(file.idle_timeout_secs),
                    listener_defaults.idle_timeout,
                ),
                header_timeout: secs_or(
                    self.header_timeout_secs.or(file.header_timeout_secs),
                    listener_defaults.header_timeout,
                ),
                body_timeout: secs_or(
                    self.body_timeout_secs.or(file.body_timeout_secs),
                    listener_defaults.body_timeout,
                ),
                auth_fail_limit: self
                    .auth_fail_limit
                    .or(file.auth_fail_limit)
                    .unwrap_or(throttle_defaults.max_failures),
                auth_fail_window: secs_or(
                    self.auth_fail_window_secs.or(file.auth_fail_window_secs),
                    throttle_defaults.window,
                ),
                trusted_proxies: self
                    .trusted_proxies
                    .clone()
                    .or(file.trusted_proxies)
                    .unwrap_or_default(),
                metrics_listen: {
                    let v = self
                        .metrics_listen
                        .clone()
                        .or(file.metrics_listen)
                        .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
                    let v = v.trim();
                    (!v.is_empty() && v != "off").then(|| v.to_owned())
                },
            },
            log_format: self
                .log_format
                .clone()
                .or(file.log_format)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or_default(),
            operator_allow_remote: self
                .operator_allow_remote
                .or(file.operator_allow_remote)
                .unwrap_or(false),
        })
    }
}

fn secs_or(secs: Option<u64>, default: Duration) -> Duration {
    secs.map_or(default, Duration::from_secs)
}

impl HttpSettings {
    /// The listener's and the API's settings; refuses values that would close every
    /// connection (zero timeouts or caps) and trusted proxies that do not parse.
    pub fn options(&self) -> anyhow::Result<crate::app::HttpOptions> {
        for (name, d) in [
            ("idle_timeout_secs", self.idle_timeout),
            ("header_timeout_secs", self.header_timeout),
            ("body_timeout_secs", self.body_timeout),
            ("auth_fail_window_secs", self.auth_fail_window),
        ] {
            if d.is_zero() {
                bail!("{name} must be at least 1");
            }
        }
        if self.max_connections == Some(0) || self.max_connections_per_ip == 0 {
            bail!("max_connections and max_connections_per_ip must be at least 1");
        }
        let trusted = satchel_api::http::throttle::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(crate::app::HttpOptions {
            listener: crate::listener::ListenerSettings {
                idle_timeout: self.idle_timeout,
                header_timeout: self.header_timeout,
                body_timeout: self.body_timeout,
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                trusted_proxies: trusted.clone(),
            },
            api: satchel_api::ApiOptions {
                auth_throttle: satchel_api::http::throttle::AuthThrottleConfig {
                    max_failures: self.auth_fail_limit,
                    window: self.auth_fail_window,
                    ..Default::default()
                },
                trusted_proxies: trusted,
                operator: None,
            },
            metrics_listen: self.metrics_listen.clone(),
            metrics_refresh: None,
            operator: None,
        })
    }
}

/// Shortest (and default) retention of idempotency keys: one day.
pub const MIN_IDEMPOTENCY_RETENTION_SECS: u64 = 86_400;

fn load_file(p: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ConfigArgs {
            data_dir: Some("/nonexistent-satchel".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite:///nonexistent-satchel/satchel.db");
        assert_eq!(c.backend, BackendKind::Devnet);
        assert!(!c.webhook_allow_private);
        assert_eq!(c.webhook_max_per_account, 20);
        assert_eq!(c.webhook_redeliveries_per_minute, 10);
    }

    #[test]
    fn webhook_limits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(
            &p,
            "webhook_max_per_account = 3\nwebhook_redeliveries_per_minute = 2\n",
        )
        .unwrap();
        let c = ConfigArgs {
            config: Some(p.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.webhook_max_per_account, 3);
        assert_eq!(c.webhook_redeliveries_per_minute, 2);
        let c = ConfigArgs {
            config: Some(p.clone()),
            webhook_max_per_account: Some(50),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.webhook_max_per_account, 50);
        std::fs::write(&p, "webhook_redeliveries_per_minute = 0\n").unwrap();
        assert!(
            ConfigArgs {
                config: Some(p),
                ..Default::default()
            }
            .resolve()
            .is_err()
        );
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(
            &p,
            "listen = \"0.0.0.0:9000\"\ndatabase_url = \"postgres://x/y\"\nmax_send_sats = 5\nmin_fee_limit_msat = 1000\n",
        )
        .unwrap();
        let args = ConfigArgs {
            config: Some(p.clone()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.database_url, "postgres://x/y");
        assert_eq!(c.max_send_sats, Some(5));
        let args = ConfigArgs {
            config: Some(p),
            listen: Some("127.0.0.1:1".into()),
            min_fee_limit_msat: Some(2000),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.min_fee_limit_msat, 2000);
        let defaults = ConfigArgs {
            data_dir: Some("/nonexistent-satchel".into()),
            ..Default::default()
        };
        assert_eq!(defaults.resolve().unwrap().min_fee_limit_msat, 0);
    }

    #[test]
    fn devnet_chain_defaults_to_rpc_and_accepts_esplora_only_besides() {
        let with = |v: Option<&str>| {
            ConfigArgs {
                data_dir: Some("/nonexistent-satchel".into()),
                devnet_chain: v.map(str::to_owned),
                ..Default::default()
            }
            .resolve()
            .map(|c| c.devnet_chain)
            .map_err(|e| e.to_string())
        };
        assert_eq!(with(None), Ok(DevnetChainKind::Rpc));
        assert_eq!(with(Some("rpc")), Ok(DevnetChainKind::Rpc));
        assert_eq!(with(Some("esplora")), Ok(DevnetChainKind::Esplora));
        assert!(with(Some("electrum")).is_err_and(|e| e.contains("devnet_chain")));
    }

    #[test]
    fn idempotency_retention_defaults_to_a_day_and_cannot_be_shorter() {
        let base = ConfigArgs {
            data_dir: Some("/nonexistent-satchel".into()),
            ..Default::default()
        };
        let c = base.resolve().unwrap();
        assert_eq!(c.idempotency_retention, Duration::from_secs(86_400));
        let longer = ConfigArgs {
            idempotency_retention_secs: Some(172_800),
            ..base.clone()
        };
        assert_eq!(
            longer.resolve().unwrap().idempotency_retention,
            Duration::from_secs(172_800)
        );
        let shorter = ConfigArgs {
            idempotency_retention_secs: Some(3_600),
            ..base
        };
        assert!(shorter.resolve().is_err());
    }

    #[test]
    fn http_limits() {
        let c = ConfigArgs {
            data_dir: Some("/nonexistent-satchel".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let o = c.http.options().unwrap();
        assert_eq!(o.listener.idle_timeout, Duration::from_secs(60));
        assert_eq!(o.listener.header_timeout, Duration::from_secs(10));
        assert_eq!(o.listener.body_timeout, Duration::from_secs(30));
        assert_eq!(o.listener.max_connections, None);
        assert_eq!(o.listener.max_connections_per_ip, 256);
        assert_eq!(o.api.auth_throttle.max_failures, 20);
        assert_eq!(o.api.auth_throttle.window, Duration::from_secs(60));
        assert!(o.api.trusted_proxies.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(
            &p,
            "max_connections = 1000\nidle_timeout_secs = 5\nauth_fail_limit = 3\n\
             trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        let args = ConfigArgs {
            config: Some(p.clone()),
            max_connections_per_ip: Some(7),
            ..Default::default()
        };
        let o = args.resolve().unwrap().http.options().unwrap();
        assert_eq!(o.listener.max_connections, Some(1000));
        assert_eq!(o.listener.max_connections_per_ip, 7);
        assert_eq!(o.listener.idle_timeout, Duration::from_secs(5));
        assert_eq!(o.api.auth_throttle.max_failures, 3);
        assert!(o.api.trusted_proxies.contains("10.2.3.4".parse().unwrap()));
        assert!(o.listener.trusted_proxies.contains("::1".parse().unwrap()));

        for bad in [
            "idle_timeout_secs = 0\n",
            "max_connections = 0\n",
            "trusted_proxies = [\"nope\"]\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            let args = ConfigArgs {
                config: Some(p.clone()),
                ..Default::default()
            };
            assert!(args.resolve().unwrap().http.options().is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_listen_and_log_format() {
        let base = ConfigArgs {
            data_dir: Some("/nonexistent-satchel".into()),
            ..Default::default()
        };
        let c = base.resolve().unwrap();
        assert_eq!(c.http.metrics_listen.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(
            c.http.options().unwrap().metrics_listen.as_deref(),
            Some("127.0.0.1:9464")
        );
        assert_eq!(c.log_format, crate::logging::LogFormat::Text);
        for off in ["", "off", "  "] {
            let c = ConfigArgs {
                metrics_listen: Some(off.into()),
                ..base.clone()
            }
            .resolve()
            .unwrap();
            assert_eq!(c.http.metrics_listen, None, "{off:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(
            &p,
            "metrics_listen = \"0.0.0.0:9100\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let c = ConfigArgs {
            config: Some(p.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.http.metrics_listen.as_deref(), Some("0.0.0.0:9100"));
        assert_eq!(c.log_format, crate::logging::LogFormat::Json);
        std::fs::write(&p, "log_format = \"xml\"\n").unwrap();
        assert!(
            ConfigArgs {
                config: Some(p),
                ..Default::default()
            }
            .resolve()
            .is_err()
        );
    }

    #[test]
    fn unknown_keys_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "lisen = \"x\"\n").unwrap();
        assert!(
            ConfigArgs {
                config: Some(p),
                ..Default::default()
            }
            .resolve()
            .is_err()
        );
    }
}
