//! The blob store (`/v1/blobs`): resumable uploads, limits, downloads with ranges, restarts
//! and expiry — on both backends.

use samizdat_proto::{BlobCreated, BlobOffset, Limits};

use crate::harness::{Group, TestRelay, rand_id};

fn small_limits() -> Limits {
    Limits {
        max_blob_bytes: 1_000,
        max_blob_chunk: 300,
        blob_quota_bytes: 1_500,
        ..Limits::default()
    }
}

/// Create a blob for `group` (a member's epoch token vouches for it).
async fn create_in(relay: &TestRelay, group: &Group, length: u64) -> reqwest::Response {
    relay
        .http
        .post(relay.url("/v1/blobs"))
        .header("upload-length", length.to_string())
        .header("x-samizdat-group", group.id.to_string())
        .header(
            "x-samizdat-token",
            samizdat_proto::Bytes::encode(group.token(0)),
        )
        .send()
        .await
        .unwrap()
}

/// Create a blob for a new group of its own.
async fn create(relay: &TestRelay, length: u64) -> reqwest::Response {
    let g = relay.create_group(0).await;
    create_in(relay, &g, length).await
}

async fn patch(
    relay: &TestRelay,
    blob: &BlobCreated,
    token: &str,
    offset: u64,
    body: &[u8],
) -> reqwest::Response {
    relay
        .http
        .patch(relay.url(&format!("/v1/blobs/{}/upload", blob.blob_id)))
        .header("x-samizdat-upload-token", token)
        .header("upload-offset", offset.to_string())
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn offset(relay: &TestRelay, blob: &BlobCreated, token: &str) -> BlobOffset {
    relay
        .http
        .get(relay.url(&format!("/v1/blobs/{}/upload", blob.blob_id)))
        .header("x-samizdat-upload-token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or("").to_string())
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 256) as u8).collect()
}

