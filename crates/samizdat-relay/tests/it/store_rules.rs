//! The storage rules (`store::rules`), case by case, against every store through the `Store`
//! trait: the in-memory store (fast, no I/O), SQLite, and PostgreSQL when
//! `SAMIZDAT_TEST_DATABASE_URL` is set. The same cases on all three show the backends answer
//! alike — including PostgreSQL's server-side append function, which implements the append
//! rule in PL/pgSQL for its single round trip.

use std::sync::Arc;

use samizdat_proto::{Bytes, EntryKind, ErrorCode, Id, Limits, WelcomeDrop};
use samizdat_relay::store::{
    AppendRequest, BlobQuota, MemoryStore, PgStore, SqliteStore, Store, StoreError,
};

use crate::harness::{Backend, now, rand_id};

/// A store under test, with whatever keeps it alive.
struct Opened {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Opened {
    type Target = dyn Store;
    fn deref(&self) -> &dyn Store {
        &*self.store
    }
}

async fn open(kind: &str) -> Option<Opened> {
    Some(match kind {
        "memory" => Opened {
            store: Arc::new(MemoryStore::new()),
            _dir: None,
        },
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            Opened {
                store: Arc::new(SqliteStore::open(dir.path()).unwrap()),
                _dir: Some(dir),
            }
        }
        _ => {
            let Backend::Postgres(url) = Backend::postgres().await? else {
                return None;
            };
            Opened {
                store: Arc::new(PgStore::open(&url, 4).await.unwrap()),
                _dir: None,
            }
        }
    })
}

