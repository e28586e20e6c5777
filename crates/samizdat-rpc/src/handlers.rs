//! The method handlers: each runs on the service's profile (or on the service itself).

use super::*;

/// Run `f` on the service's profile.
macro_rules! on_profile {
    ($s:expr, |$p:ident| $body:expr) => {
        $s.handle
            .call(move |$p: &mut Profile| async move { $body }.boxed_local())
            .await
            .map_err(RpcError::from)
    };
}

/// The group a `group_*` call names: by `conversation_id` (what the app and bots hold) or by
/// name (what a person types in the CLI) — exactly one. Names are resolved here, at the
/// API's edge: every core method takes ids.
pub(crate) fn group_id(
    p: &Profile,
    group: String,
    conversation_id: Option<ConversationId>,
) -> samizdat_core::Result<ConversationId> {
    let by_name = (!group.is_empty()).then_some(group);
    target_id(p, by_name, conversation_id)
}

/// The conversation named by `target` (a contact's alias or a group's name) or by
/// `conversation_id` (exactly one).
pub(crate) fn target_id(
    p: &Profile,
    target: Option<String>,
    conversation_id: Option<ConversationId>,
) -> samizdat_core::Result<ConversationId> {
    match (target, conversation_id) {
        (Some(t), None) => p.find_conversation(&t),
        (None, Some(id)) => Ok(id),
        _ => Err(Error::Usage(
            "name the conversation with exactly one of target and conversation_id".into(),
        )),
    }
}

/// A contact by alias, or by id (the full fingerprint in hex) when no alias is that.
pub(crate) fn contact_id(p: &Profile, contact: &str) -> samizdat_core::Result<ContactId> {
    match p.find_contact(contact) {
        Err(e @ Error::NotFound(_)) => match contact.parse::<ContactId>() {
            Ok(id) if p.contacts()?.iter().any(|c| c.id == id) => Ok(id),
            _ => Err(e),
        },
        other => other,
    }
}

pub(crate) async fn whoami(s: &Session, _: NoParams) -> RpcResult<WhoAmI> {
    on_profile!(s, |p| {
        let net = p.saved_net()?;
        Ok(WhoAmI {
            name: p.name().to_string(),
            relay: p.relay_url().to_string(),
            fingerprint: p.fingerprint_hex(),
            proxy: net.proxy.as_ref().map(|x| x.url()),
            isolate: net.isolate,
        })
    })
}

pub(crate) async fn invite_create(s: &Session, a: InviteCreateParams) -> RpcResult<InviteLink> {
    let hours = a.hours.unwrap_or(72);
    if hours > 24 * 365 {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            "hours must be at most 8760 (a year)",
        ));
    }
    on_profile!(s, |p| {
        let invite = p.invite(hours * 3600, a.reusable)?;
        Ok(InviteLink {
            link: invite.to_link(),
            expires_at: invite.exp,
        })
    })
}

pub(crate) async fn invite_accept(s: &Session, a: InviteAcceptParams) -> RpcResult<Accepted> {
    on_profile!(s, |p| {
        let connected = p.accept(&a.link, &a.name).await?;
        Ok(Accepted {
            contact: p.conversation_name(&connected.conversation)?,
            contact_id: connected.contact,
            conversation_id: connected.conversation,
        })
    })
}

pub(crate) async fn contacts(s: &Session, _: NoParams) -> RpcResult<Vec<ContactView>> {
    on_profile!(s, |p| p.contacts())
}

pub(crate) async fn conversations(s: &Session, _: NoParams) -> RpcResult<Vec<ConversationView>> {
    on_profile!(s, |p| p.conversations())
}

pub(crate) fn absolute(path: &str, what: &str) -> RpcResult<std::path::PathBuf> {
    let p = std::path::PathBuf::from(path);
    if !p.is_absolute() {
        return Err(Error::Usage(format!("{what} must be an absolute path")).into());
    }
    Ok(p)
}

