//! An in-memory [`Store`]: the same rules ([`super::rules`]) over maps, for fast unit tests of
//! the rules and of code above the store. Nothing is durable; the relay binary never uses it.
//!
//! A write runs its rule on a copy of the state and keeps the copy only if the rule succeeds
//! (savepoints are copies too), so a refused request changes nothing, as in a transaction.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use samizdat_proto::{
    Bytes, ClaimedKeyPackage, Entries, Entry, EntryKind, Id, KeyPackageCount, Limits,
    MailboxMessage,
};

use super::rules::{self, GroupRow, MailboxCounters, NewBlob, Tables, not_found, run_now};
use super::{
    AppendRequest, Appended, BlobQuota, BlobRecord, CLAIM_RECORD_SECS, ChannelState, NewRecord,
    Result, Store, StoreError, Swept, channels, now_secs, scope,
};
use crate::notify::Topic;

#[derive(Debug, Clone)]
struct Message {
    body: Vec<u8>,
    stored_at: u64,
    expires_at: u64,
}

#[derive(Debug, Clone)]
struct Mailbox {
    owner_key: Vec<u8>,
    next_seq: u64,
    messages: BTreeMap<u64, Message>,
    bytes: u64,
    last_resort: Option<Vec<u8>>,
    /// (upload time, KeyPackage), oldest first.
    pool: VecDeque<(u64, Vec<u8>)>,
    last_seen_at: u64,
}

#[derive(Debug, Clone)]
struct StoredEntry {
    epoch: u64,
    kind: EntryKind,
    body: Vec<u8>,
    stored_at: u64,
    request: Id,
}

#[derive(Debug, Clone)]
struct Group {
    current_epoch: u64,
    next_seq: u64,
    bytes: u64,
    last_append_at: u64,
    /// epoch → (token hash, created at)
    epochs: BTreeMap<u64, ([u8; 32], u64)>,
    entries: BTreeMap<u64, StoredEntry>,
}

#[derive(Debug, Clone)]
struct Blob {
    record: BlobRecord,
    source: [u8; 32],
}

#[derive(Debug, Clone, Default)]
struct State {
    /// (scope, target, request) → (answer, stored at)
    requests: HashMap<(String, Id, Id), (String, u64)>,
    mailboxes: BTreeMap<Id, Mailbox>,
    nonces: HashMap<Id, u64>,
    groups: BTreeMap<Id, Group>,
    blobs: HashMap<Id, Blob>,
    channels: BTreeMap<Id, Channel>,
}

#[derive(Debug, Clone)]
struct Channel {
    admins: Vec<[u8; 32]>,
    /// seq → (hash, record)
    records: BTreeMap<u64, ([u8; 32], Vec<u8>)>,
}

/// The in-memory [`Store`].
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> Result<T>) -> Result<T> {
        f(&*self.state()?)
    }
}

/// Run a rule as one transaction: on a copy of the state, kept only if the rule succeeds.
macro_rules! in_copy {
    ($store:ident, |$t:ident| $rule:expr) => {{
        let mut state = $store.state()?;
        let mut tables = MemTables {
            state: state.clone(),
            saved: Vec::new(),
        };
        let out = {
            let $t = &mut tables;
            run_now($rule)?
        };
        *state = tables.state;
        Ok(out)
    }};
}

/// The in-memory [`Tables`]: a working copy of the state and its savepoints.
struct MemTables {
    state: State,
    saved: Vec<State>,
}

impl MemTables {
    fn mailbox(&mut self, mailbox: &Id) -> Result<&mut Mailbox> {
        self.state
            .mailboxes
            .get_mut(mailbox)
            .ok_or_else(|| not_found("mailbox"))
    }

    fn group(&mut self, group: &Id) -> Result<&mut Group> {
        self.state
            .groups
            .get_mut(group)
            .ok_or_else(|| not_found("group"))
    }
}

impl Tables for MemTables {
    async fn prior(&mut self, scope: &str, target: &Id, request: &Id) -> Result<Option<String>> {
        Ok(self
            .state
            .requests
            .get(&(scope.to_string(), *target, *request))
            .map(|(answer, _)| answer.clone()))
    }

