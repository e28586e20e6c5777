//! The app's routes. Each handler asks the service (JSON-RPC) and renders a page; nothing
//! here decides anything about messages, groups or keys.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use samizdat_core::{ContactId, ConversationId, MessageId};
use samizdat_core::{ContactView, ConversationView, InvitationView, MemberView};
use samizdat_rpc::{self as rpc, Api, NoParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{self, Ctx};
use super::security::{self, COOKIE, Session};
use super::{App, CallError, State as Phase};
use crate::i18n::Lang;

/// Form bodies are small: a message is at most 64 KiB of text.
const MAX_BODY: usize = 256 * 1024;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/", get(home))
        .route("/onboard", post(onboard))
        .route("/onboard/link", post(onboard_link))
        .route("/link", get(linking))
        .route("/unlock", post(unlock))
        .route("/c/{id}", get(chat))
        .route("/c/{id}/messages", get(messages))
        .route("/c/{id}/m/{mid}", get(one_message))
        .route("/c/{id}/send", post(send))
        .route("/c/{id}/draft", post(save_draft))
        .route("/c/{id}/info", get(info))
        .route("/c/{id}/add", post(group_add))
        .route("/c/{id}/remove", post(group_remove))
        .route("/c/{id}/rename", post(group_rename))
        .route("/c/{id}/leave", post(group_leave))
        .route("/c/{id}/timer", post(set_timer))
        .route("/c/{id}/arrange", post(arrange))
        .route("/c/{id}/block", post(block))
        .route("/saved", post(saved))
        .route("/c/{id}/delete", post(delete_chat))
        .route("/search", get(search))
        .route("/m/{mid}/retry", post(retry))
        .route("/m/{mid}/react", post(act))
        .route("/m/{mid}/edit", post(act))
        .route("/m/{mid}/delete", post(act))
        .route("/m/{mid}/forward", get(forward_page).post(forward))
        .route("/m/{mid}/file", get(super::files::save_file))
        .route("/m/{mid}/thumb", get(super::files::thumbnail))
        .route(
            "/c/{id}/file",
            post(super::files::send_file)
                .layer(DefaultBodyLimit::max(super::files::MAX_UPLOAD + 64 * 1024)),
        )
        .route("/fragments/chats", get(chat_list))
        .route("/new", get(new_contact))
        .route("/invite", post(invite))
        .route("/accept", post(accept))
        .route("/groups/new", get(new_group))
        .route("/groups", post(create_group))
        .route("/contacts/{id}/verify", get(verify).post(verify_post))
        .route("/invitations/{id}/{action}", post(invitation))
        .route("/c/{id}/call", post(super::calls::prepare))
        .route("/calls/{call}", get(super::calls::get))
        .route("/calls/{call}/{action}", post(super::calls::act))
        .route(
            "/channels",
            get(super::channels::list).post(super::channels::create),
        )
        .route("/channels/follow", post(super::channels::follow))
        .route("/ch/{id}", get(super::channels::show))
        .route("/ch/{id}/post", post(super::channels::post))
        .route("/ch/{id}/mirror", post(super::channels::mirror))
        .route("/ch/{id}/leave", post(super::channels::leave))
        .route("/ch/{id}/admins", post(super::channels::admins))
        .route(
            "/ch/{id}/admins/remove",
            post(super::channels::admins_remove),
        )
        .route("/ch/{id}/p/{seq}/{action}", post(super::channels::act))
        .route(
            "/ch/{id}/p/{seq}/file",
            get(super::files::channel_save_file),
        )
        .route(
            "/ch/{id}/p/{seq}/thumb",
            get(super::files::channel_thumbnail),
        )
        .route(
            "/ch/{id}/file",
            post(super::files::channel_post_file)
                .layer(DefaultBodyLimit::max(super::files::MAX_UPLOAD + 64 * 1024)),
        )
        .route("/settings", get(settings))
        .route("/settings/lang", post(settings_lang))
        .route("/settings/notifications", post(settings_notifications))
        .route("/settings/read-receipts", post(settings_read_receipts))
        .route("/settings/duress", post(settings_duress))
        .route("/settings/devices/preview", post(settings_device_preview))
        .route("/settings/devices/add", post(settings_device_add))
        .route("/settings/devices/revoke", post(settings_device_revoke))
        .route("/settings/wipe", post(settings_wipe))
        .route("/lock", post(lock))
        .route("/quit", post(quit))
        .route("/settings/proxy", post(settings_proxy))
        .route("/events", get(events))
        .route("/static/app.js", get(script))
        .route("/static/sframe.js", get(sframe_script))
        .route("/static/app.css", get(style))
        .route("/static/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .fallback(missing)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            security::guard,
        ))
        .with_state(app)
}

// ---- request context ------------------------------------------------------------------------

type AppState = State<Arc<App>>;

fn lang_of(headers: &HeaderMap, session: Option<&Session>) -> Lang {
    session.and_then(|s| s.lang).unwrap_or_else(|| {
        Lang::negotiate(
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|h| h.to_str().ok()),
        )
    })
}

/// The session (the guard let the request through, so there is one), its id and context.
pub(super) struct Req<'a> {
    id: String,
    pub(super) session: Session,
    pub(super) ctx: Ctx<'a>,
}

/// Why a request was turned away before its handler ran.
pub(super) struct Refused(StatusCode, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// A request of a signed-in page: its session (the guard let it through) and language, taken
/// before the handler runs. `open` gives the handler its [`Req`].
pub(super) struct Signed {
    id: String,
    session: Session,
    lang: Lang,
}

impl Signed {
    fn of(app: &App, headers: &HeaderMap) -> Result<Signed, Refused> {
        let Some((id, session)) = app.guard.session(headers) else {
            return Err(Refused(StatusCode::UNAUTHORIZED, "unauthorized"));
        };
        let lang = lang_of(headers, Some(&session));
        Ok(Signed { id, session, lang })
    }

    pub(super) fn open(self, app: &App) -> Req<'_> {
        let ctx = Ctx {
            app,
            lang: self.lang,
            csrf: Some(self.session.csrf.clone()),
            relay: app.relay_state(),
        };
        Req {
            id: self.id,
            session: self.session,
            ctx,
        }
    }
}

