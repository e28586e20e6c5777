//! Calls in the app (issue 31): the page's script asks these routes, as JSON, for what it
//! needs around its `RTCPeerConnection` — the relay's TURN servers with this call's
//! credentials, the other side's offer or answer — and hands back its own. Everything that
//! decides (who may call, what leaves, how a call ends) is the service's; the media never
//! passes through the app.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use samizdat_core::{CallId, ConversationId};
use samizdat_rpc::{self as rpc, Api};
use serde_json::json;

use super::pages::Ctx;
use super::web::{Posted, Signed, explain};
use super::{App, CallError};

fn answer<T: serde::Serialize>(c: &Ctx<'_>, r: Result<T, CallError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            let status = match e.kind.as_deref() {
                Some("not_found") => StatusCode::NOT_FOUND,
                Some("relay_unreachable") => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, axum::Json(json!({ "error": explain(c, &e) }))).into_response()
        }
    }
}

/// Start a call in a 1:1 chat (`video` ticked for a video call): its id and ICE servers.
pub(super) async fn prepare(
    State(app): State<Arc<App>>,
    Path(id): Path<ConversationId>,
    form: Posted,
) -> Response {
    let (r, f) = form.open(&app);
    let video = f.get("video").is_some_and(|v| v == "1");
    let done = app
        .call_prepare(rpc::CallPrepareParams {
            conversation_id: Some(id),
            video,
            ..Default::default()
        })
        .await
        .map_err(CallError::from);
    answer(&r.ctx, done)
}

/// One call as the page needs it: its state, the offer and answer, who is on the other side
/// and the conversation's safety number page.
pub(super) async fn get(
    State(app): State<Arc<App>>,
    Path(call): Path<CallId>,
    signed: Signed,
) -> Response {
    let r = signed.open(&app);
    // `Api::call` (the typed method), not the app's call by name.
    let view = Api::call(
        &*app,
        rpc::CallParams {
            call_id: call,
            sdp: None,
            to: None,
            offers: Vec::new(),
        },
    )
    .await
    .map_err(CallError::from);
    let view = match view {
        Ok(v) => v,
        Err(e) => return answer::<()>(&r.ctx, Err(e)),
    };
    let conv = app
        .conversations(rpc::NoParams {})
        .await
        .ok()
        .and_then(|cs| cs.into_iter().find(|c| c.id == view.conversation_id));
    let (name, contact) = match &conv {
        Some(c) => (c.shown_as.clone(), c.contact),
        None => (String::new(), None),
    };
    answer(
        &r.ctx,
        Ok(json!({
            "call": view,
            "name": name,
            "verify": contact.map(|k| format!("/contacts/{k}/verify")),
        })),
    )
}

/// `start` (with the offer; none for a group call), `accept` (with the answer), `join` (a
/// group call, with `offers`), `answer` (a group call: `to` and `sdp`), `decline`, `end`,
/// `ice` (fresh credentials).
pub(super) async fn act(
    State(app): State<Arc<App>>,
    Path((call, action)): Path<(CallId, String)>,
    form: Posted,
) -> Response {
    let (r, f) = form.open(&app);
    // `join`: the offers as a JSON list of `{to, sdp}` (one per person in the group call).
    let offers = match f.get("offers").map(serde_json::from_str) {
        None => Vec::new(),
        Some(Ok(o)) => o,
        Some(Err(_)) => return StatusCode::UNPROCESSABLE_ENTITY.into_response(),
    };
    let params = rpc::CallParams {
        call_id: call,
        sdp: f.get("sdp").map(|s| s.to_string()),
        to: f.get("to").map(|s| s.to_string()),
        offers,
    };
    let done: Result<serde_json::Value, CallError> = match action.as_str() {
        "start" => app.call_start(params).await.map(|d| json!(d)),
        "accept" => app.call_accept(params).await.map(|d| json!(d)),
        "join" => app.call_join(params).await.map(|d| json!(d)),
        "renegotiate" => app.call_renegotiate(params).await.map(|d| json!(d)),
        "reanswer" => app.call_reanswer(params).await.map(|d| json!(d)),
        "answer" => app.call_answer(params).await.map(|d| json!(d)),
        "decline" => app.call_decline(params).await.map(|d| json!(d)),
        "end" => app.call_end(params).await.map(|d| json!(d)),
        "ice" => app.call_ice(params).await.map(|d| json!(d)),
        _ => return StatusCode::NOT_FOUND.into_response(),
    }
    .map_err(CallError::from);
    answer(&r.ctx, done)
}