    async fn claims(&mut self, mailbox: &Id, since: u64) -> Result<Vec<(Id, String)>> {
        Ok(self
            .state
            .requests
            .iter()
            .filter(|((scope, target, _), (_, at))| {
                scope == super::scope::CLAIM && target == mailbox && *at > since
            })
            .map(|((_, _, request), (answer, _))| (*request, answer.clone()))
            .collect())
    }

    async fn remember(
        &mut self,
        scope: &str,
        target: &Id,
        request: &Id,
        answer: String,
        now: u64,
    ) -> Result<()> {
        let key = (scope.to_string(), *target, *request);
        if self.state.requests.contains_key(&key) {
            return Err(StoreError::Retry);
        }
        self.state.requests.insert(key, (answer, now));
        Ok(())
    }

    async fn mailbox_exists(&mut self, mailbox: &Id) -> Result<bool> {
        Ok(self.state.mailboxes.contains_key(mailbox))
    }

    async fn insert_mailbox(&mut self, mailbox: &Id, owner_key: &[u8], now: u64) -> Result<()> {
        if self.state.mailboxes.contains_key(mailbox) {
            return Err(StoreError::Retry);
        }
        self.state.mailboxes.insert(
            *mailbox,
            Mailbox {
                owner_key: owner_key.to_vec(),
                next_seq: 1,
                messages: BTreeMap::new(),
                bytes: 0,
                last_resort: None,
                pool: VecDeque::new(),
                last_seen_at: now,
            },
        );
        Ok(())
    }

    async fn mailbox_for_update(&mut self, mailbox: &Id) -> Result<Option<MailboxCounters>> {
        Ok(self.state.mailboxes.get(mailbox).map(|m| MailboxCounters {
            next_seq: m.next_seq,
            messages: m.messages.len() as u64,
            bytes: m.bytes,
        }))
    }

    async fn insert_message(
        &mut self,
        mailbox: &Id,
        seq: u64,
        body: &[u8],
        now: u64,
        expires_at: u64,
    ) -> Result<()> {
        let m = self.mailbox(mailbox)?;
        m.messages.insert(
            seq,
            Message {
                body: body.to_vec(),
                stored_at: now,
                expires_at,
            },
        );
        m.next_seq = seq + 1;
        m.bytes += body.len() as u64;
        Ok(())
    }

    async fn delete_messages(&mut self, mailbox: &Id, seqs: &[u64]) -> Result<(u64, u64)> {
        let Ok(m) = self.mailbox(mailbox) else {
            return Ok((0, 0));
        };
        let (mut deleted, mut bytes) = (0, 0);
        for seq in seqs {
            if let Some(msg) = m.messages.remove(seq) {
                deleted += 1;
                bytes += msg.body.len() as u64;
            }
        }
        m.bytes -= bytes;
        Ok((deleted, bytes))
    }

    async fn last_resort_for_update(&mut self, mailbox: &Id) -> Result<Option<Option<Vec<u8>>>> {
        Ok(self
            .state
            .mailboxes
            .get(mailbox)
            .map(|m| m.last_resort.clone()))
    }

    async fn has_last_resort(&mut self, mailbox: &Id) -> Result<Option<bool>> {
        Ok(self
            .state
            .mailboxes
            .get(mailbox)
            .map(|m| m.last_resort.is_some()))
    }

    async fn set_last_resort(&mut self, mailbox: &Id, key_package: &[u8]) -> Result<()> {
        self.mailbox(mailbox)?.last_resort = Some(key_package.to_vec());
        Ok(())
    }

    async fn pool_size(&mut self, mailbox: &Id) -> Result<u64> {
        Ok(self
            .state
            .mailboxes
            .get(mailbox)
            .map_or(0, |m| m.pool.len() as u64))
    }

    async fn insert_key_package(
        &mut self,
        mailbox: &Id,
        key_package: &[u8],
        now: u64,
    ) -> Result<()> {
        self.mailbox(mailbox)?
            .pool
            .push_back((now, key_package.to_vec()));
        Ok(())
    }

