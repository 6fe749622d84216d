//! The real chain clients against our servers: `lightning-block-sync` (bitcoind RPC) through a
//! reorg, `lightning-transaction-sync` (Esplora) through a reorg, and a BDK wallet synced with
//! `bdk_esplora` that receives faucet coins and spends them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;

use bdk_wallet::{KeychainKind, SignOptions, Wallet};
use bitcoin::block::Header;
use bitcoin::{Amount, BlockHash, FeeRate, Network, Txid};
use common::Key;
use lightning::chain::transaction::TransactionData;
use lightning::chain::{BestBlock, Confirm, Filter, Listen};
use lightning_block_sync::http::HttpEndpoint;
use lightning_block_sync::init::validate_best_block_header;
use lightning_block_sync::poll::ChainPoller;
use lightning_block_sync::rpc::RpcClient;
use lightning_block_sync::{SpvClient, UnboundedCache};
use satchel_chain::{Chain, ChainServer};
use serde_json::{Value, json};

async fn start() -> (tempfile::TempDir, Chain, ChainServer) {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::open(dir.path()).unwrap();
    let server = ChainServer::start(chain.clone(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    (dir, chain, server)
}

#[derive(Default)]
struct Recorder {
    connected: Mutex<Vec<(u32, BlockHash, usize)>>,
    disconnected_to: Mutex<Vec<BestBlock>>,
}

impl Listen for Recorder {
    fn filtered_block_connected(&self, header: &Header, txdata: &TransactionData, height: u32) {
        self.connected
            .lock()
            .unwrap()
            .push((height, header.block_hash(), txdata.len()));
    }
    fn blocks_disconnected(&self, fork_point_block: BestBlock) {
        self.disconnected_to.lock().unwrap().push(fork_point_block);
    }
}

#[tokio::test]
async fn lightning_block_sync_follows_blocks_and_a_reorg_over_rpc() {
    let (_d, chain, server) = start().await;
    chain.mine(101, None).unwrap();
    let rpc = RpcClient::new(
        &server.credentials.basic_auth_base64(),
        HttpEndpoint::for_host("127.0.0.1".to_string()).with_port(server.addr.port()),
    );
    let tip = validate_best_block_header(&rpc).await.unwrap();
    assert_eq!(tip.height, 101);
    let recorder = Recorder::default();
    let mut cache = UnboundedCache::new();
    let mut spv = SpvClient::new(
        tip,
        ChainPoller::new(&rpc, Network::Regtest),
        &mut cache,
        &recorder,
    );

    // A block with a segwit transaction (the witness commitment is checked by the poller).
    chain.fund(&Key::new(20).address(), 100_000).unwrap();
    let mined = chain.mine(3, None).unwrap();
    spv.poll_best_tip().await.unwrap();
    {
        let c = recorder.connected.lock().unwrap();
        let got: Vec<_> = c.iter().map(|(h, hash, _)| (*h, *hash)).collect();
        assert_eq!(got, vec![(102, mined[0]), (103, mined[1]), (104, mined[2])]);
        assert_eq!(c[0].2, 2, "coinbase + funding tx delivered");
    }

    let new = chain.reorg(2).unwrap();
    spv.poll_best_tip().await.unwrap();
    let d = recorder.disconnected_to.lock().unwrap().clone();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].height, d[0].block_hash), (102, mined[0]));
    let c = recorder.connected.lock().unwrap();
    let tail: Vec<_> = c.iter().skip(3).map(|(h, hash, _)| (*h, *hash)).collect();
    assert_eq!(tail, vec![(103, new[0]), (104, new[1]), (105, new[2])]);
}

#[derive(Default)]
struct Watcher {
    confirmed: Mutex<Vec<(Txid, u32, BlockHash)>>,
    unconfirmed: Mutex<Vec<Txid>>,
    best: Mutex<Option<(u32, BlockHash)>>,
}

impl Confirm for Watcher {
    fn transactions_confirmed(&self, header: &Header, txdata: &TransactionData, height: u32) {
        let mut c = self.confirmed.lock().unwrap();
        for (_, tx) in txdata {
            c.push((tx.compute_txid(), height, header.block_hash()));
        }
    }
    fn transaction_unconfirmed(&self, txid: &Txid) {
        self.unconfirmed.lock().unwrap().push(*txid);
        self.confirmed.lock().unwrap().retain(|(t, _, _)| t != txid);
    }
    fn best_block_updated(&self, header: &Header, height: u32) {
        *self.best.lock().unwrap() = Some((height, header.block_hash()));
    }
    fn get_relevant_txids(&self) -> Vec<(Txid, u32, Option<BlockHash>)> {
        self.confirmed
            .lock()
            .unwrap()
            .iter()
            .map(|(t, h, b)| (*t, *h, Some(*b)))
            .collect()
    }
}

