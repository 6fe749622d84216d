//! Access keys, their roles and permissions (LNPay spec §3).
//!
//! A key is shown to its owner exactly once; Satchel stores only its SHA-256 ([`KeyHash`]). Lookups
//! are by hash, so the secret itself is never compared byte by byte against stored material.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::ids::random_alnum;

/// The least randomness a newly generated key of any role carries.
pub const MIN_KEY_ENTROPY_BITS: f64 = 128.0;

/// What a key may do on the wallet named in the URL (LNPay RBAC permission names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read the wallet and its transaction list.
    WalletRead,
    /// Create invoices.
    WalletDeposit,
    /// Pay invoices and keysend.
    WalletWithdraw,
    /// Move money to another wallet of the account.
    WalletTransfer,
    /// Read individual transactions.
    WalletTxRead,
    /// Withdraw through public LNURL-withdraw.
    WalletPublicWithdraw,
}

impl Permission {
    /// The LNPay permission name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Permission::WalletRead => "wallet_read",
            Permission::WalletDeposit => "wallet_deposit",
            Permission::WalletWithdraw => "wallet_withdraw",
            Permission::WalletTransfer => "wallet_transfer",
            Permission::WalletTxRead => "wallet_tx_read",
            Permission::WalletPublicWithdraw => "wallet_public_withdraw",
        }
    }
}

/// The role a key was issued with. Account keys (`sak_`, `pak_`) identify an account; wallet keys
/// are bound to one wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// `sak_`: every action on every wallet of the account.
    Secret,
    /// `pak_`: identifies the account; must be paired with a wallet key in the URL.
    Public,
    /// `waka_` (legacy `wa_`): Wallet Admin.
    WalletAdmin,
    /// `waki_` (legacy `wi_`): Wallet Invoice.
    WalletInvoice,
    /// `wakr_` (legacy `wr_`): Wallet Read.
    WalletRead,
    /// `waklw_`: Wallet LNURL Withdraw.
    WalletLnurlWithdraw,
    /// `waklp_`: Wallet LNURL Pay.
    WalletLnurlPay,
    /// `wakewa_`: Wallet External Website Admin.
    WalletExternalAdmin,
    /// `wakewv_`: Wallet External Website View.
    WalletExternalView,
}

impl KeyRole {
    /// The wallet roles, in the order LNPay lists them in `access_keys`.
    pub const WALLET_ROLES: [KeyRole; 7] = [
        KeyRole::WalletAdmin,
        KeyRole::WalletInvoice,
        KeyRole::WalletRead,
        KeyRole::WalletLnurlWithdraw,
        KeyRole::WalletLnurlPay,
        KeyRole::WalletExternalAdmin,
        KeyRole::WalletExternalView,
    ];

