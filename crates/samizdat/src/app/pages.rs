//! The pages, rendered on the server with maud: every value is HTML-escaped by the template
//! engine (message text, names and aliases are attacker-controlled). No inline script or
//! style: the Content-Security-Policy forbids both.

use fluent_bundle::FluentValue;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use samizdat_core::{
    ContactView, ConvKind, ConversationId, ConversationView, InvitationView, MemberView,
    MessageView, RelayState,
};

use super::App;
use crate::i18n::Lang;

/// What every page needs: the language, the session's CSRF token, the relay state.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub lang: Lang,
    pub csrf: Option<String>,
    pub relay: Option<(RelayState, Option<u64>)>,
}

impl Ctx<'_> {
    pub fn tr(&self, key: &str) -> String {
        self.app.i18n.t(self.lang, key)
    }

    pub fn tra(&self, key: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        self.app.i18n.ta(self.lang, key, args)
    }

    /// What the core reported, said in the page's language.
    pub fn problem(&self, problem: &samizdat_core::Problem) -> String {
        self.app
            .i18n
            .problem(self.lang, problem, crate::i18n::Errors::Translated)
    }

    /// A line about a conversation, kept in its chat.
    pub fn line(&self, e: &samizdat_core::Event) -> String {
        self.app
            .i18n
            .line(self.lang, e, crate::i18n::Errors::Translated)
    }

    pub fn notice(&self, notice: &samizdat_core::Notice) -> String {
        self.app
            .i18n
            .notice(self.lang, notice, crate::i18n::Errors::Translated)
    }

    pub fn status(&self, status: Option<&samizdat_core::ConvStatus>) -> String {
        status
            .map(|s| self.app.i18n.status(self.lang, s))
            .unwrap_or_default()
    }

    pub(super) fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf.as_deref().unwrap_or("")); }
    }
}

/// A whole page around `body`.
pub fn layout(c: &Ctx<'_>, title: &str, page: &str, nav: bool, body: Markup) -> Markup {
    let (down, retrying) = match c.relay {
        Some((RelayState::Down, _)) => (true, false),
        Some((RelayState::Retrying, _)) => (false, true),
        _ => (false, false),
    };
    html! {
        (DOCTYPE)
        html lang=(c.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                meta name="referrer" content="no-referrer";
                @if let Some(t) = &c.csrf { meta name="csrf-token" content=(t); }
                title { (title) " · " (c.tr("app-title")) }
                link rel="stylesheet" href="/static/app.css";
                link rel="icon" type="image/svg+xml" href="/static/favicon.svg";
                script src="/static/app.js" defer {}
            }
            @let notify = serde_json::to_value(c.app.notify_level()).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            body data-page=(page) data-lang=(c.lang.code()) data-notify=(notify) data-notify-text=(c.tr("notify-new-message")) data-title=(title) {
                a.skip href="#main" { (c.tr("skip-to-content")) }
                div #banner-down .banner.down role="status" hidden[!down] { (c.tr("banner-down")) }
                div #banner-retrying .banner.retrying role="status" hidden[!retrying] { (c.tr("banner-retrying")) }
                div #banner-stopped .banner.down role="alert" hidden { (c.tr("banner-stopped")) }
                @if nav {
                    header.top {
                        a.brand href="/" { (c.tr("app-title")) }
                        nav aria-label=(c.tr("app-title")) {
                            a href="/" { (c.tr("nav-chats")) }
                            a href="/new" { (c.tr("nav-new-contact")) }
                            a href="/groups/new" { (c.tr("nav-new-group")) }
                            a href="/channels" { (c.tr("nav-channels")) }
                            a href="/settings" { (c.tr("nav-settings")) }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
                @if nav && c.csrf.is_some() { (call_box(c)) }
            }
        }
    }
}

/// The call screen, on every signed-in page so a call rings wherever the person is; the
/// script fills it in. Its sentences are here, in the page's language.
fn call_box(c: &Ctx<'_>) -> Markup {
    html! {
        div #call .call role="dialog" aria-modal="true" aria-labelledby="call-name" hidden
            data-incoming=(c.tr("call-incoming")) data-incoming-video=(c.tr("call-incoming-video"))
            data-calling=(c.tr("call-calling")) data-connecting=(c.tr("call-connecting"))
            data-connected=(c.tr("call-connected")) data-ended=(c.tr("call-ended"))
            data-failed=(c.tr("call-failed")) data-no-media=(c.tr("call-no-media"))
            data-mute=(c.tr("call-mute")) data-unmute=(c.tr("call-unmute"))
            data-camera-off=(c.tr("call-camera-off")) data-camera-on=(c.tr("call-camera-on"))
            data-incoming-group=(c.tr("call-incoming-group")) data-waiting=(c.tr("call-group-waiting")) {
            div.call-card {
                h2 #call-name {}
                p #call-status aria-live="polite" {}
                ul #call-peers .call-peers aria-label=(c.tr("call-in-the-call")) hidden {}
                p #call-timer .call-timer {}
                p #call-secure .call-secure hidden {
                    "🔒 " (c.tr("call-secure")) " · "
                    a #call-verify href="#" { (c.tr("call-safety")) }
                }
                div.call-media {
                    video #call-remote-video autoplay playsinline hidden {}
                    video #call-local-video autoplay playsinline muted hidden {}
                }
                audio #call-remote-audio autoplay {}
                div #call-devices .call-devices hidden {
                    label { (c.tr("call-mic")) " " select #call-mic {} }
                    label #call-cam-label { (c.tr("call-cam")) " " select #call-cam {} }
                }
                div.call-controls {
                    button #call-accept type="button" hidden { (c.tr("call-accept")) }
                    button #call-decline .danger type="button" hidden { (c.tr("call-decline")) }
                    button #call-mute type="button" aria-pressed="false" hidden { (c.tr("call-mute")) }
                    button #call-camera type="button" aria-pressed="false" hidden { (c.tr("call-camera-off")) }
                    button #call-hangup .danger type="button" hidden { (c.tr("call-hangup")) }
                }
                p #call-error .call-error role="alert" hidden {}
            }
        }
    }
}

/// Every language by its own name (English · Русский · …), for the pages before the
/// settings exist (onboarding, unlock).
fn lang_switch(c: &Ctx<'_>) -> Markup {
    html! {
        form.lang-switch method="post" action="/settings/lang" {
            (c.csrf_field())
            input type="hidden" name="back" value="/";
            @for (i, lang) in Lang::all().enumerate() {
                @if i > 0 { " · " }
                button.link type="submit" name="lang" value=(lang.code()) lang=(lang.code()) disabled[c.lang == lang] { (c.app.i18n.t(lang, "language-name")) }
            }
        }
    }
}

pub fn error_box(msg: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = msg { p.error role="alert" { (m) } }
    }
}

// ---- login, onboarding, unlock ---------------------------------------------------------------

pub fn login(c: &Ctx<'_>) -> Markup {
    layout(
        c,
        &c.tr("login-title"),
        "login",
        false,
        html! {
            section.card.narrow {
                h1 { (c.tr("login-title")) }
                p { (c.tr("login-body")) }
            }
        },
    )
}

pub struct OnboardForm {
    pub name: String,
    pub relay: String,
}

