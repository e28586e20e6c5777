//! `bench calls`: synthetic 1:1 audio calls through the relay's TURN server (issue 31).
//!
//! A relay process; for each call two UDP clients with credentials for the call's room (from
//! `POST /v1/groups/{id}/calls`, as the app gets them), each allocating, permitting and binding
//! a channel to the other, then sending ChannelData at an Opus packet rate (default 50
//! packets/s of 100 bytes each way) for a bounded time. Measured: the relay's CPU (from
//! `/proc/PID/stat`) per call and the calls one core would carry at that rate, packets lost,
//! and the relay's memory per allocation (resident set before and after allocating).
//! Loopback only; the client processes' own CPU is not the relay's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use samizdat_proto::{Bytes, Id, TurnCredentials};
use serde_json::json;
use tokio::net::UdpSocket;
use turn_server::codec::crypto::generate_password;
use turn_server::codec::message::MessageEncoder;
use turn_server::codec::message::attributes::{
    ChannelNumber, ErrorCode, Nonce, PasswordAlgorithm, Realm, RequestedTransport, UserName,
    XorPeerAddress, XorRelayedAddress,
};
use turn_server::codec::message::methods::{
    ALLOCATE_REQUEST, CHANNEL_BIND_REQUEST, CREATE_PERMISSION_REQUEST, Method,
};
use turn_server::codec::{DecodeResult, Decoder};

use crate::Report;
use crate::util::{RelayChild, cpu_time, rss_kib};

#[derive(Debug, clap::Args)]
pub struct CallsArgs {
    /// Concurrent calls (two UDP clients each).
    #[arg(long, default_value_t = 500)]
    pub calls: usize,
    /// Seconds of media.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Packets per second each way (Opus at 20 ms frames: 50).
    #[arg(long, default_value_t = 50)]
    pub pps: u64,
    /// Bytes of media per packet (Opus at 24–32 kbit/s: 60–80; with RTP and SRTP: ~100).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: String,
    nonce: String,
}

impl Client {
    async fn new(server: SocketAddr, creds: &TurnCredentials) -> Result<Client> {
        Ok(Client {
            socket: UdpSocket::bind("127.0.0.1:0").await?,
            server,
            username: creds.username.clone(),
            password: creds.credential.clone(),
            realm: String::new(),
            nonce: String::new(),
        })
    }

    /// One request, signed once the realm and nonce are known: its error code (as 401) and
    /// relayed port.
    async fn request(
        &mut self,
        method: Method,
        peer: Option<SocketAddr>,
        channel: Option<u16>,
    ) -> Result<(Option<u16>, Option<u16>)> {
        let mut tid = [0u8; 12];
        aws_lc_rs::rand::fill(&mut tid).map_err(|_| anyhow!("no randomness"))?;
        let mut buf = BytesMut::new();
        {
            let mut m = MessageEncoder::new(method, &tid, &mut buf);
            if method == ALLOCATE_REQUEST {
                m.append::<RequestedTransport>(RequestedTransport::Udp);
            }
            if let Some(c) = channel {
                m.append::<ChannelNumber>(c);
            }
            if let Some(p) = peer {
                m.append::<XorPeerAddress>(p);
            }
            if self.nonce.is_empty() {
                m.flush(None).map_err(|e| anyhow!("{e:?}"))?;
            } else {
                m.append::<UserName>(&self.username);
                m.append::<Realm>(&self.realm);
                m.append::<Nonce>(&self.nonce);
                let key = generate_password(
                    &self.username,
                    &self.password,
                    &self.realm,
                    PasswordAlgorithm::Md5,
                );
                m.flush(Some(&key)).map_err(|e| anyhow!("{e:?}"))?;
            }
        }
        self.socket.send_to(&buf, self.server).await?;
        let mut answer = vec![0u8; 2048];
        let (n, _) =
            tokio::time::timeout(Duration::from_secs(5), self.socket.recv_from(&mut answer))
                .await
                .context("no TURN answer")??;
        let mut decoder = Decoder::default();
        let Ok(DecodeResult::Message(msg)) = decoder.decode(&answer[..n]) else {
            bail!("not a STUN answer");
        };
        if let Some(realm) = msg.get::<Realm>() {
            self.realm = realm.to_string();
        }
        if let Some(nonce) = msg.get::<Nonce>() {
            self.nonce = nonce.to_string();
        }
        let code = msg
            .get::<ErrorCode>()
            .map(|e| e.code / 256 * 100 + e.code % 256);
        Ok((code, msg.get::<XorRelayedAddress>().map(|a| a.port())))
    }

    async fn allocate(&mut self) -> Result<u16> {
        let _ = self.request(ALLOCATE_REQUEST, None, None).await?;
        match self.request(ALLOCATE_REQUEST, None, None).await? {
            (None, Some(port)) => Ok(port),
            (code, _) => bail!("allocation refused: {code:?}"),
        }
    }

    async fn bind(&mut self, peer_port: u16, channel: u16) -> Result<()> {
        let peer = SocketAddr::from(([127, 0, 0, 1], peer_port));
        for (method, ch) in [
            (CREATE_PERMISSION_REQUEST, None),
            (CHANNEL_BIND_REQUEST, Some(channel)),
        ] {
            if let (Some(code), _) = self.request(method, Some(peer), ch).await? {
                bail!("{method:?} refused: {code}");
            }
        }
        Ok(())
    }
}