impl axum::extract::FromRequestParts<Arc<App>> for Signed {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Arc<App>,
    ) -> Result<Signed, Refused> {
        Signed::of(app, &parts.headers)
    }
}

/// A form posted by a signed-in page, its CSRF token checked (from the `x-csrf-token` header
/// the page's script sends, or the form's `csrf` field) before the handler runs.
pub(super) struct Posted {
    signed: Signed,
    fields: Fields,
}

impl Posted {
    pub(super) fn open(self, app: &App) -> (Req<'_>, Fields) {
        (self.signed.open(app), self.fields)
    }
}

impl axum::extract::FromRequest<Arc<App>> for Posted {
    type Rejection = Refused;

    async fn from_request(req: axum::extract::Request, app: &Arc<App>) -> Result<Posted, Refused> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, app)
            .await
            .map_err(|e| Refused(e.status(), "the form could not be read"))?;
        let (signed, fields) = checked(app, &headers, body)?;
        Ok(Posted { signed, fields })
    }
}

pub fn login_page(app: &App, headers: &HeaderMap, status: StatusCode) -> Response {
    let c = Ctx {
        app,
        lang: lang_of(headers, None),
        csrf: None,
        relay: None,
    };
    (status, Html(pages::login(&c).into_string())).into_response()
}

pub(super) fn page(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

fn page_with(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

pub(super) fn see(to: String) -> Response {
    Redirect::to(&to).into_response()
}

/// What `Clear-Site-Data` asks the browser to drop.
#[derive(Clone, Copy)]
enum Clear {
    /// Cache and storage (the session goes on).
    Storage,
    /// Cache, storage and cookies (the session ends).
    All,
}

/// `r` with `Clear-Site-Data`: whatever the browser keeps for this origin goes. The app puts
/// nothing there (drafts live in the profile), so this is for anything a browser kept anyway
/// and for what earlier versions wrote (security review 3, H3).
fn clearing(mut r: Response, what: Clear) -> Response {
    let value = match what {
        Clear::Storage => "\"cache\", \"storage\"",
        Clear::All => "\"cache\", \"cookies\", \"storage\"",
    };
    r.headers_mut()
        .insert("clear-site-data", HeaderValue::from_static(value));
    r
}

/// A form body as name/value pairs (a field may repeat: `member=a&member=b`). Its values
/// (passphrases among them) are overwritten when it is dropped (security review 3, L5).
pub(super) struct Fields(Vec<(String, String)>);

impl zeroize::Zeroize for Fields {
    fn zeroize(&mut self) {
        for (k, v) in &mut self.0 {
            k.zeroize();
            v.zeroize();
        }
    }
}

impl Drop for Fields {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self);
    }
}

/// Overwrite a request body we hold alone (a shared buffer is left to its owner: hyper
/// reuses its read buffer for the next request).
fn wipe_body(body: Bytes) {
    if let Ok(mut b) = body.try_into_mut() {
        zeroize::Zeroize::zeroize(&mut b[..]);
    }
}

impl Fields {
    fn parse(body: &[u8]) -> Fields {
        Fields(form_urlencoded::parse(body).into_owned().collect())
    }

    /// Parse a body and overwrite it.
    fn take(body: Bytes) -> Fields {
        let f = Fields::parse(&body);
        wipe_body(body);
        f
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").to_string()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A state-changing request: its session and its CSRF token checked before anything else
/// in the body is used.
fn checked(app: &App, headers: &HeaderMap, body: Bytes) -> Result<(Signed, Fields), Refused> {
    let signed = Signed::of(app, headers)?;
    let f = Fields::take(body);
    let offered = headers
        .get("x-csrf-token")
        .and_then(|h| h.to_str().ok())
        .or_else(|| f.get("csrf"))
        .unwrap_or("");
    if !security::csrf_ok(&signed.session, offered) {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "forbidden: missing or wrong CSRF token",
        ));
    }
    Ok((signed, f))
}

/// Requests made by the page's script want a fragment, not a redirect.
fn scripted(headers: &HeaderMap) -> bool {
    headers.contains_key("x-csrf-token")
}

pub(super) fn explain(c: &Ctx<'_>, e: &CallError) -> String {
    match e.kind.as_deref() {
        Some("relay_unreachable") => c.tr("err-relay-unreachable"),
        Some("not_found") => c.tr("err-not-found"),
        Some("wrong_passphrase") => c.tr("err-wrong-passphrase"),
        Some("invalid_invite") => c.tra(
            "err-invalid-invite",
            &[("message", e.message.clone().into())],
        ),
        Some("usage") => c.tra("err-usage", &[("message", e.message.clone().into())]),
        _ => c.tra("err-other", &[("message", e.message.clone().into())]),
    }
}

fn not_found(c: &Ctx<'_>) -> Response {
    page_with(
        StatusCode::NOT_FOUND,
        pages::error_page(c, &c.tr("err-not-found")),
    )
}

