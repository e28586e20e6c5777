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
    /// Where sessions are kept between runs (see [`Guard::kept_in`]), and when they were last
    /// written.
    store: Option<(std::path::PathBuf, Mutex<std::time::Instant>)>,
}

/// SHA-256 of a session id, hex: what the guard keeps (in memory and on disk) instead of the
/// id the browser holds.
fn hashed(id: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes()).as_ref())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How often a session's last use is written down at most (its idle limit is far longer).
const PERSIST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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
            store: None,
        }
    }

    /// Keep sessions in `file` (in the private profile directory, 0600) so that a restarted
    /// app keeps its browser sessions: an open tab comes back and asks only to unlock. The
    /// file holds each session's SHA-256, never the id the cookie carries, so reading it does
    /// not give a session; sessions idle past the limit are not taken back.
    pub fn kept_in(mut self, file: std::path::PathBuf) -> Guard {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let now = unix_now();
            let mut sessions = HashMap::new();
            for line in text.lines().take(MAX_SESSIONS) {
                let mut f = line.split(' ');
                let (Some(hash), Some(csrf), Some(lang), Some(seen)) =
                    (f.next(), f.next(), f.next(), f.next())
                else {
                    continue;
                };
                let Ok(seen) = seen.parse::<u64>() else {
                    continue;
                };
                let ago = std::time::Duration::from_secs(now.saturating_sub(seen));
                let Some(last_seen) = std::time::Instant::now().checked_sub(ago) else {
                    continue;
                };
                if ago >= self.idle || hash.len() != 64 || csrf.len() != 64 {
                    continue;
                }
                let n = sessions.len() as u64;
                sessions.insert(
                    hash.to_string(),
                    Session {
                        csrf: csrf.to_string(),
                        lang: Lang::from_code(lang),
                        created: n,
                        last_seen,
                    },
                );
            }
            *self.counter.get_mut().unwrap_or_else(|p| p.into_inner()) = sessions.len() as u64;
            *self.sessions.get_mut().unwrap_or_else(|p| p.into_inner()) = sessions;
        }
        self.store = Some((file, Mutex::new(std::time::Instant::now())));
        self.persist(&self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        self
    }

    /// Write the sessions down (atomically, 0600), if they are kept.
    fn persist(&self, sessions: &HashMap<String, Session>) {
        let Some((file, at)) = &self.store else {
            return;
        };
        if let Ok(mut at) = at.lock() {
            *at = std::time::Instant::now();
        }
        let now = unix_now();
        let text: String = sessions
            .iter()
            .map(|(hash, s)| {
                let seen = now.saturating_sub(s.last_seen.elapsed().as_secs());
                let lang = s.lang.map(|l| l.code()).unwrap_or("-");
                format!("{hash} {} {lang} {seen}\n", s.csrf)
            })
            .collect();
        let tmp = file.with_extension("tmp");
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            std::fs::rename(&tmp, file)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
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
            hashed(&id),
            Session {
                csrf: token(),
                lang: None,
                created: *n,
                last_seen: std::time::Instant::now(),
            },
        );
        self.persist(&sessions);
        Some(id)
    }

    pub fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let key = hashed(&id);
        let mut sessions = self.sessions.lock().ok()?;
        let idle = self.idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        let found = sessions
            .iter_mut()
            .find(|(k, _)| same(k, &key))
            .map(|(_, s)| {
                s.last_seen = std::time::Instant::now();
                (id.clone(), s.clone())
            });
        let due = self
            .store
            .as_ref()
            .and_then(|(_, at)| at.lock().ok().map(|at| at.elapsed() >= PERSIST_EVERY))
            .unwrap_or(false);
        if due {
            self.persist(&sessions);
        }
        found
    }

    /// End a session (quit): its cookie opens nothing any more.
    pub fn end(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(&hashed(id));
            self.persist(&s);
        }
    }

    pub fn set_lang(&self, id: &str, lang: Option<Lang>) {
        if let Ok(mut sessions) = self.sessions.lock() {
            if let Some(s) = sessions.get_mut(&hashed(id)) {
                s.lang = lang;
            }
            self.persist(&sessions);
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
    // A file shown inline brings its own, stricter policy (a sandbox).
    if !h.contains_key("content-security-policy") {
        set(
            h,
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        );
    }
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

    /// Issue 30, item 7: a restarted app keeps its sessions (an open tab asks only to
    /// unlock), from a file that holds no session id; an ended session stays ended.
    #[test]
    fn sessions_survive_a_restart_without_their_ids_on_disk() {
        let cookie_of = |id: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, format!("{COOKIE}={id}").parse().unwrap());
            h
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app-sessions");
        let g = Guard::new(HOST, 1234).kept_in(file.clone());
        let kept = g.redeem(&g.launch_token()).unwrap();
        g.set_lang(&kept, Lang::from_code("ru"));
        let csrf = g.session(&cookie_of(&kept)).unwrap().1.csrf;
        let ended = {
            let g = Guard::new(HOST, 1234).kept_in(file.clone());
            g.redeem(&g.launch_token()).unwrap()
        };
        let on_disk = std::fs::read_to_string(&file).unwrap();
        assert!(
            !on_disk.contains(&kept) && !on_disk.contains(&ended),
            "{on_disk}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = Guard::new(HOST, 1234).kept_in(file.clone());
        let (_, s) = again
            .session(&cookie_of(&kept))
            .expect("kept across a restart");
        assert_eq!(s.csrf, csrf);
        assert_eq!(s.lang, Lang::from_code("ru"));
        again.end(&kept);
        let after = Guard::new(HOST, 1234).kept_in(file.clone());
        assert!(
            after.session(&cookie_of(&kept)).is_none(),
            "ended stays ended"
        );
        assert!(after.session(&cookie_of("0".repeat(64).as_str())).is_none());
        // An idle limit applies to what was kept too.
        let strict = Guard::new(HOST, 1234)
            .with_idle(std::time::Duration::ZERO)
            .kept_in(file);
        assert!(strict.session(&cookie_of(&ended)).is_none());
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