pub fn onboard(c: &Ctx<'_>, f: &OnboardForm, error: Option<&str>) -> Markup {
    layout(
        c,
        &c.tr("onboard-title"),
        "onboard",
        false,
        html! {
            section.card.narrow {
                (lang_switch(c))
                h1 { (c.tr("onboard-title")) }
                p.muted { (c.tr("onboard-intro")) }
                (error_box(error))
                form method="post" action="/onboard" #onboard {
                    (c.csrf_field())
                    label for="name" { (c.tr("field-display-name")) }
                    input #name name="name" required maxlength="64" autocomplete="nickname" value=(f.name) aria-describedby="name-hint";
                    small #name-hint { (c.tr("field-display-name-hint")) }
                    label for="relay" { (c.tr("field-relay")) }
                    input #relay name="relay" type="url" required value=(f.relay) aria-describedby="relay-hint";
                    small #relay-hint { (c.tr("field-relay-hint")) }
                    label for="passphrase" { (c.tr("field-passphrase")) }
                    input #passphrase name="passphrase" type="password" required minlength="8" autocomplete="new-password" aria-describedby="pass-hint strength";
                    small #pass-hint { (c.tr("field-passphrase-hint")) }
                    p #strength .strength aria-live="polite" {
                        span data-strength="weak" hidden { (c.tr("strength-weak")) }
                        span data-strength="fair" hidden { (c.tr("strength-fair")) }
                        span data-strength="strong" hidden { (c.tr("strength-strong")) }
                    }
                    label for="passphrase2" { (c.tr("field-passphrase-again")) }
                    input #passphrase2 name="passphrase2" type="password" required minlength="8" autocomplete="new-password";
                    button type="submit" { (c.tr("onboard-submit")) }
                    p.muted { (c.tr("onboard-link-help")) }
                    button.secondary #onboard-link type="submit" formaction="/onboard/link" { (c.tr("onboard-link")) }
                }
            }
        },
    )
}

/// Onboarding by linking: this new device shows its one-time link (QR code and text) and its
/// code, and waits for the device that holds the identity to add it.
pub fn linking(c: &Ctx<'_>, link: Option<(&str, &str)>, error: Option<&str>) -> Markup {
    layout(
        c,
        &c.tr("linking-title"),
        "linking",
        false,
        html! {
            section.card.narrow {
                h1 { (c.tr("linking-title")) }
                (error_box(error))
                @match (link, error) {
                    (_, Some(_)) => {
                        a.button href="/" { (c.tr("linking-again")) }
                    }
                    (Some((link, code)), None) => {
                        p { (c.tr("linking-intro")) }
                        p { (c.tr("linking-code")) " " strong.code #linking-code { (code) } }
                        div #device-link {
                            (qr_svg(c, link, "qr-device"))
                            label for="linking-text" { (c.tr("linking-text")) }
                            textarea #linking-text readonly rows="5" { (link) }
                        }
                        p.muted role="status" { (c.tr("linking-waiting")) }
                    }
                    (None, None) => {
                        p.muted role="status" { (c.tr("linking-preparing")) }
                    }
                }
            }
        },
    )
}

/// After Quit: the app's process has stopped.
pub fn stopped(c: &Ctx<'_>) -> Markup {
    layout(
        c,
        &c.tr("stopped-title"),
        "stopped",
        false,
        html! {
            section.card.narrow {
                h1 { (c.tr("stopped-title")) }
                p.muted { (c.tr("stopped-intro")) }
            }
        },
    )
}

pub fn unlock(c: &Ctx<'_>, error: Option<&str>) -> Markup {
    layout(
        c,
        &c.tr("unlock-title"),
        "unlock",
        false,
        html! {
            section.card.narrow {
                (lang_switch(c))
                h1 { (c.tr("unlock-title")) }
                p.muted { (c.tr("unlock-intro")) }
                (error_box(error))
                form method="post" action="/unlock" {
                    (c.csrf_field())
                    label for="passphrase" { (c.tr("field-passphrase")) }
                    input #passphrase name="passphrase" type="password" required autofocus autocomplete="current-password";
                    button type="submit" { (c.tr("unlock-submit")) }
                }
            }
        },
    )
}

// ---- chats ----------------------------------------------------------------------------------

/// Milliseconds since the epoch as an ISO 8601 UTC timestamp (the script shows it in local
/// time); the text is the UTC time, for pages read without the script.
fn iso(ms: u64) -> (String, String) {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}"),
    )
}

/// A sentence of the page's language with a time in it (`arg`), the time shown in the
/// reader's zone and language by the script (UTC without it).
fn with_time(c: &Ctx<'_>, key: &str, arg: &str, ms: u64) -> Markup {
    const MARK: &str = "\u{E000}";
    let text = c.tra(key, &[(arg, MARK.into())]);
    let text = text.replace(['\u{2068}', '\u{2069}'], "");
    match text.split_once(MARK) {
        Some((before, after)) => html! { (before) (time(ms)) (after) },
        None => html! { (text) },
    }
}

pub(super) fn time(ms: u64) -> Markup {
    let (iso, text) = iso(ms);
    html! { time datetime=(iso) { (text) } }
}

