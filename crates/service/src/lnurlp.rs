//! LNURL-pay receiving (LUD-06), Lightning Addresses (LUD-16), payer comments (LUD-12), LUD-21
//! `verify` URLs, and keysend addresses for podcasting, as LNPay offered them (spec §4.6, §6.4)
//! and past it where LNPay fell short.
//!
//! **Which key is in the URL.** LNPay's payRequest URL was `/v1/wallet/<waklp_key>/lnurlp/<id>`.
//! Satchel stores keys only as hashes (it could not put one in a URL if it wanted to), and a
//! link should grant nothing but paying it, so both segments are the link's own id
//! (`/v1/wallet/lnurlp_…/lnurlp/lnurlp_…`) and must match; no wallet identifier is published.
//!
//! **Metadata.** Computed by [`satchel_domain::pay_metadata`] when a link is made or changed
//! (with `text/identifier` when it has a username, which LNPay's lacked), stored, and served
//! verbatim; every invoice's description hash is SHA-256 of that text.
//!
//! **Keysend addresses.** `/.well-known/keysend/<username>` answers the node's pubkey and, as
//! the TLV 696969 value, the link's id. An incoming keysend carrying it is credited to that
//! link's wallet (see [`crate::incoming`]), so each address routes to its own wallet; a known
//! peer answered the same value for every address, landing sub-wallets' boosts in the main
//! wallet. The value is per address and revocable (a deactivated link routes nothing).

use std::sync::Arc;

use satchel_domain::{
    KeyRole, LnTxId, Msat, Permission, Preimage, Username, UsernameError, WalletId, encode_lnurl,
    ids::random_alnum, metadata_hash, now_secs, pay_metadata,
};
use satchel_lightning::NewInvoice;
use satchel_store::{LnurlpLink, LnurlpWriteError, NewInvoiceRecord, WalletRecord};
use serde_json::Value;

use crate::auth::{AuthService, Caller};
use crate::lnurlw::PublicUrl;
use crate::passthru::PassThru;
use crate::wallets::DEFAULT_INVOICE_EXPIRY_SECS;
use crate::{Ctx, ServiceError};

/// Names an operator would not want a customer to hold (they look official or collect mail
/// meant for the operator). Replaced as a whole by the `reserved_usernames` setting.
pub const DEFAULT_RESERVED_USERNAMES: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "postmaster",
    "hostmaster",
    "webmaster",
    "abuse",
    "security",
    "support",
    "help",
    "info",
    "noreply",
    "no-reply",
    "satchel",
    "lnpay",
    "system",
    "operator",
];

/// The smallest `minSendable` LNPay accepted (1 sat), in msat.
pub const MIN_SENDABLE_FLOOR_MSAT: u64 = 1000;
/// `maxSendable` of a link made without one when no `max_receive` is configured (LNPay's
/// default for a new account: 100,000 sats), in msat.
pub const DEFAULT_MAX_SENDABLE_MSAT: u64 = 100_000_000;
/// Default `text/plain` metadata of a link made through the API.
pub const DEFAULT_SHORT_DESC: &str = "LNURL PAY (via Satchel)";
/// Longest `lnurlp_short_desc` and `user_label`, in characters (LNPay's columns).
pub const MAX_TEXT_CHARS: usize = 255;
/// Largest `commentAllowed`: the comment becomes the lnTx memo, bounded like every memo.
pub const MAX_COMMENT_ALLOWED: u32 = 639;
/// Memo of an lnTx paid without a comment (LNPay's).
pub const DEFAULT_PAY_MEMO: &str = "LNURL PAY";
/// LNPay's answer for an unknown, inactive or mismatched link.
const NOT_ACTIVE: &str = "Wallet or lnurlpay link is not valid or active";

/// Fields of a create or update; `None`: unchanged (update) or the default (create).
#[derive(Debug, Clone, Default)]
pub struct LinkFields {
    /// `lnurlp_minSendable_msat`.
    pub min_sendable: Option<Msat>,
    /// `lnurlp_maxSendable_msat`.
    pub max_sendable: Option<Msat>,
    /// `lnurlp_short_desc`.
    pub short_desc: Option<String>,
    /// `user_label`.
    pub user_label: Option<String>,
    /// `lnurlp_commentAllowed`.
    pub comment_allowed: Option<u64>,
    /// `lnurlp_identifier` (`Some("")` removes the username on update).
    pub identifier: Option<String>,
    /// `status`: `lnurl_active` → true, `lnurl_inactive` → false.
    pub active: Option<bool>,
    /// `custy_domain_id`: LNPay's custom domains, not offered (any value is refused).
    pub custy_domain_id: Option<String>,
}

