//! LNPay wire shapes. Field order is the order LNPay emitted (golden tests pin it). These are
//! built from store records; nothing here is a database row.
//!
//! Rounding: amounts are shown in sats with [`sats_floor`] (toward negative infinity), the one
//! display rule. Balances and credits are never overstated, debits never understated.
#![allow(non_snake_case)]

use satchel_domain::{KEYSEND_PREIMAGE_TLV, PaymentStatus, sats_floor};
use satchel_service::records::{
    DeliveryStatus, Direction, JobRecord, JobStatus, LnTxRecord, Route, WalletRecord,
    WebhookRecord, WtxRecord,
};
use satchel_service::wallets::CreatedWallet;
use serde::Serialize;
use serde_json::value::RawValue;

/// Stored JSON object text, emitted verbatim.
fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned())
        .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).unwrap_or_default())
}

/// `statusType`.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct StatusTypeDto {
    r#type: &'static str,
    name: &'static str,
    display_name: &'static str,
}

/// `walletType`.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct WalletTypeDto {
    name: &'static str,
    display_name: &'static str,
}

/// LNPay Wallet.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct WalletDto {
    id: String,
    created_at: i64,
    updated_at: i64,
    user_label: String,
    balance: i64,
    balance_msat: i64,
    ln_node_id: String,
    #[schema(required = true)]
    default_lnurlpay_id: Option<String>,
    statusType: StatusTypeDto,
    walletType: WalletTypeDto,
}

impl From<&WalletRecord> for WalletDto {
    fn from(w: &WalletRecord) -> Self {
        let (name, display_name) = if w.active {
            ("active", "Active")
        } else {
            ("inactive", "Inactive")
        };
        WalletDto {
            id: w.id.to_string(),
            created_at: w.created_at,
            updated_at: w.updated_at,
            user_label: w.user_label.clone(),
            balance: sats_floor(w.balance.as_i64()),
            balance_msat: w.balance.as_i64(),
            ln_node_id: w.node_id.to_string(),
            default_lnurlpay_id: w.default_lnurlp_id.clone(),
            statusType: StatusTypeDto {
                r#type: "wallet",
                name,
                display_name,
            },
            walletType: WalletTypeDto {
                name: "generic_wallet",
                display_name: "Generic Wallet",
            },
        }
    }
}

/// `POST /v1/wallet` answer: the wallet plus its keys (shown only here).
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct WalletCreatedDto {
    #[serde(flatten)]
    wallet: WalletDto,
    /// Key role display name → list of keys of that role (shown only here).
    #[schema(value_type = std::collections::BTreeMap<String, Vec<String>>)]
    access_keys: serde_json::Map<String, serde_json::Value>,
}

impl From<&CreatedWallet> for WalletCreatedDto {
    fn from(c: &CreatedWallet) -> Self {
        let mut access_keys = serde_json::Map::new();
        for k in &c.keys {
            access_keys.insert(
                k.role().display_name().to_owned(),
                serde_json::Value::Array(vec![serde_json::Value::String(k.expose().to_owned())]),
            );
        }
        WalletCreatedDto {
            wallet: WalletDto::from(&c.wallet),
            access_keys,
        }
    }
}

/// LNPay lnTx.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct LnTxDto {
    id: String,
    created_at: i64,
    ln_node_id: String,
    dest_pubkey: String,
    payment_request: String,
    r_hash_decoded: String,
    memo: String,
    #[schema(required = true)]
    description_hash: Option<String>,
    #[schema(required = true)]
    payment_addr: Option<String>,
    num_satoshis: i64,
    fee_msat: i64,
    #[schema(required = true)]
    expiry: Option<i64>,
    #[schema(required = true)]
    expires_at: Option<i64>,
    #[schema(required = true)]
    payment_preimage: Option<String>,
    settled: i64,
    #[schema(required = true)]
    settled_at: Option<i64>,
    #[schema(required = true)]
    is_keysend: Option<i64>,
    #[schema(required = true)]
    is_amp: Option<i64>,
    /// Keysend TLV records: type (decimal) → value.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>, required = true)]
    custom_records: Option<Box<RawValue>>,
    /// The caller's `passThru` object (absent inside a WTX).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    passThru: Option<Box<RawValue>>,
}

