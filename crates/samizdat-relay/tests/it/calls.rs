//! The relay's TURN server for calls (issue 31), spoken to as a browser would: STUN/TURN
//! messages over UDP, made with turn-server's own codec, with credentials from
//! `POST /v1/groups/{id}/calls`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use samizdat_proto::{Bytes, TurnCredentials};
use tokio::net::UdpSocket;
use turn_server::codec::crypto::generate_password;
use turn_server::codec::message::MessageEncoder;
use turn_server::codec::message::attributes::{
    Data, ErrorCode, Nonce, PasswordAlgorithm, Realm, RequestedTransport, UserName, XorPeerAddress,
    XorRelayedAddress,
};
use turn_server::codec::message::methods::{
    ALLOCATE_REQUEST, CREATE_PERMISSION_REQUEST, DATA_INDICATION, Method, SEND_INDICATION,
};
use turn_server::codec::{DecodeResult, Decoder};

use crate::harness::TestRelay;

async fn credentials(relay: &TestRelay, room: u8) -> TurnCredentials {
    let g = relay.create_group(0).await;
    let r = relay
        .http
        .post(relay.url(&format!("/v1/groups/{}/calls?epoch=0", g.id)))
        .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(g.token(0)))
        .json(&serde_json::json!({ "room": Bytes(vec![room; 32]) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A TURN client on its own UDP socket.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: String,
    nonce: String,
}

fn transaction() -> [u8; 12] {
    let mut t = [0u8; 12];
    aws_lc_rs::rand::fill(&mut t).unwrap();
    t
}

impl Client {
    async fn new(server: SocketAddr, creds: &TurnCredentials) -> Client {
        Client {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            username: creds.username.clone(),
            password: creds.credential.clone(),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    async fn receive(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(Duration::from_secs(2), self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Send a request (signed once the realm and nonce are known); the answer's method, error
    /// code and relayed port.
    async fn request(
        &mut self,
        method: Method,
        peer: Option<SocketAddr>,
    ) -> (Method, Option<u16>, Option<u16>) {
        let tid = transaction();
        let mut buf = BytesMut::new();
        {
            let mut m = MessageEncoder::new(method, &tid, &mut buf);
            if method == ALLOCATE_REQUEST {
                m.append::<RequestedTransport>(RequestedTransport::Udp);
            }
            if let Some(p) = peer {
                m.append::<XorPeerAddress>(p);
            }
            if self.nonce.is_empty() {
                m.flush(None).unwrap();
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
                m.flush(Some(&key)).unwrap();
            }
        }
        self.socket.send_to(&buf, self.server).await.unwrap();
        let answer = self.receive().await.expect("an answer");
        let mut decoder = Decoder::default();
        let Ok(DecodeResult::Message(msg)) = decoder.decode(&answer) else {
            panic!("not a STUN message")
        };
        if let Some(realm) = msg.get::<Realm>() {
            self.realm = realm.to_string();
        }
        if let Some(nonce) = msg.get::<Nonce>() {
            self.nonce = nonce.to_string();
        }
        // The attribute holds the class and number (0x0401): as the status code people know.
        let code = msg
            .get::<ErrorCode>()
            .map(|e| e.code / 256 * 100 + e.code % 256);
        let port = msg.get::<XorRelayedAddress>().map(|a| a.port());
        (msg.method(), code, port)
    }

    /// Allocate (answering the first 401 with the credential): the relayed port, or the error.
    async fn allocate(&mut self) -> Result<u16, u16> {
        let (_, code, _) = self.request(ALLOCATE_REQUEST, None).await;
        assert_eq!(code, Some(401), "the first request is asked to sign");
        match self.request(ALLOCATE_REQUEST, None).await {
            (_, None, Some(port)) => Ok(port),
            (_, code, _) => Err(code.unwrap_or(0)),
        }
    }

    async fn permit(&mut self, peer_port: u16) {
        let peer = SocketAddr::from(([127, 0, 0, 1], peer_port));
        let (_, code, _) = self.request(CREATE_PERMISSION_REQUEST, Some(peer)).await;
        assert_eq!(code, None, "permission for {peer}");
    }

    async fn send(&self, peer_port: u16, data: &[u8]) {
        let tid = transaction();
        let mut buf = BytesMut::new();
        {
            let mut m = MessageEncoder::new(SEND_INDICATION, &tid, &mut buf);
            m.append::<XorPeerAddress>(SocketAddr::from(([127, 0, 0, 1], peer_port)));
            m.append::<Data>(data);
            m.flush(None).unwrap();
        }
        self.socket.send_to(&buf, self.server).await.unwrap();
    }

    /// The data of the next Data indication, if one comes.
    async fn data(&self) -> Option<Vec<u8>> {
        let answer = self.receive().await?;
        let mut decoder = Decoder::default();
        let Ok(DecodeResult::Message(msg)) = decoder.decode(&answer) else {
            return None;
        };
        assert_eq!(msg.method(), DATA_INDICATION);
        msg.get::<Data>().map(|d| d.to_vec())
    }
}

fn udp_server(relay: &TestRelay, creds: &TurnCredentials) -> SocketAddr {
    assert!(relay.relay.turn().is_some(), "TURN is on by default");
    SocketAddr::from(([127, 0, 0, 1], creds.udp_port.expect("TURN over UDP")))
}

crate::backend_tests! {
    /// Credentials: only for a member of the log (its epoch token, checked first); a fresh,
    /// identity-free username each time; a forged one is refused.
    async fn turn_credentials_need_the_epoch_token_and_a_forged_one_is_refused(b: Backend) {
        let relay = TestRelay::start(&b).await;
        let g = relay.create_group(0).await;
        let r = relay
            .http
            .post(relay.url(&format!("/v1/groups/{}/calls?epoch=0", g.id)))
            .header(samizdat_proto::HEADER_TOKEN, Bytes::encode(b"not the token"))
            .json(&serde_json::json!({ "room": Bytes(vec![1; 32]) }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let a = credentials(&relay, 1).await;
        let c = credentials(&relay, 1).await;
        assert_ne!(a.username, c.username, "the two sides' usernames differ");
        assert!(a.ttl_secs >= 30 && a.tcp_port.is_some());
        let server = udp_server(&relay, &a);
        let mut ok = Client::new(server, &a).await;
        assert!(ok.allocate().await.is_ok());
        // A username with a moved expiry or another key: 401.
        let (expiry, handle) = a.username.split_once(':').unwrap();
        let forged = TurnCredentials {
            username: format!("{}:{handle}", expiry.parse::<u64>().unwrap() + 3600),
            ..a.clone()
        };
        let mut bad = Client::new(server, &forged).await;
        assert_eq!(bad.allocate().await, Err(401));
        relay.stop().await;
    }

    /// Two allocations of one call's room reach each other; an allocation of another room
    /// gets nothing, even with a permission for it.
    async fn turn_relays_only_within_one_room(b: Backend) {
        let relay = TestRelay::start(&b).await;
        let (ca, cb, cx) = (
            credentials(&relay, 7).await,
            credentials(&relay, 7).await,
            credentials(&relay, 8).await,
        );
        let server = udp_server(&relay, &ca);
        let (mut a, mut bob, mut x) = (
            Client::new(server, &ca).await,
            Client::new(server, &cb).await,
            Client::new(server, &cx).await,
        );
        let (pa, pb, px) = (
            a.allocate().await.unwrap(),
            bob.allocate().await.unwrap(),
            x.allocate().await.unwrap(),
        );
        a.permit(pb).await;
        bob.permit(pa).await;
        a.send(pb, b"hello from a").await;
        assert_eq!(bob.data().await.as_deref(), Some(&b"hello from a"[..]));
        bob.send(pa, b"and back").await;
        assert_eq!(a.data().await.as_deref(), Some(&b"and back"[..]));

        // x is in another room: permissions both ways, and still nothing crosses.
        x.permit(pa).await;
        a.permit(px).await;
        let turn = relay.relay.turn().unwrap().clone();
        let before = turn.stats.cross_room_dropped.load(std::sync::atomic::Ordering::Relaxed);
        x.send(pa, b"from another call").await;
        a.send(px, b"to another call").await;
        assert_eq!(a.data().await, None);
        assert_eq!(x.data().await, None);
        let after = turn.stats.cross_room_dropped.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(after - before, 2, "both packets dropped between rooms");
        relay.stop().await;
    }
}
