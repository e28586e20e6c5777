//! Calls (issue 31; docs/CALLS.md): voice and video in 1:1 conversations.
//!
//! The media flows between the two browsers (WebRTC, DTLS-SRTP); what lives here is the
//! signalling and the keys a relay cannot swap:
//!
//! - Every step is an MLS application message of the conversation (`Body::Call`): the offer
//!   and answer, with the DTLS fingerprints the browsers will check, are authenticated by MLS,
//!   so a relay that rewrites them breaks the call, not the encryption.
//! - The call's *room token* comes from the group's MLS exporter (context: the call id), made
//!   by the caller and carried in the encrypted invite; each side proves membership of the
//!   log with its epoch token and gets TURN credentials for that room from the
//!   conversation's relay — the same relay for both sides, wherever their mailboxes live.
//! - By default only relayed candidates are used (`relay_only`), so neither side learns the
//!   other's address; the `calls_direct` setting allows direct connections.
//!
//! - Behind a proxy (or Tor), or when the relay's certificate is pinned (a browser would not
//!   trust it), the browser's only TURN server is the *call tunnel*: a listener on loopback
//!   that this process carries to the relay's own port through the proxy, under the
//!   conversation's proxy identity and inside the relay's TLS — so a call leaves the machine
//!   exactly as the messaging does, and never around the proxy ([`CallTunnel`]).
//!
//! A call rings for [`RING_SECS`]; one that is not answered by then is missed. A finished
//! call is a line in the chat (`Event::CallEnded`), said by each front in its language.

use super::*;
use crate::ids::CallId;
use crate::payload::CallSignal;

/// The most people in a group call: a mesh, where each uploads a stream to every other
/// (docs/CALLS.md; more would need the selective forwarding unit designed there).
pub const MAX_GROUP_CALL: usize = 4;

/// How long a call rings before it counts as missed (Signal rings 60 s).
pub const RING_SECS: u64 = 60;
/// The largest SDP accepted (audio, video and a handful of relayed candidates: 3–8 KB).
pub const MAX_SDP: usize = 32 * 1024;

/// The length of a group call's SFrame base key (AES_128_GCM_SHA256_128: 16 bytes).
pub const SFRAME_KEY_LEN: usize = 16;

/// The most TURN connections one call's tunnel carries at once (a browser opens one per
/// TURN server address and network interface; two are usual).
pub const MAX_TUNNEL_CONNECTIONS: usize = 8;

/// A loopback TURN listener for one call whose connections are carried to the relay's own
/// port by [`RelayClient::raw_stream`] (through the proxy, under the conversation's identity,
/// inside the relay's TLS). Dropping it closes the listener and every connection.
pub(crate) struct CallTunnel {
    port: u16,
    task: tokio::task::AbortHandle,
}

impl Drop for CallTunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CallTunnel {
    async fn open(relay: RelayClient) -> Result<CallTunnel> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::Usage(format!("cannot open the call tunnel: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::Usage(format!("cannot open the call tunnel: {e}")))?
            .port();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it (the tunnel dropped) ends every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut local, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                while conns.try_join_next().is_some() {}
                if conns.len() >= MAX_TUNNEL_CONNECTIONS {
                    continue; // refused: dropped at once
                }
                let _ = local.set_nodelay(true);
                let relay = relay.clone();
                conns.spawn(async move {
                    match relay.raw_stream().await {
                        Ok(mut up) => {
                            let _ = tokio::io::copy_bidirectional(&mut local, &mut up).await;
                        }
                        Err(e) => tracing::info!("call tunnel: {e}"),
                    }
                });
            }
        });
        Ok(CallTunnel {
            port,
            task: task.abort_handle(),
        })
    }
}

/// How a call ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// It was answered (then it has a duration).
    Answered,
    /// It rang here and no one took it (or the caller gave up first).
    Missed,
    /// We called and no one took it.
    NoAnswer,
    /// The callee said no.
    Declined,
    /// The callee was already in a call.
    Busy,
    /// We gave up before an answer.
    Cancelled,
    /// Another device of ours took it.
    AnsweredElsewhere,
    /// It could not connect.
    Failed,
}

impl CallOutcome {
    /// Every outcome (fronts check they can say each).
    pub const ALL: [CallOutcome; 8] = [
        CallOutcome::Answered,
        CallOutcome::Missed,
        CallOutcome::NoAnswer,
        CallOutcome::Declined,
        CallOutcome::Busy,
        CallOutcome::Cancelled,
        CallOutcome::AnsweredElsewhere,
        CallOutcome::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Missed => "missed",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Declined => "declined",
            CallOutcome::Busy => "busy",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::AnsweredElsewhere => "answered_elsewhere",
            CallOutcome::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<CallOutcome> {
        CallOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Where a call is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Made here, its offer not sent yet (`call_prepare` → `call_start`).
    Preparing,
    Ringing,
    Connected,
    Ended,
}

impl CallState {
    fn parse(s: &str) -> Result<CallState> {
        Ok(match s {
            "preparing" => CallState::Preparing,
            "ringing" => CallState::Ringing,
            "connected" => CallState::Connected,
            "ended" => CallState::Ended,
            _ => return Err(Error::Storage(format!("unknown call state {s:?}"))),
        })
    }
}

/// One call, as `calls` and `call` give it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CallView {
    pub call_id: CallId,
    pub conversation_id: ConversationId,
    pub outgoing: bool,
    pub video: bool,
    pub state: CallState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CallOutcome>,
    /// When it started ringing (ms since the epoch).
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    /// The caller's offer and the callee's answer (SDP) as MLS carried them.
    pub offer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The DTLS certificate fingerprint in the other side's SDP (what the browser checks the
    /// connection against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_fingerprint: Option<String>,
    /// A group call (a mesh of at most [`MAX_GROUP_CALL`] people).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group: bool,
    /// A group call's other people who joined, each with its pair's offer and answer (in
    /// [`Profile::call`] only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<CallLeg>,
    /// A group call's SFrame base key (hex; in [`Profile::call`] only): the page's frame
    /// encryption worker derives each sender's key from it (RFC 9605 §4.4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sframe_key: Option<String>,
    /// Our own fingerprint (hex) in a group call: what the other legs address us by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<String>,
    /// A 1:1 call renegotiated while connected: the newest offer and its answer (in
    /// [`Profile::call`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renegotiation: Option<Renegotiation>,
}

/// The newest renegotiation of a connected 1:1 call.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Renegotiation {
    pub offer: String,
    /// We made the offer (the other side answers).
    pub mine: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// One other person in a group call, and the connection between us.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CallLeg {
    /// Their fingerprint (hex).
    pub peer: String,
    /// What we call them.
    pub name: String,
    /// They are still in the call.
    pub present: bool,
    /// The offer they made us when they joined after us (we answer it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub their_offer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub my_answer: Option<String>,
    /// The offer we made them when we joined after them (they answer it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub my_offer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub their_answer: Option<String>,
}