pub(crate) async fn send(s: &Session, a: SendParams) -> RpcResult<Sent> {
    if a.file.is_none() && a.text.is_none() {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            "invalid params: `text` is required (or `file`)",
        ));
    }
    if let Some(file) = &a.file {
        let path = absolute(file, "file")?;
        let (t, c) = (a.target.clone(), a.conversation_id);
        let conversation_id = on_profile!(s, |p| target_id(p, t, c))?;
        let caption = a.text.clone().unwrap_or_default();
        let how = samizdat_core::transfer::SendFile {
            name: a.name.clone(),
            keep_metadata: a.keep_metadata,
            voice_ms: a.voice_ms,
        };
        let message_id = s
            .handle
            .send_file(&conversation_id, &path, &caption, &how)
            .await?;
        return Ok(Sent {
            message_id,
            conversation_id,
        });
    }
    on_profile!(s, |p| {
        let conversation_id = target_id(p, a.target, a.conversation_id)?;
        let text = a.text.as_deref().unwrap_or_default();
        let reply_to = a.reply_to.as_ref();
        let message_id = p.send_text(&conversation_id, text, reply_to, false).await?;
        Ok(Sent {
            message_id,
            conversation_id,
        })
    })
}

pub(crate) async fn history(s: &Session, a: HistoryParams) -> RpcResult<Vec<MessageView>> {
    on_profile!(s, |p| {
        let id = target_id(p, a.target, a.conversation_id)?;
        let page = samizdat_core::Page {
            before: a.before,
            after: a.after,
            id: a.message_id,
            limit: a.limit,
        };
        p.history_page(&id, &page)
    })
}

pub(crate) async fn group_rename(s: &Session, a: GroupRenameParams) -> RpcResult<Created> {
    on_profile!(s, |p| {
        let group = group_id(p, a.group, a.conversation_id)?;
        p.group_rename(&group, &a.name).await?;
        Ok(Created {
            conversation_id: group,
        })
    })
}

