//! Wallets, invoices, transfers and history.

use std::sync::Arc;

use satchel_domain::{
    AccountId, ApiKeySecret, Bolt11, KeyRole, LnTxId, Msat, NodePubkey, Permission, Preimage,
    WalletId, WtxId, now_secs,
};
use satchel_lightning::{NewInvoice, Route};
use satchel_store::{
    LnTxRecord, NewInvoiceRecord, NewKey, NewWallet, TransferCmd, TransferDone, TransferError,
    WalletRecord, WtxRecord,
};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::passthru::PassThru;
use crate::payments::PaymentService;
use crate::{Ctx, ServiceError};

/// Longest memo, in bytes: what a BOLT11 description can carry (639 bytes), applied to transfer
/// memos too, which are stored and listed the same way but had no bound of their own.
pub const MAX_MEMO_BYTES: usize = 639;

/// Refuses a memo longer than [`MAX_MEMO_BYTES`] with LNPay's validation message.
fn check_memo(memo: &str) -> Result<(), ServiceError> {
    if memo.len() > MAX_MEMO_BYTES {
        return Err(ServiceError::Invalid(format!(
            "Memo should contain at most {MAX_MEMO_BYTES} characters."
        )));
    }
    Ok(())
}

/// Default memo of a generated invoice when the client gives none.
pub const DEFAULT_INVOICE_MEMO: &str = "Satchel Invoice";
/// Default invoice expiry (LNPay: 86400).
pub const DEFAULT_INVOICE_EXPIRY_SECS: u64 = 86_400;
/// Longest accepted expiry (one year).
pub const MAX_INVOICE_EXPIRY_SECS: u64 = 31_536_000;

/// A new invoice.
#[derive(Debug, Clone, Default)]
pub struct InvoiceRequest {
    /// Amount; zero means amountless.
    pub amount: Msat,
    /// Memo.
    pub memo: Option<String>,
    /// Expiry seconds.
    pub expiry_secs: Option<u64>,
    /// Description hash (bytes) and its text as given.
    pub description_hash: Option<([u8; 32], String)>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
}

/// An internal transfer.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// Destination wallet id or access key.
    pub dest: String,
    /// Amount (> 0).
    pub amount: Msat,
    /// Memo (label of both WTXs).
    pub memo: Option<String>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
    /// LNPay's `lnPayParams`.
    pub lnpay_params: Option<Map<String, Value>>,
}

/// A created wallet and its keys (shown once).
#[derive(Debug, Clone)]
pub struct CreatedWallet {
    /// The wallet.
    pub wallet: WalletRecord,
    /// One key per wallet role.
    pub keys: Vec<ApiKeySecret>,
}

/// A new account and its keys (shown once).
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Id.
    pub id: AccountId,
    /// Secret key (`sak_`).
    pub secret_key: ApiKeySecret,
    /// Public key (`pak_`).
    pub public_key: ApiKeySecret,
}

/// Creates an account with its `sak_` and `pak_` keys (operator command, first start). Needs no
/// node, so the CLI can run it against the database alone.
pub async fn create_account(
    store: &satchel_store::Store,
    label: &str,
) -> Result<NewAccount, ServiceError> {
    let label = label.trim();
    if label.is_empty() {
        return Err(ServiceError::Invalid("Label cannot be blank.".into()));
    }
    let id = AccountId::generate();
    let sak = ApiKeySecret::generate(KeyRole::Secret);
    let pak = ApiKeySecret::generate(KeyRole::Public);
    store
        .create_account(&id, label, now_secs(), &[new_key(&sak), new_key(&pak)])
        .await?;
    Ok(NewAccount {
        id,
        secret_key: sak,
        public_key: pak,
    })
}

/// A wallet imported from another system (e.g. LNPay): its original id and keys are kept.
#[derive(Debug, Clone)]
pub struct ImportWallet {
    /// Owning account.
    pub account_id: AccountId,
    /// Original id (`wal_…`, legacy `w_…`).
    pub id: String,
    /// Label.
    pub user_label: String,
    /// Original access keys (`waka_…`, legacy `wa_…`, `wi_…`, `wr_…`).
    pub keys: Vec<String>,
    /// Balance to carry over.
    pub opening_balance: Msat,
    /// Node the wallet lives on.
    pub node_id: satchel_domain::NodeId,
}