/// Each case on every store: `memory::NAME`, `sqlite::NAME`, `postgres::NAME` (the last
/// returns at once without `SAMIZDAT_TEST_DATABASE_URL`).
macro_rules! store_cases {
    ($( $(#[$meta:meta])* async fn $name:ident($s:ident) $body:block )*) => {
        mod memory {
            use super::*;
            $( $(#[$meta])* #[tokio::test] async fn $name() {
                let $s = open("memory").await.unwrap(); $body
            } )*
        }
        mod sqlite {
            use super::*;
            $( $(#[$meta])* #[tokio::test] async fn $name() {
                let $s = open("sqlite").await.unwrap(); $body
            } )*
        }
        mod postgres {
            use super::*;
            $( $(#[$meta])* #[tokio::test] async fn $name() {
                let Some($s) = open("postgres").await else { return };
                $body
            } )*
        }
    };
}

fn code(e: StoreError) -> (ErrorCode, Option<u64>) {
    match e {
        StoreError::Rejected {
            code,
            current_epoch,
            ..
        } => (code, current_epoch),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn append_req(
    group: Id,
    epoch: u64,
    token: [u8; 32],
    kind: EntryKind,
    body: &[u8],
) -> AppendRequest {
    AppendRequest {
        request_id: rand_id(),
        group_id: group,
        kind,
        epoch,
        token_hash: token,
        body: body.to_vec(),
        next_token_hash: (kind == EntryKind::Commit).then(|| [epoch as u8 + 1; 32]),
        welcomes: Vec::new(),
    }
}

async fn mailbox(s: &dyn Store) -> Id {
    let mb = rand_id();
    s.create_mailbox(rand_id(), mb, vec![7; 32], now())
        .await
        .unwrap();
    mb
}

/// A KeyPackage put into `mb`'s pool and claimed, as a committer does before a Welcome;
/// the hash a Welcome for it names (security review 3, M2).
async fn claimed(s: &dyn Store, mb: Id) -> Option<Bytes> {
    let kp = rand_id().as_bytes().to_vec();
    s.upload_key_packages(rand_id(), mb, vec![kp.clone()], None, 100)
        .await
        .unwrap();
    let c = s.claim_key_package(rand_id(), mb).await.unwrap();
    assert_eq!(c.key_package.0, kp);
    Some(Bytes(samizdat_relay::token_hash(&kp).to_vec()))
}

async fn group(s: &dyn Store) -> Id {
    let g = rand_id();
    s.create_group(rand_id(), g, 0, [0; 32], now())
        .await
        .unwrap();
    g
}

store_cases! {
    /// Creating a mailbox: a repeated request is a no-op, another request for a taken id is
    /// refused.
    async fn creation_is_idempotent_per_request(s) {
        let (request, mb) = (rand_id(), rand_id());
        s.create_mailbox(request, mb, vec![1; 32], now()).await.unwrap();
        s.create_mailbox(request, mb, vec![1; 32], now()).await.unwrap();
        let taken = s.create_mailbox(rand_id(), mb, vec![2; 32], now()).await.unwrap_err();
        assert_eq!(code(taken).0, ErrorCode::AlreadyExists);
        assert_eq!(s.mailbox_owner(mb).await.unwrap(), Some(vec![1; 32]));
        let g = rand_id();
        s.create_group(request, g, 3, [3; 32], now()).await.unwrap();
        s.create_group(request, g, 3, [3; 32], now()).await.unwrap();
        let taken = s.create_group(rand_id(), g, 0, [4; 32], now()).await.unwrap_err();
        assert_eq!(code(taken).0, ErrorCode::AlreadyExists);
        assert_eq!(s.epoch_token(g, 3).await.unwrap(), Some(([3; 32], 3)));
    }

    /// A mailbox's quota counts messages and bytes; a refused drop stores nothing, a retried
    /// drop answers its first seq even when the mailbox has filled since; acknowledging frees
    /// the quota, and a repeated acknowledgement answers the first count.
    async fn mailbox_quota_and_retries(s) {
        let limits = Limits { mailbox_quota_messages: 2, mailbox_quota_bytes: 100, ..Limits::default() };
        let mb = mailbox(&*s).await;
        let first = rand_id();
        let a = s.drop_message(first, mb, vec![1; 10], now(), &limits).await.unwrap();
        let b = s.drop_message(rand_id(), mb, vec![2; 10], now(), &limits).await.unwrap();
        assert!(b > a);
        assert_eq!(s.drop_message(first, mb, vec![1; 10], now(), &limits).await.unwrap(), a);
        let full = s.drop_message(rand_id(), mb, vec![3; 10], now(), &limits).await.unwrap_err();
        assert_eq!(code(full).0, ErrorCode::QuotaExceeded);
        let read = s.read_mailbox(mb, 0, 10, now()).await.unwrap();
        assert_eq!(read.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![a, b]);
        let ack = rand_id();
        assert_eq!(s.ack_messages(ack, mb, vec![a, a + 1000]).await.unwrap(), 1);
        assert_eq!(s.ack_messages(ack, mb, vec![a, b]).await.unwrap(), 1, "a repeat answers the first count");
        // Bytes count too: 10 held + 91 > 100.
        let big = s.drop_message(rand_id(), mb, vec![4; 91], now(), &limits).await.unwrap_err();
        assert_eq!(code(big).0, ErrorCode::QuotaExceeded);
        let c = s.drop_message(rand_id(), mb, vec![4; 90], now(), &limits).await.unwrap();
        assert!(c > b, "seqs never go back");
        let gone = s.drop_message(rand_id(), rand_id(), vec![1], now(), &limits).await.unwrap_err();
        assert_eq!(code(gone).0, ErrorCode::NotFound);
    }

    /// The KeyPackage pool: bounded (an upload past the bound stores nothing), each
    /// KeyPackage handed out once, a retried claim gets the same one, then the last resort,
    /// then a clear refusal when there is none.
    async fn key_packages_are_claimed_once(s) {
        let mb = mailbox(&*s).await;
        let none = s.claim_key_package(rand_id(), mb).await.unwrap_err();
        assert_eq!(code(none).0, ErrorCode::NoKeyPackage);
        let n = s.upload_key_packages(rand_id(), mb, vec![vec![1], vec![2]], None, 3).await.unwrap();
        assert_eq!((n.available, n.has_last_resort), (2, false));
        let over = s.upload_key_packages(rand_id(), mb, vec![vec![3], vec![4]], Some(vec![9]), 3).await.unwrap_err();
        assert_eq!(code(over).0, ErrorCode::QuotaExceeded);
        let n = s.key_package_count(mb).await.unwrap();
        assert_eq!((n.available, n.has_last_resort), (2, false), "a refused upload stores nothing");
        let upload = rand_id();
        s.upload_key_packages(upload, mb, vec![], Some(vec![9]), 3).await.unwrap();
        let n = s.upload_key_packages(upload, mb, vec![], Some(vec![9]), 3).await.unwrap();
        assert_eq!((n.available, n.has_last_resort), (2, true));
        let first = rand_id();
        let a = s.claim_key_package(first, mb).await.unwrap();
        assert_eq!(s.claim_key_package(first, mb).await.unwrap(), a, "a retry gets the same KeyPackage");
        let b = s.claim_key_package(rand_id(), mb).await.unwrap();
        assert_ne!(a.key_package, b.key_package);
        assert!(!a.last_resort && !b.last_resort);
        let lr = s.claim_key_package(rand_id(), mb).await.unwrap();
        assert!(lr.last_resort);
        assert_eq!(lr.key_package, Bytes(vec![9]));
        assert_eq!(s.key_package_count(mb).await.unwrap().available, 0);
        let missing = s.claim_key_package(rand_id(), rand_id()).await.unwrap_err();
        assert_eq!(code(missing).0, ErrorCode::NotFound);
    }

    /// Appends: the token is checked before anything (even a retry record), the epoch is
    /// compared and set by commits — of two commits at one epoch one wins and the other is
    /// told the current epoch — a retry of the winner answers its seq, and a commit without the
    /// next token or past the group's byte limit changes nothing.
    async fn appends_compare_and_set_the_epoch(s) {
        let limits = Limits { max_group_bytes: 1000, ..Limits::default() };
        let g = group(&*s).await;
        let app = append_req(g, 0, [0; 32], EntryKind::Application, b"hello");
        let first = s.append(app.clone(), now(), &limits).await.unwrap();
        assert!(first.fresh);
        let again = s.append(app.clone(), now(), &limits).await.unwrap();
        assert_eq!((again.seq, again.fresh), (first.seq, false));
        let forged = AppendRequest { token_hash: [5; 32], ..app.clone() };
        assert_eq!(code(s.append(forged, now(), &limits).await.unwrap_err()).0, ErrorCode::BadToken);
        let no_next = AppendRequest { next_token_hash: None, ..append_req(g, 0, [0; 32], EntryKind::Commit, b"c") };
        assert_eq!(code(s.append(no_next, now(), &limits).await.unwrap_err()).0, ErrorCode::BadRequest);
        let c1 = append_req(g, 0, [0; 32], EntryKind::Commit, b"commit one");
        let c2 = append_req(g, 0, [0; 32], EntryKind::Commit, b"commit two");
        let won = s.append(c1.clone(), now(), &limits).await.unwrap();
        assert!(won.seq > first.seq);
        assert_eq!(code(s.append(c2, now(), &limits).await.unwrap_err()), (ErrorCode::EpochConflict, Some(1)));
        assert_eq!(s.append(c1, now(), &limits).await.unwrap().seq, won.seq);
        let stale = append_req(g, 0, [0; 32], EntryKind::Application, b"late");
        assert_eq!(code(s.append(stale, now(), &limits).await.unwrap_err()), (ErrorCode::StaleEpoch, Some(1)));
        let too_big = append_req(g, 1, [1; 32], EntryKind::Application, &[0; 990]);
        assert_eq!(code(s.append(too_big, now(), &limits).await.unwrap_err()).0, ErrorCode::StorageFull);
        let next = s.append(append_req(g, 1, [1; 32], EntryKind::Application, b"next"), now(), &limits).await.unwrap();
        let e0 = s.read_entries(g, 0, 0, 100).await.unwrap();
        assert_eq!(e0.entries.len(), 2);
        assert_eq!((e0.current_epoch, e0.next_token_hash.clone()), (1, Some(Bytes(vec![1; 32]))));
        assert_eq!(e0.last_seq, next.seq);
        let e1 = s.read_entries(g, 1, 0, 100).await.unwrap();
        assert_eq!(e1.entries.iter().map(|e| e.body.0.clone()).collect::<Vec<_>>(), vec![b"next".to_vec()]);
        assert_eq!(s.token_epoch(g, [1; 32]).await.unwrap(), Some(1));
        let missing = append_req(rand_id(), 0, [0; 32], EntryKind::Application, b"x");
        assert_eq!(code(s.append(missing, now(), &limits).await.unwrap_err()).0, ErrorCode::NotFound);
    }

    /// A commit's Welcomes use the Welcome allowance on top of a full mailbox; one that does
    /// not fit even so, or whose mailbox is gone, is reported undelivered and the commit
    /// stands.
    async fn welcomes_use_the_allowance_and_never_block_a_commit(s) {
        let limits = Limits {
            mailbox_quota_messages: 1,
            welcome_allowance_messages: 1,
            ..Limits::default()
        };
        let (full, fuller, gone) = (mailbox(&*s).await, mailbox(&*s).await, rand_id());
        s.drop_message(rand_id(), full, vec![1], now(), &limits).await.unwrap();
        for _ in 0..2 {
            s.drop_message(rand_id(), fuller, vec![1], now(), &limits).await.ok();
        }
        let g = group(&*s).await;
        // Fill `fuller` to quota + allowance with a first commit's Welcome.
        let mut c = append_req(g, 0, [0; 32], EntryKind::Commit, b"add");
        let kp = claimed(&*s, fuller).await;
        c.welcomes = vec![WelcomeDrop { mailbox_id: fuller, body: Bytes(vec![8]), key_package_hash: kp }];
        assert_eq!(s.append(c, now(), &limits).await.unwrap().welcomed, vec![fuller]);
        let mut c = append_req(g, 1, [1; 32], EntryKind::Commit, b"add more");
        let hashes = [claimed(&*s, full).await, claimed(&*s, fuller).await, Some(Bytes(vec![0; 32]))];
        c.welcomes = [full, fuller, gone]
            .into_iter()
            .zip(hashes)
            .map(|(m, kp)| WelcomeDrop { mailbox_id: m, body: Bytes(vec![9]), key_package_hash: kp })
            .collect();
        let done = s.append(c, now(), &limits).await.unwrap();
        assert_eq!(done.welcomed, vec![full]);
        let mut undelivered = done.undelivered.clone();
        undelivered.sort();
        let mut expected = vec![fuller, gone];
        expected.sort();
        assert_eq!(undelivered, expected);
        assert_eq!(s.read_mailbox(full, 0, 10, now()).await.unwrap().len(), 2);
        assert_eq!(s.read_mailbox(fuller, 0, 10, now()).await.unwrap().len(), 2);
        assert_eq!(s.read_entries(g, 1, 0, 10).await.unwrap().current_epoch, 2);
    }

    /// Blobs: the bytes uploaded to one source's unexpired blobs stay within its quota (a new
    /// blob's length must fit what is left, and so must every piece); an expired blob frees it.
    async fn blob_quota_per_source(s) {
        let limits = Limits { blob_quota_bytes: 100, blob_ttl_secs: 60, ..Limits::default() };
        let quota = |now| BlobQuota { now, bytes: limits.blob_quota_bytes };
        let (src, other) = ([1; 32], [2; 32]);
        let t = now();
        let a = rand_id();
        s.create_blob(a, [0; 32], 60, src, false, t, &limits).await.unwrap();
        assert!(s.advance_blob(a, 0, 30, t + 60, quota(t)).await.unwrap());
        assert!(!s.advance_blob(a, 0, 60, t + 60, quota(t)).await.unwrap(), "moved by someone else");
        assert!(!s.advance_blob(a, 30, 61, t + 60, quota(t)).await.unwrap(), "past the end");
        assert!(s.advance_blob(a, 30, 60, t + 60, quota(t)).await.unwrap());
        assert_eq!(s.blob(a, t).await.unwrap().unwrap().offset, 60);
        let over = s.create_blob(rand_id(), [0; 32], 41, src, false, t, &limits).await.unwrap_err();
        assert_eq!(code(over).0, ErrorCode::QuotaExceeded);
        s.create_blob(rand_id(), [0; 32], 41, other, false, t, &limits).await.unwrap();
        // Sixty seconds on, the blobs have expired and the quota is free again.
        assert_eq!(s.expire_blobs(t + 60).await.unwrap().len(), 2);
        s.create_blob(rand_id(), [0; 32], 100, src, false, t + 60, &limits).await.unwrap();
    }

    /// Security review 3, M8: the quota counts bytes actually uploaded — a declared length
    /// that never arrives holds none of it, and pieces beyond it are refused whatever was
    /// declared; a blob whose upload is not finished expires within the hour, a finished one
    /// lives the full lifetime from when it finished.
    async fn finding_m8_the_blob_quota_counts_uploaded_bytes_and_unfinished_ones_expire(s) {
        let limits = Limits { blob_quota_bytes: 1000, blob_ttl_secs: 30 * 86_400, ..Limits::default() };
        let quota = |now| BlobQuota { now, bytes: limits.blob_quota_bytes };
        let src = [3; 32];
        let t = now();
        let (idle, done, third) = (rand_id(), rand_id(), rand_id());
        // Declared lengths alone (1,900 bytes) hold nothing.
        s.create_blob(idle, [0; 32], 900, src, false, t, &limits).await.unwrap();
        s.create_blob(done, [0; 32], 100, src, false, t, &limits).await.unwrap();
        s.create_blob(third, [0; 32], 900, src, false, t, &limits).await.unwrap();
        assert!(s.advance_blob(done, 0, 100, t + 30 * 86_400, quota(t)).await.unwrap());
        assert!(s.advance_blob(idle, 0, 500, t + 30 * 86_400, quota(t)).await.unwrap());
        // 600 uploaded: another 401 do not fit, 400 do.
        assert!(!s.advance_blob(third, 0, 401, t + 30 * 86_400, quota(t)).await.unwrap());
        assert_eq!(s.blob(third, t).await.unwrap().unwrap().offset, 0);
        assert!(s.advance_blob(third, 0, 400, t + 30 * 86_400, quota(t)).await.unwrap());
        let over = s.create_blob(rand_id(), [0; 32], 1, src, false, t, &limits).await.unwrap_err();
        assert_eq!(code(over).0, ErrorCode::QuotaExceeded);
        // An hour on, the unfinished ones are gone and their bytes free; the finished one stays.
        let mut gone = s.expire_blobs(t + 3600).await.unwrap();
        gone.sort();
        let mut expected = vec![idle, third];
        expected.sort();
        assert_eq!(gone, expected);
        assert!(s.blob(done, t + 3600).await.unwrap().is_some());
        s.create_blob(rand_id(), [0; 32], 900, src, false, t + 3600, &limits).await.unwrap();
    }

    /// The sweep deletes expired messages and entries and keeps the counters right: the freed
    /// quota can be used again.
    async fn sweep_keeps_counters_right(s) {
        let limits = Limits { mailbox_quota_messages: 1, mailbox_ttl_secs: 10, ..Limits::default() };
        let mb = mailbox(&*s).await;
        let t = now();
        s.drop_message(rand_id(), mb, vec![1; 5], t, &limits).await.unwrap();
        let swept = s.sweep(t + 11, &limits).await.unwrap();
        assert_eq!(swept.mailbox_messages, 1);
        s.touch_mailbox(mb, t + 11).await.unwrap();
        s.drop_message(rand_id(), mb, vec![2; 5], t + 11, &limits).await.unwrap();
        assert!(s.use_nonce(rand_id(), t + 100, mb, t).await.unwrap());
        let n = rand_id();
        assert!(s.use_nonce(n, t + 100, mb, t).await.unwrap());
        assert!(!s.use_nonce(n, t + 100, mb, t).await.unwrap(), "a nonce is used once");
    }

    /// A channel's records count in the relay's stored bytes (`max_relay_bytes` refuses writes
    /// past it), as groups, mailboxes and blobs do; a copy stored again counts once.
    async fn channel_records_count_in_the_stored_bytes(s) {
        let t = now();
        let before = s.sweep(t, &Limits::default()).await.unwrap().stored_bytes;
        let ch = rand_id();
        let genesis = samizdat_relay::store::NewRecord {
            channel: ch,
            seq: 0,
            prev: [0; 32],
            hash: [1; 32],
            admins: Some(vec![[9; 32]]),
            bytes: vec![0; 300],
        };
        assert!(s.store_channel_record(genesis.clone(), t).await.unwrap());
        let post = samizdat_relay::store::NewRecord {
            channel: ch,
            seq: 1,
            prev: [1; 32],
            hash: [2; 32],
            admins: None,
            bytes: vec![0; 700],
        };
        assert!(s.store_channel_record(post.clone(), t).await.unwrap());
        assert!(!s.store_channel_record(post, t).await.unwrap(), "a copy is stored once");
        let after = s.sweep(t, &Limits::default()).await.unwrap().stored_bytes;
        assert_eq!(after - before, 1000);
    }
}

/// Migrations (rusqlite_migration for SQLite, refinery for PostgreSQL): a PostgreSQL database
/// migrated by the earlier hand-written runner (its `samizdat_migrations` table) is adopted —
/// the versions it applied are not applied again, the rest are — and a database written by a
/// newer relay is refused with a clear error, on both backends.
mod migrations {
    use super::*;

    #[tokio::test]
    async fn postgres_adopts_the_old_runner_history_and_refuses_a_newer_schema() {
        let Some(Backend::Postgres(url)) = Backend::postgres().await else {
            return;
        };
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        // What the earlier runner left behind after three versions.
        client
            .batch_execute("CREATE TABLE samizdat_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await
            .unwrap();
        for (v, sql) in [
            (
                1i64,
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
            (2, include_str!("../../migrations/postgres/0002_bounds.sql")),
            (3, include_str!("../../migrations/postgres/0003_blobs.sql")),
        ] {
            client.batch_execute(sql).await.unwrap();
            client
                .execute("INSERT INTO samizdat_migrations VALUES ($1, 0)", &[&v])
                .await
                .unwrap();
        }
        // Opening applies 4, 5 and 6 only (1–3 create tables without IF NOT EXISTS: applying
        // them again would fail).
        let store = PgStore::open(&url, 2).await.unwrap();
        let g = group(&store).await;
        store
            .append(
                append_req(g, 0, [0; 32], EntryKind::Application, b"x"),
                now(),
                &Limits::default(),
            )
            .await
            .unwrap();
        drop(store);
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM refinery_schema_history ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
        let old: bool = client
            .query_one("SELECT to_regclass('samizdat_migrations') IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!old, "the old history table is gone");
        PgStore::open(&url, 2).await.unwrap();
        // A version this relay does not know: refused, nothing touched.
        client
            .execute(
                "INSERT INTO refinery_schema_history VALUES (99, 'future', '2030-01-01T00:00:00Z', '1')",
                &[],
            )
            .await
            .unwrap();
        let Err(e) = PgStore::open(&url, 2).await else {
            panic!("a newer schema must be refused");
        };
        assert!(e.to_string().contains("cannot migrate"), "{e}");
    }

    #[tokio::test]
    async fn sqlite_refuses_a_database_from_a_newer_relay() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let conn = rusqlite::Connection::open(dir.path().join("relay.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let Err(e) = SqliteStore::open(dir.path()) else {
            panic!("a newer schema must be refused");
        };
        assert!(e.to_string().contains("newer samizdat"), "{e}");
    }
}
