//! Schema and forward-only migrations. Never edit a released migration: add a new one.
//!
//! Money columns are `BIGINT` millisatoshis. Wallet balances carry `CHECK (balance_msat >= 0)` as
//! the second net behind the in-transaction balance check. Postings are append-only.

use crate::StoreError;
use crate::db::{Conn, Dialect};

/// Migrations in order; `{SERIAL}` is the dialect's auto-increment primary key type.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE wallets (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    user_label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    balance_msat BIGINT NOT NULL DEFAULT 0 CHECK (balance_msat >= 0),
    wtx_count BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'active',
    node_id TEXT NOT NULL
);
CREATE INDEX wallets_account ON wallets(account_id, created_at);
CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    wallet_id TEXT REFERENCES wallets(id),
    role TEXT NOT NULL,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    suspended INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_wallet ON api_keys(wallet_id);
CREATE TABLE system_accounts (
    code TEXT PRIMARY KEY,
    balance_msat BIGINT NOT NULL DEFAULT 0
);
INSERT INTO system_accounts (code, balance_msat) VALUES ('sys:lightning', 0);
INSERT INTO system_accounts (code, balance_msat) VALUES ('sys:in_flight', 0);
INSERT INTO system_accounts (code, balance_msat) VALUES ('sys:unclaimed', 0);
CREATE TABLE ledger_txns (
    id {SERIAL},
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX ledger_txns_ref ON ledger_txns(ref);
CREATE TABLE postings (
    txn_id BIGINT NOT NULL REFERENCES ledger_txns(id),
    account TEXT NOT NULL,
    amount_msat BIGINT NOT NULL
);
CREATE INDEX postings_account ON postings(account);
CREATE INDEX postings_txn ON postings(txn_id);
CREATE TABLE ln_txs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    wallet_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    node_id TEXT NOT NULL,
    dest_pubkey TEXT NOT NULL,
    payment_request TEXT NOT NULL,
    payment_hash TEXT NOT NULL,
    memo TEXT NOT NULL,
    description_hash TEXT,
    payment_addr TEXT,
    amount_msat BIGINT NOT NULL CHECK (amount_msat >= 0),
    fee_msat BIGINT NOT NULL DEFAULT 0 CHECK (fee_msat >= 0),
    fee_limit_msat BIGINT NOT NULL DEFAULT 0 CHECK (fee_limit_msat >= 0),
    expiry_secs BIGINT,
    expires_at BIGINT,
    preimage TEXT,
    settled INTEGER NOT NULL DEFAULT 0,
    settled_at BIGINT,
    node_settled INTEGER NOT NULL DEFAULT 0,
    is_keysend INTEGER NOT NULL DEFAULT 0,
    custom_records TEXT,
    pass_thru TEXT NOT NULL,
    status TEXT,
    failure_reason TEXT
);
CREATE UNIQUE INDEX ln_txs_incoming_hash ON ln_txs(payment_hash) WHERE direction = 'in';
CREATE UNIQUE INDEX ln_txs_outgoing_live_hash ON ln_txs(payment_hash)
    WHERE direction = 'out' AND status IN ('reserved', 'dispatched', 'unknown', 'succeeded');
CREATE INDEX ln_txs_live ON ln_txs(status) WHERE status IN ('reserved', 'dispatched', 'unknown');
CREATE TABLE wtxs (
    seq {SERIAL},
    id TEXT NOT NULL UNIQUE,
    wallet_id TEXT NOT NULL REFERENCES wallets(id),
    account_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    amount_msat BIGINT NOT NULL,
    wtx_type INTEGER NOT NULL,
    user_label TEXT NOT NULL,
    lntx_id TEXT,
    pass_thru TEXT NOT NULL
);
CREATE INDEX wtxs_wallet ON wtxs(wallet_id, seq);
CREATE INDEX wtxs_account ON wtxs(account_id, seq);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    wallet_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    result_wtx_id TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_status ON jobs(status);
CREATE TABLE cursors (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
)
"#,
    r#"
