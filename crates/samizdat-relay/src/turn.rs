//! The relay's TURN server for calls (issue 31; design in docs/CALLS.md).
//!
//! The TURN protocol itself is `turn-server`'s service core (allocations, permissions,
//! channels, message integrity); this module gives it what makes it Samizdat's:
//!
//! - **Credentials with no identity.** A client that proves membership of a group log (its
//!   epoch token) asks for credentials for one call's *room* — 32 bytes both sides derive from
//!   the group's MLS exporter. The username is `<expiry>:<handle>`, the handle the room's hash
//!   sealed with AES-256-GCM under this relay's key (a fresh nonce each time): opaque to anyone
//!   on the network, different for the two sides, and nothing to look up — any relay process
//!   with the same `turn.secret` can mint them. The password is HMAC-SHA-256 of the username.
//! - **Expiry checked** when a credential first opens a session (turn-server's own REST helper
//!   does not check it).
//! - **Only between the allocations of one room.** turn-server relays only between its own
//!   allocations (virtual ports: never to an arbitrary address); on top of that, a packet from
//!   one room's allocation to another room's is dropped here.
//! - **Bounded**: allocations in all and per room, UDP sources remembered, TCP connections.
//!
//! Transports: UDP and TCP on `turn.listen`; TCP also on the relay's own port, where the
//! first byte of a connection tells TURN from HTTP and TLS (`crate::serve`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc, watch};
use turn_server::codec::Decoder;
use turn_server::codec::crypto::{Password, generate_password};
use turn_server::codec::message::attributes::PasswordAlgorithm;
use turn_server::service::session::Identifier;
use turn_server::service::session::ports::PortRange;
use turn_server::service::{InterfaceAddr, Service, ServiceHandler, ServiceOptions, Transport};

use crate::{Error, Result, now_secs};

/// TURN settings (`[turn]` in the relay's TOML file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Whether the relay relays calls at all.
    pub enabled: bool,
    /// UDP and TCP address of the TURN listener (`0.0.0.0:3478` in a deployment). Empty: the
    /// relay's own IP and a free port. `off`: no separate listener (TURN over TCP on the
    /// relay's own port only).
    pub listen: String,
    /// The IP written into relayed addresses (the relay's public address). Default: the
    /// listener's IP, or 127.0.0.1 when it listens on every address.
    pub external_ip: Option<String>,
    /// 64 hex digits shared by relay processes whose credentials one TURN process honours.
    /// Unset: a random key made at start (credentials die with the process, as allocations
    /// do).
    pub secret: Option<String>,
    /// How long a credential can open a session, in seconds.
    pub credential_ttl_secs: u64,
    /// Allocations (sessions) held at once, relay-wide.
    pub max_sessions: usize,
    /// Sessions of one call's room (a 4-person mesh with three transports each: 36).
    pub max_per_room: usize,
    /// TURN connections over TCP held at once.
    pub max_tcp_connections: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: true,
            listen: String::new(),
            external_ip: None,
            secret: None,
            credential_ttl_secs: 600,
            max_sessions: 8192,
            max_per_room: 48,
            max_tcp_connections: 2048,
        }
    }
}

/// The realm of every credential (RFC 8489 long-term credentials).
const REALM: &str = "samizdat";
/// A UDP source forgotten after this long without a packet (its allocation keeps its own
/// lifetime in turn-server).
const UDP_IDLE: Duration = Duration::from_secs(120);
/// A TCP connection closed after this long without a byte from the client.
const TCP_IDLE: Duration = Duration::from_secs(60);
/// Packets queued towards one TCP connection; more are dropped, as UDP would.
const TCP_QUEUE: usize = 256;
/// The largest STUN message or ChannelData frame accepted (with its 4-byte header).
const MAX_FRAME: usize = 65_536 + 4;

/// The keys credentials are made and checked with.
struct Keys {
    seal: LessSafeKey,
    mac: hmac::Key,
}

struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl Keys {
    fn new(secret: &[u8]) -> Result<Keys> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"samizdat turn v1").extract(secret);
        let derive = |label: &'static [u8]| -> Result<[u8; 32]> {
            let info = [label];
            let okm = prk
                .expand(&info, OkmLen(32))
                .map_err(|_| Error::Config("TURN key derivation failed".into()))?;
            let mut out = [0u8; 32];
            okm.fill(&mut out)
                .map_err(|_| Error::Config("TURN key derivation failed".into()))?;
            Ok(out)
        };
        let seal = UnboundKey::new(&AES_256_GCM, &derive(b"seal")?)
            .map_err(|_| Error::Config("TURN key".into()))?;
        Ok(Keys {
            seal: LessSafeKey::new(seal),
            mac: hmac::Key::new(hmac::HMAC_SHA256, &derive(b"password")?),
        })
    }

    /// `<expiry>:<base64url(nonce ‖ sealed room)>`, the expiry authenticated as associated data.
    fn username(&self, room: &[u8; 32], expiry: u64) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let prefix = expiry.to_string();
        let mut sealed = room.to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(prefix.as_bytes()),
                &mut sealed,
            )
            .ok()?;
        let mut handle = nonce.to_vec();
        handle.extend_from_slice(&sealed);
        Some(format!("{prefix}:{}", URL_SAFE_NO_PAD.encode(handle)))
    }

    /// The room a username was made for, if this relay made it and it has not expired.
    fn open(&self, username: &str, now: u64) -> Option<[u8; 32]> {
        let (prefix, handle) = username.split_once(':')?;
        let expiry: u64 = prefix.parse().ok()?;
        if expiry < now || handle.len() > 128 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(handle).ok()?;
        if raw.len() != NONCE_LEN + 32 + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let room = self
            .seal
            .open_in_place(nonce, Aad::from(prefix.as_bytes()), &mut sealed)
            .ok()?;
        <[u8; 32]>::try_from(&room[..]).ok()
    }

    fn password(&self, username: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.mac, username.as_bytes()))
    }
}

/// Which room each session belongs to, bounded.
#[derive(Default)]
struct Rooms {
    of: HashMap<Identifier, [u8; 32]>,
    count: HashMap<[u8; 32], usize>,
}

struct HandlerState {
    keys: Keys,
    rooms: Mutex<Rooms>,
    max_sessions: usize,
    max_per_room: usize,
}

/// turn-server's view of our credentials and rooms.
#[derive(Clone)]
struct Handler(Arc<HandlerState>);

impl Handler {
    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.0.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a packet may go from one session to another: both in the same room.
    fn same_room(&self, a: &Identifier, b: &Identifier) -> bool {
        let rooms = self.rooms();
        match (rooms.of.get(a), rooms.of.get(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }
}

impl ServiceHandler for Handler {
    async fn get_password(
        &self,
        id: &Identifier,
        username: &str,
        algorithm: PasswordAlgorithm,
    ) -> Option<Password> {
        let Some(room) = self.0.keys.open(username, now_secs()) else {
            tracing::debug!(transport = ?id.transport, "TURN credential refused (unknown or expired)");
            return None;
        };
        {
            let mut rooms = self.rooms();
            match rooms.of.get(id) {
                Some(r) if *r != room => return None,
                Some(_) => {}
                None => {
                    let in_room = rooms.count.get(&room).copied().unwrap_or(0);
                    if rooms.of.len() >= self.0.max_sessions || in_room >= self.0.max_per_room {
                        tracing::warn!("TURN session refused: the relay's or the room's limit");
                        return None;
                    }
                    rooms.of.insert(*id, room);
                    *rooms.count.entry(room).or_insert(0) += 1;
                }
            }
        }
        let password = self.0.keys.password(username);
        Some(generate_password(username, &password, REALM, algorithm))
    }

    fn on_allocated(&self, id: &Identifier, _username: &str, port: u16) {
        tracing::debug!(transport = ?id.transport, port, "TURN allocation");
    }

    fn on_destroy(&self, id: &Identifier, _username: &str) {
        tracing::debug!(transport = ?id.transport, "TURN session ended");
        let mut rooms = self.rooms();
        if let Some(room) = rooms.of.remove(id)
            && let Some(n) = rooms.count.get_mut(&room)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                rooms.count.remove(&room);
            }
        }
    }
}

/// Counters of what the TURN server did, for tests and benchmarks.
#[derive(Default)]
pub struct TurnStats {
    pub packets_in: std::sync::atomic::AtomicU64,
    pub relayed: std::sync::atomic::AtomicU64,
    /// Packets between allocations of different rooms, dropped.
    pub cross_room_dropped: std::sync::atomic::AtomicU64,
}