pub(super) fn fail(c: &Ctx<'_>, e: &CallError) -> Response {
    let status = match e.kind.as_deref() {
        Some("not_found") => StatusCode::NOT_FOUND,
        Some("relay_unreachable") => StatusCode::SERVICE_UNAVAILABLE,
        Some("locked") => return see("/".into()),
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    page_with(status, pages::error_page(c, &explain(c, e)))
}

async fn conversation(
    app: &App,
    id: ConversationId,
) -> Result<(ConversationView, Vec<ConversationView>), CallError> {
    app.load_notify().await;
    let convs = app.conversations(NoParams {}).await?;
    let conv = convs
        .iter()
        .find(|c| c.id == id)
        .cloned()
        .ok_or(CallError {
            kind: Some("not_found".into()),
            message: format!("no conversation {id}"),
        })?;
    Ok((conv, convs))
}

async fn ready(app: &App) -> bool {
    app.state().await == Phase::Ready
}

// ---- login, onboarding, unlock ---------------------------------------------------------------

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

async fn login(State(app): AppState, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let Some(session) = q.token.as_deref().and_then(|t| app.guard.redeem(t)) else {
        // A browser that is signed in already (a reloaded launch link, a restarted app that
        // kept its session) goes to its chats.
        if app.guard.session(&headers).is_some() {
            return see("/".into());
        }
        // No token, a wrong one, or one already used (replayed).
        return login_page(&app, &headers, StatusCode::FORBIDDEN);
    };
    // The page that forwarded the browser here holds a used token now: it goes.
    let _ = std::fs::remove_file(app.home().join(super::LAUNCH_FILE));
    let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
    // Whatever an earlier run (or an earlier version) left in this origin's storage goes.
    let mut r = clearing(see("/".into()), Clear::Storage);
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn home(State(app): AppState, signed: Signed) -> Response {
    let r = signed.open(&app);
    // This device is linking itself to a profile: the page follows that.
    if app.linking().is_some_and(|l| l.error.is_none()) {
        return see("/link".into());
    }
    match app.state().await {
        Phase::NoProfile => page(pages::onboard(
            &r.ctx,
            &pages::OnboardForm {
                name: String::new(),
                relay: app.default_relay.clone(),
            },
            None,
        )),
        Phase::Locked => page(pages::unlock(&r.ctx, None)),
        Phase::Ready => {
            let (convs, invs) = match lists(&app).await {
                Ok(l) => l,
                Err(e) => return fail(&r.ctx, &e),
            };
            page(pages::chats(&r.ctx, &convs, &invs))
        }
    }
}

async fn lists(app: &App) -> Result<(Vec<ConversationView>, Vec<InvitationView>), CallError> {
    app.load_notify().await;
    let convs = app.conversations(NoParams {}).await?;
    let invs = app.invitations(NoParams {}).await?;
    Ok((convs, invs))
}

/// The onboarding form's name and relay, to show again after an error.
fn onboard_form(f: &Fields) -> pages::OnboardForm {
    pages::OnboardForm {
        name: f.text("name"),
        relay: f.text("relay"),
    }
}

/// Why a new passphrase (and its repetition) in a form cannot be used, if it cannot.
fn new_passphrase_error(r: &Req<'_>, f: &Fields) -> Option<String> {
    let pass = zeroize::Zeroizing::new(f.text("passphrase"));
    let again = zeroize::Zeroizing::new(f.text("passphrase2"));
    if pass.chars().count() < 8 {
        Some(r.ctx.tr("err-passphrase-short"))
    } else if *pass != *again {
        Some(r.ctx.tr("err-passphrase-mismatch"))
    } else {
        None
    }
}

async fn onboard(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let form = onboard_form(&f);
    let pass = zeroize::Zeroizing::new(f.text("passphrase"));
    let error = match new_passphrase_error(&r, &f) {
        Some(e) => Some(e),
        None => match app.create(&pass, form.relay.trim(), &form.name).await {
            Ok(()) => None,
            Err(e) => Some(explain(&r.ctx, &e)),
        },
    };
    match error {
        None => see("/".into()),
        Some(e) => page_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::onboard(&r.ctx, &form, Some(&e)),
        ),
    }
}

/// Onboarding by linking to an existing profile: a profile of this device's own is made on the
/// relay given, and the page shows its one-time link until the other device adds it.
async fn onboard_link(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let form = onboard_form(&f);
    let pass = zeroize::Zeroizing::new(f.text("passphrase"));
    let error = match new_passphrase_error(&r, &f) {
        Some(e) => Some(e),
        None => match app
            .start_linking(pass, form.relay.trim(), form.name.trim())
            .await
        {
            Ok(()) => None,
            Err(e) => Some(explain(&r.ctx, &e)),
        },
    };
    match error {
        None => see("/link".into()),
        Some(e) => page_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::onboard(&r.ctx, &form, Some(&e)),
        ),
    }
}

/// The linking page: the link and code, a failure, or — once linked — the messenger.
async fn linking(State(app): AppState, signed: Signed) -> Response {
    let r = signed.open(&app);
    match app.linking() {
        None => see("/".into()),
        Some(l) => {
            let error = l.error.as_ref().map(|e| explain(&r.ctx, e));
            let link = l.link.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            page(pages::linking(&r.ctx, link, error.as_deref()))
        }
    }
}

async fn unlock(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let pass = zeroize::Zeroizing::new(f.text("passphrase"));
    match app.unlock(&pass).await {
        // Every unlock clears the origin's storage, so one after the duress passphrase (which
        // looks like any other) leaves nothing of the old profile in the browser either.
        Ok(()) => clearing(see("/".into()), Clear::Storage),
        Err(e) => page_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::unlock(&r.ctx, Some(&explain(&r.ctx, &e))),
        ),
    }
}

// ---- chats ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatQuery {
    /// Answer this message: the composer shows it and sends the reply.
    reply: Option<MessageId>,
    /// Open the chat at this message (a search hit) instead of at its end.
    around: Option<MessageId>,
}

