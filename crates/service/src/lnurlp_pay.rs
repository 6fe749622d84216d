//! Paying LNURL-pay links and Lightning Addresses (LUD-06, LUD-12, LUD-16; LNPay spec §6.5):
//! `GET /lnurlp/probe/:lnurl_or_address` and `POST /wallet/:key/lnurlp/pay`.
//!
//! **Outbound requests.** Every URL here comes from a user (the LNURL, the address's domain,
//! and the callback the remote service names), so every request goes through the SSRF-safe
//! [`OutboundClient`]: no loopback/private/... addresses unless the operator turns on
//! `lnurl_allow_private_targets`, checked at connect time; no redirects (a 3xx is refused, so a
//! public service cannot bounce us inside); at most [`MAX_RESPONSE_BYTES`] read; 10 s in total.
//!
//! **Schemes.** LUD-01/LUD-16 require `https` (`http` only for `.onion`). With private targets
//! allowed, `http` is also accepted for a host that is `localhost` or a non-public IP literal
//! (a test server or a service on the operator's own network, which rarely has a certificate);
//! a public host is always `https`, so the setting never downgrades a request to the Internet.
//!
//! **Before paying** the invoice the callback returned must: verify (signature, payee), be on
//! our network and unexpired, ask exactly `amt_msat`, and commit to SHA-256 of the metadata
//! string exactly as served (LNPay skipped this check, so a service could hand out an invoice
//! for something else). Any refusal happens before anything is written; the payment then takes
//! the withdraw path (reserve first, never refunded on a timeout) and books
//! `ln_lnurl_pay_outbound`.
//!
//! **Status codes.** LNPay answered these refusals with 500 (its exception classes extended
//! `ServerErrorHttpException`). They are the caller's or the remote service's doing, not ours,
//! and a Satchel 500 never carries a message, so they are 400 with LNPay's messages.
//!
//! **Own addresses.** An address whose domain is our `public_url` host never goes over HTTP:
//! it is resolved by [`LnurlpPayService::own_address_pay_request`] and
//! [`LnurlpPayService::own_address_invoice`] (the seam to the receive side), and the invoice,
//! being ours, is settled inside the ledger by the withdraw path (no node, no fee).

use std::sync::Arc;
use std::time::Duration;

use satchel_domain::{Bolt11, JobId, KeyRole, Msat, Permission, WtxType, decode_lnurl, now_secs};
use satchel_outbound::{AddressPolicy, Limits, OutboundClient, OutboundError, Target};
use satchel_store::{JobRecord, JobStatus, WtxRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::{AuthService, Caller};
use crate::lnurlp::{LnurlpService, PayAnswer, PayQuery};
use crate::passthru::PassThru;
use crate::payments::{PaymentResult, PaymentService};
use crate::{Ctx, ServiceError};

/// Most bytes of an LNURL service's answer that are read; a longer answer is refused.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Whole-request bound of one LNURL request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect bound (DNS, TCP, TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `User-Agent` of LNURL requests.
const USER_AGENT: &str = "Satchel-LNURL";
/// Longest comment accepted whatever the service allows (it travels in a URL).
const MAX_COMMENT_CHARS: usize = 2000;
/// Longest Lightning Address accepted.
const MAX_ADDRESS_LEN: usize = 320;
/// Longest reason of a service's `{"status":"ERROR"}` that is shown.
const MAX_REASON_CHARS: usize = 200;
/// Job kind of an `X-LNPAY-ASYNC` LNURL payment.
pub const JOB_KIND: &str = "lnurlp_pay";

/// LNPay's message for anything that is not a usable LNURL-pay link or address.
const PROBE_FAILED: &str = "Invalid Address / LNURL";

/// One metadata entry of a payRequest (LUD-06: `[mime type, content]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEntry {
    /// e.g. `text/plain`, `text/identifier`, `image/png;base64`.
    pub mime: String,
    /// The content.
    pub content: String,
}

/// Where the invoice comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// The remote service's callback URL (its own query kept; `amount` and `comment` are
    /// appended).
    Remote(Target),
    /// An address of this server: [`LnurlpPayService::own_address_invoice`].
    Own {
        /// The username (lower case).
        user: String,
    },
}