/// Imports a wallet under its original id with its original keys (stored only as hashes) and an
/// opening balance. Needs no node, so the CLI runs it against the database alone.
pub async fn import_wallet(
    store: &satchel_store::Store,
    w: ImportWallet,
) -> Result<WalletRecord, ServiceError> {
    let id = WalletId::parse(&w.id).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    if !WalletId::looks_like_id(id.as_str()) {
        return Err(ServiceError::Invalid(format!(
            "{} is not a wallet id (wal_… or w_…)",
            w.id
        )));
    }
    let mut keys = Vec::new();
    for k in &w.keys {
        let s = ApiKeySecret::import(k)
            .ok_or_else(|| ServiceError::Invalid(format!("unrecognised key: {k}")))?;
        if !s.role().is_wallet_key() {
            return Err(ServiceError::Invalid(format!("{k} is not a wallet key")));
        }
        keys.push(new_key(&s));
    }
    let label = w.user_label.trim();
    if label.is_empty() {
        return Err(ServiceError::Invalid(
            "Internal Label cannot be blank.".into(),
        ));
    }
    Ok(store
        .import_wallet(
            &NewWallet {
                id,
                account_id: w.account_id,
                user_label: label.to_owned(),
                node_id: w.node_id,
                now: now_secs(),
                keys,
            },
            w.opening_balance,
            &WtxId::generate(),
        )
        .await?)
}

/// Wallet use cases.
#[derive(Clone)]
pub struct WalletService {
    ctx: Arc<Ctx>,
    payments: PaymentService,
}

fn new_key(k: &ApiKeySecret) -> NewKey {
    NewKey {
        role: k.role(),
        hash: k.hash(),
        prefix: k.prefix().to_owned(),
    }
}

impl WalletService {
    pub(crate) fn new(ctx: Arc<Ctx>, payments: PaymentService) -> WalletService {
        WalletService { ctx, payments }
    }

    /// Creates an account with its `sak_` and `pak_` keys.
    pub async fn create_account(&self, label: &str) -> Result<NewAccount, ServiceError> {
        create_account(&self.ctx.store, label).await
    }

    /// Creates a wallet with one key per wallet role.
    pub async fn create_wallet(
        &self,
        caller: &Caller,
        user_label: &str,
    ) -> Result<CreatedWallet, ServiceError> {
        let label = user_label.trim();
        if label.is_empty() {
            return Err(ServiceError::Invalid(
                "Internal Label cannot be blank.".into(),
            ));
        }
        if label.chars().count() > 255 {
            return Err(ServiceError::Invalid(
                "Internal Label should contain at most 255 characters.".into(),
            ));
        }
        let keys: Vec<ApiKeySecret> = KeyRole::WALLET_ROLES
            .iter()
            .map(|r| ApiKeySecret::generate(*r))
            .collect();
        let id = WalletId::generate();
        let now = now_secs();
        // LNPay gave every new wallet a default LNURL-pay link; made in the wallet's own
        // transaction, so `default_lnurlpay_id` is never missing from a new wallet.
        let link = crate::lnurlp::default_link(&self.ctx, &id, caller, label, now);
        let wallet = self
            .ctx
            .store
            .create_wallet_with_lnurlp(
                &NewWallet {
                    id,
                    account_id: caller.account_id.clone(),
                    user_label: label.to_owned(),
                    node_id: self.ctx.cfg.node_id.clone(),
                    now,
                    keys: keys.iter().map(new_key).collect(),
                },
                link.as_ref(),
            )
            .await?;
        Ok(CreatedWallet { wallet, keys })
    }

    /// Imports a wallet key that already exists elsewhere (legacy `wa_…`, `wi_…`, `wr_…`).
    pub async fn import_key(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        key_text: &str,
    ) -> Result<KeyRole, ServiceError> {
        let k = ApiKeySecret::import(key_text)
            .ok_or_else(|| ServiceError::Invalid(format!("unrecognised key prefix: {key_text}")))?;
        self.ctx
            .store
            .add_key(account, Some(wallet), &new_key(&k), now_secs())
            .await?;
        Ok(k.role())
    }

