//! What the suite remembers across restarts: every hash the scenarios touched, a snapshot of the
//! node before a restart, and the check that the restarted node tells the same story.

use super::*;

/// The hashes scenarios touched: invoices they created, cancelled or looked up, payments they
/// sent or looked up.
#[derive(Debug, Default)]
pub(super) struct Seen {
    invoices: BTreeSet<PaymentHash>,
    payments: BTreeSet<PaymentHash>,
}

pub(super) fn lock_seen(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// A backend that notes every hash it is asked about, then forwards.
pub(super) struct Recorder {
    inner: Arc<dyn LightningBackend>,
    seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    fn invoice(&self, hash: PaymentHash) {
        lock_seen(&self.seen).invoices.insert(hash);
    }

    fn payment(&self, hash: PaymentHash) {
        lock_seen(&self.seen).payments.insert(hash);
    }
}

#[async_trait]
impl NodeInfo for Recorder {
    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        self.inner.node_info().await
    }
    async fn node_status(&self) -> Result<satchel_lightning::NodeStatus, LnError> {
        self.inner.node_status().await
    }
    async fn list_channels(&self) -> Result<Vec<satchel_lightning::ChannelInfo>, LnError> {
        self.inner.list_channels().await
    }
    async fn node_stats(&self) -> Result<satchel_lightning::NodeStats, LnError> {
        self.inner.node_stats().await
    }
}

#[async_trait]
impl satchel_lightning::NodeAdmin for Recorder {
    async fn onchain_address(&self) -> Result<String, LnError> {
        self.inner.onchain_address().await
    }
    async fn onchain_balance(&self) -> Result<satchel_lightning::OnchainBalance, LnError> {
        self.inner.onchain_balance().await
    }
    async fn onchain_send(&self, address: &str, amount_sats: u64) -> Result<String, LnError> {
        self.inner.onchain_send(address, amount_sats).await
    }
    async fn connect_peer(&self, pubkey: NodePubkey, addr: &str) -> Result<(), LnError> {
        self.inner.connect_peer(pubkey, addr).await
    }
    async fn open_channel(
        &self,
        peer: NodePubkey,
        capacity_sats: u64,
        push_msat: u64,
    ) -> Result<(), LnError> {
        self.inner
            .open_channel(peer, capacity_sats, push_msat)
            .await
    }
    async fn close_channel(&self, channel_id: &str, force: bool) -> Result<(), LnError> {
        self.inner.close_channel(channel_id, force).await
    }
}

#[async_trait]
impl Invoices for Recorder {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        self.invoice(req.preimage.hash());
        self.inner.create_invoice(req).await
    }

    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        self.invoice(hash);
        self.inner.cancel_invoice(hash).await
    }

    async fn cancel_invoices(&self, hashes: &[PaymentHash]) -> Result<(), LnError> {
        for hash in hashes {
            self.invoice(*hash);
        }
        self.inner.cancel_invoices(hashes).await
    }

    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        self.invoice(hash);
        self.inner.lookup_invoice(hash).await
    }
}

#[async_trait]
impl Payments for Recorder {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        self.payment(req.target.payment_hash());
        self.inner.pay(req).await
    }

    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        self.payment(hash);
        self.inner.lookup_payment(hash).await
    }
}

#[async_trait]
impl InvoiceEvents for Recorder {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        self.inner.events_after(after, limit, wait).await
    }
}

#[async_trait]
impl Routes for Recorder {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        self.inner.query_routes(dest, amount).await
    }
}

/// The harness under test, with its backend wrapped in a [`Recorder`].
pub(super) struct Tracked<'a, H: Harness + ?Sized> {
    inner: &'a mut H,
    seen: Arc<Mutex<Seen>>,
}

impl<'a, H: Harness + ?Sized> Tracked<'a, H> {
    pub(super) fn new(inner: &'a mut H) -> Tracked<'a, H> {
        Tracked {
            inner,
            seen: Arc::default(),
        }
    }
}

#[async_trait]
impl<H: Harness + ?Sized> Harness for Tracked<'_, H> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn backend(&self) -> Arc<dyn LightningBackend> {
        Arc::new(Recorder {
            inner: self.inner.backend(),
            seen: Arc::clone(&self.seen),
        })
    }

    fn devnet(&self) -> Arc<dyn DevnetControl> {
        self.inner.devnet()
    }

    fn supports_restart(&self) -> bool {
        self.inner.supports_restart()
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.inner.restart().await
    }

    fn set_policy(&self, accept: bool) {
        self.inner.set_policy(accept);
    }

    fn enforces_keysend_policy(&self) -> bool {
        self.inner.enforces_keysend_policy()
    }

    fn distinct_peers(&self) -> bool {
        self.inner.distinct_peers()
    }

    fn before_send(&self, hash: PaymentHash, amount: Msat, path: SendPath) {
        self.inner.before_send(hash, amount, path);
    }

    fn send_count(&self, hash: PaymentHash) -> Option<u64> {
        self.inner.send_count(hash)
    }

    fn peer_events(&self, name: &str) -> Option<Arc<dyn InvoiceEvents>> {
        self.inner.peer_events(name)
    }

    fn forgets_unsent_failures_on_restart(&self) -> bool {
        self.inner.forgets_unsent_failures_on_restart()
    }
}