crate::backend_tests! {
    async fn blob_uploads_resume_and_keep_their_rules(b: Backend) {
        let relay = TestRelay::start_with(&b, small_limits()).await;
        let g = relay.create_group(0).await;
        assert_eq!(code(create_in(&relay, &g, 1_001).await).await, (413, "too_large".into()));
        let r = create_in(&relay, &g, 1_000).await;
        assert_eq!(r.status(), 201);
        let blob: BlobCreated = r.json().await.unwrap();
        let token = samizdat_proto::Bytes::encode(&blob.upload_token.0);
        let bytes = data(1_000);
        // Nothing to download before the upload is finished.
        let get = |from: Option<u64>| {
            let mut req = relay.http.get(relay.url(&format!("/v1/blobs/{}", blob.blob_id)));
            if let Some(f) = from {
                req = req.header("range", format!("bytes={f}-"));
            }
            req.send()
        };
        assert_eq!(code(get(None).await.unwrap()).await, (409, "incomplete".into()));
        // Only the token's holder writes, and only at the relay's offset.
        assert_eq!(code(patch(&relay, &blob, "d3Jvbmc", 0, b"x").await).await, (403, "bad_token".into()));
        let no_token = relay
            .http
            .get(relay.url(&format!("/v1/blobs/{}/upload", blob.blob_id)))
            .send()
            .await
            .unwrap();
        assert_eq!(code(no_token).await, (403, "bad_token".into()));
        assert_eq!(code(patch(&relay, &blob, &token, 5, b"x").await).await, (409, "offset_mismatch".into()));
        assert_eq!(code(patch(&relay, &blob, &token, 0, &bytes[..301]).await).await, (413, "too_large".into()));
        let mut at = 0usize;
        for piece in [300usize, 300, 300] {
            let r = patch(&relay, &blob, &token, at as u64, &bytes[at..at + piece]).await;
            assert_eq!(r.status(), 200);
            let o: BlobOffset = r.json().await.unwrap();
            at += piece;
            assert_eq!(o, BlobOffset { offset: at as u64, length: 1_000 });
        }
        // Past the end is refused; the offset query says where to go on.
        assert_eq!(
            code(patch(&relay, &blob, &token, 900, &bytes[..200]).await).await,
            (413, "too_large".into())
        );
        let o = offset(&relay, &blob, &token).await;
        assert_eq!(o.offset, 900);
        assert_eq!(patch(&relay, &blob, &token, 900, &bytes[900..]).await.status(), 200);
        let whole = get(None).await.unwrap();
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.bytes().await.unwrap().to_vec(), bytes);
        let tail = get(Some(600)).await.unwrap();
        assert_eq!(tail.status(), 206);
        assert_eq!(
            tail.headers()["content-range"].to_str().unwrap(),
            "bytes 600-999/1000"
        );
        assert_eq!(tail.bytes().await.unwrap().to_vec(), bytes[600..].to_vec());
        // The group's quota (1,500 bytes of unexpired blobs) holds; another group has its own.
        assert_eq!(code(create_in(&relay, &g, 600).await).await, (429, "quota_exceeded".into()));
        assert_eq!(create_in(&relay, &g, 500).await.status(), 201);
        assert_eq!(create(&relay, 600).await.status(), 201);
        // Unknown ids.
        let r = relay
            .http
            .get(relay.url(&format!("/v1/blobs/{}", rand_id())))
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await, (404, "not_found".into()));
        relay.stop().await;
    }

    /// Security review 3, M8: a blob is created only for a group (one of its epoch tokens)
    /// or a mailbox (signed by its owner), and the quota is theirs: a stranger — or everyone
    /// behind one Tor exit — can neither create blobs nor use up anyone's quota.
    async fn finding_m8_blobs_are_created_for_a_group_or_mailbox_and_counted_there(b: Backend) {
        let relay = TestRelay::start_with(&b, small_limits()).await;
        let g = relay.create_group(0).await;
        let bare = relay.http.post(relay.url("/v1/blobs")).header("upload-length", "10").send().await.unwrap();
        assert_eq!(code(bare).await, (403, "bad_token".into()));
        let wrong = relay
            .http
            .post(relay.url("/v1/blobs"))
            .header("upload-length", "10")
            .header("x-samizdat-group", g.id.to_string())
            .header("x-samizdat-token", samizdat_proto::Bytes::encode(b"not a token"))
            .send()
            .await
            .unwrap();
        assert_eq!(code(wrong).await, (403, "bad_token".into()));
        // The group's quota (1,500 bytes) counts what is uploaded: two blobs of 1,000 declared
        // bytes are created; the first is uploaded whole, the second gets 300 more, no further.
        let first: BlobCreated = create_in(&relay, &g, 1_000).await.json().await.unwrap();
        let second: BlobCreated = create_in(&relay, &g, 1_000).await.json().await.unwrap();
        let bytes = data(1_000);
        let (t1, t2) = (
            samizdat_proto::Bytes::encode(&first.upload_token.0),
            samizdat_proto::Bytes::encode(&second.upload_token.0),
        );
        for at in [0usize, 300, 600, 900] {
            let end = (at + 300).min(1_000);
            assert_eq!(patch(&relay, &first, &t1, at as u64, &bytes[at..end]).await.status(), 200);
        }
        assert_eq!(patch(&relay, &second, &t2, 0, &bytes[..300]).await.status(), 200);
        assert_eq!(code(patch(&relay, &second, &t2, 300, &bytes[300..600]).await).await, (429, "quota_exceeded".into()));
        assert_eq!(offset(&relay, &second, &t2).await.offset, 300, "the refused piece was not kept");
        assert_eq!(code(create_in(&relay, &g, 201).await).await, (429, "quota_exceeded".into()));
        // The same address still creates for another group: the quota is the group's.
        assert_eq!(create(&relay, 1_000).await.status(), 201);
        // A mailbox's owner, signing; an unsigned or wrongly signed mailbox request is refused.
        let mb = relay.create_mailbox().await;
        let signed = relay
            .signed(&mb, reqwest::Method::POST, "/v1/blobs", Vec::new())
            .header("upload-length", "100")
            .header("x-samizdat-mailbox", mb.id.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), 201);
        let other = relay.create_mailbox().await;
        let forged = relay
            .signed(&other, reqwest::Method::POST, "/v1/blobs", Vec::new())
            .header("upload-length", "100")
            .header("x-samizdat-mailbox", mb.id.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(code(forged).await, (401, "bad_signature".into()));
        relay.stop().await;
    }

    /// Security review 3, M8: a relay keeps a share of its disk free by default; below it,
    /// writes are refused with `storage_full` (here the floor is set to 100% to be below it).
    async fn finding_m8_the_relay_keeps_free_disk_by_default(b: Backend) {
        assert!(Limits::default().min_free_disk_percent > 0);
        let limits = Limits { min_free_disk_percent: 100, ..small_limits() };
        let relay = TestRelay::start_with(&b, limits).await;
        let g = relay.create_group(0).await;
        assert_eq!(code(create_in(&relay, &g, 10).await).await, (429, "storage_full".into()));
        let mb = relay.create_mailbox().await;
        assert_eq!(relay.drop_msg(&mb.id, b"hello".to_vec()).await.unwrap_err().code, samizdat_proto::ErrorCode::StorageFull);
        relay.stop().await;
    }

    async fn an_upload_survives_a_relay_restart(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start_in(&b, dir.path(), small_limits()).await;
        let blob: BlobCreated = create(&relay, 1_000).await.json().await.unwrap();
        let token = samizdat_proto::Bytes::encode(&blob.upload_token.0);
        let bytes = data(1_000);
        assert_eq!(patch(&relay, &blob, &token, 0, &bytes[..300]).await.status(), 200);
        relay.stop().await;
        let relay = TestRelay::start_in(&b, dir.path(), small_limits()).await;
        let o = offset(&relay, &blob, &token).await;
        assert_eq!(o.offset, 300, "acknowledged bytes survive the restart");
        for at in [300usize, 600, 900] {
            let end = (at + 300).min(1_000);
            assert_eq!(patch(&relay, &blob, &token, at as u64, &bytes[at..end]).await.status(), 200);
        }
        let got = relay
            .http
            .get(relay.url(&format!("/v1/blobs/{}", blob.blob_id)))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.to_vec(), bytes);
        relay.stop().await;
    }

    async fn expired_blobs_are_deleted_with_their_files(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        // Long enough that a loaded machine still uploads before the blob expires.
        let limits = Limits { blob_ttl_secs: 3, ..small_limits() };
        let relay = TestRelay::start_configured(&b, dir.path(), limits, |c| {
            c.sweep_interval_secs = 1;
        })
        .await;
        let blob: BlobCreated = create(&relay, 10).await.json().await.unwrap();
        let token = samizdat_proto::Bytes::encode(&blob.upload_token.0);
        assert_eq!(patch(&relay, &blob, &token, 0, &data(10)).await.status(), 200);
        // A file left by a crash between deleting a record and its file (two days old).
        let orphan = dir.path().join("blobs").join(format!("{}.blob", "ab".repeat(16)));
        let f = std::fs::File::create(&orphan).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400))
            .unwrap();
        drop(f);
        let files = || std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert!(orphan.exists());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while files() > 0 {
            assert!(std::time::Instant::now() < deadline, "the expired blob's file stays");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let r = relay
            .http
            .get(relay.url(&format!("/v1/blobs/{}", blob.blob_id)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        relay.stop().await;
    }
}
