//! LNURL-pay links and Lightning Addresses (LUD-06/16), the invoices they issue and the LUD-21
//! verify ids of those invoices.
//!
//! A link's metadata text is stored as computed when the link was made or last changed: the
//! invoices' description hash is the SHA-256 of exactly that text, so it is never rebuilt at
//! serve time. Usernames are stored lower case under a unique index: one name, one link, on
//! this server's single domain. An invoice a link issued is an ordinary `ln_txs` row that also
//! carries `deposit_wtx_type` (60, `ln_lnurl_pay_inbound`), which the credit (from the node or
//! an internal payment) books instead of `ln_deposit`.

use satchel_domain::{AccountId, Msat, Username, WalletId, WtxType};

use crate::db::{Conn, Row};
use crate::records::{LNTX_COLS, LnTxRecord};
use crate::repo::{NewInvoiceRecord, insert_invoice_in, invoice_record};
use crate::{Store, StoreError, args};

/// A stored LNURL-pay link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LnurlpLink {
    /// `lnurlp_…`.
    pub id: String,
    /// Owner.
    pub account_id: AccountId,
    /// Wallet credited.
    pub wallet_id: WalletId,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// The owner's label.
    pub user_label: Option<String>,
    /// LUD-06 `minSendable`.
    pub min_sendable: Msat,
    /// LUD-06 `maxSendable`.
    pub max_sendable: Msat,
    /// The `text/plain` metadata entry.
    pub short_desc: String,
    /// LUD-12 `commentAllowed` (characters; 0: no comments).
    pub comment_allowed: u32,
    /// Lightning Address local part.
    pub username: Option<Username>,
    /// The metadata text served, whose SHA-256 is the invoices' description hash.
    pub metadata: String,
    /// `lnurl_active` (else `lnurl_inactive`: the link issues no invoices and routes no
    /// keysends).
    pub active: bool,
}

/// Why a link could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LnurlpWriteError {
    /// Another link has the username.
    #[error("username taken")]
    UsernameTaken,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a LUD-21 verify id names.
#[derive(Debug, Clone)]
pub struct LnurlpInvoice {
    /// The invoice (its `settled`, `preimage`, `payment_request`).
    pub lntx: LnTxRecord,
    /// The link that issued it.
    pub link_id: String,
}

const COLS: &str = "id, account_id, wallet_id, created_at, updated_at, user_label, \
                    min_sendable_msat, max_sendable_msat, short_desc, comment_allowed, username, \
                    metadata, active";

fn from_row(r: &Row) -> Result<LnurlpLink, StoreError> {
    let comment = r.i64(9)?;
    Ok(LnurlpLink {
        id: r.text(0)?,
        account_id: AccountId::from_db(r.text(1)?),
        wallet_id: WalletId::from_db(r.text(2)?),
        created_at: r.i64(3)?,
        updated_at: r.i64(4)?,
        user_label: r.opt_text(5)?,
        min_sendable: Msat::from_i64(r.i64(6)?)?,
        max_sendable: Msat::from_i64(r.i64(7)?)?,
        short_desc: r.text(8)?,
        comment_allowed: u32::try_from(comment)
            .map_err(|_| StoreError::Corrupt(format!("comment_allowed {comment}")))?,
        username: r.opt_text(10)?.map(Username::from_db),
        metadata: r.text(11)?,
        active: r.flag(12)?,
    })
}

/// The WTX type a stored `deposit_wtx_type` names (`NULL`: `ln_deposit`).
pub(crate) fn deposit_type(code: Option<i64>) -> Result<WtxType, StoreError> {
    match code {
        None => Ok(WtxType::LnDeposit),
        Some(c) => WtxType::from_code(c)
            .ok_or_else(|| StoreError::Corrupt(format!("deposit_wtx_type {c}"))),
    }
}

/// The WTX type crediting the invoice `lntx_id` books.
pub(crate) async fn deposit_type_in(tx: &mut Conn, lntx_id: &str) -> Result<WtxType, StoreError> {
    let row = tx
        .fetch_opt(
            "SELECT deposit_wtx_type FROM ln_txs WHERE id = $1",
            args![lntx_id],
        )
        .await?;
    deposit_type(match row {
        Some(r) => r.opt_i64(0)?,
        None => None,
    })
}

async fn username_taken(
    tx: &mut Conn,
    username: Option<&Username>,
    except: &str,
) -> Result<bool, StoreError> {
    let Some(u) = username else {
        return Ok(false);
    };
    Ok(tx
        .fetch_opt(
            "SELECT 1 FROM lnurlp_links WHERE username = $1 AND id <> $2",
            args![u.as_str(), except],
        )
        .await?
        .is_some())
}

