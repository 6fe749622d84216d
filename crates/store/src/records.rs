//! Records read back from the database, already decoded into domain types.

use satchel_domain::{
    AccountId, JobId, KeyRole, LnTxId, Msat, NodeId, PaymentHash, PaymentStatus, Preimage,
    WalletId, WtxId, WtxType,
};

use crate::StoreError;
use crate::db::Row;

/// A wallet and its stored balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletRecord {
    /// Id (`wal_…`).
    pub id: WalletId,
    /// Owning account.
    pub account_id: AccountId,
    /// Label.
    pub user_label: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// Spendable balance (reserves of in-flight payments already deducted).
    pub balance: Msat,
    /// Number of wallet transactions (kept with the balance so listing never counts rows).
    pub wtx_count: u64,
    /// `active` unless deactivated.
    pub active: bool,
    /// The node it lives on.
    pub node_id: NodeId,
    /// Its default LNURL-pay link (`lnurlp_…`): made with the wallet, or for a wallet older
    /// than LNURL-pay, the first link made for it.
    pub default_lnurlp_id: Option<String>,
}

pub(crate) const WALLET_COLS: &str = "id, account_id, user_label, created_at, updated_at, \
     balance_msat, wtx_count, status, node_id, default_lnurlp_id";

impl WalletRecord {
    pub(crate) fn from_row(r: &Row, o: usize) -> Result<WalletRecord, StoreError> {
        Ok(WalletRecord {
            id: WalletId::from_db(r.text(o)?),
            account_id: AccountId::from_db(r.text(o + 1)?),
            user_label: r.text(o + 2)?,
            created_at: r.i64(o + 3)?,
            updated_at: r.i64(o + 4)?,
            balance: Msat::from_i64(r.i64(o + 5)?)?,
            wtx_count: u64::try_from(r.i64(o + 6)?).unwrap_or(0),
            active: r.text(o + 7)? == "active",
            node_id: NodeId::from_db(r.text(o + 8)?),
            default_lnurlp_id: r.opt_text(o + 9)?,
        })
    }
}

/// An access key as stored (its hash is the lookup key; the text is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Owning account.
    pub account_id: AccountId,
    /// Bound wallet for wallet keys.
    pub wallet_id: Option<WalletId>,
    /// Role.
    pub role: KeyRole,
    /// Text before the first `_` (e.g. `waki`), for LNPay's permission error message.
    pub prefix: String,
    /// Suspended keys authenticate to nothing.
    pub suspended: bool,
}

/// Direction of a Lightning transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// An invoice we issued or a keysend we received.
    Incoming,
    /// A payment we sent.
    Outgoing,
}

/// A Lightning transaction (LNPay `lnTx`): an invoice of ours or a payment we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LnTxRecord {
    /// Id (`lntx_…`).
    pub id: LnTxId,
    /// Owning account.
    pub account_id: AccountId,
    /// Wallet (None only for money that reached no wallet).
    pub wallet_id: Option<WalletId>,
    /// Unix seconds.
    pub created_at: i64,
    /// In or out.
    pub direction: Direction,
    /// Our node.
    pub node_id: NodeId,
    /// Invoices: our pubkey; payments: the destination.
    pub dest_pubkey: String,
    /// BOLT11, or `<pubkey>:<sats>` for keysend out, `keysend` for keysend in.
    pub payment_request: String,
    /// Payment hash.
    pub payment_hash: PaymentHash,
    /// Memo.
    pub memo: String,
    /// Description hash as given (hex).
    pub description_hash: Option<String>,
    /// Payment secret (hex).
    pub payment_addr: Option<String>,
    /// Invoice amount (incoming: amount received once settled) or amount sent.
    pub amount: Msat,
    /// Routing fee paid (outgoing).
    pub fee: Msat,
    /// Fee limit reserved (outgoing).
    pub fee_limit: Msat,
    /// Expiry seconds.
    pub expiry_secs: Option<i64>,
    /// Absolute expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Preimage. For our own invoices it is stored from creation; the API shows it only once
    /// `settled` is true.
    pub preimage: Option<Preimage>,
    /// Paid.
    pub settled: bool,
    /// When it was paid.
    pub settled_at: Option<i64>,
    /// Keysend.
    pub is_keysend: bool,
    /// Custom records as a JSON object text (`{"696969":"wal_x"}`).
    pub custom_records: Option<String>,
    /// passThru JSON object text.
    pub pass_thru: String,
    /// Outgoing payment state (None for incoming).
    pub status: Option<PaymentStatus>,
    /// Definite failure reason (`FAILURE_REASON_…`).
    pub failure_reason: Option<String>,
}

