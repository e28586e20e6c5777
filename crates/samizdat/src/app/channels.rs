//! Channels in the app (issue 34): the list with unread counts, creating and following, a
//! channel's posts (read as they are shown), posting for admins, the link with its QR code,
//! mirrors, leaving. Every decision is the service's; these pages only ask and show.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};
use samizdat_core::{ChannelId, ChannelPostView, ChannelView, ContactId, ContactView};
use samizdat_rpc::{self as rpc, Api, NoParams};

use super::pages::{self, Ctx, error_box, layout};
use super::web::{Posted, Signed, explain, fail, page, see};
use super::{App, CallError};

fn by_id(id: ChannelId) -> rpc::ChannelParams {
    rpc::ChannelParams {
        channel_id: Some(id),
        ..Default::default()
    }
}

/// `GET /channels`.
pub(super) async fn list(State(app): State<Arc<App>>, signed: Signed) -> Response {
    let r = signed.open(&app);
    list_page(&app, &r.ctx, None).await
}

async fn list_page(app: &App, c: &Ctx<'_>, error: Option<&str>) -> Response {
    match app.channels(NoParams {}).await.map_err(CallError::from) {
        Ok(list) => page(list_markup(c, &list, error)),
        Err(e) => fail(c, &e),
    }
}

fn list_markup(c: &Ctx<'_>, list: &[ChannelView], error: Option<&str>) -> Markup {
    layout(
        c,
        &c.tr("channels-title"),
        "channels",
        true,
        html! {
            section.card {
                h1 { (c.tr("channels-title")) }
                (error_box(error))
                @if list.is_empty() { p.muted { (c.tr("channels-none")) } }
                ul.channels {
                    @for ch in list {
                        li {
                            a href=(format!("/ch/{}", ch.id)) {
                                strong.name { (ch.name) }
                                @if ch.admin { " " span.badge { (c.tr("channel-admin")) } }
                            }
                            " "
                            span.muted {
                                (c.tra("channel-counts", &[("posts", (ch.posts as i64).into()), ("unread", (ch.unread as i64).into())]))
                            }
                            @if ch.unread > 0 { " " span.unread aria-hidden="true" { (ch.unread) } }
                        }
                    }
                }
            }
            section.card {
                h2 { (c.tr("channel-follow-title")) }
                form method="post" action="/channels/follow" {
                    (c.csrf_field())
                    label for="channel-link" { (c.tr("field-channel-link")) }
                    input #channel-link name="link" required maxlength="4000" autocomplete="off";
                    button type="submit" { (c.tr("channel-follow")) }
                }
            }
            section.card {
                h2 { (c.tr("channel-create-title")) }
                form method="post" action="/channels" {
                    (c.csrf_field())
                    label for="channel-name" { (c.tr("field-channel-name")) }
                    input #channel-name name="name" required maxlength="64";
                    label for="channel-about" { (c.tr("field-channel-about")) }
                    input #channel-about name="about" maxlength="2000";
                    button type="submit" { (c.tr("channel-create")) }
                }
            }
        },
    )
}

/// `POST /channels`: create, then show it.
pub(super) async fn create(State(app): State<Arc<App>>, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let made = app
        .channel_create(rpc::ChannelCreateParams {
            name: f.get("name").unwrap_or("").to_string(),
            about: f.get("about").unwrap_or("").to_string(),
        })
        .await
        .map_err(CallError::from);
    match made {
        Ok(m) => see(format!("/ch/{}", m.channel_id)),
        Err(e) => list_page(&app, &r.ctx, Some(&explain(&r.ctx, &e))).await,
    }
}

/// `POST /channels/follow`.
pub(super) async fn follow(State(app): State<Arc<App>>, form: Posted) -> Response {
    let (r, f) = form.open(&app);
    let made = app
        .channel_follow(rpc::ChannelFollowParams {
            link: f.get("link").unwrap_or("").trim().to_string(),
        })
        .await
        .map_err(CallError::from);
    match made {
        Ok(m) => see(format!("/ch/{}", m.channel_id)),
        Err(e) => list_page(&app, &r.ctx, Some(&explain(&r.ctx, &e))).await,
    }
}

/// `GET /ch/{id}`: the posts (marked read as they are shown), oldest first.
pub(super) async fn show(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<ChannelId>,
) -> Response {
    let r = signed.open(&app);
    channel_page(&app, &r.ctx, id, None).await
}

async fn channel_page(app: &App, c: &Ctx<'_>, id: ChannelId, error: Option<&str>) -> Response {
    let got = async {
        let list = app.channels(NoParams {}).await?;
        let posts = app.channel_read(by_id(id)).await?;
        let link = app.channel_link(by_id(id)).await?;
        let admins = app.channel_admins(by_id(id)).await?;
        let contacts = app.contacts(NoParams {}).await?;
        Ok::<_, rpc::RpcError>((list, posts, link.link, admins, contacts))
    }
    .await
    .map_err(CallError::from);
    match got {
        Ok((list, posts, link, admins, contacts)) => {
            match list.into_iter().find(|ch| ch.id == id) {
                Some(ch) => {
                    let people = Admins {
                        admins: &admins,
                        contacts: &contacts,
                    };
                    page(channel_markup(c, &ch, &posts, &link, &people, error))
                }
                None => fail(c, &not_found()),
            }
        }
        Err(e) => fail(c, &e),
    }
}

