//! LNURL-withdraw (LUD-03) as LNPay offered it (spec §6.1–6.3): one-time links
//! (`GET /lnurl/withdraw`), static links (`GET /lnurl/withdraw-static`) and the public service
//! endpoint wallets call (`GET /wallet/:key/lnurl-process`).
//!
//! **Which key is in the URL.** LNPay put the wallet's `waklw_` key in every LNURL. That key
//! can withdraw the whole balance (with the account's public `pak_`, and on `lnurl-process`
//! with no `ott` at all: `wallet_public_withdraw`), so anybody who saw a one-time QR code could
//! drain the wallet. Satchel stores keys only as hashes and would not put one in a URL anyway:
//! the path segment is the link's own id (`lnurlw_…`) and the secret is the link's `ott`
//! (stored as its SHA-256). A link grants exactly what it says and nothing else. The path and
//! parameter names are LNPay's, and LNPay clients only ever see the opaque `LNURL1…`.
//!
//! URLs are built only from the configured [`PublicUrl`], never from a request's `Host`.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use satchel_domain::{
    Bolt11, KeyRole, Msat, PaymentHash, PaymentStatus, Permission, encode_lnurl, fee_limit_default,
    ids::random_alnum, now_secs,
};
use satchel_outbound::Target;
use satchel_store::{LinkClaim, LnurlwKind, LnurlwLink};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{AuthService, Caller};
use crate::passthru::PassThru;
use crate::payments::{PaymentResult, PaymentService};
use crate::{Ctx, ErrorClass, ServiceError};

/// Longest accepted `public_url` (the LNURL must stay within bech32's 1023 characters).
const MAX_PUBLIC_URL_LEN: usize = 256;
/// Default lifetime of a one-time link.
pub const DEFAULT_LINK_EXPIRY: Duration = Duration::from_secs(86_400);
/// LNPay's `defaultDescription` when no memo was given.
const DEFAULT_DESCRIPTION: &str = "LNPAY Wallet Withdraw";
/// Longest memo (as for invoices).
const MAX_MEMO_BYTES: usize = 639;

/// The server's public base URL, from which every LNURL and callback is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// Normalized, without a trailing `/`.
    base: String,
}

