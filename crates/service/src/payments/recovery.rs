//! Recovery: every live payment is re-driven from our own records at startup and periodically
//! (`recover`), so a crash at any point resumes where the books say it stands. What to send is
//! rebuilt from the stored payment (`target_of`), which also serves a keysend re-run by an
//! async job after a restart.

use satchel_domain::{Bolt11, CustomRecords, KEYSEND_PREIMAGE_TLV, NodePubkey};
use satchel_lightning::PayTarget;
use satchel_store::LnTxRecord;
use serde_json::{Map, Value};

use super::PaymentService;
use crate::ServiceError;

impl PaymentService {
    /// Rebuilds what to send from a stored payment (recovery after a restart).
    pub(super) fn target_of(&self, l: &LnTxRecord) -> Result<PayTarget, ServiceError> {
        if l.is_keysend {
            let dest = NodePubkey::from_hex(&l.dest_pubkey)
                .ok_or_else(|| ServiceError::Internal("bad stored pubkey".into()))?;
            let preimage = l
                .preimage
                .ok_or_else(|| ServiceError::Internal("keysend without preimage".into()))?;
            let shown: Map<String, Value> = match &l.custom_records {
                Some(s) => {
                    serde_json::from_str(s).map_err(|e| ServiceError::Internal(e.to_string()))?
                }
                None => Map::new(),
            };
            let mut records = CustomRecords::default();
            for (k, v) in shown {
                if let (Ok(t), Value::String(s)) = (k.parse::<u64>(), v)
                    && t != KEYSEND_PREIMAGE_TLV
                {
                    records.0.insert(t, s.into_bytes());
                }
            }
            Ok(PayTarget::Keysend {
                dest,
                amount: l.amount,
                preimage,
                custom_records: records,
            })
        } else {
            let invoice = Bolt11::parse(&l.payment_request)
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            Ok(PayTarget::Bolt11 {
                invoice,
                amount: l.amount,
            })
        }
    }

    /// Re-drives every live payment from our own records. Run at startup and periodically;
    /// payments already being driven by this process are skipped.
    pub async fn recover(&self) -> Result<usize, ServiceError> {
        let live = self.ctx.store.live_payments().await?;
        let mut started = 0;
        for l in live {
            let target = match self.target_of(&l) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(lntx = %l.id, error = %e, "cannot rebuild payment; needs an operator");
                    continue;
                }
            };
            if self.spawn_drive(l, target).is_some() {
                started += 1;
            }
        }
        Ok(started)
    }

    /// Number of payments this process is driving now.
    pub fn driving(&self) -> usize {
        self.driving.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
