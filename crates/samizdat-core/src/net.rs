//! How the client reaches relays: directly, or through a proxy — SOCKS5 with names resolved
//! by the proxy (`socks5h://`, no DNS leak), SOCKS5 with local resolution (`socks5://`),
//! either with a user and password, or an HTTP proxy (`http://`, CONNECT for TLS) — and,
//! with isolation, under a separate proxy identity per conversation and for the mailbox, so
//! that Tor (IsolateSOCKSAuth, on by default) puts them on separate circuits.
//!
//! Every connection the client makes goes through [`Net`]: the HTTP clients
//! (`relay_client::RelayClient`, attachments) and the realtime WebSocket. SOCKS is
//! spoken by well-kept crates (reqwest's `socks` feature, `tokio-socks`); only the HTTP
//! CONNECT request for the WebSocket is written here (one request line and a status line).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Error, Result};

/// The proxy of `--tor`: Tor's SOCKS port.
pub const TOR_PROXY: &str = "socks5h://127.0.0.1:9050";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// SOCKS5, the proxy resolves names.
    Socks5h,
    /// SOCKS5, names resolved here.
    Socks5,
    /// HTTP proxy (CONNECT).
    Http,
}

/// A proxy address as the user gave it.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub kind: ProxyKind,
    pub host: String,
    pub port: u16,
    /// User and password from the URL.
    pub auth: Option<(String, String)>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "{}", self.display())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Proxy {
    /// `socks5h://[user:pass@]host:port`, `socks5://…` or `http://…`.
    pub fn parse(url: &str) -> Result<Proxy> {
        let bad = |why: &str| Error::Usage(format!("invalid proxy {:?}: {why}", redact(url)));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "socks5h" => ProxyKind::Socks5h,
            "socks5" => ProxyKind::Socks5,
            "http" => ProxyKind::Http,
            _ => return Err(bad("use socks5h://, socks5:// or http://")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#']) {
            return Err(bad("only scheme, user, password, host and port"));
        }
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => {
                let (u, p) = a.split_once(':').unwrap_or((a, ""));
                (Some((percent_decode(u), percent_decode(p))), h)
            }
            None => (None, rest),
        };
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| bad("a port is needed"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Proxy {
            kind,
            host,
            port,
            auth,
        })
    }

    fn scheme(&self) -> &'static str {
        match self.kind {
            ProxyKind::Socks5h => "socks5h",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Http => "http",
        }
    }

    fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The proxy without its password, for messages and settings screens.
    pub fn display(&self) -> String {
        match &self.auth {
            Some((u, _)) => format!("{}://{}:***@{}", self.scheme(), u, self.host_port()),
            None => format!("{}://{}", self.scheme(), self.host_port()),
        }
    }

    /// The URL to store (with its credentials).
    pub fn url(&self) -> String {
        match &self.auth {
            Some((u, p)) => format!(
                "{}://{}:{}@{}",
                self.scheme(),
                encode(u),
                encode(p),
                self.host_port()
            ),
            None => format!("{}://{}", self.scheme(), self.host_port()),
        }
    }

    /// The credentials a connection under `identity` uses: the URL's own, else (isolating)
    /// the identity as a SOCKS user name.
    fn credentials(&self, identity: Option<&str>) -> Option<(String, String)> {
        self.auth.clone().or_else(|| {
            identity
                .filter(|_| self.kind != ProxyKind::Http)
                .map(|i| (i.to_string(), "samizdat".to_string()))
        })
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A proxy URL with its password hidden.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, rest)), Some((_, host))) => {
            let user = rest.split(['@', ':']).next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// How this profile's connections leave the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Net {
    pub proxy: Option<Proxy>,
    /// A separate proxy identity (and separate connections) for the mailbox and for each
    /// conversation; on by default with `--tor`.
    pub isolate: bool,
}

impl Net {
    /// Tor on its usual port, with isolation.
    pub fn tor() -> Net {
        Net {
            proxy: Proxy::parse(TOR_PROXY).ok(),
            isolate: true,
        }
    }

