//! Satchel's own records next to LDK's state: our invoices (hash → preimage, state), outgoing
//! payments (hash → state), the incoming event log, held payments and known peers. Each record
//! is one small JSON value in the node's record log ([`crate::journal`]), durable before the
//! action it allows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, ErrorKind};
use std::path::Path;
use std::sync::Arc;

use lightning::util::persist::KVStoreSync;
use lightning_persister::fs_store::FilesystemStore;
use satchel_domain::{CustomRecords, FailureReason, Msat, PaymentHash, Preimage};
use satchel_lightning::{IncomingEvent, IncomingKind, PayOutcome};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::journal::{Journal, Records, Ticket, write_snapshot};

use crate::support::std_io;

/// Namespace older versions kept Satchel's records under in LDK's store (one file each); they
/// are moved into the record log on first open.
const NS: &str = "satchel";
/// The record log's file name in the node's data directory.
const RECORDS_LOG: &str = "records.log";
pub(crate) const INVOICES: &str = "invoices";
pub(crate) const PAYMENTS: &str = "payments";
pub(crate) const EVENTS: &str = "events";
pub(crate) const HELD: &str = "held";
pub(crate) const PEERS: &str = "peers";

/// State of one of our invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum InvState {
    Open,
    /// We asked LDK to claim it; `PaymentClaimed` will settle it.
    Claiming,
    Settled {
        amount_msat: u64,
        settled_at: i64,
    },
    Canceled,
}

/// One of our invoices, as the node needs it to claim or refuse payments. (Older versions also
/// stored the invoice text; it is ignored when read.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InvoiceRec {
    pub(crate) preimage: String,
    pub(crate) amount_msat: Option<u64>,
    pub(crate) expires_at: i64,
    pub(crate) state: InvState,
}

impl InvoiceRec {
    pub(crate) fn preimage(&self) -> Option<Preimage> {
        Preimage::from_hex(&self.preimage)
    }
}

/// State of an outgoing payment hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum PayState {
    InFlight,
    Succeeded { preimage: String, fee_msat: u64 },
    Failed { reason: String },
}

impl PayState {
    pub(crate) fn failed(reason: FailureReason) -> PayState {
        PayState::Failed {
            reason: reason.lnd_name().to_owned(),
        }
    }

