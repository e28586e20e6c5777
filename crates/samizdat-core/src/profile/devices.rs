//! Several devices of one person: linking (`device join` on the new device shows a link,
//! `device add` on the device with the identity key takes it), the self group,
//! the one-time history transfer, the device list and revocation. The protocol is in
//! docs/PROTOCOL.md "Devices"; the certificates and link messages in `crate::device`.

use super::*;
use crate::device::{self, DeviceCert, Link, LinkKeys, LinkReply};

/// The local name of the self group (control characters never appear in user-chosen names,
/// so it cannot collide with a contact or a conversation).
pub(super) const SELF_GROUP_NAME: &str = "\u{1}self";

/// Whether `conv` is the self group: only it carries this reserved local name (set when it
/// is created or joined; users cannot type it, renames never reach it).
pub(super) fn is_self_group(conv: &Conv) -> bool {
    conv.name == SELF_GROUP_NAME
}
/// The largest history archive a new device reads (sealed).
const MAX_ARCHIVE: u64 = 1 << 30;
/// Most KeyPackages a link may ask for (one per conversation and the self group).
const MAX_LINK_KEY_PACKAGES: u32 = 10_000;

/// What travels in the identity device's one-time mailbox (sealed to its one-time HPKE key).
#[derive(Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LinkMessage {
    Keys(LinkKeys),
}

/// A new device's link as the device with the identity key shows it before adding it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct LinkPreview {
    /// The device's id once added (fingerprint of its key, hex).
    pub id: String,
    /// What the new device calls itself.
    pub name: String,
    /// The code the new device shows next to its link; they must be the same.
    pub code: String,
    /// Unix seconds when the link stops working.
    pub expires_at: u64,
}

/// One of the person's devices (`device list`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct DeviceView {
    /// Fingerprint of the device's MLS key (hex); `device revoke` takes it or a prefix.
    pub id: String,
    /// What the device was called when it was linked; empty for the first device (fronts
    /// show "first device" in their language).
    pub name: String,
    /// This device.
    pub this: bool,
    pub revoked: bool,
}

/// A device as the self group carries it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: Bytes,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<Id>,
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// The history a new device receives once, sealed under a one-time key.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct Archive {
    contacts: Vec<ArchivedContact>,
    conversations: Vec<ArchivedConversation>,
    messages: Vec<ArchivedMessage>,
    /// The device that made it (its pending invitations are below).
    #[serde(default)]
    device: Bytes,
    /// Invitations from strangers waiting on that device.
    #[serde(default)]
    invitations: Vec<ArchivedInvitation>,
    /// The settings every device of the person shares (`SHARED_SETTINGS`).
    #[serde(default)]
    settings: Vec<(String, Bytes)>,
}

/// Settings that follow the person to every device (the proxy and the relays do not: they
/// are about where a device is).
const SHARED_SETTINGS: [&str; 2] = ["auto_download_bytes", "move_after"];

#[derive(Debug, Serialize, serde::Deserialize)]
struct ArchivedInvitation {
    group_id: Bytes,
    relay: String,
    committer: Bytes,
    members: i64,
    claims_existing: Option<String>,
    received_at: i64,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct ArchivedContact {
    alias: String,
    fingerprint: Bytes,
    display_name: String,
    relay: Option<String>,
    mailbox_id: Option<Bytes>,
    group_id: Option<Bytes>,
    verified: bool,
    created_at: i64,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct ArchivedConversation {
    group_id: Bytes,
    kind: String,
    name: String,
    relay: String,
    active: bool,
    timer_secs: i64,
    seq_base: i64,
    created_at: i64,
    /// Messages up to this position are read.
    #[serde(default)]
    read_seq: Option<i64>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct ArchivedMessage {
    id: Bytes,
    group_id: Bytes,
    seq: Option<i64>,
    sender_fp: Bytes,
    outgoing: bool,
    body: String,
    sent_at: i64,
    received_at: i64,
    expires_in: Option<i64>,
    expires_at: Option<i64>,
    attachment: Option<String>,
}

/// Where a new device finds the history archive (sent in the self group).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ArchiveRef {
    pub relay: String,
    pub blob: Id,
    pub len: u64,
    /// ChaCha20-Poly1305 key of this archive only.
    pub key: Bytes,
    /// The device it is for.
    pub device: Bytes,
}

/// What `device join` did.
#[derive(Debug, Clone, Serialize)]
pub struct Joined {
    pub code: String,
    pub name: String,
    pub conversations: usize,
    pub messages: usize,
}

struct LinkRow {
    id: i64,
    relay: String,
    mailbox: Id,
    mailbox_key: zeroize::Zeroizing<Vec<u8>>,
    hpke_secret: zeroize::Zeroizing<Vec<u8>>,
    hpke_public: Vec<u8>,
    secret: zeroize::Zeroizing<Vec<u8>>,
    expires_at: u64,
    device_key: Option<Vec<u8>>,
    name: Option<String>,
    reply: Option<(String, Id, Vec<u8>)>,
    /// Finished (linked or failed): a device that tries it again is told so.
    done: bool,
}

/// Seal an archive (JSON) padded with spaces, which JSON ignores, to a Padmé size (as
/// attachments are, 4 KiB at least): the relay learns the size of a person's history only
/// within a few percent (security review 3, L8).
fn seal_archive(key: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let padded_len = usize::try_from(crate::attachment::padded_len(plain.len() as u64))
        .map_err(|_| Error::Storage("the archive is too large".into()))?;
    let mut padded = zeroize::Zeroizing::new(Vec::with_capacity(padded_len));
    padded.extend_from_slice(plain);
    padded.resize(padded_len, b' ');
    crate::welcome::seal_tree(key, &padded)
}

fn open_archive(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    crate::welcome::open_tree(key, sealed)
        .map_err(|_| Error::Integrity("the history archive does not open with its key".into()))
}

impl Profile {
    /// Whether this device holds the person's identity key (the first device).
    pub fn holds_identity(&self) -> Result<bool> {
        Ok(self.db.get_setting("device_cert")?.is_none())
    }

    pub(super) fn cipher_suite(&self) -> u16 {
        u16::from(self.mls.cipher_suite())
    }

    /// This device's own key fingerprint.
    pub(super) fn device_fp(&self) -> Result<[u8; 32]> {
        Ok(mls::fingerprint(&self.db.setting("mls_public")?))
    }

    /// The self group's id, if this person has one.
    pub(super) fn self_group(&self) -> Result<Option<Id>> {
        Ok(self
            .db
            .get_setting("self_group")?
            .and_then(|b| Id::from_slice(&b).ok()))
    }

    /// What `device add` would add, with nothing changed: the new device's name and the code
    /// its screen shows. Refuses what could not be added (expired, used, revoked, ours).
    pub fn device_add_preview(&self, link: &str) -> Result<LinkPreview> {
        let link = self.addable_link(link)?;
        Ok(LinkPreview {
            id: hex::encode(mls::fingerprint(&link.device_key.0)),
            name: link.name.clone(),
            code: link.code(),
            expires_at: link.expires_at,
        })
    }

    /// A link `device add` may take: made for our ciphersuite, in time, not used before, for a
    /// device that is neither this one nor one we know.
    fn addable_link(&self, link: &str) -> Result<Link> {
        if !self.holds_identity()? {
            return Err(Error::Usage(
                "only the first device (it holds the identity key) can add devices".into(),
            ));
        }
        let link = Link::parse(link)?;
        if now_secs() > link.expires_at {
            return Err(Error::Usage(
                "this device link has expired (links last 2 minutes); show a new one on the new device".into(),
            ));
        }
        if link.cipher_suite != self.cipher_suite() {
            return Err(Error::Usage(
                "this device link is for another ciphersuite; update samizdat on both devices"
                    .into(),
            ));
        }
        let used: bool = self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM device_links WHERE reply_mailbox = ?1)",
            params![link.mailbox.as_bytes()],
            |r| r.get(0),
        )?;
        if used {
            return Err(Error::Usage(
                "this device link was already used; show a new one on the new device".into(),
            ));
        }
        let device_fp = mls::fingerprint(&link.device_key.0);
        let known: Option<Option<i64>> = self
            .db
            .conn()
            .query_row(
                "SELECT revoked_at FROM devices WHERE device_fp = ?1",
                params![&device_fp[..]],
                |r| r.get(0),
            )
            .optional()?;
        match known {
            Some(Some(_)) => Err(Error::Usage(
                "this device was revoked; link it with a fresh profile".into(),
            )),
            Some(None) => Err(Error::Usage("this device is already linked".into())),
            None if device_fp == self.device_fp()? => {
                Err(Error::Usage("this is this device's own link".into()))
            }
            None => Ok(link),
        }
    }

