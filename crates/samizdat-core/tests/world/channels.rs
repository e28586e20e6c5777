//! Channels (issue 34): one admin posts, followers on other relays read, a follower cannot
//! post, a mirror that drops or alters a record is caught, and with the home relay gone the
//! followers read on from the mirror.

use samizdat_core::channel::{ChainFault, sign_record};
use samizdat_core::relay_client::{MailboxKey, RelayClient};
use samizdat_core::testing::World;
use samizdat_core::{ChannelId, Error, ErrorCode, Event};
use samizdat_proto::ChannelRecord;
use samizdat_proto::channel::RecordKind;

use crate::run;

fn texts(p: &samizdat_core::Profile, id: &ChannelId) -> Vec<String> {
    p.channel_posts(id, false)
        .expect("the posts")
        .into_iter()
        .map(|p| p.text)
        .collect()
}

/// Every row of every table of a relay's SQLite file, as one number per table.
fn relay_rows(w: &mut World, relay: usize) -> Vec<(String, i64)> {
    let path = w.relay(relay).data_dir().join("relay.db");
    let conn = rusqlite::Connection::open(path).expect("the relay's database opens");
    let tables: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .expect("this step works");
        stmt.query_map([], |r| r.get(0))
            .expect("this step works")
            .collect::<rusqlite::Result<_>>()
            .expect("this step works")
    };
    tables
        .into_iter()
        .map(|t| {
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get(0))
                .expect("this step works");
            (t, n)
        })
        .collect()
}

/// Change a stopped relay's copy of a channel behind its back, as a hostile mirror would.
async fn tamper(w: &mut World, relay: usize, sql: &str, params: impl rusqlite::Params) {
    w.relay(relay).stop().await;
    let path = w.relay(relay).data_dir().join("relay.db");
    let conn = rusqlite::Connection::open(path).expect("the relay's database opens");
    let n = conn.execute(sql, params).expect("the tampering runs");
    assert!(n > 0, "the tampering changed nothing");
    drop(conn);
    w.relay(relay).restart().await;
}