pub(crate) const LNTX_COLS: &str = "l.id, l.account_id, l.wallet_id, l.created_at, l.direction, \
    l.node_id, l.dest_pubkey, l.payment_request, l.payment_hash, l.memo, l.description_hash, \
    l.payment_addr, l.amount_msat, l.fee_msat, l.fee_limit_msat, l.expiry_secs, l.expires_at, \
    l.preimage, l.settled, l.settled_at, l.is_keysend, l.custom_records, l.pass_thru, l.status, \
    l.failure_reason";
pub(crate) const LNTX_NCOLS: usize = 25;

fn hash(s: String) -> Result<PaymentHash, StoreError> {
    PaymentHash::from_hex(&s).ok_or_else(|| StoreError::Corrupt(format!("payment hash {s}")))
}

impl LnTxRecord {
    pub(crate) fn from_row(r: &Row, o: usize) -> Result<LnTxRecord, StoreError> {
        let preimage = match r.opt_text(o + 17)? {
            Some(p) => {
                Some(Preimage::from_hex(&p).ok_or_else(|| StoreError::Corrupt("preimage".into()))?)
            }
            None => None,
        };
        let status = match r.opt_text(o + 23)? {
            Some(s) => Some(
                PaymentStatus::from_code(&s)
                    .ok_or_else(|| StoreError::Corrupt(format!("status {s}")))?,
            ),
            None => None,
        };
        Ok(LnTxRecord {
            id: LnTxId::from_db(r.text(o)?),
            account_id: AccountId::from_db(r.text(o + 1)?),
            wallet_id: r.opt_text(o + 2)?.map(WalletId::from_db),
            created_at: r.i64(o + 3)?,
            direction: if r.text(o + 4)? == "in" {
                Direction::Incoming
            } else {
                Direction::Outgoing
            },
            node_id: NodeId::from_db(r.text(o + 5)?),
            dest_pubkey: r.text(o + 6)?,
            payment_request: r.text(o + 7)?,
            payment_hash: hash(r.text(o + 8)?)?,
            memo: r.text(o + 9)?,
            description_hash: r.opt_text(o + 10)?,
            payment_addr: r.opt_text(o + 11)?,
            amount: Msat::from_i64(r.i64(o + 12)?)?,
            fee: Msat::from_i64(r.i64(o + 13)?)?,
            fee_limit: Msat::from_i64(r.i64(o + 14)?)?,
            expiry_secs: r.opt_i64(o + 15)?,
            expires_at: r.opt_i64(o + 16)?,
            preimage,
            settled: r.flag(o + 18)?,
            settled_at: r.opt_i64(o + 19)?,
            is_keysend: r.flag(o + 20)?,
            custom_records: r.opt_text(o + 21)?,
            pass_thru: r.text(o + 22)?,
            status,
            failure_reason: r.opt_text(o + 24)?,
        })
    }
}

/// A wallet transaction (LNPay `WTX`): one settled, balance-affecting entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WtxRecord {
    /// Id (`wtx_…`).
    pub id: WtxId,
    /// The wallet as it is now.
    pub wallet: WalletRecord,
    /// Unix seconds.
    pub created_at: i64,
    /// Signed amount: debits negative.
    pub amount_msat: i64,
    /// Type.
    pub wtx_type: WtxType,
    /// Label.
    pub user_label: String,
    /// The Lightning transaction behind it, if any.
    pub lntx: Option<LnTxRecord>,
    /// passThru JSON object text.
    pub pass_thru: String,
}