    /// `device add LINK`, after the person confirmed the name and code: sign the new device's
    /// key, tell it (sealed to its link key) where to send its KeyPackages — a one-time
    /// mailbox and HPKE key of ours — and wait for them in `sync_links` (every sync, or the
    /// service's polling while a link is open). Nothing is signed before this call.
    pub async fn device_add(&mut self, link: &str) -> Result<LinkPreview> {
        let link = self.addable_link(link)?;
        let cs = self.cipher_suite();
        let cert = DeviceCert::sign(
            cs,
            &zeroize::Zeroizing::new(self.db.setting("mls_secret")?),
            &self.db.setting("mls_public")?,
            &link.device_key.0,
        )?;
        let self_conv = self.ensure_self_group().await?;
        // One KeyPackage per conversation (the self group is one of them).
        let wanted = self.active_convs()?.len() as u32;
        let (mailbox_key, pkcs8) = MailboxKey::generate()?;
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let mailbox = random_id();
        self.relay
            .create_mailbox(random_id(), mailbox, mailbox_key.public())
            .await?;
        let (hpke_secret, hpke_public) = device::hpke_keypair(cs)?;
        let hpke_secret = zeroize::Zeroizing::new(hpke_secret);
        let code = link.code();
        // The new device has until its link expires to answer, plus time to make its
        // KeyPackages on a slow machine.
        let expires_at = link.expires_at.max(now_secs()) + 600;
        self.db.conn().execute(
            "INSERT INTO device_links (relay, mailbox_id, mailbox_key, hpke_secret, hpke_public, secret, expires_at,
                                       device_key, name, reply_relay, reply_mailbox, reply_hpke, code)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                self.relay.base(), mailbox.as_bytes(), &pkcs8[..], &hpke_secret[..], hpke_public,
                &link.secret.0, expires_at as i64, &link.device_key.0, link.name, link.relay,
                link.mailbox.as_bytes(), &link.hpke.0, code
            ],
        )?;
        let reply_relay = self.relay.base().to_string();
        let mac = device::accepted_mac(
            &link.secret.0,
            &cert.encode(),
            &reply_relay,
            &mailbox,
            &hpke_public,
        );
        self.reply(
            &link.relay,
            &link.mailbox,
            &link.hpke.0,
            &LinkReply::Accepted {
                cert: Bytes(cert.encode()),
                name: self.name.clone(),
                key_packages: wanted,
                self_group: self_conv.group_id,
                devices: self.device_records()?,
                reply_relay,
                reply_mailbox: mailbox,
                reply_hpke: Bytes(hpke_public),
                mac: Bytes(mac),
            },
        )
        .await?;
        Ok(LinkPreview {
            id: hex::encode(mls::fingerprint(&link.device_key.0)),
            name: link.name,
            code,
            expires_at: link.expires_at,
        })
    }

    fn open_links(&self) -> Result<Vec<LinkRow>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT id, relay, mailbox_id, mailbox_key, hpke_secret, hpke_public, secret, expires_at,
                    device_key, name, reply_relay, reply_mailbox, reply_hpke, done_at IS NOT NULL
             FROM device_links WHERE done_at IS NULL OR expires_at + 3600 > ?1",
        )?;
        let rows = stmt.query_map(params![now_secs() as i64], |r| {
            let reply = match (
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<Vec<u8>>>(11)?,
                r.get::<_, Option<Vec<u8>>>(12)?,
            ) {
                (Some(relay), Some(mb), Some(hpke)) => {
                    Id::from_slice(&mb).ok().map(|mb| (relay, mb, hpke))
                }
                _ => None,
            };
            Ok(LinkRow {
                id: r.get(0)?,
                relay: r.get(1)?,
                mailbox: Id::from_slice(&r.get::<_, Vec<u8>>(2)?)
                    .unwrap_or(Id::from_bytes([0; 16])),
                mailbox_key: zeroize::Zeroizing::new(r.get(3)?),
                hpke_secret: zeroize::Zeroizing::new(r.get(4)?),
                hpke_public: r.get(5)?,
                secret: zeroize::Zeroizing::new(r.get(6)?),
                expires_at: r.get::<_, i64>(7)?.max(0) as u64,
                device_key: r.get(8)?,
                name: r.get(9)?,
                reply,
                done: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Whether a link made here still waits for its device.
    pub fn links_open(&self) -> Result<bool> {
        Ok(self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM device_links WHERE done_at IS NULL AND expires_at + 60 > ?1)",
            params![now_secs() as i64],
            |r| r.get(0),
        )?)
    }

    /// Answer the open links only (the service calls this often while one is open).
    pub async fn poll_links(&mut self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.sync_links(&mut events).await?;
        events.append(&mut self.buffered);
        Ok(events)
    }

    fn finish_link(&self, id: i64, outcome: &str) -> Result<()> {
        self.db.conn().execute(
            "UPDATE device_links SET done_at = ?2, outcome = ?3 WHERE id = ?1",
            params![id, now_secs() as i64, outcome],
        )?;
        Ok(())
    }

    /// Answer what new devices sent to our open links (called by every sync).
    pub(super) async fn sync_links(&mut self, events: &mut Vec<Event>) -> Result<()> {
        let links = self.open_links()?;
        for link in links {
            if now_secs() > link.expires_at + 3600 {
                // Expired a while ago: whatever arrives now is refused by the new device's
                // own check; forget it.
                if !link.done {
                    self.finish_link(link.id, "expired")?;
                }
                continue;
            }
            let relay = self.relay_for(&link.relay)?;
            let key = MailboxKey::from_pkcs8(&link.mailbox_key)?;
            let msgs = relay.read_mailbox(&key, &link.mailbox, 0).await?;
            let mut done = Vec::new();
            for m in msgs {
                done.push(m.seq);
                let outcome = self.link_message(&link, &m.body.0, events).await;
                match outcome {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(Error::RelayUnreachable(_)) => {
                        done.pop();
                        break;
                    }
                    Err(e) => {
                        self.finish_link(link.id, &e.to_string())?;
                        // Tell the waiting device at once (it would otherwise time out).
                        if let Some((relay, mailbox, hpke)) = &link.reply {
                            let refused = LinkReply::Refused {
                                reason: format!("linking failed: {e}"),
                            };
                            let _ = self.reply(relay, mailbox, hpke, &refused).await;
                        }
                        self.emit(
                            events,
                            Event::notice(
                                None,
                                Notice::LinkFailed {
                                    error: Problem::from(&e),
                                },
                            ),
                        )?;
                        break;
                    }
                }
            }
            if !done.is_empty() {
                relay.ack(&key, &link.mailbox, done).await?;
            }
        }
        Ok(())
    }

    /// One message in a link's mailbox. `Ok(true)` when the link is finished.
    async fn link_message(
        &mut self,
        link: &LinkRow,
        sealed: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        let cs = self.cipher_suite();
        let plain = match device::hpke_open(cs, &link.hpke_secret, &link.hpke_public, sealed) {
            Ok(p) => p,
            Err(_) => {
                // Not sealed to this link (or altered on the way): nothing to answer.
                self.emit(events, Event::notice(None, Notice::LinkMessageUnreadable))?;
                return Ok(false);
            }
        };
        let msg: LinkMessage = serde_json::from_slice(&plain)
            .map_err(|_| Error::Protocol("an undecodable device link message".into()))?;
        match msg {
            LinkMessage::Keys(keys) => self.link_keys(link, keys, events).await,
        }
    }

    async fn reply(&self, relay: &str, mailbox: &Id, hpke: &[u8], reply: &LinkReply) -> Result<()> {
        let plain = serde_json::to_vec(reply).map_err(|e| Error::Protocol(e.to_string()))?;
        let sealed = device::hpke_seal(self.cipher_suite(), hpke, &plain)?;
        self.relay_for(relay)?
            .drop_message(
                random_id(),
                mailbox,
                Envelope::Device {
                    sealed: Bytes(sealed),
                }
                .encode(),
            )
            .await?;
        Ok(())
    }

    async fn link_keys(
        &mut self,
        link: &LinkRow,
        keys: LinkKeys,
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        if link.done {
            return Ok(false);
        }
        let (Some(device_key), Some((relay, mailbox, _))) = (&link.device_key, &link.reply) else {
            return Err(Error::Protocol(
                "KeyPackages arrived before the device asked to link".into(),
            ));
        };
        if !keys.check(&link.secret, device_key) {
            return Err(Error::Protocol(
                "the new device's KeyPackages are not bound to this link".into(),
            ));
        }
        let device_fp = mls::fingerprint(device_key);
        let mut kps = Vec::with_capacity(keys.key_packages.len());
        for kp in keys.key_packages {
            let substituted = || {
                Error::Protocol(
                    "a KeyPackage sent for linking is not the new device's (substituted on the way?); nothing was added"
                        .into(),
                )
            };
            let (person, signer) = mls::key_package_signer(&kp.0).map_err(|_| substituted())?;
            if person != self.fingerprint || signer != device_fp {
                return Err(substituted());
            }
            kps.push(kp.0);
        }
        let name = link.name.clone().unwrap_or_default();
        let added = self
            .add_device(device_fp, &name, relay, mailbox, kps, events)
            .await?;
        self.finish_link(link.id, "linked")?;
        self.emit(
            events,
            Event::notice(
                None,
                Notice::DeviceLinked {
                    name: name.to_string(),
                    conversations: added as u64,
                },
            ),
        )?;
        Ok(true)
    }

    /// Create the self group (once), with this device its only member.
    async fn ensure_self_group(&mut self) -> Result<Conv> {
        if let Some(id) = self.self_group()?
            && let Some(conv) = self.conv_by_id(&id)?
        {
            return Ok(conv);
        }
        let group_id = random_id();
        let mut group = self.mls.create_group(group_id.as_bytes())?;
        let token = group.token()?;
        let relay = self.relay.base().to_string();
        self.conv_client_for(&relay, &group_id)?
            .create_group(random_id(), group_id, group.epoch(), sha256(&token))
            .await?;
        let me = self.device_fp()?;
        self.db.transaction(|| {
            group.save()?;
            self.db.conn().execute(
                "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, created_at, hidden) VALUES (?1, 'group', ?2, ?3, ?4, 0, ?5, 1)",
                params![group_id.as_bytes(), SELF_GROUP_NAME, relay, group.epoch() as i64, now_secs() as i64],
            )?;
            self.store_token(&group_id, group.epoch(), &token)?;
            self.db.set_setting("self_group", group_id.as_bytes())?;
            self.db.conn().execute(
                "INSERT OR IGNORE INTO devices (device_fp, name, relay, mailbox_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&me[..], "", relay, self.mailbox.as_bytes(), now_secs() as i64],
            )?;
            Ok(())
        })?;
        self.conv_by_id(&group_id)?
            .ok_or_else(|| Error::Storage("the self group vanished".into()))
    }

    /// Add a verified new device to the self group and every conversation, then send it the
    /// device list and the history. Returns the number of conversations it was added to.
    async fn add_device(
        &mut self,
        device_fp: [u8; 32],
        name: &str,
        relay: &str,
        mailbox: &Id,
        mut kps: Vec<Vec<u8>>,
        events: &mut Vec<Event>,
    ) -> Result<usize> {
        let self_conv = self.ensure_self_group().await?;
        let convs = self.active_convs()?;
        let others: Vec<Conv> = convs
            .into_iter()
            .filter(|c| c.group_id != self_conv.group_id)
            .collect();
        if kps.len() != others.len() + 1 {
            return Err(Error::Protocol(format!(
                "the new device sent {} KeyPackages for {} conversations",
                kps.len(),
                others.len() + 1
            )));
        }
        self.db.conn().execute(
            "INSERT INTO devices (device_fp, name, relay, mailbox_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&device_fp[..], name, relay, mailbox.as_bytes(), now_secs() as i64],
        )?;
        // Contacts learn the new device from the signed list before it appears among them.
        self.publish_device_list().await?;
        let mut take = || kps.remove(0);
        let relay = relay.to_string();
        self.commit_change(
            &self_conv,
            vec![(take(), relay.clone(), *mailbox)],
            vec![],
            None,
        )
        .await?;
        let mut added = 0;
        for conv in &others {
            match self
                .commit_change(conv, vec![(take(), relay.clone(), *mailbox)], vec![], None)
                .await
            {
                Ok(()) => added += 1,
                Err(e) => self.emit(
                    events,
                    Event::notice(
                        Some(conv),
                        Notice::NewDeviceNotAdded {
                            error: Problem::from(&e),
                        },
                    ),
                )?,
            }
        }
        self.send_devices().await?;
        // The history, sealed under a key of its own, stored once on our relay; the key
        // travels in the self group.
        let archive = self.build_archive()?;
        let archive = self.upload_archive(&archive, &device_fp).await?;
        self.send_self(Body::History { archive }).await?;
        Ok(added)
    }

    /// Seal an archive under a fresh key and store it once as a blob on our relay; what the
    /// self group message carries. `device`: the one device it is for (empty: all).
    async fn upload_archive(&self, archive: &Archive, device: &[u8]) -> Result<ArchiveRef> {
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(archive).map_err(|e| Error::Storage(e.to_string()))?,
        );
        let mut key = zeroize::Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| Error::Crypto("the system random number generator failed".into()))?;
        let sealed = seal_archive(&key, &plain)?;
        let owner = crate::relay_client::BlobOwner::Mailbox {
            mailbox: self.mailbox,
            key: &self.mailbox_key,
        };
        let blob = self.relay.put_blob(&sealed, owner).await?;
        Ok(ArchiveRef {
            relay: self.relay.base().to_string(),
            blob,
            len: sealed.len() as u64,
            key: Bytes(key.to_vec()),
            device: Bytes(device.to_vec()),
        })
    }

    /// Fetch and open an archive another device of ours stored.
    async fn fetch_archive(&self, r: &ArchiveRef) -> Result<Archive> {
        let sealed = self
            .relay_for(&r.relay)?
            .get_blob_bytes(&r.blob, r.len, MAX_ARCHIVE)
            .await?;
        let plain = zeroize::Zeroizing::new(open_archive(&r.key.0, &sealed)?);
        serde_json::from_slice(&plain)
            .map_err(|_| Error::Protocol("an undecodable archive from another device".into()))
    }

    /// Keep the device list another device of ours sent (inside the caller's transaction).
    fn store_device_records(&self, devices: &[DeviceRecord]) -> Result<()> {
        for d in devices.iter().take(64) {
            let name: String = d
                .name
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect();
            self.db.conn().execute(
                "INSERT OR REPLACE INTO devices (device_fp, name, relay, mailbox_id, added_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![&d.id.0, name, d.relay, d.mailbox.map(|m| m.as_bytes().to_vec()), d.added_at as i64, d.revoked_at.map(|t| t as i64)],
            )?;
        }
        Ok(())
    }

    /// Send a body in the self group (queued when the relay is unreachable).
    async fn send_self(&mut self, body: Body) -> Result<()> {
        let Some(id) = self.self_group()? else {
            return Ok(());
        };
        let Some(conv) = self.conv_by_id(&id)?.filter(|c| c.active) else {
            return Ok(());
        };
        let payload = Payload {
            id: random_id(),
            expires_in: None,
            sent_at: now_millis(),
            body,
        };
        match self.send_payload(&conv, payload).await {
            Ok(_) | Err(Error::RelayUnreachable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Send the device list in the self group.
    async fn send_devices(&mut self) -> Result<()> {
        let devices = self.device_records()?;
        let signed = self.own_device_list()?;
        self.send_self(Body::Devices { devices, signed }).await
    }

    pub(super) fn device_records(&self) -> Result<Vec<DeviceRecord>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(
            "SELECT device_fp, name, relay, mailbox_id, added_at, revoked_at FROM devices ORDER BY added_at, device_fp",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeviceRecord {
                id: Bytes(r.get(0)?),
                name: r.get(1)?,
                relay: r.get(2)?,
                mailbox: r
                    .get::<_, Option<Vec<u8>>>(3)?
                    .and_then(|b| Id::from_slice(&b).ok()),
                added_at: r.get::<_, i64>(4)?.max(0) as u64,
                revoked_at: r.get::<_, Option<i64>>(5)?.map(|t| t.max(0) as u64),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn build_archive(&self) -> Result<Archive> {
        let device = Bytes(self.device_fp()?.to_vec());
        let mut settings = Vec::new();
        for key in SHARED_SETTINGS {
            if let Some(v) = self.db.get_setting(key)? {
                settings.push((key.to_string(), Bytes(v)));
            }
        }
        // Held to the end: nothing below may ask `self.db` again.
        let conn = self.db.conn();
        let mut a = Archive::default();
        let mut stmt = conn.prepare(
            "SELECT alias, fingerprint, display_name, relay, mailbox_id, group_id, verified, created_at FROM contacts",
        )?;
        a.contacts = stmt
            .query_map([], |r| {
                Ok(ArchivedContact {
                    alias: r.get(0)?,
                    fingerprint: Bytes(r.get(1)?),
                    display_name: r.get(2)?,
                    relay: r.get(3)?,
                    mailbox_id: r.get::<_, Option<Vec<u8>>>(4)?.map(Bytes),
                    group_id: r.get::<_, Option<Vec<u8>>>(5)?.map(Bytes),
                    verified: r.get(6)?,
                    created_at: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(
            "SELECT group_id, kind, name, relay, active, timer_secs, seq_base, created_at,
                    (SELECT MAX(seq) FROM messages m WHERE m.group_id = c.group_id AND m.unread = 0)
             FROM conversations c WHERE hidden = 0",
        )?;
        a.conversations = stmt
            .query_map([], |r| {
                Ok(ArchivedConversation {
                    group_id: Bytes(r.get(0)?),
                    kind: r.get(1)?,
                    name: r.get(2)?,
                    relay: r.get(3)?,
                    active: r.get(4)?,
                    timer_secs: r.get(5)?,
                    seq_base: r.get(6)?,
                    created_at: r.get(7)?,
                    read_seq: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(
            "SELECT id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, expires_in, expires_at, attachment
             FROM messages WHERE pending_body IS NULL AND failed IS NULL",
        )?;
        a.messages = stmt
            .query_map([], |r| {
                Ok(ArchivedMessage {
                    id: Bytes(r.get(0)?),
                    group_id: Bytes(r.get(1)?),
                    seq: r.get(2)?,
                    sender_fp: Bytes(r.get(3)?),
                    outgoing: r.get(4)?,
                    body: r.get(5)?,
                    sent_at: r.get(6)?,
                    received_at: r.get(7)?,
                    expires_in: r.get(8)?,
                    expires_at: r.get(9)?,
                    attachment: r.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(
            "SELECT group_id, relay, committer, members, claims_existing, received_at
             FROM invitations WHERE on_device IS NULL",
        )?;
        a.invitations = stmt
            .query_map([], |r| {
                Ok(ArchivedInvitation {
                    group_id: Bytes(r.get(0)?),
                    relay: r.get(1)?,
                    committer: Bytes(r.get(2)?),
                    members: r.get(3)?,
                    claims_existing: r.get(4)?,
                    received_at: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        a.device = device;
        a.settings = settings;
        Ok(a)
    }

    /// Whether invitation `id` waits on another device of ours.
    pub fn invitation_elsewhere(&self, id: i64) -> Result<bool> {
        let on: Option<Option<Vec<u8>>> = self
            .db
            .conn()
            .query_row(
                "SELECT on_device FROM invitations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        match on {
            None => Err(Error::NotFound(format!("no pending invitation {id}"))),
            Some(d) => Ok(d.is_some()),
        }
    }

    /// Answer an invitation that waits on another device of ours: that device accepts (and
    /// adds this one) or declines it when it next syncs.
    pub async fn invitation_answer_elsewhere(&mut self, id: i64, accept: bool) -> Result<()> {
        let gid: Vec<u8> = self.db.conn().query_row(
            "SELECT group_id FROM invitations WHERE id = ?1 AND on_device IS NOT NULL",
            params![id],
            |r| r.get(0),
        )?;
        let group_id =
            Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt invitation row".into()))?;
        self.send_self(Body::InvitationAnswer { group_id, accept })
            .await?;
        self.db
            .conn()
            .execute("DELETE FROM invitations WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Carry out answers our other devices gave to invitations that arrived here.
    pub(super) async fn answer_invitations(&mut self, events: &mut Vec<Event>) -> Result<()> {
        let answers: Vec<(String, Vec<u8>)> = {
            let conn = self.db.conn();
            let mut stmt = conn
                .prepare("SELECT key, value FROM settings WHERE key LIKE 'invitation_answer:%'")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (key, value) in answers {
            let gid = key.trim_start_matches("invitation_answer:");
            let id: Option<i64> = match Bytes::decode(gid) {
                Ok(g) => self
                    .db
                    .conn()
                    .query_row(
                        "SELECT id FROM invitations WHERE group_id = ?1 AND on_device IS NULL",
                        params![g],
                        |r| r.get(0),
                    )
                    .optional()?,
                Err(_) => None,
            };
            let outcome = match id {
                Some(id) if value == b"1" => self
                    .invitation_accept(id)
                    .await
                    .map(|name| Some(Notice::InvitationAcceptedElsewhere { name })),
                Some(id) => self
                    .invitation_decline(id)
                    .map(|()| Some(Notice::InvitationDeclinedElsewhere)),
                None => Ok(None),
            };
            match outcome {
                Err(e @ Error::RelayUnreachable(_)) => return Err(e),
                Err(e) => self.emit(
                    events,
                    Event::notice(
                        None,
                        Notice::InvitationElsewhereFailed {
                            error: Problem::from(&e),
                        },
                    ),
                )?,
                Ok(Some(text)) => self.emit(events, Event::notice(None, text))?,
                Ok(None) => {}
            }
            self.db
                .conn()
                .execute("DELETE FROM settings WHERE key = ?1", params![key])?;
        }
        events.append(&mut self.buffered);
        Ok(())
    }

    /// Apply the self group's bodies (only from our own person, only in the self group).
    /// Returns whether the body was one of them.
    pub(super) fn apply_self_body(
        &self,
        conv: &Conv,
        sender: &[u8; 32],
        body: &Body,
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        let ours = *sender == self.fingerprint && is_self_group(conv);
        match body {
            Body::Devices { devices, signed } => {
                if ours {
                    self.db.conn().execute("DELETE FROM devices", [])?;
                    self.store_device_records(devices)?;
                    if let Some(list) = signed {
                        self.keep_device_list(sender, list, None, events)?;
                    }
                }
                Ok(true)
            }
            Body::State { archive } => {
                if ours {
                    let json = serde_json::to_string(archive)
                        .map_err(|e| Error::Storage(e.to_string()))?;
                    self.db.set_setting("state_archive", json.as_bytes())?;
                }
                Ok(true)
            }
            Body::InvitationAnswer { group_id, accept } => {
                if ours {
                    self.db.set_setting(
                        &format!("invitation_answer:{group_id}"),
                        if *accept { b"1" } else { b"0" },
                    )?;
                }
                Ok(true)
            }
            Body::History { archive } => {
                if ours && archive.device.0 == self.device_fp()? {
                    let json = serde_json::to_string(archive)
                        .map_err(|e| Error::Storage(e.to_string()))?;
                    self.db.set_setting("history_archive", json.as_bytes())?;
                    self.emit(events, Event::notice(Some(conv), Notice::HistorySent))?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Fetch and import a history archive the self group announced (once).
    pub(super) async fn import_history(&mut self, events: &mut Vec<Event>) -> Result<usize> {
        self.import_state().await?;
        let Some(json) = self.db.get_setting("history_archive")? else {
            return Ok(0);
        };
        let r: ArchiveRef =
            serde_json::from_slice(&json).map_err(|e| Error::Storage(e.to_string()))?;
        let archive = self.fetch_archive(&r).await?;
        let n = archive.messages.len();
        self.db.transaction(|| {
            self.apply_archive(&archive, true)?;
            self.db
                .conn()
                .execute("DELETE FROM settings WHERE key = 'history_archive'", [])?;
            self.db
                .set_setting("history_imported", &(n as u64).to_be_bytes())?;
            self.emit(
                events,
                Event::notice(
                    None,
                    Notice::HistoryReceived {
                        conversations: archive.conversations.len() as u64,
                        messages: n as u64,
                    },
                ),
            )
        })?;
        Ok(n)
    }

    /// Note that contacts or conversation names changed: the next sync sends the state to
    /// the person's other devices (inside the caller's transaction, if any).
    pub(super) fn state_changed(&self) -> Result<()> {
        if self.self_group()?.is_some() {
            self.db.set_setting("self_state_dirty", b"1")?;
        }
        Ok(())
    }

    /// Send contacts and conversation names to our other devices if they changed.
    pub(super) async fn send_state_if_changed(&mut self) -> Result<()> {
        if self.db.get_setting("self_state_dirty")?.is_none() {
            return Ok(());
        }
        let me = self.device_fp()?;
        let others = self
            .device_records()?
            .iter()
            .any(|d| d.revoked_at.is_none() && d.id.0 != me);
        if others {
            let mut state = self.build_archive()?;
            state.messages.clear();
            let archive = self.upload_archive(&state, &[]).await?;
            self.send_self(Body::State { archive }).await?;
        }
        self.db
            .conn()
            .execute("DELETE FROM settings WHERE key = 'self_state_dirty'", [])?;
        Ok(())
    }

    /// Apply the latest contacts and names another device of ours sent.
    async fn import_state(&mut self) -> Result<()> {
        let Some(json) = self.db.get_setting("state_archive")? else {
            return Ok(());
        };
        let r: ArchiveRef =
            serde_json::from_slice(&json).map_err(|e| Error::Storage(e.to_string()))?;
        let state = self.fetch_archive(&r).await?;
        self.db.transaction(|| {
            self.apply_archive(&state, false)?;
            self.db
                .conn()
                .execute("DELETE FROM settings WHERE key = 'state_archive'", [])?;
            Ok(())
        })
    }

    /// Take contacts, names and (with `history`) messages from another device of ours.
    fn apply_archive(&self, a: &Archive, history: bool) -> Result<()> {
        for c in &a.conversations {
            let current: Option<String> = self
                .db
                .conn()
                .query_row(
                    "SELECT name FROM conversations WHERE group_id = ?1",
                    params![&c.group_id.0],
                    |r| r.get(0),
                )
                .optional()?;
            let kind = if c.kind == "direct" {
                "direct"
            } else {
                "group"
            };
            match current {
                // Joined already: take the other device's name, kind and positions.
                Some(name) => {
                    let name = if name == c.name {
                        name
                    } else {
                        self.unique_name(&c.name)?
                    };
                    self.db.conn().execute(
                        "UPDATE conversations SET name = ?2, kind = ?3, timer_secs = ?4, seq_base = ?5 WHERE group_id = ?1",
                        params![&c.group_id.0, name, kind, c.timer_secs, c.seq_base],
                    )?;
                }
                // Not joined here yet (its Welcome comes by itself): nothing to name.
                None if !history => {}
                // A conversation this person left: its history only.
                None => {
                    let name = self.unique_name(&c.name)?;
                    self.db.conn().execute(
                        "INSERT INTO conversations (group_id, kind, name, relay, read_epoch, cursor, active, created_at, timer_secs, seq_base)
                         VALUES (?1, ?2, ?3, ?4, 0, 0, 0, ?5, ?6, ?7)",
                        params![&c.group_id.0, kind, name, c.relay, c.created_at, c.timer_secs, c.seq_base],
                    )?;
                }
            }
        }
        let me = self.device_fp()?;
        for (key, value) in &a.settings {
            if SHARED_SETTINGS.contains(&key.as_str()) && value.len() <= 64 {
                self.db.set_setting(key, &value.0)?;
            }
        }
        let conn = self.db.conn();
        if !a.device.0.is_empty() && a.device.0 != me {
            // That device's pending invitations replace what we showed for it.
            conn.execute(
                "DELETE FROM invitations WHERE on_device = ?1",
                params![&a.device.0],
            )?;
            for i in &a.invitations {
                conn.execute(
                    "INSERT OR IGNORE INTO invitations (group_id, relay, welcome, committer, members, claims_existing, received_at, on_device)
                     SELECT ?1, ?2, x'', ?3, ?4, ?5, ?6, ?7
                     WHERE NOT EXISTS (SELECT 1 FROM conversations WHERE group_id = ?1 AND active = 1)",
                    params![&i.group_id.0, i.relay, &i.committer.0, i.members, i.claims_existing, i.received_at, &a.device.0],
                )?;
            }
        }
        for c in &a.conversations {
            if let Some(seq) = c.read_seq {
                conn.execute(
                    "UPDATE messages SET unread = 0 WHERE group_id = ?1 AND unread = 1 AND seq <= ?2",
                    params![&c.group_id.0, seq],
                )?;
            }
        }
        for c in &a.contacts {
            // A direct conversation is named after its contact: the alias follows it.
            let alias: String = match &c.group_id {
                Some(g) => conn
                    .query_row(
                        "SELECT name FROM conversations WHERE group_id = ?1",
                        params![&g.0],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or_else(|| c.alias.clone()),
                None => c.alias.clone(),
            };
            conn.execute(
                "INSERT INTO contacts (alias, fingerprint, display_name, relay, mailbox_id, group_id, created_at, verified)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (fingerprint) DO UPDATE SET verified = excluded.verified,
                    display_name = excluded.display_name, group_id = COALESCE(contacts.group_id, excluded.group_id)",
                params![alias, &c.fingerprint.0, c.display_name, c.relay, c.mailbox_id.as_ref().map(|b| b.0.clone()), c.group_id.as_ref().map(|b| b.0.clone()), c.created_at, c.verified],
            )?;
        }
        for m in &a.messages {
            conn.execute(
                "INSERT OR IGNORE INTO messages (id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, unread, expires_in, expires_at, attachment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11)",
                params![&m.id.0, &m.group_id.0, m.seq, &m.sender_fp.0, m.outgoing, m.body, m.sent_at, m.received_at, m.expires_in, m.expires_at, m.attachment],
            )?;
        }
        Ok(())
    }

    /// A link answer that arrived while `device join` syncs: a refusal ends the join.
    pub(super) fn device_envelope(&self, sealed: &[u8]) -> Result<()> {
        let (Some(secret), Some(public)) = (
            self.db.get_setting("join_hpke_secret")?,
            self.db.get_setting("join_hpke_public")?,
        ) else {
            return Ok(());
        };
        let secret = zeroize::Zeroizing::new(secret);
        if let Ok(plain) = device::hpke_open(self.cipher_suite(), &secret, &public, sealed)
            && let Ok(LinkReply::Refused { reason }) = serde_json::from_slice(&plain)
        {
            self.db.set_setting("join_refused", reason.as_bytes())?;
        }
        Ok(())
    }

    /// After joining a conversation someone else added us to: add our other devices too
    /// (a KeyPackage claimed from each one's mailbox, checked to be that device's).
    pub(super) async fn add_own_devices(
        &mut self,
        conv: &Conv,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        if self.self_group()? == Some(conv.group_id) {
            return Ok(());
        }
        let me = self.device_fp()?;
        let records = self.device_records()?;
        if records.len() < 2 {
            return Ok(());
        }
        // Catching up may have ended our membership already.
        let Some(conv) = self.conv_by_id(&conv.group_id)?.filter(|c| c.active) else {
            return Ok(());
        };
        let conv = &conv;
        // A revoked device of ours that is here (it was invited through its old mailbox, or
        // added us itself): remove it.
        let revoked: Vec<Vec<u8>> = records
            .iter()
            .filter(|d| d.revoked_at.is_some())
            .map(|d| d.id.0.clone())
            .collect();
        let present_revoked: Vec<Vec<u8>> = self
            .mls
            .load(conv.group_id.as_bytes())?
            .members()
            .iter()
            .filter(|m| revoked.iter().any(|r| r.as_slice() == m.device.as_slice()))
            .map(|m| m.device.to_vec())
            .collect();
        if !present_revoked.is_empty()
            && let Err(e) = self
                .commit_change(conv, Vec::new(), present_revoked, None)
                .await
        {
            self.emit(
                events,
                Event::notice(
                    Some(conv),
                    Notice::RevokedDeviceNotRemoved {
                        error: Problem::from(&e),
                    },
                ),
            )?;
        }
        let others: Vec<DeviceRecord> = records
            .into_iter()
            .filter(|d| d.revoked_at.is_none() && d.id.0 != me)
            .collect();
        for d in others {
            let (Some(relay), Some(mailbox)) = (d.relay.clone(), d.mailbox) else {
                continue;
            };
            let present = self
                .mls
                .load(conv.group_id.as_bytes())?
                .members()
                .iter()
                .any(|m| m.device.as_slice() == d.id.0.as_slice());
            if present {
                continue;
            }
            let added = async {
                let claimed = self.relay_for(&relay)?.claim_key_package(&mailbox).await?;
                let (person, signer) = mls::key_package_signer(&claimed.key_package.0)?;
                if person != self.fingerprint || signer.as_slice() != d.id.0.as_slice() {
                    return Err(Error::KeyPackageMismatch);
                }
                Ok(claimed.key_package.0)
            }
            .await;
            let outcome = match added {
                Ok(kp) => {
                    self.commit_change(conv, vec![(kp, relay, mailbox)], vec![], None)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                self.emit(
                    events,
                    Event::notice(
                        Some(conv),
                        Notice::OwnDeviceNotAdded {
                            name: d.name.clone(),
                            error: Problem::from(&e),
                        },
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// The person's devices, as this device knows them.
    pub fn devices(&self) -> Result<Vec<DeviceView>> {
        let me = self.device_fp()?;
        let mut out: Vec<DeviceView> = self
            .device_records()?
            .into_iter()
            .map(|d| DeviceView {
                this: d.id.0 == me,
                id: hex::encode(&d.id.0),
                name: d.name,
                revoked: d.revoked_at.is_some(),
            })
            .collect();
        if !out.iter().any(|d| d.this) {
            out.insert(
                0,
                DeviceView {
                    id: hex::encode(me),
                    name: String::new(),
                    this: true,
                    revoked: false,
                },
            );
        }
        Ok(out)
    }

    /// `device revoke ID`: remove that device from the self group and every conversation;
    /// it can read nothing sent after. `ID` is a device id or a unique prefix of one.
    pub async fn device_revoke(&mut self, id: &str) -> Result<String> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Usage(
                "give a device id (or at least its first 4 hex digits) from `device list`".into(),
            ));
        }
        let matches: Vec<DeviceView> = self
            .devices()?
            .into_iter()
            .filter(|d| d.id.starts_with(&id))
            .collect();
        let d = match matches.as_slice() {
            [d] => d.clone(),
            [] => return Err(Error::NotFound(format!("no device {id}"))),
            _ => {
                return Err(Error::Usage(format!(
                    "{id} names several devices; give more digits"
                )));
            }
        };
        if d.this {
            return Err(Error::Usage(
                "a device cannot revoke itself; revoke it from another device (or wipe it)".into(),
            ));
        }
        if d.revoked {
            return Err(Error::Usage(format!(
                "device {:?} is already revoked",
                d.name
            )));
        }
        let fp = hex::decode(&d.id).map_err(|_| Error::Storage("corrupt device id".into()))?;
        let mut convs = self.active_convs()?;
        // The self group last: the device list that says "revoked" goes out after it is out
        // of every conversation.
        let self_id = self.self_group()?;
        convs.sort_by_key(|c| Some(c.group_id) == self_id);
        for conv in &convs {
            let present = self
                .mls
                .load(conv.group_id.as_bytes())?
                .members()
                .iter()
                .any(|m| m.device.as_slice() == fp.as_slice());
            // The `REVOKE_WITHOUT_REMOVAL` fault point leaves the device in the groups, as
            // when this device's removal has not landed yet (the H2 test of what contacts do
            // with a commit from a revoked device).
            if present && !crate::fault::on("REVOKE_WITHOUT_REMOVAL") {
                self.commit_change(conv, Vec::new(), vec![fp.clone()], None)
                    .await?;
            }
        }
        self.db.conn().execute(
            "UPDATE devices SET revoked_at = ?2 WHERE device_fp = ?1",
            params![fp, now_secs() as i64],
        )?;
        // Every contact is told, in every conversation, that it no longer speaks for us.
        self.publish_device_list().await?;
        self.send_devices().await?;
        Ok(d.name)
    }

    /// `device join --name NAME`: make this (new, empty) home a device of a person. A profile
    /// of its own is made on `relay`; `show` is given the one-time link (and its code) to
    /// take to the device that holds the identity key (`device add LINK`). Waits until that
    /// device has added this one, at most `timeout`, and never past the link's expiry
    /// without an answer. On any failure nothing is left in `home`.
    pub async fn device_join(
        home: &Path,
        passphrase: &str,
        relay: &str,
        name: &str,
        timeout: std::time::Duration,
        show: impl FnOnce(&str, &str),
    ) -> Result<(Profile, Joined)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(crate::text::is_hidden)
        {
            return Err(Error::Usage(
                "the device name must be 1 to 64 printable characters".into(),
            ));
        }
        // A profile of its own first (keys, mailbox), named later after the person.
        let net = crate::net::Net::from_env()?.unwrap_or_default();
        let mut p = Profile::init_device(home, passphrase, relay, name, net).await?;
        let path = Profile::db_path(home);
        let outcome = p.join_inner(name, timeout, show).await;
        match outcome {
            Ok(j) => Ok((p, j)),
            Err(e) => {
                drop(p);
                remove_db_files(&path);
                Err(e)
            }
        }
    }

    async fn join_inner(
        &mut self,
        name: &str,
        timeout: std::time::Duration,
        show: impl FnOnce(&str, &str),
    ) -> Result<Joined> {
        let deadline = std::time::Instant::now() + timeout;
        let cs = self.cipher_suite();
        let device_key = self.db.setting("mls_public")?;
        let (hpke_secret, hpke_public) = device::hpke_keypair(cs)?;
        let hpke_secret = zeroize::Zeroizing::new(hpke_secret);
        let mut link_secret = zeroize::Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut link_secret)
            .map_err(|_| Error::Crypto("the system random number generator failed".into()))?;
        let link = Link {
            v: 2,
            relay: self.relay.base().to_string(),
            mailbox: self.mailbox,
            hpke: Bytes(hpke_public.clone()),
            secret: Bytes(link_secret.to_vec()),
            device_key: Bytes(device_key.clone()),
            name: name.to_string(),
            cipher_suite: cs,
            expires_at: now_secs() + device::LINK_TTL,
        };
        let code = link.code();
        show(&link.to_link(), &code);
        // The answer: our certificate and where to send our KeyPackages (or why not).
        let reply = loop {
            let msgs = self
                .relay
                .read_mailbox(&self.mailbox_key, &self.mailbox, 0)
                .await?;
            let mut found = None;
            for m in &msgs {
                self.relay
                    .ack(&self.mailbox_key, &self.mailbox, vec![m.seq])
                    .await?;
                if let Ok(Envelope::Device { sealed }) = Envelope::decode(&m.body.0)
                    && let Ok(plain) = device::hpke_open(cs, &hpke_secret, &hpke_public, &sealed.0)
                    && let Ok(r) = serde_json::from_slice::<LinkReply>(&plain)
                {
                    found = Some(r);
                    break;
                }
            }
            if let Some(r) = found {
                break r;
            }
            if now_secs() > link.expires_at + 5 {
                return Err(Error::Usage(
                    "the link expired before the other device added this one; nothing was linked (run device join again for a new link)".into(),
                ));
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Busy(
                    "the other device did not add this one in time; nothing was linked".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        };
        let (cert, person_name, wanted, reply_to) = match reply {
            LinkReply::Refused { reason } => {
                return Err(Error::Usage(format!("the other device refused: {reason}")));
            }
            LinkReply::Accepted {
                cert,
                name: person,
                key_packages,
                self_group,
                devices,
                reply_relay,
                reply_mailbox,
                reply_hpke,
                mac,
            } => {
                // Only a device that saw our link can answer it.
                if !device::accepted_mac_ok(
                    &link_secret,
                    &cert.0,
                    &reply_relay,
                    &reply_mailbox,
                    &reply_hpke.0,
                    &mac.0,
                ) {
                    return Err(Error::Protocol(
                        "an answer to this link does not prove it saw the link; nothing was linked"
                            .into(),
                    ));
                }
                crate::check_foreign_relay_url(&reply_relay)?;
                self.db.set_setting("self_group", self_group.as_bytes())?;
                self.store_device_records(&devices)?;
                // This device, last (the list the first device sends next says the same).
                self.db.conn().execute(
                    "INSERT OR REPLACE INTO devices (device_fp, name, relay, mailbox_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![&mls::fingerprint(&device_key)[..], name, self.relay.base(), self.mailbox.as_bytes(), now_secs() as i64],
                )?;
                (
                    cert,
                    person,
                    key_packages,
                    (reply_relay, reply_mailbox, reply_hpke),
                )
            }
        };
        let parsed = DeviceCert::decode(&cert.0)
            .ok_or_else(|| Error::Protocol("the other device sent no certificate".into()))??;
        parsed.verify(&device_key)?;
        if wanted == 0 || wanted > MAX_LINK_KEY_PACKAGES {
            return Err(Error::Protocol(format!(
                "the other device asked for {wanted} KeyPackages"
            )));
        }
        // Become a device of that person: the certificate in our credential, their name.
        let person_name = crate::text::clean_name(&person_name);
        self.db.set_setting("device_cert", &cert.0)?;
        self.db.set_setting("name", person_name.as_bytes())?;
        self.db.set_setting("device_name", name.as_bytes())?;
        let secret = zeroize::Zeroizing::new(self.db.setting("mls_secret")?);
        self.mls = Mls::new(
            self.db.clone(),
            &secret,
            &device_key,
            self.mls.cipher_suite(),
            Some(&cert.0),
        )?;
        self.fingerprint = parsed.person();
        self.name = person_name.clone();
        // The pool made at init carries the old credential: replace it.
        self.db.conn().execute("DELETE FROM mls_key_packages", [])?;
        let mut kps = Vec::with_capacity(wanted as usize);
        for _ in 0..wanted {
            kps.push(self.mls.key_package(false)?);
        }
        if crate::fault::on("SUBSTITUTE_KEY_PACKAGES") {
            // Fault injection for the test: KeyPackages of another key, as a relay that
            // handed out someone else's would.
            let other = mls::generate_signer(self.mls.cipher_suite())?;
            let db = self.db.clone();
            let fake = Mls::new(
                db,
                &other.secret,
                &other.public,
                self.mls.cipher_suite(),
                Some(&cert.0),
            )?;
            kps[0] = fake.key_package(false)?;
        }
        // A refusal of what follows arrives while syncing (see `device_envelope`).
        self.db.set_setting("join_hpke_secret", &hpke_secret)?;
        self.db.set_setting("join_hpke_public", &hpke_public)?;
        let keys = LinkKeys::new(&link_secret, &device_key, kps);
        let (reply_relay, reply_mailbox, reply_hpke) = reply_to;
        let plain = serde_json::to_vec(&LinkMessage::Keys(keys))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        self.relay_for(&reply_relay)?
            .drop_message(
                random_id(),
                &reply_mailbox,
                device::hpke_seal(cs, &reply_hpke.0, &plain)?,
            )
            .await?;
        let last_resort = self.mls.key_package(true)?;
        self.upload_key_packages(KEY_PACKAGE_POOL, Some(last_resort))
            .await?;
        // Wait for the Welcomes, the device list and the history (sync imports it).
        let messages;
        loop {
            let mut events = self.sync().await?;
            for e in &events {
                if let Event::Notice {
                    notice: Notice::JoinFailed { error },
                    ..
                } = e
                {
                    return Err(Error::Protocol(format!(
                        "could not join a conversation: {}",
                        error.detail
                    )));
                }
            }
            self.buffered.append(&mut events);
            if let Some(reason) = self.db.get_setting("join_refused")? {
                return Err(Error::Usage(format!(
                    "the other device refused: {}",
                    String::from_utf8_lossy(&reason)
                )));
            }
            if let Some(n) = self.db.get_setting("history_imported")? {
                messages = <[u8; 8]>::try_from(n.as_slice())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0) as usize;
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Busy(
                    "the other device did not finish linking in time (it adds this device when it syncs); nothing was linked".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        for key in ["join_hpke_secret", "join_hpke_public"] {
            self.db
                .conn()
                .execute("DELETE FROM settings WHERE key = ?1", params![key])?;
        }
        Ok(Joined {
            code,
            name: person_name,
            conversations: self.active_convs()?.len().saturating_sub(1),
            messages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L8: archives of different sizes seal to the same Padmé bucket, and open to what was
    /// sealed (the padding is JSON whitespace).
    #[test]
    fn finding_l8_history_archives_are_padded() {
        let key = [7u8; 32];
        let small = Archive::default();
        let mut larger = Archive::default();
        larger
            .settings
            .push(("move_after".into(), Bytes(vec![1; 900])));
        let seal = |a: &Archive| seal_archive(&key, &serde_json::to_vec(a).unwrap()).unwrap();
        let (s, l) = (seal(&small), seal(&larger));
        assert_eq!(
            s.len(),
            l.len(),
            "two histories of different sizes look the same"
        );
        assert!(s.len() >= 4096);
        let opened: Archive = serde_json::from_slice(&open_archive(&key, &l).unwrap()).unwrap();
        assert_eq!(opened.settings, larger.settings);
    }
}