/// A LUD-06 `payRequest`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayRequest {
    /// Where to ask for the invoice.
    pub callback: Callback,
    /// Smallest amount accepted.
    pub min_sendable: Msat,
    /// Largest amount accepted.
    pub max_sendable: Msat,
    /// The metadata string exactly as served (its SHA-256 is the invoice's description hash).
    pub metadata: String,
    /// The metadata, decoded.
    pub entries: Vec<MetadataEntry>,
    /// Longest comment accepted (LUD-12); 0: none.
    pub comment_allowed: u64,
}

impl PayRequest {
    /// The callback as a URL (for the probe's answer); our own addresses show our public URL.
    pub fn callback_url(&self, ctx: &Ctx) -> String {
        match &self.callback {
            Callback::Remote(t) => t.as_str().to_owned(),
            Callback::Own { user } => ctx
                .cfg
                .public_url
                .as_ref()
                .map(|p| format!("{}/.well-known/lnurlp/{user}", p.as_str()))
                .unwrap_or_default(),
        }
    }
}

/// What to pay: the two forms LNPay accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayTo {
    /// `lnurlpay_encoded`: `LNURL1…` (optionally `lightning:`-prefixed).
    Lnurl(String),
    /// `ln_address`: `user@domain` (LUD-16).
    Address(String),
}

/// `POST /wallet/:key/lnurlp/pay`, parsed.
#[derive(Debug, Clone)]
pub struct LnurlPayRequest {
    /// The link or address.
    pub to: PayTo,
    /// Amount (msat).
    pub amount: Msat,
    /// LUD-12 comment.
    pub comment: Option<String>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
}

/// An LNURL-pay that passed every check: the invoice to pay and its passThru. Stored as an
/// async job's request, so a re-run pays the same invoice (same hash: never twice).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyPayment {
    /// The invoice (normalized text).
    pub payment_request: String,
    /// passThru JSON text.
    pub pass_thru: String,
}

/// A parsed Lightning Address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    user: String,
    /// Host as written (lower case), without the port.
    host: String,
    port: Option<u16>,
    /// `user@domain` as given (lower-cased user).
    text: String,
}

fn probe_failed(reason: impl std::fmt::Display) -> ServiceError {
    ServiceError::Invalid(format!("{PROBE_FAILED}: {reason}"))
}

/// Parses `user@domain[:port]` (LUD-16: the user is `a-z 0-9 - _ .`, compared in lower case;
/// `+` is accepted as many services use it for tags).
fn parse_address(text: &str) -> Result<Address, String> {
    let t = text.trim();
    if t.len() > MAX_ADDRESS_LEN {
        return Err("the address is too long".into());
    }
    let (user, domain) = t
        .rsplit_once('@')
        .ok_or_else(|| "an address is user@domain".to_owned())?;
    let user = user.to_ascii_lowercase();
    if user.is_empty()
        || !user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.+".contains(c))
    {
        return Err("the user part of an address may hold only a-z, 0-9, -, _, . and +".into());
    }
    let domain = domain.to_ascii_lowercase();
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| "invalid port".to_owned())?,
            ),
        ),
        None => (domain.clone(), None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err("invalid domain".into());
    }
    Ok(Address {
        text: format!("{user}@{domain}"),
        user,
        host,
        port,
    })
}

fn is_onion(host: &str) -> bool {
    host.trim_end_matches('.').ends_with(".onion")
}

/// A host that only a private deployment reaches: `localhost` or a non-public IP literal.
fn is_private_host(t: &Target) -> bool {
    let h = t.host_str().trim_end_matches('.').to_ascii_lowercase();
    h == "localhost"
        || h.ends_with(".localhost")
        || t.literal_ip()
            .is_some_and(|ip| !satchel_outbound::is_public(ip))
}