/// What a restart must leave exactly as it was.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// Our incoming events, from seq 0.
    events: Vec<IncomingEvent>,
    /// Every invoice hash the suite touched, as the backend looks it up.
    invoices: Vec<(PaymentHash, Option<InvoiceState>)>,
    /// Every payment hash the suite touched: the lookup and how often it was sent.
    payments: Vec<(PaymentHash, PaymentLookup, Option<u64>)>,
    /// What each peer received (where the harness can show it), custom records included.
    peer_events: Vec<(&'static str, Vec<IncomingEvent>)>,
    /// The peers' channel balances.
    balances: Balances,
}

pub(super) async fn snapshot<H: Harness + ?Sized>(
    h: &H,
    seen: &Mutex<Seen>,
) -> Result<Snapshot, String> {
    let (invoice_hashes, payment_hashes) = {
        let seen = lock_seen(seen);
        (seen.invoices.clone(), seen.payments.clone())
    };
    // The inner backend: lookups made here are not the scenarios'.
    let b = h.backend();
    let mut invoices = Vec::with_capacity(invoice_hashes.len());
    for hash in invoice_hashes {
        let state = b.lookup_invoice(hash).await.map_err(ctx("lookup"))?;
        invoices.push((hash, state));
    }
    let mut payments = Vec::with_capacity(payment_hashes.len());
    for hash in payment_hashes {
        let lookup = b
            .lookup_payment(hash)
            .await
            .map_err(ctx("lookup_payment"))?;
        payments.push((hash, lookup, h.send_count(hash)));
    }
    let mut peer_events = Vec::new();
    for name in ["alice", "hub", "carol"] {
        if let Some(events) = h.peer_events(name) {
            peer_events.push((name, all_events(&*events).await?));
        }
    }
    Ok(Snapshot {
        events: all_events(&*b).await?,
        invoices,
        payments,
        peer_events,
        balances: peer_balances(h).await?,
    })
}

/// Restarts the backend and checks that it still sees everything the suite did before, the
/// same way (our events with their seqs, every touched invoice and payment, each peer's
/// received payments with their custom records, channel balances). The state is taken once it
/// stopped moving (HTLCs of the last scenario resolved), and compared until it matches or
/// [`WAIT`] passes (channels take a moment to come back after a restart).
pub(super) async fn restart_keeps_state<H: Harness + ?Sized>(
    h: &mut Tracked<'_, H>,
) -> Result<(), String> {
    let seen = Arc::clone(&h.seen);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut before = snapshot(&*h.inner, &seen).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = snapshot(&*h.inner, &seen).await?;
        if again == before {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the state never settled before the restart: {before:?} then {again:?}"
            ));
        }
        before = again;
    }
    h.restart().await?;
    let forgets = h.forgets_unsent_failures_on_restart();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut after = snapshot(&*h.inner, &seen).await?;
        if forgets {
            forgive_unsent_failures(&before, &mut after);
        }
        if after == before {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(describe_difference(&before, &after));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`Harness::forgets_unsent_failures_on_restart`]: a definite failure that became `NotFound`
/// (sent as often as before) is taken as unchanged.
pub(super) fn forgive_unsent_failures(before: &Snapshot, after: &mut Snapshot) {
    for (b, a) in before.payments.iter().zip(after.payments.iter_mut()) {
        if b.0 == a.0
            && matches!(b.1, PaymentLookup::Failed(_))
            && a.1 == PaymentLookup::NotFound
            && b.2 == a.2
        {
            a.1 = b.1.clone();
        }
    }
}

/// The parts of two snapshots that differ, for the failure message.
pub(super) fn describe_difference(before: &Snapshot, after: &Snapshot) -> String {
    let mut out = Vec::new();
    if before.events != after.events {
        out.push(format!(
            "our events: {:?} became {:?}",
            before.events, after.events
        ));
    }
    for (b, a) in before.invoices.iter().zip(&after.invoices) {
        if b != a {
            out.push(format!("invoice {}: {:?} became {:?}", b.0, b.1, a.1));
        }
    }
    for (b, a) in before.payments.iter().zip(&after.payments) {
        if b != a {
            out.push(format!(
                "payment {}: {:?} (sent {:?}) became {:?} (sent {:?})",
                b.0, b.1, b.2, a.1, a.2
            ));
        }
    }
    if before.peer_events != after.peer_events {
        out.push(format!(
            "peer events: {:?} became {:?}",
            before.peer_events, after.peer_events
        ));
    }
    if before.balances != after.balances {
        out.push(format!(
            "peer balances: {:?} became {:?}",
            before.balances, after.balances
        ));
    }
    format!("not the same after the restart: {}", out.join("; "))
}
