//! Endpoint × credential matrix (LNPay spec §3.2–§3.5), on both databases.
//!
//! Every case names an endpoint, the API key sent (`X-Api-Key`) and the key or id in the URL, and
//! what must happen: allowed (and, for money-moving calls, something written), or refused with
//! LNPay's exact 401 message and nothing written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod lnurl_server;

use std::fmt::Write as _;

use common::{Resp, TestServer, WalletKeys, on_each_db};
use reqwest::{Method, StatusCode};
use satchel_domain::{AccountId, KeyHash, KeyRole, WalletId};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------- model

/// The wallet roles, in `access_keys` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Waka,
    Waki,
    Wakr,
    Waklw,
    Waklp,
    Wakewa,
    Wakewv,
}

use Role::*;

const ROLES: [Role; 7] = [Waka, Waki, Wakr, Waklw, Waklp, Wakewa, Wakewv];

impl Role {
    fn key(self, w: &WalletKeys) -> &str {
        match self {
            Waka => &w.waka,
            Waki => &w.waki,
            Wakr => &w.wakr,
            Waklw => &w.waklw,
            Waklp => &w.waklp,
            Wakewa => &w.wakewa,
            Wakewv => &w.wakewv,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Waka => "waka",
            Waki => "waki",
            Wakr => "wakr",
            Waklw => "waklw",
            Waklp => "waklp",
            Wakewa => "wakewa",
            Wakewv => "wakewv",
        }
    }
}

/// The endpoints under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ep {
    GetWallet,
    WalletTxs,
    Invoice,
    Withdraw,
    Keysend,
    Transfer,
    CreateWallet,
    ListWallets,
    AccountTxs,
    GetLnTx,
    DecodeInvoice,
    QueryRoutes,
    GetJob,
    CreateLnurlp,
    GetLnurlp,
    UpdateLnurlp,
    /// `POST /wallet/:key/lnurlp/pay` (to the loopback test LNURL server).
    LnurlPay,
    /// `GET /lnurlp/probe/:address`.
    Probe,
    /// `GET /nodes`.
    Nodes,
    /// `GET /node/default`.
    Node,
    Events,
}

use Ep::*;

const WALLET_ROUTES: [Ep; 8] = [
    GetWallet, WalletTxs, Invoice, Withdraw, Keysend, Transfer, LnurlPay, Events,
];

impl Ep {
    /// Whether a successful call writes to the ledger / wallet list.
    fn writes(self) -> bool {
        matches!(
            self,
            Withdraw | Keysend | Transfer | CreateWallet | LnurlPay
        )
    }

    /// Success status (§2.3).
    fn ok_status(self) -> StatusCode {
        match self {
            Invoice | Withdraw | Keysend | Transfer | CreateWallet | LnurlPay => {
                StatusCode::CREATED
            }
            _ => StatusCode::OK,
        }
    }
}

/// The API key sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// Account A's secret key.
    Sak,
    /// Account A's public key.
    Pak,
    /// Account B's secret key.
    SakB,
    /// Account B's public key.
    PakB,
    /// One of wallet A's keys, used as if it were an API key.
    Wallet(Role),
    /// A well-formed key nobody issued.
    Unknown,
    /// No credentials at all.
    NoKey,
}

/// What names wallet A in the URL (or in `?wallet_id=` for `/wallet-transactions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `wal_…`.
    Id,
    /// One of wallet A's access keys.
    Key(Role),
    /// Not applicable / not given.
    Absent,
}

/// Why a call must be refused (each maps to one exact LNPay message, all 401).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// "Your request was made with invalid credentials."
    InvalidCredentials,
    /// "Wallet not found: <path key>"
    WalletNotFound,
    /// "Invalid Wallet Access Key. Keys prefixed with waka_, waki_, wakr, waklw are valid when using pak_"
    PakNeedsWalletKey,
    /// "<prefix>_ access key provided does not permission to do this: <perm>"
    Denied(&'static str),
    /// "This resource can only be access with secret access key."
    SecretOnly,
    /// "LnTx not found"
    LnTxNotFound,
    /// "You are not allowed to access this resource!"
    JobNotAllowed,
    /// 404 "Unknown lnurlpay id" (another account's LNURL-pay link).
    UnknownLnurlp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Refused(Refusal),
}

use Outcome::*;
use Refusal::*;

// Short names for the table.
const OK: Outcome = Allowed;
const NO_CREDS: Outcome = Refused(InvalidCredentials);
const NOT_FOUND: Outcome = Refused(WalletNotFound);
const PAK_NEEDS_KEY: Outcome = Refused(PakNeedsWalletKey);
const SAK_ONLY: Outcome = Refused(SecretOnly);
const NO_LNTX: Outcome = Refused(LnTxNotFound);
const NO_JOB: Outcome = Refused(JobNotAllowed);
const NO_LNURLP: Outcome = Refused(UnknownLnurlp);

#[derive(Debug, Clone)]
struct Case {
    ep: Ep,
    api: Api,
    path: Path,
    expect: Outcome,
}

fn case(ep: Ep, api: Api, path: Path, expect: Outcome) -> Case {
    Case {
        ep,
        api,
        path,
        expect,
    }
}

