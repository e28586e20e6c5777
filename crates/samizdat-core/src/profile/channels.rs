//! Channels (issue 34): one set of admins writes, anyone with the link reads, no one can list
//! the readers. See `crate::channel` for the link, the sealing and the chain check.
//!
//! An admin signs every record with a key made for this channel only (never the identity or
//! mailbox key, so the relay cannot tie the channel to a person). A follower sends nothing: it
//! fetches segments from the first relay of the link that answers, checks every record, and
//! falls back to the next relay (a mirror) when one is unreachable or shows a record that
//! does not belong to the chain. The profile keeps every record as signed, so it can fill a
//! mirror it added.

use samizdat_proto::channel::{self as wire, RecordKind};
use zeroize::Zeroizing;

use super::*;
use crate::channel::{
    Chain, ChainFault, ChannelKey, ChannelLink, FileCopy, MAX_FILE_COPIES, Sealed, record_hash,
};
use crate::ids::ChannelId;
use crate::payload::Attachment;

/// Most channels one profile creates or follows.
pub const MAX_CHANNELS: usize = 1000;
/// How often an admin's post is re-chained when another admin posted first.
const CHAIN_RETRIES: usize = 4;

/// A channel in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ChannelView {
    pub id: ChannelId,
    pub name: String,
    pub about: String,
    /// This profile can post.
    pub admin: bool,
    /// How many admins the channel has.
    pub admins: usize,
    /// Where it is read from, in order: the home relay, then mirrors.
    pub relays: Vec<String>,
    /// Posts that are not deleted.
    pub posts: u64,
    /// Posts after the last one read.
    pub unread: u64,
    /// The last record's number.
    pub last_seq: u64,
    pub pinned: Option<u64>,
    /// The last time a relay's copy was not the channel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<ChannelFaultView>,
}

/// A relay's copy that did not check out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ChannelFaultView {
    pub relay: String,
    pub fault: ChainFault,
    /// Unix seconds.
    pub at: u64,
}

/// One post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ChannelPostView {
    pub seq: u64,
    pub text: String,
    /// When the admin posted it (their clock, Unix seconds).
    pub posted_at: u64,
    pub edited: bool,
    pub pinned: bool,
    /// Its photo or file (`channel_download` fetches it; a photo's thumbnail is here already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<AttachmentView>,
}

/// A post's file as this profile keeps it: what opens it and where its copies are.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct StoredFile {
    file: Attachment,
    copies: Vec<FileCopy>,
}

impl StoredFile {
    /// A file as a post says it, if it is well formed (else the post keeps only its text).
    fn checked(file: &Attachment, copies: &[FileCopy]) -> Option<StoredFile> {
        (file.key.0.len() == 32
            && file.digest.0.len() == 32
            && file.size <= crate::payload::MAX_ATTACHMENT
            && file.name.len() <= 1000
            && file.media_type.len() <= 200
            && copies.len() <= MAX_FILE_COPIES)
            .then(|| StoredFile {
                file: file.clone(),
                copies: copies.to_vec(),
            })
    }
}

/// What an admin's device needs to upload a post's file: the channel's relays (home first)
/// with a client for each, its admin key, and where the encrypted file is made.
pub struct ChannelFilePlan {
    pub channel: Id,
    pub admin_key: Zeroizing<Vec<u8>>,
    pub relays: Vec<(String, RelayClient)>,
    pub dir: PathBuf,
}

/// Where a post's file can be fetched: the copies on the channel's own relays, in order.
pub struct ChannelFileSource {
    pub file: Attachment,
    pub copies: Vec<(Id, RelayClient)>,
    pub dir: PathBuf,
}

/// What a channel sync did.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ChannelSynced {
    /// Records taken (posts, edits, deletes...).
    pub records: u64,
    /// The relay read from, if any answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Relays whose copy did not check out, this time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<ChannelFaultView>,
}

/// A channel's row.
struct Channel {
    id: Id,
    name: String,
    genesis: [u8; 32],
    relays: Vec<String>,
    mirrors_mine: Vec<String>,
    admin_key: Option<Zeroizing<Vec<u8>>>,
    chain: Chain,
    key_epoch: u32,
}

fn admins_blob(admins: &[[u8; 32]]) -> Vec<u8> {
    wire::join_admins(admins)
}

fn admins_of(bytes: &[u8]) -> Result<Vec<[u8; 32]>> {
    wire::split_admins(bytes).ok_or_else(|| Error::Storage("corrupt channel admin set".into()))
}

fn hash_of(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| Error::Storage("corrupt channel hash".into()))
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// What one relay gave a sync.
enum FromRelay {
    /// Its copy checked out (it may have had nothing new).
    Read(u64),
    /// It is behind what this profile already holds.
    Behind,
    /// Its copy is not the channel's.
    Fault(ChainFault),
}

