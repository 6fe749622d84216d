//! The store's operations. Each public method is one database transaction.

use satchel_domain::{
    AccountId, EventName, JobId, KeyHash, KeyRole, LnTxId, Msat, NodeId, PaymentHash,
    PaymentStatus, Preimage, WalletId, WtxId, WtxType, payment_charge, payment_reserve,
};

use crate::db::Conn;
use crate::idempotency;
use crate::ledger::{
    Account, NewWtx, SYS_IN_FLIGHT, SYS_LIGHTNING, SYS_OPENING, SYS_REVENUE, SYS_UNCLAIMED, leg,
    lock_wallet, post, read_wallets,
};
use crate::lnurlw::LinkClaim;
use crate::outbox::{Emit, emit};
use crate::records::*;
use crate::{Store, StoreError, args};

/// A key to store with a new account or wallet.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Role.
    pub role: KeyRole,
    /// SHA-256 of the key text.
    pub hash: KeyHash,
    /// Text before the first `_`.
    pub prefix: String,
}

/// A wallet to create.
#[derive(Debug, Clone)]
pub struct NewWallet {
    /// Id.
    pub id: WalletId,
    /// Owner.
    pub account_id: AccountId,
    /// Label.
    pub user_label: String,
    /// Node.
    pub node_id: NodeId,
    /// Unix seconds.
    pub now: i64,
    /// Its access keys.
    pub keys: Vec<NewKey>,
}

/// An invoice we issued, to record.
#[derive(Debug, Clone)]
pub struct NewInvoiceRecord {
    /// Id.
    pub id: LnTxId,
    /// Owner.
    pub account_id: AccountId,
    /// Receiving wallet.
    pub wallet_id: WalletId,
    /// Unix seconds.
    pub now: i64,
    /// Node.
    pub node_id: NodeId,
    /// Our pubkey (hex).
    pub dest_pubkey: String,
    /// BOLT11.
    pub payment_request: String,
    /// Hash.
    pub payment_hash: PaymentHash,
    /// Our preimage (revealed to an internal payer, shown once settled).
    pub preimage: Preimage,
    /// Memo.
    pub memo: String,
    /// Description hash (hex).
    pub description_hash: Option<String>,
    /// Payment secret (hex).
    pub payment_addr: Option<String>,
    /// Amount (zero for amountless).
    pub amount: Msat,
    /// Expiry seconds.
    pub expiry_secs: i64,
    /// Absolute expiry.
    pub expires_at: i64,
    /// passThru JSON object text.
    pub pass_thru: String,
}

/// What crediting an incoming payment did.
// Returned once per credit, never stored in bulk: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditOutcome {
    /// The wallet was credited by this call.
    Credited(WtxRecord),
    /// Already processed earlier (a replayed event): nothing changed.
    AlreadyCredited,
    /// The node received money no wallet may claim (unknown hash, or an invoice already settled
    /// internally); it was booked to `sys:unclaimed` so the ledger matches the node.
    Unclaimed,
}

/// A keysend that arrived, to credit.
#[derive(Debug, Clone)]
pub struct KeysendCredit {
    /// Id of the incoming LnTx to create.
    pub lntx_id: LnTxId,
    /// WTX id to create.
    pub wtx_id: WtxId,
    /// Target wallet, if routing found one.
    pub wallet_id: Option<WalletId>,
    /// Hash.
    pub payment_hash: PaymentHash,
    /// Preimage.
    pub preimage: Preimage,
    /// Amount.
    pub amount: Msat,
    /// Custom records as JSON object text.
    pub custom_records: String,
    /// Memo to show.
    pub memo: String,
    /// Node.
    pub node_id: NodeId,
    /// Our pubkey.
    pub dest_pubkey: String,
    /// Unix seconds.
    pub settled_at: i64,
}

/// An internal transfer.
#[derive(Debug, Clone)]
pub struct TransferCmd {
    /// Account doing it (both wallets must be its own).
    pub account_id: AccountId,
    /// Source.
    pub from: WalletId,
    /// Destination.
    pub to: WalletId,
    /// Amount (> 0).
    pub amount: Msat,
    /// Label of both WTXs.
    pub memo: String,
    /// passThru of both WTXs.
    pub pass_thru: String,
    /// Id of the incoming WTX.
    pub wtx_in_id: WtxId,
    /// Id of the outgoing WTX.
    pub wtx_out_id: WtxId,
    /// Unix seconds.
    pub now: i64,
}

/// Why a transfer was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Unknown or foreign source wallet.
    #[error("Invalid source wallet id")]
    SourceNotFound,
    /// Unknown or foreign destination wallet.
    #[error("Invalid dest wallet id")]
    DestNotFound,
    /// Same wallet.
    #[error("Source and destination wallets cannot be the same!")]
    SameWallet,
    /// Balance too low.
    #[error("Insufficient balance in source wallet")]
    InsufficientBalance,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Both sides of a completed transfer.
#[derive(Debug, Clone)]
pub struct TransferDone {
    /// Credit.
    pub wtx_in: WtxRecord,
    /// Debit.
    pub wtx_out: WtxRecord,
}

/// Reserve funds for an outgoing payment and record it.
#[derive(Debug, Clone)]
pub struct ReserveCmd {
    /// Id of the outgoing LnTx.
    pub lntx_id: LnTxId,
    /// Owner.
    pub account_id: AccountId,
    /// Paying wallet.
    pub wallet_id: WalletId,
    /// Unix seconds.
    pub now: i64,
    /// Node.
    pub node_id: NodeId,
    /// Destination pubkey.
    pub dest_pubkey: String,
    /// BOLT11 or `<pubkey>:<sats>`.
    pub payment_request: String,
    /// Hash.
    pub payment_hash: PaymentHash,
    /// Memo.
    pub memo: String,
    /// Description hash of the invoice (hex).
    pub description_hash: Option<String>,
    /// Payment secret (hex).
    pub payment_addr: Option<String>,
    /// Amount to deliver.
    pub amount: Msat,
    /// Maximum routing fee (reserved too).
    pub fee_limit: Msat,
    /// Expiry seconds.
    pub expiry_secs: Option<i64>,
    /// Absolute expiry.
    pub expires_at: Option<i64>,
    /// Keysend preimage (we know it up front for keysend).
    pub preimage: Option<Preimage>,
    /// Keysend.
    pub is_keysend: bool,
    /// Custom records JSON object text.
    pub custom_records: Option<String>,
    /// passThru JSON object text.
    pub pass_thru: String,
    /// The WTX type the payment books when it settles (`ln_withdrawal`, or
    /// `ln_lnurl_pay_outbound` for LNURL-pay); stored with the payment.
    pub wtx_type: WtxType,
}

/// Why a reserve was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// Unknown wallet.
    #[error("wallet not found")]
    WalletNotFound,
    /// Balance below amount + fee limit. Carries the balance.
    #[error("insufficient balance")]
    InsufficientBalance(Msat),
    /// This payment hash was already paid (by us, internally or externally).
    #[error("invoice is already paid")]
    AlreadyPaid,
    /// A payment of this hash is in flight.
    #[error("payment already in flight")]
    InFlight(LnTxId),
    /// The one-time LNURL-withdraw link to spend is already spent, expired or unknown.
    #[error("LNURL link is no longer valid")]
    LinkSpent,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settle a successful outgoing payment.
#[derive(Debug, Clone)]
pub struct SettleCmd {
    /// Payment.
    pub lntx_id: LnTxId,
    /// Proof of payment.
    pub preimage: Preimage,
    /// Routing fee actually paid.
    pub fee: Msat,
    /// WTX id for the withdrawal.
    pub wtx_id: WtxId,
    /// WTX id for the network fee (used only if fee > 0).
    pub fee_wtx_id: WtxId,
    /// Label of the withdrawal WTX.
    pub user_label: String,
    /// passThru of the withdrawal WTX.
    pub pass_thru: String,
    /// passThru of the fee WTX.
    pub fee_pass_thru: String,
    /// Unix seconds.
    pub now: i64,
}

/// A settled outgoing payment's WTXs.
#[derive(Debug, Clone)]
pub struct PaymentSettled {
    /// The `ln_withdrawal`.
    pub wtx: WtxRecord,
    /// The `network_fee`, if a fee was paid.
    pub fee_wtx: Option<WtxRecord>,
    /// False if it had already been settled before this call.
    pub newly_settled: bool,
}

