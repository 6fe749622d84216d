//! LNURL-withdraw links (LUD-03): their rows, and the claim that spends a one-time link inside
//! the transaction of its payment.
//!
//! Why the claim lives in the payment's transaction: a one-time link must pay at most once even
//! when two wallets scan it and call back at the same moment with two different invoices. The
//! claim is a conditional `UPDATE … WHERE used_hash IS NULL` (or still the hash of a payment
//! that definitely failed); it runs first in [`crate::Store::reserve_payment_claiming`] /
//! [`crate::Store::pay_internal_claiming`], so the link is spent exactly when money is reserved
//! (or settled), and a refused payment (balance, already paid…) rolls the claim back with it.
//! On Postgres the second callback's update waits on the first one's row lock and then finds
//! the row spent; SQLite has one writer. The row lock is the first lock such a transaction
//! takes (before Lightning rows and wallets), everywhere, so the lock order stays acyclic.

use satchel_domain::{AccountId, Msat, PaymentHash, WalletId};

use crate::db::{Conn, Row};
use crate::{Store, StoreError, args};

/// Whether a link pays once or every time it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LnurlwKind {
    /// `GET /lnurl/withdraw`: spent by its first payment.
    Once,
    /// `GET /lnurl/withdraw-static`: reusable, does not expire.
    Static,
}

impl LnurlwKind {
    fn code(self) -> &'static str {
        match self {
            LnurlwKind::Once => "once",
            LnurlwKind::Static => "static",
        }
    }
    fn from_code(s: &str) -> Result<LnurlwKind, StoreError> {
        match s {
            "once" => Ok(LnurlwKind::Once),
            "static" => Ok(LnurlwKind::Static),
            other => Err(StoreError::Corrupt(format!("lnurlw kind {other}"))),
        }
    }
}

/// A stored link.
#[derive(Debug, Clone)]
pub struct LnurlwLink {
    /// `lnurlw_…`; the path segment of its URLs.
    pub id: String,
    /// Owner.
    pub account_id: AccountId,
    /// Wallet paid from.
    pub wallet_id: WalletId,
    /// Once or static.
    pub kind: LnurlwKind,
    /// SHA-256 (hex) of the link's secret (`ott`).
    pub ott_hash: String,
    /// LUD-03 `k1` (random hex), checked on the callback.
    pub k1: String,
    /// Exact amount, or `None`: up to the wallet's spendable balance.
    pub amount: Option<Msat>,
    /// `defaultDescription`.
    pub memo: Option<String>,
    /// Client passThru (JSON object text).
    pub pass_thru: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None`: never.
    pub expires_at: Option<i64>,
    /// Hash of the payment that spent (claimed) a one-time link.
    pub used_hash: Option<PaymentHash>,
    /// When it was claimed.
    pub used_at: Option<i64>,
}

/// Spend a one-time link inside a payment's transaction.
#[derive(Debug, Clone)]
pub struct LinkClaim {
    /// Link id.
    pub link_id: String,
    /// Hash of the payment that spends it.
    pub hash: PaymentHash,
    /// Unix seconds (also judged against the link's expiry).
    pub now: i64,
    /// A previous claim whose payment definitely failed: the link may be claimed again only
    /// while it still carries exactly this hash.
    pub reopen: Option<PaymentHash>,
}

const COLS: &str = "id, account_id, wallet_id, kind, ott_hash, k1, amount_msat, memo, pass_thru, \
                    created_at, expires_at, used_hash, used_at";

fn from_row(r: &Row) -> Result<LnurlwLink, StoreError> {
    let hash = |s: Option<String>| -> Result<Option<PaymentHash>, StoreError> {
        s.map(|h| PaymentHash::from_hex(&h).ok_or_else(|| StoreError::Corrupt(format!("hash {h}"))))
            .transpose()
    };
    Ok(LnurlwLink {
        id: r.text(0)?,
        account_id: AccountId::from_db(r.text(1)?),
        wallet_id: WalletId::from_db(r.text(2)?),
        kind: LnurlwKind::from_code(&r.text(3)?)?,
        ott_hash: r.text(4)?,
        k1: r.text(5)?,
        amount: r.opt_i64(6)?.map(Msat::from_i64).transpose()?,
        memo: r.opt_text(7)?,
        pass_thru: r.text(8)?,
        created_at: r.i64(9)?,
        expires_at: r.opt_i64(10)?,
        used_hash: hash(r.opt_text(11)?)?,
        used_at: r.opt_i64(12)?,
    })
}

/// Spends a one-time link inside the caller's transaction; false if it is spent, expired or
/// unknown (the caller then refuses the payment and rolls back).
pub(crate) async fn claim_in(tx: &mut Conn, c: &LinkClaim) -> Result<bool, StoreError> {
    let n = tx
        .exec(
            "UPDATE lnurlw_links SET used_hash = $1, used_at = $2 \
             WHERE id = $3 AND kind = 'once' AND (expires_at IS NULL OR expires_at > $2) \
             AND (used_hash IS NULL OR used_hash = $4)",
            args![
                c.hash.to_hex(),
                c.now,
                c.link_id.as_str(),
                c.reopen.map(|h| h.to_hex())
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Whether [`claim_in`] would succeed now (a read, for checks made before acting on the node).
pub(crate) async fn claimable(conn: &mut Conn, c: &LinkClaim) -> Result<bool, StoreError> {
    let row = conn
        .fetch_opt(
            "SELECT 1 FROM lnurlw_links WHERE id = $1 AND kind = 'once' \
             AND (expires_at IS NULL OR expires_at > $2) \
             AND (used_hash IS NULL OR used_hash = $3)",
            args![c.link_id.as_str(), c.now, c.reopen.map(|h| h.to_hex())],
        )
        .await?;
    Ok(row.is_some())
}

impl Store {
    /// Stores a new link (one statement).
    pub async fn insert_lnurlw_link(&self, l: &LnurlwLink) -> Result<(), StoreError> {
        let mut c = self.begin_one_statement_write().await?;
        c.exec(
            &format!(
                "INSERT INTO lnurlw_links ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ),
            args![
                l.id.as_str(),
                l.account_id.as_str(),
                l.wallet_id.as_str(),
                l.kind.code(),
                l.ott_hash.as_str(),
                l.k1.as_str(),
                l.amount.map(|a| a.as_i64()),
                l.memo.clone(),
                l.pass_thru.as_str(),
                l.created_at,
                l.expires_at,
                l.used_hash.map(|h| h.to_hex()),
                l.used_at
            ],
        )
        .await?;
        c.commit().await
    }

    /// The link whose secret hashes to `ott_hash`.
    pub async fn lnurlw_link_by_ott(
        &self,
        ott_hash: &str,
    ) -> Result<Option<LnurlwLink>, StoreError> {
        let mut c = self.read_conn().await?;
        let row = c
            .fetch_opt(
                &format!("SELECT {COLS} FROM lnurlw_links WHERE ott_hash = $1"),
                args![ott_hash],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }
}