/// Alice runs a channel on relay 0 with a mirror on relay 1; bob (on relay 0) and carol (on
/// relay 1) follow it from its link. Posts, an edit, a pin and a delete reach both; neither can
/// post, even with a hand-made record; following and reading leave no row on the relay; no
/// post's text is in any relay file.
#[test]
fn a_post_reaches_followers_on_two_relays_and_only_the_admin_can_post() {
    run(async {
        let mut w = World::new().await;
        let r1 = w.add_relay().await;
        let mut alice = w.person("alice").await;
        let mut bob = w.person("bob").await;
        let mut carol = w.person_on("carol", r1).await;
        let name = w.text("Free Evening News");
        let ch = alice
            .profile
            .channel_create(&name, "what the papers leave out")
            .await
            .expect("a channel is made");
        let mirror = w.relay(r1).url.clone();
        let relays = alice
            .profile
            .channel_mirror_add(&ch, &mirror)
            .await
            .expect("the mirror is added");
        assert_eq!(relays.len(), 2);
        let link = alice.profile.channel_link(&ch).expect("a link");
        assert!(link.starts_with("samizdat://channel/v1/"));

        let before = relay_rows(&mut w, 0);
        let ch_b = bob
            .profile
            .channel_follow(&link)
            .await
            .expect("bob follows");
        let ch_c = carol
            .profile
            .channel_follow(&link)
            .await
            .expect("carol follows");
        assert_eq!((ch_b, ch_c), (ch, ch));
        assert_eq!(
            relay_rows(&mut w, 0),
            before,
            "following wrote nothing on the relay: no list of followers exists"
        );
        assert_eq!(
            bob.profile.channels().expect("this step works")[0].name,
            name
        );
        assert!(!bob.profile.channels().expect("this step works")[0].admin);

        let first = w.text("the first post: the bridge is closed");
        let second = w.text("the second post: the bridge opens at noon");
        let s1 = alice
            .profile
            .channel_post(&ch, &first)
            .await
            .expect("posted");
        alice
            .profile
            .channel_post(&ch, &second)
            .await
            .expect("posted");
        for p in [&mut bob, &mut carol] {
            let events = p.sync().await;
            assert!(
                events.iter().any(
                    |e| matches!(e, Event::ChannelPosts { channel_id, .. } if *channel_id == ch)
                ),
                "{} is told of new posts: {events:?}",
                p.name
            );
            assert_eq!(texts(&p.profile, &ch), vec![first.clone(), second.clone()]);
            assert_eq!(
                p.profile.channel_view(&ch).expect("this step works").unread,
                2
            );
        }
        assert_eq!(
            bob.profile
                .channel_posts(&ch, true)
                .expect("this step works")
                .len(),
            2
        );
        assert_eq!(
            bob.profile
                .channel_view(&ch)
                .expect("this step works")
                .unread,
            0
        );
        let before = relay_rows(&mut w, 0);
        bob.profile.channel_sync(&ch).await.expect("bob reads");
        assert_eq!(
            relay_rows(&mut w, 0),
            before,
            "reading wrote nothing on the relay"
        );

        // An edit, a pin, a delete: every follower's copy follows.
        let fixed = w.text("the first post: the bridge is closed until noon");
        alice
            .profile
            .channel_edit(&ch, s1, &fixed)
            .await
            .expect("edited");
        alice
            .profile
            .channel_pin(&ch, Some(s1))
            .await
            .expect("pinned");
        carol.sync().await;
        let posts = carol
            .profile
            .channel_posts(&ch, false)
            .expect("this step works");
        assert_eq!(posts[0].text, fixed);
        assert!(posts[0].edited && posts[0].pinned);
        let s2 = posts[1].seq;
        alice
            .profile
            .channel_delete(&ch, s2)
            .await
            .expect("deleted");
        carol.sync().await;
        assert_eq!(texts(&carol.profile, &ch), vec![fixed.clone()]);

        // A follower cannot post: the core refuses, and a hand-made record is refused by the
        // relay — signed with a key of bob's own, or naming alice's key with bob's signature.
        let refused = bob.profile.channel_post(&ch, "let me in").await;
        assert!(matches!(refused, Err(Error::NotMember(_))), "{refused:?}");
        let relay = RelayClient::new(&w.relay(0).url).expect("this step works");
        let head = relay
            .channel_head(ch.as_proto())
            .await
            .expect("this step works")
            .expect("this step works");
        let (own, _) = MailboxKey::generate().expect("this step works");
        let prev: [u8; 32] = head.hash.0.clone().try_into().expect("this step works");
        let forged = sign_record(
            &own,
            *ch.as_proto(),
            head.seq + 1,
            prev,
            RecordKind::Post,
            vec![],
            vec![0; 40],
        )
        .expect("this step works");
        let answer = relay
            .store_channel_record(ch.as_proto(), &forged.encode())
            .await;
        assert!(
            matches!(
                answer,
                Err(Error::Relay {
                    code: ErrorCode::BadSignature,
                    ..
                })
            ),
            "{answer:?}"
        );
        let genesis = relay
            .channel_segment(ch.as_proto(), 0)
            .await
            .expect("this step works");
        let genesis = ChannelRecord::decode(
            samizdat_proto::channel::decode_segment(&genesis).expect("this step works")[0],
        )
        .expect("this step works");
        let mut posing = forged.clone();
        posing.signer = genesis.signer;
        let answer = relay
            .store_channel_record(ch.as_proto(), &posing.encode())
            .await;
        assert!(
            matches!(
                answer,
                Err(Error::Relay {
                    code: ErrorCode::BadSignature,
                    ..
                })
            ),
            "{answer:?}"
        );
        // A follower cannot take a channel's id on another relay with a genesis of its own.
        let taken = sign_record(
            &own,
            *ch.as_proto(),
            0,
            [0; 32],
            RecordKind::Genesis,
            vec![prev],
            vec![1],
        )
        .expect("this step works");
        let answer = RelayClient::new(&mirror)
            .expect("this step works")
            .store_channel_record(ch.as_proto(), &taken.encode())
            .await;
        assert!(answer.is_err(), "{answer:?}");

        w.assert_no_plaintext();
    });
}

