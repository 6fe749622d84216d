//! BOLT11 invoices, parsed once at the edge and carried as a checked value.

use std::fmt;
use std::str::FromStr;

use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescriptionRef};

use crate::money::Msat;
use crate::payment::{NodePubkey, PaymentHash};

/// Bitcoin networks Satchel can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// Mainnet (`lnbc`).
    Bitcoin,
    /// Testnet (`lntb`).
    Testnet,
    /// Signet (`lntbs`).
    Signet,
    /// Regtest (`lnbcrt`): the development network.
    Regtest,
}

impl Network {
    /// Config/display name.
    pub fn name(self) -> &'static str {
        match self {
            Network::Bitcoin => "bitcoin",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }

    /// The `bitcoin` crate's network.
    pub fn to_bitcoin(self) -> bitcoin::Network {
        match self {
            Network::Bitcoin => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }

    fn from_bitcoin(n: bitcoin::Network) -> Network {
        match n {
            bitcoin::Network::Bitcoin => Network::Bitcoin,
            bitcoin::Network::Signet => Network::Signet,
            bitcoin::Network::Regtest => Network::Regtest,
            _ => Network::Testnet,
        }
    }
}

impl FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Network, String> {
        Ok(match s {
            "bitcoin" | "mainnet" => Network::Bitcoin,
            "testnet" => Network::Testnet,
            "signet" => Network::Signet,
            "regtest" => Network::Regtest,
            _ => return Err(format!("unknown network {s}")),
        })
    }
}

/// Why an invoice cannot be paid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bolt11Error {
    /// Not a valid, correctly signed BOLT11 string.
    #[error("invalid payment request: {0}")]
    Malformed(String),
    /// Valid, but for another network.
    #[error("invoice is for {got}, this node runs on {expected}")]
    WrongNetwork {
        /// Our network.
        expected: &'static str,
        /// The invoice's network.
        got: &'static str,
    },
    /// Past its expiry.
    #[error("invoice expired")]
    Expired,
    /// No amount in the invoice.
    #[error("Cannot process any amount invoices")]
    ZeroAmount,
}

/// A parsed BOLT11 invoice with a valid signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Bolt11 {
    text: String,
    inner: Bolt11Invoice,
}

impl Bolt11 {
    /// Parses and checks the signature. Accepts upper case and a `lightning:` URI prefix.
    pub fn parse(s: &str) -> Result<Bolt11, Bolt11Error> {
        let text = Bolt11::normalize(s);
        let inner =
            Bolt11Invoice::from_str(&text).map_err(|e| Bolt11Error::Malformed(e.to_string()))?;
        Ok(Bolt11 { text, inner })
    }

    /// The canonical text [`Bolt11::parse`] keeps and [`Bolt11::as_str`] returns: trimmed,
    /// without a `lightning:` prefix, lower case.
    pub fn normalize(s: &str) -> String {
        let s = s.trim();
        let s = s
            .strip_prefix("lightning:")
            .or_else(|| s.strip_prefix("LIGHTNING:"))
            .unwrap_or(s);
        s.to_ascii_lowercase()
    }

    /// The payment hash field of a normalized invoice text, read *without* decoding or checking
    /// anything else (no checksum, no signature, no other field).
    ///
    /// Only a lookup key for recognizing invoices we issued: a caller that then finds a stored
    /// invoice whose text is byte-for-byte `text` knows the whole invoice, signature included,
    /// is the one we made and checked when we made it, so it can skip [`Bolt11::parse`] (whose
    /// public-key recovery and route-hint key parsing are most of a payment's CPU). A text that
    /// matches nothing stored must go through [`Bolt11::parse`].
    pub fn payment_hash_hint(text: &str) -> Option<PaymentHash> {
        const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        // Timestamp (7), then tagged fields, then signature (104) and checksum (6).
        const TIMESTAMP: usize = 7;
        const TRAILER: usize = 104 + 6;
        const TAG_PAYMENT_HASH: u8 = 1; // 'p'
        const HASH_CHARS: usize = 52; // 256 bits, padded to 260
        let value = |c: u8| CHARSET.iter().position(|x| *x == c).map(|v| v as u8);
        let data = text.as_bytes().get(text.rfind('1')?.checked_add(1)?..)?;
        let fields = data.get(TIMESTAMP..data.len().checked_sub(TRAILER)?)?;
        let mut pos = 0usize;
        while let Some(head) = fields.get(pos..pos.checked_add(3)?) {
            let tag = value(head[0])?;
            let len = usize::from(value(head[1])?) * 32 + usize::from(value(head[2])?);
            let body = fields.get(pos + 3..pos + 3 + len)?;
            if tag == TAG_PAYMENT_HASH && len == HASH_CHARS {
                let mut out = [0u8; 32];
                let (mut acc, mut bits, mut i) = (0u32, 0u32, 0usize);
                for c in body {
                    acc = (acc << 5) | u32::from(value(*c)?);
                    bits += 5;
                    if bits >= 8 {
                        bits -= 8;
                        if let Some(b) = out.get_mut(i) {
                            *b = (acc >> bits) as u8;
                        }
                        i += 1;
                        acc &= (1 << bits) - 1;
                    }
                }
                return Some(PaymentHash(out));
            }
            pos += 3 + len;
        }
        None
    }