async fn chat(
    State(app): AppState,
    signed: Signed,
    Path(id): Path<ConversationId>,
    Query(q): Query<ChatQuery>,
) -> Response {
    let r = signed.open(&app);
    if !ready(&app).await {
        return see("/".into());
    }
    let result = async {
        let reply = match q.reply {
            Some(mid) => app
                .history(rpc::HistoryParams {
                    conversation_id: Some(id),
                    message_id: Some(mid),
                    ..Default::default()
                })
                .await?
                .into_iter()
                .next(),
            None => None,
        };
        let ms = match q.around {
            None => {
                app.history(rpc::HistoryParams {
                    conversation_id: Some(id),
                    limit: Some(pages::PAGE),
                    ..Default::default()
                })
                .await?
            }
            // Half a page before it, it, and everything after it (up to a page).
            Some(mid) => {
                let mut ms = app
                    .history(rpc::HistoryParams {
                        conversation_id: Some(id),
                        before: Some(mid),
                        limit: Some(pages::PAGE / 2),
                        ..Default::default()
                    })
                    .await?;
                for page in [
                    rpc::HistoryParams {
                        conversation_id: Some(id),
                        message_id: Some(mid),
                        ..Default::default()
                    },
                    rpc::HistoryParams {
                        conversation_id: Some(id),
                        after: Some(mid),
                        limit: Some(pages::PAGE),
                        ..Default::default()
                    },
                ] {
                    ms.extend(app.history(page).await?);
                }
                ms
            }
        };
        // After reading: the list shows this conversation as read.
        let (conv, convs) = conversation(&app, id).await?;
        let invs = app.invitations(NoParams {}).await?;
        let draft = app
            .draft(rpc::DraftParams {
                conversation_id: id,
                text: None,
            })
            .await?;
        Ok::<_, CallError>((conv, convs, invs, ms, draft.text, reply))
    }
    .await;
    match result {
        Ok((conv, convs, invs, ms, draft, reply)) => page(pages::chat(
            &r.ctx,
            &pages::ChatView {
                conv: &conv,
                convs: &convs,
                invitations: &invs,
                messages: &ms,
                draft: &draft,
                reply: reply.as_ref(),
            },
        )),
        Err(e) => fail(&r.ctx, &e),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    before: Option<MessageId>,
    after: Option<MessageId>,
}

/// Older messages (`before`) or newer ones (`after`) as list items. `X-More: 1` when older
/// messages remain.
async fn messages(
    State(app): AppState,
    signed: Signed,
    Path(id): Path<ConversationId>,
    Query(q): Query<PageQuery>,
) -> Response {
    let r = signed.open(&app);
    let limit = if q.after.is_some() { 500 } else { pages::PAGE };
    let ms = app
        .history(rpc::HistoryParams {
            conversation_id: Some(id),
            before: q.before,
            after: q.after,
            limit: Some(limit),
            ..Default::default()
        })
        .await
        .map_err(CallError::from);
    match ms {
        Ok(ms) => {
            let more = q.before.is_some() && ms.len() >= pages::PAGE;
            let mut resp = page(pages::messages(&r.ctx, id, &ms));
            if let (true, Some(first)) = (more, ms.first())
                && let Ok(v) = first.id.to_string().parse()
            {
                resp.headers_mut().insert("x-older", v);
            }
            resp
        }
        Err(e) => (StatusCode::NOT_FOUND, explain(&r.ctx, &e)).into_response(),
    }
}

async fn one_message(
    State(app): AppState,
    signed: Signed,
    Path((id, mid)): Path<(ConversationId, MessageId)>,
) -> Response {
    let r = signed.open(&app);
    let ms = app
        .history(rpc::HistoryParams {
            conversation_id: Some(id),
            message_id: Some(mid),
            ..Default::default()
        })
        .await
        .map_err(CallError::from);
    match ms {
        Ok(ms) => page(pages::messages(&r.ctx, id, &ms)),
        Err(e) => (StatusCode::NOT_FOUND, explain(&r.ctx, &e)).into_response(),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    current: Option<ConversationId>,
}

async fn chat_list(State(app): AppState, signed: Signed, Query(q): Query<ListQuery>) -> Response {
    let r = signed.open(&app);
    match lists(&app).await {
        Ok((convs, invs)) => page(pages::chat_list(&r.ctx, &convs, &invs, q.current)),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, explain(&r.ctx, &e)).into_response(),
    }
}

async fn send(
    State(app): AppState,
    headers: HeaderMap,
    Path(id): Path<ConversationId>,
    form: Posted,
) -> Response {
    let (r, f) = form.open(&app);
    let text = f.text("text");
    let reply_to = f.get("reply_to").and_then(|m| m.parse().ok());
    let sent = app
        .send(rpc::SendParams {
            conversation_id: Some(id),
            text: Some(text.to_string()),
            reply_to,
            ..Default::default()
        })
        .await
        .map_err(CallError::from);
    match sent {
        // Unreachable relay: the message is stored and queued; the page shows it as waiting.
        Ok(_) => {}
        Err(e) if e.kind.as_deref() == Some("relay_unreachable") => {}
        Err(e) => {
            return if scripted(&headers) {
                (StatusCode::UNPROCESSABLE_ENTITY, explain(&r.ctx, &e)).into_response()
            } else {
                fail(&r.ctx, &e)
            };
        }
    }
    if scripted(&headers) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        see(format!("/c/{id}"))
    }
}

async fn retry(State(app): AppState, Path(mid): Path<MessageId>, form: Posted) -> Response {
    let (r, _) = form.open(&app);
    let sent = app
        .message_retry(rpc::MessageParams { message_id: mid })
        .await
        .map_err(CallError::from);
    match sent {
        Ok(s) => see(format!("/c/{}", s.conversation_id)),
        Err(e) => fail(&r.ctx, &e),
    }
}

// ---- search and the list's arrangement --------------------------------------------------------

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn search(State(app): AppState, signed: Signed, Query(q): Query<SearchQuery>) -> Response {
    let r = signed.open(&app);
    if q.q.trim().is_empty() {
        return page(pages::search(&r.ctx, "", &[], None));
    }
    let hits = app
        .search(rpc::SearchParams {
            query: q.q.clone(),
            target: None,
            conversation_id: None,
            limit: Some(200),
        })
        .await
        .map_err(CallError::from);
    match hits {
        Ok(hits) => page(pages::search(&r.ctx, &q.q, &hits, None)),
        // Kept in the box: what was typed is not lost.
        Err(e) if e.kind.as_deref() == Some("usage") => page_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::search(&r.ctx, &q.q, &[], Some(&r.ctx.tr("search-words"))),
        ),
        Err(e) => fail(&r.ctx, &e),
    }
}

/// Pin, archive or mute a conversation, then back to its page.
async fn arrange(State(app): AppState, Path(id): Path<ConversationId>, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let on = f.get("on").is_some();
    let params = |seconds: Option<u64>| rpc::ArrangeParams {
        conversation_id: Some(id),
        on,
        seconds,
        ..Default::default()
    };
    let done = match f.get("what") {
        Some("pin") => app.pin(params(None)).await.map(|_| ()),
        Some("archive") => app.archive(params(None)).await.map(|_| ()),
        Some("mute") => {
            let seconds = match f.get("seconds") {
                Some("forever") | None => None,
                Some(s) => Some(s.parse().unwrap_or(0)),
            };
            app.mute(params(seconds)).await.map(|_| ())
        }
        _ => return not_found(&r.ctx),
    };
    match done.map_err(CallError::from) {
        Ok(()) => see(format!("/c/{id}/info")),
        Err(e) => fail(&r.ctx, &e),
    }
}