struct NoLog;
impl lightning::util::logger::Logger for NoLog {
    fn log(&self, _record: lightning::util::logger::Record) {}
}

#[tokio::test]
async fn lightning_transaction_sync_confirms_and_unconfirms_over_esplora() {
    let (_d, chain, server) = start().await;
    chain.mine(101, None).unwrap();
    let sync =
        lightning_transaction_sync::EsploraSyncClient::new(server.esplora_url.clone(), &NoLog);
    let watcher = Watcher::default();
    let to = Key::new(21);
    let txid = chain.fund(&to.address(), 200_000).unwrap();
    sync.register_tx(&txid, &to.script());
    sync.sync(vec![&watcher]).await.unwrap();
    assert!(watcher.confirmed.lock().unwrap().is_empty());

    let hash = chain.mine(1, None).unwrap()[0];
    sync.sync(vec![&watcher]).await.unwrap();
    assert_eq!(*watcher.confirmed.lock().unwrap(), vec![(txid, 102, hash)]);
    assert_eq!(*watcher.best.lock().unwrap(), Some((102, hash)));

    chain.reorg(1).unwrap();
    sync.sync(vec![&watcher]).await.unwrap();
    assert_eq!(*watcher.unconfirmed.lock().unwrap(), vec![txid]);
    assert!(watcher.confirmed.lock().unwrap().is_empty());

    let again = chain.mine(1, None).unwrap()[0];
    sync.sync(vec![&watcher]).await.unwrap();
    assert_eq!(*watcher.confirmed.lock().unwrap(), vec![(txid, 104, again)]);
}

#[tokio::test]
async fn bdk_wallet_receives_faucet_coins_and_spends_them_over_esplora() {
    use bdk_esplora::EsploraAsyncExt;
    let (_d, chain, server) = start().await;
    chain.mine(101, None).unwrap();
    let xprv = bitcoin::bip32::Xpriv::new_master(Network::Regtest, &[7u8; 32]).unwrap();
    let mut wallet = Wallet::create(
        format!("wpkh({xprv}/84'/1'/0'/0/*)"),
        format!("wpkh({xprv}/84'/1'/0'/1/*)"),
    )
    .network(Network::Regtest)
    .create_wallet_no_persist()
    .unwrap();
    let client = bdk_esplora::esplora_client::Builder::new(&server.esplora_url)
        .build_async()
        .unwrap();
    let address = wallet.reveal_next_address(KeychainKind::External).address;

    chain.fund(&address, 300_000).unwrap();
    chain.mine(1, None).unwrap();
    let update = client
        .full_scan(wallet.start_full_scan().build(), 10, 2)
        .await
        .unwrap();
    wallet.apply_update(update).unwrap();
    assert_eq!(wallet.balance().confirmed, Amount::from_sat(300_000));
    assert_eq!(wallet.latest_checkpoint().height(), 102);

    let mut builder = wallet.build_tx();
    builder.add_recipient(
        chain.faucet_address().script_pubkey(),
        Amount::from_sat(120_000),
    );
    builder.fee_rate(FeeRate::from_sat_per_vb_u32(3));
    let mut psbt = builder.finish().unwrap();
    assert!(wallet.sign(&mut psbt, SignOptions::default()).unwrap());
    let tx = psbt.extract_tx().unwrap();
    client.broadcast(&tx).await.unwrap();
    let txid = tx.compute_txid();
    assert!(chain.with_state(|st| st.mempool.entries.contains_key(&txid)));

    // Seen unconfirmed, then confirmed.
    let update = client
        .sync(wallet.start_sync_with_revealed_spks().build(), 2)
        .await
        .unwrap();
    wallet.apply_update(update).unwrap();
    assert!(wallet.balance().trusted_pending > Amount::ZERO);
    let hash = chain.mine(1, None).unwrap()[0];
    let update = client
        .full_scan(wallet.start_full_scan().build(), 10, 2)
        .await
        .unwrap();
    wallet.apply_update(update).unwrap();
    let fee = wallet.calculate_fee(&tx).unwrap();
    assert_eq!(
        wallet.balance().confirmed,
        Amount::from_sat(300_000 - 120_000) - fee
    );
    let status = client.get_tx_status(&txid).await.unwrap();
    assert_eq!((status.confirmed, status.block_hash), (true, Some(hash)));
}