pub fn chat_list(
    c: &Ctx<'_>,
    convs: &[ConversationView],
    invitations: &[InvitationView],
    current: Option<ConversationId>,
) -> Markup {
    html! {
        div #chat-list data-unread-total=(convs.iter().filter(|v| v.muted_until.is_none()).map(|v| v.unread).sum::<u64>()) {
            @if !invitations.is_empty() {
                section.invitations aria-labelledby="inv-title" {
                    h2 #inv-title { (c.tr("invitations-title")) }
                    ul {
                        @for i in invitations {
                            li.invitation data-invitation=(i.id) {
                                p { (c.tra("invitation-from", &[("members", (i.members as i64).into()), ("from", i.from.clone().into())])) }
                                p.muted { (c.tra("invitation-relay", &[("relay", i.relay.clone().into())])) }
                                @if !i.relay_known { p.warning { (c.tr("invitation-relay-unknown")) } }
                                @if let Some(w) = i.warning.as_ref().filter(|w| !matches!(w, samizdat_core::Notice::UnknownRelay { .. })) { p.warning { (c.notice(w)) } }
                                div.row {
                                    form method="post" action={ "/invitations/" (i.id) "/accept" } {
                                        (c.csrf_field())
                                        button type="submit" { (c.tr("invitation-accept")) }
                                    }
                                    form method="post" action={ "/invitations/" (i.id) "/decline" } {
                                        (c.csrf_field())
                                        button.secondary type="submit" { (c.tr("invitation-decline")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form.search method="get" action="/search" role="search" {
                label.visually-hidden for="search-q" { (c.tr("search-label")) }
                input #search-q type="search" name="q" maxlength="512" placeholder=(c.tr("search-label"));
            }
            @if !convs.iter().any(|v| v.kind == ConvKind::SelfGroup) {
                form.saved-open method="post" action="/saved" {
                    (c.csrf_field())
                    button.link type="submit" { "🔖 " (c.tr("saved-messages")) }
                }
            }
            h2.visually-hidden { (c.tr("chats-title")) }
            @if convs.is_empty() {
                p.empty { (c.tr("chats-empty")) }
            } @else {
                ul.chats {
                    @for conv in convs.iter().filter(|v| !v.archived) { (chat_item(c, conv, current)) }
                }
                @let archived: Vec<&ConversationView> = convs.iter().filter(|v| v.archived).collect();
                @if !archived.is_empty() {
                    details.archived open[archived.iter().any(|v| Some(v.id) == current)] {
                        summary { (c.tra("chats-archived", &[("count", (archived.len() as i64).into())])) }
                        ul.chats {
                            @for conv in archived { (chat_item(c, conv, current)) }
                        }
                    }
                }
            }
        }
    }
}

/// How a conversation is called on screen: its name, or for the saved messages their name in
/// the reader's language.
fn conv_title(c: &Ctx<'_>, conv: &ConversationView) -> String {
    match conv.kind {
        ConvKind::SelfGroup => format!("🔖 {}", c.tr("saved-messages")),
        _ => conv.shown_as.clone(),
    }
}

fn chat_item(c: &Ctx<'_>, conv: &ConversationView, current: Option<ConversationId>) -> Markup {
    html! {
        li.chat-item.active[Some(conv.id) == current].inactive[!conv.active] data-muted=[conv.muted_until.map(|_| "1")] {
            a href={ "/c/" (conv.id) } data-conversation=(conv.id) {
                span.name {
                    (person_dot(conv.hue)) (conv_title(c, conv))
                    @if conv.pinned { " " span.mark title=(c.tr("mark-pinned")) aria-label=(c.tr("mark-pinned")) { "📌" } }
                    @if conv.muted_until.is_some() { " " span.mark title=(c.tr("mark-muted")) aria-label=(c.tr("mark-muted")) { "🔕" } }
                }
                span.kind { (c.tr(match conv.kind { ConvKind::Direct => "kind-direct", ConvKind::Group => "kind-group", ConvKind::SelfGroup => "kind-saved" })) }
                @if let Some(last) = &conv.last {
                    span.when { (time(last.sent_at)) }
                    span.preview {
                        @if last.outgoing { (c.tr("chat-you")) ": " } @else if conv.kind == ConvKind::Group { (last.from) ": " }
                        (last.text)
                    }
                } @else {
                    span.preview.muted { (c.tr("chat-no-messages")) }
                }
                @if conv.unread > 0 {
                    span.unread aria-label=(c.tra("chat-unread", &[("count", (conv.unread as i64).into())])) { (conv.unread) }
                }
            }
        }
    }
}

pub fn chats(c: &Ctx<'_>, convs: &[ConversationView], invitations: &[InvitationView]) -> Markup {
    layout(
        c,
        &c.tr("chats-title"),
        "chats",
        true,
        html! {
            div.split {
                aside.list { (chat_list(c, convs, invitations, None)) }
                section.pane.placeholder {
                    p.muted { (c.tr(if convs.is_empty() { "chats-empty" } else { "chats-pick" })) }
                }
            }
        },
    )
}

/// A person's colour, from their key (`text::hue`): a small dot before their name, so two
/// people whose names look alike also look different (app review, impersonation).
fn person_dot(hue: Option<u8>) -> Markup {
    html! {
        @if let Some(h) = hue {
            span class={ "dot hue-" (h) } aria-hidden="true" {}
        }
    }
}

/// The reactions offered in a message's menu (any emoji can be sent from the CLI and the API).
const QUICK_REACTIONS: [&str; 6] = ["👍", "❤️", "😂", "😮", "😢", "🙏"];

pub fn message(c: &Ctx<'_>, conv: ConversationId, m: &MessageView) -> Markup {
    if let Some(e) = &m.system {
        return html! {
            li.msg.system #{ "m-" (m.id) } data-id=(m.id) data-seq=[m.seq] {
                span.line { (c.line(e)) } " " (time(m.sent_at))
            }
        };
    }
    let gone = m.deleted || m.unsupported;
    html! {
        li.msg.out[m.outgoing].in[!m.outgoing].deleted[m.deleted] #{ "m-" (m.id) } data-id=(m.id) data-seq=[m.seq] data-expires=[m.expires_at] {
            div.meta {
                span.from { @if m.outgoing { (c.tr("chat-you")) } @else { (person_dot(m.hue)) (m.from) } }
                " "
                (time(m.sent_at))
                @if m.forwarded { " " span.forwarded { (c.tr("msg-forwarded")) } }
                @if m.edited { " " span.edited { (c.tr("msg-edited")) } }
            }
            @if let Some(q) = &m.reply_to {
                @if q.found {
                    a.quote href={ "#m-" (q.id) } {
                        span.quote-from { @if q.mine { (c.tr("chat-you")) } @else { (q.from.as_deref().unwrap_or_default()) } }
                        span.quote-text {
                            @if let Some(f) = &q.file { "📎 " (f) " " }
                            (q.text.as_deref().unwrap_or_default())
                        }
                    }
                } @else {
                    div.quote.missing { (c.tr("msg-quote-missing")) }
                }
            }
            @if m.deleted {
                div.text.muted { (c.tr("msg-deleted")) }
            } @else if m.unsupported {
                div.text.muted { (c.tr("msg-unsupported")) }
            }
            @if let Some(a) = &m.attachment { (file_markup(c, a, &format!("/m/{}", m.id))) }
            @if !gone && !m.text.is_empty() { div.text { (linked_text(&m.text)) } }
            @if !m.reactions.is_empty() {
                div.reactions {
                    @for r in &m.reactions {
                        form.reaction method="post" action={ "/m/" (m.id) "/react" } {
                            (c.csrf_field())
                            input type="hidden" name="emoji" value=(r.emoji);
                            @if r.mine { input type="hidden" name="remove" value="1"; }
                            @let who = if r.mine { std::iter::once(c.tr("chat-you")).chain(r.who.iter().cloned()).collect::<Vec<_>>().join(", ") } else { r.who.join(", ") };
                            button.chip.mine[r.mine] type="submit" title=(who) aria-pressed=(if r.mine { "true" } else { "false" }) {
                                (r.emoji) " " (r.count)
                            }
                        }
                    }
                }
            }
            @if m.outgoing {
                div.status {
                    @if let Some(reason) = &m.failed {
                        span.failed { (c.tra("msg-failed", &[("reason", c.problem(reason).into())])) }
                        form.retry method="post" action={ "/m/" (m.id) "/retry" } {
                            (c.csrf_field())
                            button.link type="submit" { (c.tr("msg-retry")) }
                        }
                    } @else if m.delivered {
                        (message_state(c, m))
                    } @else {
                        span.queued { "… " (c.tr("msg-queued")) }
                    }
                }
            }
            @if !m.deleted && m.failed.is_none() {
                (message_menu(c, conv, m))
            }
        }
    }
}

/// The size a photo is shown at in the chat: its own proportions within 320×320 CSS pixels
/// (set on the `img` so the chat does not jump as thumbnails load).
fn shown_size(w: u32, h: u32) -> (u32, u32) {
    const SIDE: u32 = 320;
    if w == 0 || h == 0 {
        return (SIDE, SIDE * 3 / 4);
    }
    let scale = f64::from(SIDE) / f64::from(w.max(h));
    if scale >= 1.0 {
        return (w, h);
    }
    (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    )
}

/// A length as minutes and seconds (1:05).
fn duration_label(ms: u64) -> String {
    let s = ms.saturating_add(500) / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

/// Where one of our messages is, once the relay has it: sent (✓), delivered to a device of
/// every other member (✓✓), read by them all (✓✓, in colour); in a group, how many so far.
fn message_state(c: &Ctx<'_>, m: &MessageView) -> Markup {
    use samizdat_core::MessageState as S;
    let (class, marks, label) = match m.state {
        Some(S::Read) => ("read", "✓✓", c.tr("msg-read")),
        Some(S::Delivered) => ("delivered", "✓✓", c.tr("msg-delivered")),
        _ => ("sent", "✓", c.tr("msg-sent")),
    };
    let partial = m.receipts.as_ref().and_then(|r| match m.state {
        Some(S::Read) => None,
        _ if r.read > 0 => Some(c.tra(
            "msg-read-count",
            &[("count", r.read.into()), ("of", r.of.into())],
        )),
        Some(S::Delivered) => None,
        _ if r.delivered > 0 => Some(c.tra(
            "msg-delivered-count",
            &[("count", r.delivered.into()), ("of", r.of.into())],
        )),
        _ => None,
    });
    let label = partial.unwrap_or(label);
    html! {
        span.acked.(class) title=(label) { (marks) " " (label) }
    }
}

/// A piece of a message's text: words, or a web link with the host it really goes to.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Link {
        url: String,
        shown: &'a str,
        host: String,
    },
}

/// Split `text` at its web links (`http://` and `https://` only; a link ends at white space,
/// and trailing punctuation is not part of it). The host is the parsed one, in ASCII: a
/// look-alike in another script (`аpple.com` with a Cyrillic а) shows as `xn--…`.
fn split_links(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    // `get`: a byte count into text is not always a character boundary.
    let starts = |tail: &str, scheme: &str| {
        tail.get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
    };
    while let Some(start) = rest
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| starts(&rest[i..], "https://") || starts(&rest[i..], "http://"))
    {
        let tail = &rest[start..];
        let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let shown = tail[..end].trim_end_matches(|c: char| ".,;:!?)]}»\"'".contains(c));
        let link = url::Url::parse(shown).ok().and_then(|u| {
            let host = u.host_str()?.to_string();
            matches!(u.scheme(), "http" | "https").then(|| (u.to_string(), host))
        });
        match link {
            Some((url, host)) => {
                if start > 0 {
                    out.push(Piece::Text(&rest[..start]));
                }
                out.push(Piece::Link { url, shown, host });
                rest = &tail[shown.len()..];
            }
            None => {
                // Past the scheme (ASCII, so a character boundary).
                let skip = start + if starts(tail, "https://") { 8 } else { 7 };
                out.push(Piece::Text(&rest[..skip]));
                rest = &rest[skip..];
            }
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

/// A message's text with its web links clickable: opened in a new tab with no referrer and
/// no opener, each followed by the host it really goes to.
fn linked_text(text: &str) -> Markup {
    html! {
        @for piece in split_links(text) {
            @match piece {
                Piece::Text(t) => (t),
                Piece::Link { url, shown, host } => {
                    a.link href=(url) target="_blank" rel="noopener noreferrer nofollow" { (shown) }
                    " " span.host { "(" (host) ")" }
                }
            }
        }
    }
}

/// A message's own menu: a native disclosure, so it opens with the mouse, Enter or Space, and
/// every action in it is a form that works without the script.
fn message_menu(c: &Ctx<'_>, conv: ConversationId, m: &MessageView) -> Markup {
    html! {
        details.msg-menu {
            summary aria-label=(c.tr("msg-menu")) title=(c.tr("msg-menu")) { "⋯" }
            div.menu-body role="group" aria-label=(c.tr("msg-menu")) {
                @if !m.unsupported {
                    a.menu-item.reply-link href={ "/c/" (conv) "?reply=" (m.id) "#composer" } data-reply=(m.id) { (c.tr("msg-reply")) }
                    div.quick-reactions role="group" aria-label=(c.tr("msg-react")) {
                        @for e in QUICK_REACTIONS {
                            form method="post" action={ "/m/" (m.id) "/react" } {
                                (c.csrf_field())
                                input type="hidden" name="emoji" value=(e);
                                button.emoji type="submit" aria-label=(c.tra("msg-react-with", &[("emoji", e.into())])) { (e) }
                            }
                        }
                    }
                    a.menu-item href={ "/m/" (m.id) "/forward?from=" (conv) } { (c.tr("msg-forward")) }
                }
                @if m.outgoing && !m.unsupported && m.attachment.is_none() {
                    form.edit-form method="post" action={ "/m/" (m.id) "/edit" } {
                        (c.csrf_field())
                        label for={ "edit-" (m.id) } { (c.tr("msg-edit")) }
                        textarea id={ "edit-" (m.id) } name="text" rows="2" required maxlength="16384" autocomplete="off" { (m.text) }
                        button type="submit" { (c.tr("msg-edit-save")) }
                    }
                }
                form method="post" action={ "/m/" (m.id) "/delete" } {
                    (c.csrf_field())
                    button.link.danger type="submit" { (c.tr("msg-delete-me")) }
                }
                @if m.outgoing {
                    form method="post" action={ "/m/" (m.id) "/delete" } {
                        (c.csrf_field())
                        input type="hidden" name="for_everyone" value="1";
                        button.link.danger type="submit" { (c.tr("msg-delete-all")) }
                    }
                }
            }
        }
    }
}

/// Search results: every hit links to its message in its chat.
pub fn search(
    c: &Ctx<'_>,
    query: &str,
    hits: &[samizdat_core::SearchHit],
    error: Option<&str>,
) -> Markup {
    layout(
        c,
        &c.tr("search-title"),
        "search",
        true,
        html! {
            section.card {
                h1 { (c.tr("search-title")) }
                form.search method="get" action="/search" role="search" {
                    label.visually-hidden for="search-page-q" { (c.tr("search-label")) }
                    input #search-page-q type="search" name="q" value=(query) maxlength="512" placeholder=(c.tr("search-label"));
                    " "
                    button type="submit" { (c.tr("search-go")) }
                }
                (error_box(error))
                @if error.is_none() && !query.trim().is_empty() {
                    p.muted { (c.tra("search-count", &[("count", (hits.len() as i64).into())])) }
                }
                ol.hits {
                    @for h in hits {
                        li.hit {
                            a href={ "/c/" (h.conversation_id) "?around=" (h.id) "#m-" (h.id) } {
                                span.name { @if h.conversation.is_empty() { "🔖 " (c.tr("saved-messages")) } @else { (h.conversation) } }
                                " · "
                                span.from { @if h.outgoing { (c.tr("chat-you")) } @else { (h.from) } }
                                " "
                                (time(h.sent_at))
                                span.preview { (h.text) }
                            }
                        }
                    }
                }
                a href="/" { (c.tr("back")) }
            }
        },
    )
}

/// Rename a group (for everyone), or what you call a contact (a 1:1 chat).
fn rename_form(c: &Ctx<'_>, conv: &ConversationView, title: &str, label: &str) -> Markup {
    html! {
        h2 { (c.tr(title)) }
        form method="post" action={ "/c/" (conv.id) "/rename" } {
            (c.csrf_field())
            label.visually-hidden for="rename" { (c.tr(label)) }
            input #rename name="name" required maxlength="64" value=(conv.name);
            button type="submit" { (c.tr("group-rename-submit")) }
        }
    }
}

/// Pick where a message goes on to.
pub fn forward(c: &Ctx<'_>, m: &MessageView, convs: &[ConversationView]) -> Markup {
    layout(
        c,
        &c.tr("forward-title"),
        "forward",
        true,
        html! {
            section.card.narrow {
                h1 { (c.tr("forward-title")) }
                blockquote.forwarding {
                    @if let Some(a) = &m.attachment { p { "📎 " (a.name) } }
                    @if !m.text.is_empty() { p { (m.text) } }
                }
                form method="post" action={ "/m/" (m.id) "/forward" } {
                    (c.csrf_field())
                    fieldset {
                        legend { (c.tr("forward-to")) }
                        @for (i, conv) in convs.iter().filter(|v| v.active).enumerate() {
                            label.choice {
                                input type="radio" name="to" value=(conv.id) required checked[i == 0];
                                " " (person_dot(conv.hue)) (conv.shown_as)
                            }
                        }
                    }
                    button type="submit" { (c.tr("forward-send")) }
                }
                a href="/" { (c.tr("back")) }
            }
        },
    )
}

/// A long file name shortened in its middle, so its extension stays in sight
/// ("a very long report about the … 2026.pdf"); the whole name is the title.
fn short_name(name: &str) -> String {
    const HEAD: usize = 28;
    const TAIL: usize = 12;
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= HEAD + TAIL + 1 {
        return name.to_string();
    }
    let head: String = chars[..HEAD].iter().collect();
    let tail: String = chars[chars.len() - TAIL..].iter().collect();
    format!("{}…{}", head.trim_end(), tail)
}

/// A file size for people ("740 KB", "5,2 МБ").
fn size_label(c: &Ctx<'_>, bytes: u64) -> String {
    let (key, n) = match bytes {
        b if b < 1024 => ("size-bytes", b as f64),
        b if b < 1024 * 1024 => ("size-kb", b as f64 / 1024.0),
        b => ("size-mb", b as f64 / (1024.0 * 1024.0)),
    };
    let mut shown = if n >= 10.0 || key == "size-bytes" {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    };
    let separator = c.tr("decimal-separator");
    if separator != "." {
        shown = shown.replace('.', &separator);
    }
    c.tra(key, &[("n", shown.into())])
}

/// A timer's length in words ("1 day", "5 минут").
fn timer_label(c: &Ctx<'_>, secs: u64) -> String {
    match secs {
        0 => c.tr("timer-off"),
        300 => c.tr("timer-5m"),
        3600 => c.tr("timer-1h"),
        86_400 => c.tr("timer-1d"),
        604_800 => c.tr("timer-1w"),
        s => c.tra("timer-secs", &[("secs", (s as i64).into())]),
    }
}

/// The choices offered for the timer (seconds; 0: off).
const TIMERS: [u64; 5] = [0, 300, 3600, 86_400, 604_800];

pub fn messages(c: &Ctx<'_>, conv: ConversationId, ms: &[MessageView]) -> Markup {
    html! { @for m in ms { (message(c, conv, m)) } }
}

/// Messages per page when a chat opens or scrolls back.
pub const PAGE: usize = 50;

/// What a chat page shows.
pub struct ChatView<'a> {
    pub conv: &'a ConversationView,
    pub convs: &'a [ConversationView],
    pub invitations: &'a [InvitationView],
    pub messages: &'a [MessageView],
    pub draft: &'a str,
    /// The message being answered (`?reply=ID`).
    pub reply: Option<&'a MessageView>,
}

pub fn chat(c: &Ctx<'_>, v: &ChatView<'_>) -> Markup {
    let ChatView {
        conv,
        convs,
        invitations,
        messages: ms,
        draft,
        reply,
    } = *v;
    // Page titles carry no names: browser history outlives a wipe (app review 3).
    layout(
        c,
        &c.tr("chats-title"),
        "chat",
        true,
        html! {
            div.split.in-chat {
                aside.list { (chat_list(c, convs, invitations, Some(conv.id))) }
                section.pane.chat data-conversation=(conv.id) {
                    header.chat-head {
                        a.back href="/" aria-label=(c.tr("back")) { "←" }
                        h1 { (person_dot(conv.hue)) (conv_title(c, conv)) }
                        @if conv.timer_secs > 0 {
                            span.timer title=(c.tr("timer-title")) { (c.tra("chat-timer-on", &[("duration", timer_label(c, conv.timer_secs).into())])) }
                        }
                        @if conv.kind == ConvKind::Direct && conv.active && !conv.blocked {
                            span.call-buttons {
                                button.call-start type="button" hidden data-conversation=(conv.id) data-video="0" aria-label=(c.tr("call-voice")) title=(c.tr("call-voice")) { "📞" }
                                button.call-start type="button" hidden data-conversation=(conv.id) data-video="1" aria-label=(c.tr("call-video")) title=(c.tr("call-video")) { "🎥" }
                            }
                        }
                        // A group call: a mesh of at most four people, voice only.
                        @if conv.kind == ConvKind::Group && conv.active && (2..=samizdat_core::MAX_GROUP_CALL).contains(&conv.members) {
                            span.call-buttons {
                                button.call-start type="button" hidden data-conversation=(conv.id) data-video="0" data-group="1" aria-label=(c.tr("call-group")) title=(c.tr("call-group")) { "📞" }
                            }
                        }
                        @if conv.kind != ConvKind::SelfGroup {
                            a.info href={ "/c/" (conv.id) "/info" } { (c.tr("chat-info")) }
                        }
                    }
                    div #scroller .messages {
                        @if ms.len() >= PAGE {
                            button #older .link type="button" data-before=(ms.first().map(|m| m.id.to_string()).unwrap_or_default()) { (c.tr("chat-older")) }
                        }
                        ol #message-list aria-live="polite" { (messages(c, conv.id, ms)) }
                    }
                    @if conv.active && !conv.blocked {
                        form #composer method="post" action={ "/c/" (conv.id) "/send" } {
                            (c.csrf_field())
                            div #reply-bar .reply-bar hidden[reply.is_none()] {
                                span { (c.tr("chat-replying-to")) " " }
                                span #reply-from .quote-from { @if let Some(m) = reply { @if m.outgoing { (c.tr("chat-you")) } @else { (m.from) } } }
                                " "
                                span #reply-text .quote-text { @if let Some(m) = reply { (m.text.chars().take(200).collect::<String>()) } }
                                input #reply-to type="hidden" name="reply_to" value=[reply.map(|m| m.id)];
                                a #reply-cancel href={ "/c/" (conv.id) } { (c.tr("chat-reply-cancel")) }
                            }
                            label.visually-hidden for="text" { (c.tr("chat-placeholder")) }
                            textarea #text name="text" rows="2" required maxlength="60000" autocomplete="off" placeholder=(c.tr("chat-placeholder")) aria-describedby="composer-hint" data-draft={ "/c/" (conv.id) "/draft" } { (draft) }
                            button type="submit" { (c.tr("chat-send")) }
                            small #composer-hint { (c.tr("chat-composer-hint")) }
                        }
                        form #attach method="post" action={ "/c/" (conv.id) "/file" } enctype="multipart/form-data" {
                            (c.csrf_field())
                            label for="attach-file" { (c.tr("chat-attach")) }
                            input #attach-file type="file" name="file" required;
                            label.visually-hidden for="attach-text" { (c.tr("chat-attach-caption")) }
                            input #attach-text type="text" name="text" maxlength="4000" placeholder=(c.tr("chat-attach-caption"));
                            button type="submit" { (c.tr("chat-attach-send")) }
                        }
                        // Voice messages: recorded in the browser (Opus), shown only where the
                        // page's script finds a microphone API.
                        div #voice .voice-rec hidden data-action={ "/c/" (conv.id) "/file" } data-denied=(c.tr("voice-denied")) {
                            button #voice-start type="button" aria-label=(c.tr("voice-record")) title=(c.tr("voice-record")) { "🎤" }
                            span #voice-live hidden role="status" {
                                span.rec-dot aria-hidden="true" { "●" } " " (c.tr("voice-recording")) " "
                                span #voice-time { "0:00" }
                                " "
                                button #voice-send type="button" { (c.tr("voice-stop")) }
                                " "
                                button #voice-cancel .link type="button" { (c.tr("voice-cancel")) }
                            }
                            span #voice-error .error hidden role="alert" {}
                        }
                    } @else if !conv.active {
                        p.warning { (c.tra("chat-inactive", &[("status", c.status(conv.status.as_ref()).into())])) }
                    }
                    @if conv.blocked {
                        div.warning.blocked-note {
                            (c.tra("chat-blocked", &[("name", conv.shown_as.clone().into())]))
                            " "
                            form.inline method="post" action={ "/c/" (conv.id) "/block" } {
                                (c.csrf_field())
                                button.link type="submit" { (c.tra("block-off", &[("name", conv.shown_as.clone().into())])) }
                            }
                        }
                    }
                }
            }
        },
    )
}