INSERT INTO system_accounts (code, balance_msat) VALUES ('sys:opening', 0)
"#,
    r#"
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    endpoint_url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_account ON webhooks(account_id);
CREATE TABLE events (
    seq {SERIAL},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    wallet_id TEXT,
    wtx_id TEXT,
    lntx_id TEXT,
    balance_msat BIGINT,
    body TEXT
);
CREATE INDEX events_account ON events(account_id, seq);
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events(id),
    webhook_id TEXT NOT NULL REFERENCES webhooks(id),
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT
);
CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
CREATE INDEX deliveries_webhook ON deliveries(webhook_id, created_at);
CREATE TABLE delivery_attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries(id),
    at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code BIGINT,
    error TEXT,
    response_excerpt TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id, at)
"#,
    r#"
CREATE TABLE operator_actions (
    seq {SERIAL},
    at BIGINT NOT NULL,
    operator TEXT NOT NULL,
    action TEXT NOT NULL,
    lntx_id TEXT,
    reason TEXT NOT NULL,
    details TEXT NOT NULL
)
"#,
    // History is read per wallet or per account, newest first: those composite indexes must
    // serve it. On Postgres a standalone index on `seq` (the primary key) tempts the planner into
    // scanning the whole table backwards for a wallet whose rows are old (measured: 180 ms at 1M
    // rows); `id` stays unique. Payments look their WTXs up by lntx.
    r#"
CREATE INDEX wtxs_lntx ON wtxs(lntx_id);
PGONLY ALTER TABLE wtxs DROP CONSTRAINT wtxs_pkey
"#,
    // A hash's outgoing attempts, newest first (`latest_outgoing`, on every keysend and
    // withdraw). Without it each lookup scanned every Lightning transaction: 38 ms of CPU per
    // keysend once 40,000 invoices existed.
    r#"
CREATE INDEX ln_txs_outgoing_hash ON ln_txs(payment_hash, created_at) WHERE direction = 'out'
"#,
    // Postgres checks a foreign key by taking `FOR KEY SHARE` on the parent row. A WTX inserted
    // while another transaction holds a hot wallet's row lock (the ledger writes entries before
    // it moves balances) turned that wallet's row into a multixact, and every later read of it
    // into a multixact lookup: 15% of all CPU in a transfer benchmark. Checked at commit
    // instead, the key is checked after this transaction has itself updated the wallet (every
    // WTX moves its wallet's entry count), so it already holds a stronger lock and adds none.
    r#"
PGONLY ALTER TABLE wtxs ALTER CONSTRAINT wtxs_wallet_id_fkey DEFERRABLE INITIALLY DEFERRED
"#,
    // Idempotency keys (see `idempotency.rs`): written in the transaction of the money movement
    // the keyed request made; the primary key is what stops a second one. No foreign key to
    // accounts: a key check would lock the account row on every keyed request.
    r#"
CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    token TEXT NOT NULL,
    effect TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    status_code BIGINT,
    content_type TEXT,
    body TEXT,
    PRIMARY KEY (account_id, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at)
"#,
    // LNURL-withdraw links (LUD-03; `lnurlw.rs`). The link's secret (`ott`) is stored only as
    // its SHA-256, like access keys. A one-time link is spent by setting `used_hash` in the
    // transaction that reserves (or internally settles) its payment, guarded by
    // `used_hash IS NULL`, so two callbacks racing on one link cannot both pay.
    r#"