/// The running TURN server: mints credentials and carries packets.
pub struct Turn {
    handler: Handler,
    service: Service<Handler>,
    ttl: u64,
    udp: Option<Arc<UdpSocket>>,
    udp_port: Option<u16>,
    tcp_port: Option<u16>,
    /// Where packets for a TCP session go (its connection's writer).
    tcp_sessions: Mutex<HashMap<Identifier, mpsc::Sender<bytes::Bytes>>>,
    tcp_slots: Arc<Semaphore>,
    external: IpAddr,
    /// The relay's own port, when it carries TURN over TCP too.
    main_port: Mutex<Option<SocketAddr>>,
    pub stats: TurnStats,
}

impl Turn {
    /// Bind the listeners and start carrying packets until `stop` turns true.
    pub(crate) async fn start(
        config: &TurnConfig,
        relay_ip: IpAddr,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<Arc<Turn>>> {
        if !config.enabled {
            return Ok(None);
        }
        let secret = match &config.secret {
            Some(hex_secret) => {
                let s = hex::decode(hex_secret.trim())
                    .map_err(|_| Error::Config("turn.secret must be 64 hex digits".into()))?;
                if s.len() != 32 {
                    return Err(Error::Config("turn.secret must be 64 hex digits".into()));
                }
                s
            }
            None => {
                let mut s = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut s)
                    .map_err(|_| Error::Config("no randomness for the TURN key".into()))?;
                s
            }
        };
        let listen: Option<SocketAddr> = match config.listen.trim() {
            "off" => None,
            "" => Some(SocketAddr::new(relay_ip, 0)),
            other => Some(other.parse().map_err(|_| {
                Error::Config(format!("turn.listen {other:?} is not an address (ip:port)"))
            })?),
        };
        let external: IpAddr = match &config.external_ip {
            Some(ip) => ip
                .parse()
                .map_err(|_| Error::Config(format!("turn.external_ip {ip:?} is not an IP")))?,
            None => match listen.map(|l| l.ip()).unwrap_or(relay_ip) {
                ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
                ip => ip,
            },
        };
        let (udp, tcp) = match listen {
            Some(addr) => {
                let (udp, tcp) = bind_pair(addr).await?;
                (Some(Arc::new(udp)), Some(tcp))
            }
            None => (None, None),
        };
        let udp_local = match &udp {
            Some(u) => Some(u.local_addr().map_err(Error::Serve)?),
            None => None,
        };
        let tcp_local = match &tcp {
            Some(t) => Some(t.local_addr().map_err(Error::Serve)?),
            None => None,
        };
        // Every transport the allocations may be asked for: a browser on TCP still asks for
        // a UDP relayed address (the other side's leg), which is virtual here.
        let port = udp_local.map(|a| a.port()).unwrap_or(0);
        let interfaces = [Transport::Udp, Transport::Tcp]
            .into_iter()
            .map(|transport| InterfaceAddr {
                addr: udp_local.unwrap_or(SocketAddr::new(relay_ip, port)),
                external: SocketAddr::new(external, port),
                transport,
            })
            .collect();
        let handler = Handler(Arc::new(HandlerState {
            keys: Keys::new(&secret)?,
            rooms: Mutex::default(),
            max_sessions: config.max_sessions.max(1),
            max_per_room: config.max_per_room.max(2),
        }));
        let service = Service::new(ServiceOptions {
            port_range: PortRange::default(),
            realm: REALM.into(),
            interfaces,
            handler: handler.clone(),
        });
        let turn = Arc::new(Turn {
            handler,
            service,
            ttl: config.credential_ttl_secs.clamp(30, 86_400),
            udp: udp.clone(),
            udp_port: udp_local.map(|a| a.port()),
            tcp_port: tcp_local.map(|a| a.port()),
            tcp_sessions: Mutex::default(),
            tcp_slots: Arc::new(Semaphore::new(config.max_tcp_connections.max(1))),
            external,
            main_port: Mutex::new(None),
            stats: TurnStats::default(),
        });
        if let Some(socket) = udp {
            tokio::spawn(udp_loop(turn.clone(), socket, stop.clone()));
        }
        if let Some(listener) = tcp {
            tokio::spawn(tcp_accept(turn.clone(), listener, stop));
        }
        Ok(Some(turn))
    }