/// §3.5: the wallet keys a **pak** may use on each wallet route, and the permission named in the
/// refusal for all the others. (A sak may use any key or the `wal_` id.)
const PAK_MATRIX: [(Ep, &str, &[Role]); 8] = [
    (
        GetWallet,
        "wallet_read",
        &[Waka, Wakr, Waklw, Wakewa, Wakewv],
    ),
    (
        WalletTxs,
        "wallet_read",
        &[Waka, Wakr, Waklw, Wakewa, Wakewv],
    ),
    (Invoice, "wallet_deposit", &[Waka, Waki, Waklp, Wakewa]),
    (Withdraw, "wallet_withdraw", &[Waka, Waklw, Wakewa]),
    (Keysend, "wallet_withdraw", &[Waka, Waklw, Wakewa]),
    (Transfer, "wallet_transfer", &[Waka]),
    // LNPay's docs name waka and waklw; its check is `wallet_withdraw`, which wakewa holds too.
    (LnurlPay, "wallet_withdraw", &[Waka, Waklw, Wakewa]),
    // Live events (SSE): reading, like GET wallet.
    (Events, "wallet_read", &[Waka, Wakr, Waklw, Wakewa, Wakewv]),
];

/// The full matrix of the wallet routes (`/wallet/:key/...`).
fn wallet_route_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (ep, perm, pak_ok) in PAK_MATRIX {
        // sak: by id and by every key.
        v.push(case(ep, Api::Sak, Path::Id, OK));
        for r in ROLES {
            v.push(case(ep, Api::Sak, Path::Key(r), OK));
        }
        // pak: only with a key carrying the permission; never with the id.
        for r in ROLES {
            let expect = if pak_ok.contains(&r) {
                OK
            } else {
                Refused(Denied(perm))
            };
            v.push(case(ep, Api::Pak, Path::Key(r), expect));
        }
        v.push(case(ep, Api::Pak, Path::Id, PAK_NEEDS_KEY));
        // A wallet key as the API key does not speak for the account (Satchel's choice).
        for r in ROLES {
            v.push(case(ep, Api::Wallet(r), Path::Key(r), NOT_FOUND));
        }
        v.push(case(ep, Api::Wallet(Waka), Path::Id, NOT_FOUND));
        // No or unknown credentials.
        v.push(case(ep, Api::Unknown, Path::Key(Waka), NO_CREDS));
        v.push(case(ep, Api::NoKey, Path::Key(Waka), NO_CREDS));
        v.push(case(ep, Api::NoKey, Path::Id, NO_CREDS));
        // Account B's keys addressing account A's wallet.
        v.push(case(ep, Api::SakB, Path::Id, NOT_FOUND));
        v.push(case(ep, Api::SakB, Path::Key(Waka), NOT_FOUND));
        v.push(case(ep, Api::SakB, Path::Key(Wakr), NOT_FOUND));
        v.push(case(ep, Api::PakB, Path::Key(Waka), PAK_NEEDS_KEY));
        v.push(case(ep, Api::PakB, Path::Id, PAK_NEEDS_KEY));
    }
    assert_eq!(WALLET_ROUTES.len(), PAK_MATRIX.len());
    v
}