CREATE TABLE lnurlw_links (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    wallet_id TEXT NOT NULL REFERENCES wallets(id),
    kind TEXT NOT NULL CHECK (kind IN ('once', 'static')),
    ott_hash TEXT NOT NULL UNIQUE,
    k1 TEXT NOT NULL,
    amount_msat BIGINT CHECK (amount_msat > 0),
    memo TEXT,
    pass_thru TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    used_hash TEXT,
    used_at BIGINT
);
CREATE INDEX lnurlw_links_wallet ON lnurlw_links(wallet_id)
"#,
    // The `X-Request-Id` of the API request that caused an event (NULL when none did: incoming
    // payments, recovery), sent with its webhook deliveries so a receiver can quote it.
    r#"
ALTER TABLE events ADD COLUMN request_id TEXT
"#,
    // Wallets move in whole sats only, so that the `num_satoshis` of a wallet's history add up
    // to its balance. The operator's revenue account takes the sub-sat rounding, and `RUST
    // sats_sweep` (a data step in Rust, `sats.rs`, because it posts balanced ledger
    // transactions through the ledger's own code) sweeps what older versions left below the
    // sat. Being a step of this migration, it runs once, in the migration's transaction.
    r#"
INSERT INTO system_accounts (code, balance_msat) VALUES ('sys:revenue', 0);
RUST sats_sweep
"#,
    // LNURL-pay links and Lightning Addresses (LUD-06/16; `lnurlp.rs`). Usernames are stored
    // lower case under a unique index (one domain: `public_url`'s host; NULLs do not collide).
    // An invoice a link issued names the WTX type its credit books (`deposit_wtx_type`, NULL:
    // `ln_deposit`), and its LUD-21 verify id (random, unguessable) maps to its payment hash.
    // A wallet's default link is the one made with it (or, for older wallets, the first made).
    r#"