// ---- contacts and invites -------------------------------------------------------------------

/// A QR code of `data`, with a text alternative (`label`, a message key) for screen readers
/// and for anyone who cannot scan: the same data is always shown as text beside it.
pub fn qr_svg(c: &Ctx<'_>, data: &str, label: &str) -> Markup {
    match qrcode::QrCode::new(data.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(240, 240)
                .dark_color(qrcode::render::svg::Color("#000000"))
                .light_color(qrcode::render::svg::Color("#ffffff"))
                .build();
            // The SVG is generated by qrcode from our own data: only rects and a path.
            let svg = svg
                .split_once("<svg")
                .map(|(_, rest)| {
                    let label = maud::html! { (c.tr(label)) }.into_string();
                    format!("<svg role=\"img\" aria-label=\"{label}\"{rest}")
                })
                .unwrap_or_default();
            html! { div.qr { (PreEscaped(svg)) } }
        }
        Err(_) => html! {},
    }
}

pub struct Invite {
    pub link: String,
    pub expires_at: u64,
    pub reusable: bool,
}

pub fn new_contact(
    c: &Ctx<'_>,
    invite: Option<&Invite>,
    error: Option<&str>,
    link: &str,
    name: &str,
) -> Markup {
    layout(
        c,
        &c.tr("new-contact-title"),
        "new-contact",
        true,
        html! {
            section.card {
                h1 { (c.tr("new-contact-title")) }
                (error_box(error))
                @if let Some(i) = invite {
                    h2 { (c.tr("invite-link-title")) }
                    p { (with_time(c, "invite-link-help", "when", i.expires_at * 1000)) " "
                        (c.tr(if i.reusable { "invite-multi" } else { "invite-single" })) }
                    div.copy-row {
                        input #invite-link readonly value=(i.link) aria-label=(c.tr("invite-link-title"));
                        button #copy type="button" data-copy="invite-link" data-done=(c.tr("copied")) { (c.tr("copy")) }
                    }
                    (qr_svg(c, &i.link, "qr-invite"))
                }
                h2 { (c.tr("invite-create-title")) }
                p.muted { (c.tr("invite-create-help")) }
                form method="post" action="/invite" {
                    (c.csrf_field())
                    label.check { input type="checkbox" name="reusable" value="1"; " " (c.tr("invite-reusable")) }
                    label for="hours" { (c.tr("invite-expiry")) }
                    select #hours name="hours" {
                        option value="1" { (c.tr("expiry-1h")) }
                        option value="24" { (c.tr("expiry-24h")) }
                        option value="72" selected { (c.tr("expiry-72h")) }
                        option value="168" { (c.tr("expiry-168h")) }
                    }
                    button type="submit" { (c.tr("invite-create")) }
                }
                h2 { (c.tr("accept-title")) }
                form method="post" action="/accept" {
                    (c.csrf_field())
                    label for="link" { (c.tr("field-invite-link")) }
                    textarea #link name="link" rows="3" required autocomplete="off" { (link) }
                    label for="alias" { (c.tr("field-contact-name")) }
                    input #alias name="name" required maxlength="64" value=(name);
                    button type="submit" { (c.tr("accept-submit")) }
                }
            }
        },
    )
}