    /// The wallet named in the URL, if the caller may read it.
    pub async fn get(&self, caller: &Caller, key: &str) -> Result<WalletRecord, ServiceError> {
        self.resolve(caller, key, Permission::WalletRead).await
    }

    /// Resolves a wallet key with a permission.
    pub async fn resolve(
        &self,
        caller: &Caller,
        key: &str,
        perm: Permission,
    ) -> Result<WalletRecord, ServiceError> {
        crate::auth::AuthService::new(self.ctx.clone())
            .wallet_for(caller, key, perm)
            .await
    }

    /// The account's wallets (sak only).
    pub async fn list(
        &self,
        caller: &Caller,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<WalletRecord>, u64), ServiceError> {
        Ok(self
            .ctx
            .store
            .list_wallets(&caller.account_id, offset, limit)
            .await?)
    }

    /// A wallet's transactions, newest first.
    pub async fn transactions(
        &self,
        caller: &Caller,
        key: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<WtxRecord>, u64), ServiceError> {
        let w = self.resolve(caller, key, Permission::WalletRead).await?;
        Ok(self
            .ctx
            .store
            .list_wtxs(&caller.account_id, Some(&w.id), offset, limit)
            .await?)
    }

    /// All the account's transactions, optionally of one wallet (sak only).
    pub async fn account_transactions(
        &self,
        caller: &Caller,
        wallet_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<WtxRecord>, u64), ServiceError> {
        let wallet = match wallet_id.filter(|w| !w.is_empty()) {
            Some(w) => {
                let id =
                    WalletId::parse(w).map_err(|_| ServiceError::WalletNotFound(w.to_owned()))?;
                match self.ctx.store.wallet(&id).await? {
                    Some(rec) if rec.account_id == caller.account_id => Some(rec.id),
                    _ => return Err(ServiceError::WalletNotFound(w.to_owned())),
                }
            }
            None => None,
        };
        Ok(self
            .ctx
            .store
            .list_wtxs(&caller.account_id, wallet.as_ref(), offset, limit)
            .await?)
    }

    /// A Lightning transaction of the caller's account.
    pub async fn lntx(&self, caller: &Caller, id: &str) -> Result<LnTxRecord, ServiceError> {
        let id = LnTxId::parse(id).map_err(|_| ServiceError::LnTxNotFound)?;
        match self.ctx.store.lntx(&id).await? {
            Some(l) if l.account_id == caller.account_id => Ok(l),
            _ => Err(ServiceError::LnTxNotFound),
        }
    }