    async fn take_key_package(&mut self, mailbox: &Id) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state
            .mailboxes
            .get_mut(mailbox)
            .and_then(|m| m.pool.pop_front())
            .map(|(_, kp)| kp))
    }

    async fn group_exists(&mut self, group: &Id) -> Result<bool> {
        Ok(self.state.groups.contains_key(group))
    }

    async fn insert_group(&mut self, group: &Id, epoch: u64, now: u64) -> Result<()> {
        if self.state.groups.contains_key(group) {
            return Err(StoreError::Retry);
        }
        self.state.groups.insert(
            *group,
            Group {
                current_epoch: epoch,
                next_seq: 1,
                bytes: 0,
                last_append_at: now,
                epochs: BTreeMap::new(),
                entries: BTreeMap::new(),
            },
        );
        Ok(())
    }

    async fn group_for_update(&mut self, group: &Id) -> Result<Option<GroupRow>> {
        Ok(self.state.groups.get(group).map(|g| GroupRow {
            current_epoch: g.current_epoch,
            next_seq: g.next_seq,
            bytes: g.bytes,
        }))
    }

    async fn insert_epoch(
        &mut self,
        group: &Id,
        epoch: u64,
        token_hash: &[u8; 32],
        now: u64,
    ) -> Result<()> {
        let g = self.group(group)?;
        if g.epochs.contains_key(&epoch) {
            return Err(StoreError::Retry);
        }
        g.epochs.insert(epoch, (*token_hash, now));
        Ok(())
    }

    async fn epoch_token_hash(&mut self, group: &Id, epoch: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state
            .groups
            .get(group)
            .and_then(|g| g.epochs.get(&epoch))
            .map(|(h, _)| h.to_vec()))
    }

    async fn entry_of_request(&mut self, group: &Id, request: &Id) -> Result<Option<u64>> {
        Ok(self.state.groups.get(group).and_then(|g| {
            g.entries
                .iter()
                .find(|(_, e)| e.request == *request)
                .map(|(seq, _)| *seq)
        }))
    }

    async fn insert_entry(&mut self, seq: u64, req: &AppendRequest, now: u64) -> Result<()> {
        let g = self.group(&req.group_id)?;
        if g.entries.contains_key(&seq) {
            return Err(StoreError::Retry);
        }
        g.entries.insert(
            seq,
            StoredEntry {
                epoch: req.epoch,
                kind: req.kind,
                body: req.body.clone(),
                stored_at: now,
                request: req.request_id,
            },
        );
        Ok(())
    }

    async fn update_group(
        &mut self,
        group: &Id,
        current_epoch: u64,
        next_seq: u64,
        added_bytes: u64,
        now: u64,
    ) -> Result<()> {
        let g = self.group(group)?;
        g.current_epoch = current_epoch;
        g.next_seq = next_seq;
        g.bytes += added_bytes;
        g.last_append_at = now;
        Ok(())
    }

    async fn savepoint(&mut self) -> Result<()> {
        self.saved.push(self.state.clone());
        Ok(())
    }

    async fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.state = self
            .saved
            .pop()
            .ok_or_else(|| StoreError::Backend("no savepoint".into()))?;
        Ok(())
    }

    async fn release_savepoint(&mut self) -> Result<()> {
        self.saved
            .pop()
            .map(drop)
            .ok_or_else(|| StoreError::Backend("no savepoint".into()))
    }

    async fn wake(&mut self, _topics: &[Topic]) -> Result<()> {
        Ok(())
    }

    async fn lock_blob_source(&mut self, _source: &[u8; 32]) -> Result<()> {
        Ok(())
    }

    async fn blob_bytes_held(&mut self, source: &[u8; 32], now: u64) -> Result<u64> {
        Ok(self
            .state
            .blobs
            .values()
            .filter(|b| b.source == *source && b.record.expires_at > now)
            .map(|b| b.record.offset)
            .sum())
    }

    async fn insert_blob(&mut self, blob: &NewBlob) -> Result<()> {
        if self.state.blobs.contains_key(&blob.blob) {
            return Err(StoreError::Retry);
        }
        self.state.blobs.insert(
            blob.blob,
            Blob {
                record: BlobRecord {
                    token_hash: blob.token_hash,
                    length: blob.length,
                    offset: 0,
                    expires_at: blob.expires_at,
                    for_channel: blob.for_channel,
                },
                source: blob.source,
            },
        );
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_mailbox(
        &self,
        request_id: Id,
        mailbox: Id,
        owner_key: Vec<u8>,
        now: u64,
    ) -> Result<()> {
        in_copy!(self, |t| rules::create_mailbox(
            t, request_id, mailbox, &owner_key, now,
        ))
    }

    async fn mailbox_owner(&self, mailbox: Id) -> Result<Option<Vec<u8>>> {
        self.read(|s| Ok(s.mailboxes.get(&mailbox).map(|m| m.owner_key.clone())))
    }

    async fn use_nonce(&self, nonce: Id, expires_at: u64, mailbox: Id, now: u64) -> Result<bool> {
        let mut s = self.state()?;
        if s.nonces.contains_key(&nonce) {
            return Ok(false);
        }
        s.nonces.insert(nonce, expires_at);
        if let Some(m) = s.mailboxes.get_mut(&mailbox) {
            m.last_seen_at = now;
        }
        Ok(true)
    }

    async fn touch_mailbox(&self, mailbox: Id, now: u64) -> Result<()> {
        if let Some(m) = self.state()?.mailboxes.get_mut(&mailbox) {
            m.last_seen_at = now;
        }
        Ok(())
    }

    async fn drop_message(
        &self,
        request_id: Id,
        mailbox: Id,
        body: Vec<u8>,
        now: u64,
        limits: &Limits,
    ) -> Result<u64> {
        in_copy!(self, |t| rules::drop_message(
            t, request_id, mailbox, &body, now, limits,
        ))
    }

    async fn read_mailbox(
        &self,
        mailbox: Id,
        after: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<MailboxMessage>> {
        self.read(|s| {
            let Some(m) = s.mailboxes.get(&mailbox) else {
                return Ok(Vec::new());
            };
            Ok(m.messages
                .range(after.saturating_add(1)..)
                .filter(|(_, msg)| msg.expires_at > now)
                .take(limit)
                .map(|(seq, msg)| MailboxMessage {
                    seq: *seq,
                    body: Bytes(msg.body.clone()),
                    stored_at: msg.stored_at,
                })
                .collect())
        })
    }

    async fn ack_messages(&self, request_id: Id, mailbox: Id, seqs: Vec<u64>) -> Result<u64> {
        in_copy!(self, |t| rules::ack_messages(
            t,
            request_id,
            mailbox,
            &seqs,
            now_secs(),
        ))
    }

    async fn upload_key_packages(
        &self,
        request_id: Id,
        mailbox: Id,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max: u64,
    ) -> Result<KeyPackageCount> {
        in_copy!(self, |t| rules::upload_key_packages(
            t,
            request_id,
            mailbox,
            &key_packages,
            last_resort.as_deref(),
            max,
            now_secs(),
        ))
    }

    async fn claim_key_package(&self, request_id: Id, mailbox: Id) -> Result<ClaimedKeyPackage> {
        in_copy!(self, |t| rules::claim_key_package(
            t,
            request_id,
            mailbox,
            now_secs(),
        ))
    }

    async fn key_package_count(&self, mailbox: Id) -> Result<KeyPackageCount> {
        in_copy!(self, |t| rules::key_package_count(t, &mailbox))
    }

    async fn create_group(
        &self,
        request_id: Id,
        group: Id,
        epoch: u64,
        token_hash: [u8; 32],
        now: u64,
    ) -> Result<()> {
        in_copy!(self, |t| rules::create_group(
            t,
            request_id,
            group,
            epoch,
            &token_hash,
            now,
        ))
    }

    async fn epoch_token(&self, group: Id, epoch: u64) -> Result<Option<([u8; 32], u64)>> {
        self.read(|s| {
            Ok(s.groups
                .get(&group)
                .and_then(|g| g.epochs.get(&epoch).map(|(h, _)| (*h, g.current_epoch))))
        })
    }

    async fn token_epoch(&self, group: Id, token_hash: [u8; 32]) -> Result<Option<u64>> {
        self.read(|s| {
            Ok(s.groups.get(&group).and_then(|g| {
                g.epochs
                    .iter()
                    .find(|(_, (h, _))| *h == token_hash)
                    .map(|(e, _)| *e)
            }))
        })
    }

    async fn channel_state(&self, channel: Id) -> Result<Option<ChannelState>> {
        self.read(|s| {
            Ok(s.channels.get(&channel).and_then(|c| {
                let (seq, (hash, _)) = c.records.last_key_value()?;
                Some(ChannelState {
                    seq: *seq,
                    hash: *hash,
                    admins: c.admins.clone(),
                })
            }))
        })
    }

    async fn store_channel_record(&self, r: NewRecord, _now: u64) -> Result<bool> {
        // Channels are not part of the rules' tables: one lock, changed only on success.
        let mut s = self.state()?;
        let c = s.channels.get(&r.channel);
        let head = c.and_then(|c| c.records.last_key_value().map(|(s, (h, _))| (*s, *h)));
        let stored = c.and_then(|c| c.records.get(&r.seq).map(|(h, _)| *h));
        match channels::step(head, stored, &r)? {
            channels::Step::Repeat => return Ok(false),
            channels::Step::Create => {
                s.channels.insert(
                    r.channel,
                    Channel {
                        admins: r.admins.clone().unwrap_or_default(),
                        records: BTreeMap::new(),
                    },
                );
            }
            channels::Step::Extend => {}
        }
        let c = s
            .channels
            .get_mut(&r.channel)
            .ok_or_else(|| not_found("channel"))?;
        if let Some(a) = r.admins {
            c.admins = a;
        }
        c.records.insert(r.seq, (r.hash, r.bytes));
        Ok(true)
    }

    async fn read_channel(&self, channel: Id, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        if to < from {
            return Ok(Vec::new());
        }
        self.read(|s| {
            Ok(s.channels
                .get(&channel)
                .map(|c| {
                    c.records
                        .range(from..=to)
                        .map(|(_, (_, r))| r.clone())
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    async fn append(&self, req: AppendRequest, now: u64, limits: &Limits) -> Result<Appended> {
        in_copy!(self, |t| rules::append(t, &req, now, limits))
    }

    async fn read_entries(
        &self,
        group: Id,
        epoch: u64,
        after: u64,
        limit: usize,
    ) -> Result<Entries> {
        self.read(|s| {
            let g = s.groups.get(&group).ok_or_else(|| not_found("group"))?;
            let entries = g
                .entries
                .range(after.saturating_add(1)..)
                .filter(|(_, e)| e.epoch == epoch)
                .take(limit)
                .map(|(seq, e)| Entry {
                    seq: *seq,
                    epoch: e.epoch,
                    kind: e.kind,
                    body: Bytes(e.body.clone()),
                })
                .collect();
            let next_token_hash = if g.current_epoch > epoch {
                g.epochs.get(&(epoch + 1)).map(|(h, _)| Bytes(h.to_vec()))
            } else {
                None
            };
            Ok(Entries {
                entries,
                current_epoch: g.current_epoch,
                next_token_hash,
                last_seq: g.next_seq.saturating_sub(1),
            })
        })
    }

    async fn sweep(&self, now: u64, limits: &Limits) -> Result<Swept> {
        let mut s = self.state()?;
        let mut swept = Swept::default();
        for m in s.mailboxes.values_mut() {
            let before = m.messages.len();
            let mut freed = 0;
            m.messages.retain(|_, msg| {
                let keep = msg.expires_at > now;
                if !keep {
                    freed += msg.body.len() as u64;
                }
                keep
            });
            m.bytes -= freed;
            swept.mailbox_messages += (before - m.messages.len()) as u64;
        }
        let cutoff = now.saturating_sub(limits.retention_secs);
        let group_idle = now.saturating_sub(limits.group_idle_secs);
        for g in s.groups.values_mut() {
            let before = g.entries.len();
            let mut freed = 0;
            g.entries.retain(|_, e| {
                let keep = e.stored_at > cutoff;
                if !keep {
                    freed += e.body.len() as u64;
                }
                keep
            });
            g.bytes -= freed;
            swept.entries += (before - g.entries.len()) as u64;
            let (current, entries) = (g.current_epoch, &g.entries);
            g.epochs.retain(|epoch, (_, created)| {
                *created > cutoff
                    || *epoch >= current
                    || entries.values().any(|e| e.epoch == *epoch)
            });
        }
        let groups_before = s.groups.len();
        s.groups.retain(|_, g| g.last_append_at > group_idle);
        swept.groups = (groups_before - s.groups.len()) as u64;
        let idle = now.saturating_sub(limits.mailbox_idle_secs);
        let kp_cutoff = now.saturating_sub(limits.key_package_ttl_secs);
        let mailboxes_before = s.mailboxes.len();
        s.mailboxes.retain(|_, m| {
            let keep = m.last_seen_at > idle;
            if !keep {
                swept.mailbox_messages += m.messages.len() as u64;
                swept.key_packages += m.pool.len() as u64;
            }
            keep
        });
        swept.mailboxes = (mailboxes_before - s.mailboxes.len()) as u64;
        for m in s.mailboxes.values_mut() {
            let before = m.pool.len();
            m.pool.retain(|(uploaded, _)| *uploaded > kp_cutoff);
            swept.key_packages += (before - m.pool.len()) as u64;
        }
        s.nonces.retain(|_, expires| *expires > now);
        let claim_cutoff = now.saturating_sub(CLAIM_RECORD_SECS);
        s.requests.retain(|(sc, _, _), (_, stored)| {
            *stored > cutoff && (sc != scope::CLAIM || *stored > claim_cutoff)
        });
        swept.stored_bytes = s.groups.values().map(|g| g.bytes).sum::<u64>()
            + s.mailboxes.values().map(|m| m.bytes).sum::<u64>()
            + s.blobs.values().map(|b| b.record.length).sum::<u64>()
            + s.channels
                .values()
                .flat_map(|c| c.records.values())
                .map(|(_, r)| r.len() as u64)
                .sum::<u64>();
        Ok(swept)
    }

    async fn create_blob(
        &self,
        blob: Id,
        token_hash: [u8; 32],
        length: u64,
        source: [u8; 32],
        for_channel: bool,
        now: u64,
        limits: &Limits,
    ) -> Result<()> {
        let new = NewBlob::new(blob, token_hash, length, source, for_channel, now, limits);
        in_copy!(self, |t| rules::create_blob(
            t,
            &new,
            limits.blob_quota_bytes
        ))
    }

    async fn blob(&self, blob: Id, now: u64) -> Result<Option<BlobRecord>> {
        self.read(|s| {
            Ok(s.blobs
                .get(&blob)
                .filter(|b| b.record.expires_at > now)
                .map(|b| b.record))
        })
    }

    async fn advance_blob(
        &self,
        blob: Id,
        from: u64,
        to: u64,
        finished_expiry: u64,
        quota: BlobQuota,
    ) -> Result<bool> {
        let mut s = self.state()?;
        let Some(source) = s.blobs.get(&blob).map(|b| b.source) else {
            return Ok(false);
        };
        let uploaded: u64 = s
            .blobs
            .values()
            .filter(|b| b.source == source && b.record.expires_at > quota.now)
            .map(|b| b.record.offset)
            .sum();
        if uploaded.saturating_add(to.saturating_sub(from)) > quota.bytes {
            return Ok(false);
        }
        match s.blobs.get_mut(&blob) {
            Some(b) if b.record.offset == from && to <= b.record.length => {
                b.record.offset = to;
                if to == b.record.length {
                    b.record.expires_at = finished_expiry;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn expire_blobs(&self, now: u64) -> Result<Vec<Id>> {
        let mut s = self.state()?;
        let gone: Vec<Id> = s
            .blobs
            .iter()
            .filter(|(_, b)| b.record.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            s.blobs.remove(id);
        }
        Ok(gone)
    }
}