/// What was typed into the new-group form, kept when it comes back with an error.
#[derive(Default)]
pub struct GroupDraft<'a> {
    pub name: &'a str,
    pub members: &'a [String],
}

pub fn new_group(
    c: &Ctx<'_>,
    contacts: &[ContactView],
    error: Option<&str>,
    typed: &GroupDraft<'_>,
) -> Markup {
    layout(
        c,
        &c.tr("group-new-title"),
        "new-group",
        true,
        html! {
            section.card {
                h1 { (c.tr("group-new-title")) }
                (error_box(error))
                form method="post" action="/groups" {
                    (c.csrf_field())
                    label for="group" { (c.tr("field-group-name")) }
                    input #group name="name" required maxlength="64" value=(typed.name) autofocus[error.is_some()];
                    fieldset {
                        legend { (c.tr("group-pick-members")) }
                        @if contacts.is_empty() { p.muted { (c.tr("group-no-contacts")) } }
                        @for k in contacts {
                            @let ticked = typed.members.iter().any(|m| *m == k.id.to_string());
                            label.check { input type="checkbox" name="member" value=(k.id) checked[ticked]; " " (person_dot(Some(k.hue))) (k.shown_as) }
                        }
                    }
                    button type="submit" { (c.tr("group-create")) }
                }
            }
        },
    )
}