/// WTX columns followed by the joined ln_txs columns (NULL when no lntx).
pub(crate) fn wtx_select() -> String {
    format!(
        "SELECT t.id, t.wallet_id, t.created_at, t.amount_msat, t.wtx_type, t.user_label, \
         t.lntx_id, t.pass_thru, {LNTX_COLS} FROM wtxs t LEFT JOIN ln_txs l ON l.id = t.lntx_id"
    )
}

/// A WTX row before its wallet is attached.
pub(crate) struct WtxRow {
    pub id: WtxId,
    pub wallet_id: WalletId,
    pub created_at: i64,
    pub amount_msat: i64,
    pub wtx_type: WtxType,
    pub user_label: String,
    pub lntx: Option<LnTxRecord>,
    pub pass_thru: String,
}

impl WtxRow {
    pub(crate) fn from_row(r: &Row) -> Result<WtxRow, StoreError> {
        let code = r.i64(4)?;
        let lntx = if r.opt_text(6)?.is_some() {
            Some(LnTxRecord::from_row(r, 8)?)
        } else {
            None
        };
        Ok(WtxRow {
            id: WtxId::from_db(r.text(0)?),
            wallet_id: WalletId::from_db(r.text(1)?),
            created_at: r.i64(2)?,
            amount_msat: r.i64(3)?,
            wtx_type: WtxType::from_code(code)
                .ok_or_else(|| StoreError::Corrupt(format!("wtx type {code}")))?,
            user_label: r.text(5)?,
            lntx,
            pass_thru: r.text(7)?,
        })
    }

    pub(crate) fn with_wallet(self, wallet: WalletRecord) -> WtxRecord {
        WtxRecord {
            id: self.id,
            wallet,
            created_at: self.created_at,
            amount_msat: self.amount_msat,
            wtx_type: self.wtx_type,
            user_label: self.user_label,
            lntx: self.lntx,
            pass_thru: self.pass_thru,
        }
    }
}

/// Status of an asynchronous job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for the worker (or interrupted by a restart).
    Queued,
    /// Finished with a WTX.
    Succeeded,
    /// Finished with an error.
    Failed,
}

impl JobStatus {
    pub(crate) fn code(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
    pub(crate) fn from_code(s: &str) -> Option<JobStatus> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            _ => return None,
        })
    }
}

/// A durable asynchronous job (`X-LNPAY-ASYNC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Id (`job_…`).
    pub id: JobId,
    /// Owning account.
    pub account_id: AccountId,
    /// Wallet it acts on.
    pub wallet_id: WalletId,
    /// What it does (`keysend`).
    pub kind: String,
    /// The validated request, as JSON text.
    pub request: String,
    /// State.
    pub status: JobStatus,
    /// Result WTX.
    pub result_wtx_id: Option<WtxId>,
    /// Error message (LNPay wording).
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

pub(crate) const JOB_COLS: &str = "id, account_id, wallet_id, kind, request, status, result_wtx_id, error, created_at, updated_at";

impl JobRecord {
    pub(crate) fn from_row(r: &Row) -> Result<JobRecord, StoreError> {
        let s = r.text(5)?;
        Ok(JobRecord {
            id: JobId::from_db(r.text(0)?),
            account_id: AccountId::from_db(r.text(1)?),
            wallet_id: WalletId::from_db(r.text(2)?),
            kind: r.text(3)?,
            request: r.text(4)?,
            status: JobStatus::from_code(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("job {s}")))?,
            result_wtx_id: r.opt_text(6)?.map(WtxId::from_db),
            error: r.opt_text(7)?,
            created_at: r.i64(8)?,
            updated_at: r.i64(9)?,
        })
    }
}