    /// Prefix (without `_`) of newly generated keys.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyRole::Secret => "sak",
            KeyRole::Public => "pak",
            KeyRole::WalletAdmin => "waka",
            KeyRole::WalletInvoice => "waki",
            KeyRole::WalletRead => "wakr",
            KeyRole::WalletLnurlWithdraw => "waklw",
            KeyRole::WalletLnurlPay => "waklp",
            KeyRole::WalletExternalAdmin => "wakewa",
            KeyRole::WalletExternalView => "wakewv",
        }
    }

    /// Random-part length of newly generated keys, in base-62 characters (~5.95 bits each).
    ///
    /// Every role gets at least [`MIN_KEY_ENTROPY_BITS`]: a key is a bearer secret, and even the
    /// "external website" keys may withdraw (`wakewa_`), so none may be short enough to guess
    /// online. Imported LNPay keys keep their original text whatever its length.
    pub fn random_len(self) -> usize {
        match self {
            KeyRole::Secret | KeyRole::Public => 32,
            _ => 24,
        }
    }

    /// Stable code stored in the database.
    pub fn code(self) -> &'static str {
        self.prefix()
    }

    /// Inverse of [`KeyRole::code`]; also accepts the legacy codes `wa`, `wi`, `wr`.
    pub fn from_code(code: &str) -> Option<KeyRole> {
        Some(match code {
            "sak" => KeyRole::Secret,
            "pak" => KeyRole::Public,
            "waka" | "wa" => KeyRole::WalletAdmin,
            "waki" | "wi" => KeyRole::WalletInvoice,
            "wakr" | "wr" => KeyRole::WalletRead,
            "waklw" => KeyRole::WalletLnurlWithdraw,
            "waklp" => KeyRole::WalletLnurlPay,
            "wakewa" => KeyRole::WalletExternalAdmin,
            "wakewv" => KeyRole::WalletExternalView,
            _ => return None,
        })
    }

    /// The role implied by a key's prefix (`waka_x` -> Wallet Admin, legacy `wa_x` too).
    pub fn from_key(key: &str) -> Option<KeyRole> {
        let (prefix, rest) = key.split_once('_')?;
        if rest.is_empty() {
            return None;
        }
        KeyRole::from_code(prefix)
    }

    /// The role name LNPay uses as the `access_keys` map key.
    pub fn display_name(self) -> &'static str {
        match self {
            KeyRole::Secret => "Secret API Key",
            KeyRole::Public => "Public API Key",
            KeyRole::WalletAdmin => "Wallet Admin",
            KeyRole::WalletInvoice => "Wallet Invoice",
            KeyRole::WalletRead => "Wallet Read",
            KeyRole::WalletLnurlWithdraw => "Wallet LNURL Withdraw",
            KeyRole::WalletLnurlPay => "Wallet LNURL Pay",
            KeyRole::WalletExternalAdmin => "Wallet External Website Admin",
            KeyRole::WalletExternalView => "Wallet External Website View",
        }
    }

    /// True for keys bound to a wallet.
    pub fn is_wallet_key(self) -> bool {
        !matches!(self, KeyRole::Secret | KeyRole::Public)
    }

    /// Whether the role carries a permission (LNPay §3.2 table, including migration m200127
    /// which removed `wallet_read` from Wallet Invoice).
    pub fn has(self, p: Permission) -> bool {
        use Permission as P;
        match self {
            KeyRole::Secret => true,
            KeyRole::Public => false,
            KeyRole::WalletAdmin => matches!(
                p,
                P::WalletRead
                    | P::WalletDeposit
                    | P::WalletWithdraw
                    | P::WalletTransfer
                    | P::WalletTxRead
            ),
            KeyRole::WalletInvoice => matches!(p, P::WalletDeposit | P::WalletTxRead),
            KeyRole::WalletRead => matches!(p, P::WalletRead | P::WalletTxRead),
            KeyRole::WalletLnurlWithdraw => {
                matches!(
                    p,
                    P::WalletWithdraw | P::WalletRead | P::WalletPublicWithdraw
                )
            }
            KeyRole::WalletLnurlPay => matches!(p, P::WalletDeposit),
            KeyRole::WalletExternalAdmin => {
                matches!(
                    p,
                    P::WalletDeposit | P::WalletWithdraw | P::WalletRead | P::WalletTxRead
                )
            }
            KeyRole::WalletExternalView => matches!(p, P::WalletRead | P::WalletTxRead),
        }
    }
}

/// SHA-256 of a key's full text. This is all Satchel stores about a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes key text as presented by a client.
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// Lowercase hex, as stored.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// A freshly generated key. Its text leaves the process once (in a response or on the console)
/// and is never logged: `Debug` is redacted.
#[derive(Clone)]
pub struct ApiKeySecret {
    role: KeyRole,
    text: String,
}

impl ApiKeySecret {
    /// Generates a new random key for a role: prefix, `_`, then [`KeyRole::random_len`]
    /// alphanumeric characters drawn uniformly from the thread-local CSPRNG (ChaCha, seeded and
    /// reseeded from the OS).
    pub fn generate(role: KeyRole) -> ApiKeySecret {
        ApiKeySecret {
            role,
            text: format!("{}_{}", role.prefix(), random_alnum(role.random_len())),
        }
    }