/// A link with its URLs, as the API shows it.
#[derive(Debug, Clone)]
pub struct LinkView {
    /// The stored link.
    pub link: LnurlpLink,
    /// `LNURL1…`.
    pub lnurl_encoded: String,
    /// The payRequest URL.
    pub lnurl_decoded: String,
    /// `username@domain`, when the link has a username.
    pub lightning_address: Option<String>,
}

/// LUD-06 `payRequest`.
#[derive(Debug, Clone)]
pub struct PayOffer {
    /// Where the wallet asks for an invoice.
    pub callback: String,
    /// msat.
    pub min_sendable: Msat,
    /// msat.
    pub max_sendable: Msat,
    /// The metadata text (its SHA-256 is the invoices' description hash).
    pub metadata: String,
    /// LUD-12.
    pub comment_allowed: u32,
}

/// The callback's invoice.
#[derive(Debug, Clone)]
pub struct PayInvoice {
    /// BOLT11.
    pub pr: String,
    /// LUD-21 verify URL.
    pub verify: String,
}

/// What the public LNURL-pay endpoints answer: LUD JSON, never the LNPay envelope.
#[derive(Debug, Clone)]
pub enum PayAnswer {
    /// First call.
    Offer(PayOffer),
    /// Callback with `amount`.
    Invoice(PayInvoice),
    /// `{"status":"ERROR","reason":…}` with 200 (as LNPay answered).
    Error(String),
    /// `{"status":"ERROR","reason":…}` with 404: no such link, address or invoice.
    NotFound(String),
}

/// The callback's query, as given.
#[derive(Debug, Clone, Default)]
pub struct PayQuery {
    /// `amount` (msat).
    pub amount: Option<String>,
    /// `comment` (LUD-12).
    pub comment: Option<String>,
}

/// LUD-21 answer.
#[derive(Debug, Clone)]
pub struct VerifyAnswer {
    /// Whether the invoice was paid.
    pub settled: bool,
    /// The preimage, once paid.
    pub preimage: Option<Preimage>,
    /// The invoice.
    pub pr: String,
}

/// A keysend address (`/.well-known/keysend/<username>`).
#[derive(Debug, Clone)]
pub struct KeysendAddress {
    /// Our node's pubkey (hex).
    pub pubkey: String,
    /// TLV 696969 value routing a keysend to the address's wallet.
    pub custom_value: String,
}

/// The TLV type whose value, when it is a link id, routes a keysend to that link's wallet.
pub const KEYSEND_ADDRESS_TLV: u64 = 696_969;

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(msg.into())
}

/// The payRequest URL of a link.
fn link_url(base: &PublicUrl, id: &str) -> String {
    base.join(&format!("/v1/wallet/{id}/lnurlp/{id}"))
}

/// The stored default link of a new wallet (LNPay: every wallet gets one; label
/// "LNURL-pay <wallet label>", description = the wallet label), or `None` without
/// `public_url` (LNURL is off; a later link becomes the default).
pub(crate) fn default_link(
    ctx: &Ctx,
    wallet: &WalletId,
    caller: &Caller,
    wallet_label: &str,
    now: i64,
) -> Option<LnurlpLink> {
    ctx.cfg.public_url.as_ref()?;
    let short_desc: String = wallet_label.chars().take(MAX_TEXT_CHARS).collect();
    let label: String = format!("LNURL-pay {wallet_label}")
        .chars()
        .take(MAX_TEXT_CHARS)
        .collect();
    Some(LnurlpLink {
        id: format!("lnurlp_{}", random_alnum(18)),
        account_id: caller.account_id.clone(),
        wallet_id: wallet.clone(),
        created_at: now,
        updated_at: now,
        user_label: Some(label),
        min_sendable: min_floor(),
        max_sendable: default_max(ctx),
        metadata: pay_metadata(&short_desc, None),
        short_desc,
        comment_allowed: 0,
        username: None,
        active: true,
    })
}

fn default_max(ctx: &Ctx) -> Msat {
    ctx.cfg
        .max_receive
        .unwrap_or_else(|| Msat::from_msat(DEFAULT_MAX_SENDABLE_MSAT).unwrap_or(Msat::ZERO))
}