impl Profile {
    /// Create a channel on the home relay, with this profile as its only admin.
    pub async fn channel_create(&mut self, name: &str, about: &str) -> Result<ChannelId> {
        let name = crate::text::clean_name(name);
        if name.is_empty() {
            return Err(Error::Usage("a channel needs a name".into()));
        }
        if about.len() > 2000 {
            return Err(Error::Usage(
                "a channel's description is at most 2000 bytes".into(),
            ));
        }
        if self.channel_count()? >= MAX_CHANNELS {
            return Err(Error::Usage(format!(
                "a profile keeps at most {MAX_CHANNELS} channels"
            )));
        }
        let id = random_id();
        let (admin, pkcs8) = MailboxKey::generate()?;
        let pkcs8 = Zeroizing::new(pkcs8);
        let admin_pub: [u8; 32] = admin
            .public()
            .try_into()
            .map_err(|_| Error::Crypto("an admin key is not Ed25519".into()))?;
        let key = ChannelKey::generate(0)?;
        let body = crate::channel::seal(
            &key,
            &id,
            &Sealed::Info {
                name: name.clone(),
                about: about.to_string(),
            },
        )?;
        let genesis = crate::channel::sign_record(
            &admin,
            id,
            0,
            [0; 32],
            RecordKind::Genesis,
            vec![admin_pub],
            body,
        )?;
        let bytes = genesis.encode();
        let hash = record_hash(&bytes);
        let home = self.relay.base().to_string();
        self.conv_client_for(&home, &id)?
            .store_channel_record(&id, &bytes)
            .await?;
        self.db.transaction(|tx| {
            let c = tx.conn();
            c.execute(
                "INSERT INTO channels (channel_id, name, about, genesis, relays, admin_key, head_seq, head_hash, admins, key_epoch, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?4, ?7, 0, ?8)",
                params![
                    id.as_bytes(),
                    name,
                    about,
                    &hash[..],
                    serde_json::to_string(&[&home]).unwrap_or_default(),
                    &pkcs8[..],
                    admins_blob(&[admin_pub]),
                    now_secs() as i64
                ],
            )?;
            c.execute(
                "INSERT INTO channel_keys (channel_id, epoch, key) VALUES (?1, 0, ?2)",
                params![id.as_bytes(), &key.key[..]],
            )?;
            c.execute(
                "INSERT INTO channel_records (channel_id, seq, record, kind) VALUES (?1, 0, ?2, 'info')",
                params![id.as_bytes(), bytes],
            )?;
            Ok(())
        })?;
        tracing::info!(channel = %id.short(), "channel created");
        Ok(ChannelId::from_id(id))
    }

    /// Post a text to a channel this profile is an admin of. Returns the post's number.
    pub async fn channel_post(&mut self, id: &ChannelId, text: &str) -> Result<u64> {
        self.channel_post_with(id, text, None, Vec::new()).await
    }

    /// Post an uploaded file (`file` names the home relay's copy, `copies` the mirrors') with
    /// `text` as its caption (may be empty).
    pub(crate) async fn channel_post_with(
        &mut self,
        id: &ChannelId,
        text: &str,
        file: Option<Attachment>,
        copies: Vec<FileCopy>,
    ) -> Result<u64> {
        let text = text.trim();
        if text.is_empty() && file.is_none() {
            return Err(Error::Usage("an empty post cannot be sent".into()));
        }
        if text.len() > crate::channel::MAX_POST_TEXT {
            return Err(Error::Usage(format!(
                "a post holds at most {} bytes",
                crate::channel::MAX_POST_TEXT
            )));
        }
        self.channel_publish(
            id,
            Sealed::Text {
                text: text.to_string(),
                at: now_secs(),
                file,
                copies,
            },
        )
        .await
    }

    /// What uploading a post's file to `id` needs (only its admins can).
    pub fn channel_file_plan(&self, id: &ChannelId) -> Result<ChannelFilePlan> {
        let ch = self.channel(id.id())?;
        let Some(admin_key) = ch.admin_key.clone() else {
            return Err(Error::NotMember(format!(
                "only the admins of {} can post to it",
                ch.name
            )));
        };
        let me: [u8; 32] = MailboxKey::from_pkcs8(&admin_key)?
            .public()
            .try_into()
            .unwrap_or([0; 32]);
        if !ch.chain.admins.contains(&me) {
            return Err(Error::NotMember(format!(
                "this profile is not an admin of {} (now)",
                ch.name
            )));
        }
        let relays = ch
            .relays
            .iter()
            .map(|r| Ok((r.clone(), self.conv_client_for(r, &ch.id)?)))
            .collect::<Result<_>>()?;
        Ok(ChannelFilePlan {
            channel: ch.id,
            admin_key,
            relays,
            dir: self.attachments_dir()?,
        })
    }