    pub(crate) fn outcome(&self) -> PayOutcome {
        match self {
            PayState::InFlight => PayOutcome::InFlight,
            PayState::Succeeded { preimage, fee_msat } => {
                match (Preimage::from_hex(preimage), Msat::from_msat(*fee_msat)) {
                    (Some(preimage), Ok(fee)) => PayOutcome::Succeeded { preimage, fee },
                    // A record we cannot read back is no proof of anything.
                    _ => PayOutcome::InFlight,
                }
            }
            PayState::Failed { reason } => PayOutcome::Failed(
                FailureReason::from_lnd_name(reason).unwrap_or(FailureReason::Error),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PaymentRec {
    pub(crate) state: PayState,
    /// How many times this hash was handed to LDK.
    pub(crate) sends: u32,
    pub(crate) amount_msat: u64,
    pub(crate) fee_limit_msat: u64,
    pub(crate) keysend: bool,
    pub(crate) updated_at: i64,
}

/// An incoming event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum EventRec {
    InvoiceSettled {
        seq: u64,
        payment_hash: String,
        amount_msat: u64,
        settled_at: i64,
    },
    KeysendReceived {
        seq: u64,
        payment_hash: String,
        preimage: String,
        amount_msat: u64,
        /// type → hex value
        #[serde(with = "tlv_map")]
        custom_records: BTreeMap<u64, String>,
        settled_at: i64,
    },
}

impl EventRec {
    pub(crate) fn from_event(e: &IncomingEvent) -> EventRec {
        match &e.kind {
            IncomingKind::InvoiceSettled {
                payment_hash,
                amount_received,
                settled_at_secs,
            } => EventRec::InvoiceSettled {
                seq: e.seq,
                payment_hash: payment_hash.to_hex(),
                amount_msat: amount_received.as_msat(),
                settled_at: *settled_at_secs,
            },
            IncomingKind::KeysendReceived {
                payment_hash,
                preimage,
                amount_received,
                custom_records,
                settled_at_secs,
            } => EventRec::KeysendReceived {
                seq: e.seq,
                payment_hash: payment_hash.to_hex(),
                preimage: preimage.to_hex(),
                amount_msat: amount_received.as_msat(),
                custom_records: custom_records
                    .0
                    .iter()
                    .map(|(t, v)| (*t, hex::encode(v)))
                    .collect(),
                settled_at: *settled_at_secs,
            },
        }
    }

    pub(crate) fn to_event(&self) -> Result<IncomingEvent, String> {
        let bad = |what: &str| format!("bad {what} in stored event");
        match self {
            EventRec::InvoiceSettled {
                seq,
                payment_hash,
                amount_msat,
                settled_at,
            } => Ok(IncomingEvent {
                seq: *seq,
                kind: IncomingKind::InvoiceSettled {
                    payment_hash: PaymentHash::from_hex(payment_hash).ok_or_else(|| bad("hash"))?,
                    amount_received: Msat::from_msat(*amount_msat).map_err(|_| bad("amount"))?,
                    settled_at_secs: *settled_at,
                },
            }),
            EventRec::KeysendReceived {
                seq,
                payment_hash,
                preimage,
                amount_msat,
                custom_records,
                settled_at,
            } => {
                let mut records = CustomRecords::default();
                for (t, v) in custom_records {
                    records
                        .0
                        .insert(*t, hex::decode(v).map_err(|_| bad("record"))?);
                }
                Ok(IncomingEvent {
                    seq: *seq,
                    kind: IncomingKind::KeysendReceived {
                        payment_hash: PaymentHash::from_hex(payment_hash)
                            .ok_or_else(|| bad("hash"))?,
                        preimage: Preimage::from_hex(preimage).ok_or_else(|| bad("preimage"))?,
                        amount_received: Msat::from_msat(*amount_msat)
                            .map_err(|_| bad("amount"))?,
                        custom_records: records,
                        settled_at_secs: *settled_at,
                    },
                })
            }
        }
    }
}

/// Custom records as stored: TLV type → hex value, a JSON object. JSON object keys are strings,
/// so serde_json writes the `u64` types as decimal strings (`{"696969":"77616c5f…"}`), as every
/// version did. Reading them back with a plain `BTreeMap<u64, _>` fails wherever serde buffers
/// the object first: inside the internally tagged [`EventRec`] (`#[serde(tag = "kind")]`) a
/// string key does not deserialize as `u64`, so a node that had received one keysend with
/// custom records could not start again. Keys are therefore read as strings *or* integers; a
/// string must be the canonical decimal form, so two spellings of one type cannot collide.
mod tlv_map {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::{Deserialize, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        records: &BTreeMap<u64, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        records.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u64, String>, D::Error> {
        let raw = BTreeMap::<TlvType, String>::deserialize(d)?;
        Ok(raw.into_iter().map(|(t, v)| (t.0, v)).collect())
    }

    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct TlvType(u64);

    impl<'de> Deserialize<'de> for TlvType {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TlvType, D::Error> {
            // `deserialize_any`: a buffered key only answers to what it is (a string here).
            d.deserialize_any(TlvTypeVisitor)
        }
    }

    struct TlvTypeVisitor;

    impl Visitor<'_> for TlvTypeVisitor {
        type Value = TlvType;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a TLV type (u64, as a decimal string or an integer)")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<TlvType, E> {
            Ok(TlvType(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<TlvType, E> {
            u64::try_from(v)
                .map(TlvType)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<TlvType, E> {
            match v.parse::<u64>() {
                Ok(t) if t.to_string() == v => Ok(TlvType(t)),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
}

/// A payment LDK holds for us, neither claimed nor failed (test hook: held payments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeldRec {
    pub(crate) amount_msat: u64,
    /// Set for keysends (the sender's preimage); invoices use the invoice's record.
    pub(crate) keysend_preimage: Option<String>,
    /// type → hex value
    #[serde(with = "tlv_map")]
    pub(crate) custom_records: BTreeMap<u64, String>,
}

/// A peer we connect to (and reconnect to after restarts or disconnections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerRec {
    pub(crate) addr: String,
}

/// Everything above, in memory.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) invoices: HashMap<PaymentHash, InvoiceRec>,
    pub(crate) payments: HashMap<PaymentHash, PaymentRec>,
    pub(crate) events: Vec<IncomingEvent>,
    pub(crate) event_hashes: HashSet<PaymentHash>,
    pub(crate) held: HashMap<PaymentHash, HeldRec>,
    pub(crate) peers: HashMap<String, PeerRec>,
}

impl State {
    pub(crate) fn next_seq(&self) -> u64 {
        self.events.last().map_or(1, |e| e.seq.saturating_add(1))
    }
}

/// Typed access to Satchel's records: an append-only, group-committed [`Journal`] in the node's
/// data directory (`records.log`).
#[derive(Clone)]
pub(crate) struct Kv {
    pub(crate) journal: Arc<Journal>,
}

pub(crate) fn event_key(seq: u64) -> String {
    format!("{seq:020}")
}

/// Every section of Satchel's records.
const SECTIONS: [&str; 5] = [INVOICES, PAYMENTS, EVENTS, HELD, PEERS];

impl Kv {
    /// Opens the record log in `dir`, importing records an older version kept as one file each in
    /// LDK's store (they are removed once the log holding them is durable). Returns the records.
    pub(crate) fn open(dir: &Path, legacy: &FilesystemStore) -> io::Result<(Kv, State)> {
        let path = dir.join(RECORDS_LOG);
        let fresh = !path.exists();
        let (journal, mut records) = Journal::open(&path)?;
        if fresh {
            let mut imported = Vec::new();
            for section in SECTIONS {
                for key in KVStoreSync::list(legacy, NS, section).map_err(std_io)? {
                    let buf = KVStoreSync::read(legacy, NS, section, &key).map_err(std_io)?;
                    let value: Value = serde_json::from_slice(&buf).map_err(|e| {
                        io::Error::new(ErrorKind::InvalidData, format!("{NS}/{section}/{key}: {e}"))
                    })?;
                    imported.push((section, key.clone()));
                    records
                        .entry(section.to_owned())
                        .or_default()
                        .insert(key, value);
                }
            }
            if !imported.is_empty() {
                write_snapshot(&path, &records)?;
                let (reopened, _) = Journal::open(&path)?;
                tracing::info!(
                    records = imported.len(),
                    "moved node records into the record log"
                );
                for (section, key) in imported {
                    KVStoreSync::remove(legacy, NS, section, &key, false).map_err(std_io)?;
                }
                let kv = Kv { journal: reopened };
                return Ok((kv, State::from_records(&records)?));
            }
        }
        Ok((Kv { journal }, State::from_records(&records)?))
    }

    /// Writes a record and waits until it is durable.
    pub(crate) fn put<T: Serialize>(&self, section: &str, key: &str, value: &T) -> io::Result<()> {
        self.journal.write(section, key, Some(value))
    }

    /// Appends a record without waiting; the caller waits on the ticket (outside its locks)
    /// before acting on the write.
    pub(crate) fn put_later<T: Serialize>(
        &self,
        section: &str,
        key: &str,
        value: &T,
    ) -> io::Result<Ticket> {
        self.journal.append(section, key, Some(value))
    }

    /// [`Kv::put_later`] for several records of one section, in one write.
    pub(crate) fn put_many_later<T: Serialize>(
        &self,
        section: &str,
        items: &[(String, &T)],
    ) -> io::Result<Ticket> {
        let items: Vec<(&str, Option<&T>)> =
            items.iter().map(|(k, v)| (k.as_str(), Some(*v))).collect();
        self.journal.append_many(section, &items)
    }

    /// Removes a record and waits until the removal is durable.
    pub(crate) fn remove(&self, section: &str, key: &str) -> io::Result<()> {
        self.journal.write::<()>(section, key, None)
    }
}

fn typed<T: DeserializeOwned>(records: &Records, section: &str) -> io::Result<Vec<(String, T)>> {
    let Some(entries) = records.get(section) else {
        return Ok(Vec::new());
    };
    entries
        .iter()
        .map(|(key, value)| {
            T::deserialize(value)
                .map(|v| (key.clone(), v))
                .map_err(|e| {
                    io::Error::new(ErrorKind::InvalidData, format!("{section}/{key}: {e}"))
                })
        })
        .collect()
}

impl State {
    /// Builds the in-memory state from the replayed records.
    fn from_records(records: &Records) -> io::Result<State> {
        let bad = |what: String| io::Error::new(ErrorKind::InvalidData, what);
        let mut st = State::default();
        for (key, rec) in typed::<InvoiceRec>(records, INVOICES)? {
            let hash =
                PaymentHash::from_hex(&key).ok_or_else(|| bad(format!("invoice key {key}")))?;
            st.invoices.insert(hash, rec);
        }
        for (key, rec) in typed::<PaymentRec>(records, PAYMENTS)? {
            let hash =
                PaymentHash::from_hex(&key).ok_or_else(|| bad(format!("payment key {key}")))?;
            st.payments.insert(hash, rec);
        }
        for (key, rec) in typed::<HeldRec>(records, HELD)? {
            let hash = PaymentHash::from_hex(&key).ok_or_else(|| bad(format!("held key {key}")))?;
            st.held.insert(hash, rec);
        }
        for (key, rec) in typed::<PeerRec>(records, PEERS)? {
            st.peers.insert(key, rec);
        }
        let mut events = Vec::new();
        for (_, rec) in typed::<EventRec>(records, EVENTS)? {
            events.push(rec.to_event().map_err(bad)?);
        }
        events.sort_by_key(|e| e.seq);
        for e in &events {
            let hash = match &e.kind {
                IncomingKind::InvoiceSettled { payment_hash, .. }
                | IncomingKind::KeysendReceived { payment_hash, .. } => *payment_hash,
            };
            st.event_hashes.insert(hash);
        }
        st.events = events;
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn invoice(state: InvState) -> InvoiceRec {
        InvoiceRec {
            preimage: "11".repeat(32),
            amount_msat: Some(1000),
            expires_at: 4_000_000_000,
            state,
        }
    }

    /// Records an older version kept one file each in LDK's store move into the record log
    /// once, and the files are removed only after the log holding them is written.
    #[test]
    fn legacy_records_are_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = FilesystemStore::new(dir.path().join("kv"));
        let hash = Preimage([0x11; 32]).hash();
        // As older versions wrote it, with the invoice text.
        let mut json = serde_json::to_value(invoice(InvState::Open)).unwrap();
        json["bolt11"] = "lnbcrt1dummy".into();
        let buf = serde_json::to_vec(&json).unwrap();
        KVStoreSync::write(&legacy, NS, INVOICES, &hash.to_hex(), buf).unwrap();
        let peer = serde_json::to_vec(&PeerRec {
            addr: "127.0.0.1:9735".into(),
        })
        .unwrap();
        KVStoreSync::write(&legacy, NS, PEERS, "02aa", peer).unwrap();

        let (kv, st) = Kv::open(dir.path(), &legacy).unwrap();
        assert_eq!(st.invoices[&hash].state, InvState::Open);
        assert_eq!(st.peers["02aa"].addr, "127.0.0.1:9735");
        assert!(KVStoreSync::list(&legacy, NS, INVOICES).unwrap().is_empty());

        // Later writes go to the log and survive a reopen; nothing is imported twice.
        kv.put(INVOICES, &hash.to_hex(), &invoice(InvState::Canceled))
            .unwrap();
        drop(kv);
        let (_, st) = Kv::open(dir.path(), &legacy).unwrap();
        assert_eq!(st.invoices[&hash].state, InvState::Canceled);
        assert_eq!(st.peers.len(), 1);
    }

    const H1: &str = "02d449a31fbb267c8f352e9968a79e3e5fc95c1bbeaa502fd6454ebde5a4bedc";
    const P1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "9f72ea0cf49536e3c66c787f705186df9a4378083753ae9536d65b3ad7fcddc4";
    const P2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const H3: &str = "deb0e38ced1e41de6f92e70e80c418d2d356afaaa99e26f5939dbc7d3ef4772a";
    const P3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    /// A `records.log` byte for byte as the previous version wrote it, after a Podcasting 2.0
    /// boost (696969 = wallet, 7629169 = JSON), a keysend with odd and even types and the
    /// largest type, a held keysend with records, an invoice, a payment and a peer. The map
    /// keys are strings: that is how serde_json writes `u64` keys.
    fn old_log() -> String {
        [
            format!(
                r#"{{"s":"events","k":"00000000000000000001","v":{{"kind":"keysend_received","seq":1,"payment_hash":"{H1}","preimage":"{P1}","amount_msat":21000,"custom_records":{{"696969":"77616c5f334b71397a546d50","7629169":"7b22706f6463617374223a2278227d"}},"settled_at":1765000000}}}}"#
            ),
            format!(
                r#"{{"s":"events","k":"00000000000000000002","v":{{"kind":"invoice_settled","seq":2,"payment_hash":"{H3}","amount_msat":1000000,"settled_at":1765000001}}}}"#
            ),
            format!(
                r#"{{"s":"events","k":"00000000000000000003","v":{{"kind":"keysend_received","seq":3,"payment_hash":"{H2}","preimage":"{P2}","amount_msat":5000,"custom_records":{{"65537":"6f6464","65538":"6576656e","18446744073709551615":""}},"settled_at":1765000002}}}}"#
            ),
            format!(
                r#"{{"s":"held","k":"{H2}","v":{{"amount_msat":5000,"keysend_preimage":"{P2}","custom_records":{{"65537":"6f6464","65538":"6576656e"}}}}}}"#
            ),
            format!(
                r#"{{"s":"invoices","k":"{H3}","v":{{"preimage":"{P3}","amount_msat":1000000,"expires_at":1765003600,"state":{{"state":"settled","amount_msat":1000000,"settled_at":1765000001}}}}}}"#
            ),
            format!(
                r#"{{"s":"payments","k":"{H1}","v":{{"state":{{"state":"succeeded","preimage":"{P1}","fee_msat":1100}},"sends":1,"amount_msat":100000,"fee_limit_msat":10000,"keysend":true,"updated_at":1765000003}}}}"#
            ),
            r#"{"s":"peers","k":"02aa","v":{"addr":"127.0.0.1:9735"}}"#.to_owned(),
        ]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect()
    }

    fn recs(pairs: &[(u64, &[u8])]) -> CustomRecords {
        CustomRecords(pairs.iter().map(|(t, v)| (*t, v.to_vec())).collect())
    }

    fn hash(hex: &str) -> PaymentHash {
        PaymentHash::from_hex(hex).unwrap()
    }

    fn preimage(hex: &str) -> Preimage {
        Preimage::from_hex(hex).unwrap()
    }

    /// What [`old_log`] holds, as the node must see it.
    fn check_old_state(st: &State) {
        let boost = recs(&[
            (696_969, b"wal_3Kq9zTmP"),
            (7_629_169, br#"{"podcast":"x"}"#),
        ]);
        let odd_even = recs(&[(65_537, b"odd"), (65_538, b"even"), (u64::MAX, b"")]);
        let want = vec![
            IncomingEvent {
                seq: 1,
                kind: IncomingKind::KeysendReceived {
                    payment_hash: hash(H1),
                    preimage: preimage(P1),
                    amount_received: Msat::from_msat(21_000).unwrap(),
                    custom_records: boost,
                    settled_at_secs: 1_765_000_000,
                },
            },
            IncomingEvent {
                seq: 2,
                kind: IncomingKind::InvoiceSettled {
                    payment_hash: hash(H3),
                    amount_received: Msat::from_msat(1_000_000).unwrap(),
                    settled_at_secs: 1_765_000_001,
                },
            },
            IncomingEvent {
                seq: 3,
                kind: IncomingKind::KeysendReceived {
                    payment_hash: hash(H2),
                    preimage: preimage(P2),
                    amount_received: Msat::from_msat(5_000).unwrap(),
                    custom_records: odd_even,
                    settled_at_secs: 1_765_000_002,
                },
            },
        ];
        assert_eq!(st.events, want);
        assert_eq!(st.event_hashes.len(), 3);
        assert_eq!(st.next_seq(), 4);
        assert_eq!(
            st.held[&hash(H2)],
            HeldRec {
                amount_msat: 5000,
                keysend_preimage: Some(P2.to_owned()),
                custom_records: [
                    (65_537, "6f6464".to_owned()),
                    (65_538, "6576656e".to_owned())
                ]
                .into_iter()
                .collect(),
            }
        );
        assert_eq!(
            st.invoices[&hash(H3)],
            InvoiceRec {
                preimage: P3.to_owned(),
                amount_msat: Some(1_000_000),
                expires_at: 1_765_003_600,
                state: InvState::Settled {
                    amount_msat: 1_000_000,
                    settled_at: 1_765_000_001
                },
            }
        );
        assert_eq!(
            st.payments[&hash(H1)],
            PaymentRec {
                state: PayState::Succeeded {
                    preimage: P1.to_owned(),
                    fee_msat: 1100
                },
                sends: 1,
                amount_msat: 100_000,
                fee_limit_msat: 10_000,
                keysend: true,
                updated_at: 1_765_000_003,
            }
        );
        assert_eq!(st.peers["02aa"].addr, "127.0.0.1:9735");
    }

    /// The crash-on-restart bug: a log the previous version wrote after receiving keysends with
    /// custom records opens with every record intact, keeps working, and this version writes
    /// the same records in the same bytes (the format did not change, only the reading).
    #[test]
    fn a_log_written_by_the_previous_version_opens_with_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = FilesystemStore::new(dir.path().join("kv"));
        std::fs::write(dir.path().join(RECORDS_LOG), old_log()).unwrap();

        let (kv, st) = Kv::open(dir.path(), &legacy).unwrap();
        check_old_state(&st);
        // It keeps accepting writes, and reopens again.
        let next = IncomingEvent {
            seq: st.next_seq(),
            kind: IncomingKind::KeysendReceived {
                payment_hash: Preimage([0x44; 32]).hash(),
                preimage: Preimage([0x44; 32]),
                amount_received: Msat::from_msat(7_000).unwrap(),
                custom_records: recs(&[(34_349_334, b"hi")]),
                settled_at_secs: 1_765_000_010,
            },
        };
        kv.put(EVENTS, &event_key(next.seq), &EventRec::from_event(&next))
            .unwrap();
        drop(kv);
        let (_, mut again) = Kv::open(dir.path(), &legacy).unwrap();
        assert_eq!(again.events.pop(), Some(next));
        assert!(again.event_hashes.remove(&Preimage([0x44; 32]).hash()));
        check_old_state(&again);

        // The same records written by this version: the same bytes.
        let fresh = tempfile::tempdir().unwrap();
        let fresh_legacy = FilesystemStore::new(fresh.path().join("kv"));
        let (kv, _) = Kv::open(fresh.path(), &fresh_legacy).unwrap();
        for e in &st.events {
            kv.put(EVENTS, &event_key(e.seq), &EventRec::from_event(e))
                .unwrap();
        }
        kv.put(HELD, H2, &st.held[&hash(H2)]).unwrap();
        kv.put(INVOICES, H3, &st.invoices[&hash(H3)]).unwrap();
        kv.put(PAYMENTS, H1, &st.payments[&hash(H1)]).unwrap();
        kv.put(PEERS, "02aa", &st.peers["02aa"]).unwrap();
        drop(kv);
        assert_eq!(
            std::fs::read_to_string(fresh.path().join(RECORDS_LOG)).unwrap(),
            old_log()
        );
    }

    /// Records the version before the log kept as one file each (LDK's store) with custom
    /// records: imported with nothing lost.
    #[test]
    fn legacy_record_files_with_custom_records_are_imported() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = FilesystemStore::new(dir.path().join("kv"));
        for line in old_log().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let buf = serde_json::to_vec(&v["v"]).unwrap();
            let (s, k) = (v["s"].as_str().unwrap(), v["k"].as_str().unwrap());
            KVStoreSync::write(&legacy, NS, s, k, buf).unwrap();
        }
        let (_, st) = Kv::open(dir.path(), &legacy).unwrap();
        check_old_state(&st);
        let (_, st) = Kv::open(dir.path(), &legacy).unwrap();
        check_old_state(&st);
    }

    /// TLV types read back from either spelling; a non-canonical or negative one is refused
    /// rather than silently merged with another.
    #[test]
    fn tlv_types_read_from_strings_or_integers_only_canonical() {
        let read = |json: &str| serde_json::from_str::<HeldRec>(json);
        let held = |records: &str| {
            format!(r#"{{"amount_msat":1,"keysend_preimage":null,"custom_records":{records}}}"#)
        };
        let ok = read(&held(r#"{"65537":"00","18446744073709551615":"ff"}"#)).unwrap();
        assert_eq!(
            ok.custom_records.keys().copied().collect::<Vec<_>>(),
            [65_537, u64::MAX]
        );
        for bad in [
            r#"{"065537":"00"}"#,
            r#"{"+65537":"00"}"#,
            r#"{" 65537":"00"}"#,
            r#"{"-1":"00"}"#,
            r#"{"18446744073709551616":"00"}"#,
            r#"{"x":"00"}"#,
        ] {
            assert!(read(&held(bad)).is_err(), "{bad}");
        }
        // Through the internally tagged event (the path that failed).
        let v: Value = serde_json::from_str(old_log().lines().next().unwrap()).unwrap();
        let e = EventRec::deserialize(&v["v"]).unwrap();
        assert!(
            matches!(e, EventRec::KeysendReceived { ref custom_records, .. } if custom_records.len() == 2)
        );
    }

    mod props {
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;
        use satchel_domain::money::MAX_MSAT;

        use super::super::*;

        fn hash() -> impl Strategy<Value = PaymentHash> {
            any::<[u8; 32]>().prop_map(PaymentHash)
        }

        fn inv_state() -> impl Strategy<Value = InvState> {
            prop_oneof![
                Just(InvState::Open),
                Just(InvState::Claiming),
                (any::<u64>(), any::<i64>()).prop_map(|(amount_msat, settled_at)| {
                    InvState::Settled {
                        amount_msat,
                        settled_at,
                    }
                }),
                Just(InvState::Canceled),
            ]
        }

        fn invoice() -> impl Strategy<Value = InvoiceRec> {
            (
                any::<String>(),
                any::<Option<u64>>(),
                any::<i64>(),
                inv_state(),
            )
                .prop_map(|(preimage, amount_msat, expires_at, state)| InvoiceRec {
                    preimage,
                    amount_msat,
                    expires_at,
                    state,
                })
        }

        fn pay_state() -> impl Strategy<Value = PayState> {
            prop_oneof![
                Just(PayState::InFlight),
                (any::<String>(), any::<u64>())
                    .prop_map(|(preimage, fee_msat)| PayState::Succeeded { preimage, fee_msat }),
                any::<String>().prop_map(|reason| PayState::Failed { reason }),
            ]
        }

        fn payment() -> impl Strategy<Value = PaymentRec> {
            (
                pay_state(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                any::<i64>(),
            )
                .prop_map(
                    |(state, sends, amount_msat, fee_limit_msat, keysend, updated_at)| PaymentRec {
                        state,
                        sends,
                        amount_msat,
                        fee_limit_msat,
                        keysend,
                        updated_at,
                    },
                )
        }

        fn held() -> impl Strategy<Value = HeldRec> {
            (
                any::<u64>(),
                any::<Option<String>>(),
                btree_map(any::<u64>(), any::<String>(), 0..6),
            )
                .prop_map(|(amount_msat, keysend_preimage, custom_records)| HeldRec {
                    amount_msat,
                    keysend_preimage,
                    custom_records,
                })
        }

        fn custom_records() -> impl Strategy<Value = CustomRecords> {
            btree_map(any::<u64>(), vec(any::<u8>(), 0..40), 0..6).prop_map(CustomRecords)
        }

        fn event_kind() -> impl Strategy<Value = IncomingKind> {
            prop_oneof![
                (hash(), 0..=MAX_MSAT, any::<i64>()).prop_map(|(payment_hash, a, settled)| {
                    IncomingKind::InvoiceSettled {
                        payment_hash,
                        amount_received: Msat::from_msat(a).unwrap_or(Msat::ZERO),
                        settled_at_secs: settled,
                    }
                }),
                (
                    hash(),
                    any::<[u8; 32]>(),
                    0..=MAX_MSAT,
                    custom_records(),
                    any::<i64>()
                )
                    .prop_map(|(payment_hash, p, a, custom_records, settled)| {
                        IncomingKind::KeysendReceived {
                            payment_hash,
                            preimage: Preimage(p),
                            amount_received: Msat::from_msat(a).unwrap_or(Msat::ZERO),
                            custom_records,
                            settled_at_secs: settled,
                        }
                    }),
            ]
        }

        fn event_hash(e: &IncomingEvent) -> PaymentHash {
            match &e.kind {
                IncomingKind::InvoiceSettled { payment_hash, .. }
                | IncomingKind::KeysendReceived { payment_hash, .. } => *payment_hash,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// Every record type the node keeps comes back equal after being written to the
            /// log and the log reopened (twice: the second open replays what the first kept),
            /// for arbitrary values: any TLV type, any string (quotes, newlines, non-ASCII).
            #[test]
            fn every_record_type_round_trips_through_the_log(
                invoices in btree_map(hash(), invoice(), 0..4),
                payments in btree_map(hash(), payment(), 0..4),
                held in btree_map(hash(), held(), 0..4),
                peers in btree_map(any::<String>(), any::<String>(), 0..3),
                events in btree_map(any::<u64>(), event_kind(), 0..5),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let legacy = FilesystemStore::new(dir.path().join("kv"));
                let events: Vec<IncomingEvent> = events
                    .into_iter()
                    .map(|(seq, kind)| IncomingEvent { seq, kind })
                    .collect();
                {
                    let (kv, _) = Kv::open(dir.path(), &legacy).unwrap();
                    // The ways the node writes: one at a time, or a batch it waits on later.
                    let batch: Vec<(String, &InvoiceRec)> =
                        invoices.iter().map(|(h, r)| (h.to_hex(), r)).collect();
                    let ticket = kv.put_many_later(INVOICES, &batch).unwrap();
                    kv.journal.wait(ticket).unwrap();
                    for (h, r) in &payments {
                        let t = kv.put_later(PAYMENTS, &h.to_hex(), r).unwrap();
                        kv.journal.wait(t).unwrap();
                    }
                    for (h, r) in &held {
                        kv.put(HELD, &h.to_hex(), r).unwrap();
                    }
                    for (k, addr) in &peers {
                        kv.put(PEERS, k, &PeerRec { addr: addr.clone() }).unwrap();
                    }
                    for e in &events {
                        kv.put(EVENTS, &event_key(e.seq), &EventRec::from_event(e)).unwrap();
                    }
                }
                for _ in 0..2 {
                    let (_, st) = Kv::open(dir.path(), &legacy).unwrap();
                    prop_assert_eq!(
                        st.invoices.iter().map(|(h, r)| (*h, r.clone())).collect::<BTreeMap<_, _>>(),
                        invoices.clone()
                    );
                    prop_assert_eq!(
                        st.payments.iter().map(|(h, r)| (*h, r.clone())).collect::<BTreeMap<_, _>>(),
                        payments.clone()
                    );
                    prop_assert_eq!(
                        st.held.iter().map(|(h, r)| (*h, r.clone())).collect::<BTreeMap<_, _>>(),
                        held.clone()
                    );
                    prop_assert_eq!(
                        st.peers.iter().map(|(k, r)| (k.clone(), r.addr.clone())).collect::<BTreeMap<_, _>>(),
                        peers.clone()
                    );
                    prop_assert_eq!(&st.events, &events);
                    prop_assert_eq!(
                        st.event_hashes.clone(),
                        events.iter().map(event_hash).collect::<HashSet<_>>()
                    );
                }
            }
        }
    }
}