CREATE TABLE lnurlp_links (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    wallet_id TEXT NOT NULL REFERENCES wallets(id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    user_label TEXT,
    min_sendable_msat BIGINT NOT NULL CHECK (min_sendable_msat >= 1000),
    max_sendable_msat BIGINT NOT NULL,
    short_desc TEXT NOT NULL,
    comment_allowed BIGINT NOT NULL DEFAULT 0 CHECK (comment_allowed >= 0),
    username TEXT UNIQUE,
    metadata TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    CHECK (max_sendable_msat >= min_sendable_msat)
);
CREATE INDEX lnurlp_links_wallet ON lnurlp_links(wallet_id);
CREATE TABLE lnurlp_invoices (
    verify_id TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    payment_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
ALTER TABLE wallets ADD COLUMN default_lnurlp_id TEXT;
ALTER TABLE ln_txs ADD COLUMN deposit_wtx_type INTEGER
"#,
    // The WTX type an outgoing payment books when it settles (`wtxType` code; NULL, as for
    // every older row, is `ln_withdrawal`). Stored with the reserve, because a payment may be
    // settled by another process or after a restart (`ln_lnurl_pay_outbound` for LNURL-pay).
    r#"
ALTER TABLE ln_txs ADD COLUMN wtx_type INTEGER
"#,
    // Live events (SSE, `events.rs`): every wallet's events are now recorded, webhook or not,
    // and a reader reads its wallet's events after its cursor. Nothing reads them per account,
    // so that index goes: each event row keeps the same number of index entries.
    r#"
CREATE INDEX events_wallet ON events(wallet_id, seq);
DROP INDEX events_account
"#,
    // SQLite only: recording every wallet's events made `events_wallet` the dearest part of an
    // event. Group commit writes each dirty page to the WAL once per batch, and an index
    // ordered by wallet puts every event of a batch on a different leaf page (a 4 KiB WAL frame
    // each: 25 pages per batch of 8 payments instead of 7). So SQLite keeps a wallet's latest
    // event `seq` on the wallet's own row (set by a trigger; the balance update has already
    // dirtied that page), and readers scan the `seq` tail (they read after a recent cursor). The backfill runs
    // while the index is still there. Postgres keeps the index: there each statement is a
    // round trip and a page more is nothing (`events.rs`).
    r#"
SQLITEONLY ALTER TABLE wallets ADD COLUMN last_event_seq BIGINT NOT NULL DEFAULT 0;
SQLITEONLY UPDATE wallets SET last_event_seq = COALESCE((SELECT MAX(seq) FROM events e WHERE e.wallet_id = wallets.id), 0);
SQLITEONLY DROP INDEX events_wallet;
RUST events_head_trigger
"#,
];

/// SQLite: every event moves its wallet's `last_event_seq` (see the last migration). A trigger,
/// so that every path that writes events keeps it, at no statement of its own.
const EVENTS_HEAD_TRIGGER: &str = "CREATE TRIGGER events_wallet_head AFTER INSERT ON events \
     BEGIN UPDATE wallets SET last_event_seq = NEW.seq WHERE id = NEW.wallet_id; END";

fn render(sql: &str, dialect: Dialect) -> String {
    let serial = match dialect {
        Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    sql.replace("{SERIAL}", serial)
}

/// The schema version whose migration introduced `sys:revenue` and swept sub-sat remainders
/// (`sats.rs`); databases below it may hold msat remainders in wallets.
pub const SATS_VERSION: i64 = 11;

/// Brings the schema up to date inside the given (write) transaction.
pub async fn migrate(conn: &mut Conn) -> Result<(), StoreError> {
    migrate_to(conn, None).await
}

/// Migrates up to schema version `up_to` (all of them when `None`) inside the given (write)
/// transaction. Stopping early is for upgrade tests (see `Store::connect_at_schema`).
pub(crate) async fn migrate_to(conn: &mut Conn, up_to: Option<i64>) -> Result<(), StoreError> {
    // Two processes starting at once on one Postgres must not both migrate: serialise on an
    // advisory lock held until this transaction ends. (SQLite's BEGIN IMMEDIATE already does.)
    if conn.dialect() == Dialect::Postgres {
        conn.exec("SELECT pg_advisory_xact_lock(7286432101)", Vec::new())
            .await?;
    }
    conn.exec(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
        Vec::new(),
    )
    .await?;
    let current = match conn
        .fetch_opt("SELECT MAX(version) FROM schema_version", Vec::new())
        .await?
    {
        Some(row) => row.opt_i64(0)?.unwrap_or(0),
        None => 0,
    };
    let dialect = conn.dialect();
    for (i, m) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        if version <= current || up_to.is_some_and(|u| version > u) {
            continue;
        }
        for stmt in render(m, dialect)
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if stmt == "RUST sats_sweep" {
                crate::sats::sweep(conn).await?;
                continue;
            }
            // A trigger's body holds a `;`, which the split above would cut.
            if stmt == "RUST events_head_trigger" {
                if dialect == Dialect::Sqlite {
                    conn.exec(EVENTS_HEAD_TRIGGER, Vec::new()).await?;
                }
                continue;
            }
            // `PGONLY ` / `SQLITEONLY ` statements apply to that database only.
            let only = match (
                stmt.strip_prefix("PGONLY "),
                stmt.strip_prefix("SQLITEONLY "),
            ) {
                (Some(pg), _) => Some((pg, Dialect::Postgres)),
                (None, Some(lite)) => Some((lite, Dialect::Sqlite)),
                (None, None) => None,
            };
            match only {
                Some((sql, d)) if d == dialect => conn.exec(sql, Vec::new()).await?,
                Some(_) => 0,
                None => conn.exec(stmt, Vec::new()).await?,
            };
        }
        conn.exec(
            "INSERT INTO schema_version (version) VALUES ($1)",
            crate::args![version],
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SATS_VERSION` names the migration that holds the sweep (a merge that puts another
    /// migration before it must move the constant).
    #[test]
    fn sats_version_is_the_sweep() {
        let i = usize::try_from(SATS_VERSION - 1).unwrap();
        assert!(MIGRATIONS[i].contains("RUST sats_sweep"));
        assert!(MIGRATIONS[i].contains("sys:revenue"));
    }
}