impl LnTxDto {
    /// Standalone (with `passThru`).
    pub fn full(l: &LnTxRecord) -> LnTxDto {
        let mut d = LnTxDto::nested(l);
        d.passThru = Some(raw(&l.pass_thru));
        d
    }

    /// Nested inside a WTX (LNPay omits `passThru` there).
    pub fn nested(l: &LnTxRecord) -> LnTxDto {
        // settled: 1 paid; 0 open/pending; -1 a payment that definitely failed (LNbits reads -1
        // as failed; LNPay never wrote failed payments at all).
        let settled = match (l.direction, l.status) {
            (_, _) if l.settled => 1,
            (Direction::Outgoing, Some(PaymentStatus::Failed)) => -1,
            _ => 0,
        };
        let custom_records = l.custom_records.as_deref().map(|c| {
            // The keysend preimage record is only revealed once the payment succeeded.
            if l.settled || !c.contains(&KEYSEND_PREIMAGE_TLV.to_string()) {
                raw(c)
            } else {
                match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(c) {
                    Ok(mut m) => {
                        m.remove(&KEYSEND_PREIMAGE_TLV.to_string());
                        raw(&serde_json::Value::Object(m).to_string())
                    }
                    Err(_) => raw("{}"),
                }
            }
        });
        LnTxDto {
            id: l.id.to_string(),
            created_at: l.created_at,
            ln_node_id: l.node_id.to_string(),
            dest_pubkey: l.dest_pubkey.clone(),
            payment_request: l.payment_request.clone(),
            r_hash_decoded: l.payment_hash.to_hex(),
            memo: l.memo.clone(),
            description_hash: l.description_hash.clone(),
            payment_addr: l.payment_addr.clone(),
            num_satoshis: sats_floor(l.amount.as_i64()),
            fee_msat: l.fee.as_i64(),
            expiry: l.expiry_secs,
            expires_at: l.expires_at,
            payment_preimage: if l.settled {
                l.preimage.map(|p| p.to_hex())
            } else {
                None
            },
            settled,
            settled_at: l.settled_at,
            is_keysend: l.is_keysend.then_some(1),
            is_amp: None,
            custom_records,
            passThru: None,
        }
    }
}

/// `wtxType`.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct WtxTypeDto {
    layer: &'static str,
    name: &'static str,
    display_name: &'static str,
}

/// LNPay WTX.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct WtxDto {
    id: String,
    created_at: i64,
    num_satoshis: i64,
    user_label: String,
    wal: WalletDto,
    wtxType: WtxTypeDto,
    #[schema(required = true)]
    lnTx: Option<LnTxDto>,
    #[schema(value_type = Object)]
    passThru: Box<RawValue>,
}

impl From<&WtxRecord> for WtxDto {
    fn from(w: &WtxRecord) -> Self {
        WtxDto {
            id: w.id.to_string(),
            created_at: w.created_at,
            num_satoshis: sats_floor(w.amount_msat),
            user_label: w.user_label.clone(),
            wal: WalletDto::from(&w.wallet),
            wtxType: WtxTypeDto {
                layer: "ln",
                name: w.wtx_type.name(),
                display_name: w.wtx_type.display_name(),
            },
            // LNPay's fee entries carry no lnTx (the payment's own WTX does).
            lnTx: match w.wtx_type {
                satchel_domain::WtxType::NetworkFee => None,
                _ => w.lntx.as_ref().map(LnTxDto::nested),
            },
            passThru: raw(&w.pass_thru),
        }
    }
}

/// `POST /transfer` answer.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct TransferDto {
    /// Credit.
    pub wtx_transfer_in: WtxDto,
    /// Debit.
    pub wtx_transfer_out: WtxDto,
}