/// Account-level routes (no wallet key in the path).
fn account_route_cases() -> Vec<Case> {
    let mut v = vec![
        // POST /v1/wallet: sak or pak.
        case(CreateWallet, Api::Sak, Path::Absent, OK),
        case(CreateWallet, Api::Pak, Path::Absent, OK),
        case(CreateWallet, Api::SakB, Path::Absent, OK),
        case(CreateWallet, Api::PakB, Path::Absent, OK),
        case(CreateWallet, Api::Unknown, Path::Absent, NO_CREDS),
        case(CreateWallet, Api::NoKey, Path::Absent, NO_CREDS),
        // GET /v1/wallets: sak only (B's sak sees only B's wallets: checked by the runner).
        case(ListWallets, Api::Sak, Path::Absent, OK),
        case(ListWallets, Api::SakB, Path::Absent, OK),
        case(ListWallets, Api::Pak, Path::Absent, SAK_ONLY),
        case(ListWallets, Api::PakB, Path::Absent, SAK_ONLY),
        case(ListWallets, Api::Unknown, Path::Absent, NO_CREDS),
        case(ListWallets, Api::NoKey, Path::Absent, NO_CREDS),
        // GET /v1/wallet-transactions[?wallet_id=]: sak only; the wallet must be the sak's.
        case(AccountTxs, Api::Sak, Path::Absent, OK),
        case(AccountTxs, Api::Sak, Path::Id, OK),
        case(AccountTxs, Api::SakB, Path::Absent, OK),
        case(AccountTxs, Api::SakB, Path::Id, NOT_FOUND),
        case(AccountTxs, Api::Pak, Path::Absent, SAK_ONLY),
        case(AccountTxs, Api::Pak, Path::Id, SAK_ONLY),
        case(AccountTxs, Api::PakB, Path::Absent, SAK_ONLY),
        case(AccountTxs, Api::Unknown, Path::Absent, NO_CREDS),
        case(AccountTxs, Api::NoKey, Path::Absent, NO_CREDS),
        // GET /v1/lntx/:id: any account key of the owner.
        case(GetLnTx, Api::Sak, Path::Absent, OK),
        case(GetLnTx, Api::Pak, Path::Absent, OK),
        case(GetLnTx, Api::SakB, Path::Absent, NO_LNTX),
        case(GetLnTx, Api::PakB, Path::Absent, NO_LNTX),
        case(GetLnTx, Api::Unknown, Path::Absent, NO_CREDS),
        case(GetLnTx, Api::NoKey, Path::Absent, NO_CREDS),
        // Node endpoints: any account key (Podverse uses a pak).
        case(DecodeInvoice, Api::Sak, Path::Absent, OK),
        case(DecodeInvoice, Api::Pak, Path::Absent, OK),
        case(DecodeInvoice, Api::SakB, Path::Absent, OK),
        case(DecodeInvoice, Api::Unknown, Path::Absent, NO_CREDS),
        case(DecodeInvoice, Api::NoKey, Path::Absent, NO_CREDS),
        case(QueryRoutes, Api::Sak, Path::Absent, OK),
        case(QueryRoutes, Api::Pak, Path::Absent, OK),
        case(QueryRoutes, Api::PakB, Path::Absent, OK),
        case(QueryRoutes, Api::Unknown, Path::Absent, NO_CREDS),
        case(QueryRoutes, Api::NoKey, Path::Absent, NO_CREDS),
        // GET /v1/job/:id: the owner's account keys only.
        case(GetJob, Api::Sak, Path::Absent, OK),
        case(GetJob, Api::Pak, Path::Absent, OK),
        case(GetJob, Api::SakB, Path::Absent, NO_JOB),
        case(GetJob, Api::PakB, Path::Absent, NO_JOB),
        case(GetJob, Api::Unknown, Path::Absent, NO_CREDS),
        case(GetJob, Api::NoKey, Path::Absent, NO_CREDS),
        // GET /v1/lnurlp/probe/:x: any account key (it reads a public link, pays nothing).
        case(Probe, Api::Sak, Path::Absent, OK),
        case(Probe, Api::Pak, Path::Absent, OK),
        case(Probe, Api::SakB, Path::Absent, OK),
        case(Probe, Api::PakB, Path::Absent, OK),
        case(Probe, Api::Unknown, Path::Absent, NO_CREDS),
        case(Probe, Api::NoKey, Path::Absent, NO_CREDS),
        // GET /v1/nodes, /v1/node/:id: sak only (LNPay §3.5).
        case(Nodes, Api::Sak, Path::Absent, OK),
        case(Nodes, Api::SakB, Path::Absent, OK),
        case(Nodes, Api::Pak, Path::Absent, SAK_ONLY),
        case(Nodes, Api::PakB, Path::Absent, SAK_ONLY),
        case(Nodes, Api::Unknown, Path::Absent, NO_CREDS),
        case(Nodes, Api::NoKey, Path::Absent, NO_CREDS),
        case(Node, Api::Sak, Path::Absent, OK),
        case(Node, Api::SakB, Path::Absent, OK),
        case(Node, Api::Pak, Path::Absent, SAK_ONLY),
        case(Node, Api::PakB, Path::Absent, SAK_ONLY),
        case(Node, Api::Unknown, Path::Absent, NO_CREDS),
        case(Node, Api::NoKey, Path::Absent, NO_CREDS),
    ];
    // Wallet keys used as API keys on the sak-only and sak/pak account routes.
    for ep in [CreateWallet, ListWallets, AccountTxs, Probe, Nodes, Node] {
        for r in ROLES {
            v.push(case(ep, Api::Wallet(r), Path::Absent, SAK_ONLY));
        }
    }
    v
}

/// Wallet keys used as API keys on `GET /lntx/:id` and `GET /job/:id`: account-level data
/// (any wallet's lnTx / job of the account), so refused like the other account-level routes.
fn wallet_key_as_api_key_on_lntx_and_job() -> Vec<Case> {
    let mut v = Vec::new();
    for ep in [GetLnTx, GetJob] {
        for r in ROLES {
            v.push(case(ep, Api::Wallet(r), Path::Absent, SAK_ONLY));
        }
    }
    v
}

/// Wallet keys used as API keys on the node endpoints: by the same rule (a wallet key never
/// speaks for the account) refused like the other account-level routes.
fn wallet_key_as_api_key_on_node_routes() -> Vec<Case> {
    let mut v = Vec::new();
    for ep in [DecodeInvoice, QueryRoutes] {
        for r in ROLES {
            v.push(case(ep, Api::Wallet(r), Path::Absent, SAK_ONLY));
        }
    }
    v
}

/// LNURL-pay links: creation on a wallet (Wallet Admin role with a pak, LNPay §3.5), reading
/// (account keys of the owner) and updating (sak only).
fn lnurlp_route_cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.push(case(CreateLnurlp, Api::Sak, Path::Id, OK));
    for r in ROLES {
        v.push(case(CreateLnurlp, Api::Sak, Path::Key(r), OK));
        let expect = match r {
            Waka => OK,
            // They may deposit, but making a link needs the admin role.
            Waki | Waklp | Wakewa => Refused(Denied("Wallet Admin")),
            Wakr | Waklw | Wakewv => Refused(Denied("wallet_deposit")),
        };
        v.push(case(CreateLnurlp, Api::Pak, Path::Key(r), expect));
        v.push(case(CreateLnurlp, Api::Wallet(r), Path::Key(r), NOT_FOUND));
    }
    v.extend([
        case(CreateLnurlp, Api::Pak, Path::Id, PAK_NEEDS_KEY),
        case(CreateLnurlp, Api::Unknown, Path::Key(Waka), NO_CREDS),
        case(CreateLnurlp, Api::NoKey, Path::Key(Waka), NO_CREDS),
        case(CreateLnurlp, Api::SakB, Path::Id, NOT_FOUND),
        case(CreateLnurlp, Api::SakB, Path::Key(Waka), NOT_FOUND),
        case(CreateLnurlp, Api::PakB, Path::Key(Waka), PAK_NEEDS_KEY),
        case(GetLnurlp, Api::Sak, Path::Absent, OK),
        case(GetLnurlp, Api::Pak, Path::Absent, OK),
        case(GetLnurlp, Api::SakB, Path::Absent, NO_LNURLP),
        case(GetLnurlp, Api::PakB, Path::Absent, NO_LNURLP),
        case(GetLnurlp, Api::Unknown, Path::Absent, NO_CREDS),
        case(GetLnurlp, Api::NoKey, Path::Absent, NO_CREDS),
        case(UpdateLnurlp, Api::Sak, Path::Absent, OK),
        case(UpdateLnurlp, Api::Pak, Path::Absent, SAK_ONLY),
        case(UpdateLnurlp, Api::SakB, Path::Absent, NO_LNURLP),
        case(UpdateLnurlp, Api::PakB, Path::Absent, SAK_ONLY),
        case(UpdateLnurlp, Api::Unknown, Path::Absent, NO_CREDS),
        case(UpdateLnurlp, Api::NoKey, Path::Absent, NO_CREDS),
    ]);
    for r in ROLES {
        v.push(case(GetLnurlp, Api::Wallet(r), Path::Absent, SAK_ONLY));
        v.push(case(UpdateLnurlp, Api::Wallet(r), Path::Absent, SAK_ONLY));
    }
    v
}