async fn rpc(server: &ChainServer, auth: bool, method: &str, params: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(&server.rpc_url)
        .json(&json!({ "jsonrpc": "1.0", "id": "t", "method": method, "params": params }));
    if auth {
        req = req.basic_auth(&server.credentials.user, Some(&server.credentials.password));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rpc_and_esplora_answer_errors_like_bitcoind_and_esplora() {
    let (_d, chain, server) = start().await;
    chain.mine(101, None).unwrap();
    assert_eq!(rpc(&server, false, "getblockcount", json!([])).await.0, 401);
    let cookie = std::fs::read_to_string(&server.credentials.cookie_file).unwrap();
    assert_eq!(
        cookie,
        format!(
            "{}:{}",
            server.credentials.user, server.credentials.password
        )
    );
    assert_eq!(
        rpc(&server, true, "getblockcount", json!([])).await,
        (200, json!({"result": 101, "error": null, "id": "t"}))
    );
    let (s, v) = rpc(&server, true, "getblockhash", json!([500])).await;
    assert_eq!((s, v["error"]["code"].clone()), (500, json!(-8)));
    let (s, v) = rpc(
        &server,
        true,
        "getrawtransaction",
        json!([Txid::from_byte_array_zero()]),
    )
    .await;
    assert_eq!((s, v["error"]["code"].clone()), (500, json!(-5)));
    let (s, v) = rpc(&server, true, "nosuchmethod", json!([])).await;
    assert_eq!((s, v["error"]["code"].clone()), (404, json!(-32601)));
    let (_, v) = rpc(&server, true, "estimatesmartfee", json!([6])).await;
    assert_eq!(v["result"]["feerate"], json!(0.00002));

    // Send errors: -22 decode, -25 missing inputs, -26 rejected (double spend).
    let (_, v) = rpc(&server, true, "sendrawtransaction", json!(["00"])).await;
    assert_eq!(v["error"]["code"], json!(-22));
    let key = Key::new(22);
    let (coin, value) = common::mature_coin(&chain, &key);
    let a = common::spend(
        &key,
        coin,
        value,
        key.script(),
        value.to_sat() - 1_000,
        common::Spend::default(),
    );
    let b = common::spend(
        &key,
        coin,
        value,
        Key::new(23).script(),
        value.to_sat() - 1_000,
        common::Spend::default(),
    );
    let hex_of = |t: &bitcoin::Transaction| bitcoin::consensus::encode::serialize_hex(t);
    let (_, v) = rpc(&server, true, "sendrawtransaction", json!([hex_of(&a)])).await;
    assert_eq!(v["result"], json!(a.compute_txid().to_string()));
    let (_, v) = rpc(&server, true, "sendrawtransaction", json!([hex_of(&b)])).await;
    assert_eq!(v["error"]["code"], json!(-26));
    let (_, v) = rpc(&server, true, "getmempoolentry", json!([a.compute_txid()])).await;
    assert_eq!(v["result"]["fees"]["base"], json!(0.00001));
    let (_, v) = rpc(&server, true, "gettxout", json!([coin.txid, 0])).await;
    assert_eq!(v["result"], Value::Null, "spent in the mempool");
    let (_, v) = rpc(&server, true, "gettxout", json!([coin.txid, 0, false])).await;
    assert_eq!(v["result"]["coinbase"], json!(true));
    chain.mine(1, None).unwrap();
    let (_, v) = rpc(&server, true, "sendrawtransaction", json!([hex_of(&b)])).await;
    assert_eq!(v["error"]["code"], json!(-25));
    let (_, v) = rpc(&server, true, "sendrawtransaction", json!([hex_of(&a)])).await;
    assert_eq!(v["error"]["code"], json!(-27));

    // Esplora's not-found and bad-input answers.
    let http = reqwest::Client::new();
    let get = |path: String| http.get(format!("{}{path}", server.esplora_url)).send();
    let r = get(format!("/tx/{}", Txid::from_byte_array_zero()))
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (404, "Transaction not found".to_string())
    );
    let r = get("/block-height/9999".to_string()).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (404, "Block not found".to_string())
    );
    assert_eq!(
        get("/tx/zz".to_string()).await.unwrap().status().as_u16(),
        400
    );
    let r = get(format!("/tx/{}/merkle-proof", a.compute_txid()))
        .await
        .unwrap();
    let proof: Value = r.json().await.unwrap();
    assert_eq!(proof["block_height"], json!(203));
    assert_eq!(proof["pos"], json!(1));
    let r = http
        .post(format!("{}/tx", server.esplora_url))
        .body(hex_of(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("-25"));
}

trait ZeroTxid {
    fn from_byte_array_zero() -> Txid;
}
impl ZeroTxid for Txid {
    fn from_byte_array_zero() -> Txid {
        use bitcoin::hashes::Hash;
        Txid::all_zeros()
    }
}

#[tokio::test]
async fn auto_miner_confirms_the_mempool_and_subscribers_see_the_tip() {
    let (_d, chain, _server) = start().await;
    chain.mine(101, None).unwrap();
    let mut tips = chain.subscribe();
    tips.borrow_and_update();
    let _miner = chain.spawn_auto_miner(std::time::Duration::from_millis(20));
    let txid = chain.fund(&Key::new(24).address(), 10_000).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), tips.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tips.borrow().height, 102);
    assert!(chain.with_state(|st| st.tx_index.contains_key(&txid)));
}