/// Who administers the channel with this profile, and the contacts who could.
struct Admins<'a> {
    admins: &'a [ContactId],
    contacts: &'a [ContactView],
}

fn admins_markup(c: &Ctx<'_>, base: &str, admins: usize, people: &Admins<'_>) -> Markup {
    let name = |id: &ContactId| {
        people
            .contacts
            .iter()
            .find(|k| k.id == *id)
            .map(|k| k.shown_as.clone())
            .unwrap_or_else(|| id.short())
    };
    let others: Vec<&ContactView> = people
        .contacts
        .iter()
        .filter(|k| !people.admins.contains(&k.id))
        .collect();
    html! {
        section.card {
            h2 { (c.tr("channel-admins-title")) }
            p.muted { (c.tr("channel-admins-help")) }
            @if admins <= 1 { p.muted { (c.tr("channel-admins-only-you")) } }
            ul.channels {
                @for a in people.admins {
                    li {
                        span.name { (name(a)) }
                        form.inline method="post" action=(format!("{base}/admins/remove")) {
                            (c.csrf_field())
                            input type="hidden" name="contact" value=(a);
                            button.link type="submit" { (c.tr("channel-admin-remove")) }
                        }
                    }
                }
            }
            @if !others.is_empty() {
                form method="post" action=(format!("{base}/admins")) {
                    (c.csrf_field())
                    label for="admin-contact" { (c.tr("field-admin-contact")) }
                    select #admin-contact name="contact" {
                        @for k in &others { option value=(k.id) { (k.shown_as) } }
                    }
                    button type="submit" { (c.tr("channel-admin-add")) }
                }
            }
        }
    }
}