/// A payment still unresolved when the request's wait ended (HTTP 202). Poll `GET /v1/lntx/:id`.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct PendingPaymentDto {
    /// Always `pending`.
    pub status: &'static str,
    /// The payment.
    pub lnTx: LnTxDto,
}

/// `X-LNPAY-ASYNC` answer.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct AsyncDto {
    /// Always 1.
    pub success: i64,
    /// Job id.
    pub id: String,
}

/// `GET /v1/job/:id`.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct JobDto {
    id: String,
    created_at: i64,
    updated_at: i64,
    status: &'static str,
    #[schema(required = true)]
    error: Option<String>,
    #[schema(required = true)]
    wtx: Option<WtxDto>,
}

impl JobDto {
    /// From a job and its result.
    pub fn new(j: &JobRecord, wtx: Option<&WtxRecord>) -> JobDto {
        JobDto {
            id: j.id.to_string(),
            created_at: j.created_at,
            updated_at: j.updated_at,
            status: match j.status {
                JobStatus::Queued => "queued",
                JobStatus::Succeeded => "succeeded",
                JobStatus::Failed => "failed",
            },
            error: j.error.clone(),
            wtx: wtx.map(WtxDto::from),
        }
    }
}

/// LND-style hop hint in `decodeinvoice`.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct HopHintDto {
    node_id: String,
    chan_id: String,
    fee_base_msat: u32,
    fee_proportional_millionths: u32,
    cltv_expiry_delta: u32,
}

/// LND-style route hint.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct RouteHintDto {
    hop_hints: Vec<HopHintDto>,
}

/// `decodeinvoice` (LND REST `PayReq`: int64 as strings).
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct DecodedInvoiceDto {
    destination: String,
    payment_hash: String,
    num_satoshis: String,
    timestamp: String,
    expiry: String,
    description: String,
    description_hash: String,
    fallback_addr: String,
    cltv_expiry: String,
    route_hints: Vec<RouteHintDto>,
    payment_addr: String,
    num_msat: String,
    #[schema(value_type = Object)]
    features: serde_json::Map<String, serde_json::Value>,
}

impl From<&satchel_domain::Bolt11> for DecodedInvoiceDto {
    fn from(b: &satchel_domain::Bolt11) -> Self {
        use base64::Engine as _;
        let amount_msat = b.amount().map(|a| a.as_msat()).unwrap_or(0);
        DecodedInvoiceDto {
            destination: b.payee().to_hex(),
            payment_hash: b.payment_hash().to_hex(),
            num_satoshis: (amount_msat / 1000).to_string(),
            timestamp: b.timestamp_secs().to_string(),
            expiry: b.expiry_secs().to_string(),
            description: b.description().unwrap_or_default(),
            description_hash: b.description_hash().map(hex::encode).unwrap_or_default(),
            fallback_addr: String::new(),
            cltv_expiry: b.min_final_cltv_expiry_delta().to_string(),
            route_hints: b
                .route_hints()
                .into_iter()
                .map(|h| RouteHintDto {
                    hop_hints: h
                        .into_iter()
                        .map(|hop| HopHintDto {
                            node_id: hop.node_id.to_hex(),
                            chan_id: hop.short_channel_id.to_string(),
                            fee_base_msat: hop.fee_base_msat,
                            fee_proportional_millionths: hop.fee_proportional_millionths,
                            cltv_expiry_delta: u32::from(hop.cltv_expiry_delta),
                        })
                        .collect(),
                })
                .collect(),
            payment_addr: base64::engine::general_purpose::STANDARD.encode(b.payment_secret()),
            num_msat: amount_msat.to_string(),
            features: serde_json::Map::new(),
        }
    }
}