/// Why a payment transition was refused.
#[derive(Debug, thiserror::Error)]
pub enum PaymentStateError {
    /// No such payment.
    #[error("payment not found")]
    NotFound,
    /// It already failed and was refunded; a success now means the node contradicts itself.
    #[error("payment already failed")]
    AlreadyFailed,
    /// It already succeeded; it can never fail.
    #[error("payment already succeeded")]
    AlreadySucceeded,
    /// The preimage given does not hash to the payment hash.
    #[error("preimage does not match the payment hash")]
    BadProof,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an operator resolves a stuck payment.
#[derive(Debug, Clone)]
pub enum ManualResolution {
    /// The node did pay: book it with the real fee.
    Succeeded {
        /// Proof of payment (must hash to the payment hash).
        preimage: Preimage,
        /// Routing fee paid.
        fee: Msat,
        /// WTX id for the withdrawal.
        wtx_id: WtxId,
        /// WTX id for the fee.
        fee_wtx_id: WtxId,
    },
    /// The payment cannot have gone out: refund it.
    Failed,
}

/// One entry of the operator audit trail.
#[derive(Debug, Clone)]
pub struct OperatorAction {
    /// Unix seconds.
    pub at: i64,
    /// Who.
    pub operator: String,
    /// What (`resolve_succeeded`, `resolve_failed`).
    pub action: String,
    /// Which payment.
    pub lntx_id: Option<LnTxId>,
    /// Why, in the operator's words.
    pub reason: String,
    /// JSON details.
    pub details: String,
}

/// Pay one of our own invoices from a wallet, entirely inside the ledger.
#[derive(Debug, Clone)]
pub struct InternalPayCmd {
    /// Owner of the paying wallet.
    pub account_id: AccountId,
    /// Paying wallet.
    pub payer: WalletId,
    /// Invoice hash.
    pub payment_hash: PaymentHash,
    /// Id of the payer's outgoing LnTx.
    pub out_lntx_id: LnTxId,
    /// Payer WTX id.
    pub payer_wtx_id: WtxId,
    /// Payee WTX id.
    pub payee_wtx_id: WtxId,
    /// Payer's passThru (JSON object text).
    pub payer_pass_thru: String,
    /// Unix seconds.
    pub now: i64,
    /// If set, the invoice's text must be exactly this (else [`InternalPayError::NotInternal`]):
    /// lets a caller that skipped verifying the invoice rely on it being the one we issued.
    pub expect_request: Option<String>,
    /// Largest amount the payer may send, if limited ([`InternalPayError::OverLimit`]).
    pub send_limit: Option<Msat>,
    /// The payer's WTX type (`ln_withdrawal`, or `ln_lnurl_pay_outbound` for LNURL-pay).
    pub payer_wtx_type: WtxType,
}

/// Result of an internal payment.
#[derive(Debug, Clone)]
pub struct InternalPaid {
    /// Payer's `ln_withdrawal`.
    pub payer_wtx: WtxRecord,
    /// Payee's `ln_deposit`.
    pub payee_wtx: WtxRecord,
}

/// Why an internal payment was refused.
#[derive(Debug, thiserror::Error)]
pub enum InternalPayError {
    /// Not one of our invoices: pay it over Lightning.
    #[error("not an internal invoice")]
    NotInternal,
    /// Already paid.
    #[error("invoice is already paid")]
    AlreadyPaid,
    /// Expired.
    #[error("invoice expired")]
    Expired,
    /// Unknown payer wallet.
    #[error("wallet not found")]
    WalletNotFound,
    /// Balance too low.
    #[error("insufficient balance")]
    InsufficientBalance(Msat),
    /// The invoice has no amount.
    #[error("Cannot process any amount invoices")]
    ZeroAmount,
    /// The amount is above the command's send limit.
    #[error("over the send limit")]
    OverLimit(Msat),
    /// The one-time LNURL-withdraw link to spend is already spent, expired or unknown.
    #[error("LNURL link is no longer valid")]
    LinkSpent,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn status_list(s: &[PaymentStatus]) -> String {
    s.iter()
        .map(|s| format!("'{}'", s.code()))
        .collect::<Vec<_>>()
        .join(",")
}

const LIVE_OR_DONE: [PaymentStatus; 4] = [
    PaymentStatus::Reserved,
    PaymentStatus::Dispatched,
    PaymentStatus::Unknown,
    PaymentStatus::Succeeded,
];

async fn lntx_in(conn: &mut Conn, id: &str) -> Result<Option<LnTxRecord>, StoreError> {
    let sql = format!("SELECT {LNTX_COLS} FROM ln_txs l WHERE l.id = $1");
    match conn.fetch_opt(&sql, args![id]).await? {
        Some(r) => Ok(Some(LnTxRecord::from_row(&r, 0)?)),
        None => Ok(None),
    }
}

async fn wallet_in(conn: &mut Conn, id: &WalletId) -> Result<WalletRecord, StoreError> {
    let sql = format!("SELECT {WALLET_COLS} FROM wallets WHERE id = $1");
    let r = conn.fetch_one(&sql, args![id.as_str()]).await?;
    WalletRecord::from_row(&r, 0)
}

async fn wtx_in(conn: &mut Conn, id: &WtxId) -> Result<WtxRecord, StoreError> {
    let sql = format!("{} WHERE t.id = $1", wtx_select());
    let r = conn.fetch_one(&sql, args![id.as_str()]).await?;
    let row = WtxRow::from_row(&r)?;
    let wallet = wallet_in(conn, &row.wallet_id).await?;
    Ok(row.with_wallet(wallet))
}

/// The record of a WTX this transaction just inserted, built from what was inserted (no
/// re-read), with its wallet and Lightning transaction as they are now.
fn wtx_written(w: &NewWtx<'_>, wallet: WalletRecord, lntx: Option<LnTxRecord>) -> WtxRecord {
    WtxRecord {
        id: w.id.clone(),
        wallet,
        created_at: w.now,
        amount_msat: w.amount_msat,
        wtx_type: w.wtx_type,
        user_label: w.user_label.to_owned(),
        lntx,
        pass_thru: w.pass_thru.to_owned(),
    }
}

async fn wtxs_of_lntx(conn: &mut Conn, lntx: &LnTxId) -> Result<Vec<WtxRecord>, StoreError> {
    let sql = format!("{} WHERE t.lntx_id = $1 ORDER BY t.seq", wtx_select());
    let rows = conn.fetch_all(&sql, args![lntx.as_str()]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let row = WtxRow::from_row(&r)?;
        let wallet = wallet_in(conn, &row.wallet_id).await?;
        out.push(row.with_wallet(wallet));
    }
    Ok(out)
}

async fn insert_key(
    conn: &mut Conn,
    account: &AccountId,
    wallet: Option<&WalletId>,
    k: &NewKey,
    now: i64,
) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO api_keys (key_hash, account_id, wallet_id, role, prefix, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            k.hash.to_hex(),
            account.as_str(),
            wallet.map(WalletId::as_str),
            k.role.code(),
            k.prefix.as_str(),
            now
        ],
    )
    .await?;
    Ok(())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    // ---------------------------------------------------------------- accounts and keys