    /// Refuse settings that would not do what they say: isolation tells connections apart by
    /// the proxy user name, so a proxy URL with its own user name and password cannot isolate
    /// (before, `--isolate` was then silently off while every screen said "isolated";
    /// security review 3, L2).
    pub fn check(&self) -> Result<()> {
        if self.isolate && self.proxy.as_ref().is_some_and(|p| p.auth.is_some()) {
            return Err(crate::Error::Usage(
                "isolation cannot work with a proxy that needs a user name and password (it tells connections apart by the user name); remove the credentials (Tor needs none) or turn isolation off".into(),
            ));
        }
        Ok(())
    }

    /// Whether connections really are isolated (a proxy, isolation on, no fixed credentials).
    pub fn isolating(&self) -> bool {
        self.isolate && self.proxy.as_ref().is_some_and(|p| p.auth.is_none())
    }

    /// `SAMIZDAT_PROXY` (a proxy URL, or `tor`), if set.
    pub fn from_env() -> Result<Option<Net>> {
        match std::env::var("SAMIZDAT_PROXY") {
            Ok(v) if v.trim().eq_ignore_ascii_case("tor") => Ok(Some(Net::tor())),
            Ok(v) if !v.trim().is_empty() => Ok(Some(Net {
                proxy: Some(Proxy::parse(v.trim())?),
                isolate: false,
            })),
            _ => Ok(None),
        }
    }

    /// A reqwest client builder going through the proxy under `identity`.
    pub(crate) fn http_builder(&self, identity: Option<&str>) -> Result<reqwest::ClientBuilder> {
        let b = reqwest::Client::builder();
        let Some(p) = &self.proxy else {
            return Ok(b);
        };
        let url = format!("{}://{}", p.scheme(), p.host_port());
        let mut proxy = reqwest::Proxy::all(&url)
            .map_err(|e| Error::Usage(format!("invalid proxy {}: {e}", p.display())))?;
        if let Some((u, pw)) = p.credentials(identity) {
            proxy = proxy.basic_auth(&u, &pw);
        }
        // Even loopback relays go through the proxy: nothing leaves directly.
        Ok(b.proxy(proxy.no_proxy(None)))
    }

    /// A TCP connection to `host:port`, through the proxy when there is one.
    pub(crate) async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        identity: Option<&str>,
    ) -> Result<TcpStream> {
        let unreachable = |what: String| Error::RelayUnreachable(what);
        let Some(p) = &self.proxy else {
            return TcpStream::connect((host, port))
                .await
                .map_err(|e| unreachable(format!("{host}:{port}: {e}")));
        };
        let via = format!("the proxy {}", p.display());
        match p.kind {
            ProxyKind::Socks5h | ProxyKind::Socks5 => {
                let proxy_addr = (p.host.as_str(), p.port);
                // socks5h: the name goes to the proxy; socks5: resolved here first.
                let target: tokio_socks::TargetAddr<'_> = if p.kind == ProxyKind::Socks5h {
                    tokio_socks::TargetAddr::Domain(host.into(), port)
                } else {
                    let addr = tokio::net::lookup_host((host, port))
                        .await
                        .map_err(|e| unreachable(format!("{host}: {e}")))?
                        .next()
                        .ok_or_else(|| unreachable(format!("{host}: no address")))?;
                    tokio_socks::TargetAddr::Ip(addr)
                };
                let stream = match p.credentials(identity) {
                    Some((u, pw)) => {
                        tokio_socks::tcp::Socks5Stream::connect_with_password(
                            proxy_addr, target, &u, &pw,
                        )
                        .await
                    }
                    None => tokio_socks::tcp::Socks5Stream::connect(proxy_addr, target).await,
                }
                .map_err(|e| unreachable(format!("{host}:{port} through {via}: {e}")))?;
                Ok(stream.into_inner())
            }
            ProxyKind::Http => {
                let mut s = TcpStream::connect((p.host.as_str(), p.port))
                    .await
                    .map_err(|e| unreachable(format!("{via}: {e}")))?;
                let target = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
                if let Some((u, pw)) = &p.auth {
                    use base64::Engine;
                    let token =
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"));
                    req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
                }
                req.push_str("\r\n");
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| unreachable(format!("{via}: {e}")))?;
                // The answer's head, byte by byte (it is short), so nothing of the tunnel is
                // read past it.
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    if head.len() > 8192 {
                        return Err(unreachable(format!("{via}: an oversized answer")));
                    }
                    let b = s
                        .read_u8()
                        .await
                        .map_err(|e| unreachable(format!("{via}: {e}")))?;
                    head.push(b);
                }
                let status = String::from_utf8_lossy(&head);
                let ok = status
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    == Some("200");
                if !ok {
                    let line = status.lines().next().unwrap_or("").to_string();
                    return Err(unreachable(format!("{via} refused the tunnel: {line}")));
                }
                Ok(s)
            }
        }
    }
}