/// Open the saved messages (made on first use).
async fn saved(State(app): AppState, form: Posted) -> Response {
    let (r, _) = form.open(&app);
    match app
        .saved_messages(NoParams {})
        .await
        .map_err(CallError::from)
    {
        Ok(c) => see(format!("/c/{}", c.conversation_id)),
        Err(e) => fail(&r.ctx, &e),
    }
}

/// Block or unblock the contact of a 1:1 chat.
async fn block(State(app): AppState, Path(id): Path<ConversationId>, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let on = f.get("on").is_some();
    let contact = app
        .conversations(NoParams {})
        .await
        .ok()
        .and_then(|cs| cs.into_iter().find(|c| c.id == id))
        .and_then(|c| c.contact);
    let Some(contact) = contact else {
        return not_found(&r.ctx);
    };
    let done = app
        .contact_block(rpc::ContactBlockParams {
            contact: contact.to_string(),
            blocked: on,
        })
        .await
        .map_err(CallError::from);
    match done {
        Ok(_) => see(format!("/c/{id}")),
        Err(e) => fail(&r.ctx, &e),
    }
}

/// Delete a chat on this device (the form's box must be ticked).
async fn delete_chat(
    State(app): AppState,
    Path(id): Path<ConversationId>,
    form: Posted,
) -> Response {
    let (r, f) = form.open(&app);
    if f.get("confirm") != Some("1") {
        return see(format!("/c/{id}/info#delete-chat"));
    }
    let done = app
        .delete_chat(rpc::ChatParams {
            conversation_id: Some(id),
            ..Default::default()
        })
        .await
        .map_err(CallError::from);
    match done {
        Ok(_) => see("/".into()),
        Err(e) if e.kind.as_deref() == Some("relay_unreachable") => see("/".into()),
        Err(e) => fail(&r.ctx, &e),
    }
}

// ---- what people do to a message ------------------------------------------------------------

fn refused(c: &Ctx<'_>, headers: &HeaderMap, e: &CallError) -> Response {
    if scripted(headers) {
        (StatusCode::UNPROCESSABLE_ENTITY, explain(c, e)).into_response()
    } else {
        fail(c, e)
    }
}

/// React, edit or delete (the last part of the path says which). Scripts get 204 (the page
/// refreshes the message from the event); forms go back to the message in its chat.
async fn act(
    State(app): AppState,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(mid): Path<MessageId>,
    form: Posted,
) -> Response {
    let (r, f) = form.open(&app);
    let action = uri.path().rsplit('/').next().unwrap_or_default();
    let done = match action {
        "react" => {
            let params = rpc::ReactParams {
                message_id: mid,
                emoji: f.text("emoji"),
                remove: f.get("remove").is_some(),
            };
            app.react(params).await
        }
        "edit" => {
            let params = rpc::EditParams {
                message_id: mid,
                text: f.text("text"),
            };
            app.edit(params).await
        }
        "delete" => {
            let params = rpc::DeleteParams {
                message_id: mid,
                for_everyone: f.get("for_everyone").is_some(),
            };
            app.delete(params).await
        }
        _ => return not_found(&r.ctx),
    };
    match done.map_err(CallError::from) {
        Ok(_) if scripted(&headers) => StatusCode::NO_CONTENT.into_response(),
        Ok(done) if action == "delete" => see(format!("/c/{}", done.conversation_id)),
        Ok(done) => see(format!("/c/{}#m-{mid}", done.conversation_id)),
        Err(e) => refused(&r.ctx, &headers, &e),
    }
}

#[derive(Deserialize)]
struct ForwardQuery {
    /// The conversation the message is in.
    from: ConversationId,
}

/// Where to forward a message: every conversation one can still write to.
async fn forward_page(
    State(app): AppState,
    signed: Signed,
    Path(mid): Path<MessageId>,
    Query(q): Query<ForwardQuery>,
) -> Response {
    let r = signed.open(&app);
    let result = async {
        let conv = q.from;
        let ms = app
            .history(rpc::HistoryParams {
                conversation_id: Some(conv),
                message_id: Some(mid),
                ..Default::default()
            })
            .await?;
        let convs: Vec<ConversationView> = app.conversations(NoParams {}).await?;
        Ok::<_, CallError>((ms, convs))
    }
    .await;
    match result {
        Ok((ms, convs)) => match ms.first() {
            Some(m) => page(pages::forward(&r.ctx, m, &convs)),
            None => not_found(&r.ctx),
        },
        Err(e) => fail(&r.ctx, &e),
    }
}

async fn forward(State(app): AppState, Path(mid): Path<MessageId>, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let to: Option<ConversationId> = f.get("to").and_then(|t| t.parse().ok());
    let Some(to) = to else {
        return not_found(&r.ctx);
    };
    let sent = app
        .forward(rpc::ForwardParams {
            message_id: mid,
            target: None,
            conversation_id: Some(to),
        })
        .await
        .map_err(CallError::from);
    match sent {
        Ok(s) => see(format!("/c/{}", s.conversation_id)),
        Err(e) if e.kind.as_deref() == Some("relay_unreachable") => see(format!("/c/{to}")),
        Err(e) => fail(&r.ctx, &e),
    }
}

// ---- groups ---------------------------------------------------------------------------------

async fn info_page(
    app: &App,
    c: &Ctx<'_>,
    id: ConversationId,
    waiting: Option<String>,
    error: Option<String>,
) -> Response {
    let result = async {
        let (conv, _) = conversation(app, id).await?;
        let members: Vec<MemberView> = if conv.active {
            app.group_members(rpc::GroupParams {
                conversation_id: Some(conv.id),
                ..Default::default()
            })
            .await?
        } else {
            Vec::new()
        };
        let contacts = app.contacts(NoParams {}).await?;
        Ok::<_, CallError>((conv, members, contacts))
    }
    .await;
    match result {
        Ok((conv, members, contacts)) => {
            let status = if error.is_some() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            let i = pages::Info {
                conv: &conv,
                members: &members,
                contacts: &contacts,
                waiting,
            };
            page_with(status, pages::info(c, &i, error.as_deref()))
        }
        Err(e) => fail(c, &e),
    }
}

