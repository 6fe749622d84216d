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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// A payment LDK holds for us, neither claimed nor failed (test hook: held payments).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeldRec {
    pub(crate) amount_msat: u64,
    /// Set for keysends (the sender's preimage); invoices use the invoice's record.
    pub(crate) keysend_preimage: Option<String>,
    /// type → hex value
    pub(crate) custom_records: BTreeMap<u64, String>,
}

/// A peer we connect to (and reconnect to after restarts or disconnections).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}
