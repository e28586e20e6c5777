//! A relay on a random loopback port plus a small, honest client for it.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use samizdat_proto::{
    self as proto, Bytes, ClaimedKeyPackage, Entries, EntryKind, ErrorBody, Id, Limits,
    MailboxMessage,
};
use samizdat_relay::{Config, Relay};
use serde::de::DeserializeOwned;
use serde_json::json;

pub fn rand_id() -> Id {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).unwrap();
    Id::from_bytes(b)
}

/// Rate limits count per wall-clock minute: start a rate-limit scenario well inside a
/// minute so it cannot straddle two windows.
pub async fn away_from_minute_boundary() {
    while now() % 60 >= 50 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub struct TestRelay {
    pub relay: Relay,
    pub base: String,
    pub http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

pub struct Mailbox {
    pub id: Id,
    pub key: Arc<Ed25519KeyPair>,
}

pub struct Group {
    pub id: Id,
    /// tokens[e] is epoch e's token.
    pub tokens: Vec<Vec<u8>>,
}

impl Group {
    pub fn token(&self, epoch: u64) -> &[u8] {
        &self.tokens[epoch as usize]
    }
}

pub fn token_for(group: &Id, epoch: u64) -> Vec<u8> {
    // Deterministic per group and epoch, like a real exporter secret would be for members.
    let mut t = group.as_bytes().to_vec();
    t.extend_from_slice(&epoch.to_be_bytes());
    t
}

/// Which storage a test relay runs on.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// A connection URL whose `search_path` is a fresh schema of its own.
    Postgres(String),
}

impl Backend {
    /// A fresh schema on the database named by `SAMIZDAT_TEST_DATABASE_URL`, or `None`.
    pub async fn postgres() -> Option<Backend> {
        let base = std::env::var("SAMIZDAT_TEST_DATABASE_URL").ok()?;
        let schema = format!("t_{}", hex::encode(rand_id().as_bytes()));
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .expect("connect to SAMIZDAT_TEST_DATABASE_URL");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(Backend::Postgres(format!(
            "{base}{sep}options=-c%20search_path%3D{schema}"
        )))
    }
}

impl TestRelay {
    pub async fn start(b: &Backend) -> Self {
        Self::start_with(b, Limits::default()).await
    }

    pub async fn start_with(b: &Backend, limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Self::start_in(b, dir.path(), limits).await;
        r._dir = Some(dir);
        r
    }

    pub async fn start_in(b: &Backend, dir: &Path, limits: Limits) -> Self {
        Self::start_configured(b, dir, limits, |_| {}).await
    }

    /// A relay whose [`Config`] the test adjusts (trusted proxies and the like).
    pub async fn start_configured(
        b: &Backend,
        dir: &Path,
        limits: Limits,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let mut limits = limits;
        // The free-disk floor watches the test machine's shared disk, which is not what a test
        // checks (CI once failed 30 tests with `storage_full` while the host's disk ran low);
        // the test of the floor sets its own value.
        if limits.min_free_disk_percent == Limits::default().min_free_disk_percent {
            limits.min_free_disk_percent = 0;
        }
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data: dir.to_path_buf(),
            database: match b {
                Backend::Sqlite => None,
                Backend::Postgres(url) => Some(url.clone()),
            },
            pool_size: 4,
            sweep_interval_secs: 3600,
            metrics_listen: Some("127.0.0.1:0".into()),
            limits,
            ..Config::default()
        };
        adjust(&mut config);
        let relay = Relay::start(config).await.unwrap();
        let base = format!("http://{}", relay.addr());
        TestRelay {
            relay,
            base,
            http: reqwest::Client::new(),
            _dir: None,
        }
    }

    pub async fn stop(self) {
        self.relay.shutdown().await.unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The separate metrics listener (the public one has no `/metrics`).
    pub fn metrics_url(&self) -> String {
        format!(
            "http://{}/metrics",
            self.relay.metrics_addr().expect("metrics listener")
        )
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.relay.addr())
    }

    async fn answer<T: DeserializeOwned>(r: reqwest::Response) -> Result<T, ErrorBody> {
        let status = r.status();
        let bytes = r.bytes().await.unwrap();
        if status.is_success() {
            Ok(serde_json::from_slice(&bytes).unwrap())
        } else {
            assert!(
                status.is_client_error(),
                "server error {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
            let e: ErrorBody = serde_json::from_slice(&bytes).expect("error body is JSON");
            assert_eq!(e.code.http_status(), status.as_u16());
            Err(e)
        }
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ErrorBody> {
        Self::answer(
            self.http
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn try_create_mailbox(&self) -> (Mailbox, Result<serde_json::Value, ErrorBody>) {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = Arc::new(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap());
        let id = rand_id();
        let r = self
            .post(
                "/v1/mailboxes",
                json!({"request_id": rand_id(), "mailbox_id": id, "owner_key": Bytes(key.public_key().as_ref().to_vec())}),
            )
            .await;
        (Mailbox { id, key }, r)
    }

    pub async fn create_mailbox(&self) -> Mailbox {
        let (mb, r) = self.try_create_mailbox().await;
        r.unwrap();
        mb
    }

    /// A signed request as the mailbox owner would send it.
    pub fn signed(
        &self,
        mb: &Mailbox,
        method: reqwest::Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        self.signed_at(mb, method, path_and_query, body, now(), rand_id())
    }

    pub fn signed_at(
        &self,
        mb: &Mailbox,
        method: reqwest::Method,
        path_and_query: &str,
        body: Vec<u8>,
        ts: u64,
        nonce: Id,
    ) -> reqwest::RequestBuilder {
        let payload =
            proto::http_signing_payload(method.as_str(), path_and_query, ts, &nonce, &body);
        let sig = mb.key.sign(&payload);
        self.http
            .request(method, self.url(path_and_query))
            .header(proto::HEADER_TIMESTAMP, ts.to_string())
            .header(proto::HEADER_NONCE, nonce.to_string())
            .header(proto::HEADER_SIGNATURE, Bytes::encode(sig.as_ref()))
            .body(body)
    }

    pub async fn drop_msg(&self, mailbox: &Id, body: Vec<u8>) -> Result<u64, ErrorBody> {
        let r: Result<proto::Stored, _> = self
            .post(
                &format!("/v1/mailboxes/{mailbox}/messages"),
                json!({"request_id": rand_id(), "body": Bytes(body)}),
            )
            .await;
        r.map(|s| s.seq)
    }

    pub async fn read_mailbox(
        &self,
        mb: &Mailbox,
        after: u64,
    ) -> Result<Vec<MailboxMessage>, ErrorBody> {
        let path = format!("/v1/mailboxes/{}/messages?after={after}", mb.id);
        let r: Result<proto::MailboxMessages, _> = Self::answer(
            self.signed(mb, reqwest::Method::GET, &path, vec![])
                .send()
                .await
                .unwrap(),
        )
        .await;
        r.map(|m| m.messages)
    }

    pub async fn ack(&self, mb: &Mailbox, seqs: &[u64]) -> Result<u64, ErrorBody> {
        let path = format!("/v1/mailboxes/{}/ack", mb.id);
        let body = serde_json::to_vec(&json!({"request_id": rand_id(), "seqs": seqs})).unwrap();
        let r: Result<proto::Acked, _> = Self::answer(
            self.signed(mb, reqwest::Method::POST, &path, body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        r.map(|a| a.deleted)
    }

    pub async fn upload(
        &self,
        mb: &Mailbox,
        kps: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<proto::KeyPackageCount, ErrorBody> {
        let path = format!("/v1/mailboxes/{}/keypackages", mb.id);
        let body = serde_json::to_vec(&json!({
            "request_id": rand_id(),
            "key_packages": kps.into_iter().map(Bytes).collect::<Vec<_>>(),
            "last_resort": last_resort.map(Bytes),
        }))
        .unwrap();
        Self::answer(
            self.signed(mb, reqwest::Method::POST, &path, body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Put a fresh KeyPackage into `mb`'s pool and claim it, as a committer does before a
    /// Welcome (security review 3, M2); returns the hash a Welcome for it names.
    pub async fn claimed_key_package(&self, mb: &Mailbox) -> Bytes {
        let kp = rand_id().as_bytes().to_vec();
        self.upload(mb, vec![kp.clone()], None).await.unwrap();
        let claimed = self.claim(&mb.id).await.unwrap();
        assert_eq!(claimed.key_package.0, kp);
        Bytes(samizdat_relay::token_hash(&kp).to_vec())
    }

    pub async fn claim(&self, mailbox: &Id) -> Result<ClaimedKeyPackage, ErrorBody> {
        self.post(
            &format!("/v1/mailboxes/{mailbox}/keypackages/claim"),
            json!({"request_id": rand_id()}),
        )
        .await
    }

    pub async fn create_group(&self, epoch: u64) -> Group {
        let id = rand_id();
        let tokens: Vec<Vec<u8>> = (0..64).map(|e| token_for(&id, e)).collect();
        let _: serde_json::Value = self
            .post(
                "/v1/groups",
                json!({"request_id": rand_id(), "group_id": id, "epoch": epoch,
                       "token_hash": Bytes(samizdat_relay::token_hash(&tokens[epoch as usize]).to_vec())}),
            )
            .await
            .unwrap();
        Group { id, tokens }
    }

    pub async fn append_raw(
        &self,
        group: &Id,
        token: &[u8],
        body: serde_json::Value,
    ) -> Result<u64, ErrorBody> {
        let r = self
            .http
            .post(self.url(&format!("/v1/groups/{group}/entries")))
            .header(proto::HEADER_TOKEN, Bytes::encode(token))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s: Result<proto::Stored, _> = Self::answer(r).await;
        s.map(|s| s.seq)
    }

    pub async fn append_app(&self, g: &Group, epoch: u64, body: Vec<u8>) -> Result<u64, ErrorBody> {
        self.append_raw(
            &g.id,
            g.token(epoch),
            json!({"request_id": rand_id(), "kind": EntryKind::Application, "epoch": epoch, "body": Bytes(body)}),
        )
        .await
    }

    pub async fn append_commit(
        &self,
        g: &Group,
        epoch: u64,
        body: Vec<u8>,
        welcomes: serde_json::Value,
    ) -> Result<u64, ErrorBody> {
        self.append_raw(
            &g.id,
            g.token(epoch),
            json!({"request_id": rand_id(), "kind": EntryKind::Commit, "epoch": epoch, "body": Bytes(body),
                   "next_token_hash": Bytes(samizdat_relay::token_hash(g.token(epoch + 1)).to_vec()),
                   "welcomes": welcomes}),
        )
        .await
    }

    pub async fn read_entries_with(
        &self,
        group: &Id,
        epoch: u64,
        after: u64,
        token: &[u8],
    ) -> Result<Entries, ErrorBody> {
        let r = self
            .http
            .get(self.url(&format!(
                "/v1/groups/{group}/entries?epoch={epoch}&after={after}"
            )))
            .header(proto::HEADER_TOKEN, Bytes::encode(token))
            .send()
            .await
            .unwrap();
        Self::answer(r).await
    }

    pub async fn read_entries(
        &self,
        g: &Group,
        epoch: u64,
        after: u64,
    ) -> Result<Entries, ErrorBody> {
        self.read_entries_with(&g.id, epoch, after, g.token(epoch))
            .await
    }
}