fn channel_markup(
    c: &Ctx<'_>,
    ch: &ChannelView,
    posts: &[ChannelPostView],
    link: &str,
    people: &Admins<'_>,
    error: Option<&str>,
) -> Markup {
    let base = format!("/ch/{}", ch.id);
    layout(
        c,
        &ch.name,
        "channel",
        true,
        html! {
            section.card.channel {
                h1 { span.name { (ch.name) } @if ch.admin { " " span.badge { (c.tr("channel-admin")) } } }
                @if !ch.about.is_empty() { p.muted.text { (ch.about) } }
                (error_box(error))
                @if let Some(f) = &ch.fault {
                    p.notice role="status" { (c.tra("channel-fault", &[("relay", f.relay.clone().into())])) }
                }
                @if ch.admin {
                    form.composer method="post" action=(format!("{base}/post")) {
                        (c.csrf_field())
                        label.visually-hidden for="post-text" { (c.tr("channel-post-placeholder")) }
                        textarea #post-text name="text" required maxlength="32768" placeholder=(c.tr("channel-post-placeholder")) {}
                        button type="submit" { (c.tr("channel-post")) }
                    }
                    form #channel-attach .attach method="post" action=(format!("{base}/file")) enctype="multipart/form-data" {
                        (c.csrf_field())
                        label for="channel-file" { (c.tr("channel-attach")) }
                        input #channel-file type="file" name="file" required;
                        label.visually-hidden for="channel-caption" { (c.tr("chat-attach-caption")) }
                        input #channel-caption type="text" name="text" maxlength="4000" placeholder=(c.tr("chat-attach-caption"));
                        button type="submit" { (c.tr("channel-post")) }
                    }
                }
                @if posts.is_empty() { p.muted { (c.tr("channel-no-posts")) } }
                ol.posts {
                    // The pinned post first, then the newest first.
                    @for p in posts.iter().filter(|p| p.pinned).chain(posts.iter().rev().filter(|p| !p.pinned)) {
                        li.post.pinned[p.pinned] {
                            @if p.pinned { span.badge { (c.tr("channel-pinned")) } " " }
                            @if let Some(f) = &p.file { (pages::file_markup(c, f, &format!("{base}/p/{}", p.seq))) }
                            @if !p.text.is_empty() { p.text { (p.text) } }
                            div.meta {
                                span.muted {
                                    (pages::time(p.posted_at * 1000))
                                    @if p.edited { " · " (c.tr("channel-edited")) }
                                }
                                @if ch.admin {
                                    @if !p.pinned {
                                        form.inline method="post" action=(format!("{base}/p/{}/pin", p.seq)) {
                                            (c.csrf_field())
                                            button.link type="submit" { (c.tr("channel-pin")) }
                                        }
                                    }
                                    form.inline method="post" action=(format!("{base}/p/{}/delete", p.seq)) {
                                        (c.csrf_field())
                                        button.link type="submit" { (c.tr("channel-delete")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if ch.admin { (admins_markup(c, &base, ch.admins, people)) }
            section.card {
                h2 { (c.tr("channel-link-title")) }
                p.muted { (c.tr("channel-link-help")) }
                input.link readonly value=(link) aria-label=(c.tr("field-channel-link"));
                (pages::qr_svg(c, link, "channel-qr"))
            }
            section.card {
                h2 { (c.tr("channel-mirror-title")) }
                p.muted { (c.tr("channel-mirror-help")) }
                p { (c.tr("channel-read-from")) " " (ch.relays.join(", ")) }
                form method="post" action=(format!("{base}/mirror")) {
                    (c.csrf_field())
                    label for="mirror-url" { (c.tr("field-mirror-url")) }
                    input #mirror-url name="url" required maxlength="2000";
                    button type="submit" { (c.tr("channel-mirror-add")) }
                }
                form method="post" action=(format!("{base}/leave")) {
                    (c.csrf_field())
                    button.danger type="submit" { (c.tr("channel-leave")) }
                }
            }
        },
    )
}

/// `POST /ch/{id}/post`.
pub(super) async fn post(
    State(app): State<Arc<App>>,
    Path(id): Path<ChannelId>,
    form: Posted,
) -> Response {
    let (r, f) = form.open(&app);
    let done = app
        .channel_post(rpc::ChannelPostParams {
            channel_id: Some(id),
            text: f.get("text").unwrap_or("").to_string(),
            ..Default::default()
        })
        .await
        .map_err(CallError::from);
    after(&app, &r.ctx, id, done.map(|_| ())).await
}

/// `POST /ch/{id}/p/{seq}/{pin|delete}`.
pub(super) async fn act(
    State(app): State<Arc<App>>,
    Path((id, seq, action)): Path<(ChannelId, u64, String)>,
    form: Posted,
) -> Response {
    let (r, _) = form.open(&app);
    let params = rpc::ChannelPostParams {
        channel_id: Some(id),
        seq: Some(seq),
        ..Default::default()
    };
    let done = match action.as_str() {
        "pin" => app.channel_pin(params).await.map(|_| ()),
        "delete" => app.channel_delete(params).await.map(|_| ()),
        _ => return fail(&r.ctx, &not_found()),
    };
    after(&app, &r.ctx, id, done.map_err(CallError::from)).await
}

/// `POST /ch/{id}/mirror`.
pub(super) async fn mirror(
    State(app): State<Arc<App>>,
    Path(id): Path<ChannelId>,
    form: Posted,
) -> Response {
    let (r, f) = form.open(&app);
    let done = app
        .channel_mirror_add(rpc::ChannelMirrorParams {
            channel: None,
            channel_id: Some(id),
            url: f.get("url").unwrap_or("").trim().to_string(),
        })
        .await
        .map(|_| ())
        .map_err(CallError::from);
    after(&app, &r.ctx, id, done).await
}

/// `POST /ch/{id}/leave`.
pub(super) async fn leave(
    State(app): State<Arc<App>>,
    Path(id): Path<ChannelId>,
    form: Posted,
) -> Response {
    let (r, _) = form.open(&app);
    match app.channel_leave(by_id(id)).await.map_err(CallError::from) {
        Ok(_) => see("/channels".into()),
        Err(e) => fail(&r.ctx, &e),
    }
}

async fn after(app: &App, c: &Ctx<'_>, id: ChannelId, done: Result<(), CallError>) -> Response {
    match done {
        Ok(()) => see(format!("/ch/{id}")),
        Err(e) => channel_page(app, c, id, Some(&explain(c, &e))).await,
    }
}

fn not_found() -> CallError {
    CallError {
        kind: Some("not_found".into()),
        message: "no such channel".into(),
    }
}

/// `POST /ch/{id}/admins` (add) and `/ch/{id}/admins/remove`.
pub(super) async fn admins(
    State(app): State<Arc<App>>,
    Path(id): Path<ChannelId>,
    form: Posted,
) -> Response {
    change_admins(app, id, form, true).await
}

pub(super) async fn admins_remove(
    State(app): State<Arc<App>>,
    Path(id): Path<ChannelId>,
    form: Posted,
) -> Response {
    change_admins(app, id, form, false).await
}

async fn change_admins(app: Arc<App>, id: ChannelId, form: Posted, add: bool) -> Response {
    let (r, f) = form.open(&app);
    let params = rpc::ChannelAdminParams {
        channel: None,
        channel_id: Some(id),
        contact: f.get("contact").unwrap_or("").to_string(),
    };
    let done = if add {
        app.channel_admin_add(params).await
    } else {
        app.channel_admin_remove(params).await
    };
    after(&app, &r.ctx, id, done.map(|_| ()).map_err(CallError::from)).await
}