impl CallView {
    /// How long it lasted once answered (0 if it never was), in seconds.
    pub fn duration_secs(&self) -> u64 {
        match (self.answered_at, self.ended_at) {
            (Some(a), Some(e)) => e.saturating_sub(a) / 1000,
            _ => 0,
        }
    }
}

/// One ICE server for the browser's `RTCPeerConnection`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// What a browser needs to connect a call: the relay's TURN server with this call's
/// credentials, and whether only relayed candidates may be used.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CallIce {
    pub call_id: CallId,
    pub ice_servers: Vec<IceServer>,
    /// `iceTransportPolicy: "relay"` (the default: no one learns an address).
    pub relay_only: bool,
    pub ttl_secs: u64,
    /// The only TURN server is this process's loopback tunnel (a proxy or Tor is configured,
    /// or the relay's certificate is pinned): the call leaves the machine as messaging does.
    #[serde(default)]
    pub tunnel: bool,
}

/// The `a=fingerprint` of an SDP (its first, as browsers write one per session).
pub fn sdp_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_string())
}

/// Check an SDP we are about to send or were sent: text of a sane size that is an SDP; with
/// `relay_only`, every candidate line that is not relayed is removed (defence in depth: the
/// browser already gathers only relayed ones).
fn clean_sdp(sdp: &str, relay_only: bool) -> Result<String> {
    if sdp.len() > MAX_SDP || !sdp.starts_with("v=0") || sdp.contains('\0') {
        return Err(Error::Usage("not a session description (SDP)".into()));
    }
    if !relay_only {
        return Ok(sdp.to_string());
    }
    let kept: Vec<&str> = sdp
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=candidate:") || l.contains(" typ relay"))
        .collect();
    Ok(kept.concat())
}

type CallRow = (
    Vec<u8>,
    Vec<u8>,
    bool,
    bool,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    bool,
);

const CALL_COLUMNS: &str = "call_id, group_id, outgoing, video, state, outcome, started_at, answered_at, ended_at, offer, answer, group_call";

