#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use satchel_domain::{Bolt11, CustomRecords, Msat, Preimage};
use satchel_lightning::{IncomingPolicy, NewInvoice, PayRequest, PayTarget};

pub fn sats(n: u64) -> Msat {
    Msat::from_sats(n).unwrap()
}

pub fn msat(n: u64) -> Msat {
    Msat::from_msat(n).unwrap()
}

pub fn new_invoice(amount: Option<Msat>, memo: &str) -> NewInvoice {
    NewInvoice {
        amount,
        memo: memo.to_owned(),
        description_hash: None,
        expiry_secs: 3600,
        preimage: Preimage::random(),
    }
}

pub fn pay_invoice(invoice: &Bolt11, fee_limit: Msat) -> PayRequest {
    PayRequest {
        target: PayTarget::Bolt11 {
            invoice: invoice.clone(),
            amount: invoice.amount().unwrap(),
        },
        fee_limit,
        timeout: Duration::from_secs(20),
    }
}

/// Accepts keysends that carry TLV 696969 (or accepts/rejects everything).
pub struct Policy {
    pub accept: bool,
}

#[async_trait]
impl IncomingPolicy for Policy {
    async fn accept_keysend(&self, records: &CustomRecords) -> bool {
        self.accept && records.0.contains_key(&696_969)
    }
}

pub fn policy(accept: bool) -> Arc<dyn IncomingPolicy> {
    Arc::new(Policy { accept })
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