impl PublicUrl {
    /// Parses `public_url`: an absolute http(s) URL without credentials, query or fragment;
    /// `https` unless the host is loopback (a wallet on the Internet must not be sent to a
    /// cleartext callback that pays out money). A path is kept as a prefix.
    pub fn parse(text: &str) -> Result<PublicUrl, String> {
        if text.len() > MAX_PUBLIC_URL_LEN {
            return Err(format!("is longer than {MAX_PUBLIC_URL_LEN} characters"));
        }
        let t = Target::parse(text.trim()).map_err(|e| e.to_string())?;
        let url = t.url();
        if url.query().is_some() || text.contains('#') {
            return Err("must not have a query or a fragment".into());
        }
        let loopback =
            t.literal_ip().is_some_and(|ip| ip.is_loopback()) || t.host_str() == "localhost";
        if url.scheme() != "https" && !loopback {
            return Err("must use https (http is accepted only for a loopback host)".into());
        }
        Ok(PublicUrl {
            base: t.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// The base, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    pub(crate) fn join(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// Host (and port, when not the scheme's default) of the base: the domain of this server's
    /// Lightning Addresses (`user@authority`).
    pub fn authority(&self) -> String {
        match Target::parse(&self.base) {
            Ok(t) => match t.url().port() {
                Some(p) => format!("{}:{p}", t.host_str()),
                None => t.host_str().to_owned(),
            },
            Err(_) => String::new(),
        }
    }
}

/// `GET /lnurl/withdraw(-static)` parameters, parsed.
#[derive(Debug, Clone, Default)]
pub struct NewLinkRequest {
    /// `num_satoshis`: the exact amount; `None` (or 0): the spendable balance at scan time.
    pub amount: Option<Msat>,
    /// `memo` → `defaultDescription`.
    pub memo: Option<String>,
    /// `passThru` (already base64-decoded JSON object).
    pub pass_thru: Option<Map<String, Value>>,
}

/// A new link.
#[derive(Debug, Clone)]
pub struct CreatedLink {
    /// `LNURL1…`.
    pub lnurl: String,
    /// The link's secret (one-time links show it as LNPay did).
    pub ott: String,
    /// The decoded URL.
    pub url: String,
}

/// LUD-03's first answer.
#[derive(Debug, Clone)]
pub struct WithdrawOffer {
    /// Where the wallet sends `k1` and `pr`.
    pub callback: String,
    /// The link's `k1`.
    pub k1: String,
    /// Upper bound (msat).
    pub max_withdrawable: Msat,
    /// Lower bound (msat).
    pub min_withdrawable: Msat,
    /// Memo or LNPay's default.
    pub default_description: String,
}

/// What `lnurl-process` answers: LUD-03 JSON, never the LNPay error envelope.
#[derive(Debug, Clone)]
pub enum ProcessAnswer {
    /// The `withdrawRequest` (first call).
    Offer(WithdrawOffer),
    /// The callback was accepted: paid, or reserved and being paid (LUD-03 lets the service
    /// pay asynchronously after answering OK).
    Ok,
    /// `{"status":"ERROR","reason":…}`.
    Error(String),
}

/// `lnurl-process` query.
#[derive(Debug, Clone, Default)]
pub struct ProcessQuery {
    /// Link secret.
    pub ott: Option<String>,
    /// LUD-03 k1 (callback).
    pub k1: Option<String>,
    /// LUD-03 invoice (callback).
    pub pr: Option<String>,
}

fn hash_ott(ott: &str) -> String {
    hex::encode(Sha256::digest(ott.as_bytes()))
}

/// The largest whole-sat amount `a` with `a + default fee limit(a) <= balance`: what a link
/// without an amount can pay from `balance` (the fee limit is reserved with the payment).
pub fn spendable(balance: Msat) -> Msat {
    let b = balance.as_msat() / 1000;
    let fits = |s: u64| {
        Msat::from_sats(s).is_ok_and(|a| {
            a.checked_add(fee_limit_default(a))
                .is_ok_and(|t| t <= balance)
        })
    };
    let mut s = b.saturating_mul(20) / 21;
    while s > 0 && !fits(s) {
        s -= 1;
    }
    while s < b && fits(s + 1) {
        s += 1;
    }
    Msat::from_sats(s).unwrap_or(Msat::ZERO)
}

/// LNURL-withdraw use cases.
#[derive(Clone)]
pub struct LnurlwService {
    ctx: Arc<Ctx>,
    payments: PaymentService,
}

impl LnurlwService {
    pub(crate) fn new(ctx: Arc<Ctx>, payments: PaymentService) -> LnurlwService {
        LnurlwService { ctx, payments }
    }

    fn public_url(&self) -> Result<&PublicUrl, ServiceError> {
        self.ctx
            .cfg
            .public_url
            .as_ref()
            .ok_or(ServiceError::LnurlDisabled)
    }

    /// Creates a link on the wallet `key` names. One-time links need `wallet_withdraw`
    /// (waka, waklw, wakewa with a pak); static links the Wallet Admin role (LNPay §3.5).
    pub async fn create(
        &self,
        caller: &Caller,
        key: &str,
        kind: LnurlwKind,
        req: NewLinkRequest,
    ) -> Result<CreatedLink, ServiceError> {
        let auth = AuthService::new(self.ctx.clone());
        let wallet = auth
            .wallet_for(caller, key, Permission::WalletWithdraw)
            .await?;
        if kind == LnurlwKind::Static
            && caller.role == KeyRole::Public
            && KeyRole::from_key(key) != Some(KeyRole::WalletAdmin)
        {
            return Err(ServiceError::PermissionDenied {
                prefix: key.split('_').next().unwrap_or_default().to_owned(),
                permission: "Wallet Admin",
            });
        }
        let base = self.public_url()?;
        let amount = req.amount.filter(|a| !a.is_zero());
        if let (Some(a), Some(max)) = (amount, self.ctx.cfg.max_send)
            && a > max
        {
            return Err(ServiceError::Invalid(format!(
                "Sends are limited to: {} satoshi per request",
                max.sats_floor()
            )));
        }
        let memo = req.memo.filter(|m| !m.is_empty());
        if memo.as_ref().is_some_and(|m| m.len() > MAX_MEMO_BYTES) {
            return Err(ServiceError::Invalid(format!(
                "Memo should contain at most {MAX_MEMO_BYTES} characters."
            )));
        }
        let id = format!("lnurlw_{}", random_alnum(20));
        let ott = random_alnum(24);
        let mut k1 = [0u8; 32];
        rand::rng().fill_bytes(&mut k1);
        let now = now_secs();
        let expiry = i64::try_from(self.ctx.cfg.lnurlw_expiry.as_secs()).unwrap_or(i64::MAX);
        let link = LnurlwLink {
            id: id.clone(),
            account_id: wallet.account_id.clone(),
            wallet_id: wallet.id.clone(),
            kind,
            ott_hash: hash_ott(&ott),
            k1: hex::encode(k1),
            amount,
            memo,
            pass_thru: Value::Object(req.pass_thru.unwrap_or_default()).to_string(),
            created_at: now,
            expires_at: match kind {
                LnurlwKind::Once => Some(now.saturating_add(expiry)),
                LnurlwKind::Static => None,
            },
            used_hash: None,
            used_at: None,
        };
        let url = base.join(&format!(
            "/v1/wallet/{id}/lnurl-process?tag=withdraw&ott={ott}"
        ));
        let lnurl = encode_lnurl(&url).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.ctx.store.insert_lnurlw_link(&link).await?;
        Ok(CreatedLink { lnurl, ott, url })
    }

    /// The link `path_key` + `ott` name, if it may still be used now.
    async fn usable_link(
        &self,
        path_key: &str,
        ott: Option<&str>,
        now: i64,
    ) -> Result<Result<LnurlwLink, String>, ServiceError> {
        let invalid = || Ok(Err("LNURL is no longer valid".to_owned()));
        let Some(ott) = ott.filter(|o| !o.is_empty() && o.len() <= 64) else {
            return invalid();
        };
        let Some(link) = self.ctx.store.lnurlw_link_by_ott(&hash_ott(ott)).await? else {
            return invalid();
        };
        if link.id != path_key {
            return invalid();
        }
        if link.expires_at.is_some_and(|e| now >= e) {
            return Ok(Err("LNURL has expired".into()));
        }
        Ok(Ok(link))
    }

    /// For a one-time link: `Ok(None)` if unused, `Ok(Some(h))` if its last claim's payment
    /// (hash `h`) definitely failed (it may be claimed again), `Err` if it is spent.
    async fn previous_claim(
        &self,
        link: &LnurlwLink,
    ) -> Result<Result<Option<PaymentHash>, String>, ServiceError> {
        let Some(h) = link.used_hash else {
            return Ok(Ok(None));
        };
        let failed = matches!(
            self.ctx.store.latest_outgoing(&h).await?,
            Some(l) if l.status == Some(PaymentStatus::Failed)
        );
        Ok(if failed {
            Ok(Some(h))
        } else {
            Err("LNURL has already been used".into())
        })
    }

    /// `GET /v1/wallet/:key/lnurl-process`: the LUD-03 first call (no `pr`) or callback.
    pub async fn process(
        &self,
        path_key: &str,
        q: ProcessQuery,
    ) -> Result<ProcessAnswer, ServiceError> {
        let Ok(base) = self.public_url() else {
            return Ok(ProcessAnswer::Error(
                ServiceError::LnurlDisabled.to_string(),
            ));
        };
        let now = now_secs();
        let link = match self.usable_link(path_key, q.ott.as_deref(), now).await? {
            Ok(l) => l,
            Err(reason) => return Ok(ProcessAnswer::Error(reason)),
        };
        let reopen = match link.kind {
            LnurlwKind::Once => match self.previous_claim(&link).await? {
                Ok(r) => r,
                // A wallet retrying the callback of the payment that spent the link is told
                // OK again (LUD-03 callbacks may be retried); anything else is refused.
                Err(reason) => {
                    if let Some(pr) = q.pr.as_deref()
                        && Bolt11::parse(pr).is_ok_and(|b| Some(b.payment_hash()) == link.used_hash)
                        && self.k1_matches(&link, q.k1.as_deref())
                    {
                        return Ok(ProcessAnswer::Ok);
                    }
                    return Ok(ProcessAnswer::Error(reason));
                }
            },
            LnurlwKind::Static => None,
        };
        let Some(pr) = q.pr else {
            return self.offer(base, &link, q.ott.unwrap_or_default()).await;
        };
        if !self.k1_matches(&link, q.k1.as_deref()) {
            return Ok(ProcessAnswer::Error("Invalid k1".into()));
        }
        self.pay(&link, q.ott.unwrap_or_default(), &pr, reopen, now)
            .await
    }

    fn k1_matches(&self, link: &LnurlwLink, k1: Option<&str>) -> bool {
        k1.is_some_and(|k| bool::from(k.as_bytes().ct_eq(link.k1.as_bytes())))
    }

    async fn offer(
        &self,
        base: &PublicUrl,
        link: &LnurlwLink,
        ott: String,
    ) -> Result<ProcessAnswer, ServiceError> {
        let wallet = self
            .ctx
            .store
            .wallet(&link.wallet_id)
            .await?
            .ok_or_else(|| ServiceError::Internal(format!("link {} lost its wallet", link.id)))?;
        let mut can = spendable(wallet.balance);
        if let Some(max) = self.ctx.cfg.max_send {
            can = can.min(max);
        }
        let amount = match link.amount {
            Some(a) if a > can => {
                return Ok(ProcessAnswer::Error(
                    "Wallet balance is too low for this withdrawal".into(),
                ));
            }
            Some(a) => a,
            None if can.is_zero() => {
                return Ok(ProcessAnswer::Error(
                    "Wallet balance is too low for this withdrawal".into(),
                ));
            }
            None => can,
        };
        Ok(ProcessAnswer::Offer(WithdrawOffer {
            callback: base.join(&format!("/v1/wallet/{}/lnurl-process?ott={ott}", link.id)),
            k1: link.k1.clone(),
            max_withdrawable: amount,
            // LNPay answered min == max (its "temp fix" of 2023-09); kept, see `pay` for what a
            // callback may ask.
            min_withdrawable: amount,
            default_description: link
                .memo
                .clone()
                .unwrap_or_else(|| DEFAULT_DESCRIPTION.to_owned()),
        }))
    }

    async fn pay(
        &self,
        link: &LnurlwLink,
        ott: String,
        pr: &str,
        reopen: Option<PaymentHash>,
        now: i64,
    ) -> Result<ProcessAnswer, ServiceError> {
        let invoice = match Bolt11::parse(pr) {
            Ok(b) => b,
            Err(e) => return Ok(ProcessAnswer::Error(e.to_string())),
        };
        // Amountless invoices are refused: LUD-03 has the wallet pick the amount and put it in
        // the invoice, which the service checks against the bounds it announced; an invoice
        // without one leaves the amount to us, and `/withdraw` refuses them as LNPay did.
        let amount = match invoice.check_payable(self.ctx.network(), now) {
            Ok(a) => a,
            Err(e) => return Ok(ProcessAnswer::Error(e.to_string())),
        };
        // A fixed link pays exactly its amount: less would spend the one-time link for part of
        // it. A whole-balance link pays anything the wallet can cover (the reserve judges).
        if let Some(fixed) = link.amount
            && amount != fixed
        {
            return Ok(ProcessAnswer::Error(format!(
                "Invoice amount {} msat is not the {} msat this LNURL withdraws",
                amount.as_msat(),
                fixed.as_msat()
            )));
        }
        let user: Option<Map<String, Value>> = serde_json::from_str(&link.pass_thru).ok();
        let mut pt = PassThru::from_user(user)
            .set("method", Value::String("lnurl".into()))
            .set("k1", Value::String(link.k1.clone()))
            .set("lnurlw_id", Value::String(link.id.clone()));
        // LNPay put the ott in the payout's passThru, so a client can match the payout to the
        // link it made. Only for one-time links: a static link's ott is a lasting secret that
        // wallet readers must not see.
        if link.kind == LnurlwKind::Once {
            pt = pt.set("ott", Value::String(ott));
        }
        let claim = (link.kind == LnurlwKind::Once).then(|| LinkClaim {
            link_id: link.id.clone(),
            hash: invoice.payment_hash(),
            now,
            reopen,
        });
        let caller = Caller {
            account_id: link.account_id.clone(),
            role: KeyRole::Secret,
        };
        let paid = self
            .payments
            .pay_bolt11(
                &caller,
                &link.id,
                &link.wallet_id,
                invoice.as_str().to_owned(),
                None,
                pt.to_json(),
                claim.as_ref(),
                satchel_domain::WtxType::LnWithdrawal,
            )
            .await;
        Ok(match paid {
            Ok(PaymentResult::Done { .. }) | Ok(PaymentResult::Pending(_)) => ProcessAnswer::Ok,
            Err(ServiceError::LinkSpent) => {
                ProcessAnswer::Error("LNURL has already been used".into())
            }
            Err(e) if matches!(e.class(), ErrorClass::Internal | ErrorClass::Unavailable) => {
                tracing::error!(link = %link.id, error = %e, "LNURL-withdraw payout failed");
                ProcessAnswer::Error("Internal error; please try again later".into())
            }
            Err(e) => ProcessAnswer::Error(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_rules() {
        let ok = |s: &str| PublicUrl::parse(s).map(|u| u.as_str().to_owned());
        assert_eq!(
            ok("https://pay.example.com").unwrap(),
            "https://pay.example.com"
        );
        assert_eq!(
            ok("https://pay.example.com/").unwrap(),
            "https://pay.example.com"
        );
        assert_eq!(
            ok("https://example.com/satchel/").unwrap(),
            "https://example.com/satchel"
        );
        assert_eq!(
            ok("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            ok("http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(ok("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert!(ok("http://pay.example.com").is_err());
        assert!(ok("http://10.0.0.1").is_err());
        assert!(ok("ftp://pay.example.com").is_err());
        assert!(ok("pay.example.com").is_err());
        assert!(ok("/relative").is_err());
        assert!(ok("https://u:p@pay.example.com").is_err());
        assert!(ok("https://pay.example.com/?x=1").is_err());
        assert!(ok("https://pay.example.com/#f").is_err());
        assert!(ok(&format!("https://{}.com", "a".repeat(300))).is_err());
    }

    #[test]
    fn spendable_leaves_room_for_the_fee_limit() {
        let s = |msat: u64| spendable(Msat::from_msat(msat).unwrap()).as_msat();
        assert_eq!(s(0), 0);
        assert_eq!(s(1_999), 0);
        assert_eq!(s(2_000), 1_000);
        assert_eq!(s(21_000), 20_000);
        assert_eq!(s(21_999), 20_000);
        assert_eq!(s(22_000), 20_000);
        assert_eq!(s(23_000), 21_000);
        for b in [0u64, 5_000, 99_999, 1_000_000, 123_456_789] {
            let a = Msat::from_msat(s(b)).unwrap();
            assert!(a.as_msat() + fee_limit_default(a).as_msat() <= b);
            let next = Msat::from_msat(a.as_msat() + 1000).unwrap();
            assert!(next.as_msat() + fee_limit_default(next).as_msat() > b);
        }
    }
}