fn call_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallRow> {
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
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn call_view(row: CallRow) -> Result<CallView> {
    let (id, gid, outgoing, video, state, outcome, started, answered, ended, offer, answer, group) =
        row;
    let peer_sdp = if outgoing {
        answer.as_deref()
    } else {
        Some(offer.as_str())
    };
    Ok(CallView {
        call_id: CallId::from_slice(&id)?,
        conversation_id: ConversationId::from_slice(&gid)?,
        outgoing,
        video,
        state: CallState::parse(&state)?,
        outcome: outcome.as_deref().and_then(CallOutcome::parse),
        started_at: started.max(0) as u64,
        answered_at: answered.map(|a| a.max(0) as u64),
        ended_at: ended.map(|e| e.max(0) as u64),
        peer_fingerprint: peer_sdp.and_then(sdp_fingerprint),
        offer,
        answer,
        group,
        legs: Vec::new(),
        sframe_key: None,
        me: None,
        renegotiation: None,
    })
}

impl Profile {
    /// Calls may connect directly (each side then learns the other's address): off by
    /// default, shared by the person's devices.
    pub fn calls_direct(&self) -> Result<bool> {
        Ok(self.db.get_setting(Setting::CallsDirect)?.as_deref() == Some(b"1"))
    }

    pub fn set_calls_direct(&self, on: bool) -> Result<()> {
        self.db
            .set_setting(Setting::CallsDirect, if on { b"1" } else { b"0" })?;
        self.state_changed()
    }

    /// Calls of one conversation (or all), newest first.
    pub fn calls(&self, conversation: Option<&ConversationId>) -> Result<Vec<CallView>> {
        let conn = self.db.conn();
        let rows = match conversation {
            Some(c) => {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {CALL_COLUMNS} FROM calls WHERE group_id = ?1 AND state != 'preparing' ORDER BY started_at DESC LIMIT 200"
                ))?;
                stmt.query_map(params![c.as_bytes()], call_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
            None => {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {CALL_COLUMNS} FROM calls WHERE state != 'preparing' ORDER BY started_at DESC LIMIT 200"
                ))?;
                stmt.query_map([], call_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        rows.into_iter().map(call_view).collect()
    }

    /// One call, with its offer and answer.
    pub fn call(&self, call: &CallId) -> Result<CallView> {
        let row = self
            .db
            .conn()
            .query_row(
                &format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?1"),
                params![call.as_bytes()],
                call_row,
            )
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("no call {call}")))?;
        let mut v = call_view(row)?;
        if v.group {
            self.fill_legs(&mut v)?;
        } else {
            let (offer, mine, answer): (Option<String>, bool, Option<String>) =
                self.db.conn().query_row(
                    "SELECT reoffer, reoffer_mine, reanswer FROM calls WHERE call_id = ?1",
                    params![call.as_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
            v.renegotiation = offer.map(|offer| Renegotiation {
                offer,
                mine,
                answer,
            });
        }
        Ok(v)
    }

    /// A group call's legs, key and our own fingerprint.
    fn fill_legs(&self, v: &mut CallView) -> Result<()> {
        type LegRow = (
            Vec<u8>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (rows, key) = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT peer, left_at, their_offer, my_answer, my_offer, their_answer FROM call_legs WHERE call_id = ?1 ORDER BY joined_at",
            )?;
            let rows = stmt
                .query_map(params![v.call_id.as_bytes()], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<LegRow>>>()?;
            let key: Option<Vec<u8>> = conn.query_row(
                "SELECT sframe_key FROM calls WHERE call_id = ?1",
                params![v.call_id.as_bytes()],
                |r| r.get(0),
            )?;
            (rows, key)
        };
        for (peer, left, their_offer, my_answer, my_offer, their_answer) in rows {
            v.legs.push(CallLeg {
                name: self.label(v.conversation_id.id(), &peer)?,
                peer: hex::encode(&peer),
                present: left.is_none(),
                their_offer,
                my_answer,
                my_offer,
                their_answer,
            });
        }
        v.sframe_key = key.map(hex::encode);
        v.me = Some(hex::encode(self.fingerprint));
        Ok(())
    }

    /// Start a call in a 1:1 conversation: a call id, its room token, and the relay's TURN
    /// credentials for it — what the browser needs to gather its candidates before it makes
    /// the offer ([`Profile::call_start`] sends it).
    pub async fn call_prepare(
        &mut self,
        conversation: &ConversationId,
        video: bool,
    ) -> Result<CallIce> {
        let conv = self.conv(conversation)?;
        if !conv.active {
            return Err(Error::Usage("this conversation has ended".into()));
        }
        if conv.kind == ConvKind::Group {
            return self.group_call_prepare(&conv, video).await;
        }
        if conv.kind != ConvKind::Direct {
            return Err(Error::Usage(
                "calls are in 1:1 chats and groups of up to four people".into(),
            ));
        }
        self.check_not_blocked(&conv)?;
        let peer: Vec<u8> = self
            .db
            .conn()
            .query_row(
                "SELECT fingerprint FROM contacts WHERE group_id = ?1",
                params![conv.group_id.as_bytes()],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| Error::Usage("this contact has not joined yet".into()))?;
        if self.busy_with(None)? {
            return Err(Error::Usage("already in a call".into()));
        }
        let call = CallId::from_id(random_id());
        let group = self.mls.load(conv.group_id.as_bytes())?;
        let room = group.call_room(call.as_bytes())?;
        let now = now_millis() as i64;
        self.db.conn().execute(
            "INSERT INTO calls (call_id, group_id, outgoing, peer, video, state, offer, room, started_at)
             VALUES (?1, ?2, 1, ?3, ?4, 'preparing', '', ?5, ?6)",
            params![call.as_bytes(), conv.group_id.as_bytes(), peer, video, &room[..], now],
        )?;
        self.call_ice(&call).await
    }

    async fn group_call_prepare(&mut self, conv: &Conv, video: bool) -> Result<CallIce> {
        let group = self.mls.load(conv.group_id.as_bytes())?;
        let people = group.people().len();
        if people > MAX_GROUP_CALL {
            return Err(Error::Usage(format!(
                "group calls are for up to {MAX_GROUP_CALL} people; this group has {people}"
            )));
        }
        if people < 2 {
            return Err(Error::Usage("no one else is in this group yet".into()));
        }
        if self.busy_with(None)? {
            return Err(Error::Usage("already in a call".into()));
        }
        let call = CallId::from_id(random_id());
        let room = group.call_room(call.as_bytes())?;
        let key = group.sframe_base_key(call.as_bytes())?;
        self.db.conn().execute(
            "INSERT INTO calls (call_id, group_id, outgoing, peer, video, state, offer, room, started_at, group_call, sframe_key)
             VALUES (?1, ?2, 1, X'', ?3, 'preparing', '', ?4, ?5, 1, ?6)",
            params![call.as_bytes(), conv.group_id.as_bytes(), video, &room[..], now_millis() as i64, &key[..]],
        )?;
        self.call_ice(&call).await
    }

    /// Ring the other side with our offer (made with [`Profile::call_prepare`]'s servers).
    /// A group call starts with no offer: each person who joins offers to those already in.
    pub async fn call_start(&mut self, call: &CallId, offer: &str) -> Result<()> {
        let v = self.call(call)?;
        if !v.outgoing || v.state != CallState::Preparing {
            return Err(Error::Usage(format!("call {call} has already started")));
        }
        if v.group {
            let (room, key): (Vec<u8>, Vec<u8>) = self.db.conn().query_row(
                "SELECT room, sframe_key FROM calls WHERE call_id = ?1",
                params![call.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let now = now_millis() as i64;
            self.db.conn().execute(
                "UPDATE calls SET state = 'connected', started_at = ?2, answered_at = ?2 WHERE call_id = ?1",
                params![call.as_bytes(), now],
            )?;
            let conv = self.conv(&v.conversation_id)?;
            let body = Body::Call {
                call_id: *call.id(),
                signal: CallSignal::GroupInvite {
                    video: v.video,
                    room: Bytes(room),
                    key: Bytes(key),
                },
            };
            queued(self.send_body(&conv, body).await)?;
            return Ok(());
        }
        let offer = clean_sdp(offer, !self.calls_direct()?)?;
        let room: Vec<u8> = self.db.conn().query_row(
            "SELECT room FROM calls WHERE call_id = ?1",
            params![call.as_bytes()],
            |r| r.get(0),
        )?;
        self.db.conn().execute(
            "UPDATE calls SET state = 'ringing', offer = ?2, started_at = ?3 WHERE call_id = ?1",
            params![call.as_bytes(), offer, now_millis() as i64],
        )?;
        let conv = self.conv(&v.conversation_id)?;
        let body = Body::Call {
            call_id: *call.id(),
            signal: CallSignal::Invite {
                video: v.video,
                sdp: offer,
                room: Bytes(room),
            },
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(())
    }

    /// Join a ringing group call with an offer for each person in it (`offers`: their
    /// fingerprint in hex, our SDP for them). Those who join later offer to us.
    pub async fn call_join(&mut self, call: &CallId, offers: &[(String, String)]) -> Result<()> {
        let v = self.call(call)?;
        if !v.group || v.outgoing || v.state != CallState::Ringing {
            return Err(Error::Usage(format!(
                "call {call} is not a group call ringing here"
            )));
        }
        let relay_only = !self.calls_direct()?;
        let mut out = Vec::new();
        for (to, sdp) in offers {
            let Some(leg) = v.legs.iter().find(|l| &l.peer == to && l.present) else {
                return Err(Error::Usage(format!(
                    "{to} is not in call {call} (or has left it)"
                )));
            };
            let fp = hex::decode(&leg.peer).map_err(|_| Error::Storage("corrupt leg".into()))?;
            out.push((fp, clean_sdp(sdp, relay_only)?));
        }
        let now = now_millis() as i64;
        self.db.conn().execute(
            "UPDATE calls SET state = 'connected', answered_at = ?2 WHERE call_id = ?1",
            params![call.as_bytes(), now],
        )?;
        for (fp, sdp) in &out {
            self.db.conn().execute(
                "UPDATE call_legs SET my_offer = ?3, their_answer = NULL WHERE call_id = ?1 AND peer = ?2",
                params![call.as_bytes(), fp, sdp],
            )?;
        }
        let conv = self.conv(&v.conversation_id)?;
        let body = Body::Call {
            call_id: *call.id(),
            signal: CallSignal::Join {
                offers: out
                    .into_iter()
                    .map(|(to, sdp)| crate::payload::CallOffer { to: Bytes(to), sdp })
                    .collect(),
            },
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(())
    }

    /// In a group call: answer the offer `to` (their fingerprint, hex) made us when joining.
    pub async fn call_answer(&mut self, call: &CallId, to: &str, answer: &str) -> Result<()> {
        let v = self.call(call)?;
        if !v.group || v.state != CallState::Connected {
            return Err(Error::Usage(format!(
                "call {call} is not a group call we are in"
            )));
        }
        let Some(leg) = v
            .legs
            .iter()
            .find(|l| l.peer == to && l.present && l.their_offer.is_some())
        else {
            return Err(Error::Usage(format!("{to} made no offer in call {call}")));
        };
        let fp = hex::decode(&leg.peer).map_err(|_| Error::Storage("corrupt leg".into()))?;
        let answer = clean_sdp(answer, !self.calls_direct()?)?;
        self.db.conn().execute(
            "UPDATE call_legs SET my_answer = ?3 WHERE call_id = ?1 AND peer = ?2",
            params![call.as_bytes(), &fp, &answer],
        )?;
        let conv = self.conv(&v.conversation_id)?;
        let body = Body::Call {
            call_id: *call.id(),
            signal: CallSignal::Answer {
                to: Bytes(fp),
                sdp: answer,
            },
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(())
    }

    /// Offer anew in a connected 1:1 call (an ICE restart, video added): the other side
    /// answers with [`Profile::call_reanswer`].
    pub async fn call_renegotiate(&mut self, call: &CallId, offer: &str) -> Result<()> {
        let v = self.call(call)?;
        if v.group || v.state != CallState::Connected {
            return Err(Error::Usage(format!(
                "call {call} is not a connected 1:1 call"
            )));
        }
        let offer = clean_sdp(offer, !self.calls_direct()?)?;
        self.db.conn().execute(
            "UPDATE calls SET reoffer = ?2, reoffer_mine = 1, reanswer = NULL WHERE call_id = ?1",
            params![call.as_bytes(), offer],
        )?;
        let conv = self.conv(&v.conversation_id)?;
        let body = Body::Call {
            call_id: *call.id(),
            signal: CallSignal::Renegotiate { sdp: offer },
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(())
    }

    /// Answer the other side's renegotiation.
    pub async fn call_reanswer(&mut self, call: &CallId, answer: &str) -> Result<()> {
        let v = self.call(call)?;
        let pending = v
            .renegotiation
            .as_ref()
            .is_some_and(|r| !r.mine && r.answer.is_none());
        if v.state != CallState::Connected || !pending {
            return Err(Error::Usage(format!(
                "call {call} has no offer of the other side to answer"
            )));
        }
        let answer = clean_sdp(answer, !self.calls_direct()?)?;
        self.db.conn().execute(
            "UPDATE calls SET reanswer = ?2 WHERE call_id = ?1",
            params![call.as_bytes(), answer],
        )?;
        let conv = self.conv(&v.conversation_id)?;
        let body = Body::Call {
            call_id: *call.id(),
            signal: CallSignal::Reanswer { sdp: answer },
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(())
    }

    /// Take an incoming call with our answer.
    pub async fn call_accept(&mut self, call: &CallId, answer: &str) -> Result<()> {
        let v = self.call(call)?;
        if v.group {
            return Err(Error::Usage(format!(
                "call {call} is a group call: join it with an offer for each person in it"
            )));
        }
        if v.outgoing || v.state != CallState::Ringing {
            return Err(Error::Usage(format!("call {call} is not ringing here")));
        }
        let answer = clean_sdp(answer, !self.calls_direct()?)?;
        self.db.conn().execute(
            "UPDATE calls SET state = 'connected', answer = ?2, answered_at = ?3 WHERE call_id = ?1",
            params![call.as_bytes(), answer, now_millis() as i64],
        )?;
        let conv = self.conv(&v.conversation_id)?;
        let body = Body::Call {
            call_id: *call.id(),
            signal: CallSignal::Accept { sdp: answer },
        };
        queued(self.send_body(&conv, body).await)?;
        Ok(())
    }

    /// Do not take an incoming call (the caller is told it was declined; no one is told of
    /// a group call not joined).
    pub async fn call_decline(&mut self, call: &CallId) -> Result<()> {
        let v = self.call(call)?;
        if v.outgoing || v.state != CallState::Ringing {
            return Err(Error::Usage(format!("call {call} is not ringing here")));
        }
        let owed = (!v.group).then_some("decline");
        self.end_call(&v, CallOutcome::Declined, owed)?;
        self.finish_calls().await
    }

    /// Hang up (or give up ringing): the other side is told.
    pub async fn call_end(&mut self, call: &CallId) -> Result<()> {
        let v = self.call(call)?;
        let outcome = match (v.state, v.outgoing) {
            (CallState::Ended, _) => return Ok(()),
            (CallState::Preparing, _) => {
                self.call_tunnels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(call);
                self.db.conn().execute(
                    "DELETE FROM calls WHERE call_id = ?1",
                    params![call.as_bytes()],
                )?;
                return Ok(());
            }
            (CallState::Connected, _) => CallOutcome::Answered,
            (CallState::Ringing, true) => CallOutcome::Cancelled,
            (CallState::Ringing, false) => CallOutcome::Declined,
        };
        let owed = if v.group && v.state == CallState::Ringing {
            // Not joining a group call tells no one: the others are not waiting for us.
            None
        } else if !v.outgoing && v.state == CallState::Ringing {
            Some("decline")
        } else {
            Some("end")
        };
        self.end_call(&v, outcome, owed)?;
        self.finish_calls().await
    }

    /// The relay's TURN servers and this call's credentials (asked again when they expire).
    pub async fn call_ice(&mut self, call: &CallId) -> Result<CallIce> {
        let v = self.call(call)?;
        let room: Vec<u8> = self.db.conn().query_row(
            "SELECT room FROM calls WHERE call_id = ?1",
            params![call.as_bytes()],
            |r| r.get(0),
        )?;
        if v.state == CallState::Ended {
            return Err(Error::Usage(format!("call {call} has ended")));
        }
        let conv = self.conv(&v.conversation_id)?;
        let token = self.token(&conv.group_id, conv.read_epoch)?;
        // With several relay processes, both sides meet on the one the room picks (not on
        // whichever address each side's client last reached: after a failover they differ).
        let client = self
            .conv_client_for(&conv.relay, &conv.group_id)?
            .for_room(&room);
        let creds = client
            .turn_credentials(&conv.log, conv.read_epoch, &token, &room)
            .await?;
        // Behind a proxy the browser must not reach the relay around it; a pinned certificate
        // is one the browser would refuse. Either way: the tunnel, and relayed only.
        let tunnel = self.net.proxy.is_some() || client.pinned();
        let mut urls = Vec::new();
        if tunnel {
            let port = self.call_tunnel(call, &client).await?;
            urls.push(format!("turn:127.0.0.1:{port}?transport=tcp"));
        } else {
            let host = client
                .host()
                .ok_or_else(|| Error::Protocol("the relay's address has no host".into()))?;
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            if let Some(p) = creds.udp_port {
                urls.push(format!("turn:{host}:{p}?transport=udp"));
            }
            if let Some(p) = creds.tcp_port {
                urls.push(format!("turn:{host}:{p}?transport=tcp"));
            }
            // TURN over TLS on the relay's own port: for a relay with a certificate the
            // browser trusts (a pinned one goes through the tunnel above).
            if let Some(port) = client.tls_port() {
                urls.push(format!("turns:{host}:{port}?transport=tcp"));
            }
        }
        Ok(CallIce {
            call_id: *call,
            ice_servers: vec![IceServer {
                urls,
                username: creds.username,
                credential: creds.credential,
            }],
            relay_only: tunnel || !self.calls_direct()?,
            ttl_secs: creds.ttl_secs,
            tunnel,
        })
    }

    /// This call's tunnel port, opened on first use (ended calls' tunnels are closed here
    /// too, in case their end was not seen by this process).
    async fn call_tunnel(&self, call: &CallId, client: &RelayClient) -> Result<u16> {
        let live: HashSet<CallId> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare("SELECT call_id FROM calls WHERE state != 'ended'")?;
            stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .filter_map(|r| r.ok())
                .filter_map(|b| Id::from_slice(&b).ok().map(CallId::from_id))
                .collect()
        };
        {
            let mut tunnels = self.call_tunnels.lock().unwrap_or_else(|p| p.into_inner());
            tunnels.retain(|id, _| live.contains(id));
            if let Some(t) = tunnels.get(call) {
                return Ok(t.port);
            }
        }
        let t = CallTunnel::open(client.clone()).await?;
        let port = t.port;
        self.call_tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*call, t);
        Ok(port)
    }

    /// Whether a call other than `except` is ringing or connected here.
    fn busy_with(&self, except: Option<&Id>) -> Result<bool> {
        let cutoff = now_millis().saturating_sub(RING_SECS * 1000) as i64;
        let n: i64 = self.db.conn().query_row(
            "SELECT COUNT(*) FROM calls WHERE (state = 'connected' OR (state = 'ringing' AND started_at > ?1)) AND call_id != ?2",
            params![cutoff, except.map(|e| e.as_bytes().to_vec()).unwrap_or_default()],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Mark a call ended (a line in its chat), owing the other side `owed` if set.
    fn end_call(&self, v: &CallView, outcome: CallOutcome, owed: Option<&str>) -> Result<()> {
        let now = now_millis();
        let n = self.db.conn().execute(
            "UPDATE calls SET state = 'ended', outcome = ?2, ended_at = ?3, owed = ?4 WHERE call_id = ?1 AND state != 'ended'",
            params![v.call_id.as_bytes(), outcome.as_str(), now as i64, owed],
        )?;
        self.call_tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&v.call_id);
        if n == 0 {
            return Ok(());
        }
        let duration_secs = match (outcome, v.answered_at) {
            (CallOutcome::Answered, Some(a)) => now.saturating_sub(a) / 1000,
            _ => 0,
        };
        self.emit(Event::CallEnded {
            conversation_id: v.conversation_id,
            call_id: v.call_id,
            outgoing: v.outgoing,
            video: v.video,
            outcome,
            duration_secs,
            group: v.group,
        })
    }

    /// One call signal from the log (inside the entry's transaction).
    pub(super) fn apply_call(
        &self,
        conv: &Conv,
        sender: &[u8; 32],
        sent_at: u64,
        call: Id,
        signal: CallSignal,
    ) -> Result<()> {
        let call_id = CallId::from_id(call);
        let mine = *sender == self.fingerprint;
        let existing = match self.call(&call_id) {
            Ok(v) => Some(v),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // A call is between this conversation's two people, never moved to another one.
        if let Some(v) = &existing
            && v.conversation_id.id() != &conv.group_id
        {
            return Ok(());
        }
        if let Some(v) = &existing
            && v.group
        {
            return self.apply_group_call(conv, sender, v, signal);
        }
        match signal {
            CallSignal::GroupInvite { video, room, key } => {
                if mine || existing.is_some() || conv.kind != ConvKind::Group {
                    return Ok(());
                }
                if room.len() != 32 || key.len() != SFRAME_KEY_LEN {
                    return Ok(());
                }
                let people = self.mls.load(conv.group_id.as_bytes())?.people().len();
                if people > MAX_GROUP_CALL {
                    return Ok(());
                }
                let now = now_millis();
                let late = now.saturating_sub(sent_at) > RING_SECS * 1000;
                let busy = !late && self.busy_with(Some(&call))?;
                let started = sent_at.min(now) as i64;
                self.db.conn().execute(
                    "INSERT INTO calls (call_id, group_id, outgoing, peer, video, state, offer, room, started_at, group_call, sframe_key)
                     VALUES (?1, ?2, 0, ?3, ?4, 'ringing', '', ?5, ?6, 1, ?7)",
                    params![call.as_bytes(), conv.group_id.as_bytes(), &sender[..], video, &room.0[..], started, &key.0[..]],
                )?;
                self.db.conn().execute(
                    "INSERT INTO call_legs (call_id, peer, joined_at) VALUES (?1, ?2, ?3)",
                    params![call.as_bytes(), &sender[..], started],
                )?;
                let v = self.call(&call_id)?;
                if late || busy {
                    return self.end_call(&v, CallOutcome::Missed, None);
                }
                self.emit(Event::CallIncoming {
                    conversation_id: ConversationId::from_id(conv.group_id),
                    conversation: conv.name.clone(),
                    call_id,
                    video,
                    from: self.label(&conv.group_id, sender)?,
                    group: true,
                })
            }
            CallSignal::Join { .. } | CallSignal::Answer { .. } => Ok(()),
            CallSignal::Renegotiate { sdp } => {
                let Some(v) = existing else { return Ok(()) };
                if mine || v.state != CallState::Connected {
                    return Ok(());
                }
                // Both offered at once: the caller's offer wins.
                let ours_pending = v
                    .renegotiation
                    .as_ref()
                    .is_some_and(|r| r.mine && r.answer.is_none());
                if ours_pending && v.outgoing {
                    return Ok(());
                }
                let Ok(sdp) = clean_sdp(&sdp, false) else {
                    return Ok(());
                };
                self.db.conn().execute(
                    "UPDATE calls SET reoffer = ?2, reoffer_mine = 0, reanswer = NULL WHERE call_id = ?1",
                    params![call.as_bytes(), sdp],
                )?;
                self.emit(Event::CallChanged {
                    conversation_id: v.conversation_id,
                    call_id,
                })
            }
            CallSignal::Reanswer { sdp } => {
                let Some(v) = existing else { return Ok(()) };
                let ours_pending = v
                    .renegotiation
                    .as_ref()
                    .is_some_and(|r| r.mine && r.answer.is_none());
                if mine || v.state != CallState::Connected || !ours_pending {
                    return Ok(());
                }
                let Ok(sdp) = clean_sdp(&sdp, false) else {
                    return Ok(());
                };
                self.db.conn().execute(
                    "UPDATE calls SET reanswer = ?2 WHERE call_id = ?1",
                    params![call.as_bytes(), sdp],
                )?;
                self.emit(Event::CallChanged {
                    conversation_id: v.conversation_id,
                    call_id,
                })
            }
            CallSignal::Invite { video, sdp, room } => {
                // Our own invite, read back (or our other device calling): nothing rings.
                if mine || existing.is_some() || conv.kind != ConvKind::Direct {
                    return Ok(());
                }
                let Ok(sdp) = clean_sdp(&sdp, false) else {
                    return Ok(());
                };
                if room.len() != 32 {
                    return Ok(());
                }
                let now = now_millis();
                let late = now.saturating_sub(sent_at) > RING_SECS * 1000;
                let busy = !late && self.busy_with(Some(&call))?;
                self.db.conn().execute(
                    "INSERT INTO calls (call_id, group_id, outgoing, peer, video, state, offer, room, started_at)
                     VALUES (?1, ?2, 0, ?3, ?4, 'ringing', ?5, ?6, ?7)",
                    params![call.as_bytes(), conv.group_id.as_bytes(), &sender[..], video, sdp, &room.0[..], sent_at.min(now) as i64],
                )?;
                let v = self.call(&call_id)?;
                if late {
                    return self.end_call(&v, CallOutcome::Missed, None);
                }
                if busy {
                    return self.end_call(&v, CallOutcome::Missed, Some("busy"));
                }
                self.emit(Event::CallIncoming {
                    conversation_id: ConversationId::from_id(conv.group_id),
                    conversation: conv.name.clone(),
                    call_id,
                    video,
                    from: self.label(&conv.group_id, sender)?,
                    group: false,
                })
            }
            CallSignal::Accept { sdp } => {
                let Some(v) = existing else { return Ok(()) };
                if v.state != CallState::Ringing {
                    return Ok(());
                }
                if mine {
                    // Another device of ours took it: this one stops ringing.
                    if !v.outgoing {
                        self.end_call(&v, CallOutcome::AnsweredElsewhere, None)?;
                    }
                    return Ok(());
                }
                if !v.outgoing {
                    return Ok(());
                }
                let Ok(sdp) = clean_sdp(&sdp, false) else {
                    return Ok(());
                };
                self.db.conn().execute(
                    "UPDATE calls SET state = 'connected', answer = ?2, answered_at = ?3 WHERE call_id = ?1",
                    params![call.as_bytes(), sdp, now_millis() as i64],
                )?;
                self.emit(Event::CallAnswered {
                    conversation_id: v.conversation_id,
                    call_id,
                })
            }
            CallSignal::Decline { busy } => {
                let Some(v) = existing else { return Ok(()) };
                if mine {
                    if !v.outgoing && v.state == CallState::Ringing {
                        self.end_call(&v, CallOutcome::Declined, None)?;
                    }
                    return Ok(());
                }
                if v.outgoing && v.state == CallState::Ringing {
                    let outcome = if busy {
                        CallOutcome::Busy
                    } else {
                        CallOutcome::Declined
                    };
                    self.end_call(&v, outcome, None)?;
                }
                Ok(())
            }
            CallSignal::End => {
                let Some(v) = existing else { return Ok(()) };
                if mine && !v.outgoing && v.state == CallState::Ringing {
                    return self.end_call(&v, CallOutcome::AnsweredElsewhere, None);
                }
                let outcome = match (v.state, v.outgoing) {
                    (CallState::Connected, _) => CallOutcome::Answered,
                    (CallState::Ringing, false) => CallOutcome::Missed,
                    (CallState::Ringing, true) => CallOutcome::NoAnswer,
                    _ => return Ok(()),
                };
                self.end_call(&v, outcome, None)
            }
            CallSignal::Unknown => Ok(()),
        }
    }

    /// A signal of a group call we know (inside the entry's transaction).
    fn apply_group_call(
        &self,
        conv: &Conv,
        sender: &[u8; 32],
        v: &CallView,
        signal: CallSignal,
    ) -> Result<()> {
        let mine = *sender == self.fingerprint;
        let id = v.call_id.as_bytes();
        let changed = || {
            self.emit(Event::CallChanged {
                conversation_id: v.conversation_id,
                call_id: v.call_id,
            })
        };
        match signal {
            CallSignal::Join { offers } => {
                if mine {
                    // Another device of ours joined: this one stops ringing.
                    if v.state == CallState::Ringing {
                        self.end_call(v, CallOutcome::AnsweredElsewhere, None)?;
                    }
                    return Ok(());
                }
                if v.state == CallState::Ended {
                    return Ok(());
                }
                let present = v.legs.iter().filter(|l| l.present).count();
                let known = v.legs.iter().any(|l| l.peer == hex::encode(sender));
                if !known && present + 2 > MAX_GROUP_CALL {
                    return Ok(());
                }
                // Their offer to us counts only if we are in the call (else we offer to them
                // when we join).
                let offer = offers
                    .into_iter()
                    .find(|o| o.to.0 == self.fingerprint)
                    .filter(|_| v.state == CallState::Connected)
                    .and_then(|o| clean_sdp(&o.sdp, false).ok());
                self.db.conn().execute(
                    "INSERT INTO call_legs (call_id, peer, joined_at, their_offer) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (call_id, peer) DO UPDATE SET joined_at = excluded.joined_at, left_at = NULL,
                       their_offer = excluded.their_offer, my_answer = NULL, my_offer = NULL, their_answer = NULL",
                    params![id, &sender[..], now_millis() as i64, offer],
                )?;
                changed()
            }
            CallSignal::Answer { to, sdp } => {
                if mine || to.0 != self.fingerprint || v.state != CallState::Connected {
                    return Ok(());
                }
                let Ok(sdp) = clean_sdp(&sdp, false) else {
                    return Ok(());
                };
                let n = self.db.conn().execute(
                    "UPDATE call_legs SET their_answer = ?3 WHERE call_id = ?1 AND peer = ?2 AND my_offer IS NOT NULL AND left_at IS NULL",
                    params![id, &sender[..], sdp],
                )?;
                if n > 0 { changed() } else { Ok(()) }
            }
            CallSignal::End => {
                if mine {
                    return Ok(());
                }
                self.db.conn().execute(
                    "UPDATE call_legs SET left_at = ?3 WHERE call_id = ?1 AND peer = ?2 AND left_at IS NULL",
                    params![id, &sender[..], now_millis() as i64],
                )?;
                let left: i64 = self.db.conn().query_row(
                    "SELECT COUNT(*) FROM call_legs WHERE call_id = ?1 AND left_at IS NULL",
                    params![id],
                    |r| r.get(0),
                )?;
                // Everyone else has gone: a call still ringing here was missed.
                if left == 0 && v.state == CallState::Ringing {
                    return self.end_call(v, CallOutcome::Missed, None);
                }
                let _ = conv;
                changed()
            }
            _ => Ok(()),
        }
    }

    /// Someone left the group or was removed: out of its group calls at once (the pages close
    /// their connections to them), so a removed member hears nothing more of a call that
    /// goes on — the call's SFrame key is fixed at its start, the connections are not.
    pub(super) fn drop_from_calls(&self, conv: &Conv, who: &[u8; 32]) -> Result<()> {
        let calls: Vec<Vec<u8>> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT l.call_id FROM call_legs l JOIN calls c ON c.call_id = l.call_id
                 WHERE c.group_id = ?1 AND c.state != 'ended' AND l.peer = ?2 AND l.left_at IS NULL",
            )?;
            stmt.query_map(params![conv.group_id.as_bytes(), &who[..]], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for id in calls {
            self.db.conn().execute(
                "UPDATE call_legs SET left_at = ?3 WHERE call_id = ?1 AND peer = ?2",
                params![id, &who[..], now_millis() as i64],
            )?;
            self.emit(Event::CallChanged {
                conversation_id: ConversationId::from_id(conv.group_id),
                call_id: CallId::from_slice(&id)?,
            })?;
        }
        Ok(())
    }

    /// The other person of a 1:1 chat could not read entry `position`: if it was ours, say so
    /// in the chat, and a call of ours still ringing there fails (its invite may have been
    /// what was changed) instead of ringing out unanswered.
    pub(super) fn apply_unreadable(
        &self,
        conv: &Conv,
        sender: &[u8; 32],
        position: u64,
    ) -> Result<()> {
        if *sender == self.fingerprint || conv.kind != ConvKind::Direct {
            return Ok(());
        }
        let ours: bool = self.db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM own_entries WHERE group_id = ?1 AND seq = ?2)",
            params![conv.group_id.as_bytes(), position as i64],
            |r| r.get(0),
        )?;
        if !ours {
            return Ok(());
        }
        self.emit(Event::notice(
            Some(conv),
            Notice::TheyCouldNotRead { position },
        ))?;
        let ringing: Vec<Vec<u8>> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT call_id FROM calls WHERE group_id = ?1 AND outgoing = 1 AND state = 'ringing'",
            )?;
            stmt.query_map(params![conv.group_id.as_bytes()], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for id in ringing {
            let v = self.call(&CallId::from_slice(&id)?)?;
            self.end_call(&v, CallOutcome::Failed, Some("end"))?;
        }
        Ok(())
    }

    /// [`Profile::finish_calls`] after a sync, where a failure must not fail the sync.
    pub(super) async fn finish_calls_quietly(&mut self) {
        if let Err(e) = self.finish_calls().await {
            tracing::debug!("calls: {e}");
        }
    }

    /// After a sync or a call action: send what we owe the other sides (declines, "busy",
    /// hang-ups), let calls that rang too long go (missed / no answer), and forget calls
    /// prepared but never started.
    pub(super) async fn finish_calls(&mut self) -> Result<()> {
        let cutoff = now_millis().saturating_sub(RING_SECS * 1000) as i64;
        self.db.conn().execute(
            "DELETE FROM calls WHERE state = 'preparing' AND started_at <= ?1",
            params![cutoff],
        )?;
        let stale: Vec<Vec<u8>> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare(
                "SELECT call_id FROM calls WHERE state = 'ringing' AND started_at <= ?1",
            )?;
            stmt.query_map(params![cutoff], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for id in stale {
            let v = self.call(&CallId::from_slice(&id)?)?;
            if v.outgoing {
                self.end_call(&v, CallOutcome::NoAnswer, Some("end"))?;
            } else {
                self.end_call(&v, CallOutcome::Missed, None)?;
            }
        }
        let owed: Vec<(Vec<u8>, Vec<u8>, String)> = {
            let conn = self.db.conn();
            let mut stmt =
                conn.prepare("SELECT call_id, group_id, owed FROM calls WHERE owed IS NOT NULL")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for (id, gid, what) in owed {
            let call = Id::from_slice(&id).map_err(|_| Error::Storage("corrupt call id".into()))?;
            // Marked done first: a lost send is not retried forever (the other side's ring
            // times out by itself).
            self.db.conn().execute(
                "UPDATE calls SET owed = NULL WHERE call_id = ?1",
                params![id],
            )?;
            let signal = match what.as_str() {
                "decline" => CallSignal::Decline { busy: false },
                "busy" => CallSignal::Decline { busy: true },
                _ => CallSignal::End,
            };
            let Some(conv) = self.conv_by_id(
                &Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt group id".into()))?,
            )?
            else {
                continue;
            };
            if !conv.active {
                continue;
            }
            queued(
                self.send_body(
                    &conv,
                    Body::Call {
                        call_id: call,
                        signal,
                    },
                )
                .await,
            )?;
        }
        self.tell_unreadable().await
    }

    /// Tell the other person of each 1:1 chat which of their entries we could not read
    /// (owed by the sync that rejected them; each said once).
    async fn tell_unreadable(&mut self) -> Result<()> {
        let owed: Vec<(Vec<u8>, i64)> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare("SELECT group_id, position FROM unreadable_owed")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for (gid, position) in owed {
            self.db.conn().execute(
                "DELETE FROM unreadable_owed WHERE group_id = ?1 AND position = ?2",
                params![gid, position],
            )?;
            let group =
                Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt group id".into()))?;
            let Some(conv) = self.conv_by_id(&group)? else {
                continue;
            };
            if !conv.active {
                continue;
            }
            let body = Body::Unreadable {
                position: position.max(0) as u64,
            };
            queued(self.send_body(&conv, body).await)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\na=fingerprint:sha-256 AB:CD\r\na=candidate:1 1 udp 2122260223 192.168.1.5 5000 typ host\r\na=candidate:2 1 udp 41885439 127.0.0.1 50000 typ relay raddr 0.0.0.0 rport 0\r\na=end-of-candidates\r\n";

    #[test]
    fn only_relayed_candidates_leave_and_the_fingerprint_is_read() {
        let clean = clean_sdp(OFFER, true).expect("an SDP");
        assert!(!clean.contains("typ host"), "{clean}");
        assert!(clean.contains("typ relay"));
        assert!(clean.contains("a=end-of-candidates"));
        assert_eq!(clean_sdp(OFFER, false).expect("an SDP"), OFFER);
        assert_eq!(sdp_fingerprint(OFFER).as_deref(), Some("sha-256 AB:CD"));
        for bad in ["", "hello", "v=0\0", &"v=0".repeat(MAX_SDP)] {
            assert!(clean_sdp(bad, true).is_err(), "{bad:.20}");
        }
    }

    #[test]
    fn outcomes_round_trip() {
        for o in CallOutcome::ALL {
            assert_eq!(CallOutcome::parse(o.as_str()), Some(o));
            let json = serde_json::to_value(o).expect("json");
            assert_eq!(json.as_str(), Some(o.as_str()));
        }
    }
}