    /// Wraps an invoice we built and signed ourselves (no re-parse, no re-verification).
    pub fn from_invoice(inner: Bolt11Invoice) -> Bolt11 {
        Bolt11 {
            text: inner.to_string(),
            inner,
        }
    }

    /// Checks that the invoice can be paid now on `network`: right network, not expired, has an
    /// amount. Returns the amount.
    pub fn check_payable(&self, network: Network, now_secs: i64) -> Result<Msat, Bolt11Error> {
        let got = self.network();
        if got != network {
            return Err(Bolt11Error::WrongNetwork {
                expected: network.name(),
                got: got.name(),
            });
        }
        if self.is_expired_at(now_secs) {
            return Err(Bolt11Error::Expired);
        }
        match self.amount() {
            Some(a) if !a.is_zero() => Ok(a),
            _ => Err(Bolt11Error::ZeroAmount),
        }
    }

    /// The invoice text (lowercase).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The underlying `lightning-invoice` value, for backends.
    pub fn inner(&self) -> &Bolt11Invoice {
        &self.inner
    }

    /// Network from the human-readable part.
    pub fn network(&self) -> Network {
        Network::from_bitcoin(self.inner.network())
    }

    /// Amount, if the invoice has one (an amount over 21M BTC is treated as malformed-zero).
    pub fn amount(&self) -> Option<Msat> {
        self.inner
            .amount_milli_satoshis()
            .and_then(|a| Msat::from_msat(a).ok())
    }

    /// Payment hash.
    pub fn payment_hash(&self) -> PaymentHash {
        PaymentHash(*AsRef::<[u8; 32]>::as_ref(self.inner.payment_hash()))
    }

    /// The payee (explicit or recovered from the signature).
    pub fn payee(&self) -> NodePubkey {
        NodePubkey(self.inner.get_payee_pub_key().serialize())
    }

    /// The description, if given directly.
    pub fn description(&self) -> Option<String> {
        match self.inner.description() {
            Bolt11InvoiceDescriptionRef::Direct(d) => Some(d.to_string()),
            Bolt11InvoiceDescriptionRef::Hash(_) => None,
        }
    }

    /// The description hash, if the invoice commits to one instead of a description.
    pub fn description_hash(&self) -> Option<[u8; 32]> {
        match self.inner.description() {
            Bolt11InvoiceDescriptionRef::Direct(_) => None,
            Bolt11InvoiceDescriptionRef::Hash(h) => Some(*AsRef::<[u8; 32]>::as_ref(&h.0)),
        }
    }

    /// Creation time, unix seconds.
    pub fn timestamp_secs(&self) -> i64 {
        i64::try_from(self.inner.duration_since_epoch().as_secs()).unwrap_or(i64::MAX)
    }

    /// Expiry in seconds after the timestamp (default 3600).
    pub fn expiry_secs(&self) -> i64 {
        i64::try_from(self.inner.expiry_time().as_secs()).unwrap_or(i64::MAX)
    }

    /// Absolute expiry, unix seconds.
    pub fn expires_at_secs(&self) -> i64 {
        self.timestamp_secs().saturating_add(self.expiry_secs())
    }

    /// True if expired at `now_secs`.
    pub fn is_expired_at(&self, now_secs: i64) -> bool {
        now_secs >= self.expires_at_secs()
    }

    /// `min_final_cltv_expiry_delta`.
    pub fn min_final_cltv_expiry_delta(&self) -> u64 {
        self.inner.min_final_cltv_expiry_delta()
    }