/// The mirror's copy is altered (one record) and, later, cut (one record dropped): with the
/// home relay blocked, bob reads from the mirror, takes what checks out, is told what does
/// not, and reads the rest once the home relay is back.
#[test]
fn a_mirror_that_alters_or_drops_a_post_is_caught_and_followers_read_on_from_the_mirror() {
    run(async {
        let mut w = World::new().await;
        let r1 = w.add_relay().await;
        let mut alice = w.person("alice").await;
        let mut bob = w.person("bob").await;
        let ch = alice
            .profile
            .channel_create("Mirror Test", "")
            .await
            .expect("this step works");
        let mirror = w.relay(r1).url.clone();
        alice
            .profile
            .channel_mirror_add(&ch, &mirror)
            .await
            .expect("this step works");
        let p1 = w.text("post one");
        alice
            .profile
            .channel_post(&ch, &p1)
            .await
            .expect("this step works");
        bob.profile
            .channel_follow(&alice.profile.channel_link(&ch).expect("this step works"))
            .await
            .expect("this step works");
        assert_eq!(texts(&bob.profile, &ch), vec![p1.clone()]);

        // The home relay is blocked: bob reads on from the mirror.
        let (p2, p3) = (w.text("post two"), w.text("post three"));
        alice
            .profile
            .channel_post(&ch, &p2)
            .await
            .expect("this step works");
        w.relay(0).block().await;
        let synced = bob
            .profile
            .channel_sync(&ch)
            .await
            .expect("read from the mirror");
        assert_eq!(synced.relay.as_deref(), Some(mirror.as_str()));
        assert_eq!(texts(&bob.profile, &ch), vec![p1.clone(), p2.clone()]);
        w.relay(0).restart().await;

        // Post three is altered on the mirror (one byte of its sealed body).
        let s3 = alice
            .profile
            .channel_post(&ch, &p3)
            .await
            .expect("this step works");
        tamper(
            &mut w,
            r1,
            "UPDATE channel_records SET record = CAST(substr(record, 1, 80)
                 || CASE WHEN substr(record, 81, 1) = x'00' THEN x'01' ELSE x'00' END
                 || substr(record, 82) AS BLOB) WHERE seq = ?1",
            [s3 as i64],
        )
        .await;
        w.relay(0).block().await;
        let synced = bob
            .profile
            .channel_sync(&ch)
            .await
            .expect("this step works");
        assert_eq!(synced.faults.len(), 1, "{synced:?}");
        assert_eq!(synced.faults[0].relay, mirror);
        assert_eq!(synced.faults[0].fault, ChainFault::Forged);
        assert_eq!(texts(&bob.profile, &ch), vec![p1.clone(), p2.clone()]);
        assert!(
            bob.profile
                .channel_view(&ch)
                .expect("this step works")
                .fault
                .is_some()
        );
        w.relay(0).restart().await;
        let events = bob.sync().await;
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::ChannelFault {
                    fault: ChainFault::Forged,
                    ..
                }
            )),
            "bob is told: {events:?}"
        );
        assert_eq!(
            texts(&bob.profile, &ch),
            vec![p1.clone(), p2.clone(), p3.clone()]
        );

        // Two more posts; the mirror drops the first of them.
        let (p4, p5) = (w.text("post four"), w.text("post five"));
        let s4 = alice
            .profile
            .channel_post(&ch, &p4)
            .await
            .expect("this step works");
        alice
            .profile
            .channel_post(&ch, &p5)
            .await
            .expect("this step works");
        tamper(
            &mut w,
            r1,
            "DELETE FROM channel_records WHERE seq = ?1",
            [s4 as i64],
        )
        .await;
        w.relay(0).block().await;
        let synced = bob
            .profile
            .channel_sync(&ch)
            .await
            .expect("this step works");
        assert_eq!(synced.faults.len(), 1, "{synced:?}");
        assert_eq!(synced.faults[0].fault, ChainFault::Broken);
        assert_eq!(
            texts(&bob.profile, &ch).len(),
            3,
            "nothing after the gap is taken"
        );
        w.relay(0).restart().await;
        bob.profile
            .channel_sync(&ch)
            .await
            .expect("this step works");
        assert_eq!(texts(&bob.profile, &ch), vec![p1, p2, p3, p4, p5]);
    });
}

