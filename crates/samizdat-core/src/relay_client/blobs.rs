//! Blobs on the relay: attachments and history archives, uploaded in resumable pieces.

use super::*;

impl RelayClient {
    /// `POST /v1/blobs`: room for a blob of `length` bytes.
    pub async fn create_blob(
        &self,
        length: u64,
        owner: BlobOwner<'_>,
    ) -> Result<proto::BlobCreated> {
        // Signed afresh for every attempt (a nonce may be spent on a lost one).
        let r = self
            .send(|base| {
                let req = self
                    .http
                    .post(format!("{base}/v1/blobs"))
                    .header(proto::HEADER_UPLOAD_LENGTH, length.to_string());
                match &owner {
                    BlobOwner::Group { log, token } => req
                        .header(proto::HEADER_GROUP, log.to_string())
                        .header(proto::HEADER_TOKEN, Bytes::encode(token)),
                    BlobOwner::Mailbox { mailbox, key } => {
                        signed_creation(req, key).header(proto::HEADER_MAILBOX, mailbox.to_string())
                    }
                    BlobOwner::Channel { channel, key } => {
                        signed_creation(req, key).header(proto::HEADER_CHANNEL, channel.to_string())
                    }
                }
            })
            .await?;
        self.finish(r).await
    }

    /// How many bytes of a blob the relay holds durably.
    pub async fn blob_offset(&self, blob: &Id, token: &[u8]) -> Result<proto::BlobOffset> {
        let r = self
            .send(|base| {
                self.http
                    .get(format!("{base}/v1/blobs/{blob}/upload"))
                    .header(proto::HEADER_UPLOAD_TOKEN, Bytes::encode(token))
            })
            .await?;
        self.finish(r).await
    }

    /// Append `piece` at `offset`; answered once it is durable.
    pub async fn put_blob_piece(
        &self,
        blob: &Id,
        token: &[u8],
        offset: u64,
        piece: Vec<u8>,
    ) -> Result<proto::BlobOffset> {
        let r = self
            .send(|base| {
                self.http
                    .patch(format!("{base}/v1/blobs/{blob}/upload"))
                    .header(proto::HEADER_UPLOAD_TOKEN, Bytes::encode(token))
                    .header(proto::HEADER_UPLOAD_OFFSET, offset.to_string())
                    .header("content-type", "application/octet-stream")
                    .body(piece.clone())
            })
            .await?;
        self.finish(r).await
    }

    /// Store `bytes` as a new blob (in pieces of at most 4 MiB); returns its id.
    pub async fn put_blob(&self, bytes: &[u8], owner: BlobOwner<'_>) -> Result<Id> {
        const PIECE: usize = 4 << 20;
        let created = self.create_blob(bytes.len() as u64, owner).await?;
        let token = created.upload_token.0;
        let mut offset = 0usize;
        while offset < bytes.len() {
            let end = (offset + PIECE).min(bytes.len());
            let at = self
                .put_blob_piece(
                    &created.blob_id,
                    &token,
                    offset as u64,
                    bytes[offset..end].to_vec(),
                )
                .await?;
            // The relay says where it is; it never goes back or past the end.
            let at = usize::try_from(at.offset).unwrap_or(usize::MAX);
            if at <= offset || at > bytes.len() {
                return Err(Error::Protocol(
                    "the relay reported an odd blob offset".into(),
                ));
            }
            offset = at;
        }
        Ok(created.blob_id)
    }

    /// A whole finished blob of exactly `len` bytes (at most `max`), read into memory.
    pub async fn get_blob_bytes(&self, blob: &Id, len: u64, max: u64) -> Result<Vec<u8>> {
        if len > max {
            return Err(Error::Protocol(format!(
                "a blob of {len} bytes is over the {max} this client reads into memory"
            )));
        }
        let mut r = self.get_blob(blob, 0).await?;
        let mut out = Vec::with_capacity(len as usize);
        while let Some(chunk) = r.chunk().await.map_err(|e| self.stream_error(e))? {
            if (out.len() + chunk.len()) as u64 > len {
                return Err(Error::Protocol("the blob is longer than announced".into()));
            }
            out.extend_from_slice(&chunk);
        }
        if out.len() as u64 != len {
            return Err(Error::Protocol("the blob is shorter than announced".into()));
        }
        Ok(out)
    }

    /// Start downloading a finished blob from byte `from`. The answer streams; read it with
    /// [`reqwest::Response::chunk`]. Errors are read here.
    pub async fn get_blob(&self, blob: &Id, from: u64) -> Result<reqwest::Response> {
        let r = self
            .send(|base| {
                let req = self.http.get(format!("{base}/v1/blobs/{blob}"));
                if from > 0 {
                    req.header("range", format!("bytes={from}-"))
                } else {
                    req
                }
            })
            .await?;
        if r.status().is_success() {
            return Ok(r);
        }
        self.finish::<serde_json::Value>(r).await?;
        Err(Error::Protocol(
            "the relay answered a download oddly".into(),
        ))
    }
}

/// A blob creation signed with `key` (a mailbox owner's or a channel admin's), with a fresh
/// timestamp and nonce.
fn signed_creation(req: reqwest::RequestBuilder, key: &MailboxKey) -> reqwest::RequestBuilder {
    let ts = now_secs();
    let nonce = random_id();
    let payload = proto::http_signing_payload("POST", "/v1/blobs", ts, &nonce, &[]);
    req.header(proto::HEADER_TIMESTAMP, ts.to_string())
        .header(proto::HEADER_NONCE, nonce.to_string())
        .header(proto::HEADER_SIGNATURE, Bytes::encode(&key.sign(&payload)))
}