pub struct Info<'a> {
    pub conv: &'a ConversationView,
    pub members: &'a [MemberView],
    pub contacts: &'a [ContactView],
    pub waiting: Option<String>,
}

pub fn info(c: &Ctx<'_>, i: &Info<'_>, error: Option<&str>) -> Markup {
    let conv = i.conv;
    let group = conv.kind == ConvKind::Group;
    let contact_of = |m: &MemberView| i.contacts.iter().find(|k| k.fingerprint == m.fingerprint);
    let addable: Vec<&ContactView> = i
        .contacts
        .iter()
        .filter(|k| !i.members.iter().any(|m| m.fingerprint == k.fingerprint))
        .collect();
    layout(
        c,
        &c.tr("chats-title"),
        "info",
        true,
        html! {
            section.card {
                a.back href={ "/c/" (conv.id) } { "← " (conv.shown_as) }
                h1 { (c.tr("info-title")) }
                p.muted { (c.tra("chat-members", &[("count", (i.members.len() as i64).into())])) }
                (error_box(error))
                @if let Some(w) = &i.waiting { p.warning { (c.tra("group-added-waiting", &[("names", w.clone().into())])) } }
                ul.members {
                    @for m in i.members {
                        li {
                            span.name { @if m.me { (c.tr("chat-you")) } @else { (person_dot(Some(m.hue))) (m.name) } }
                            @if !m.joined && group { " " span.muted { (c.tr("member-not-joined")) } }
                            @if let Some(k) = contact_of(m) {
                                @if k.verified { " " span.badge { "✓ " (c.tr("member-verified")) } }
                                " " a href={ "/contacts/" (k.id) "/verify" } { (c.tr("member-verify")) }
                                @if group && conv.active {
                                    form.inline method="post" action={ "/c/" (conv.id) "/remove" } {
                                        (c.csrf_field())
                                        input type="hidden" name="contact" value=(k.id);
                                        button.link.danger type="submit" { (c.tr("member-remove")) }
                                    }
                                }
                            }
                            " " code.fp { (m.fingerprint) }
                        }
                    }
                }
                @if conv.kind == ConvKind::Direct {
                    (rename_form(c, conv, "contact-rename-title", "contact-rename-title"))
                }
                h2 { (c.tr("arrange-title")) }
                div.row.arrange {
                    form method="post" action={ "/c/" (conv.id) "/arrange" } {
                        (c.csrf_field())
                        input type="hidden" name="what" value="pin";
                        @if !conv.pinned { input type="hidden" name="on" value="1"; }
                        button.secondary type="submit" { (c.tr(if conv.pinned { "arrange-unpin" } else { "arrange-pin" })) }
                    }
                    form method="post" action={ "/c/" (conv.id) "/arrange" } {
                        (c.csrf_field())
                        input type="hidden" name="what" value="archive";
                        @if !conv.archived { input type="hidden" name="on" value="1"; }
                        button.secondary type="submit" { (c.tr(if conv.archived { "arrange-unarchive" } else { "arrange-archive" })) }
                    }
                    form method="post" action={ "/c/" (conv.id) "/arrange" } {
                        (c.csrf_field())
                        input type="hidden" name="what" value="mute";
                        label for="mute-for" { (c.tr("arrange-mute")) }
                        " "
                        select #mute-for name="seconds" {
                            option value="3600" { (c.tr("mute-1h")) }
                            option value="28800" { (c.tr("mute-8h")) }
                            option value="604800" { (c.tr("mute-1w")) }
                            option value="forever" selected { (c.tr("mute-forever")) }
                            @if conv.muted_until.is_some() { option value="0" { (c.tr("mute-off")) } }
                        }
                        " "
                        button.secondary type="submit" { (c.tr("arrange-save")) }
                    }
                }
                @if let Some(until) = conv.muted_until {
                    p.muted { (c.tr("muted-until")) " " @if until >= i64::MAX as u64 { (c.tr("mute-forever")) } @else { (time(until)) } }
                }
                @if conv.active {
                    h2 { (c.tr("timer-title")) }
                    p.muted { (c.tr("timer-help")) }
                    form method="post" action={ "/c/" (conv.id) "/timer" } {
                        (c.csrf_field())
                        label.visually-hidden for="timer" { (c.tr("timer-title")) }
                        select #timer name="seconds" {
                            @for secs in TIMERS {
                                option value=(secs) selected[conv.timer_secs == secs] { (timer_label(c, secs)) }
                            }
                            @if !TIMERS.contains(&conv.timer_secs) {
                                option value=(conv.timer_secs) selected { (timer_label(c, conv.timer_secs)) }
                            }
                        }
                        button type="submit" { (c.tr("timer-save")) }
                    }
                }
                @if group && conv.active {
                    h2 { (c.tr("group-add-title")) }
                    @if addable.is_empty() {
                        p.muted { (c.tr("group-add-none")) }
                    } @else {
                        form method="post" action={ "/c/" (conv.id) "/add" } {
                            (c.csrf_field())
                            @for k in &addable {
                                label.check { input type="checkbox" name="member" value=(k.id); " " (person_dot(Some(k.hue))) (k.shown_as) }
                            }
                            button type="submit" { (c.tr("group-add-submit")) }
                        }
                    }
                    (rename_form(c, conv, "group-rename-title", "field-group-name"))
                    h2 { (c.tr("group-leave-title")) }
                    p.muted { (c.tr("group-leave-help")) }
                    form method="post" action={ "/c/" (conv.id) "/leave" } {
                        (c.csrf_field())
                        button.danger type="submit" { (c.tr("group-leave")) }
                    }
                }
                @if conv.kind == ConvKind::Direct {
                    h2 #block { (c.tr(if conv.blocked { "block-off-title" } else { "block-title" })) }
                    p.muted { (c.tra(if conv.blocked { "block-off-help" } else { "block-help" }, &[("name", conv.shown_as.clone().into())])) }
                    form method="post" action={ "/c/" (conv.id) "/block" } {
                        (c.csrf_field())
                        @if !conv.blocked { input type="hidden" name="on" value="1"; }
                        button.danger[!conv.blocked].secondary[conv.blocked] type="submit" {
                            (c.tra(if conv.blocked { "block-off" } else { "block" }, &[("name", conv.shown_as.clone().into())]))
                        }
                    }
                }
                h2 #delete-chat { (c.tr("delete-chat-title")) }
                p.muted { (c.tr(if group { "delete-chat-help-group" } else { "delete-chat-help-direct" })) }
                form method="post" action={ "/c/" (conv.id) "/delete" } {
                    (c.csrf_field())
                    label.check {
                        input #delete-chat-confirm type="checkbox" name="confirm" value="1" required;
                        " " (c.tr("delete-chat-confirm"))
                    }
                    button.danger type="submit" { (c.tr("delete-chat")) }
                }
            }
        },
    )
}