async fn info(State(app): AppState, signed: Signed, Path(id): Path<ConversationId>) -> Response {
    let r = signed.open(&app);
    info_page(&app, &r.ctx, id, None, None).await
}

/// Run a group change; show the members page again (with what went wrong, if anything).
async fn group_change(
    app: &App,
    id: ConversationId,
    form: Posted,
    method: &'static str,
    params: impl FnOnce(&str, &Fields) -> Value,
) -> Response {
    let (r, f) = form.open(app);
    // By id: a rename elsewhere cannot make this land on another conversation, and no list
    // of every conversation is read to find a name.
    let result: Result<Value, CallError> = app.call(method, params(&id.to_string(), &f)).await;
    match result {
        Ok(v) => {
            let waiting: Vec<ContactId> = v
                .get("waiting")
                .and_then(|w| serde_json::from_value(w.clone()).ok())
                .unwrap_or_default();
            let waiting = shown(app, &waiting).await;
            if waiting.is_some() {
                return info_page(app, &r.ctx, id, waiting, None).await;
            }
            match method {
                "group_leave" => see("/".into()),
                _ => see(format!("/c/{id}/info")),
            }
        }
        Err(e) => info_page(app, &r.ctx, id, None, Some(explain(&r.ctx, &e))).await,
    }
}

async fn group_add(State(app): AppState, Path(id): Path<ConversationId>, form: Posted) -> Response {
    group_change(
        &app,
        id,
        form,
        "group_add",
        |g, f| json!({ "conversation_id": g, "contacts": f.all("member") }),
    )
    .await
}

async fn group_remove(
    State(app): AppState,
    Path(id): Path<ConversationId>,
    form: Posted,
) -> Response {
    group_change(
        &app,
        id,
        form,
        "group_remove",
        |g, f| json!({ "conversation_id": g, "contact": f.text("contact") }),
    )
    .await
}

/// Rename a group for everyone, or call a contact something else (a 1:1 chat).
async fn group_rename(
    State(app): AppState,
    Path(id): Path<ConversationId>,
    form: Posted,
) -> Response {
    // A 1:1 conversation is called by its contact's alias.
    let alias = conversation(&app, id)
        .await
        .ok()
        .filter(|(c, _)| c.kind == samizdat_core::ConvKind::Direct)
        .map(|(c, _)| c.name);
    if let Some(alias) = alias {
        let (r, f) = form.open(&app);
        let done = app
            .contact_rename(rpc::ContactRenameParams {
                contact: alias,
                name: f.text("name"),
            })
            .await
            .map_err(CallError::from);
        return match done {
            Ok(_) => see(format!("/c/{id}/info")),
            Err(e) => info_page(&app, &r.ctx, id, None, Some(explain(&r.ctx, &e))).await,
        };
    }
    group_change(
        &app,
        id,
        form,
        "group_rename",
        |g, f| json!({ "conversation_id": g, "name": f.text("name") }),
    )
    .await
}

async fn group_leave(
    State(app): AppState,
    Path(id): Path<ConversationId>,
    form: Posted,
) -> Response {
    group_change(
        &app,
        id,
        form,
        "group_leave",
        |g, _| json!({ "conversation_id": g }),
    )
    .await
}

async fn set_timer(State(app): AppState, Path(id): Path<ConversationId>, form: Posted) -> Response {
    group_change(&app, id, form, "set_timer", |g, f| {
        let seconds = f
            .get("seconds")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        json!({ "conversation_id": g, "seconds": seconds })
    })
    .await
}

async fn new_group(State(app): AppState, signed: Signed) -> Response {
    let r = signed.open(&app);
    match app.contacts(NoParams {}).await.map_err(CallError::from) {
        Ok(contacts) => page(pages::new_group(
            &r.ctx,
            &contacts,
            None,
            &pages::GroupDraft::default(),
        )),
        Err(e) => fail(&r.ctx, &e),
    }
}

async fn create_group(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let name = f.text("name");
    let members = f.all("member");
    let result = async {
        let created = app
            .group_create(rpc::GroupParams {
                group: name.clone(),
                conversation_id: None,
            })
            .await?;
        let mut waiting = None;
        if !members.is_empty() {
            let added = app
                .group_add(rpc::GroupAddParams {
                    group: name.trim().to_string(),
                    conversation_id: None,
                    contacts: members.clone(),
                })
                .await?;
            waiting = shown(&app, &added.waiting).await;
        }
        Ok::<_, CallError>((created, waiting))
    }
    .await;
    match result {
        Ok((c, None)) => see(format!("/c/{}", c.conversation_id)),
        Ok((c, Some(w))) => info_page(&app, &r.ctx, c.conversation_id, Some(w), None).await,
        Err(e) => {
            let contacts = app.contacts(NoParams {}).await.unwrap_or_default();
            page_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                pages::new_group(
                    &r.ctx,
                    &contacts,
                    Some(&explain(&r.ctx, &e)),
                    &pages::GroupDraft {
                        name: &name,
                        members: &members,
                    },
                ),
            )
        }
    }
}

// ---- contacts, invites, invitations -----------------------------------------------------------

async fn new_contact(State(app): AppState, signed: Signed) -> Response {
    let r = signed.open(&app);
    if !ready(&app).await {
        return see("/".into());
    }
    page(pages::new_contact(&r.ctx, None, None, "", ""))
}

async fn invite(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let reusable = f.get("reusable").is_some();
    let hours: u64 = f.get("hours").and_then(|h| h.parse().ok()).unwrap_or(72);
    let link = app
        .invite_create(rpc::InviteCreateParams {
            reusable,
            hours: Some(hours),
        })
        .await
        .map_err(CallError::from);
    match link {
        Ok(l) => page(pages::new_contact(
            &r.ctx,
            Some(&pages::Invite {
                link: l.link,
                expires_at: l.expires_at,
                reusable,
            }),
            None,
            "",
            "",
        )),
        Err(e) => page_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::new_contact(&r.ctx, None, Some(&explain(&r.ctx, &e)), "", ""),
        ),
    }
}