async fn credentials(
    http: &reqwest::Client,
    base: &str,
    group: &Id,
    token: &[u8],
    room: &[u8; 32],
) -> Result<TurnCredentials> {
    let r = http
        .post(format!("{base}/v1/groups/{group}/calls?epoch=0"))
        .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(token))
        .json(&json!({ "room": Bytes(room.to_vec()) }))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("credentials: {}", r.text().await?);
    }
    Ok(r.json().await?)
}

pub async fn run(args: CallsArgs) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let relay = RelayChild::start_with(
        &dir.path().join("relay"),
        None,
        "max_connections = 30000\nmax_connections_per_ip = 30000\n[turn]\nmax_sessions = 100000\n",
    )?;
    let http = reqwest::Client::new();
    // One group log for the credentials (membership is what the relay checks).
    let group = Id::from_bytes(rand16()?);
    let token = rand16()?.to_vec();
    let created = http
        .post(format!("{}/v1/groups", relay.url))
        .json(
            &json!({"request_id": Id::from_bytes(rand16()?), "group_id": group, "epoch": 0,
                       "token_hash": Bytes(samizdat_relay_token_hash(&token))}),
        )
        .send()
        .await?;
    if !created.status().is_success() {
        bail!("creating the group: {}", created.text().await?);
    }
    let rss_before = rss_kib(relay.pid())?;
    eprintln!("bench calls: {} calls, allocating…", args.calls);
    let mut pairs = Vec::with_capacity(args.calls);
    let mut server = None;
    for i in 0..args.calls {
        let mut room = [0u8; 32];
        room[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let ca = credentials(&http, &relay.url, &group, &token, &room).await?;
        let cb = credentials(&http, &relay.url, &group, &token, &room).await?;
        let addr = *server.get_or_insert(SocketAddr::from((
            [127, 0, 0, 1],
            ca.udp_port
                .ok_or_else(|| anyhow!("the relay offers no TURN over UDP"))?,
        )));
        let (mut a, mut b) = (Client::new(addr, &ca).await?, Client::new(addr, &cb).await?);
        let (pa, pb) = (a.allocate().await?, b.allocate().await?);
        a.bind(pb, 0x4000).await?;
        b.bind(pa, 0x4000).await?;
        pairs.push((a, b));
    }
    let rss_after = rss_kib(relay.pid())?;
    let per_allocation =
        (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / (2 * args.calls) as f64;

    eprintln!("bench calls: media for {} s…", args.seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let cpu0 = cpu_time(relay.pid())?;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (a, b) in pairs {
        for c in [Arc::new(a), Arc::new(b)] {
            // ChannelData on channel 0x4000: the header and `size` bytes (a multiple of 4).
            let mut frame = vec![0x40, 0x00];
            frame.extend_from_slice(&(args.size as u16).to_be_bytes());
            frame.resize(4 + args.size, 0x55);
            let (s, sent) = (c.clone(), sent.clone());
            let every = Duration::from_micros(1_000_000 / args.pps.max(1));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < until {
                    tick.tick().await;
                    if s.socket.send_to(&frame, s.server).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let stop = until + Duration::from_secs(1);
                while let Ok(Ok((n, _))) = tokio::time::timeout_at(
                    tokio::time::Instant::from_std(stop),
                    c.socket.recv_from(&mut buf),
                )
                .await
                {
                    if n >= 4 && buf[0] >> 6 == 1 {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    // The relay's CPU over the media only (the receivers wait a second more for stragglers).
    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time(relay.pid())? - cpu0).as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let (sent, received) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let loss = 1.0 - received as f64 / sent.max(1) as f64;
    let core_share = cpu / wall;
    let per_call_pct = 100.0 * core_share / args.calls as f64;
    let calls_per_core = args.calls as f64 / core_share.max(1e-9);
    let text = format!(
        "synthetic 1:1 audio calls through the relay's TURN server (UDP, ChannelData)\n\
         calls {} · {} packets/s of {} B each way · {:.1} s\n\
         relay CPU {:.1} % of a core → {:.4} % per call → {:.0} calls per core at this rate\n\
         packets sent {sent}, received {received}, lost {:.2} %\n\
         relay memory per allocation {:.1} KiB (RSS {} → {} KiB for {} allocations)\n\
         command: samizdat-bench calls --calls {} --seconds {} --pps {} --size {}",
        args.calls,
        args.pps,
        args.size,
        wall,
        100.0 * core_share,
        per_call_pct,
        calls_per_core,
        100.0 * loss,
        per_allocation / 1024.0,
        rss_before,
        rss_after,
        2 * args.calls,
        args.calls,
        args.seconds,
        args.pps,
        args.size
    );
    Ok(Report {
        text,
        json: json!({
            "calls": args.calls, "pps": args.pps, "size": args.size, "seconds": wall,
            "relay_cpu_share": core_share, "cpu_pct_per_call": per_call_pct,
            "calls_per_core": calls_per_core, "sent": sent, "received": received, "loss": loss,
            "bytes_per_allocation": per_allocation,
        }),
    })
}

fn rand16() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| anyhow!("no randomness"))?;
    Ok(b)
}

/// SHA-256 of an epoch token (what the relay keeps).
fn samizdat_relay_token_hash(token: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token)
        .as_ref()
        .to_vec()
}