    /// Where post `seq`'s file can be fetched: only from the channel's own relays (a post
    /// naming another relay makes no reader connect there; cf. security review 3, M7).
    pub fn channel_file_source(&self, id: &ChannelId, seq: u64) -> Result<ChannelFileSource> {
        let ch = self.channel(id.id())?;
        let stored = self.channel_file(id, seq)?;
        let ours = |relay: &str| ch.relays.iter().chain(&ch.mirrors_mine).any(|r| r == relay);
        let mut copies = Vec::new();
        let all = std::iter::once(FileCopy {
            relay: stored.file.relay.clone(),
            blob: stored.file.blob,
        })
        .chain(stored.copies);
        for copy in all {
            if ours(&copy.relay) {
                copies.push((copy.blob, self.conv_client_for(&copy.relay, &ch.id)?));
            }
        }
        if copies.is_empty() {
            return Err(Error::Integrity(
                "this post's file is on no relay of the channel; refused".into(),
            ));
        }
        Ok(ChannelFileSource {
            file: stored.file,
            copies,
            dir: self.attachments_dir()?,
        })
    }

    /// Post `seq`'s photo thumbnail (a JPEG made by the admin's device).
    pub fn channel_thumbnail(&self, id: &ChannelId, seq: u64) -> Result<Vec<u8>> {
        self.channel_file(id, seq)?
            .file
            .preview
            .as_ref()
            .and_then(|p| p.thumbnail.as_ref())
            .map(|t| t.0.clone())
            .ok_or_else(|| Error::NotFound("this post has no thumbnail".into()))
    }