    /// Payment secret (`s` field).
    pub fn payment_secret(&self) -> [u8; 32] {
        self.inner.payment_secret().0
    }

    /// Private route hints (`r` fields), outermost hop first.
    pub fn route_hints(&self) -> Vec<Vec<HopHint>> {
        self.inner
            .route_hints()
            .into_iter()
            .map(|h| {
                h.0.iter()
                    .map(|hop| HopHint {
                        node_id: NodePubkey(hop.src_node_id.serialize()),
                        short_channel_id: hop.short_channel_id,
                        fee_base_msat: hop.fees.base_msat,
                        fee_proportional_millionths: hop.fees.proportional_millionths,
                        cltv_expiry_delta: hop.cltv_expiry_delta,
                    })
                    .collect()
            })
            .collect()
    }
}

/// One hop of a BOLT11 route hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopHint {
    /// The node at the start of the channel.
    pub node_id: NodePubkey,
    /// Channel.
    pub short_channel_id: u64,
    /// Base fee.
    pub fee_base_msat: u32,
    /// Proportional fee.
    pub fee_proportional_millionths: u32,
    /// CLTV delta.
    pub cltv_expiry_delta: u16,
}

impl fmt::Debug for Bolt11 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bolt11({})", self.payment_hash().to_hex())
    }
}

impl fmt::Display for Bolt11 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A mainnet invoice from the LNPay pay-invoice docs page (1 sat, memo "Test for DOCS").
    const DOC_INVOICE: &str = "lnbc10n1p09yafzpp5ens55wl8pfm6n2222pyyxjhx9rwcj4zl8pcyhsr2qzlklke4qfvsdq423jhxapqvehhygzyfap4xxqyz5vqcqzyssp52vyh6djmjt644fygwr54cs9vv82d2zc67tmkeun3c40ypzrvqe4srzjqt0pr36g7ke9elfvaqq3wmfey6laun0z8v0lg0nf9fdhdncxsp0y5zxkp5qqnsgqqqqqqqqqqqqq05qqrc9qy9qsqq3a4p9tvmy3sf7h2mlfpd5rcdldsyaksf8e0rk09yxtzvhcyzjrsg2janexechmzaqmnz9c7de04et7jkhmvkkjdnzn3txnz2a204ucplr595s";

    #[test]
    fn parses_lnpay_doc_invoice() {
        let inv = Bolt11::parse(DOC_INVOICE).unwrap();
        assert_eq!(inv.network(), Network::Bitcoin);
        assert_eq!(inv.amount(), Some(Msat::from_sats(1).unwrap()));
        assert_eq!(
            inv.payment_hash().to_hex(),
            "cce14a3be70a77a9a94a5048434ae628dd89545f38704bc06a00bf6fdb350259"
        );
        assert_eq!(inv.description().as_deref(), Some("Test for DOCS"));
        assert!(matches!(
            inv.check_payable(Network::Regtest, inv.timestamp_secs()),
            Err(Bolt11Error::WrongNetwork { .. })
        ));
        assert_eq!(
            inv.check_payable(Network::Bitcoin, inv.expires_at_secs()),
            Err(Bolt11Error::Expired)
        );
        assert!(Bolt11::parse(&DOC_INVOICE.to_uppercase()).is_ok());
        assert!(Bolt11::parse("lnbc1garbage").is_err());
    }

    #[test]
    fn normalized_text_and_hash_hint_match_the_checked_parse() {
        let uri = format!("  LIGHTNING:{}\n", DOC_INVOICE.to_uppercase());
        let text = Bolt11::normalize(&uri);
        assert_eq!(text, DOC_INVOICE);
        let checked = Bolt11::parse(&uri).unwrap();
        assert_eq!(checked.as_str(), text);
        assert_eq!(
            Bolt11::payment_hash_hint(&text),
            Some(checked.payment_hash())
        );
        for junk in [
            "lnbc1garbage",
            "",
            "1",
            "lnbc1",
            &"q".repeat(200),
            "lnbc1ééé",
        ] {
            assert_eq!(Bolt11::payment_hash_hint(junk), None, "{junk}");
        }
        // A truncated text never reads past its end.
        for cut in 0..text.len() {
            let _ = Bolt11::payment_hash_hint(&text[..cut]);
        }
    }
}