async fn accept(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let link = f.text("link");
    let name = f.text("name");
    let accepted = app
        .invite_accept(rpc::InviteAcceptParams {
            link: link.trim().to_string(),
            name: name.trim().to_string(),
        })
        .await
        .map_err(CallError::from);
    match accepted {
        Ok(a) => see(format!("/c/{}", a.conversation_id)),
        Err(e) => page_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::new_contact(&r.ctx, None, Some(&explain(&r.ctx, &e)), &link, &name),
        ),
    }
}

async fn invitation(
    State(app): AppState,
    Path((id, action)): Path<(i64, String)>,
    form: Posted,
) -> Response {
    let (r, _) = form.open(&app);
    let method = match action.as_str() {
        "accept" => "invitation_accept",
        "decline" => "invitation_decline",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match app.call::<Value>(method, json!({ "id": id })).await {
        Ok(_) => see("/".into()),
        Err(e) => fail(&r.ctx, &e),
    }
}

/// Contacts as a person reads them (their names, not their ids); `None` for none.
async fn shown(app: &App, ids: &[ContactId]) -> Option<String> {
    if ids.is_empty() {
        return None;
    }
    let contacts = app.contacts(NoParams {}).await.unwrap_or_default();
    let names: Vec<String> = ids
        .iter()
        .map(|id| match contacts.iter().find(|k| k.id == *id) {
            Some(k) => k.shown_as.clone(),
            None => id.short(),
        })
        .collect();
    Some(names.join(", "))
}

async fn contact(app: &App, id: ContactId) -> Result<ContactView, CallError> {
    let contacts = app.contacts(NoParams {}).await?;
    contacts.into_iter().find(|k| k.id == id).ok_or(CallError {
        kind: Some("not_found".into()),
        message: "no such contact".into(),
    })
}

async fn verify(State(app): AppState, signed: Signed, Path(id): Path<ContactId>) -> Response {
    let r = signed.open(&app);
    let result = async {
        let k = contact(&app, id).await?;
        let n = app
            .safety_number(rpc::ContactParams {
                contact: k.alias.clone(),
            })
            .await?;
        Ok::<_, CallError>((k, n.safety_number))
    }
    .await;
    match result {
        Ok((k, n)) => page(pages::verify(&r.ctx, &k, &n)),
        Err(e) => fail(&r.ctx, &e),
    }
}

async fn verify_post(State(app): AppState, Path(id): Path<ContactId>, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let result = async {
        let k = contact(&app, id).await?;
        app.contact_verify(rpc::ContactVerifyParams {
            contact: k.alias.clone(),
            verified: f.get("verified") == Some("1"),
        })
        .await
        .map_err(CallError::from)
    }
    .await;
    match result {
        Ok(_) => see(format!("/contacts/{id}/verify")),
        Err(e) => fail(&r.ctx, &e),
    }
}

// ---- settings -------------------------------------------------------------------------------

async fn settings(State(app): AppState, signed: Signed) -> Response {
    let r = signed.open(&app);
    settings_page(&app, &r, None, None).await
}

async fn settings_page(
    app: &App,
    r: &Req<'_>,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    settings_page_with(app, r, notice, error, None).await
}

async fn settings_page_with(
    app: &App,
    r: &Req<'_>,
    notice: Option<String>,
    error: Option<String>,
    confirm: Option<(String, samizdat_core::LinkPreview)>,
) -> Response {
    let devices = app.devices(NoParams {}).await.unwrap_or_default();
    let settings = app.settings(NoParams {}).await.ok();
    if let Some(s) = &settings {
        app.remember_notify(s.notifications);
    }
    match app.whoami(NoParams {}).await.map_err(CallError::from) {
        Ok(w) => {
            let status = if error.is_some() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            let me = pages::Me {
                name: w.name,
                relay: w.relay,
                fingerprint: w.fingerprint,
                proxy: w.proxy.as_deref().map(samizdat_core::net::redact),
                isolate: w.isolate,
                read_receipts: settings.as_ref().is_some_and(|s| s.read_receipts),
            };
            let m = pages::settings(
                &r.ctx,
                r.session.lang,
                &me,
                &pages::Devices {
                    list: &devices,
                    confirm: confirm.as_ref().map(|(l, p)| (l.as_str(), p)),
                },
                notice.as_deref(),
                error.as_deref(),
            );
            page_with(status, m)
        }
        Err(e) => fail(&r.ctx, &e),
    }
}

async fn settings_duress(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let duress = zeroize::Zeroizing::new(f.text("duress"));
    let again = zeroize::Zeroizing::new(f.text("duress2"));
    let error = if duress.chars().count() < 8 {
        Some(r.ctx.tr("err-passphrase-short"))
    } else if *duress != *again {
        Some(r.ctx.tr("err-passphrase-mismatch"))
    } else {
        match app.set_duress(&duress).await {
            Ok(()) => None,
            Err(e) if e.message.contains("must differ") => Some(r.ctx.tr("err-duress-same")),
            Err(e) => Some(explain(&r.ctx, &e)),
        }
    };
    match error {
        None => settings_page(&app, &r, Some(r.ctx.tr("settings-duress-done")), None).await,
        Some(e) => settings_page(&app, &r, None, Some(e)).await,
    }
}

/// A pasted link: show the new device's name and code and ask (nothing is signed yet).
async fn settings_device_preview(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let link = f.text("link").trim().to_string();
    match app
        .device_add_preview(rpc::DeviceAddParams { link: link.clone() })
        .await
        .map_err(CallError::from)
    {
        Ok(p) => settings_page_with(&app, &r, None, None, Some((link, p))).await,
        Err(e) => settings_page(&app, &r, None, Some(explain(&r.ctx, &e))).await,
    }
}

/// Confirmed: add the device (the service finishes it when the new device answers).
async fn settings_device_add(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    match app
        .device_add(rpc::DeviceAddParams {
            link: f.text("link").trim().to_string(),
        })
        .await
        .map_err(CallError::from)
    {
        Ok(p) => {
            let notice = r
                .ctx
                .tra("settings-devices-adding", &[("name", p.name.into())]);
            settings_page(&app, &r, Some(notice), None).await
        }
        Err(e) => settings_page(&app, &r, None, Some(explain(&r.ctx, &e))).await,
    }
}

async fn settings_device_revoke(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let done = app
        .device_revoke(rpc::DeviceParams {
            id: f.text("id").to_string(),
        })
        .await
        .map_err(CallError::from);
    match done {
        Ok(_) => {
            settings_page(
                &app,
                &r,
                Some(r.ctx.tr("settings-devices-revoked-done")),
                None,
            )
            .await
        }
        Err(e) => settings_page(&app, &r, None, Some(explain(&r.ctx, &e))).await,
    }
}

async fn settings_proxy(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let proxy = f.text("proxy");
    let proxy = if proxy.trim().is_empty() {
        "off".to_string()
    } else {
        proxy
    };
    let saved = app
        .set_proxy(rpc::ProxyParams {
            proxy: proxy.trim().to_string(),
            isolate: f.get("isolate") == Some("1"),
        })
        .await
        .map_err(CallError::from);
    match saved {
        Ok(_) => settings_page(&app, &r, Some(r.ctx.tr("settings-proxy-done")), None).await,
        Err(e) => settings_page(&app, &r, None, Some(explain(&r.ctx, &e))).await,
    }
}

async fn settings_wipe(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    if f.get("confirm") != Some("1") {
        return settings_page(&app, &r, None, Some(r.ctx.tr("err-wipe-confirm"))).await;
    }
    match app.wipe().await {
        Ok(()) => clearing(see("/".into()), Clear::Storage),
        Err(e) => fail(&r.ctx, &e),
    }
}

/// Lock: the profile leaves memory (when this process owns it) and the browser drops what it
/// holds for the app; the page asks for the passphrase again.
async fn lock(State(app): AppState, _checked: Posted) -> Response {
    app.lock().await;
    clearing(see("/".into()), Clear::Storage)
}

/// Quit: the session ends, the browser drops everything it holds for the app (the cookie
/// too), and the app's process stops.
async fn quit(State(app): AppState, form: Posted) -> Response {
    let (r, _) = form.open(&app);
    app.guard.end(&r.id);
    app.quit.notify_one();
    clearing(page(pages::stopped(&r.ctx)), Clear::All)
}

/// The composer's draft, kept in the profile (never in the browser).
async fn save_draft(
    State(app): AppState,
    Path(id): Path<ConversationId>,
    form: Posted,
) -> Response {
    let (r, f) = form.open(&app);
    let text = zeroize::Zeroizing::new(f.text("text"));
    let saved = app
        .draft_set(rpc::DraftParams {
            conversation_id: id,
            text: Some(text.as_str().to_string()),
        })
        .await
        .map_err(CallError::from);
    match saved {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, explain(&r.ctx, &e)).into_response(),
    }
}