pub fn verify(c: &Ctx<'_>, k: &ContactView, number: &str) -> Markup {
    let name = k.alias.clone();
    layout(
        c,
        &c.tr("verify-page-title"),
        "verify",
        true,
        html! {
            section.card.narrow {
                h1 { (c.tra("verify-title", &[("name", name.clone().into())])) }
                p.muted { (c.tra("verify-help", &[("name", name.clone().into())])) }
                p.safety-number #safety-number {
                    @for group in number.split_whitespace() { span { (group) } " " }
                }
                (qr_svg(c, number, "qr-safety"))
                @if k.verified {
                    p.badge { "✓ " (c.tra("verify-verified", &[("name", name.clone().into())])) }
                } @else {
                    p.muted { (c.tr("verify-not-verified")) }
                }
                form method="post" action={ "/contacts/" (k.id) "/verify" } {
                    (c.csrf_field())
                    input type="hidden" name="verified" value=(if k.verified { "0" } else { "1" });
                    button type="submit" { (c.tr(if k.verified { "verify-unmark" } else { "verify-mark" })) }
                }
            }
        },
    )
}

pub struct Me {
    pub name: String,
    pub relay: String,
    pub fingerprint: String,
    /// The proxy with its password hidden, and whether connections are isolated.
    pub proxy: Option<String>,
    pub isolate: bool,
    /// Read receipts sent and shown.
    pub read_receipts: bool,
}

/// The devices part of the settings page: the list, and a new device's link waiting for
/// the person's confirmation (its name and code shown).
pub struct Devices<'a> {
    pub list: &'a [samizdat_core::DeviceView],
    pub confirm: Option<(&'a str, &'a samizdat_core::LinkPreview)>,
}