    /// Generates an invoice (LNPay `POST /wallet/:key/invoice`).
    pub async fn create_invoice(
        &self,
        caller: &Caller,
        key: &str,
        req: InvoiceRequest,
    ) -> Result<LnTxRecord, ServiceError> {
        let wallet = self.resolve(caller, key, Permission::WalletDeposit).await?;
        if let Some(max) = self.ctx.cfg.max_receive
            && req.amount > max
        {
            return Err(ServiceError::Invalid(format!(
                "Receiving is limited to: {} satoshi per invoice",
                max.sats_floor()
            )));
        }
        // BOLT11 encodes amounts in pico-BTC in a u64: above this it cannot be written.
        if req.amount.as_msat() > u64::MAX / 10 {
            return Err(ServiceError::Invalid("Num Satoshis is too big.".into()));
        }
        let expiry_secs = req.expiry_secs.unwrap_or(DEFAULT_INVOICE_EXPIRY_SECS);
        if expiry_secs == 0 || expiry_secs > MAX_INVOICE_EXPIRY_SECS {
            return Err(ServiceError::Invalid(format!(
                "Expiry must be between 1 and {MAX_INVOICE_EXPIRY_SECS} seconds."
            )));
        }
        let memo = req
            .memo
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| DEFAULT_INVOICE_MEMO.to_owned());
        check_memo(&memo)?;
        let preimage = Preimage::random();
        let bolt11: Bolt11 = self
            .ctx
            .ln
            .create_invoice(NewInvoice {
                amount: (!req.amount.is_zero()).then_some(req.amount),
                memo: memo.clone(),
                description_hash: req.description_hash.as_ref().map(|d| d.0),
                expiry_secs: u32::try_from(expiry_secs).unwrap_or(u32::MAX),
                preimage,
            })
            .await
            .map_err(|e| match e {
                satchel_lightning::LnError::Rejected(m) => {
                    ServiceError::Invalid(format!("Unable to create LN Invoice: {m}"))
                }
                other => ServiceError::Internal(format!("Unable to create LN Invoice: {other}")),
            })?;
        let now = now_secs();
        let pass_thru = PassThru::server_first(
            &[("wallet_id", Value::String(wallet.id.to_string()))],
            req.pass_thru,
        );
        let rec = self
            .ctx
            .store
            .insert_invoice(&NewInvoiceRecord {
                id: LnTxId::generate(),
                account_id: caller.account_id.clone(),
                wallet_id: wallet.id.clone(),
                now,
                node_id: self.ctx.cfg.node_id.clone(),
                dest_pubkey: self.ctx.pubkey().to_hex(),
                payment_request: bolt11.as_str().to_owned(),
                payment_hash: preimage.hash(),
                preimage,
                memo,
                description_hash: req.description_hash.map(|d| d.1),
                payment_addr: Some(hex::encode(bolt11.payment_secret())),
                amount: req.amount,
                expiry_secs: i64::try_from(expiry_secs).unwrap_or(i64::MAX),
                expires_at: now.saturating_add(i64::try_from(expiry_secs).unwrap_or(i64::MAX)),
                pass_thru: pass_thru.to_json(),
            })
            .await?;
        Ok(rec)
    }

    /// Moves money to another wallet of the same account.
    pub async fn transfer(
        &self,
        caller: &Caller,
        key: &str,
        req: TransferRequest,
    ) -> Result<TransferDone, ServiceError> {
        let src = self
            .resolve(caller, key, Permission::WalletTransfer)
            .await?;
        if req.amount.is_zero() {
            return Err(ServiceError::Invalid(
                "Num Satoshis must be greater than 0.".into(),
            ));
        }
        if let Some(m) = &req.memo {
            check_memo(m)?;
        }
        let auth = crate::auth::AuthService::new(self.ctx.clone());
        let dest = auth
            .same_account_wallet(caller, req.dest.trim())
            .await?
            .ok_or_else(|| ServiceError::Transfer("Invalid dest wallet id".into()))?;
        let pass_thru = PassThru::from_user(req.pass_thru)
            .set(
                "lnPayParams",
                req.lnpay_params.map(Value::Object).unwrap_or(Value::Null),
            )
            .set("source_wallet_id", Value::String(src.id.to_string()))
            .set("dest_wallet_id", Value::String(dest.id.to_string()));
        let done = self
            .ctx
            .store
            .transfer(&TransferCmd {
                account_id: caller.account_id.clone(),
                from: src.id,
                to: dest.id,
                amount: req.amount,
                memo: req.memo.unwrap_or_default(),
                pass_thru: pass_thru.to_json(),
                wtx_in_id: WtxId::generate(),
                wtx_out_id: WtxId::generate(),
                now: now_secs(),
            })
            .await
            .map_err(|e| match e {
                TransferError::Store(s) => ServiceError::from(s),
                other => ServiceError::Transfer(other.to_string()),
            })?;
        Ok(done)
    }

    /// Decodes a BOLT11 (LNPay `decodeinvoice`).
    pub fn decode_invoice(&self, payment_request: &str) -> Result<Bolt11, ServiceError> {
        Bolt11::parse(payment_request)
            .map_err(|e| ServiceError::Invalid(format!("Unable to decode invoice: {e}")))
    }

    /// Routes to a node (LNPay `queryroutes`).
    pub async fn query_routes(
        &self,
        pub_key: &str,
        amount: Msat,
    ) -> Result<Vec<Route>, ServiceError> {
        let dest = NodePubkey::parse(pub_key.trim()).map_err(|_| {
            ServiceError::Invalid("pub_key must be a 66-character hex node public key.".into())
        })?;
        let routes = self
            .ctx
            .ln
            .query_routes(dest, amount)
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        if routes.is_empty() {
            return Err(ServiceError::Invalid(
                "unable to find a path to destination".into(),
            ));
        }
        Ok(routes)
    }

    /// The payment service (for handlers that need both).
    pub fn payments(&self) -> &PaymentService {
        &self.payments
    }
}