// ------------------------------------------------------------------------------------ runner

/// Everything the matrix runs against.
struct World {
    /// Account A's wallet under test.
    a: WalletKeys,
    /// Another wallet of account A (transfer destination).
    a2: WalletKeys,
    /// Account B's keys and one wallet.
    sak_b: String,
    pak_b: String,
    b: WalletKeys,
    /// An lnTx (invoice) of wallet A.
    lntx_id: String,
    /// An async keysend job of wallet A.
    job_id: String,
    /// Wallet A's default LNURL-pay link (empty without `public_url`).
    link_id: String,
    /// The loopback LNURL-pay service.
    lnurl: lnurl_server::Lnurl,
}

const UNKNOWN_KEY: &str = "sak_0000000000000000000000000000dead";

/// Creates account B through the service (the API cannot create accounts) and a wallet in it
/// through the API.
async fn second_account(s: &TestServer) -> (String, String, WalletKeys) {
    let acct = satchel_service::wallets::create_account(&s.running().store, "B")
        .await
        .unwrap();
    let sak_b = acct.secret_key.expose().to_owned();
    let pak_b = acct.public_key.expose().to_owned();
    let r = s.post(&sak_b, "/wallet", json!({"user_label": "B1"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let b = keys_of(&r.json);
    (sak_b, pak_b, b)
}

/// `TestServer::fund` reads balances with account A's sak; this is the same for another account.
async fn fund_other_account(s: &TestServer, sak: &str, w: &WalletKeys, sats: u64) {
    let r = s
        .post(
            sak,
            &format!("/wallet/{}/invoice", w.waka),
            json!({"num_satoshis": sats}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let b = satchel_domain::Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
    s.scripted.pay_our_invoice(&b, None).unwrap();
    for _ in 0..200 {
        let r = s.get(sak, &format!("/wallet/{}", w.id)).await;
        if r.json["balance"].as_u64() == Some(sats) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("wallet {} was never funded", w.id);
}

fn keys_of(created: &Value) -> WalletKeys {
    let k = |role: &str| {
        created["access_keys"][role][0]
            .as_str()
            .unwrap_or_else(|| panic!("no {role} key in {created}"))
            .to_owned()
    };
    WalletKeys {
        id: created["id"].as_str().unwrap().to_owned(),
        waka: k("Wallet Admin"),
        waki: k("Wallet Invoice"),
        wakr: k("Wallet Read"),
        waklw: k("Wallet LNURL Withdraw"),
        waklp: k("Wallet LNURL Pay"),
        wakewa: k("Wallet External Website Admin"),
        wakewv: k("Wallet External Website View"),
    }
}

async fn setup(s: &TestServer) -> World {
    let a = s.create_wallet("A").await;
    let a2 = s.create_wallet("A2").await;
    s.fund(&a, 10_000).await;
    let (sak_b, pak_b, b) = second_account(s).await;
    fund_other_account(s, &sak_b, &b, 1_000).await;
    let lntx_id = s.invoice(&a, 21).await["id"].as_str().unwrap().to_owned();
    let r = s
        .post_with(
            &s.sak,
            &format!("/wallet/{}/keysend", a.waka),
            json!({"dest_pubkey": s.scripted.external_pubkey().to_hex(), "num_satoshis": 10}),
            &[("X-LNPAY-ASYNC", "1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let job_id = r.json["id"].as_str().unwrap().to_owned();
    // Let the async keysend finish so it does not move money during the matrix.
    s.wait_balance_msat(&a, (10_000 - 10) * 1000).await;
    let link_id = s.get(&s.sak, &format!("/wallet/{}", a.id)).await.json["default_lnurlpay_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    World {
        link_id,
        lnurl: lnurl_server::lnurl_server(s.scripted.clone()).await,
        a,
        a2,
        sak_b,
        pak_b,
        b,
        lntx_id,
        job_id,
    }
}

/// What a refused call must not have changed: every wallet balance of both accounts, both
/// accounts' transaction counts and wallet counts, and the ledger's size.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    wallets_a: Vec<(String, i64)>,
    wallets_b: Vec<(String, i64)>,
    wtx_count_a: String,
    wtx_count_b: String,
    wallet_a_wtx_count: String,
    ledger_txns: u64,
    postings: u64,
}

/// A response body cut for failure messages.
fn short(t: &str) -> String {
    if t.len() > 240 {
        format!(
            "{}…",
            &t[..t.char_indices().nth(240).map_or(t.len(), |(i, _)| i)]
        )
    } else {
        t.to_owned()
    }
}

fn total_count(r: &Resp) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.headers["x-pagination-total-count"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn wallets_of(s: &TestServer, sak: &str) -> Vec<(String, i64)> {
    let r = s.get(sak, "/wallets?per-page=50").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut v: Vec<(String, i64)> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap().to_owned(),
                w["balance_msat"].as_i64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn snapshot(s: &TestServer, w: &World) -> Snapshot {
    let audit = s.running().store.audit().await.unwrap();
    Snapshot {
        wallets_a: wallets_of(s, &s.sak).await,
        wallets_b: wallets_of(s, &w.sak_b).await,
        wtx_count_a: total_count(&s.get(&s.sak, "/wallet-transactions").await),
        wtx_count_b: total_count(&s.get(&w.sak_b, "/wallet-transactions").await),
        wallet_a_wtx_count: total_count(
            &s.get(&s.sak, &format!("/wallet/{}/transactions", w.a.id))
                .await,
        ),
        ledger_txns: audit.transactions,
        postings: audit.postings,
    }
}

fn api_key<'a>(s: &'a TestServer, w: &'a World, api: Api) -> Option<&'a str> {
    match api {
        Api::Sak => Some(&s.sak),
        Api::Pak => Some(&s.pak),
        Api::SakB => Some(&w.sak_b),
        Api::PakB => Some(&w.pak_b),
        Api::Wallet(r) => Some(r.key(&w.a)),
        Api::Unknown => Some(UNKNOWN_KEY),
        Api::NoKey => None,
    }
}

fn path_key(w: &World, p: Path) -> &str {
    match p {
        Path::Id => &w.a.id,
        Path::Key(r) => r.key(&w.a),
        Path::Absent => "",
    }
}

/// Method, path (under `/v1`) and body of a call; bodies are valid so allowed calls succeed.
fn request(s: &TestServer, w: &World, c: &Case) -> (Method, String, Option<Value>) {
    let k = path_key(w, c.path);
    let carol = s.scripted.external_pubkey().to_hex();
    match c.ep {
        GetWallet => (Method::GET, format!("/wallet/{k}"), None),
        WalletTxs => (Method::GET, format!("/wallet/{k}/transactions"), None),
        Invoice => (
            Method::POST,
            format!("/wallet/{k}/invoice"),
            Some(json!({"num_satoshis": 10, "memo": "perm"})),
        ),
        Withdraw => {
            let inv = s.external_invoice(10, "perm");
            (
                Method::POST,
                format!("/wallet/{k}/withdraw"),
                Some(json!({"payment_request": inv.as_str()})),
            )
        }
        Keysend => (
            Method::POST,
            format!("/wallet/{k}/keysend"),
            Some(json!({"dest_pubkey": carol, "num_satoshis": 10})),
        ),
        Transfer => (
            Method::POST,
            format!("/wallet/{k}/transfer"),
            Some(json!({"dest_wallet_id": w.a2.id, "num_satoshis": 10, "memo": "perm"})),
        ),
        CreateWallet => (
            Method::POST,
            "/wallet".to_owned(),
            Some(json!({"user_label": "perm"})),
        ),
        ListWallets => (Method::GET, "/wallets".to_owned(), None),
        AccountTxs => match c.path {
            Path::Absent => (Method::GET, "/wallet-transactions".to_owned(), None),
            _ => (
                Method::GET,
                format!("/wallet-transactions?wallet_id={k}"),
                None,
            ),
        },
        GetLnTx => (Method::GET, format!("/lntx/{}", w.lntx_id), None),
        DecodeInvoice => {
            let inv = s.external_invoice(10, "decode me");
            (
                Method::GET,
                format!(
                    "/node/default/payments/decodeinvoice?payment_request={}",
                    inv.as_str()
                ),
                None,
            )
        }
        QueryRoutes => (
            Method::GET,
            format!("/node/default/payments/queryroutes?pub_key={carol}&amt=10"),
            None,
        ),
        GetJob => (Method::GET, format!("/job/{}", w.job_id), None),
        CreateLnurlp => (Method::POST, format!("/wallet/{k}/lnurlp"), Some(json!({}))),
        GetLnurlp => (Method::GET, format!("/lnurlp/{}", w.link_id), None),
        UpdateLnurlp => (
            Method::POST,
            format!("/lnurlp/{}", w.link_id),
            Some(json!({"user_label": "perm"})),
        ),
        LnurlPay => (
            Method::POST,
            format!("/wallet/{k}/lnurlp/pay"),
            Some(json!({"ln_address": w.lnurl.address("perm"), "amt_msat": 10_000})),
        ),
        Probe => (
            Method::GET,
            format!("/lnurlp/probe/{}", w.lnurl.address("perm")),
            None,
        ),
        Nodes => (Method::GET, "/nodes".to_owned(), None),
        Node => (Method::GET, "/node/default".to_owned(), None),
        Events => (Method::GET, format!("/wallet/{k}/events"), None),
    }
}

fn refusal_message(w: &World, c: &Case, r: &Refusal) -> String {
    match r {
        InvalidCredentials => "Your request was made with invalid credentials.".to_owned(),
        WalletNotFound => format!("Wallet not found: {}", path_key(w, c.path)),
        PakNeedsWalletKey => "Invalid Wallet Access Key. Keys prefixed with waka_, waki_, wakr, \
                              waklw are valid when using pak_"
            .to_owned(),
        Denied(perm) => {
            let Path::Key(role) = c.path else {
                panic!("Denied needs a key in the path: {c:?}")
            };
            format!(
                "{}_ access key provided does not permission to do this: {perm}",
                role.prefix()
            )
        }
        SecretOnly => "This resource can only be access with secret access key.".to_owned(),
        LnTxNotFound => "LnTx not found".to_owned(),
        JobNotAllowed => "You are not allowed to access this resource!".to_owned(),
        UnknownLnurlp => "Unknown lnurlpay id".to_owned(),
    }
}

async fn send(
    s: &TestServer,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Resp {
    let mut rb = s.http.request(method, s.v1(path));
    if let Some(k) = key {
        rb = rb.header("X-Api-Key", k);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    if path.ends_with("/events") {
        // A stream that never ends: an allowed call is judged on its head alone.
        let r = rb.send().await.unwrap();
        if r.status() == StatusCode::OK {
            assert_eq!(r.headers()["content-type"], "text/event-stream");
            return Resp {
                status: r.status(),
                headers: r.headers().clone(),
                json: Value::Null,
                text: String::new(),
            };
        }
        return s.send_response(r).await;
    }
    s.send(rb).await
}

/// Runs one case; returns a description of what went wrong, if anything.
async fn run_case(s: &TestServer, w: &World, c: &Case) -> Option<String> {
    let (method, path, body) = request(s, w, c);
    let before = snapshot(s, w).await;
    let r = send(s, api_key(s, w, c.api), method.clone(), &path, body).await;
    let after = snapshot(s, w).await;
    let what = format!("{c:?} ({method} {path})");
    match &c.expect {
        Allowed => {
            if r.status != c.ep.ok_status() {
                return Some(format!(
                    "{what}: expected {} got {} {}",
                    c.ep.ok_status(),
                    r.status,
                    short(&r.text)
                ));
            }
            if c.ep.writes() && before == after {
                return Some(format!("{what}: allowed call wrote nothing"));
            }
            if !c.ep.writes() && before != after {
                return Some(format!("{what}: read-only call changed state"));
            }
            // Account B must never see account A's wallet.
            if matches!(c.api, Api::SakB | Api::PakB) && r.text.contains(&w.a.id) {
                return Some(format!(
                    "{what}: account B saw wallet A: {}",
                    short(&r.text)
                ));
            }
            None
        }
        Refused(why) => {
            let msg = refusal_message(w, c, why);
            let request_id = r.headers["x-request-id"].to_str().unwrap();
            let (status, name) = match why {
                UnknownLnurlp => (StatusCode::NOT_FOUND, "Not Found"),
                _ => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            };
            let expected = json!({"name": name, "message": msg, "code": 0,
                                  "status": status.as_u16(), "request_id": request_id});
            let mut problems = String::new();
            if r.status != status || r.json != expected {
                let _ = write!(
                    problems,
                    "{what}: expected {status} {msg:?}, got {} {}",
                    r.status,
                    short(&r.text)
                );
            } else if status == StatusCode::UNAUTHORIZED
                && r.headers
                    .get("www-authenticate")
                    .map(|h| h.to_str().unwrap())
                    != Some("Basic realm=\"api\"")
            {
                let _ = write!(problems, "{what}: 401 without the Basic challenge");
            }
            if before != after {
                let _ = write!(
                    problems,
                    "{what}: refused call wrote something: {before:?} -> {after:?}"
                );
            }
            (!problems.is_empty()).then_some(problems)
        }
    }
}

async fn run_all(s: &TestServer, w: &World, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        if let Some(f) = run_case(s, w, c).await {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_routes_matrix() {
    let cases = wallet_route_cases();
    eprintln!("{} wallet-route cases", cases.len());
    on_each_db(|s| {
        let cases = cases.clone();
        async move {
            let w = setup(&s).await;
            run_all(&s, &w, &cases).await;
            s
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lnurlp_routes_matrix() {
    let cases = lnurlp_route_cases();
    eprintln!("{} lnurlp-route cases", cases.len());
    for (kind, db) in satchel_testkit::db::TestDb::all().await {
        eprintln!("--- running on {kind}");
        let cfg = satchel_service::ServiceConfig {
            public_url: Some(
                satchel_service::lnurlw::PublicUrl::parse("https://pay.example.com").unwrap(),
            ),
            ..common::test_service_config()
        };
        let s = TestServer::start_with(db, cfg).await;
        let w = setup(&s).await;
        assert!(w.link_id.starts_with("lnurlp_"), "{}", w.link_id);
        run_all(&s, &w, &cases).await;
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn account_routes_matrix() {
    let cases = account_route_cases();
    eprintln!("{} account-route cases", cases.len());
    on_each_db(|s| {
        let cases = cases.clone();
        async move {
            let w = setup(&s).await;
            run_all(&s, &w, &cases).await;
            // An unknown lnTx / job reads like a foreign one.
            let r = s.get(&s.sak, "/lntx/lntx_doesnotexist0000000000000").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
            assert_eq!(r.json["message"], "LnTx not found");
            let r = s.get(&s.pak, "/job/nope").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
            assert_eq!(
                r.json["message"],
                "You are not allowed to access this resource!"
            );
            // B's own lnTx is readable by B, not by A.
            let inv = s
                .post(
                    &w.sak_b,
                    &format!("/wallet/{}/invoice", w.b.waki),
                    json!({"num_satoshis": 5}),
                )
                .await;
            assert_eq!(inv.status, StatusCode::CREATED, "{}", inv.text);
            let id = inv.json["id"].as_str().unwrap();
            assert_eq!(
                s.get(&w.pak_b, &format!("/lntx/{id}")).await.status,
                StatusCode::OK
            );
            let r = s.get(&s.sak, &format!("/lntx/{id}")).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            assert_eq!(r.json["message"], "LnTx not found");
            s
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_key_as_api_key_refused_on_lntx_and_job() {
    let cases = wallet_key_as_api_key_on_lntx_and_job();
    on_each_db(|s| {
        let cases = cases.clone();
        async move {
            let w = setup(&s).await;
            run_all(&s, &w, &cases).await;
            s
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_key_as_api_key_refused_on_node_routes() {
    let cases = wallet_key_as_api_key_on_node_routes();
    on_each_db(|s| {
        let cases = cases.clone();
        async move {
            let w = setup(&s).await;
            run_all(&s, &w, &cases).await;
            s
        }
    })
    .await;
}

/// The three credential transports lead to the same decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transports_share_the_matrix() {
    on_each_db(|s| async move {
        let a = s.create_wallet("T").await;
        // ?access-token=
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}?access-token={}", a.waki, s.pak))),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "waki_ access key provided does not permission to do this: wallet_read"
        );
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}?access-token={}", a.wakr, s.pak))),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallets?access-token={}", s.pak))),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "This resource can only be access with secret access key."
        );
        // Basic auth, key as the username.
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}", a.id)))
                    .basic_auth(&s.sak, Some("")),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = s
            .send(
                s.http
                    .post(s.v1(&format!("/wallet/{}/transfer", a.wakr)))
                    .basic_auth(&s.pak, Some(""))
                    .json(&json!({"dest_wallet_id": a.id, "num_satoshis": 1})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "wakr_ access key provided does not permission to do this: wallet_transfer"
        );
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}", a.waka)))
                    .basic_auth(&a.waka, Some("")),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(r.json["message"], format!("Wallet not found: {}", a.waka));
        s
    })
    .await;
}

/// Legacy `wa_` / `wi_` / `wr_` keys imported from LNPay behave as Wallet Admin / Invoice / Read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_keys_keep_their_roles() {
    on_each_db(|s| async move {
        let account_id: AccountId = s
            .running()
            .store
            .find_key(&KeyHash::of(&s.sak))
            .await
            .unwrap()
            .unwrap()
            .account_id;
        let w = s.create_wallet("legacy").await;
        let dest = s.create_wallet("legacy dest").await;
        let wallet_id = WalletId::parse(&w.id).unwrap();
        let (wa, wi, wr) = (
            "wa_Opnn4kGOGBMnfCLFXtsDnjTb",
            "wi_Xyzzy4kGOGBMnfCLFXtsDnjT",
            "wr_Plugh4kGOGBMnfCLFXtsDnjT",
        );
        let wallets = &s.running().services.wallets;
        assert_eq!(
            wallets
                .import_key(&account_id, &wallet_id, wa)
                .await
                .unwrap(),
            KeyRole::WalletAdmin
        );
        assert_eq!(
            wallets
                .import_key(&account_id, &wallet_id, wi)
                .await
                .unwrap(),
            KeyRole::WalletInvoice
        );
        assert_eq!(
            wallets
                .import_key(&account_id, &wallet_id, wr)
                .await
                .unwrap(),
            KeyRole::WalletRead
        );
        s.fund(&w, 1_000).await;

        let carol = s.scripted.external_pubkey().to_hex();
        let denied = |prefix: &str, perm: &str| {
            format!("{prefix}_ access key provided does not permission to do this: {perm}")
        };
        // (key, endpoint, pak allowed?, permission named when refused)
        let table: Vec<(&str, Ep, bool, &str)> = vec![
            (wa, GetWallet, true, "wallet_read"),
            (wa, WalletTxs, true, "wallet_read"),
            (wa, Invoice, true, "wallet_deposit"),
            (wa, Withdraw, true, "wallet_withdraw"),
            (wa, Keysend, true, "wallet_withdraw"),
            (wa, Transfer, true, "wallet_transfer"),
            (wi, GetWallet, false, "wallet_read"),
            (wi, WalletTxs, false, "wallet_read"),
            (wi, Invoice, true, "wallet_deposit"),
            (wi, Withdraw, false, "wallet_withdraw"),
            (wi, Keysend, false, "wallet_withdraw"),
            (wi, Transfer, false, "wallet_transfer"),
            (wr, GetWallet, true, "wallet_read"),
            (wr, WalletTxs, true, "wallet_read"),
            (wr, Invoice, false, "wallet_deposit"),
            (wr, Withdraw, false, "wallet_withdraw"),
            (wr, Keysend, false, "wallet_withdraw"),
            (wr, Transfer, false, "wallet_transfer"),
        ];
        let mut failures = Vec::new();
        for (api, api_name) in [(&s.sak, "sak"), (&s.pak, "pak")] {
            for (key, ep, pak_ok, perm) in &table {
                let allowed = api_name == "sak" || *pak_ok;
                let (method, path, body) = match ep {
                    GetWallet => (Method::GET, format!("/wallet/{key}"), None),
                    WalletTxs => (Method::GET, format!("/wallet/{key}/transactions"), None),
                    Invoice => (
                        Method::POST,
                        format!("/wallet/{key}/invoice"),
                        Some(json!({"num_satoshis": 3})),
                    ),
                    Withdraw => (
                        Method::POST,
                        format!("/wallet/{key}/withdraw"),
                        Some(json!({"payment_request": s.external_invoice(3, "legacy").as_str()})),
                    ),
                    Keysend => (
                        Method::POST,
                        format!("/wallet/{key}/keysend"),
                        Some(json!({"dest_pubkey": carol, "num_satoshis": 3})),
                    ),
                    Transfer => (
                        Method::POST,
                        format!("/wallet/{key}/transfer"),
                        Some(json!({"dest_wallet_id": dest.id, "num_satoshis": 3})),
                    ),
                    _ => unreachable!(),
                };
                let before = (s.balance_msat(&w).await, s.balance_msat(&dest).await);
                let r = send(&s, Some(api), method, &path, body).await;
                let after = (s.balance_msat(&w).await, s.balance_msat(&dest).await);
                let label = format!("{api_name} + {key} {ep:?}");
                if allowed {
                    if r.status != ep.ok_status() {
                        failures.push(format!("{label}: got {} {}", r.status, r.text));
                    }
                    if *ep == GetWallet && r.json["id"] != w.id.as_str() {
                        failures.push(format!("{label}: wrong wallet {}", r.text));
                    }
                } else {
                    let prefix = key.split('_').next().unwrap();
                    if r.status != StatusCode::UNAUTHORIZED
                        || r.json["message"] != denied(prefix, perm)
                    {
                        failures.push(format!("{label}: got {} {}", r.status, r.text));
                    }
                    if before != after {
                        failures.push(format!("{label}: refused call moved money"));
                    }
                }
            }
        }
        // Another account cannot use them.
        let (sak_b, pak_b, _) = second_account(&s).await;
        for key in [wa, wi, wr] {
            let r = s.get(&sak_b, &format!("/wallet/{key}")).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
            assert_eq!(r.json["message"], format!("Wallet not found: {key}"));
            let r = s.get(&pak_b, &format!("/wallet/{key}")).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
            // And a legacy key is not an API key either.
            let r = s.get(key, &format!("/wallet/{key}")).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
            assert_eq!(r.json["message"], format!("Wallet not found: {key}"));
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        s
    })
    .await;
}

/// Keys are shown once, in the wallet-creation response; nothing else ever contains them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_material_only_at_creation() {
    on_each_db(|s| async move {
        let r = s
            .post(&s.pak, "/wallet", json!({"user_label": "secretive"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let w = keys_of(&r.json);
        for role in KeyRole::WALLET_ROLES {
            let list = r.json["access_keys"][role.display_name()]
                .as_array()
                .unwrap();
            assert_eq!(list.len(), 1, "{}", r.text);
            assert!(
                list[0]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{}_", role.prefix()))
            );
        }
        let other = s.create_wallet("other").await;
        s.fund(&w, 1_000).await;
        let carol = s.scripted.external_pubkey().to_hex();
        let inv = s.external_invoice(5, "leak?");
        let mut texts = Vec::new();
        let lntx = s
            .post(
                &s.pak,
                &format!("/wallet/{}/invoice", w.waki),
                json!({"num_satoshis": 7}),
            )
            .await;
        assert_eq!(lntx.status, StatusCode::CREATED, "{}", lntx.text);
        let lntx_id = lntx.json["id"].as_str().unwrap().to_owned();
        texts.push(lntx.text);
        for (key, path, body) in [
            (
                &s.pak,
                format!("/wallet/{}/withdraw", w.waka),
                json!({"payment_request": inv.as_str()}),
            ),
            (
                &s.pak,
                format!("/wallet/{}/keysend", w.waklw),
                json!({"dest_pubkey": carol, "num_satoshis": 5}),
            ),
            (
                &s.sak,
                format!("/wallet/{}/transfer", w.id),
                json!({"dest_wallet_id": other.id, "num_satoshis": 5}),
            ),
        ] {
            let r = s.post(key, &path, body).await;
            assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.text);
            texts.push(r.text);
        }
        for (key, path) in [
            (&s.sak, format!("/wallet/{}", w.id)),
            (&s.pak, format!("/wallet/{}", w.waka)),
            (&s.pak, format!("/wallet/{}", w.wakewv)),
            (&s.sak, format!("/wallet/{}", w.waklp)),
            (&s.sak, "/wallets".to_owned()),
            (&s.pak, format!("/wallet/{}/transactions", w.wakr)),
            (&s.sak, "/wallet-transactions".to_owned()),
            (&s.sak, format!("/wallet-transactions?wallet_id={}", w.id)),
            (&s.pak, format!("/lntx/{lntx_id}")),
        ] {
            let r = s.get(key, &path).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
            texts.push(r.text);
        }
        let secrets = [
            s.sak.as_str(),
            s.pak.as_str(),
            &w.waka,
            &w.waki,
            &w.wakr,
            &w.waklw,
            &w.waklp,
            &w.wakewa,
            &w.wakewv,
        ];
        for t in &texts {
            assert!(!t.contains("access_keys"), "access_keys in {t}");
            for k in secrets {
                assert!(!t.contains(k), "key {k} leaked in {t}");
            }
            // Not even the random part of a key.
            for k in &secrets[2..] {
                let random = k.split_once('_').unwrap().1;
                assert!(!t.contains(random), "key material of {k} leaked in {t}");
            }
        }
        s
    })
    .await;
}