pub fn settings(
    c: &Ctx<'_>,
    chosen: Option<Lang>,
    me: &Me,
    devices: &Devices<'_>,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    layout(
        c,
        &c.tr("settings-title"),
        "settings",
        true,
        html! {
            section.card.narrow {
                h1 { (c.tr("settings-title")) }
                form method="post" action="/settings/lang" {
                    (c.csrf_field())
                    label for="lang" { (c.tr("settings-language")) }
                    select #lang name="lang" {
                        option value="auto" selected[chosen.is_none()] { (c.tr("lang-auto")) }
                        @for lang in Lang::all() {
                            option value=(lang.code()) lang=(lang.code()) selected[chosen == Some(lang)] { (c.app.i18n.t(lang, "language-name")) }
                        }
                    }
                    button type="submit" { (c.tr("settings-save")) }
                }
                h2 #notifications { (c.tr("notify-title")) }
                p.muted { (c.tr("notify-help")) }
                form method="post" action="/settings/notifications" {
                    (c.csrf_field())
                    label for="notify-level" { (c.tr("notify-shows")) }
                    @let level = c.app.notify_level();
                    select #notify-level name="level" {
                        @for (v, key) in [(samizdat_core::NotifyLevel::Off, "off"), (samizdat_core::NotifyLevel::Private, "private"), (samizdat_core::NotifyLevel::Sender, "sender"), (samizdat_core::NotifyLevel::SenderText, "sender_text")] {
                            option value=(key) selected[level == v] { (c.tr(&format!("notify-{}", key.replace('_', "-")))) }
                        }
                    }
                    button type="submit" { (c.tr("settings-save")) }
                }
                p #notify-permission hidden {
                    button #notify-allow type="button" { (c.tr("notify-allow")) }
                    " "
                    span #notify-denied .muted hidden { (c.tr("notify-denied")) }
                }
                h2 #receipts { (c.tr("receipts-title")) }
                p.muted { (c.tr("receipts-help")) }
                form method="post" action="/settings/read-receipts" {
                    (c.csrf_field())
                    label.check {
                        input type="checkbox" name="on" value="1" checked[me.read_receipts];
                        " " (c.tr("receipts-read"))
                    }
                    button type="submit" { (c.tr("settings-save")) }
                }
                h2 { (c.tr("settings-profile")) }
                dl {
                    dt { (c.tr("settings-name")) } dd { (me.name) }
                    dt { (c.tr("settings-relay")) } dd { (me.relay) }
                    dt { (c.tr("settings-fingerprint")) } dd { code { (me.fingerprint) } }
                }
                (error_box(error))
                @if let Some(n) = notice { p.badge role="status" { (n) } }
                h2 #devices { (c.tr("settings-devices-title")) }
                p.muted { (c.tr("settings-devices-help")) }
                ul #device-list {
                    @for d in devices.list {
                        li.device {
                            strong { @if d.name.is_empty() { (c.tr("settings-devices-first")) } @else { (d.name) } } " "
                            code { (d.id.to_string().get(..16).unwrap_or_default()) }
                            @if d.this { " · " span.badge { (c.tr("settings-devices-this")) } }
                            @if d.revoked { " · " span.muted { (c.tr("settings-devices-revoked")) } }
                            @if !d.this && !d.revoked {
                                form.inline method="post" action="/settings/devices/revoke" {
                                    (c.csrf_field())
                                    input type="hidden" name="id" value=(d.id);
                                    button.danger type="submit" { (c.tr("settings-devices-revoke")) }
                                }
                            }
                        }
                    }
                }
                @if let Some((link, preview)) = devices.confirm {
                    // Nothing is signed until the person confirms here (security review 3, H1).
                    div #device-confirm role="alertdialog" aria-labelledby="device-confirm-title" {
                        h3 #device-confirm-title { (c.tra("settings-devices-confirm", &[("name", preview.name.clone().into())])) }
                        p { (c.tr("settings-devices-confirm-code")) " " strong.code #device-code { (preview.code) } }
                        p.muted { (c.tr("settings-devices-confirm-help")) }
                        div.row {
                            form method="post" action="/settings/devices/add" {
                                (c.csrf_field())
                                input type="hidden" name="link" value=(link);
                                button type="submit" { (c.tr("settings-devices-confirm-yes")) }
                            }
                            a.button.secondary href="/settings#devices" { (c.tr("settings-devices-confirm-no")) }
                        }
                    }
                } @else {
                    form #device-add method="post" action="/settings/devices/preview" {
                        (c.csrf_field())
                        label for="device-link-input" { (c.tr("settings-devices-add-label")) }
                        textarea #device-link-input name="link" rows="3" required autocomplete="off" spellcheck="false" {}
                        small { (c.tr("settings-devices-add-help")) }
                        button type="submit" { (c.tr("settings-devices-add")) }
                    }
                }
                h2 { (c.tr("settings-proxy-title")) }
                p.muted { (c.tr("settings-proxy-help")) }
                p #proxy-now {
                    @match &me.proxy {
                        Some(p) => { (c.tra("settings-proxy-now", &[("proxy", p.clone().into())])) @if me.isolate { " · " (c.tr("settings-proxy-isolated")) } }
                        None => { (c.tr("settings-proxy-none")) }
                    }
                }
                form method="post" action="/settings/proxy" {
                    (c.csrf_field())
                    label for="proxy" { (c.tr("settings-proxy-field")) }
                    input #proxy name="proxy" type="text" autocomplete="off" spellcheck="false" placeholder="socks5h://127.0.0.1:9050";
                    label.check { input #isolate type="checkbox" name="isolate" value="1" checked[me.isolate]; " " (c.tr("settings-proxy-isolate")) }
                    button type="submit" { (c.tr("settings-save")) }
                }
                h2 { (c.tr("settings-session-title")) }
                p.muted { (c.tr("lock-intro")) }
                div.row {
                    form #lock method="post" action="/lock" {
                        (c.csrf_field())
                        button type="submit" { (c.tr("lock-button")) }
                    }
                    form #quit method="post" action="/quit" {
                        (c.csrf_field())
                        button.secondary type="submit" { (c.tr("quit-button")) }
                    }
                }
                h2 { (c.tr("settings-duress-title")) }
                p.muted { (c.tr("settings-duress-help")) }
                form method="post" action="/settings/duress" {
                    (c.csrf_field())
                    label for="duress" { (c.tr("field-duress")) }
                    input #duress name="duress" type="password" required minlength="8" autocomplete="off";
                    label for="duress2" { (c.tr("field-duress-again")) }
                    input #duress2 name="duress2" type="password" required minlength="8" autocomplete="off";
                    button type="submit" { (c.tr("settings-duress-submit")) }
                }
                h2 { (c.tr("settings-wipe-title")) }
                p.warning { (c.tr("settings-wipe-help")) }
                form method="post" action="/settings/wipe" {
                    (c.csrf_field())
                    label.check { input #wipe-confirm type="checkbox" name="confirm" value="1" required; " " (c.tr("settings-wipe-confirm")) }
                    button.danger type="submit" { (c.tr("settings-wipe-submit")) }
                }
            }
        },
    )
}

pub fn error_page(c: &Ctx<'_>, message: &str) -> Markup {
    layout(
        c,
        &c.tr("error-title"),
        "error",
        true,
        html! {
            section.card.narrow {
                h1 { (c.tr("error-title")) }
                p.error role="alert" { (message) }
                a href="/" { (c.tr("back")) }
            }
        },
    )
}

/// A message's or channel post's file: a photo's thumbnail (opened full size), a voice
/// message's player, then its name, size and a link to save it; `base` is where its `/file`
/// and `/thumb` are (`/m/{id}` or `/ch/{id}/p/{seq}`).
pub(super) fn file_markup(c: &Ctx<'_>, a: &samizdat_core::AttachmentView, base: &str) -> Markup {
    html! {
        @if a.thumbnail {
            @let (w, h) = shown_size(a.width, a.height);
            a.photo href={ (base) "/file?inline=1" } target="_blank" rel="noopener noreferrer" title=(c.tr("msg-photo-open")) {
                img src={ (base) "/thumb" } width=(w) height=(h) loading="lazy" decoding="async"
                    alt=(c.tra("msg-photo", &[("name", a.name.clone().into())]));
            }
        } @else if let Some(ms) = a.voice_ms {
            div.voice {
                audio controls preload="none" src={ (base) "/file?inline=1" } aria-label=(c.tra("msg-voice", &[("duration", duration_label(ms).into())])) {}
                span.duration.muted { (duration_label(ms)) }
            }
        }
        div.file {
            @if a.voice_ms.is_none() {
                span.file-name title=(a.name) { (short_name(&a.name)) }
                " "
            }
            span.file-size.muted { (size_label(c, a.size)) }
            " "
            a.file-save href={ (base) "/file" } download=(a.name) { (c.tr("msg-file-save")) }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_dates() {
        assert_eq!(super::iso(0).0, "1970-01-01T00:00:00Z");
        assert_eq!(super::iso(1_795_000_000_000).0, "2026-11-18T11:06:40Z");
        assert_eq!(super::iso(951_782_400_000).1, "2000-02-29 00:00");
    }

    use super::{Piece, short_name, split_links};

    #[test]
    fn long_file_names_keep_their_extension() {
        assert_eq!(short_name("отчёт.pdf"), "отчёт.pdf");
        let long = format!("{}.tar.gz", "очень длинное название архива ".repeat(3));
        let short = short_name(&long);
        assert!(short.ends_with("хива .tar.gz"), "{short}");
        assert!(short.chars().count() <= 41, "{short}");
        assert!(short.contains('…'));
    }

    #[test]
    fn links_are_split_out_with_their_real_host() {
        let p = split_links(
            "see https://пример.рф/путь, and HTTP://Example.com/a?b=1. javascript:alert(1) http://",
        );
        assert_eq!(p[0], Piece::Text("see "));
        match &p[1] {
            Piece::Link { shown, host, url } => {
                assert_eq!(*shown, "https://пример.рф/путь");
                assert_eq!(host, "xn--e1afmkfd.xn--p1ai");
                assert!(url.starts_with("https://xn--e1afmkfd.xn--p1ai/"), "{url}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p[2], Piece::Text(", and "));
        assert!(matches!(&p[3], Piece::Link { host, .. } if host == "example.com"));
        // Only web links; a bare scheme is text.
        let rest: String = p[4..]
            .iter()
            .map(|x| match x {
                Piece::Text(t) => t.to_string(),
                Piece::Link { shown, .. } => format!("<{shown}>"),
            })
            .collect();
        assert_eq!(rest, ". javascript:alert(1) http://");
        // Any text: never a slice inside a character.
        for t in [
            "у ёлки в пятницу?",
            "ёёёёhttp://ё",
            "ыhttps://",
            "http://ы ы",
        ] {
            let joined: String = split_links(t)
                .iter()
                .map(|x| match x {
                    Piece::Text(t) => t.to_string(),
                    Piece::Link { shown, .. } => shown.to_string(),
                })
                .collect();
            assert_eq!(joined, t);
        }
        // A Cyrillic look-alike shows its real host.
        let p = split_links("https://аpple.com");
        assert!(
            matches!(&p[0], Piece::Link { host, .. } if host.starts_with("xn--")),
            "{p:?}"
        );
    }
}
