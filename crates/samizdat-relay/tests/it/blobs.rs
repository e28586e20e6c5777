//! The blob store (`/v1/blobs`): resumable uploads, limits, downloads with ranges, restarts
//! and expiry — on both backends.

use samizdat_proto::{BlobCreated, BlobOffset, Limits};

use crate::harness::{TestRelay, rand_id};

fn small_limits() -> Limits {
    Limits {
        max_blob_bytes: 1_000,
        max_blob_chunk: 300,
        blob_quota_bytes: 1_500,
        ..Limits::default()
    }
}

async fn create(relay: &TestRelay, length: u64) -> reqwest::Response {
    relay
        .http
        .post(relay.url("/v1/blobs"))
        .header("upload-length", length.to_string())
        .send()
        .await
        .unwrap()
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
        assert_eq!(code(create(&relay, 1_001).await).await, (413, "too_large".into()));
        let r = create(&relay, 1_000).await;
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
        // The uploader's quota (1,500 bytes of unexpired blobs) holds.
        assert_eq!(code(create(&relay, 600).await).await, (429, "quota_exceeded".into()));
        assert_eq!(create(&relay, 500).await.status(), 201);
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
