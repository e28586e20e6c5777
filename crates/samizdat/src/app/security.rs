//! The defences of a web server on loopback (after Syncthing and Jupyter): a `Host` allow-list
//! against DNS rebinding, a one-time launch token exchanged for an `HttpOnly; SameSite=Strict`
//! session cookie, a CSRF token on every state change, a same-origin check, and strict
//! response headers. Checked before a handler reads anything the request carries.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use crate::i18n::Lang;

/// Browser sessions at once; the oldest is dropped beyond this.
const MAX_SESSIONS: usize = 16;
pub const COOKIE: &str = "samizdat_session";

#[derive(Clone)]
pub struct Session {
    pub csrf: String,
    /// The language chosen in the settings (None: from `Accept-Language`).
    pub lang: Option<Lang>,
    created: u64,
    /// When it was last used: a session unused for the guard's idle limit ends.
    last_seen: std::time::Instant,
}

pub struct Guard {
    /// The app's own host name (`<random>.localhost`, see `app::random_host`).
    host: String,
    port: u16,
    launch: Mutex<Option<String>>,
    sessions: Mutex<HashMap<String, Session>>,
    counter: Mutex<u64>,
    /// A session unused this long ends (security review 3, L9).
    idle: std::time::Duration,
}

/// 32 random bytes, hex: unguessable tokens from the OS generator (via aws-lc).
fn token() -> String {
    let mut b = [0u8; 32];
    // Fail closed: without randomness there is no token anyone could match.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return String::new();
    }
    hex::encode(b)
}

/// Equal tokens, compared in constant time (aws-lc's comparison; an empty token matches
/// nothing).
fn same(a: &str, b: &str) -> bool {
    !a.is_empty()
        && aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

impl Guard {
    pub fn new(host: &str, port: u16) -> Guard {
        Guard {
            host: host.to_string(),
            port,
            launch: Mutex::new(Some(token())),
            sessions: Mutex::new(HashMap::new()),
            counter: Mutex::new(0),
            idle: std::time::Duration::from_secs(12 * 3600),
        }
    }

    /// Sessions end after `idle` without a request.
    pub fn with_idle(mut self, idle: std::time::Duration) -> Guard {
        self.idle = idle;
        self
    }

    /// The launch token (valid until it is exchanged once).
    pub fn launch_token(&self) -> String {
        self.launch
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .unwrap_or_default()
    }

    /// Exchange the launch token for a new session id; it works once.
    pub fn redeem(&self, offered: &str) -> Option<String> {
        let mut launch = self.launch.lock().ok()?;
        match launch.as_deref() {
            Some(t) if same(t, offered) => {
                *launch = None;
            }
            _ => return None,
        }
        drop(launch);
        let id = token();
        let mut n = self.counter.lock().ok()?;
        *n += 1;
        let mut sessions = self.sessions.lock().ok()?;
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: token(),
                lang: None,
                created: *n,
                last_seen: std::time::Instant::now(),
            },
        );
        Some(id)
    }

    pub fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().ok()?;
        let idle = self.idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        sessions
            .iter_mut()
            .find(|(k, _)| same(k, &id))
            .map(|(k, s)| {
                s.last_seen = std::time::Instant::now();
                (k.clone(), s.clone())
            })
    }

    /// End a session (quit): its cookie opens nothing any more.
    pub fn end(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(id);
        }
    }

    pub fn set_lang(&self, id: &str, lang: Option<Lang>) {
        if let Ok(mut s) = self.sessions.lock()
            && let Some(s) = s.get_mut(id)
        {
            s.lang = lang;
        }
    }

    /// The `Host` a page of ours has: only the app's own `<random>.localhost:PORT`. Not
    /// `127.0.0.1` or `localhost`: a cookie set there would reach every other local server
    /// (cookies are per host, not per port), and the random name also stops DNS rebinding.
    fn host_allowed(&self, host: &str) -> bool {
        host == format!("{}:{}", self.host, self.port)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|h| self.host_allowed(h))
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// The CSRF token a state-changing request must carry matches its session's.
pub fn csrf_ok(session: &Session, offered: &str) -> bool {
    same(&session.csrf, offered)
}

/// Every request: `Host` first, then (outside the login and static routes) the session,
/// then for anything but GET the origin; headers on every response.
pub async fn guard(State(app): State<std::sync::Arc<App>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !app.guard.host_allowed(host) {
        // DNS rebinding: a page of another site resolved its name to 127.0.0.1.
        return harden(
            (StatusCode::FORBIDDEN, "forbidden: unexpected Host header").into_response(),
        );
    }
    let path = req.uri().path();
    let open = path == "/login" || path.starts_with("/static/");
    if !open && app.guard.session(req.headers()).is_none() {
        return harden(super::web::login_page(
            &app,
            req.headers(),
            StatusCode::UNAUTHORIZED,
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok());
        let site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|h| h.to_str().ok());
        // Our pages send `Referrer-Policy: no-referrer`, under which browsers send
        // `Origin: null` with form posts: then `Sec-Fetch-Site` decides (and the CSRF token
        // still has to match).
        let foreign_site = site.is_some_and(|s| s != "same-origin" && s != "none");
        let cross = match origin {
            Some("null") => foreign_site,
            Some(o) => !app.guard.origin_allowed(o) || foreign_site,
            None => foreign_site,
        };
        if cross {
            return harden(
                (StatusCode::FORBIDDEN, "forbidden: cross-site request").into_response(),
            );
        }
    }
    harden(next.run(req).await)
}

/// The headers every response carries.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "0123456789abcdef0123456789abcdef.localhost";

    #[test]
    fn the_launch_token_works_once() {
        let g = Guard::new(HOST, 1234);
        let t = g.launch_token();
        assert_eq!(t.len(), 64);
        assert!(g.redeem("wrong").is_none());
        assert!(g.redeem(&t).is_some());
        assert!(g.redeem(&t).is_none(), "a replayed token must be refused");
    }

    /// L9: a session ends after its idle time (here none at all), and with Quit.
    #[test]
    fn finding_l9_sessions_end_when_idle_or_ended() {
        let cookie_of = |id: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, format!("{COOKIE}={id}").parse().unwrap());
            h
        };
        let g = Guard::new(HOST, 1234);
        let id = g.redeem(&g.launch_token()).unwrap();
        assert!(g.session(&cookie_of(&id)).is_some());
        g.end(&id);
        assert!(
            g.session(&cookie_of(&id)).is_none(),
            "an ended session opens nothing"
        );
        let g = Guard::new(HOST, 1234).with_idle(std::time::Duration::ZERO);
        let id = g.redeem(&g.launch_token()).unwrap();
        assert!(
            g.session(&cookie_of(&id)).is_none(),
            "an idle session opens nothing"
        );
    }

    #[test]
    fn only_our_own_host_and_port() {
        let g = Guard::new(HOST, 1234);
        assert!(g.host_allowed(&format!("{HOST}:1234")));
        // Shared loopback names would share the session cookie with every local server.
        assert!(!g.host_allowed("127.0.0.1:1234"));
        assert!(!g.host_allowed("localhost:1234"));
        assert!(!g.host_allowed("[::1]:1234"));
        assert!(!g.host_allowed("evil.example:1234"));
        assert!(!g.host_allowed(&format!("{HOST}:1235")));
        assert!(!g.host_allowed(HOST));
        assert!(g.origin_allowed(&format!("http://{HOST}:1234")));
        assert!(!g.origin_allowed("http://localhost:1234"));
        assert!(!g.origin_allowed("http://evil.example"));
        assert!(!g.origin_allowed("null"));
    }
}