    /// Wraps an existing key text (for importing legacy data). Errors if the prefix is unknown.
    pub fn import(text: &str) -> Option<ApiKeySecret> {
        let role = KeyRole::from_key(text)?;
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        Some(ApiKeySecret {
            role,
            text: text.to_owned(),
        })
    }

    /// The role.
    pub fn role(&self) -> KeyRole {
        self.role
    }

    /// The key text, to show to its owner.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The hash to store.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.text)
    }

    /// The part before the first `_` (for LNPay's permission error message).
    pub fn prefix(&self) -> &str {
        self.text.split('_').next().unwrap_or("")
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}_…)", self.role.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats() {
        let k = ApiKeySecret::generate(KeyRole::Secret);
        assert!(k.expose().starts_with("sak_"));
        assert_eq!(k.expose().len(), 36);
        let k = ApiKeySecret::generate(KeyRole::WalletAdmin);
        assert_eq!(k.expose().len(), 5 + 24);
        assert_eq!(KeyRole::from_key(k.expose()), Some(KeyRole::WalletAdmin));
        assert_eq!(
            KeyRole::from_key("wa_Opnn4kGOGBMnfCLFXtsDnjTb"),
            Some(KeyRole::WalletAdmin)
        );
        assert_eq!(KeyRole::from_key("wal_abc"), None);
        assert!(!format!("{k:?}").contains(&k.expose()[5..]));
    }

    #[test]
    fn every_generated_key_carries_at_least_128_bits() {
        let all = [
            &[KeyRole::Secret, KeyRole::Public][..],
            &KeyRole::WALLET_ROLES[..],
        ]
        .concat();
        assert_eq!(all.len(), 9);
        let mut seen = std::collections::HashSet::new();
        for role in all {
            for _ in 0..200 {
                let k = ApiKeySecret::generate(role);
                let text = k.expose();
                let random = text
                    .strip_prefix(role.prefix())
                    .and_then(|r| r.strip_prefix('_'))
                    .unwrap();
                assert_eq!(random.len(), role.random_len(), "{role:?}");
                assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()), "{text}");
                let bits = random.len() as f64 * 62f64.log2();
                assert!(bits >= MIN_KEY_ENTROPY_BITS, "{role:?}: {bits} bits");
                assert_eq!(KeyRole::from_key(text), Some(role));
                assert!(seen.insert(text.to_owned()), "duplicate key {text}");
            }
        }
        // The newly long external keys round-trip through import, and short imported LNPay
        // keys keep their text.
        let long = ApiKeySecret::generate(KeyRole::WalletExternalAdmin);
        let imported = ApiKeySecret::import(long.expose()).unwrap();
        assert_eq!(imported.hash(), long.hash());
        let legacy = ApiKeySecret::import("wakewa_Ab3dEf9h").unwrap();
        assert_eq!(legacy.expose(), "wakewa_Ab3dEf9h");
        assert_eq!(legacy.role(), KeyRole::WalletExternalAdmin);
    }

    #[test]
    fn permission_matrix_of_section_3_5() {
        use Permission::*;
        assert!(!KeyRole::WalletInvoice.has(WalletRead));
        assert!(KeyRole::WalletInvoice.has(WalletDeposit));
        assert!(KeyRole::WalletLnurlWithdraw.has(WalletWithdraw));
        assert!(!KeyRole::WalletLnurlWithdraw.has(WalletTransfer));
        assert!(KeyRole::WalletAdmin.has(WalletTransfer));
        assert!(!KeyRole::WalletRead.has(WalletDeposit));
        assert!(KeyRole::WalletLnurlPay.has(WalletDeposit));
        assert!(!KeyRole::WalletLnurlPay.has(WalletRead));
    }
}