/// A follower whose service runs gets a new post pushed by the home relay over the socket it
/// already holds: with every channel read over HTTP turned off (a fault point), the post still
/// arrives, so it came by the push.
#[test]
fn a_running_service_gets_posts_pushed() {
    run(async {
        let mut w = World::new().await;
        let mut alice = w.person("alice").await;
        let mut bob = w.person("bob").await;
        let ch = alice
            .profile
            .channel_create("Pushed", "")
            .await
            .expect("a channel");
        let link = alice.profile.channel_link(&ch).expect("a link");
        bob.profile
            .channel_follow(&link)
            .await
            .expect("bob follows");
        w.set_fault("NO_CHANNEL_READS", "1");
        let handle = samizdat_core::ClientHandle::start(bob.profile, samizdat_core::Mode::Realtime)
            .expect("a service");
        let mut events = handle.subscribe();
        // Posted at once: the service's subscription (from the record bob holds) catches up on
        // whatever was stored before it, so there is nothing to wait for.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let text = w.text("pushed to the reader");
        let mut posted = false;
        loop {
            if !posted {
                alice
                    .profile
                    .channel_post(&ch, &text)
                    .await
                    .expect("posted");
                posted = true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = tokio::time::timeout(left, events.recv())
                .await
                .expect("the post arrives within a minute")
                .expect("events flow");
            if matches!(e.event, Event::ChannelPosts { channel_id, .. } if channel_id == ch) {
                break;
            }
        }
        let posts = handle
            .call(move |p| {
                use futures_util::FutureExt;
                async move { p.channel_posts(&ch, false) }.boxed_local()
            })
            .await
            .expect("the posts");
        assert_eq!(posts[0].text, text);
    });
}

/// Several admins through the MLS group of admins: alice asks bob to administer her channel;
/// after his sync (he joins the admin group, makes his own key, says it) and hers (she signs
/// the roster), bob posts and carol reads it; alice then removes him and his next post is
/// refused.
#[test]
fn admins_add_and_remove_admins_through_their_mls_group() {
    run(async {
        let mut w = World::new().await;
        let mut alice = w.person("alice").await;
        let mut bob = w.person("bob").await;
        let mut carol = w.person("carol").await;
        w.connect(&mut alice, &mut bob).await;
        let ch = alice
            .profile
            .channel_create("Two Voices", "")
            .await
            .expect("a channel");
        let link = alice.profile.channel_link(&ch).expect("a link");
        carol
            .profile
            .channel_follow(&link)
            .await
            .expect("carol follows");

        let bob_id = alice.contact(&bob.display);
        alice
            .profile
            .channel_admin_add(&ch, &bob_id)
            .await
            .expect("bob is asked");
        bob.sync().await; // joins the admin group, takes the invitation, says his key
        alice.sync().await; // signs the roster with bob's key in it
        bob.sync().await; // reads the roster
        let view = bob.profile.channel_view(&ch).expect("bob has the channel");
        assert!(view.admin, "bob is an admin now: {view:?}");
        assert_eq!(view.admins, 2);
        assert_eq!(
            alice.profile.channel_admin_contacts(&ch).expect("admins"),
            vec![bob_id]
        );

        let from_bob = w.text("bob posts to the channel");
        bob.profile
            .channel_post(&ch, &from_bob)
            .await
            .expect("bob posts");
        let from_alice = w.text("and alice after him");
        alice
            .profile
            .channel_post(&ch, &from_alice)
            .await
            .expect("alice posts on top of bob's");
        carol.profile.channel_sync(&ch).await.expect("carol reads");
        assert_eq!(
            texts(&carol.profile, &ch),
            vec![from_bob.clone(), from_alice.clone()]
        );

        alice
            .profile
            .channel_admin_remove(&ch, &bob_id)
            .await
            .expect("bob is removed");
        let refused = bob.profile.channel_post(&ch, "still here?").await;
        assert!(matches!(refused, Err(Error::NotMember(_))), "{refused:?}");
        assert!(!bob.profile.channel_view(&ch).expect("the channel").admin);
        carol.profile.channel_sync(&ch).await.expect("carol reads");
        assert_eq!(
            carol.profile.channel_view(&ch).expect("the channel").admins,
            1
        );
        assert_eq!(texts(&carol.profile, &ch), vec![from_bob, from_alice]);
        w.assert_no_plaintext();
    });
}

/// A key rotation: the follower who had the old link reads on; someone who gets the link
/// made after it reads what is posted after it (and the channel's name), nothing before.
#[test]
fn after_a_key_rotation_old_followers_read_on_and_a_new_link_opens_only_what_follows() {
    run(async {
        let mut w = World::new().await;
        let mut alice = w.person("alice").await;
        let mut bob = w.person("bob").await;
        let mut dave = w.person("dave").await;
        let ch = alice
            .profile
            .channel_create("Rotating", "keys change")
            .await
            .expect("a channel");
        let old_link = alice.profile.channel_link(&ch).expect("a link");
        bob.profile
            .channel_follow(&old_link)
            .await
            .expect("bob follows");
        let before = w.text("before the rotation");
        alice
            .profile
            .channel_post(&ch, &before)
            .await
            .expect("posted");
        alice.profile.channel_rekey(&ch).await.expect("rotated");
        let new_link = alice.profile.channel_link(&ch).expect("a link");
        assert_ne!(new_link, old_link);
        let after = w.text("after the rotation");
        alice
            .profile
            .channel_post(&ch, &after)
            .await
            .expect("posted");
        bob.profile.channel_sync(&ch).await.expect("bob reads");
        assert_eq!(
            texts(&bob.profile, &ch),
            vec![before.clone(), after.clone()]
        );
        dave.profile
            .channel_follow(&new_link)
            .await
            .expect("dave follows");
        assert_eq!(texts(&dave.profile, &ch), vec![after]);
        assert_eq!(
            dave.profile.channel_view(&ch).expect("the channel").name,
            "Rotating"
        );
    });
}

/// Photos and files in posts: alice posts a photo (with a caption) and a document through her
/// running service; each is encrypted once and uploaded to the home relay and to the mirror,
/// vouched for by her admin key. Carol, on the mirror's relay, sees the photo's thumbnail and
/// the document's name and size without downloading anything, then downloads the document —
/// and, with the home relay blocked, downloads it again from the mirror's copy, byte for byte.
/// A key that is not an admin's cannot make a channel's blob, and no byte of either file is in
/// any relay's files.
#[test]
fn photos_and_files_reach_followers_and_come_from_the_mirror_too() {
    run(async {
        let mut w = World::new().await;
        let r1 = w.add_relay().await;
        let mut alice = w.person("alice").await;
        let mut carol = w.person_on("carol", r1).await;
        let ch = alice
            .profile
            .channel_create("Pictures", "")
            .await
            .expect("a channel");
        let mirror = w.relay(r1).url.clone();
        alice
            .profile
            .channel_mirror_add(&ch, &mirror)
            .await
            .expect("the mirror is added");
        let link = alice.profile.channel_link(&ch).expect("a link");
        carol
            .profile
            .channel_follow(&link)
            .await
            .expect("carol follows");
        let dir = tempfile::tempdir().expect("a directory");
        let secret = w.text("the budget they did not publish, page one");
        let document = secret.repeat(200).into_bytes();
        let doc = dir.path().join("budget.txt");
        std::fs::write(&doc, &document).expect("write");
        let pic = dir.path().join("bridge.jpg");
        std::fs::write(&pic, crate::messages::photo(800, 600)).expect("write");

        let handle =
            samizdat_core::ClientHandle::start(alice.profile, samizdat_core::Mode::Realtime)
                .expect("alice's service");
        let how = samizdat_core::transfer::SendFile::default();
        let caption = w.text("the bridge tonight");
        let s_photo = handle
            .channel_post_file(&ch, &caption, &pic, &how)
            .await
            .expect("the photo is posted");
        let s_doc = handle
            .channel_post_file(&ch, "", &doc, &how)
            .await
            .expect("the document is posted");

        carol.sync().await;
        let posts = carol.profile.channel_posts(&ch, false).expect("the posts");
        let photo_post = posts.iter().find(|p| p.seq == s_photo).expect("the photo");
        assert_eq!(photo_post.text, caption);
        let f = photo_post.file.as_ref().expect("the photo's file");
        assert!(f.thumbnail && f.width == 800 && f.height == 600, "{f:?}");
        let thumb = carol
            .profile
            .channel_thumbnail(&ch, s_photo)
            .expect("the thumbnail came with the post");
        assert!(thumb.starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG");
        let doc_post = posts.iter().find(|p| p.seq == s_doc).expect("the document");
        let f = doc_post.file.as_ref().expect("the document's file");
        assert_eq!(
            (f.name.as_str(), f.size),
            ("budget.txt", document.len() as u64)
        );
        assert!(!f.thumbnail);

        // A key that is not one of the channel's admins cannot make a blob for it.
        let (stranger, _) = MailboxKey::generate().expect("a key");
        let refused = RelayClient::new(&w.relay(0).url)
            .expect("this step works")
            .create_blob(
                100,
                samizdat_core::relay_client::BlobOwner::Channel {
                    channel: *ch.as_proto(),
                    key: &stranger,
                },
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(Error::Relay {
                    code: ErrorCode::BadSignature,
                    ..
                })
            ),
            "{refused:?}"
        );

        let reader =
            samizdat_core::ClientHandle::start(carol.profile, samizdat_core::Mode::Realtime)
                .expect("carol's service");
        let first = dir.path().join("first.txt");
        let got = reader
            .channel_download(&ch, s_doc, &first)
            .await
            .expect("the document downloads");
        assert_eq!(got.size, document.len() as u64);
        assert_eq!(std::fs::read(&first).expect("read"), document);

        let photo_out = dir.path().join("photo.jpg");
        reader
            .channel_download(&ch, s_photo, &photo_out)
            .await
            .expect("the photo downloads");
        assert!(
            std::fs::read(&photo_out)
                .expect("read")
                .starts_with(&[0xFF, 0xD8, 0xFF])
        );

        w.relay(0).block().await;
        let again = dir.path().join("again.txt");
        reader
            .channel_download(&ch, s_doc, &again)
            .await
            .expect("the document downloads from the mirror");
        assert_eq!(std::fs::read(&again).expect("read"), document);
        w.assert_no_plaintext();
        drop(handle);
    });
}