    /// The relay's own listener also takes TURN over TCP (set once it is bound).
    pub(crate) fn set_main_port(&self, addr: SocketAddr) {
        *self.main_port.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// Credentials for the room whose hash is `room_id`.
    pub(crate) fn mint(&self, room_id: &[u8; 32]) -> Option<samizdat_proto::TurnCredentials> {
        let username = self
            .handler
            .0
            .keys
            .username(room_id, now_secs() + self.ttl)?;
        let credential = self.handler.0.keys.password(&username);
        let main = *self.main_port.lock().unwrap_or_else(|p| p.into_inner());
        Some(samizdat_proto::TurnCredentials {
            username,
            credential,
            ttl_secs: self.ttl,
            udp_port: self.udp_port,
            tcp_port: self.tcp_port.or(main.map(|a| a.port())),
        })
    }

    /// The IP in relayed addresses.
    pub fn external_ip(&self) -> IpAddr {
        self.external
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.handler.rooms().of.len()
    }

    /// Route one STUN/ChannelData message of session `id`; the answer goes back by `reply`.
    async fn handle(
        &self,
        router: &mut turn_server::service::routing::Router<Handler>,
        id: &Identifier,
        packet: &[u8],
        out: &mut BytesMut,
    ) -> Option<Reply> {
        use std::sync::atomic::Ordering::Relaxed;
        if packet.len() < 4 {
            return None;
        }
        self.stats.packets_in.fetch_add(1, Relaxed);
        out.clear();
        let result = match router.route(packet, out).await.ok()? {
            Some(r) => r,
            None => {
                // ChannelData turn-server dropped: deliver it as a Data indication.
                let target = self.channel_fallback(id, packet, out)?;
                if !self.handler.same_room(id, &target) {
                    self.stats.cross_room_dropped.fetch_add(1, Relaxed);
                    return None;
                }
                self.stats.relayed.fetch_add(1, Relaxed);
                self.forward(&target, out).await;
                return None;
            }
        };
        match result.relay {
            None => Some(Reply::Back),
            Some(target) => {
                if !self.handler.same_room(id, &target) {
                    self.stats.cross_room_dropped.fetch_add(1, Relaxed);
                    tracing::debug!("TURN packet between rooms dropped");
                    return None;
                }
                if target.transport == Transport::Tcp && result.method.is_none() {
                    // ChannelData over TCP is padded to a multiple of four.
                    let pad = out.len() % 4;
                    if pad > 0 {
                        out.extend_from_slice(&[0u8; 4][..4 - pad]);
                    }
                }
                self.stats.relayed.fetch_add(1, Relaxed);
                self.forward(&target, out).await;
                None
            }
        }
    }

    /// ChannelData whose receiving allocation has bound no channel back to the sender:
    /// turn-server 4.1.5's `channel_data` drops it (it looks the channel up in the receiver's
    /// table), where RFC 8656 §12.4 delivers it as a Data indication. Browsers bind channels
    /// on their own schedule, and a TCP allocation on one side with a UDP one on the other
    /// then passes the ICE checks (sent before the channel) but never the DTLS handshake.
    /// Here the Data indication is built, if the receiver has a permission for the sender's
    /// relayed port; returns the receiving session, the indication in `out`. Upstream fix:
    /// fall back to a Data indication in `channel_data`.
    fn channel_fallback(
        &self,
        id: &Identifier,
        frame: &[u8],
        out: &mut BytesMut,
    ) -> Option<Identifier> {
        use turn_server::codec::message::MessageEncoder;
        use turn_server::codec::message::attributes::{Data, XorPeerAddress};
        use turn_server::codec::message::methods::DATA_INDICATION;
        use turn_server::service::session::Session;
        if frame.len() < 4 || frame[0] >> 6 != 1 {
            return None;
        }
        let number = u16::from_be_bytes([frame[0], frame[1]]);
        let len = u16::from_be_bytes([frame[2], frame[3]]) as usize;
        let data = frame.get(4..4 + len)?;
        let sessions = self.service.get_session_manager();
        let (peer, port) = match sessions.get_session(id).get_ref()? {
            Session::Authenticated {
                channel_relay_table,
                allocated_port,
                ..
            } => (*channel_relay_table.get(&number)?, (*allocated_port)?),
            Session::New { .. } => return None,
        };
        match sessions.get_session(&peer).get_ref()? {
            Session::Authenticated {
                port_relay_table, ..
            } if port_relay_table.contains_key(&port) => {}
            _ => return None,
        }
        let mut transaction = [0u8; 12];
        aws_lc_rs::rand::fill(&mut transaction).ok()?;
        out.clear();
        let mut message = MessageEncoder::new(DATA_INDICATION, &transaction, out);
        message.append::<XorPeerAddress>(SocketAddr::new(id.external.ip(), port));
        message.append::<Data>(data);
        message.flush(None).ok()?;
        Some(peer)
    }

    /// Hand a relayed packet to the session `target` on whichever transport it uses.
    async fn forward(&self, target: &Identifier, bytes: &[u8]) {
        match target.transport {
            Transport::Udp => {
                if let Some(udp) = &self.udp {
                    let _ = udp.send_to(bytes, target.source).await;
                }
            }
            Transport::Tcp => {
                let tx = self
                    .tcp_sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(target)
                    .cloned();
                if let Some(tx) = tx {
                    // A full queue drops the packet, as a congested UDP path would.
                    let _ = tx.try_send(bytes::Bytes::copy_from_slice(bytes));
                }
            }
        }
    }
}

enum Reply {
    Back,
}

/// UDP and TCP on the same port (TURN's convention). With port 0 the kernel picks the UDP
/// port; if that port is taken for TCP, another is tried.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let port = udp.local_addr().map_err(Error::Serve)?.port();
        let tcp_addr = SocketAddr::new(addr.ip(), port);
        match TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => {
                last = Some(Error::Listen {
                    addr: tcp_addr.to_string(),
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Config("no port for TURN".into())))
}

/// One UDP socket: each source address is a session with its own router.
async fn udp_loop(turn: Arc<Turn>, socket: Arc<UdpSocket>, mut stop: watch::Receiver<bool>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let external = SocketAddr::new(turn.external, local.port());
    let mut routers: HashMap<
        SocketAddr,
        (turn_server::service::routing::Router<Handler>, Instant),
    > = HashMap::new();
    let max_sources = turn.handler.0.max_sessions * 2;
    let mut buf = vec![0u8; 2048];
    let mut out = BytesMut::with_capacity(2048);
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = got else { continue };
                let id = Identifier {
                    source,
                    external,
                    interface: local,
                    transport: Transport::Udp,
                };
                if !routers.contains_key(&source) {
                    if routers.len() >= max_sources {
                        continue;
                    }
                    routers.insert(source, (turn.service.make_router(id), Instant::now()));
                }
                let Some((router, seen)) = routers.get_mut(&source) else { continue };
                *seen = Instant::now();
                if let Some(Reply::Back) = turn.handle(router, &id, &buf[..n], &mut out).await {
                    let _ = socket.send_to(&out, source).await;
                }
            }
            _ = sweep.tick() => {
                routers.retain(|_, (_, seen)| seen.elapsed() < UDP_IDLE);
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
}

async fn tcp_accept(turn: Arc<Turn>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            got = listener.accept() => {
                let Ok((stream, peer)) = got else { continue };
                let Ok(local) = stream.local_addr() else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_tcp(turn.clone(), stream, peer, local, Vec::new(), stop.clone()));
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
}

/// Whether a connection whose first byte is `b` speaks TURN: a fresh TURN connection starts
/// with a STUN request (its two top bits zero: 0x00 or 0x01), never ChannelData (0x40–0x7f);
/// TLS starts with 0x16 and HTTP with a letter.
pub(crate) fn first_byte_is_stun(b: u8) -> bool {
    b <= 0x01
}

/// A frame read from TCP without its padding. ChannelData over TCP is padded to a multiple
/// of four (RFC 8656 §12.5); turn-server 4.1.5's `ChannelData::decode` takes everything after
/// the header as the data, padding included, and would relay the zero bytes to the peer
/// (which breaks DTLS: a record with trailing bytes). Upstream fix: slice the data to the
/// length in the header (`&bytes[4..4 + size]`).
fn unpadded(frame: &[u8]) -> &[u8] {
    if frame.len() >= 4 && frame[0] >> 6 == 1 {
        let len = 4 + u16::from_be_bytes([frame[2], frame[3]]) as usize;
        &frame[..len.min(frame.len())]
    } else {
        frame
    }
}

/// One TURN-over-TCP connection (RFC 8656 §3.1 framing), `prefix` the bytes already read
/// by whoever recognised it.
pub(crate) async fn serve_tcp<S>(
    turn: Arc<Turn>,
    mut stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    prefix: Vec<u8>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(_slot) = turn.tcp_slots.clone().try_acquire_owned() else {
        return;
    };
    let id = Identifier {
        source: peer,
        external: SocketAddr::new(turn.external, local.port()),
        interface: local,
        transport: Transport::Tcp,
    };
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(TCP_QUEUE);
    turn.tcp_sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, tx);
    let mut router = turn.service.make_router(id);
    let mut inbuf = BytesMut::from(&prefix[..]);
    let mut out = BytesMut::with_capacity(2048);
    'conn: loop {
        // Every whole frame already read.
        while inbuf.len() >= 4 {
            let Ok(size) = Decoder::message_size(&inbuf[..4], true) else {
                break 'conn;
            };
            if !(4..=MAX_FRAME).contains(&size) {
                break 'conn;
            }
            if inbuf.len() < size {
                break;
            }
            let frame = inbuf.split_to(size);
            let frame = unpadded(&frame);
            if let Some(Reply::Back) = turn.handle(&mut router, &id, frame, &mut out).await
                && stream.write_all(&out).await.is_err()
            {
                break 'conn;
            }
        }
        tokio::select! {
            read = tokio::time::timeout(TCP_IDLE, stream.read_buf(&mut inbuf)) => {
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
                if inbuf.len() > 2 * MAX_FRAME {
                    break;
                }
            }
            Some(bytes) = rx.recv() => {
                if stream.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
    turn.tcp_sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    tracing::debug!("TURN connection over TCP closed");
    // The connection was the session: its allocation goes with it.
    turn.service.get_session_manager().refresh(&id, 0);
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_open_only_here_and_only_before_expiry() {
        let keys = Keys::new(&[7; 32]).expect("keys");
        let room = [3u8; 32];
        let now = 1_000_000;
        let a = keys.username(&room, now + 600).expect("username");
        let b = keys.username(&room, now + 600).expect("username");
        assert_ne!(a, b, "each request gets its own handle");
        assert_eq!(keys.open(&a, now), Some(room));
        assert_eq!(keys.open(&a, now + 601), None, "expired");
        // The expiry is authenticated: moving it forward breaks the seal.
        let (_, handle) = a.split_once(':').expect("two parts");
        assert_eq!(keys.open(&format!("{}:{handle}", now + 9999), now), None);
        // Another relay's key cannot open it.
        let other = Keys::new(&[8; 32]).expect("keys");
        assert_eq!(other.open(&a, now), None);
        for junk in ["", ":", "x:y", "1:", &format!("{}:AAAA", now + 5)] {
            assert_eq!(keys.open(junk, now), None, "{junk:?}");
        }
        assert_ne!(keys.password(&a), keys.password(&b));
    }

    #[test]
    fn channel_data_from_tcp_loses_its_padding_and_stun_is_kept_whole() {
        // Channel 0x4000, 5 bytes of data, 3 bytes of padding.
        let padded = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(unpadded(&padded), &padded[..9]);
        let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4];
        assert_eq!(unpadded(&stun), &stun[..]);
        // A length past the frame cannot make it read further.
        let lying = [0x40, 0x00, 0xff, 0xff, 1, 2, 3, 4];
        assert_eq!(unpadded(&lying), &lying[..]);
    }

    #[test]
    fn stun_is_told_from_tls_and_http() {
        assert!(first_byte_is_stun(0x00), "an Allocate request");
        assert!(first_byte_is_stun(0x01), "a Binding request");
        assert!(!first_byte_is_stun(0x16), "a TLS ClientHello");
        for http in [
            b"GET / HTTP/1.1".as_slice(),
            b"POST /v1/groups",
            b"PRI * HTTP/2.0",
        ] {
            assert!(!first_byte_is_stun(http[0]));
        }
        assert!(
            !first_byte_is_stun(0x40),
            "ChannelData never starts a connection"
        );
    }
}