/// Inserts a link and makes it its wallet's default if the wallet has none (inside the
/// caller's transaction).
pub(crate) async fn insert_link_in(tx: &mut Conn, l: &LnurlpLink) -> Result<(), StoreError> {
    tx.exec(
        &format!(
            "INSERT INTO lnurlp_links ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ),
        args![
            l.id.as_str(),
            l.account_id.as_str(),
            l.wallet_id.as_str(),
            l.created_at,
            l.updated_at,
            l.user_label.clone(),
            l.min_sendable.as_i64(),
            l.max_sendable.as_i64(),
            l.short_desc.as_str(),
            i64::from(l.comment_allowed),
            l.username.as_ref().map(|u| u.as_str().to_owned()),
            l.metadata.as_str(),
            i64::from(l.active)
        ],
    )
    .await?;
    tx.exec(
        "UPDATE wallets SET default_lnurlp_id = $1 WHERE id = $2 AND default_lnurlp_id IS NULL",
        args![l.id.as_str(), l.wallet_id.as_str()],
    )
    .await?;
    Ok(())
}

/// A unique-index violation on a write that checked the name first is a concurrent writer
/// that took it in between.
fn taken_if_constraint(e: StoreError, has_name: bool) -> LnurlpWriteError {
    match e {
        StoreError::Constraint(_) if has_name => LnurlpWriteError::UsernameTaken,
        e => LnurlpWriteError::Store(e),
    }
}

impl Store {
    /// Stores a new link (the wallet's default if it has none yet).
    pub async fn insert_lnurlp_link(&self, l: &LnurlpLink) -> Result<(), LnurlpWriteError> {
        let mut tx = self.begin_write().await?;
        if username_taken(&mut tx, l.username.as_ref(), &l.id).await? {
            return Err(LnurlpWriteError::UsernameTaken);
        }
        insert_link_in(&mut tx, l)
            .await
            .map_err(|e| taken_if_constraint(e, l.username.is_some()))?;
        tx.commit()
            .await
            .map_err(|e| taken_if_constraint(e, l.username.is_some()))
    }

    /// Rewrites a link's changeable fields (everything but its id, owner, wallet and creation
    /// time).
    pub async fn update_lnurlp_link(&self, l: &LnurlpLink) -> Result<(), LnurlpWriteError> {
        let mut tx = self.begin_write().await?;
        if username_taken(&mut tx, l.username.as_ref(), &l.id).await? {
            return Err(LnurlpWriteError::UsernameTaken);
        }
        let n = tx
            .exec(
                "UPDATE lnurlp_links SET updated_at = $1, user_label = $2, min_sendable_msat = $3, \
                 max_sendable_msat = $4, short_desc = $5, comment_allowed = $6, username = $7, \
                 metadata = $8, active = $9 WHERE id = $10",
                args![
                    l.updated_at,
                    l.user_label.clone(),
                    l.min_sendable.as_i64(),
                    l.max_sendable.as_i64(),
                    l.short_desc.as_str(),
                    i64::from(l.comment_allowed),
                    l.username.as_ref().map(|u| u.as_str().to_owned()),
                    l.metadata.as_str(),
                    i64::from(l.active),
                    l.id.as_str()
                ],
            )
            .await
            .map_err(|e| taken_if_constraint(e, l.username.is_some()))?;
        if n != 1 {
            return Err(StoreError::NotFound.into());
        }
        tx.commit()
            .await
            .map_err(|e| taken_if_constraint(e, l.username.is_some()))
    }

    /// A link by id.
    pub async fn lnurlp_link(&self, id: &str) -> Result<Option<LnurlpLink>, StoreError> {
        let mut c = self.read_conn().await?;
        let row = c
            .fetch_opt(
                &format!("SELECT {COLS} FROM lnurlp_links WHERE id = $1"),
                args![id],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The link holding a username.
    pub async fn lnurlp_link_by_username(
        &self,
        username: &Username,
    ) -> Result<Option<LnurlpLink>, StoreError> {
        let mut c = self.read_conn().await?;
        let row = c
            .fetch_opt(
                &format!("SELECT {COLS} FROM lnurlp_links WHERE username = $1"),
                args![username.as_str()],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Records an invoice a link issued, with its LUD-21 verify id, in one transaction.
    pub async fn insert_lnurlp_invoice(
        &self,
        inv: &NewInvoiceRecord,
        link_id: &str,
        verify_id: &str,
    ) -> Result<LnTxRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        insert_invoice_in(&mut tx, inv).await?;
        tx.exec(
            "UPDATE ln_txs SET deposit_wtx_type = $1 WHERE id = $2",
            args![WtxType::LnLnurlPayInbound.code(), inv.id.as_str()],
        )
        .await?;
        tx.exec(
            "INSERT INTO lnurlp_invoices (verify_id, link_id, payment_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
            args![verify_id, link_id, inv.payment_hash.to_hex(), inv.now],
        )
        .await?;
        tx.commit().await?;
        Ok(invoice_record(inv))
    }

    /// The invoice a LUD-21 verify id names.
    pub async fn lnurlp_invoice(
        &self,
        verify_id: &str,
    ) -> Result<Option<LnurlpInvoice>, StoreError> {
        let mut c = self.read_conn().await?;
        let row = c
            .fetch_opt(
                &format!(
                    "SELECT {LNTX_COLS}, v.link_id FROM lnurlp_invoices v \
                     JOIN ln_txs l ON l.payment_hash = v.payment_hash AND l.direction = 'in' \
                     WHERE v.verify_id = $1"
                ),
                args![verify_id],
            )
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        Ok(Some(LnurlpInvoice {
            lntx: LnTxRecord::from_row(&r, 0)?,
            link_id: r.text(crate::records::LNTX_NCOLS)?,
        }))
    }
}