pub(crate) async fn contact_verify(s: &Session, a: ContactVerifyParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let contact = contact_id(p, &a.contact)?;
        p.contact_verify(&contact, a.verified)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn contact_rename(s: &Session, a: ContactRenameParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let contact = contact_id(p, &a.contact)?;
        p.contact_rename(&contact, &a.name)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn saved_messages(s: &Session, _: NoParams) -> RpcResult<Created> {
    on_profile!(s, |p| Ok(Created {
        conversation_id: p.saved_messages().await?,
    }))
}

pub(crate) async fn contact_block(s: &Session, a: ContactBlockParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let contact = contact_id(p, &a.contact)?;
        p.contact_block(&contact, a.blocked)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn delete_chat(s: &Session, a: ChatParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let id = target_id(p, a.target, a.conversation_id)?;
        p.delete_chat(&id).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn backup(s: &Session, a: BackupParams) -> RpcResult<BackedUp> {
    let pass = zeroize::Zeroizing::new(a.passphrase);
    on_profile!(s, |p| Ok(BackedUp {
        bytes: p.backup(std::path::Path::new(&a.out), &pass, a.attachments)?,
    }))
}

pub(crate) async fn download(
    s: &Session,
    a: DownloadParams,
) -> RpcResult<samizdat_core::transfer::Downloaded> {
    let out = absolute(&a.out, "out")?;
    Ok(s.handle.download(&a.message_id, &out).await?)
}

pub(crate) async fn thumbnail(s: &Session, a: MessageParams) -> RpcResult<Thumbnail> {
    on_profile!(s, |p| Ok(Thumbnail {
        jpeg: samizdat_proto::Bytes::encode(&p.thumbnail(&a.message_id)?),
    }))
}

pub(crate) async fn draft(s: &Session, a: DraftParams) -> RpcResult<Draft> {
    on_profile!(s, |p| Ok(Draft {
        text: p.draft(&a.conversation_id)?
    }))
}

pub(crate) async fn draft_set(s: &Session, a: DraftParams) -> RpcResult<Done> {
    let text = zeroize::Zeroizing::new(a.text.unwrap_or_default());
    on_profile!(s, |p| {
        p.set_draft(&a.conversation_id, &text)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn wipe(s: &Session, _: NoParams) -> RpcResult<Done> {
    s.handle.wipe().await?;
    Ok(Done { ok: true })
}

pub(crate) async fn duress_set(s: &Session, a: DuressParams) -> RpcResult<Done> {
    let passphrase = zeroize::Zeroizing::new(a.passphrase);
    on_profile!(s, |p| {
        p.set_duress(&passphrase)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn set_proxy(s: &Session, a: ProxyParams) -> RpcResult<Done> {
    let net = match a.proxy.trim() {
        "off" | "" => samizdat_core::net::Net::default(),
        t if t.eq_ignore_ascii_case("tor") => samizdat_core::net::Net::tor(),
        url => samizdat_core::net::Net {
            proxy: Some(samizdat_core::net::Proxy::parse(url)?),
            isolate: a.isolate,
        },
    };
    on_profile!(s, |p| {
        p.set_net(&net)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn relays(s: &Session, _: NoParams) -> RpcResult<Relays> {
    on_profile!(s, |p| Ok(Relays { relays: p.relays() }))
}

pub(crate) async fn relay_add(s: &Session, a: RelayParams) -> RpcResult<Relays> {
    on_profile!(s, |p| {
        p.add_relay(&a.relay).await?;
        Ok(Relays { relays: p.relays() })
    })
}

pub(crate) async fn relay_remove(s: &Session, a: RelayParams) -> RpcResult<Relays> {
    on_profile!(s, |p| {
        p.remove_relay(&a.relay).await?;
        Ok(Relays { relays: p.relays() })
    })
}

pub(crate) async fn settings(s: &Session, _: NoParams) -> RpcResult<Settings> {
    on_profile!(s, |p| Ok(Settings {
        move_after_secs: p.move_after()?,
        auto_download_bytes: p.auto_download_bytes()?,
        notifications: p.notifications()?,
        read_receipts: p.read_receipts()?,
        calls_direct: p.calls_direct()?,
    }))
}

pub(crate) async fn set_read_receipts(s: &Session, a: ReadReceiptsParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.set_read_receipts(a.on)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn set_notifications(s: &Session, a: NotifyParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.set_notifications(a.level)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn device_add_preview(
    s: &Session,
    a: DeviceAddParams,
) -> RpcResult<samizdat_core::LinkPreview> {
    on_profile!(s, |p| p.device_add_preview(&a.link))
}

pub(crate) async fn device_add(
    s: &Session,
    a: DeviceAddParams,
) -> RpcResult<samizdat_core::LinkPreview> {
    on_profile!(s, |p| p.device_add(&a.link).await)
}

pub(crate) async fn devices(s: &Session, _: NoParams) -> RpcResult<Vec<samizdat_core::DeviceView>> {
    on_profile!(s, |p| p.devices())
}

pub(crate) async fn device_revoke(s: &Session, a: DeviceParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let device = p.find_device(&a.id)?;
        p.device_revoke(&device).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn move_conversation(s: &Session, a: MoveParams) -> RpcResult<Moved> {
    on_profile!(s, |p| {
        let id = target_id(p, a.target, a.conversation_id)?;
        let relay = p.move_conversation(&id, &a.to).await?;
        Ok(Moved {
            conversation_id: id,
            relay,
        })
    })
}

pub(crate) async fn set_move_after(s: &Session, a: MoveAfterParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.set_move_after(a.seconds)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn set_auto_download(s: &Session, a: AutoDownloadParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.set_auto_download_bytes(a.bytes)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn set_timer(s: &Session, a: TimerParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let id = target_id(p, a.target, a.conversation_id)?;
        p.set_timer(&id, a.seconds).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn message_retry(s: &Session, a: MessageParams) -> RpcResult<Sent> {
    on_profile!(s, |p| {
        let message_id = p.message_retry(&a.message_id).await?;
        let conversation_id = p.conversation_of_message(&message_id)?;
        Ok(Sent {
            message_id,
            conversation_id,
        })
    })
}

pub(crate) async fn pin(s: &Session, a: ArrangeParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let id = target_id(p, a.target, a.conversation_id)?;
        p.set_pinned(&id, a.on)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn archive(s: &Session, a: ArrangeParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let id = target_id(p, a.target, a.conversation_id)?;
        p.set_archived(&id, a.on)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn mute(s: &Session, a: ArrangeParams) -> RpcResult<Muted> {
    on_profile!(s, |p| {
        let id = target_id(p, a.target, a.conversation_id)?;
        let muted_until = p.set_muted(&id, a.seconds)?;
        Ok(Muted { muted_until })
    })
}

pub(crate) async fn search(
    s: &Session,
    a: SearchParams,
) -> RpcResult<Vec<samizdat_core::SearchHit>> {
    on_profile!(s, |p| {
        let within = match (a.target, a.conversation_id) {
            (None, None) => None,
            (t, c) => Some(target_id(p, t, c)?),
        };
        p.search(&a.query, within.as_ref(), a.limit.unwrap_or(100))
    })
}

pub(crate) async fn react(s: &Session, a: ReactParams) -> RpcResult<Acted> {
    on_profile!(s, |p| {
        let conversation_id = p.react(&a.message_id, &a.emoji, a.remove).await?;
        Ok(Acted { conversation_id })
    })
}

pub(crate) async fn edit(s: &Session, a: EditParams) -> RpcResult<Acted> {
    on_profile!(s, |p| {
        let conversation_id = p.edit(&a.message_id, &a.text).await?;
        Ok(Acted { conversation_id })
    })
}

pub(crate) async fn delete(s: &Session, a: DeleteParams) -> RpcResult<Acted> {
    on_profile!(s, |p| {
        let conversation_id = p.delete_message(&a.message_id, a.for_everyone).await?;
        Ok(Acted { conversation_id })
    })
}

pub(crate) async fn forward(s: &Session, a: ForwardParams) -> RpcResult<Sent> {
    on_profile!(s, |p| {
        let conversation_id = target_id(p, a.target, a.conversation_id)?;
        let message_id = p.forward(&a.message_id, &conversation_id).await?;
        Ok(Sent {
            message_id,
            conversation_id,
        })
    })
}

pub(crate) async fn group_create(s: &Session, a: GroupParams) -> RpcResult<Created> {
    if a.conversation_id.is_some() {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            "invalid params: a new group has a name (`group`), not an id",
        ));
    }
    on_profile!(s, |p| {
        Ok(Created {
            conversation_id: p.group_create(&a.group).await?,
        })
    })
}

pub(crate) async fn group_add(s: &Session, a: GroupAddParams) -> RpcResult<GroupAdded> {
    if a.contacts.is_empty() {
        return Err(RpcError::new(codes::INVALID_PARAMS, "contacts is empty"));
    }
    on_profile!(s, |p| {
        let group = group_id(p, a.group, a.conversation_id)?;
        let contacts = a
            .contacts
            .iter()
            .map(|c| contact_id(p, c))
            .collect::<samizdat_core::Result<Vec<_>>>()?;
        p.group_add(&group, &contacts).await
    })
}

pub(crate) async fn group_remove(s: &Session, a: GroupRemoveParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let group = group_id(p, a.group, a.conversation_id)?;
        let contact = contact_id(p, &a.contact)?;
        p.group_remove(&group, &contact).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn group_readd(s: &Session, a: GroupRemoveParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let group = group_id(p, a.group, a.conversation_id)?;
        let contact = contact_id(p, &a.contact)?;
        p.group_readd(&group, &contact).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn group_leave(s: &Session, a: GroupParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let group = group_id(p, a.group, a.conversation_id)?;
        p.group_leave(&group).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn group_members(s: &Session, a: GroupParams) -> RpcResult<Vec<MemberView>> {
    on_profile!(s, |p| {
        let group = group_id(p, a.group, a.conversation_id)?;
        p.group_members(&group)
    })
}

pub(crate) async fn safety_number(s: &Session, a: ContactParams) -> RpcResult<SafetyNumber> {
    on_profile!(s, |p| Ok(SafetyNumber {
        safety_number: p.safety_number(&contact_id(p, &a.contact)?)?,
    }))
}

pub(crate) async fn invitations(s: &Session, _: NoParams) -> RpcResult<Vec<InvitationView>> {
    on_profile!(s, |p| p.invitations())
}

pub(crate) async fn invitation_accept(s: &Session, a: InvitationParams) -> RpcResult<Joined> {
    on_profile!(s, |p| {
        if p.invitation_elsewhere(a.id)? {
            p.invitation_answer_elsewhere(a.id, true).await?;
            return Ok(Joined {
                conversation_id: None,
                elsewhere: true,
            });
        }
        Ok(Joined {
            conversation_id: Some(p.invitation_accept(a.id).await?),
            elsewhere: false,
        })
    })
}

pub(crate) async fn invitation_decline(s: &Session, a: InvitationParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        if p.invitation_elsewhere(a.id)? {
            p.invitation_answer_elsewhere(a.id, false).await?;
        } else {
            p.invitation_decline(a.id)?;
        }
        Ok(Done { ok: true })
    })
}

pub(crate) async fn sync(s: &Session, _: NoParams) -> RpcResult<Synced> {
    let synced = on_profile!(s, |p| Ok(Synced {
        events: p.sync().await?,
    }))?;
    // Files that waited for their relay go now (or wait for the next sync).
    match s.handle.send_pending_files().await {
        Ok(()) | Err(Error::RelayUnreachable(_)) => {}
        Err(e) => tracing::debug!("waiting files not sent yet: {e}"),
    }
    Ok(synced)
}

pub(crate) async fn subscribe(s: &Session, _: NoParams) -> RpcResult<Subscribed> {
    let mut sub = s.subscription.lock().await;
    let mut rx = s.handle.subscribe();
    let last = s.handle.last_seq();
    let out = s.out.clone();
    if let Some(old) = sub.take() {
        old.abort();
    }
    *sub = Some(tokio::spawn(async move {
        loop {
            let line = match rx.recv().await {
                Ok(e) => json!({ "jsonrpc": "2.0", "method": "event", "params": e }),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => json!({
                    "jsonrpc": "2.0",
                    "method": "events_lagged",
                    "params": { "missed": n, "hint": "read them with get_events" },
                }),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if out.send(line.to_string()).await.is_err() {
                return;
            }
        }
    }));
    Ok(Subscribed { last })
}

pub(crate) async fn unsubscribe(s: &Session, _: NoParams) -> RpcResult<Done> {
    if let Some(t) = s.subscription.lock().await.take() {
        t.abort();
    }
    Ok(Done { ok: true })
}

pub(crate) async fn get_events(s: &Session, a: GetEventsParams) -> RpcResult<EventPage> {
    let limit = a.limit.unwrap_or(1000).clamp(1, 1000);
    let wait = Duration::from_millis(a.timeout_ms.min(MAX_WAIT_MS));
    let mut closed = s.closed.clone();
    let waited = tokio::select! {
        page = s.handle.get_events(a.since, limit, wait) => Some(page),
        // Nobody will wait for more: answer with what there is now.
        _ = closed.wait_for(|c| *c) => None,
    };
    let page = match waited {
        Some(page) => page,
        None => s.handle.get_events(a.since, limit, Duration::ZERO).await,
    };
    page.map_err(RpcError::from)
}

fn sdp_of(a: &CallParams) -> samizdat_core::Result<&str> {
    a.sdp
        .as_deref()
        .ok_or_else(|| Error::Usage("give the session description as `sdp`".into()))
}

pub(crate) async fn call_prepare(
    s: &Session,
    a: CallPrepareParams,
) -> RpcResult<samizdat_core::CallIce> {
    on_profile!(s, |p| {
        let id = target_id(p, a.target, a.conversation_id)?;
        p.call_prepare(&id, a.video).await
    })
}

pub(crate) async fn call_start(s: &Session, a: CallParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        // A group call starts with no offer (each joiner offers to those already in).
        p.call_start(&a.call_id, a.sdp.as_deref().unwrap_or_default())
            .await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn call_accept(s: &Session, a: CallParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.call_accept(&a.call_id, sdp_of(&a)?).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn call_renegotiate(s: &Session, a: CallParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.call_renegotiate(&a.call_id, sdp_of(&a)?).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn call_reanswer(s: &Session, a: CallParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.call_reanswer(&a.call_id, sdp_of(&a)?).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn call_join(s: &Session, a: CallParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let offers: Vec<(String, String)> = a
            .offers
            .iter()
            .map(|o| (o.to.clone(), o.sdp.clone()))
            .collect();
        p.call_join(&a.call_id, &offers).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn call_answer(s: &Session, a: CallParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let to =
            a.to.as_deref()
                .ok_or_else(|| Error::Usage("say whose offer this answers, as `to`".into()))?;
        p.call_answer(&a.call_id, to, sdp_of(&a)?).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn call_decline(s: &Session, a: CallParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.call_decline(&a.call_id).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn call_end(s: &Session, a: CallParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.call_end(&a.call_id).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn call_ice(s: &Session, a: CallParams) -> RpcResult<samizdat_core::CallIce> {
    on_profile!(s, |p| p.call_ice(&a.call_id).await)
}

pub(crate) async fn call(s: &Session, a: CallParams) -> RpcResult<samizdat_core::CallView> {
    on_profile!(s, |p| p.call(&a.call_id))
}

pub(crate) async fn calls(s: &Session, a: CallsParams) -> RpcResult<Vec<samizdat_core::CallView>> {
    on_profile!(s, |p| {
        let conv = match (a.target, a.conversation_id) {
            (None, None) => None,
            (t, c) => Some(target_id(p, t, c)?),
        };
        p.calls(conv.as_ref())
    })
}

pub(crate) async fn set_calls_direct(s: &Session, a: CallsDirectParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        p.set_calls_direct(a.on)?;
        Ok(Done { ok: true })
    })
}

// ---- channels -------------------------------------------------------------------------------

/// The channel a `channel_*` call names: by `channel_id` or by name (exactly one).
fn channel_id(
    p: &Profile,
    name: Option<String>,
    id: Option<samizdat_core::ChannelId>,
) -> samizdat_core::Result<samizdat_core::ChannelId> {
    match (name, id) {
        (Some(n), None) => p.find_channel(&n),
        (None, Some(id)) => Ok(id),
        _ => Err(Error::Usage(
            "name the channel with exactly one of channel and channel_id".into(),
        )),
    }
}

pub(crate) async fn channel_create(s: &Session, a: ChannelCreateParams) -> RpcResult<ChannelMade> {
    on_profile!(s, |p| {
        let channel_id = p.channel_create(&a.name, &a.about).await?;
        let link = p.channel_link(&channel_id)?;
        Ok(ChannelMade { channel_id, link })
    })
}

pub(crate) async fn channel_follow(s: &Session, a: ChannelFollowParams) -> RpcResult<ChannelMade> {
    on_profile!(s, |p| {
        let channel_id = p.channel_follow(&a.link).await?;
        let link = p.channel_link(&channel_id)?;
        Ok(ChannelMade { channel_id, link })
    })
}

pub(crate) async fn channel_post(s: &Session, a: ChannelPostParams) -> RpcResult<ChannelPosted> {
    if let Some(file) = &a.file {
        let path = absolute(file, "file")?;
        let (c, i) = (a.channel.clone(), a.channel_id);
        let id = on_profile!(s, |p| channel_id(p, c, i))?;
        let how = samizdat_core::transfer::SendFile {
            name: a.name.clone(),
            ..Default::default()
        };
        return Ok(ChannelPosted {
            seq: s
                .handle
                .channel_post_file(&id, &a.text, &path, &how)
                .await?,
        });
    }
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        Ok(ChannelPosted {
            seq: p.channel_post(&id, &a.text).await?,
        })
    })
}

pub(crate) async fn channel_edit(s: &Session, a: ChannelPostParams) -> RpcResult<ChannelPosted> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        let seq = a
            .seq
            .ok_or_else(|| Error::Usage("name the post to edit (seq)".into()))?;
        Ok(ChannelPosted {
            seq: p.channel_edit(&id, seq, &a.text).await?,
        })
    })
}

pub(crate) async fn channel_delete(s: &Session, a: ChannelPostParams) -> RpcResult<ChannelPosted> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        let seq = a
            .seq
            .ok_or_else(|| Error::Usage("name the post to delete (seq)".into()))?;
        Ok(ChannelPosted {
            seq: p.channel_delete(&id, seq).await?,
        })
    })
}

pub(crate) async fn channel_pin(s: &Session, a: ChannelPostParams) -> RpcResult<ChannelPosted> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        Ok(ChannelPosted {
            seq: p.channel_pin(&id, a.seq).await?,
        })
    })
}

pub(crate) async fn channel_link(s: &Session, a: ChannelParams) -> RpcResult<ChannelMade> {
    on_profile!(s, |p| {
        let channel_id = channel_id(p, a.channel, a.channel_id)?;
        let link = p.channel_link(&channel_id)?;
        Ok(ChannelMade { channel_id, link })
    })
}

pub(crate) async fn channel_read(
    s: &Session,
    a: ChannelParams,
) -> RpcResult<Vec<samizdat_core::ChannelPostView>> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        p.channel_posts(&id, a.mark_read.unwrap_or(true))
    })
}

pub(crate) async fn channel_sync(
    s: &Session,
    a: ChannelParams,
) -> RpcResult<samizdat_core::ChannelSynced> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        p.channel_sync(&id).await
    })
}

pub(crate) async fn channel_mirror_add(
    s: &Session,
    a: ChannelMirrorParams,
) -> RpcResult<samizdat_core::ChannelView> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        p.channel_mirror_add(&id, &a.url).await?;
        p.channel_view(&id)
    })
}

pub(crate) async fn channels(
    s: &Session,
    _: NoParams,
) -> RpcResult<Vec<samizdat_core::ChannelView>> {
    on_profile!(s, |p| p.channels())
}

pub(crate) async fn channel_leave(s: &Session, a: ChannelParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        p.channel_leave(&id)?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn channel_admin_add(s: &Session, a: ChannelAdminParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        let contact = contact_id(p, &a.contact)?;
        p.channel_admin_add(&id, &contact).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn channel_admin_remove(s: &Session, a: ChannelAdminParams) -> RpcResult<Done> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        let contact = contact_id(p, &a.contact)?;
        p.channel_admin_remove(&id, &contact).await?;
        Ok(Done { ok: true })
    })
}

pub(crate) async fn channel_admins(s: &Session, a: ChannelParams) -> RpcResult<Vec<ContactId>> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        p.channel_admin_contacts(&id)
    })
}

pub(crate) async fn channel_rekey(s: &Session, a: ChannelParams) -> RpcResult<ChannelPosted> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        Ok(ChannelPosted {
            seq: p.channel_rekey(&id).await?,
        })
    })
}

pub(crate) async fn channel_download(
    s: &Session,
    a: ChannelFileParams,
) -> RpcResult<samizdat_core::transfer::Downloaded> {
    let out = absolute(&a.out, "out")?;
    let id = on_profile!(s, |p| channel_id(p, a.channel, a.channel_id))?;
    Ok(s.handle.channel_download(&id, a.seq, &out).await?)
}

pub(crate) async fn channel_thumbnail(s: &Session, a: ChannelFileParams) -> RpcResult<Thumbnail> {
    on_profile!(s, |p| {
        let id = channel_id(p, a.channel, a.channel_id)?;
        Ok(Thumbnail {
            jpeg: samizdat_proto::Bytes::encode(&p.channel_thumbnail(&id, a.seq)?),
        })
    })
}