fn min_floor() -> Msat {
    Msat::from_msat(MIN_SENDABLE_FLOOR_MSAT).unwrap_or(Msat::ZERO)
}

/// LNURL-pay use cases.
#[derive(Clone)]
pub struct LnurlpService {
    ctx: Arc<Ctx>,
}

impl LnurlpService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> LnurlpService {
        LnurlpService { ctx }
    }

    fn public_url(&self) -> Result<&PublicUrl, ServiceError> {
        self.ctx
            .cfg
            .public_url
            .as_ref()
            .ok_or(ServiceError::LnurlDisabled)
    }

    /// `username@domain` of this server.
    fn address(&self, base: &PublicUrl, u: &Username) -> String {
        format!("{u}@{}", base.authority())
    }

    fn view(&self, link: LnurlpLink) -> Result<LinkView, ServiceError> {
        let base = self.public_url()?;
        let url = link_url(base, &link.id);
        let lnurl = encode_lnurl(&url).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(LinkView {
            lightning_address: link.username.as_ref().map(|u| self.address(base, u)),
            lnurl_encoded: lnurl,
            lnurl_decoded: url,
            link,
        })
    }

    /// Parses and checks a username: LUD-16 characters, not reserved.
    fn username(&self, text: &str) -> Result<Username, ServiceError> {
        let u = Username::parse(text).map_err(|e| match e {
            UsernameError::Empty => invalid("Lnurlp Identifier cannot be blank."),
            UsernameError::TooLong => invalid(format!(
                "Lnurlp Identifier should contain at most {} characters.",
                satchel_domain::lnurlp::MAX_USERNAME_LEN
            )),
            UsernameError::Chars => {
                invalid("Lnurlp Identifier may contain only letters a-z, digits, '.', '-' and '_'.")
            }
        })?;
        // `lnurlp_…` names a link by id on `/.well-known/lnurlp/` (as on LNPay).
        let reserved = u.as_str().starts_with("lnurlp_")
            || self
                .ctx
                .cfg
                .reserved_usernames
                .iter()
                .any(|r| r.eq_ignore_ascii_case(u.as_str()));
        if reserved {
            return Err(invalid(format!("Lnurlp Identifier \"{u}\" is reserved.")));
        }
        Ok(u)
    }

    /// Applies `f` to `link` (fields `None` keep their value) and checks the result.
    fn apply(&self, link: &mut LnurlpLink, f: LinkFields) -> Result<(), ServiceError> {
        if f.custy_domain_id.as_deref().is_some_and(|d| !d.is_empty()) {
            // LNPay's custom domains (dashboard-made `cdom_…`) do not exist here: the one
            // domain is `public_url`'s host.
            return Err(invalid("Invalid custy_domain_id"));
        }
        if let Some(m) = f.min_sendable {
            link.min_sendable = m;
        }
        if let Some(m) = f.max_sendable {
            link.max_sendable = m;
        }
        if let Some(d) = f.short_desc {
            if d.trim().is_empty() {
                return Err(invalid("Lnurlp Short Desc cannot be blank."));
            }
            link.short_desc = d;
        }
        if let Some(l) = f.user_label {
            link.user_label = Some(l).filter(|l| !l.is_empty());
        }
        if let Some(c) = f.comment_allowed {
            link.comment_allowed = u32::try_from(c)
                .ok()
                .filter(|c| *c <= MAX_COMMENT_ALLOWED)
                .ok_or_else(|| {
                    invalid(format!(
                        "Lnurlp Comment Allowed must be no greater than {MAX_COMMENT_ALLOWED}."
                    ))
                })?;
        }
        if let Some(i) = f.identifier {
            link.username = if i.is_empty() {
                None
            } else {
                Some(self.username(&i)?)
            };
        }
        if let Some(a) = f.active {
            link.active = a;
        }
        if link.min_sendable.as_msat() < MIN_SENDABLE_FLOOR_MSAT {
            return Err(invalid(
                "Lnurlp Min Sendable Msat must be greater than or equal to \"1000\".",
            ));
        }
        if link.max_sendable < link.min_sendable {
            return Err(invalid(
                "Lnurlp Max Sendable Msat must be greater than or equal to \"Lnurlp Min Sendable Msat\".",
            ));
        }
        if let Some(max) = self.ctx.cfg.max_receive
            && link.max_sendable > max
        {
            return Err(invalid(format!(
                "Receiving is limited to: {} satoshi per invoice",
                max.sats_floor()
            )));
        }
        if link.short_desc.chars().count() > MAX_TEXT_CHARS {
            return Err(invalid(format!(
                "Lnurlp Short Desc should contain at most {MAX_TEXT_CHARS} characters."
            )));
        }
        if link
            .user_label
            .as_ref()
            .is_some_and(|l| l.chars().count() > MAX_TEXT_CHARS)
        {
            return Err(invalid(format!(
                "User Label should contain at most {MAX_TEXT_CHARS} characters."
            )));
        }
        let base = self.public_url()?;
        let identifier = link.username.as_ref().map(|u| self.address(base, u));
        link.metadata = pay_metadata(&link.short_desc, identifier.as_deref());
        Ok(())
    }

    fn taken(&self, e: LnurlpWriteError, link: &LnurlpLink) -> ServiceError {
        match (e, &link.username) {
            (LnurlpWriteError::UsernameTaken, Some(u)) => {
                invalid(format!("Lnurlp Identifier \"{u}\" has already been taken."))
            }
            (LnurlpWriteError::UsernameTaken, None) => {
                ServiceError::Internal("username conflict without a username".into())
            }
            (LnurlpWriteError::Store(e), _) => e.into(),
        }
    }

    /// `POST /v1/wallet/:key/lnurlp`: a new link on the wallet (Wallet Admin role with a pak).
    /// The wallet's first link becomes its default if it has none.
    pub async fn create(
        &self,
        caller: &Caller,
        key: &str,
        fields: LinkFields,
    ) -> Result<LinkView, ServiceError> {
        let wallet = AuthService::new(self.ctx.clone())
            .wallet_for(caller, key, Permission::WalletDeposit)
            .await?;
        if caller.role == KeyRole::Public && KeyRole::from_key(key) != Some(KeyRole::WalletAdmin) {
            return Err(ServiceError::PermissionDenied {
                prefix: key.split('_').next().unwrap_or_default().to_owned(),
                permission: "Wallet Admin",
            });
        }
        self.public_url()?;
        let now = now_secs();
        let mut link = LnurlpLink {
            id: format!("lnurlp_{}", random_alnum(18)),
            account_id: wallet.account_id.clone(),
            wallet_id: wallet.id.clone(),
            created_at: now,
            updated_at: now,
            user_label: None,
            min_sendable: min_floor(),
            max_sendable: default_max(&self.ctx),
            short_desc: DEFAULT_SHORT_DESC.to_owned(),
            comment_allowed: 0,
            username: None,
            metadata: String::new(),
            active: true,
        };
        self.apply(&mut link, fields)?;
        self.ctx
            .store
            .insert_lnurlp_link(&link)
            .await
            .map_err(|e| self.taken(e, &link))?;
        self.view(link)
    }

    async fn own_link(&self, caller: &Caller, id: &str) -> Result<LnurlpLink, ServiceError> {
        let unknown = || ServiceError::NotFound("Unknown lnurlpay id".into());
        if id.len() > 64 {
            return Err(unknown());
        }
        match self.ctx.store.lnurlp_link(id).await? {
            Some(l) if l.account_id == caller.account_id => Ok(l),
            _ => Err(unknown()),
        }
    }

    /// `GET /v1/lnurlp/:id` (sak or pak, own account).
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<LinkView, ServiceError> {
        AuthService::new(self.ctx.clone()).require_account_key(caller)?;
        let link = self.own_link(caller, id).await?;
        self.view(link)
    }

    /// `POST|PUT|PATCH /v1/lnurlp/:id` (sak only). Fields not given keep their value; the
    /// metadata is recomputed (LNPay kept the metadata of creation, so a changed description
    /// never reached wallets).
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        fields: LinkFields,
    ) -> Result<LinkView, ServiceError> {
        AuthService::new(self.ctx.clone()).require_secret(caller)?;
        let mut link = self.own_link(caller, id).await?;
        self.apply(&mut link, fields)?;
        link.updated_at = now_secs().max(link.updated_at);
        self.ctx
            .store
            .update_lnurlp_link(&link)
            .await
            .map_err(|e| self.taken(e, &link))?;
        self.view(link)
    }

    /// An active link and its active wallet.
    async fn live(
        &self,
        link: Option<LnurlpLink>,
    ) -> Result<Option<(LnurlpLink, WalletRecord)>, ServiceError> {
        let Some(link) = link.filter(|l| l.active) else {
            return Ok(None);
        };
        match self.ctx.store.wallet(&link.wallet_id).await? {
            Some(w) if w.active => Ok(Some((link, w))),
            _ => Ok(None),
        }
    }

    /// The link and wallet behind a Lightning Address of this server, if it is active:
    /// `username` is the local part (any case), or a link id (`lnurlp_…`, as on LNPay). For
    /// paying our own addresses without HTTP.
    pub async fn resolve_local_address(
        &self,
        username: &str,
    ) -> Result<Option<(LnurlpLink, WalletRecord)>, ServiceError> {
        if username.len() > 64 {
            return Ok(None);
        }
        let link = if username.starts_with("lnurlp_") {
            self.ctx.store.lnurlp_link(username).await?
        } else {
            match Username::parse(username) {
                Ok(u) => self.ctx.store.lnurlp_link_by_username(&u).await?,
                Err(_) => None,
            }
        };
        self.live(link).await
    }

    fn offer(&self, base: &PublicUrl, link: &LnurlpLink) -> PayOffer {
        PayOffer {
            callback: link_url(base, &link.id),
            min_sendable: link.min_sendable,
            max_sendable: self.max_now(link),
            metadata: link.metadata.clone(),
            comment_allowed: link.comment_allowed,
        }
    }

    /// The link's maximum under today's `max_receive` (which may have been lowered since).
    fn max_now(&self, link: &LnurlpLink) -> Msat {
        match self.ctx.cfg.max_receive {
            Some(m) => link.max_sendable.min(m).max(link.min_sendable),
            None => link.max_sendable,
        }
    }

    /// `GET /v1/wallet/:link/lnurlp/:link`: the payRequest (no `amount`) or the callback.
    pub async fn pay_request(
        &self,
        path_key: &str,
        link_id: &str,
        q: PayQuery,
    ) -> Result<PayAnswer, ServiceError> {
        let Ok(base) = self.public_url() else {
            return Ok(PayAnswer::Error(ServiceError::LnurlDisabled.to_string()));
        };
        if path_key != link_id || link_id.len() > 64 {
            return Ok(PayAnswer::Error(NOT_ACTIVE.into()));
        }
        let link = self.ctx.store.lnurlp_link(link_id).await?;
        let Some((link, _)) = self.live(link).await? else {
            return Ok(PayAnswer::Error(NOT_ACTIVE.into()));
        };
        match q.amount.filter(|a| !a.is_empty()) {
            None => Ok(PayAnswer::Offer(self.offer(base, &link))),
            Some(a) => self.invoice(base, &link, &a, q.comment).await,
        }
    }

    /// `GET /.well-known/lnurlp/:username`: the payRequest of the address.
    pub async fn well_known(&self, username: &str) -> Result<PayAnswer, ServiceError> {
        let Ok(base) = self.public_url() else {
            return Ok(PayAnswer::Error(ServiceError::LnurlDisabled.to_string()));
        };
        match self.resolve_local_address(username).await? {
            Some((link, _)) => Ok(PayAnswer::Offer(self.offer(base, &link))),
            None => Ok(PayAnswer::NotFound(format!(
                "Invalid username ({}) for domain:{}",
                username.chars().take(64).collect::<String>(),
                base.authority()
            ))),
        }
    }

    async fn invoice(
        &self,
        base: &PublicUrl,
        link: &LnurlpLink,
        amount_text: &str,
        comment: Option<String>,
    ) -> Result<PayAnswer, ServiceError> {
        let Some(amount) = amount_text
            .parse::<u64>()
            .ok()
            .and_then(|a| Msat::from_msat(a).ok())
        else {
            return Ok(PayAnswer::Error(
                "Amount must be a whole number of millisatoshis".into(),
            ));
        };
        let max = self.max_now(link);
        if amount < link.min_sendable || amount > max {
            return Ok(PayAnswer::Error(format!(
                "Amount {} msat is not within {} - {} msat",
                amount.as_msat(),
                link.min_sendable.as_msat(),
                max.as_msat()
            )));
        }
        let comment = comment.filter(|c| !c.is_empty());
        if let Some(c) = &comment {
            let n = c.chars().count();
            if n > link.comment_allowed as usize {
                return Ok(PayAnswer::Error(format!(
                    "Comment is too long ({n} characters); this link accepts at most {}",
                    link.comment_allowed
                )));
            }
        }
        let preimage = Preimage::random();
        let dh = metadata_hash(&link.metadata);
        let expiry_secs = DEFAULT_INVOICE_EXPIRY_SECS;
        // The node gets the metadata as the description and its hash: the invoice carries only
        // the hash (Core Lightning computes it from the description itself, `deschashonly`).
        let bolt11 = match self
            .ctx
            .ln
            .create_invoice(NewInvoice {
                amount: Some(amount),
                memo: link.metadata.clone(),
                description_hash: Some(dh),
                expiry_secs: u32::try_from(expiry_secs).unwrap_or(u32::MAX),
                preimage,
            })
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(link = %link.id, error = %e, "LNURL-pay: the node made no invoice");
                return Ok(PayAnswer::Error(
                    "Unable to create an invoice; please try again later".into(),
                ));
            }
        };
        let now = now_secs();
        let mut server = vec![
            ("wallet_id", Value::String(link.wallet_id.to_string())),
            ("wallet_lnurlpay_id", Value::String(link.id.clone())),
            ("amount", Value::String(amount.as_msat().to_string())),
            ("method", Value::String("lnurlpay".into())),
        ];
        if let Some(c) = &comment {
            server.push(("comment", Value::String(c.clone())));
        }
        let pass_thru = PassThru::server_first(&server, None);
        let verify_id = random_alnum(32);
        self.ctx
            .store
            .insert_lnurlp_invoice(
                &NewInvoiceRecord {
                    id: LnTxId::generate(),
                    account_id: link.account_id.clone(),
                    wallet_id: link.wallet_id.clone(),
                    now,
                    node_id: self.ctx.cfg.node_id.clone(),
                    dest_pubkey: self.ctx.pubkey().to_hex(),
                    payment_request: bolt11.as_str().to_owned(),
                    payment_hash: preimage.hash(),
                    preimage,
                    memo: comment.unwrap_or_else(|| DEFAULT_PAY_MEMO.to_owned()),
                    description_hash: Some(hex::encode(dh)),
                    payment_addr: Some(hex::encode(bolt11.payment_secret())),
                    amount,
                    expiry_secs: i64::try_from(expiry_secs).unwrap_or(i64::MAX),
                    expires_at: now.saturating_add(i64::try_from(expiry_secs).unwrap_or(0)),
                    pass_thru: pass_thru.to_json(),
                },
                &link.id,
                &verify_id,
            )
            .await?;
        Ok(PayAnswer::Invoice(PayInvoice {
            pr: bolt11.as_str().to_owned(),
            verify: base.join(&format!("/v1/lnurlp/verify/{verify_id}")),
        }))
    }

    /// `GET /v1/lnurlp/verify/:id` (LUD-21; public): whether the invoice was paid.
    pub async fn verify(&self, verify_id: &str) -> Result<Option<VerifyAnswer>, ServiceError> {
        if verify_id.is_empty() || verify_id.len() > 64 {
            return Ok(None);
        }
        Ok(self
            .ctx
            .store
            .lnurlp_invoice(verify_id)
            .await?
            .map(|i| VerifyAnswer {
                settled: i.lntx.settled,
                preimage: i.lntx.preimage.filter(|_| i.lntx.settled),
                pr: i.lntx.payment_request,
            }))
    }

    /// `GET /.well-known/keysend/:username`: our pubkey and the TLV 696969 value routing a
    /// keysend to the address's wallet (the link id).
    pub async fn keysend_address(
        &self,
        username: &str,
    ) -> Result<Result<KeysendAddress, String>, ServiceError> {
        let base = self.public_url()?;
        match self.resolve_local_address(username).await? {
            Some((link, _)) => Ok(Ok(KeysendAddress {
                pubkey: self.ctx.pubkey().to_hex(),
                custom_value: link.id,
            })),
            None => Ok(Err(format!(
                "Invalid username ({}) for domain:{}",
                username.chars().take(64).collect::<String>(),
                base.authority()
            ))),
        }
    }
}

/// The wallet a keysend address value (a link id in TLV 696969) routes to: the link's, if the
/// link is active.
pub(crate) async fn keysend_address_wallet(
    store: &satchel_store::Store,
    records: &satchel_domain::CustomRecords,
) -> Result<Option<WalletId>, satchel_store::StoreError> {
    let Some(v) = records
        .0
        .get(&KEYSEND_ADDRESS_TLV)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| v.starts_with("lnurlp_") && v.len() <= 64)
    else {
        return Ok(None);
    };
    Ok(store
        .lnurlp_link(v)
        .await?
        .filter(|l| l.active)
        .map(|l| l.wallet_id))
}