/// The scheme rule (module docs): https; http for onion, or for a private host when the
/// operator allows private targets.
fn check_scheme(t: &Target, allow_private: bool) -> Result<(), String> {
    match t.url().scheme() {
        "https" => Ok(()),
        "http" if is_onion(t.host_str()) || (allow_private && is_private_host(t)) => Ok(()),
        _ => Err(format!("{} must use https", t.as_str())),
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn msat_field(o: &Map<String, Value>, name: &str) -> Result<Msat, String> {
    let v = o
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{name} must be a positive integer (msat)"))?;
    if v == 0 {
        return Err(format!("{name} must be a positive integer (msat)"));
    }
    Msat::from_msat(v).map_err(|_| format!("{name} is too large"))
}

/// Parses LUD-06 metadata: a JSON array of `[mime, content]` string pairs with exactly one
/// `text/plain`.
fn parse_metadata(text: &str) -> Result<Vec<MetadataEntry>, String> {
    let bad = || "metadata must be a JSON array of [type, content] string pairs".to_owned();
    let v: Value = serde_json::from_str(text).map_err(|_| bad())?;
    let arr = v.as_array().ok_or_else(bad)?;
    let mut out = Vec::with_capacity(arr.len());
    for e in arr {
        match e.as_array().map(Vec::as_slice) {
            Some([Value::String(m), Value::String(c)]) => out.push(MetadataEntry {
                mime: m.clone(),
                content: c.clone(),
            }),
            _ => return Err(bad()),
        }
    }
    if out.iter().filter(|e| e.mime == "text/plain").count() != 1 {
        return Err("metadata must have exactly one text/plain entry".into());
    }
    Ok(out)
}

/// Parses a payRequest body (strictly: LUD-06's fields with their types).
fn parse_pay_request(o: &Map<String, Value>, allow_private: bool) -> Result<PayRequest, String> {
    if o.get("tag").and_then(Value::as_str) != Some("payRequest") {
        return Err("not an LNURL-pay link (tag is not payRequest)".into());
    }
    let callback = o
        .get("callback")
        .and_then(Value::as_str)
        .ok_or_else(|| "callback missing".to_owned())?;
    let callback = Target::parse(callback).map_err(|e| format!("callback {e}"))?;
    check_scheme(&callback, allow_private)?;
    let min_sendable = msat_field(o, "minSendable")?;
    let max_sendable = msat_field(o, "maxSendable")?;
    if min_sendable > max_sendable {
        return Err("minSendable is above maxSendable".into());
    }
    let metadata = o
        .get("metadata")
        .and_then(Value::as_str)
        .ok_or_else(|| "metadata must be a string".to_owned())?
        .to_owned();
    let entries = parse_metadata(&metadata)?;
    let comment_allowed = match o.get("commentAllowed") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| "commentAllowed must be a non-negative integer".to_owned())?,
    };
    Ok(PayRequest {
        callback: Callback::Remote(callback),
        min_sendable,
        max_sendable,
        metadata,
        entries,
        comment_allowed,
    })
}

/// What an LNURL request produced (module docs: an error's text is shown to the caller).
enum Fetched {
    Json(Map<String, Value>),
    /// The service answered LUD-06's `{"status":"ERROR","reason":…}`.
    ServiceError(String),
}

/// LNURL-pay payments.
#[derive(Clone)]
pub struct LnurlpPayService {
    ctx: Arc<Ctx>,
    payments: PaymentService,
    /// The receive side, for our own addresses.
    lnurlp: LnurlpService,
    http: OutboundClient,
}

