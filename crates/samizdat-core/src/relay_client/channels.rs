//! Channels on a relay: store a signed record, read the head and segments (see
//! `samizdat_proto::channel` and `docs/PROTOCOL.md`). Reading sends nothing that says who reads.

use samizdat_proto::{ChannelHead, ErrorCode, Id, Stored};

use super::RelayClient;
use crate::{Error, Result};

impl RelayClient {
    /// Store one record (its bytes as signed). True when the relay stored it now, false when
    /// it already held it.
    pub async fn store_channel_record(&self, channel: &Id, record: &[u8]) -> Result<bool> {
        let path = format!("/v1/channels/{channel}/records");
        let r = self
            .send(|base| {
                self.http
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/octet-stream")
                    .body(record.to_vec())
            })
            .await?;
        let fresh = r.status() == reqwest::StatusCode::CREATED;
        let _: Stored = self.finish(r).await?;
        Ok(fresh)
    }

    /// Where the channel's chain stands on this relay; `None` if the relay has no such channel.
    pub async fn channel_head(&self, channel: &Id) -> Result<Option<ChannelHead>> {
        let r = self
            .send(|base| self.http.get(format!("{base}/v1/channels/{channel}")))
            .await?;
        match self.finish::<ChannelHead>(r).await {
            Ok(h) => Ok(Some(h)),
            Err(Error::Relay {
                code: ErrorCode::NotFound,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The bytes of segment `n` (records `n * 64 ..`), as the relay (or a cache before it)
    /// holds them; the reader checks every record.
    pub async fn channel_segment(&self, channel: &Id, n: u64) -> Result<Vec<u8>> {
        let r = self
            .send(|base| {
                self.http
                    .get(format!("{base}/v1/channels/{channel}/segments/{n}"))
            })
            .await?;
        if r.status().is_success() {
            return self.read_capped(r).await;
        }
        let _: Stored = self.finish(r).await?;
        Err(Error::Protocol(
            "the relay answered a segment without one".into(),
        ))
    }
}