    /// Creates an account with its account-level keys.
    pub async fn create_account(
        &self,
        id: &AccountId,
        label: &str,
        now: i64,
        keys: &[NewKey],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "INSERT INTO accounts (id, label, created_at) VALUES ($1, $2, $3)",
            args![id.as_str(), label, now],
        )
        .await?;
        for k in keys {
            insert_key(&mut tx, id, None, k, now).await?;
        }
        tx.commit().await
    }

    /// Number of accounts.
    pub async fn account_count(&self) -> Result<u64, StoreError> {
        let mut c = self.read_conn().await?;
        Ok(to_u64(
            c.fetch_one("SELECT COUNT(*) FROM accounts", args![])
                .await?
                .i64(0)?,
        ))
    }

    /// Adds a key (e.g. an imported legacy key) to an account or wallet.
    pub async fn add_key(
        &self,
        account: &AccountId,
        wallet: Option<&WalletId>,
        key: &NewKey,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_key(&mut tx, account, wallet, key, now).await?;
        tx.commit().await
    }

    /// Sets or clears a key's suspension.
    pub async fn set_key_suspended(
        &self,
        hash: &KeyHash,
        suspended: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = tx
            .exec(
                "UPDATE api_keys SET suspended = $1 WHERE key_hash = $2",
                args![suspended, hash.to_hex()],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Finds a key by the hash of its text. The lookup is an index probe on the SHA-256 of the
    /// presented key, so response timing depends only on the hash, never on how many characters
    /// of a real key an attacker guessed.
    pub async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let Some(r) = c
            .fetch_opt(
                "SELECT account_id, wallet_id, role, prefix, suspended FROM api_keys WHERE key_hash = $1",
                args![hash.to_hex()],
            )
            .await?
        else {
            return Ok(None);
        };
        let role_code = r.text(2)?;
        Ok(Some(KeyRecord {
            account_id: AccountId::from_db(r.text(0)?),
            wallet_id: r.opt_text(1)?.map(WalletId::from_db),
            role: KeyRole::from_code(&role_code)
                .ok_or_else(|| StoreError::Corrupt(format!("key role {role_code}")))?,
            prefix: r.text(3)?,
            suspended: r.flag(4)?,
        }))
    }

    // ---------------------------------------------------------------- wallets

    /// Creates a wallet with its keys.
    pub async fn create_wallet(&self, w: &NewWallet) -> Result<WalletRecord, StoreError> {
        self.create_wallet_with_lnurlp(w, None).await
    }

    /// [`Store::create_wallet`] that also stores the wallet's default LNURL-pay link, in the
    /// same transaction (a wallet is never seen without the default link it was made with).
    pub async fn create_wallet_with_lnurlp(
        &self,
        w: &NewWallet,
        default_link: Option<&crate::lnurlp::LnurlpLink>,
    ) -> Result<WalletRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "INSERT INTO wallets (id, account_id, user_label, created_at, updated_at, balance_msat, \
             wtx_count, status, node_id) VALUES ($1, $2, $3, $4, $4, 0, 0, 'active', $5)",
            args![w.id.as_str(), w.account_id.as_str(), w.user_label.as_str(), w.now, w.node_id.as_str()],
        )
        .await?;
        for k in &w.keys {
            insert_key(&mut tx, &w.account_id, Some(&w.id), k, w.now).await?;
        }
        if let Some(link) = default_link {
            crate::lnurlp::insert_link_in(&mut tx, link).await?;
        }
        emit(
            &mut tx,
            Emit {
                name: EventName::WalletCreated,
                account_id: w.account_id.as_str(),
                wallet_id: &w.id,
                wtx_id: None,
                lntx_id: None,
                now: w.now,
                balance_msat: None,
            },
        )
        .await?;
        let rec = wallet_in(&mut tx, &w.id).await?;
        idempotency::mark(&mut tx, &format!("wallet:{}", w.id)).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// Imports a wallet from another system under its original id (e.g. a legacy LNPay `w_…`
    /// id) with its keys, and books its opening balance against the `sys:opening` equity account
    /// as a `balance_roll_up` WTX, so history and ledger agree from the first day.
    pub async fn import_wallet(
        &self,
        w: &NewWallet,
        opening: Msat,
        wtx_id: &WtxId,
    ) -> Result<WalletRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "INSERT INTO wallets (id, account_id, user_label, created_at, updated_at, balance_msat, \
             wtx_count, status, node_id) VALUES ($1, $2, $3, $4, $4, 0, 0, 'active', $5)",
            args![
                w.id.as_str(),
                w.account_id.as_str(),
                w.user_label.as_str(),
                w.now,
                w.node_id.as_str()
            ],
        )
        .await?;
        for k in &w.keys {
            insert_key(&mut tx, &w.account_id, Some(&w.id), k, w.now).await?;
        }
        if !opening.is_zero() {
            let amount = opening.as_i64();
            post(
                &mut tx,
                "import",
                w.id.as_str(),
                w.now,
                &[
                    leg(Account::Sys(SYS_OPENING), -amount),
                    leg(Account::Wallet(&w.id), amount),
                ],
                &[NewWtx {
                    id: wtx_id,
                    wallet_id: &w.id,
                    account_id: w.account_id.as_str(),
                    now: w.now,
                    amount_msat: amount,
                    wtx_type: WtxType::BalanceRollUp,
                    user_label: "Imported balance",
                    lntx_id: None,
                    pass_thru: "{}",
                }],
            )
            .await?;
        }
        let rec = wallet_in(&mut tx, &w.id).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// A wallet by id.
    pub async fn wallet(&self, id: &WalletId) -> Result<Option<WalletRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!("SELECT {WALLET_COLS} FROM wallets WHERE id = $1");
        match c.fetch_opt(&sql, args![id.as_str()]).await? {
            Some(r) => Ok(Some(WalletRecord::from_row(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// A page of an account's wallets, newest first, and the total count.
    pub async fn list_wallets(
        &self,
        account: &AccountId,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<WalletRecord>, u64), StoreError> {
        let mut tx = self.begin_read().await?;
        let total = tx
            .fetch_one(
                "SELECT COUNT(*) FROM wallets WHERE account_id = $1",
                args![account.as_str()],
            )
            .await?
            .i64(0)?;
        let sql = format!(
            "SELECT {WALLET_COLS} FROM wallets WHERE account_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let rows = tx
            .fetch_all(&sql, args![account.as_str(), lim(limit), lim(offset)])
            .await?;
        let list = rows
            .iter()
            .map(|r| WalletRecord::from_row(r, 0))
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok((list, to_u64(total)))
    }

    /// A page of wallet transactions, newest first, with the total count: of one wallet, or of
    /// the whole account.
    pub async fn list_wtxs(
        &self,
        account: &AccountId,
        wallet: Option<&WalletId>,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<WtxRecord>, u64), StoreError> {
        let mut tx = self.begin_read().await?;
        let (total, rows) = match wallet {
            Some(w) => {
                let Some(r) = tx
                    .fetch_opt(
                        "SELECT wtx_count FROM wallets WHERE id = $1 AND account_id = $2",
                        args![w.as_str(), account.as_str()],
                    )
                    .await?
                else {
                    return Ok((Vec::new(), 0));
                };
                let sql = format!(
                    "{} WHERE t.wallet_id = $1 ORDER BY t.seq DESC LIMIT $2 OFFSET $3",
                    wtx_select()
                );
                (
                    r.i64(0)?,
                    tx.fetch_all(&sql, args![w.as_str(), lim(limit), lim(offset)])
                        .await?,
                )
            }
            None => {
                let total = tx
                    .fetch_one(
                        "SELECT COUNT(*) FROM wtxs WHERE account_id = $1",
                        args![account.as_str()],
                    )
                    .await?
                    .i64(0)?;
                let sql = format!(
                    "{} WHERE t.account_id = $1 ORDER BY t.seq DESC LIMIT $2 OFFSET $3",
                    wtx_select()
                );
                (
                    total,
                    tx.fetch_all(&sql, args![account.as_str(), lim(limit), lim(offset)])
                        .await?,
                )
            }
        };
        let mut wallets: Vec<WalletRecord> = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let row = WtxRow::from_row(&r)?;
            let wallet = match wallets.iter().find(|w| w.id == row.wallet_id) {
                Some(w) => w.clone(),
                None => {
                    let w = wallet_in(&mut tx, &row.wallet_id).await?;
                    wallets.push(w.clone());
                    w
                }
            };
            out.push(row.with_wallet(wallet));
        }
        tx.commit().await?;
        Ok((out, to_u64(total)))
    }

    /// A Lightning transaction by id.
    pub async fn lntx(&self, id: &LnTxId) -> Result<Option<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        lntx_in(&mut c, id.as_str()).await
    }

    /// A wallet transaction by id.
    pub async fn wtx(&self, id: &WtxId) -> Result<Option<WtxRecord>, StoreError> {
        let mut tx = self.begin_read().await?;
        let r = match wtx_in(&mut tx, id).await {
            Ok(w) => Some(w),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e),
        };
        tx.commit().await?;
        Ok(r)
    }

    /// The WTXs booked for a Lightning transaction (withdrawal first, then its fee).
    pub async fn wtxs_of_lntx(&self, id: &LnTxId) -> Result<Vec<WtxRecord>, StoreError> {
        let mut tx = self.begin_read().await?;
        let r = wtxs_of_lntx(&mut tx, id).await?;
        tx.commit().await?;
        Ok(r)
    }

    // ---------------------------------------------------------------- incoming

    /// Records an invoice we issued.
    pub async fn insert_invoice(&self, inv: &NewInvoiceRecord) -> Result<LnTxRecord, StoreError> {
        // One statement: on Postgres it commits itself (no BEGIN/COMMIT round trips), unless
        // a keyed request's row must be written with it.
        let mut tx = if idempotency::claim_active() {
            self.begin_write().await?
        } else {
            self.begin_one_statement_write().await?
        };
        insert_invoice_in(&mut tx, inv).await?;
        idempotency::mark(&mut tx, &format!("invoice:{}", inv.id)).await?;
        tx.commit().await?;
        // The record as inserted (built, not re-read; the store tests compare it with a read).
        Ok(invoice_record(inv))
    }

    /// Our invoice with this payment hash, if any.
    pub async fn incoming_by_hash(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.payment_hash = $1 AND l.direction = 'in'"
        );
        match c.fetch_opt(&sql, args![hash.to_hex()]).await? {
            Some(r) => Ok(Some(LnTxRecord::from_row(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// Books a node-side settlement of one of our invoices. Idempotent: replaying the same
    /// settlement changes nothing. If the invoice was already settled internally, the money the
    /// node received goes to `sys:unclaimed` (once).
    pub async fn credit_invoice(
        &self,
        hash: &PaymentHash,
        amount_received: Msat,
        settled_at: i64,
        wtx_id: &WtxId,
    ) -> Result<CreditOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT {LNTX_COLS}, l.node_settled, l.deposit_wtx_type FROM ln_txs l \
             WHERE l.payment_hash = $1 AND l.direction = 'in'{}",
            tx.dialect().for_update()
        );
        let received = amount_received.as_i64();
        let Some(row) = tx.fetch_opt(&sql, args![hash.to_hex()]).await? else {
            // Not ours at all. Book it so the ledger still equals what the node holds.
            let reference = format!("unknown:{}", hash.to_hex());
            // Nothing else is locked for an unknown hash: serialise replays on the first system
            // account this posts to, so the duplicate check below sees any replay that
            // committed first (Postgres; SQLite's write lock already serialises).
            let lock = format!(
                "SELECT balance_msat FROM system_accounts WHERE code = $1{}",
                tx.dialect().for_update()
            );
            tx.fetch_one(&lock, args![SYS_LIGHTNING]).await?;
            let dup = tx
                .fetch_opt(
                    "SELECT id FROM ledger_txns WHERE ref = $1",
                    args![reference.as_str()],
                )
                .await?;
            if dup.is_some() {
                return Ok(CreditOutcome::AlreadyCredited);
            }
            post(
                &mut tx,
                "unclaimed_receive",
                &reference,
                settled_at,
                &[
                    leg(Account::Sys(SYS_LIGHTNING), -received),
                    leg(Account::Sys(SYS_UNCLAIMED), received),
                ],
                &[],
            )
            .await?;
            tx.commit().await?;
            return Ok(CreditOutcome::Unclaimed);
        };
        let lntx = LnTxRecord::from_row(&row, 0)?;
        if row.flag(LNTX_NCOLS)? {
            return Ok(CreditOutcome::AlreadyCredited);
        }
        let deposit_type = crate::lnurlp::deposit_type(row.opt_i64(LNTX_NCOLS + 1)?)?;
        tx.exec(
            "UPDATE ln_txs SET node_settled = 1 WHERE id = $1",
            args![lntx.id.as_str()],
        )
        .await?;
        let wallet_id = match (&lntx.wallet_id, lntx.settled) {
            (Some(w), false) => w.clone(),
            _ => {
                // Settled internally already (or walletless): the node's money is nobody's.
                post(
                    &mut tx,
                    "unclaimed_receive",
                    lntx.id.as_str(),
                    settled_at,
                    &[
                        leg(Account::Sys(SYS_LIGHTNING), -received),
                        leg(Account::Sys(SYS_UNCLAIMED), received),
                    ],
                    &[],
                )
                .await?;
                tx.commit().await?;
                return Ok(CreditOutcome::Unclaimed);
            }
        };
        tx.exec(
            "UPDATE ln_txs SET settled = 1, settled_at = $1, amount_msat = $2, updated_at = $1 WHERE id = $3",
            args![settled_at, received, lntx.id.as_str()],
        )
        .await?;
        // The wallet is credited whole sats (an amountless invoice or an overpayment may carry
        // msat); the sub-sat rest is the operator's. The lnTx keeps what the node received.
        let credited = amount_received.floor_to_sat().as_i64();
        post(
            &mut tx,
            "ln_deposit",
            lntx.id.as_str(),
            settled_at,
            &[
                leg(Account::Sys(SYS_LIGHTNING), -received),
                leg(Account::Wallet(&wallet_id), credited),
                leg(Account::Sys(SYS_REVENUE), received - credited),
            ],
            &[NewWtx {
                id: wtx_id,
                wallet_id: &wallet_id,
                account_id: lntx.account_id.as_str(),
                now: settled_at,
                amount_msat: credited,
                wtx_type: deposit_type,
                user_label: &lntx.memo,
                lntx_id: Some(lntx.id.as_str()),
                pass_thru: &lntx.pass_thru,
            }],
        )
        .await?;
        let wtx = wtx_in(&mut tx, wtx_id).await?;
        crate::crash::crash_point("during_credit");
        tx.commit().await?;
        Ok(CreditOutcome::Credited(wtx))
    }

    /// Books a received keysend. Idempotent per payment hash.
    pub async fn credit_keysend(&self, k: &KeysendCredit) -> Result<CreditOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists = tx
            .fetch_opt(
                "SELECT id FROM ln_txs WHERE payment_hash = $1 AND direction = 'in'",
                args![k.payment_hash.to_hex()],
            )
            .await?;
        if exists.is_some() {
            return Ok(CreditOutcome::AlreadyCredited);
        }
        // The wallet must exist; otherwise the money is unclaimed.
        let (wallet, account) = match &k.wallet_id {
            Some(w) => match lock_wallet(&mut tx, w).await? {
                Some(rec) => (Some(rec.id), rec.account_id.as_str().to_owned()),
                None => (None, String::new()),
            },
            None => (None, String::new()),
        };
        let received = k.amount.as_i64();
        let pass_thru = match &wallet {
            Some(w) => format!(
                "{{\"wallet_id\":{},\"custom_records\":{}}}",
                json_str(w.as_str()),
                k.custom_records
            ),
            None => "{}".to_owned(),
        };
        let inserted = tx.exec(
            "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, node_id, \
             dest_pubkey, payment_request, payment_hash, memo, amount_msat, preimage, settled, \
             settled_at, node_settled, is_keysend, custom_records, pass_thru) \
             VALUES ($1, $2, $3, $4, $4, 'in', $5, $6, 'keysend/amp', $7, $8, $9, $10, 1, $4, 1, 1, $11, $12)",
            args![
                k.lntx_id.as_str(),
                account.as_str(),
                wallet.as_ref().map(WalletId::as_str),
                k.settled_at,
                k.node_id.as_str(),
                k.dest_pubkey.as_str(),
                k.payment_hash.to_hex(),
                k.memo.as_str(),
                received,
                k.preimage.to_hex(),
                k.custom_records.as_str(),
                pass_thru.as_str()
            ],
        )
        .await;
        match inserted {
            Ok(_) => {}
            // Postgres: a concurrent replay of the same keysend committed first.
            Err(StoreError::Constraint(_)) => return Ok(CreditOutcome::AlreadyCredited),
            Err(e) => return Err(e),
        }
        let Some(wallet_id) = wallet else {
            post(
                &mut tx,
                "unclaimed_receive",
                k.lntx_id.as_str(),
                k.settled_at,
                &[
                    leg(Account::Sys(SYS_LIGHTNING), -received),
                    leg(Account::Sys(SYS_UNCLAIMED), received),
                ],
                &[],
            )
            .await?;
            tx.commit().await?;
            return Ok(CreditOutcome::Unclaimed);
        };
        // Whole sats to the wallet, the sub-sat rest to the operator (as for invoices).
        let credited = k.amount.floor_to_sat().as_i64();
        post(
            &mut tx,
            "ln_deposit",
            k.lntx_id.as_str(),
            k.settled_at,
            &[
                leg(Account::Sys(SYS_LIGHTNING), -received),
                leg(Account::Wallet(&wallet_id), credited),
                leg(Account::Sys(SYS_REVENUE), received - credited),
            ],
            &[NewWtx {
                id: &k.wtx_id,
                wallet_id: &wallet_id,
                account_id: &account,
                now: k.settled_at,
                amount_msat: credited,
                wtx_type: WtxType::LnDeposit,
                user_label: &k.memo,
                lntx_id: Some(k.lntx_id.as_str()),
                pass_thru: &pass_thru,
            }],
        )
        .await?;
        let wtx = wtx_in(&mut tx, &k.wtx_id).await?;
        crate::crash::crash_point("during_keysend_credit");
        tx.commit().await?;
        Ok(CreditOutcome::Credited(wtx))
    }

    // ---------------------------------------------------------------- transfers

    /// Moves money between two wallets of one account.
    pub async fn transfer(&self, t: &TransferCmd) -> Result<TransferDone, TransferError> {
        if t.from == t.to {
            return Err(TransferError::SameWallet);
        }
        let mut tx = self.begin_write().await?;
        let read = read_wallets(&mut tx, &[&t.from, &t.to]).await?;
        let src = match &read[0] {
            Some(w) if w.account_id == t.account_id => w.clone(),
            _ => return Err(TransferError::SourceNotFound),
        };
        let dst = match &read[1] {
            Some(w) if w.account_id == t.account_id => w.clone(),
            _ => return Err(TransferError::DestNotFound),
        };
        // An early refusal only: the check that matters is `post`'s guarded debit, made on the
        // locked row.
        if src.balance < t.amount {
            return Err(TransferError::InsufficientBalance);
        }
        let amount = t.amount.as_i64();
        let new_wtx = |id, wallet_id, amount_msat, wtx_type| NewWtx {
            id,
            wallet_id,
            account_id: t.account_id.as_str(),
            now: t.now,
            amount_msat,
            wtx_type,
            user_label: &t.memo,
            lntx_id: None,
            pass_thru: &t.pass_thru,
        };
        let entries = [
            new_wtx(&t.wtx_out_id, &t.from, -amount, WtxType::LnTransferOut),
            new_wtx(&t.wtx_in_id, &t.to, amount, WtxType::LnTransferIn),
        ];
        let posted = post(
            &mut tx,
            "transfer",
            t.wtx_out_id.as_str(),
            t.now,
            &[
                leg(Account::Wallet(&t.from), -amount),
                leg(Account::Wallet(&t.to), amount),
            ],
            &entries,
        )
        .await
        .map_err(|e| match e {
            StoreError::Overdraft(_) => TransferError::InsufficientBalance,
            e => e.into(),
        })?;
        let from = posted.wallet(&src)?;
        let to = posted.wallet(&dst)?;
        idempotency::mark(
            &mut tx,
            &format!("transfer:{}:{}", t.wtx_out_id, t.wtx_in_id),
        )
        .await?;
        tx.commit().await?;
        Ok(TransferDone {
            wtx_in: wtx_written(&entries[1], to, None),
            wtx_out: wtx_written(&entries[0], from, None),
        })
    }

    // ---------------------------------------------------------------- outgoing

    /// Debits amount + fee limit into `sys:in_flight` and records the payment as `reserved`,
    /// committed before anyone talks to the node.
    pub async fn reserve_payment(&self, r: &ReserveCmd) -> Result<LnTxRecord, ReserveError> {
        self.reserve_payment_claiming(r, None).await
    }

    /// [`Store::reserve_payment`] that first spends a one-time LNURL-withdraw link in the same
    /// transaction (see [`crate::lnurlw`]): both happen or neither.
    pub async fn reserve_payment_claiming(
        &self,
        r: &ReserveCmd,
        claim: Option<&LinkClaim>,
    ) -> Result<LnTxRecord, ReserveError> {
        let mut tx = self.begin_write().await?;
        if let Some(c) = claim
            && !crate::lnurlw::claim_in(&mut tx, c).await?
        {
            return Err(ReserveError::LinkSpent);
        }
        let hash = r.payment_hash.to_hex();
        // A payment hash is paid at most once, by anyone: our own invoice settled internally,
        // or a live/successful outgoing payment.
        let paid_in = tx
            .fetch_opt(
                "SELECT settled FROM ln_txs WHERE payment_hash = $1 AND direction = 'in' AND settled = 1",
                args![hash.as_str()],
            )
            .await?;
        if paid_in.is_some() {
            return Err(ReserveError::AlreadyPaid);
        }
        let sql = format!(
            "SELECT id, status FROM ln_txs WHERE payment_hash = $1 AND direction = 'out' AND status IN ({})",
            status_list(&LIVE_OR_DONE)
        );
        if let Some(row) = tx.fetch_opt(&sql, args![hash.as_str()]).await? {
            return Err(if row.text(1)? == PaymentStatus::Succeeded.code() {
                ReserveError::AlreadyPaid
            } else {
                ReserveError::InFlight(LnTxId::from_db(row.text(0)?))
            });
        }
        let Some(wallet) = lock_wallet(&mut tx, &r.wallet_id).await? else {
            return Err(ReserveError::WalletNotFound);
        };
        if wallet.account_id != r.account_id {
            return Err(ReserveError::WalletNotFound);
        }
        // The worst case the wallet can be charged, in whole sats (`payment_reserve`). An
        // unrepresentable total is more than any wallet can hold.
        let total = payment_reserve(r.amount, r.fee_limit)
            .map_err(|_| ReserveError::InsufficientBalance(wallet.balance))?;
        if wallet.balance < total {
            return Err(ReserveError::InsufficientBalance(wallet.balance));
        }
        let inserted = tx
            .exec(
                "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, node_id, \
                 dest_pubkey, payment_request, payment_hash, memo, description_hash, payment_addr, \
                 amount_msat, fee_limit_msat, expiry_secs, expires_at, preimage, is_keysend, \
                 custom_records, pass_thru, status, wtx_type) VALUES ($1, $2, $3, $4, $4, 'out', $5, $6, $7, $8, \
                 $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, 'reserved', $20)",
                args![
                    r.lntx_id.as_str(),
                    r.account_id.as_str(),
                    r.wallet_id.as_str(),
                    r.now,
                    r.node_id.as_str(),
                    r.dest_pubkey.as_str(),
                    r.payment_request.as_str(),
                    hash.as_str(),
                    r.memo.as_str(),
                    r.description_hash.clone(),
                    r.payment_addr.clone(),
                    r.amount.as_i64(),
                    r.fee_limit.as_i64(),
                    r.expiry_secs,
                    r.expires_at,
                    r.preimage.map(|p| p.to_hex()),
                    r.is_keysend,
                    r.custom_records.clone(),
                    r.pass_thru.as_str(),
                    r.wtx_type.code()
                ],
            )
            .await;
        match inserted {
            Ok(_) => {}
            // Postgres: a concurrent payment of the same hash (a reserve, or an internal
            // payment) committed first. Report it as the sequential checks above would have.
            Err(StoreError::Constraint(_)) => {
                drop(tx);
                return Err(match self.outgoing_by_hash(&r.payment_hash).await? {
                    Some(p) if p.status == Some(PaymentStatus::Succeeded) => {
                        ReserveError::AlreadyPaid
                    }
                    Some(p) => ReserveError::InFlight(p.id),
                    None => ReserveError::InFlight(r.lntx_id.clone()),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let total = total.as_i64();
        post(
            &mut tx,
            "payment_reserve",
            r.lntx_id.as_str(),
            r.now,
            &[
                leg(Account::Wallet(&r.wallet_id), -total),
                leg(Account::Sys(SYS_IN_FLIGHT), total),
            ],
            &[],
        )
        .await?;
        let rec = lntx_in(&mut tx, r.lntx_id.as_str())
            .await?
            .ok_or(StoreError::NotFound)?;
        idempotency::mark(&mut tx, &format!("payment:{}", r.lntx_id)).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// Moves a live payment between non-final states (`reserved` → `dispatched` → `unknown`).
    /// Returns false if it was not in one of `from`.
    pub async fn mark_payment(
        &self,
        id: &LnTxId,
        from: &[PaymentStatus],
        to: PaymentStatus,
        now: i64,
    ) -> Result<bool, StoreError> {
        if !to.is_live() {
            return Err(StoreError::Corrupt(
                "mark_payment only moves between live states".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE ln_txs SET status = $1, updated_at = $2 WHERE id = $3 AND direction = 'out' AND status IN ({})",
            status_list(from)
        );
        let n = tx.exec(&sql, args![to.code(), now, id.as_str()]).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Books a successful payment: the real fee is charged, the rest of the reserve returns to the
    /// wallet, and `ln_withdrawal` (+ `network_fee`) WTXs appear. Idempotent.
    pub async fn settle_payment(&self, s: &SettleCmd) -> Result<PaymentSettled, PaymentStateError> {
        let mut tx = self.begin_write().await?;
        let r = settle_in(&mut tx, s).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Refunds a payment the node proved failed. Idempotent; refuses a succeeded payment.
    pub async fn fail_payment(
        &self,
        id: &LnTxId,
        reason: &str,
        now: i64,
    ) -> Result<LnTxRecord, PaymentStateError> {
        let mut tx = self.begin_write().await?;
        let r = fail_in(&mut tx, id, reason, now).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// An operator settles a stuck payment by hand. Succeeded needs the preimage (proof of
    /// payment); failed refunds the reserve. The resolution and its audit record are one
    /// transaction. Refuses payments that are already final.
    pub async fn resolve_payment(
        &self,
        id: &LnTxId,
        resolution: &ManualResolution,
        operator: &str,
        reason: &str,
        now: i64,
    ) -> Result<LnTxRecord, PaymentStateError> {
        let mut tx = self.begin_write().await?;
        let Some(p) = lntx_in(&mut tx, id.as_str()).await? else {
            return Err(PaymentStateError::NotFound);
        };
        match p.status {
            Some(PaymentStatus::Succeeded) => return Err(PaymentStateError::AlreadySucceeded),
            Some(PaymentStatus::Failed) => return Err(PaymentStateError::AlreadyFailed),
            None => return Err(PaymentStateError::NotFound),
            _ => {}
        }
        let (action, details) = match resolution {
            ManualResolution::Succeeded {
                preimage,
                fee,
                wtx_id,
                fee_wtx_id,
            } => {
                if preimage.hash() != p.payment_hash {
                    return Err(PaymentStateError::BadProof);
                }
                settle_in(&mut tx, &SettleCmd {
                    lntx_id: p.id.clone(),
                    preimage: *preimage,
                    fee: *fee,
                    wtx_id: wtx_id.clone(),
                    fee_wtx_id: fee_wtx_id.clone(),
                    user_label: p.memo.clone(),
                    pass_thru: p.pass_thru.clone(),
                    fee_pass_thru: format!(
                        "{{\"source_transaction\":\"{wtx_id}\",\"fee_target_wallet\":\"contained\"}}"
                    ),
                    now,
                })
                .await?;
                (
                    "resolve_succeeded",
                    format!("{{\"fee_msat\":{}}}", fee.as_msat()),
                )
            }
            ManualResolution::Failed => {
                fail_in(&mut tx, id, "FAILURE_REASON_ERROR", now).await?;
                ("resolve_failed", "{}".to_owned())
            }
        };
        tx.exec(
            "INSERT INTO operator_actions (at, operator, action, lntx_id, reason, details) VALUES ($1, $2, $3, $4, $5, $6)",
            args![now, operator, action, id.as_str(), reason, details],
        )
        .await?;
        let rec = lntx_in(&mut tx, id.as_str())
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(rec)
    }

    /// The operator audit trail, newest first.
    pub async fn operator_actions(&self, limit: u64) -> Result<Vec<OperatorAction>, StoreError> {
        let mut c = self.read_conn().await?;
        let rows = c
            .fetch_all(
                "SELECT at, operator, action, lntx_id, reason, details FROM operator_actions ORDER BY seq DESC LIMIT $1",
                args![i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OperatorAction {
                    at: r.i64(0)?,
                    operator: r.text(1)?,
                    action: r.text(2)?,
                    lntx_id: r.opt_text(3)?.map(LnTxId::from_db),
                    reason: r.text(4)?,
                    details: r.text(5)?,
                })
            })
            .collect()
    }

    /// Outgoing payments still holding a reserve (for recovery).
    pub async fn live_payments(&self) -> Result<Vec<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.direction = 'out' AND l.status IN ({}) ORDER BY l.created_at",
            status_list(&[
                PaymentStatus::Reserved,
                PaymentStatus::Dispatched,
                PaymentStatus::Unknown
            ])
        );
        let rows = c.fetch_all(&sql, args![]).await?;
        rows.iter().map(|r| LnTxRecord::from_row(r, 0)).collect()
    }

    /// The newest outgoing payment of a hash that is live or succeeded.
    pub async fn outgoing_by_hash(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.payment_hash = $1 AND l.direction = 'out' AND l.status IN ({})",
            status_list(&LIVE_OR_DONE)
        );
        match c.fetch_opt(&sql, args![hash.to_hex()]).await? {
            Some(r) => Ok(Some(LnTxRecord::from_row(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// The most recent outgoing attempt of a hash, whatever its state (failed included).
    pub async fn latest_outgoing(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.payment_hash = $1 AND l.direction = 'out' \
             ORDER BY l.created_at DESC, l.updated_at DESC LIMIT 1"
        );
        match c.fetch_opt(&sql, args![hash.to_hex()]).await? {
            Some(r) => Ok(Some(LnTxRecord::from_row(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// The refusals [`Store::pay_internal`] would make, read without writing. For a caller
    /// that must act on the node before paying (a cancel cannot be undone) and so should not
    /// act for a payment that would be refused anyway; `pay_internal` judges again.
    pub async fn check_internal(&self, c: &InternalPayCmd) -> Result<(), InternalPayError> {
        self.check_internal_claiming(c, None).await
    }

    /// [`Store::check_internal`], also checking that `claim` could spend its link now.
    pub async fn check_internal_claiming(
        &self,
        c: &InternalPayCmd,
        claim: Option<&LinkClaim>,
    ) -> Result<(), InternalPayError> {
        let mut conn = self.read_conn().await?;
        if let Some(l) = claim
            && !crate::lnurlw::claimable(&mut conn, l).await?
        {
            return Err(InternalPayError::LinkSpent);
        }
        internal_checks(&mut conn, c).await.map(|_| ())
    }

    /// Pays one of our own invoices inside one transaction: payer debited, payee credited,
    /// invoice marked paid. Cannot happen twice: the invoice is marked paid by an update that
    /// requires it open, the payer's outgoing row is unique per hash, and the debit is guarded.
    pub async fn pay_internal(&self, c: &InternalPayCmd) -> Result<InternalPaid, InternalPayError> {
        self.pay_internal_claiming(c, None).await
    }

    /// [`Store::pay_internal`] that first spends a one-time LNURL-withdraw link in the same
    /// transaction (see [`crate::lnurlw`]).
    pub async fn pay_internal_claiming(
        &self,
        c: &InternalPayCmd,
        claim: Option<&LinkClaim>,
    ) -> Result<InternalPaid, InternalPayError> {
        // The reads run inside the write transaction. On SQLite that keeps them on the
        // writer's warm page cache: a reader connection drops its whole cache whenever the
        // database changed, which under write load made every read a cold one (measured: more
        // CPU per payment, fewer payments per second than reading inside the writer).
        let mut tx = self.begin_write().await?;
        if let Some(l) = claim
            && !crate::lnurlw::claim_in(&mut tx, l).await?
        {
            return Err(InternalPayError::LinkSpent);
        }
        let checked = internal_checks(&mut tx, c).await?;
        let InternalChecked {
            inv,
            payer,
            payee: payee_read,
        } = checked;
        let payee = payee_read.id.clone();
        let hash = c.payment_hash.to_hex();
        let deposit_type = crate::lnurlp::deposit_type_in(&mut tx, inv.id.as_str()).await?;
        // The checks that count, made on the rows as this transaction locks them: the invoice
        // is still open (on Postgres a concurrent payer of the same invoice commits first, and
        // this update then finds it paid); no outgoing attempt of its hash is live or done (the
        // payer's outgoing row inserted below is unique per hash among those); the payer can
        // afford it (`post`'s guarded debit).
        if tx
            .exec(
                "UPDATE ln_txs SET settled = 1, settled_at = $1, updated_at = $1 \
                 WHERE id = $2 AND settled = 0",
                args![c.now, inv.id.as_str()],
            )
            .await?
            == 0
        {
            return Err(InternalPayError::AlreadyPaid);
        }
        let amount = inv.amount.as_i64();
        // Our invoices are issued in whole sats, so both sides move by the amount. Should one
        // carry msat, the payer pays it rounded up and the payee gets it rounded down; the
        // difference is the operator's, as for any payment.
        let debit = inv.amount.ceil_to_sat().map_err(StoreError::from)?.as_i64();
        let credit = inv.amount.floor_to_sat().as_i64();
        let preimage = inv.preimage.map(|p| p.to_hex());
        let entries = [
            NewWtx {
                id: &c.payer_wtx_id,
                wallet_id: &c.payer,
                account_id: c.account_id.as_str(),
                now: c.now,
                amount_msat: -debit,
                wtx_type: c.payer_wtx_type,
                user_label: &inv.memo,
                lntx_id: Some(c.out_lntx_id.as_str()),
                pass_thru: &c.payer_pass_thru,
            },
            NewWtx {
                id: &c.payee_wtx_id,
                wallet_id: &payee,
                account_id: inv.account_id.as_str(),
                now: c.now,
                amount_msat: credit,
                wtx_type: deposit_type,
                user_label: &inv.memo,
                lntx_id: Some(inv.id.as_str()),
                pass_thru: &inv.pass_thru,
            },
        ];
        let posted = post(
            &mut tx,
            "internal_payment",
            c.out_lntx_id.as_str(),
            c.now,
            &[
                leg(Account::Wallet(&c.payer), -debit),
                leg(Account::Wallet(&payee), credit),
                leg(Account::Sys(SYS_REVENUE), debit - credit),
            ],
            &entries,
        )
        .await
        .map_err(|e| match e {
            StoreError::Overdraft(held) => InternalPayError::InsufficientBalance(held),
            e => e.into(),
        })?;
        // The payer's record of the payment, after the wallets are locked: a reservation of the
        // same hash locks its wallet before it inserts its own outgoing row, so taking the
        // hash's unique index entry first here could deadlock with it.
        tx.exec(
            "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, node_id, \
             dest_pubkey, payment_request, payment_hash, memo, description_hash, payment_addr, \
             amount_msat, expiry_secs, expires_at, preimage, settled, settled_at, pass_thru, status, \
             wtx_type) \
             VALUES ($1, $2, $3, $4, $4, 'out', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $4, $16, 'succeeded', $17)",
            args![
                c.out_lntx_id.as_str(),
                c.account_id.as_str(),
                c.payer.as_str(),
                c.now,
                inv.node_id.as_str(),
                inv.dest_pubkey.as_str(),
                inv.payment_request.as_str(),
                hash.as_str(),
                inv.memo.as_str(),
                inv.description_hash.clone(),
                inv.payment_addr.clone(),
                amount,
                inv.expiry_secs,
                inv.expires_at,
                preimage,
                c.payer_pass_thru.as_str(),
                c.payer_wtx_type.code()
            ],
        )
        .await
        .map_err(|e| match e {
            StoreError::Constraint(_) => InternalPayError::AlreadyPaid,
            e => e.into(),
        })?;
        // The records to answer with, as this transaction leaves them (computed, not re-read):
        // the invoice now paid, the payment as inserted above, both wallets.
        let in_lntx = LnTxRecord {
            settled: true,
            settled_at: Some(c.now),
            ..inv.clone()
        };
        let out_lntx = LnTxRecord {
            id: c.out_lntx_id.clone(),
            account_id: c.account_id.clone(),
            wallet_id: Some(c.payer.clone()),
            created_at: c.now,
            direction: Direction::Outgoing,
            fee: Msat::ZERO,
            fee_limit: Msat::ZERO,
            is_keysend: false,
            custom_records: None,
            pass_thru: c.payer_pass_thru.clone(),
            status: Some(PaymentStatus::Succeeded),
            failure_reason: None,
            ..in_lntx.clone()
        };
        // Paying one's own invoice moves nothing and adds both entries to the one wallet.
        let payer_w = posted.wallet(&payer)?;
        let payee_w = posted.wallet(&payee_read)?;
        let payer_wtx = wtx_written(&entries[0], payer_w, Some(out_lntx));
        let payee_wtx = wtx_written(&entries[1], payee_w, Some(in_lntx));
        idempotency::mark(&mut tx, &format!("payment:{}", c.out_lntx_id)).await?;
        crate::crash::crash_point("during_internal");
        tx.commit().await?;
        Ok(InternalPaid {
            payer_wtx,
            payee_wtx,
        })
    }

    // ---------------------------------------------------------------- jobs and cursors

    /// Records a queued job.
    pub async fn insert_job(&self, j: &JobRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            &format!(
                "INSERT INTO jobs ({JOB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            args![
                j.id.as_str(),
                j.account_id.as_str(),
                j.wallet_id.as_str(),
                j.kind.as_str(),
                j.request.as_str(),
                j.status.code(),
                j.result_wtx_id.as_ref().map(WtxId::as_str),
                j.error.clone(),
                j.created_at,
                j.updated_at
            ],
        )
        .await?;
        idempotency::mark(&mut tx, &format!("job:{}", j.id)).await?;
        tx.commit().await
    }

    /// A job by id.
    pub async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        match c
            .fetch_opt(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"),
                args![id.as_str()],
            )
            .await?
        {
            Some(r) => Ok(Some(JobRecord::from_row(&r)?)),
            None => Ok(None),
        }
    }

    /// Jobs not finished yet, oldest first.
    pub async fn queued_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let rows = c
            .fetch_all(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE status = 'queued' ORDER BY created_at"),
                args![],
            )
            .await?;
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// Finishes a queued job (no-op if already finished).
    pub async fn finish_job(
        &self,
        id: &JobId,
        status: JobStatus,
        result_wtx_id: Option<&WtxId>,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "UPDATE jobs SET status = $1, result_wtx_id = $2, error = $3, updated_at = $4 \
             WHERE id = $5 AND status = 'queued'",
            args![
                status.code(),
                result_wtx_id.map(WtxId::as_str),
                error,
                now,
                id.as_str()
            ],
        )
        .await?;
        tx.commit().await
    }

    /// A persisted stream cursor (0 if never set).
    pub async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        let mut c = self.read_conn().await?;
        match c
            .fetch_opt("SELECT value FROM cursors WHERE name = $1", args![name])
            .await?
        {
            Some(r) => Ok(to_u64(r.i64(0)?)),
            None => Ok(0),
        }
    }

    /// Advances a cursor (never moves it backwards).
    pub async fn set_cursor(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let v = i64::try_from(value).map_err(|_| StoreError::Corrupt("cursor overflow".into()))?;
        let mut tx = self.begin_write().await?;
        // One statement (an upsert), so two writers creating the same cursor at once cannot
        // collide on its primary key (Postgres).
        tx.exec(
            "INSERT INTO cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) \
             DO UPDATE SET value = excluded.value WHERE cursors.value < excluded.value",
            args![name, v],
        )
        .await?;
        tx.commit().await
    }
}

fn lim(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// What an internal payment read before writing, every refusal but the final ones made.
struct InternalChecked {
    inv: LnTxRecord,
    payer: WalletRecord,
    payee: WalletRecord,
}

/// The reads and refusals of an internal payment, in the order they are reported. The facts
/// judged here never change once written (the invoice's text, amount, expiry and wallet; the
/// wallets' owners), except three, each judged again on the locked rows: the invoice's
/// settlement (the payment's guarded invoice update), the hash's outgoing attempts (the unique
/// index the payer's outgoing row enters) and the payer's balance (`post`'s guarded debit). On
/// Postgres these reads take no lock, so a concurrent change may make them stale.
async fn internal_checks(
    conn: &mut Conn,
    c: &InternalPayCmd,
) -> Result<InternalChecked, InternalPayError> {
    let hash = c.payment_hash.to_hex();
    // The invoice, and whether an outgoing attempt of the same hash is live or done: an
    // external attempt may be under way (it will fail at the node, which knows the invoice is
    // ours); refuse rather than pay twice.
    let sql = format!(
        "SELECT {LNTX_COLS}, CASE WHEN EXISTS (SELECT 1 FROM ln_txs o \
         WHERE o.payment_hash = $1 AND o.direction = 'out' AND o.status IN ({})) \
         THEN 1 ELSE 0 END FROM ln_txs l WHERE l.payment_hash = $1 AND l.direction = 'in'",
        status_list(&LIVE_OR_DONE),
    );
    let Some(row) = conn.fetch_opt(&sql, args![hash.as_str()]).await? else {
        return Err(InternalPayError::NotInternal);
    };
    let inv = LnTxRecord::from_row(&row, 0)?;
    let attempted = row.flag(LNTX_NCOLS)?;
    let Some(payee) = inv.wallet_id.clone() else {
        return Err(InternalPayError::NotInternal);
    };
    if c.expect_request
        .as_ref()
        .is_some_and(|t| *t != inv.payment_request)
    {
        return Err(InternalPayError::NotInternal);
    }
    // The wallets are read before the invoice's state is judged, so that a wallet that is not
    // the caller's is reported as such whatever the invoice.
    let read = read_wallets(conn, &[&c.payer, &payee]).await?;
    let payer = match &read[0] {
        Some(w) if w.account_id == c.account_id => w.clone(),
        _ => return Err(InternalPayError::WalletNotFound),
    };
    let Some(payee) = read[1].clone() else {
        return Err(InternalPayError::NotInternal);
    };
    if inv.settled || inv.is_keysend {
        return Err(InternalPayError::AlreadyPaid);
    }
    if inv.expires_at.is_some_and(|e| c.now >= e) {
        return Err(InternalPayError::Expired);
    }
    if inv.amount.is_zero() {
        return Err(InternalPayError::ZeroAmount);
    }
    if let Some(max) = c.send_limit
        && inv.amount > max
    {
        return Err(InternalPayError::OverLimit(max));
    }
    if attempted {
        return Err(InternalPayError::AlreadyPaid);
    }
    if payer.balance < inv.amount.ceil_to_sat().map_err(StoreError::from)? {
        return Err(InternalPayError::InsufficientBalance(payer.balance));
    }
    Ok(InternalChecked { inv, payer, payee })
}

/// Books a successful payment inside the caller's transaction (see [`Store::settle_payment`]).
pub(crate) async fn settle_in(
    tx: &mut Conn,
    s: &SettleCmd,
) -> Result<PaymentSettled, PaymentStateError> {
    let sql = format!(
        "SELECT {LNTX_COLS}, l.wtx_type FROM ln_txs l WHERE l.id = $1 AND l.direction = 'out'{}",
        tx.dialect().for_update()
    );
    let Some(row) = tx.fetch_opt(&sql, args![s.lntx_id.as_str()]).await? else {
        return Err(PaymentStateError::NotFound);
    };
    let p = LnTxRecord::from_row(&row, 0)?;
    // Rows from before the column existed are withdrawals.
    let wtx_type = match row.opt_i64(LNTX_NCOLS)? {
        Some(code) => WtxType::from_code(code)
            .ok_or_else(|| StoreError::Corrupt(format!("payment wtx_type {code}")))?,
        None => WtxType::LnWithdrawal,
    };
    match p.status {
        Some(PaymentStatus::Succeeded) => {
            let mut w = wtxs_of_lntx(tx, &p.id).await?.into_iter();
            let wtx = w.next().ok_or(StoreError::NotFound)?;
            return Ok(PaymentSettled {
                wtx,
                fee_wtx: w.next(),
                newly_settled: false,
            });
        }
        Some(PaymentStatus::Failed) => return Err(PaymentStateError::AlreadyFailed),
        _ => {}
    }
    let wallet_id = p.wallet_id.clone().ok_or(StoreError::NotFound)?;
    // Take the wallet's lock before any system account's, even when its posting is zero (fee ==
    // limit): every transaction locks wallets first, so none can wait on another in a cycle.
    lock_wallet(tx, &wallet_id).await?;
    let amount = p.amount.as_i64();
    let reserved = payment_reserve(p.amount, p.fee_limit)
        .map_err(StoreError::from)?
        .as_i64();
    let fee = s.fee.as_i64();
    // The node promised to stay within the limit. If it did not, the wallet is charged only
    // the limit and the operator absorbs the rest (sys:unclaimed goes down), so no wallet is
    // ever charged more than it agreed to.
    let within = s.fee.min(p.fee_limit);
    let charged_fee = within.as_i64();
    let overrun = fee - charged_fee;
    if overrun > 0 {
        tracing::error!(lntx = %p.id, fee, limit = p.fee_limit.as_i64(), "node paid more fee than the limit");
    }
    // The wallet pays whole sats: amount + fee rounded up (`payment_charge`); what that is
    // above the real cost (under a sat) is the operator's revenue. It fits the reserve.
    let (shown_amount, shown_fee) = payment_charge(p.amount, within).map_err(StoreError::from)?;
    let (shown_amount, shown_fee) = (shown_amount.as_i64(), shown_fee.as_i64());
    let rounding = shown_amount + shown_fee - amount - charged_fee;
    let withdrawal = NewWtx {
        id: &s.wtx_id,
        wallet_id: &wallet_id,
        account_id: p.account_id.as_str(),
        now: s.now,
        amount_msat: -shown_amount,
        wtx_type,
        user_label: &s.user_label,
        lntx_id: Some(p.id.as_str()),
        pass_thru: &s.pass_thru,
    };
    let fee_entry = NewWtx {
        id: &s.fee_wtx_id,
        wallet_id: &wallet_id,
        account_id: p.account_id.as_str(),
        now: s.now,
        amount_msat: -shown_fee,
        wtx_type: WtxType::NetworkFee,
        user_label: "Network fee",
        lntx_id: Some(p.id.as_str()),
        pass_thru: &s.fee_pass_thru,
    };
    let entries: &[NewWtx<'_>] = if shown_fee > 0 {
        &[withdrawal, fee_entry]
    } else {
        &[withdrawal]
    };
    tx.exec(
        "UPDATE ln_txs SET status = 'succeeded', settled = 1, settled_at = $1, updated_at = $1, \
         fee_msat = $2, preimage = $3 WHERE id = $4",
        args![s.now, fee, s.preimage.to_hex(), p.id.as_str()],
    )
    .await?;
    post(
        tx,
        "payment_settle",
        p.id.as_str(),
        s.now,
        &[
            leg(Account::Sys(SYS_IN_FLIGHT), -reserved),
            leg(
                Account::Wallet(&wallet_id),
                reserved - shown_amount - shown_fee,
            ),
            leg(Account::Sys(SYS_LIGHTNING), amount + fee),
            leg(Account::Sys(SYS_UNCLAIMED), -overrun),
            leg(Account::Sys(SYS_REVENUE), rounding),
        ],
        entries,
    )
    .await?;
    let wtx = wtx_in(tx, &s.wtx_id).await?;
    let fee_wtx = if shown_fee > 0 {
        Some(wtx_in(tx, &s.fee_wtx_id).await?)
    } else {
        None
    };
    Ok(PaymentSettled {
        wtx,
        fee_wtx,
        newly_settled: true,
    })
}

/// Refunds a failed payment inside the caller's transaction (see [`Store::fail_payment`]).
pub(crate) async fn fail_in(
    tx: &mut Conn,
    id: &LnTxId,
    reason: &str,
    now: i64,
) -> Result<LnTxRecord, PaymentStateError> {
    let sql = format!(
        "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.id = $1 AND l.direction = 'out'{}",
        tx.dialect().for_update()
    );
    let Some(row) = tx.fetch_opt(&sql, args![id.as_str()]).await? else {
        return Err(PaymentStateError::NotFound);
    };
    let p = LnTxRecord::from_row(&row, 0)?;
    match p.status {
        Some(PaymentStatus::Failed) => return Ok(p),
        Some(PaymentStatus::Succeeded) => return Err(PaymentStateError::AlreadySucceeded),
        _ => {}
    }
    let wallet_id = p.wallet_id.clone().ok_or(StoreError::NotFound)?;
    lock_wallet(tx, &wallet_id).await?;
    let reserved = payment_reserve(p.amount, p.fee_limit)
        .map_err(StoreError::from)?
        .as_i64();
    post(
        tx,
        "payment_refund",
        p.id.as_str(),
        now,
        &[
            leg(Account::Sys(SYS_IN_FLIGHT), -reserved),
            leg(Account::Wallet(&wallet_id), reserved),
        ],
        &[],
    )
    .await?;
    tx.exec(
        "UPDATE ln_txs SET status = 'failed', failure_reason = $1, updated_at = $2 WHERE id = $3",
        args![reason, now, p.id.as_str()],
    )
    .await?;
    emit(
        tx,
        Emit {
            name: EventName::WalletSendFailure,
            account_id: p.account_id.as_str(),
            wallet_id: &wallet_id,
            wtx_id: None,
            lntx_id: Some(&p.id),
            now,
            balance_msat: None,
        },
    )
    .await?;
    let rec = lntx_in(tx, id.as_str())
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(rec)
}

/// Inserts the row of an invoice we issued (inside the caller's transaction).
pub(crate) async fn insert_invoice_in(
    tx: &mut Conn,
    inv: &NewInvoiceRecord,
) -> Result<(), StoreError> {
    tx.exec(
            "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, node_id, \
             dest_pubkey, payment_request, payment_hash, memo, description_hash, payment_addr, \
             amount_msat, expiry_secs, expires_at, preimage, pass_thru) \
             VALUES ($1, $2, $3, $4, $4, 'in', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            args![
                inv.id.as_str(),
                inv.account_id.as_str(),
                inv.wallet_id.as_str(),
                inv.now,
                inv.node_id.as_str(),
                inv.dest_pubkey.as_str(),
                inv.payment_request.as_str(),
                inv.payment_hash.to_hex(),
                inv.memo.as_str(),
                inv.description_hash.clone(),
                inv.payment_addr.clone(),
                inv.amount.as_i64(),
                inv.expiry_secs,
                inv.expires_at,
                inv.preimage.to_hex(),
                inv.pass_thru.as_str()
            ],
        )
        .await?;
    Ok(())
}

/// The record [`insert_invoice_in`] wrote.
pub(crate) fn invoice_record(inv: &NewInvoiceRecord) -> LnTxRecord {
    LnTxRecord {
        id: inv.id.clone(),
        account_id: inv.account_id.clone(),
        wallet_id: Some(inv.wallet_id.clone()),
        created_at: inv.now,
        direction: Direction::Incoming,
        node_id: inv.node_id.clone(),
        dest_pubkey: inv.dest_pubkey.clone(),
        payment_request: inv.payment_request.clone(),
        payment_hash: inv.payment_hash,
        memo: inv.memo.clone(),
        description_hash: inv.description_hash.clone(),
        payment_addr: inv.payment_addr.clone(),
        amount: inv.amount,
        fee: Msat::ZERO,
        fee_limit: Msat::ZERO,
        expiry_secs: Some(inv.expiry_secs),
        expires_at: Some(inv.expires_at),
        preimage: Some(inv.preimage),
        settled: false,
        settled_at: None,
        is_keysend: false,
        custom_records: None,
        pass_thru: inv.pass_thru.clone(),
        status: None,
        failure_reason: None,
    }
}