    fn channel_file(&self, id: &ChannelId, seq: u64) -> Result<StoredFile> {
        let file: Option<String> = self
            .db
            .conn()
            .query_row(
                "SELECT file FROM channel_records WHERE channel_id = ?1 AND seq = ?2 AND kind = 'post' AND deleted = 0",
                params![id.as_bytes(), seq as i64],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        file.and_then(|f| serde_json::from_str(&f).ok())
            .ok_or_else(|| Error::NotFound(format!("post {seq} has no file")))
    }

    /// Correct the text of post `seq`, for every reader.
    pub async fn channel_edit(&mut self, id: &ChannelId, seq: u64, text: &str) -> Result<u64> {
        self.channel_post_row(id, seq)?;
        let text = text.trim();
        if text.is_empty() || text.len() > crate::channel::MAX_POST_TEXT {
            return Err(Error::Usage(
                "a post's text must be 1 to 32768 bytes".into(),
            ));
        }
        self.channel_publish(
            id,
            Sealed::Edit {
                seq,
                text: text.to_string(),
            },
        )
        .await
    }

    /// Delete post `seq` for every reader (its text goes from every copy that follows).
    pub async fn channel_delete(&mut self, id: &ChannelId, seq: u64) -> Result<u64> {
        self.channel_post_row(id, seq)?;
        self.channel_publish(id, Sealed::Delete { seq }).await
    }

    /// Pin post `seq` (`None`: unpin).
    pub async fn channel_pin(&mut self, id: &ChannelId, seq: Option<u64>) -> Result<u64> {
        if let Some(seq) = seq {
            self.channel_post_row(id, seq)?;
        }
        self.channel_publish(id, Sealed::Pin { seq }).await
    }

    /// Seal `what` under the channel's newest key and append it (see `channel_append`).
    async fn channel_publish(&mut self, id: &ChannelId, what: Sealed) -> Result<u64> {
        self.channel_append(id, |_, key, channel| {
            Ok((
                RecordKind::Post,
                Vec::new(),
                crate::channel::seal(key, channel, &what)?,
            ))
        })
        .await
    }

    /// Sign what `make` builds (from the chain's admins, the newest key and the channel id)
    /// as the next record, store it on the home relay — building it again on the new head
    /// when another admin appended first — then on the mirrors. Returns its number.
    pub(super) async fn channel_append(
        &mut self,
        id: &ChannelId,
        make: impl Fn(&[[u8; 32]], &ChannelKey, &Id) -> Result<(RecordKind, Vec<[u8; 32]>, Vec<u8>)>,
    ) -> Result<u64> {
        for _ in 0..CHAIN_RETRIES {
            let ch = self.channel(id.id())?;
            let Some(pkcs8) = &ch.admin_key else {
                return Err(Error::NotMember(format!(
                    "only the admins of {} can post to it",
                    ch.name
                )));
            };
            let admin = MailboxKey::from_pkcs8(pkcs8)?;
            let me: [u8; 32] = admin.public().try_into().unwrap_or([0; 32]);
            if !ch.chain.admins.contains(&me) {
                return Err(Error::NotMember(format!(
                    "this profile is not an admin of {} (now)",
                    ch.name
                )));
            }
            let key = self.channel_key(&ch.id, ch.key_epoch)?;
            let (kind, admins, body) = make(&ch.chain.admins, &key, &ch.id)?;
            let seq = ch.chain.seq + 1;
            let record =
                crate::channel::sign_record(&admin, ch.id, seq, ch.chain.hash, kind, admins, body)?;
            let bytes = record.encode();
            let home = &ch.relays[0];
            match self
                .conv_client_for(home, &ch.id)?
                .store_channel_record(&ch.id, &bytes)
                .await
            {
                Ok(_) => {
                    let mut chain = ch.chain.clone();
                    chain
                        .accept(&ch.id, &bytes)
                        .map_err(|f| Error::Integrity(format!("our own record: {f:?}")))?;
                    self.channel_take(&ch, &chain, &[(record, bytes)])?;
                    self.channel_fill_mirrors(id).await;
                    return Ok(seq);
                }
                Err(Error::Relay {
                    code: ErrorCode::ChainConflict,
                    ..
                }) => {
                    // Another admin appended first: read their record, then chain onto it.
                    self.channel_sync(id).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Busy(
            "other admins kept posting first; try again".into(),
        ))
    }

    /// The channel's link: the relays to read it from and, in the fragment, its newest key.
    pub fn channel_link(&self, id: &ChannelId) -> Result<String> {
        let ch = self.channel(id.id())?;
        let key = self.channel_key(&ch.id, ch.key_epoch)?;
        Ok(ChannelLink {
            channel: ch.id,
            genesis: ch.genesis,
            relays: ch.relays.clone(),
            key,
        }
        .to_link())
    }

    /// Follow a channel from its link: fetch its genesis (checked against the link), then
    /// everything after it. Nothing is sent that names this profile.
    pub async fn channel_follow(&mut self, link: &str) -> Result<ChannelId> {
        let link = ChannelLink::parse(link)?;
        let id = ChannelId::from_id(link.channel);
        if self.channel(&link.channel).is_ok() {
            return Ok(id);
        }
        if self.channel_count()? >= MAX_CHANNELS {
            return Err(Error::Usage(format!(
                "a profile keeps at most {MAX_CHANNELS} channels"
            )));
        }
        let mut last_error = None;
        let mut start = None;
        for relay in &link.relays {
            let client = self.conv_client_for(relay, &link.channel)?;
            match client.channel_segment(&link.channel, 0).await {
                Ok(seg) => {
                    let first = wire::decode_segment(&seg)
                        .ok()
                        .and_then(|r| r.first().map(|b| b.to_vec()));
                    let Some(first) = first else {
                        last_error = Some(Error::Integrity(format!("{relay} has no genesis")));
                        continue;
                    };
                    match Chain::start(&link.channel, &link.genesis, &first) {
                        Ok((chain, record)) => {
                            start = Some((chain, record, first));
                            break;
                        }
                        Err(f) => {
                            last_error = Some(Error::Integrity(format!(
                                "{relay} holds another channel under this id ({f:?})"
                            )))
                        }
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some((chain, record, bytes)) = start else {
            return Err(last_error.unwrap_or_else(|| Error::RelayUnreachable("no relay".into())));
        };
        let (name, about) = match crate::channel::open(&link.key, &link.channel, &record.body) {
            Ok(Sealed::Info { name, about }) => (name, about),
            _ if link.key.epoch > 0 => (String::new(), String::new()),
            _ => {
                return Err(Error::InvalidInvite(
                    "the link's key does not open this channel".into(),
                ));
            }
        };
        let name = crate::text::clean_name(&name);
        self.db.transaction(|tx| {
            let c = tx.conn();
            c.execute(
                "INSERT INTO channels (channel_id, name, about, genesis, relays, head_seq, head_hash, admins, key_epoch, read_seq, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?4, ?6, ?7, 0, ?8)",
                params![
                    link.channel.as_bytes(),
                    name,
                    crate::text::escape_bounded(&about, 2000),
                    &link.genesis[..],
                    serde_json::to_string(&link.relays).unwrap_or_default(),
                    admins_blob(&chain.admins),
                    link.key.epoch as i64,
                    now_secs() as i64
                ],
            )?;
            c.execute(
                "INSERT INTO channel_keys (channel_id, epoch, key) VALUES (?1, ?2, ?3)",
                params![link.channel.as_bytes(), link.key.epoch as i64, &link.key.key[..]],
            )?;
            c.execute(
                "INSERT INTO channel_records (channel_id, seq, record, kind) VALUES (?1, 0, ?2, 'info')",
                params![link.channel.as_bytes(), bytes],
            )?;
            Ok(())
        })?;
        // A new follower sees the channel's posts as unread, as a reader opening a
        // newspaper does.
        let _ = self.channel_sync(&id).await;
        Ok(id)
    }

    /// Read what is new, from the first relay that answers with a copy that checks out.
    pub async fn channel_sync(&mut self, id: &ChannelId) -> Result<ChannelSynced> {
        let ch = self.channel(id.id())?;
        let mut out = ChannelSynced::default();
        let mut last_error = None;
        let mut behind = false;
        for relay in ch.relays.clone() {
            match self.channel_read_from(id, &relay).await {
                Ok(FromRelay::Read(n)) => {
                    out.records += n;
                    out.relay = Some(relay);
                    break;
                }
                Ok(FromRelay::Behind) => behind = true,
                Ok(FromRelay::Fault(fault)) => {
                    let view = ChannelFaultView {
                        relay: relay.clone(),
                        fault,
                        at: now_secs(),
                    };
                    self.db.conn().execute(
                        "UPDATE channels SET fault = ?2 WHERE channel_id = ?1",
                        params![
                            id.as_bytes(),
                            serde_json::to_string(&view).unwrap_or_default()
                        ],
                    )?;
                    tracing::warn!(channel = %id.short(), ?fault, "a relay's copy of a channel does not check out");
                    self.emit(Event::ChannelFault {
                        channel_id: *id,
                        channel: ch.name.clone(),
                        relay: relay.clone(),
                        fault,
                    })?;
                    out.faults.push(view);
                }
                Err(e) => last_error = Some(e),
            }
        }
        if out.records > 0 {
            self.emit(Event::ChannelPosts {
                channel_id: *id,
                channel: ch.name.clone(),
                records: out.records,
            })?;
            self.channel_fill_mirrors(id).await;
        }
        if out.relay.is_none()
            && out.faults.is_empty()
            && !behind
            && let Some(e) = last_error
        {
            return Err(e);
        }
        Ok(out)
    }

    /// A record the home relay pushed: taken at once when it is the next one and checks out;
    /// otherwise (a gap, a record that does not check out) the channel is read — which
    /// records the fault and falls back to its mirrors.
    pub(crate) async fn channel_take_pushed(
        &mut self,
        id: &ChannelId,
        seq: u64,
        bytes: &[u8],
    ) -> Result<()> {
        let ch = self.channel(id.id())?;
        if seq <= ch.chain.seq {
            return Ok(());
        }
        let mut chain = ch.chain.clone();
        match chain.accept(&ch.id, bytes) {
            Ok(record) if seq == ch.chain.seq + 1 => {
                self.channel_take(&ch, &chain, &[(record, bytes.to_vec())])?;
                self.emit(Event::ChannelPosts {
                    channel_id: *id,
                    channel: ch.name.clone(),
                    records: 1,
                })?;
                self.channel_fill_mirrors(id).await;
                Ok(())
            }
            _ => self.channel_sync(id).await.map(|_| ()),
        }
    }

    /// The channels to follow on the home relay's socket, with where each stands: those read
    /// from the home relay first. (Isolating, channels are read over their own connections.)
    pub(crate) fn channels_on_home(&self) -> Result<Vec<(Id, u64)>> {
        let home = self.relay.base().to_string();
        let conn = self.db.conn();
        let mut stmt = conn.prepare("SELECT channel_id, relays, head_seq FROM channels")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, relays, seq) = row?;
            if json_list(&relays).first() == Some(&home) {
                out.push((
                    Id::from_slice(&id).map_err(|_| Error::Storage("corrupt channel id".into()))?,
                    seq as u64,
                ));
            }
        }
        Ok(out)
    }

    /// Every channel, quietly: for the periodic sync (a channel whose relays are all down
    /// waits for the next one).
    pub(crate) async fn sync_channels_quietly(&mut self) {
        // Only the ids: building each channel's view (counts) every sync is work for no one.
        let Ok(ids) = self.channel_ids() else {
            return;
        };
        for id in ids {
            if self.poll_only && self.live_logs.contains(id.id()) {
                // Pushed on the home socket as its records are stored.
                continue;
            }
            if let Err(e) = self.channel_sync(&id).await {
                tracing::debug!(channel = %id.short(), "channel sync: {e}");
            }
        }
    }

    /// Read one relay's copy from where this profile's chain stands.
    async fn channel_read_from(&mut self, id: &ChannelId, relay: &str) -> Result<FromRelay> {
        let ch = self.channel(id.id())?;
        // Test-only: no channel is read over HTTP, so what arrives was pushed.
        if crate::fault::on("NO_CHANNEL_READS") {
            return Err(Error::RelayUnreachable(
                "channel reads are off (fault point)".into(),
            ));
        }
        let client = self.conv_client_for(relay, &ch.id)?;
        let Some(head) = client.channel_head(&ch.id).await? else {
            return Err(Error::NotFound(format!(
                "{relay} does not hold this channel"
            )));
        };
        if head.seq < ch.chain.seq {
            return Ok(FromRelay::Behind);
        }
        if head.seq == ch.chain.seq {
            return Ok(if head.hash.0 == ch.chain.hash {
                FromRelay::Read(0)
            } else {
                FromRelay::Fault(ChainFault::Broken)
            });
        }
        let mut chain = ch.chain.clone();
        let mut taken = 0u64;
        let first = wire::segment_of(chain.seq + 1);
        for n in first..=wire::segment_of(head.seq) {
            let seg_start = chain.clone();
            let seg = client.channel_segment(&ch.id, n).await?;
            let Ok(records) = wire::decode_segment(&seg) else {
                return Ok(FromRelay::Fault(ChainFault::Malformed));
            };
            let mut batch = Vec::new();
            for bytes in records {
                let Ok(record) = samizdat_proto::ChannelRecord::decode(bytes) else {
                    return Ok(FromRelay::Fault(ChainFault::Malformed));
                };
                if record.seq < chain.seq {
                    continue;
                }
                if record.seq == chain.seq {
                    // The record this profile holds last: the relay's must be the same one.
                    if record_hash(bytes) != chain.hash {
                        return Ok(FromRelay::Fault(ChainFault::Broken));
                    }
                    continue;
                }
                match chain.accept(&ch.id, bytes) {
                    Ok(record) => batch.push((record, bytes.to_vec())),
                    Err(fault) => {
                        // Keep what checked out before it.
                        let ch_now = self.channel(id.id())?;
                        self.channel_take(&ch_now, &chain_before(&seg_start, &batch), &batch)?;
                        return Ok(FromRelay::Fault(fault));
                    }
                }
            }
            taken += batch.len() as u64;
            let ch_now = self.channel(id.id())?;
            self.channel_take(&ch_now, &chain, &batch)?;
        }
        if chain.seq < head.seq {
            // The head said more than the segments held: records are missing.
            return Ok(FromRelay::Fault(ChainFault::Broken));
        }
        Ok(FromRelay::Read(taken))
    }

    /// Store checked records (in order) and move the channel's head to `chain`.
    fn channel_take(
        &self,
        ch: &Channel,
        chain: &Chain,
        records: &[(samizdat_proto::ChannelRecord, Vec<u8>)],
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.db.transaction(|tx| {
            let c = tx.conn();
            let mut key_epoch = ch.key_epoch;
            for (record, bytes) in records {
                let opened = match record.kind {
                    RecordKind::Post => {
                        let epoch = crate::channel::sealed_epoch(&record.body).unwrap_or(u32::MAX);
                        let key: Option<Vec<u8>> = c
                            .query_row(
                                "SELECT key FROM channel_keys WHERE channel_id = ?1 AND epoch = ?2",
                                params![ch.id.as_bytes(), epoch as i64],
                                |r| r.get(0),
                            )
                            .optional()?;
                        key.and_then(|k| {
                            let mut key = Zeroizing::new([0u8; 32]);
                            if k.len() != 32 {
                                return None;
                            }
                            key.copy_from_slice(&k);
                            crate::channel::open(&ChannelKey { epoch, key }, &ch.id, &record.body).ok()
                        })
                    }
                    _ => None,
                };
                let seq = record.seq as i64;
                let id = ch.id.as_bytes();
                let mut file = None;
                let (kind, text, at): (&str, Option<String>, Option<i64>) = match (&record.kind, &opened) {
                    (RecordKind::Roster, _) => ("roster", None, None),
                    (RecordKind::Genesis, _) => ("info", None, None),
                    (RecordKind::Post, None) => ("unreadable", None, None),
                    (RecordKind::Post, Some(Sealed::Text { text, at, file: f, copies })) => {
                        file = f
                            .as_ref()
                            .and_then(|f| StoredFile::checked(f, copies))
                            .and_then(|s| serde_json::to_string(&s).ok());
                        ("post", Some(crate::text::escape_bounded(text, crate::channel::MAX_POST_TEXT)), Some(*at as i64))
                    }
                    (RecordKind::Post, Some(Sealed::Edit { seq: target, text })) => {
                        c.execute(
                            "UPDATE channel_records SET text = ?3, edited = 1 WHERE channel_id = ?1 AND seq = ?2 AND kind = 'post' AND deleted = 0",
                            params![id, *target as i64, crate::text::escape_bounded(text, crate::channel::MAX_POST_TEXT)],
                        )?;
                        ("edit", None, None)
                    }
                    (RecordKind::Post, Some(Sealed::Delete { seq: target })) => {
                        c.execute(
                            "UPDATE channel_records SET text = NULL, file = NULL, deleted = 1 WHERE channel_id = ?1 AND seq = ?2 AND kind = 'post'",
                            params![id, *target as i64],
                        )?;
                        c.execute(
                            "UPDATE channels SET pinned = NULL WHERE channel_id = ?1 AND pinned = ?2",
                            params![id, *target as i64],
                        )?;
                        ("delete", None, None)
                    }
                    (RecordKind::Post, Some(Sealed::Pin { seq: target })) => {
                        c.execute(
                            "UPDATE channels SET pinned = ?2 WHERE channel_id = ?1",
                            params![id, target.map(|s| s as i64)],
                        )?;
                        ("pin", None, None)
                    }
                    (RecordKind::Post, Some(Sealed::Rekey { epoch, key })) => {
                        if key.0.len() == 32 {
                            c.execute(
                                "INSERT OR REPLACE INTO channel_keys (channel_id, epoch, key) VALUES (?1, ?2, ?3)",
                                params![id, *epoch as i64, key.0],
                            )?;
                            key_epoch = key_epoch.max(*epoch);
                        }
                        ("rekey", None, None)
                    }
                    (RecordKind::Post, Some(Sealed::Info { name, about })) => {
                        c.execute(
                            "UPDATE channels SET name = ?2, about = ?3 WHERE channel_id = ?1",
                            params![id, crate::text::clean_name(name), crate::text::escape_bounded(about, 2000)],
                        )?;
                        ("info", None, None)
                    }
                };
                c.execute(
                    "INSERT OR IGNORE INTO channel_records (channel_id, seq, record, kind, text, posted_at, file) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![id, seq, bytes, kind, text, at, file],
                )?;
            }
            c.execute(
                "UPDATE channels SET head_seq = ?2, head_hash = ?3, admins = ?4, key_epoch = ?5 WHERE channel_id = ?1",
                params![
                    ch.id.as_bytes(),
                    chain.seq as i64,
                    &chain.hash[..],
                    admins_blob(&chain.admins),
                    key_epoch as i64
                ],
            )?;
            Ok(())
        })
    }

    /// Bring the mirrors this profile added up to its own copy (best effort: a mirror that
    /// cannot be reached is filled by a later sync).
    async fn channel_fill_mirrors(&mut self, id: &ChannelId) {
        let Ok(ch) = self.channel(id.id()) else {
            return;
        };
        let mine: Vec<String> = if ch.admin_key.is_some() {
            ch.relays.iter().skip(1).cloned().collect()
        } else {
            ch.mirrors_mine.clone()
        };
        for mirror in mine {
            if let Err(e) = self.channel_fill(&ch, &mirror).await {
                tracing::debug!(channel = %id.short(), "filling a mirror: {e}");
            }
        }
    }

    /// Send `mirror` every record it lacks.
    async fn channel_fill(&self, ch: &Channel, mirror: &str) -> Result<u64> {
        let client = self.conv_client_for(mirror, &ch.id)?;
        let from = match client.channel_head(&ch.id).await? {
            Some(h) if h.seq >= ch.chain.seq => return Ok(0),
            Some(h) => h.seq + 1,
            None => 0,
        };
        let records: Vec<Vec<u8>> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT record FROM channel_records WHERE channel_id = ?1 AND seq >= ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![ch.id.as_bytes(), from as i64], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut sent = 0;
        for r in records {
            client.store_channel_record(&ch.id, &r).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Add a mirror: copy the channel to another relay, list it in the link (an admin's), and
    /// keep it filled. Anyone who follows a channel may mirror it.
    pub async fn channel_mirror_add(&mut self, id: &ChannelId, url: &str) -> Result<Vec<String>> {
        let url = crate::relay_client::normalize_spec(url)?;
        let ch = self.channel(id.id())?;
        if ch.relays.contains(&url) {
            return Ok(ch.relays);
        }
        if ch.relays.len() >= crate::channel::MAX_LINK_RELAYS {
            return Err(Error::Usage(format!(
                "a channel lists at most {} relays",
                crate::channel::MAX_LINK_RELAYS
            )));
        }
        self.channel_fill(&ch, &url).await?;
        let mut relays = ch.relays.clone();
        relays.push(url.clone());
        let mut mine = ch.mirrors_mine.clone();
        mine.push(url);
        self.db.conn().execute(
            "UPDATE channels SET relays = ?2, mirrors_mine = ?3 WHERE channel_id = ?1",
            params![
                id.as_bytes(),
                serde_json::to_string(&relays).unwrap_or_default(),
                serde_json::to_string(&mine).unwrap_or_default()
            ],
        )?;
        Ok(relays)
    }

    /// The channels this profile runs or follows, by name.
    pub fn channels(&self) -> Result<Vec<ChannelView>> {
        self.channel_ids()?
            .iter()
            .map(|id| self.channel_view(id))
            .collect()
    }

    /// Every channel's id, by name.
    fn channel_ids(&self) -> Result<Vec<ChannelId>> {
        let ids: Vec<Vec<u8>> = {
            let conn = self.db.conn();
            let mut stmt =
                conn.prepare("SELECT channel_id FROM channels ORDER BY name, channel_id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        ids.iter().map(|id| ChannelId::from_slice(id)).collect()
    }

    /// One channel in the list.
    pub fn channel_view(&self, id: &ChannelId) -> Result<ChannelView> {
        let ch = self.channel(id.id())?;
        let conn = self.db.conn();
        let (about, pinned, read_seq, fault): (String, Option<i64>, i64, Option<String>) = conn
            .query_row(
                "SELECT about, pinned, read_seq, fault FROM channels WHERE channel_id = ?1",
                params![id.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
        let (posts, unread): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(seq > ?2), 0) FROM channel_records
             WHERE channel_id = ?1 AND kind = 'post' AND deleted = 0",
            params![id.as_bytes(), read_seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let admin = match &ch.admin_key {
            Some(k) => MailboxKey::from_pkcs8(k)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k.public()).ok())
                .is_some_and(|me| ch.chain.admins.contains(&me)),
            None => false,
        };
        Ok(ChannelView {
            id: *id,
            name: ch.name,
            about,
            admin,
            admins: ch.chain.admins.len(),
            relays: ch.relays,
            posts: posts as u64,
            unread: unread as u64,
            last_seq: ch.chain.seq,
            pinned: pinned.map(|p| p as u64),
            fault: fault.and_then(|f| serde_json::from_str(&f).ok()),
        })
    }

    /// A channel's posts, oldest first (deleted ones left out); marks them read.
    pub fn channel_posts(&self, id: &ChannelId, mark_read: bool) -> Result<Vec<ChannelPostView>> {
        let ch = self.channel(id.id())?;
        let conn = self.db.conn();
        let pinned: Option<i64> = conn.query_row(
            "SELECT pinned FROM channels WHERE channel_id = ?1",
            params![id.as_bytes()],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(
            "SELECT seq, text, posted_at, edited, file FROM channel_records
             WHERE channel_id = ?1 AND kind = 'post' AND deleted = 0 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id.as_bytes()], |r| {
            let seq: i64 = r.get(0)?;
            let file = r
                .get::<_, Option<String>>(4)?
                .and_then(|f| serde_json::from_str::<StoredFile>(&f).ok())
                .map(|f| AttachmentView::of(&f.file, false));
            Ok(ChannelPostView {
                seq: seq as u64,
                text: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                posted_at: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                edited: r.get::<_, i64>(3)? != 0,
                pinned: pinned == Some(seq),
                file,
            })
        })?;
        let posts: Vec<ChannelPostView> = rows.collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        if mark_read {
            conn.execute(
                "UPDATE channels SET read_seq = ?2 WHERE channel_id = ?1",
                params![id.as_bytes(), ch.chain.seq as i64],
            )?;
        }
        Ok(posts)
    }

    /// Stop following (or, for an admin, keep no copy of) a channel on this device. Nothing is
    /// sent: no one learns that this profile read it.
    pub fn channel_leave(&self, id: &ChannelId) -> Result<()> {
        let n = self.db.conn().execute(
            "DELETE FROM channels WHERE channel_id = ?1",
            params![id.as_bytes()],
        )?;
        if n == 0 {
            return Err(Error::NotFound("no such channel".into()));
        }
        Ok(())
    }

    /// A channel by its name (what a person types), or by its id.
    pub fn find_channel(&self, name: &str) -> Result<ChannelId> {
        if let Ok(id) = name.parse::<ChannelId>()
            && self.channel(id.id()).is_ok()
        {
            return Ok(id);
        }
        let found: Vec<Vec<u8>> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare("SELECT channel_id FROM channels WHERE name = ?1")?;
            let rows = stmt.query_map(params![name], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        match found.as_slice() {
            [one] => ChannelId::from_slice(one),
            [] => Err(Error::NotFound(format!("no channel called {name:?}"))),
            _ => Err(Error::Usage(format!(
                "several channels are called {name:?}; name one by its id"
            ))),
        }
    }

    fn channel_count(&self) -> Result<usize> {
        let n: i64 = self
            .db
            .conn()
            .query_row("SELECT COUNT(*) FROM channels", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    fn channel_post_row(&self, id: &ChannelId, seq: u64) -> Result<()> {
        let n: i64 = self.db.conn().query_row(
            "SELECT COUNT(*) FROM channel_records WHERE channel_id = ?1 AND seq = ?2 AND kind = 'post' AND deleted = 0",
            params![id.as_bytes(), seq as i64],
            |r| r.get(0),
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("no post {seq} in this channel")));
        }
        Ok(())
    }

    fn channel_key(&self, id: &Id, epoch: u32) -> Result<ChannelKey> {
        let k: Vec<u8> = self
            .db
            .conn()
            .query_row(
                "SELECT key FROM channel_keys WHERE channel_id = ?1 AND epoch = ?2",
                params![id.as_bytes(), epoch as i64],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| Error::Storage("a channel's key is missing".into()))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if k.len() != 32 {
            return Err(Error::Storage("a channel's key is damaged".into()));
        }
        key.copy_from_slice(&k);
        Ok(ChannelKey { epoch, key })
    }

    fn channel(&self, id: &Id) -> Result<Channel> {
        type Row = (
            String,
            Vec<u8>,
            String,
            String,
            Option<Vec<u8>>,
            i64,
            Vec<u8>,
            Vec<u8>,
            i64,
        );
        let row: Option<Row> = self
            .db
            .conn()
            .query_row(
                "SELECT name, genesis, relays, mirrors_mine, admin_key, head_seq, head_hash, admins, key_epoch
                 FROM channels WHERE channel_id = ?1",
                params![id.as_bytes()],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )
            .optional()?;
        let Some((name, genesis, relays, mine, admin_key, seq, hash, admins, key_epoch)) = row
        else {
            return Err(Error::NotFound("no such channel".into()));
        };
        let relays = json_list(&relays);
        if relays.is_empty() {
            return Err(Error::Storage("a channel lists no relay".into()));
        }
        Ok(Channel {
            id: *id,
            name,
            genesis: hash_of(genesis)?,
            relays,
            mirrors_mine: json_list(&mine),
            admin_key: admin_key.map(Zeroizing::new),
            chain: Chain {
                seq: seq as u64,
                hash: hash_of(hash)?,
                admins: admins_of(&admins)?,
            },
            key_epoch: key_epoch as u32,
        })
    }
}

/// The chain as it stood after `batch` (records already accepted), from `start`.
fn chain_before(start: &Chain, batch: &[(samizdat_proto::ChannelRecord, Vec<u8>)]) -> Chain {
    let mut c = start.clone();
    for (record, bytes) in batch {
        c.seq = record.seq;
        c.hash = record_hash(bytes);
        if record.kind == RecordKind::Roster {
            c.admins = record.admins.clone();
        }
    }
    c
}