async fn settings_lang(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    app.guard
        .set_lang(&r.id, f.get("lang").and_then(Lang::from_code));
    // Back to where the switch was (only our own two pages: no open redirect).
    match f.get("back") {
        Some("/") => see("/".into()),
        _ => see("/settings".into()),
    }
}

async fn settings_notifications(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let level = serde_json::from_value(serde_json::Value::String(f.text("level")));
    let Ok(level) = level else {
        return not_found(&r.ctx);
    };
    match app
        .set_notifications(rpc::NotifyParams { level })
        .await
        .map_err(CallError::from)
    {
        Ok(_) => {
            app.remember_notify(level);
            see("/settings#notifications".into())
        }
        Err(e) => fail(&r.ctx, &e),
    }
}

async fn settings_read_receipts(State(app): AppState, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let on = f.get("on") == Some("1");
    match app
        .set_read_receipts(rpc::ReadReceiptsParams { on })
        .await
        .map_err(CallError::from)
    {
        Ok(_) => see("/settings#receipts".into()),
        Err(e) => fail(&r.ctx, &e),
    }
}

// ---- live updates and assets -----------------------------------------------------------------

/// The service's events as Server-Sent Events. The page's script decides what to refresh;
/// it inserts text only as text, and HTML only from our own fragments.
async fn events(State(app): AppState) -> Response {
    let rx = app.subscribe();
    let first = app.relay_state().map(|(state, retry)| {
        json!({ "event": "relay", "state": state, "retry_in_ms": retry }).to_string()
    });
    let initial =
        futures_util::stream::iter(first.map(|d| Ok::<_, Infallible>(SseEvent::default().data(d))));
    let live = futures_util::stream::unfold(rx, |mut rx| async move {
        let e = match rx.recv().await {
            Ok(e) => SseEvent::default().data(serde_json::to_string(&e).unwrap_or_default()),
            // The script re-reads what it shows.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                SseEvent::default().data(r#"{"event":"lagged"}"#)
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(e), rx))
    });
    use futures_util::StreamExt;
    Sse::new(initial.chain(live))
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../assets/app.js"),
    )
        .into_response()
}

/// The group calls' frame encryption (SFrame), run as an `RTCRtpScriptTransform` worker from
/// this origin (the CSP allows no other).
async fn sframe_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../assets/sframe.js"),
    )
        .into_response()
}

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("../../assets/favicon.svg"),
    )
        .into_response()
}

/// Any other address: a real page that says so, in the reader's language, with the way back.
async fn missing(State(app): AppState, signed: Signed) -> Response {
    let r = signed.open(&app);
    not_found(&r.ctx)
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../assets/app.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    /// Security review 3, L5: a form's fields (a passphrase among them) are overwritten when
    /// the form is dropped.
    #[test]
    fn finding_l5_form_fields_are_overwritten() {
        let mut f = super::Fields::parse(b"csrf=abc&passphrase=correct+horse+battery");
        assert_eq!(f.get("passphrase"), Some("correct horse battery"));
        assert!(std::mem::needs_drop::<super::Fields>());
        zeroize::Zeroize::zeroize(&mut f);
        assert!(f.0.iter().all(|(k, v)| k.is_empty() && v.is_empty()));
    }
}