/// Bytes a WebSocket reads at a time.
const WS_READ_BUFFER: usize = 8 * 1024;

/// The realtime WebSocket type (plain or TLS over a direct or proxied TCP connection).
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Net {
    /// Open a WebSocket to `url` (ws:// or wss://) through the proxy, under `identity`.
    pub(crate) async fn connect_ws(
        &self,
        url: &str,
        identity: Option<&str>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Ws> {
        let (host, port) = host_port(url)?;
        let connect = async {
            let tcp = self.connect_tcp(&host, port, identity).await?;
            let tls = match tls {
                Some(t) => Some(t),
                None if url.starts_with("wss://") => Some(crate::pin::system_roots()?),
                None => None,
            };
            let connector = tls.map(tokio_tungstenite::Connector::Rustls);
            // A small read buffer (it grows for a large frame): the default 128 KiB is
            // touched on every read, 12.5 MiB for 100 isolated conversations' sockets.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(WS_READ_BUFFER)
                .write_buffer_size(0);
            tokio_tungstenite::client_async_tls_with_config(url, tcp, Some(config), connector)
                .await
                .map(|(ws, _)| ws)
                .map_err(|e| Error::RelayUnreachable(format!("{url}: {e}")))
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), connect)
            .await
            .map_err(|_| Error::RelayUnreachable(format!("{url}: timed out")))?
    }
}

/// Host and port of an http(s)/ws(s) URL.
pub(crate) fn host_port(url: &str) -> Result<(String, u16)> {
    let bad = || Error::Usage(format!("cannot read the address {url:?}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let default = match scheme {
        "https" | "wss" => 443,
        _ => 80,
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => default,
        };
        return Ok((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| bad())?)),
        None => Ok((authority.to_string(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_and_never_show_passwords() {
        let p = Proxy::parse("socks5h://alice:s%3Acret@10.0.0.1:1080").unwrap();
        assert_eq!(p.kind, ProxyKind::Socks5h);
        assert_eq!(p.auth, Some(("alice".into(), "s:cret".into())));
        assert_eq!(p.display(), "socks5h://alice:***@10.0.0.1:1080");
        assert!(!format!("{p:?}").contains("cret"));
        assert_eq!(Proxy::parse(&p.url()).unwrap(), p);
        assert_eq!(Proxy::parse("http://[::1]:3128").unwrap().host, "::1");
        for bad in [
            "ftp://x:1",
            "socks5h://host",
            "socks5://:1080",
            "http://h:1/path",
            "nonsense",
        ] {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(redact("socks5://u:p@h:1"), "socks5://u:***@h:1");
    }

    #[test]
    fn isolation_uses_the_identity_unless_the_url_has_credentials() {
        let p = Proxy::parse("socks5h://127.0.0.1:9050").unwrap();
        assert_eq!(p.credentials(Some("c1")).unwrap().0, "c1");
        assert_eq!(p.credentials(None), None);
        let q = Proxy::parse("socks5://u:p@127.0.0.1:1080").unwrap();
        assert_eq!(q.credentials(Some("c1")).unwrap().0, "u");
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            host_port("http://127.0.0.1:7700").unwrap(),
            ("127.0.0.1".into(), 7700)
        );
        assert_eq!(
            host_port("wss://relay.example/v1/ws").unwrap(),
            ("relay.example".into(), 443)
        );
        assert_eq!(
            host_port("ws://[::1]:80/v1/ws").unwrap(),
            ("::1".into(), 80)
        );
    }
}