impl LnurlpPayService {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        payments: PaymentService,
        lnurlp: LnurlpService,
    ) -> Result<LnurlpPayService, ServiceError> {
        let http = OutboundClient::new(
            AddressPolicy::new(ctx.cfg.lnurl_allow_private_targets),
            Limits {
                timeout: REQUEST_TIMEOUT,
                connect_timeout: CONNECT_TIMEOUT,
                max_response_bytes: MAX_RESPONSE_BYTES,
            },
            USER_AGENT,
        )
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(LnurlpPayService {
            ctx,
            payments,
            lnurlp,
            http,
        })
    }

    fn allow_private(&self) -> bool {
        self.ctx.cfg.lnurl_allow_private_targets
    }

    /// GETs `target` and reads a JSON object. A 3xx, a non-2xx without an LNURL error, an
    /// answer over [`MAX_RESPONSE_BYTES`] or anything that is not a JSON object is refused.
    async fn fetch(&self, target: &Target) -> Result<Fetched, String> {
        let reply = self
            .http
            .get(target, &[("Accept", "application/json")])
            .await
            .map_err(|e| match e {
                OutboundError::Timeout(d) => format!("no answer within {} s", d.as_secs()),
                e => e.to_string(),
            })?;
        if (300..400).contains(&reply.status) {
            return Err(format!(
                "the service answered a redirect ({}), which is not followed",
                reply.status
            ));
        }
        if reply.truncated {
            return Err(format!(
                "the service's answer is larger than {MAX_RESPONSE_BYTES} bytes"
            ));
        }
        let obj = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| match v {
                Value::Object(o) => Some(o),
                _ => None,
            });
        match obj {
            Some(o) if o.get("status").and_then(Value::as_str) == Some("ERROR") => {
                let reason = o
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_REASON_CHARS)
                    .collect();
                Ok(Fetched::ServiceError(reason))
            }
            Some(o) if (200..300).contains(&reply.status) => Ok(Fetched::Json(o)),
            _ if !(200..300).contains(&reply.status) => {
                Err(format!("the service answered HTTP {}", reply.status))
            }
            _ => Err("the service's answer is not a JSON object".into()),
        }
    }

    /// Whether `a` names this server (`public_url`'s host, and its port if the address gives
    /// one).
    fn is_own(&self, a: &Address) -> bool {
        let Some(base) = self.ctx.cfg.public_url.as_ref() else {
            return false;
        };
        let Ok(t) = Target::parse(base.as_str()) else {
            return false;
        };
        t.host_str().eq_ignore_ascii_case(&a.host) && a.port.is_none_or(|p| p == t.port())
    }

    /// Resolves a link or address to its checked payRequest (no payment, nothing written).
    async fn resolve(&self, to: &PayTo) -> Result<PayRequest, ServiceError> {
        let url = match to {
            PayTo::Address(text) => {
                let a = parse_address(text).map_err(probe_failed)?;
                if self.is_own(&a) {
                    return self.own_address_pay_request(&a.user).await;
                }
                let authority = match a.port {
                    Some(p) => format!("{}:{p}", a.host),
                    None => a.host.clone(),
                };
                let path = format!("/.well-known/lnurlp/{}", a.user);
                let https =
                    Target::parse(&format!("https://{authority}{path}")).map_err(probe_failed)?;
                // http for onion, and for a private host the operator allows (module docs).
                if is_onion(&a.host) || (self.allow_private() && is_private_host(&https)) {
                    format!("http://{authority}{path}")
                } else {
                    https.as_str().to_owned()
                }
            }
            PayTo::Lnurl(text) => decode_lnurl(text).map_err(probe_failed)?,
        };
        let target = Target::parse(&url).map_err(|e| probe_failed(format!("the URL {e}")))?;
        check_scheme(&target, self.allow_private()).map_err(probe_failed)?;
        match self.fetch(&target).await {
            Ok(Fetched::Json(o)) => {
                parse_pay_request(&o, self.allow_private()).map_err(probe_failed)
            }
            Ok(Fetched::ServiceError(reason)) => {
                Err(ServiceError::Invalid(format!("Lnurlpay service:{reason}")))
            }
            Err(reason) => {
                tracing::info!(url = %target, %reason, "LNURL-pay probe failed");
                Err(probe_failed(reason))
            }
        }
    }

    /// `GET /lnurlp/probe/:lnurl_or_address` (any account key).
    pub async fn probe(&self, caller: &Caller, input: &str) -> Result<PayRequest, ServiceError> {
        AuthService::new(self.ctx.clone()).require_account_key(caller)?;
        let to = if input.contains('@') {
            PayTo::Address(input.to_owned())
        } else {
            PayTo::Lnurl(input.to_owned())
        };
        self.resolve(&to).await
    }

    // ---- Own-domain seam -------------------------------------------------------------------
    //
    // A Lightning Address of this server is resolved here, never over HTTP: the receive side
    // (`LnurlpService`) answers exactly what it would answer an outside payer.

    /// The payRequest of our own address `user` (lower case); `callback` must be
    /// [`Callback::Own`].
    async fn own_address_pay_request(&self, user: &str) -> Result<PayRequest, ServiceError> {
        match self.lnurlp.well_known(user).await? {
            PayAnswer::Offer(o) => {
                let entries = parse_metadata(&o.metadata).map_err(|e| {
                    tracing::error!(%user, error = %e, "own Lightning Address: stored metadata unreadable");
                    probe_failed(format!("unknown address {user}"))
                })?;
                Ok(PayRequest {
                    callback: Callback::Own {
                        user: user.to_owned(),
                    },
                    min_sendable: o.min_sendable,
                    max_sendable: o.max_sendable,
                    metadata: o.metadata,
                    entries,
                    comment_allowed: u64::from(o.comment_allowed),
                })
            }
            PayAnswer::Invoice(_) | PayAnswer::Error(_) | PayAnswer::NotFound(_) => {
                Err(probe_failed(format!("unknown address {user}")))
            }
        }
    }

    /// An invoice of our own address `user` for `amount` with `comment`, committing to the
    /// metadata [`LnurlpPayService::own_address_pay_request`] gave: made by the receive side's
    /// own callback, so it is exactly what an outside payer would get (and it is ours, so the
    /// withdraw path settles it inside the ledger).
    async fn own_address_invoice(
        &self,
        user: &str,
        amount: Msat,
        comment: Option<&str>,
    ) -> Result<String, ServiceError> {
        let Some((link, _)) = self.lnurlp.resolve_local_address(user).await? else {
            return Err(probe_failed(format!("unknown address {user}")));
        };
        let q = PayQuery {
            amount: Some(amount.as_msat().to_string()),
            comment: comment.map(str::to_owned),
        };
        match self.lnurlp.pay_request(&link.id, &link.id, q).await? {
            PayAnswer::Invoice(inv) => Ok(inv.pr),
            PayAnswer::Error(reason) | PayAnswer::NotFound(reason) => {
                Err(ServiceError::Invalid(format!("Lnurlpay service:{reason}")))
            }
            PayAnswer::Offer(_) => Err(ServiceError::Invalid(format!(
                "Could not retrieve pr from {user}"
            ))),
        }
    }

    // ---------------------------------------------------------------------------------------

    /// Fetches the invoice for `amount` (and `comment`) from the callback.
    async fn invoice(
        &self,
        pr: &PayRequest,
        amount: Msat,
        comment: Option<&str>,
    ) -> Result<String, ServiceError> {
        let target = match &pr.callback {
            Callback::Own { user } => return self.own_address_invoice(user, amount, comment).await,
            Callback::Remote(t) => t,
        };
        // LUD-06: the callback's own query is kept and `amount` appended (LUD-12: `comment`).
        let mut url = target.url().clone();
        url.query_pairs_mut()
            .append_pair("amount", &amount.as_msat().to_string());
        if let Some(c) = comment {
            url.query_pairs_mut().append_pair("comment", c);
        }
        let shown = target.as_str().to_owned();
        let could_not = |why: String| {
            ServiceError::Invalid(format!("Could not retrieve pr from {shown}: {why}"))
        };
        let call = Target::parse(url.as_str()).map_err(|e| could_not(e.to_string()))?;
        match self.fetch(&call).await {
            Ok(Fetched::Json(o)) => match o.get("pr").and_then(Value::as_str) {
                Some(pr) if !pr.trim().is_empty() => Ok(Bolt11::normalize(pr)),
                _ => Err(could_not("the answer has no pr".into())),
            },
            Ok(Fetched::ServiceError(reason)) => {
                Err(ServiceError::Invalid(format!("Lnurlpay service:{reason}")))
            }
            Err(why) => {
                tracing::info!(callback = %shown, reason = %why, "LNURL-pay callback failed");
                Err(could_not(why))
            }
        }
    }

    /// Checks the callback's invoice against what we asked for (module docs).
    fn check_invoice(&self, pr: &PayRequest, text: &str, amount: Msat) -> Result<(), ServiceError> {
        let invoice = Bolt11::parse(text).map_err(|e| {
            ServiceError::Invalid(format!("Lnurlpay service returned an invalid invoice: {e}"))
        })?;
        let got = invoice.check_payable(self.ctx.network(), now_secs())?;
        if got != amount {
            return Err(ServiceError::Invalid(format!(
                "Requested invoice ({}) and invoice generated ({}) do not match.",
                amount.as_msat(),
                got.as_msat()
            )));
        }
        if invoice.description_hash() != Some(sha256(&pr.metadata)) {
            return Err(ServiceError::Invalid(
                "The invoice's description hash is not the SHA-256 of the LNURL metadata.".into(),
            ));
        }
        Ok(())
    }

    /// Everything before the payment: resolve, check amount and comment, fetch the invoice and
    /// check it. Writes nothing.
    async fn prepare(&self, req: LnurlPayRequest) -> Result<ReadyPayment, ServiceError> {
        if let Some(max) = self.ctx.cfg.max_send
            && req.amount > max
        {
            return Err(ServiceError::Invalid(format!(
                "Sends are limited to: {} satoshi per request",
                max.sats_floor()
            )));
        }
        let pr = self.resolve(&req.to).await?;
        if req.amount > pr.max_sendable {
            return Err(ServiceError::Invalid(format!(
                "LNURL cannot accept more than {} msat",
                pr.max_sendable.as_msat()
            )));
        }
        if req.amount < pr.min_sendable {
            return Err(ServiceError::Invalid(format!(
                "LNURL cannot accept less than {} msat",
                pr.min_sendable.as_msat()
            )));
        }
        let comment = req.comment.filter(|c| !c.is_empty());
        if let Some(c) = &comment {
            let n = c.chars().count();
            let allowed = usize::try_from(pr.comment_allowed).unwrap_or(usize::MAX);
            if n > allowed || n > MAX_COMMENT_CHARS {
                return Err(ServiceError::Invalid(format!(
                    "Comment length is too long ({n}) - endpoint supports ({}) characters",
                    pr.comment_allowed
                )));
            }
        }
        let text = self.invoice(&pr, req.amount, comment.as_deref()).await?;
        self.check_invoice(&pr, &text, req.amount)?;
        let mut pt = PassThru::from_user(req.pass_thru);
        pt = match &req.to {
            PayTo::Address(a) => pt.set(
                "target_ln_address",
                Value::String(
                    parse_address(a)
                        .map(|a| a.text)
                        .unwrap_or_else(|_| a.clone()),
                ),
            ),
            PayTo::Lnurl(l) => pt.set("target_lnurlp_encoded", Value::String(l.trim().to_owned())),
        };
        pt = pt.set("method", Value::String("lnurlpay".into()));
        if let Some(c) = comment {
            pt = pt.set("lnurlp_comment", Value::String(c));
        }
        Ok(ReadyPayment {
            payment_request: text,
            pass_thru: pt.to_json(),
        })
    }

    /// `POST /wallet/:key/lnurlp/pay`: pays and waits up to the configured time.
    pub async fn pay(
        &self,
        caller: &Caller,
        key: &str,
        req: LnurlPayRequest,
    ) -> Result<PaymentResult, ServiceError> {
        let wallet_id = AuthService::new(self.ctx.clone())
            .wallet_id_for(caller, key, Permission::WalletWithdraw)
            .await?;
        let ready = self.prepare(req).await?;
        self.payments
            .pay_bolt11(
                caller,
                key,
                &wallet_id,
                ready.payment_request,
                None,
                ready.pass_thru,
                None,
                WtxType::LnLnurlPayOutbound,
            )
            .await
    }

    /// `X-LNPAY-ASYNC`: every check (and fetching the invoice) happens now, so a refusal is
    /// still a 400 and writes nothing; the checked invoice is stored as a job and paid in a
    /// task (a restart resumes it, and it is the same invoice, so it cannot be paid twice).
    pub async fn enqueue(
        &self,
        caller: &Caller,
        key: &str,
        req: LnurlPayRequest,
        jobs: &crate::jobs::JobService,
    ) -> Result<JobId, ServiceError> {
        let wallet = AuthService::new(self.ctx.clone())
            .wallet_for(caller, key, Permission::WalletWithdraw)
            .await?;
        let ready = self.prepare(req).await?;
        let now = now_secs();
        let job = JobRecord {
            id: JobId::generate(),
            account_id: caller.account_id.clone(),
            wallet_id: wallet.id,
            kind: JOB_KIND.to_owned(),
            request: serde_json::to_string(&ready)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
            status: JobStatus::Queued,
            result_wtx_id: None,
            error: None,
            created_at: now,
            updated_at: now,
        };
        jobs.start(job).await
    }

    /// Runs a stored LNURL payment to its end. If the invoice was already attempted, that
    /// attempt's outcome is the answer (a definite failure is final, as for keysend jobs).
    pub(crate) async fn run_job(&self, job: &JobRecord) -> Result<WtxRecord, ServiceError> {
        let ready: ReadyPayment = serde_json::from_str(&job.request)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let hash = Bolt11::payment_hash_hint(&ready.payment_request)
            .ok_or_else(|| ServiceError::Internal("stored LNURL invoice unreadable".into()))?;
        let caller = Caller {
            account_id: job.account_id.clone(),
            role: KeyRole::Secret,
        };
        if self.ctx.store.latest_outgoing(&hash).await?.is_none() {
            match self
                .payments
                .pay_bolt11(
                    &caller,
                    job.wallet_id.as_str(),
                    &job.wallet_id,
                    ready.payment_request.clone(),
                    None,
                    ready.pass_thru.clone(),
                    None,
                    WtxType::LnLnurlPayOutbound,
                )
                .await
            {
                Ok(PaymentResult::Done { wtx, .. }) => return Ok(wtx),
                Ok(PaymentResult::Pending(_))
                | Err(ServiceError::PaymentInFlight)
                | Err(ServiceError::AlreadyPaid) => {}
                Err(e) => return Err(e),
            }
        }
        // Follow the attempt in our books until it ends (its driver, or recovery, settles it).
        let mut pause = Duration::from_millis(200);
        loop {
            match self.ctx.store.latest_outgoing(&hash).await? {
                Some(l) if l.status == Some(satchel_domain::PaymentStatus::Succeeded) => {
                    return self
                        .ctx
                        .store
                        .wtxs_of_lntx(&l.id)
                        .await?
                        .into_iter()
                        .next()
                        .ok_or_else(|| {
                            ServiceError::Internal("succeeded payment without WTX".into())
                        });
                }
                Some(l) if l.status == Some(satchel_domain::PaymentStatus::Failed) => {
                    let reason = l
                        .failure_reason
                        .as_deref()
                        .and_then(satchel_domain::FailureReason::from_lnd_name)
                        .unwrap_or(satchel_domain::FailureReason::Error);
                    return Err(ServiceError::PaymentFailed(reason));
                }
                Some(_) => {}
                None => return Err(ServiceError::AlreadyPaid),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = parse_address("Alice@Example.COM").unwrap();
        assert_eq!(
            (a.user.as_str(), a.host.as_str(), a.port),
            ("alice", "example.com", None)
        );
        assert_eq!(a.text, "alice@example.com");
        let a = parse_address("bob.x_y-z+tip@127.0.0.1:8080").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", Some(8080)));
        for bad in [
            "alice",
            "@example.com",
            "al ice@example.com",
            "alice@",
            "alice@exa mple.com",
            "alice@example.com/x",
            "alice@example.com:0",
            "alice@example.com:99999",
            "alice@-bad.com",
            "a/b@example.com",
            "alice@example.com?x",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schemes() {
        let t = |s: &str| Target::parse(s).unwrap();
        assert!(check_scheme(&t("https://example.com/x"), false).is_ok());
        assert!(check_scheme(&t("http://example.com/x"), false).is_err());
        assert!(check_scheme(&t("http://example.com/x"), true).is_err());
        assert!(check_scheme(&t("http://abc.onion/x"), false).is_ok());
        assert!(check_scheme(&t("http://127.0.0.1:9/x"), false).is_err());
        assert!(check_scheme(&t("http://127.0.0.1:9/x"), true).is_ok());
        assert!(check_scheme(&t("http://localhost:9/x"), true).is_ok());
        assert!(check_scheme(&t("http://8.8.8.8/x"), true).is_err());
    }

    #[test]
    fn pay_requests_are_parsed_strictly() {
        let meta = r#"[["text/plain","hi"],["text/identifier","a@b.c"]]"#;
        let ok = serde_json::json!({
            "tag": "payRequest", "callback": "https://b.c/cb?x=1", "minSendable": 1000,
            "maxSendable": 5000, "metadata": meta, "commentAllowed": 10
        });
        let p = parse_pay_request(ok.as_object().unwrap(), false).unwrap();
        assert_eq!(p.metadata, meta);
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.comment_allowed, 10);
        let bad = |patch: Value| {
            let mut o = ok.as_object().unwrap().clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    o.remove(k);
                } else {
                    o.insert(k.clone(), v.clone());
                }
            }
            parse_pay_request(&o, false).unwrap_err()
        };
        bad(serde_json::json!({"tag": "withdrawRequest"}));
        bad(serde_json::json!({"callback": null}));
        bad(serde_json::json!({"callback": "ftp://b.c/"}));
        bad(serde_json::json!({"callback": "http://b.c/"}));
        bad(serde_json::json!({"minSendable": "1000"}));
        bad(serde_json::json!({"minSendable": 0}));
        bad(serde_json::json!({"minSendable": 6000}));
        bad(serde_json::json!({"maxSendable": 1.5}));
        bad(serde_json::json!({"metadata": [["text/plain", "x"]]}));
        bad(serde_json::json!({"metadata": "[[\"image/png;base64\",\"x\"]]"}));
        bad(serde_json::json!({"metadata": "[[\"text/plain\",1]]"}));
        bad(serde_json::json!({"metadata": "not json"}));
        bad(serde_json::json!({"commentAllowed": -1}));
    }
}