/// `queryroutes` hop (LND protobuf-JSON as LNPay core emitted it).
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct HopDto {
    chanId: String,
    chanCapacity: String,
    amtToForward: String,
    fee: String,
    expiry: u32,
    amtToForwardMsat: String,
    feeMsat: String,
    pubKey: String,
    tlvPayload: bool,
}

/// `queryroutes` route.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct RouteDto {
    totalTimeLock: u32,
    totalFees: String,
    totalAmt: String,
    hops: Vec<HopDto>,
    totalFeesMsat: String,
    totalAmtMsat: String,
}

/// `queryroutes` answer.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct QueryRoutesDto {
    routes: Vec<RouteDto>,
    successProb: f64,
}

impl QueryRoutesDto {
    /// From backend routes.
    pub fn new(routes: &[Route]) -> QueryRoutesDto {
        QueryRoutesDto {
            routes: routes
                .iter()
                .map(|r| RouteDto {
                    totalTimeLock: r.total_time_lock,
                    totalFees: r.total_fees.sats_floor().to_string(),
                    totalAmt: r.total_amt.sats_floor().to_string(),
                    hops: r
                        .hops
                        .iter()
                        .map(|h| HopDto {
                            chanId: h.chan_id.to_string(),
                            chanCapacity: h.chan_capacity_sats.to_string(),
                            amtToForward: h.amt_to_forward.sats_floor().to_string(),
                            fee: h.fee.sats_floor().to_string(),
                            expiry: h.expiry,
                            amtToForwardMsat: h.amt_to_forward.as_msat().to_string(),
                            feeMsat: h.fee.as_msat().to_string(),
                            pubKey: h.pub_key.to_hex(),
                            tlvPayload: true,
                        })
                        .collect(),
                    totalFeesMsat: r.total_fees.as_msat().to_string(),
                    totalAmtMsat: r.total_amt.as_msat().to_string(),
                })
                .collect(),
            successProb: 1.0,
        }
    }
}

/// A webhook subscription (Satchel's API; LNPay only had a dashboard).
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct WebhookDto {
    id: String,
    created_at: i64,
    endpoint_url: String,
    events: Vec<String>,
    has_secret: bool,
    status: &'static str,
}

impl From<&WebhookRecord> for WebhookDto {
    fn from(w: &WebhookRecord) -> Self {
        WebhookDto {
            id: w.id.to_string(),
            created_at: w.created_at,
            endpoint_url: w.endpoint_url.clone(),
            events: w.events.clone(),
            has_secret: w.secret.is_some(),
            status: if w.active { "active" } else { "inactive" },
        }
    }
}

/// One HTTP request of a delivery.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct AttemptDto {
    id: String,
    at: i64,
    duration_ms: i64,
    #[schema(required = true)]
    status_code: Option<i64>,
    #[schema(required = true)]
    error: Option<String>,
    #[schema(required = true)]
    response_excerpt: Option<String>,
}

/// A delivery and its requests (the delivery log).
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct DeliveryDto {
    id: String,
    event_id: String,
    event: &'static str,
    status: &'static str,
    attempts: i64,
    #[schema(required = true)]
    next_attempt_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    #[schema(required = true)]
    last_status: Option<i64>,
    #[schema(required = true)]
    last_error: Option<String>,
    requests: Vec<AttemptDto>,
}

impl From<&satchel_service::webhooks::DeliveryLog> for DeliveryDto {
    fn from(l: &satchel_service::webhooks::DeliveryLog) -> Self {
        let d = &l.delivery;
        DeliveryDto {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            event: l.event.name(),
            status: d.status.name(),
            attempts: d.attempts,
            next_attempt_at: (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at),
            created_at: d.created_at,
            updated_at: d.updated_at,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            requests: l
                .attempts
                .iter()
                .map(|a| AttemptDto {
                    id: a.id.to_string(),
                    at: a.at,
                    duration_ms: a.duration_ms,
                    status_code: a.status_code,
                    error: a.error.clone(),
                    response_excerpt: a.response_excerpt.clone(),
                })
                .collect(),
        }
    }
}
