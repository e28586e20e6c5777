//! The MLS adapter's tests: storage split, Welcomes, generation jumps, tokens, forks.

use super::storage::without_tree_index;
use super::*;

thread_local! {
    /// The full state mls-rs last handed to `GroupStore::write` on this thread.
    pub(super) static LAST_FULL_STATE: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `alice` creates `gid` with eight new members in one commit and saves it; the first
/// of them joins (not saved yet). Returns alice's group, the members, the joiner's group.
fn group_of_nine(dir: &std::path::Path, alice: &Mls, gid: &[u8]) -> (Group, Vec<Mls>, Group) {
    let others: Vec<Mls> = (0..8).map(|i| member(dir, &format!("m{i}"))).collect();
    let mut a = alice.create_group(gid).unwrap();
    let kps: Vec<Vec<u8>> = others
        .iter()
        .map(|m| m.key_package(false).unwrap())
        .collect();
    let pending = a.commit(&kps, &[]).unwrap();
    a.apply_pending_commit().unwrap();
    a.save().unwrap();
    let b = joined(&others[0], &pending, 0);
    (a, others, b)
}

fn last_full_state() -> Vec<u8> {
    LAST_FULL_STATE.with(|l| l.borrow().clone())
}

#[test]
fn a_state_stored_without_its_tree_index_reloads_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let alice = member(dir.path(), "alice");
    let gid = [6u8; 16];
    let (a, others, mut b) = group_of_nine(dir.path(), &alice, &gid);
    let full = last_full_state();
    b.save().unwrap();
    let stripped = without_tree_index(&full).expect("mls-rs 0.57's state layout");
    // Nine members' HPKE keys (ML-KEM-768 + X25519), signature keys and identities.
    assert!(
        full.len() - stripped.len() > 9 * 1_200,
        "the index is what was left out: {} of {} B",
        full.len() - stripped.len(),
        full.len()
    );
    let stored = stored(
        &a.db,
        "SELECT base FROM mls_state_bases WHERE group_id = ?1",
        &gid,
    );
    assert_eq!(stored, stripped, "the state is stored without the index");
    // Not this layout (a state with its nodes, garbage, a newer version): stored whole.
    assert_eq!(without_tree_index(&[0, 2, 0, 0]), None);
    assert_eq!(without_tree_index(&full[..64]), None);

    // Reloaded, mls-rs rebuilds the index from the tree: the group encodes to the very
    // same full state, and the index is live (a second leaf with a member's signature
    // key is refused).
    let mut a = alice.load(&gid).unwrap();
    a.inner.write_to_storage_without_ratchet_tree().unwrap();
    assert!(last_full_state() == full, "the reloaded state is the same");
    let again = others[3].key_package(false).unwrap();
    assert!(
        a.commit(&[again], &[]).is_err(),
        "a duplicate member is refused"
    );
    let ct = a.encrypt(b"after reload").unwrap();
    match b.process(&ct).unwrap() {
        Incoming::Application { data, .. } => assert_eq!(data, b"after reload"),
        other => panic!("{other:?}"),
    }
}

fn member(dir: &std::path::Path, name: &str) -> Mls {
    let db = Db::open(&dir.join(format!("{name}.db")), "test passphrase").unwrap();
    let keys = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
    Mls::new(db, &keys.secret, &keys.public, DEFAULT_CIPHERSUITE, None).unwrap()
}

/// Member `i` of a commit's new members joins with its own Welcome and the sealed tree.
fn joined(m: &Mls, pending: &PendingCommit, i: usize) -> Group {
    let nm = pending.welcome.as_ref().unwrap();
    m.join(&nm.welcomes[i], Some(&nm.sealed_tree)).unwrap().0
}

#[test]
fn each_new_member_gets_its_own_small_welcome_and_the_tree_travels_once() {
    let dir = tempfile::tempdir().unwrap();
    let alice = member(dir.path(), "alice");
    let others: Vec<Mls> = (0..6)
        .map(|i| member(dir.path(), &format!("m{i}")))
        .collect();
    let mut a = alice.create_group(&[9; 16]).unwrap();
    let kps: Vec<Vec<u8>> = others
        .iter()
        .map(|m| m.key_package(false).unwrap())
        .collect();
    let pending = a.commit(&kps, &[]).unwrap();
    a.apply_pending_commit().unwrap();
    let nm = pending.welcome.as_ref().unwrap();
    assert_eq!(nm.welcomes.len(), 6);
    // Screening reads who committed and how many members there are, with no tree.
    let seen = others[2].examine(&nm.welcomes[2]).unwrap();
    assert_eq!(seen.group_id, vec![9; 16]);
    assert_eq!(seen.epoch, a.epoch());
    assert_eq!(seen.committer, a.own_fingerprint().unwrap());
    assert_eq!(seen.members, 7);
    // Each Welcome holds one member's secrets: nobody else can use it.
    assert!(others[1].examine(&nm.welcomes[2]).is_err());
    assert!(
        others[1]
            .join(&nm.welcomes[2], Some(&nm.sealed_tree))
            .is_err()
    );
    // Without the tree, or with an altered or foreign one, nobody joins.
    assert!(others[2].join(&nm.welcomes[2], None).is_err());
    let mut bad = nm.sealed_tree.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(others[2].join(&nm.welcomes[2], Some(&bad)).is_err());
    let mut g2 = alice.create_group(&[8; 16]).unwrap();
    let other_commit = g2
        .commit(&[others[3].key_package(false).unwrap()], &[])
        .unwrap();
    let foreign = &other_commit.welcome.as_ref().unwrap().sealed_tree;
    assert!(others[2].join(&nm.welcomes[2], Some(foreign)).is_err());
    // The right pieces join, and the per-member part is small next to the tree.
    let mut c = joined(&others[2], &pending, 2);
    assert_eq!(c.token().unwrap(), a.token().unwrap());
    let ct = a.encrypt(b"hi").unwrap();
    assert!(matches!(c.process(&ct).unwrap(), Incoming::Application { data, .. } if data == b"hi"));
    assert!(nm.welcomes[0].len() < 2_500, "{}", nm.welcomes[0].len());
}

#[test]
fn huge_generation_jumps_are_refused_small_ones_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (member(dir.path(), "alice"), member(dir.path(), "bob"));
    let mut a = alice.create_group(&[1; 16]).unwrap();
    let kp = bob.key_package(false).unwrap();
    let pending = a.commit(&[kp], &[]).unwrap();
    a.apply_pending_commit().unwrap();
    let mut b = joined(&bob, &pending, 0);
    assert_eq!(
        a.token().unwrap(),
        b.token().unwrap(),
        "both derive the same epoch token"
    );

    // A gap of 10 messages (lost or withheld by the relay) is fine.
    let mut last = Vec::new();
    for _ in 0..10 {
        last = a.encrypt(b"skipped").unwrap();
    }
    assert!(matches!(
        b.process(&last).unwrap(),
        Incoming::Application { .. }
    ));
    // A jump beyond mls-rs' bound (1,024 generations) is refused without work or memory
    // proportional to the claimed generation.
    for _ in 0..1100 {
        last = a.encrypt(b"flood").unwrap();
    }
    assert!(b.process(&last).is_err());
    // The refusal is sticky for that sender's chain in this epoch (mls-rs keeps no key
    // that far ahead), but the group still works: the other direction decrypts, and after
    // the next commit (a fresh epoch, fresh chains) so does the flooding sender.
    match a.process(&b.encrypt(b"from bob").unwrap()) {
        Ok(Incoming::Application { data, .. }) => assert_eq!(data, b"from bob"),
        other => panic!("bob's messages no longer decrypt: {other:?}"),
    }
    let update = a.commit(&[], &[]).unwrap();
    a.apply_pending_commit().unwrap();
    assert!(matches!(
        b.process(&update.commit).unwrap(),
        Incoming::Commit { removed: false, .. }
    ));
    let next = a.encrypt(b"after").unwrap();
    match b.process(&next) {
        Ok(Incoming::Application { data, .. }) => assert_eq!(data, b"after"),
        other => panic!("the group no longer works after a refused flood: {other:?}"),
    }
}

fn stored(db: &Db, sql: &str, gid: &[u8]) -> Vec<u8> {
    db.conn()
        .query_row(sql, params![gid], |r| r.get(0))
        .unwrap()
}

#[test]
fn the_tree_is_stored_once_per_epoch_and_state_reloads_from_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("a.db"), "test passphrase").unwrap();
    let keys = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
    let alice = Mls::new(
        db.clone(),
        &keys.secret,
        &keys.public,
        DEFAULT_CIPHERSUITE,
        None,
    )
    .unwrap();
    let gid = [4u8; 16];
    let (mut a, others, mut b) = group_of_nine(dir.path(), &alice, &gid);
    b.save().unwrap();
    // The joiner goes on from what it stored.
    let mut b = others[0].load(&gid).unwrap();

    let tree_sql = "SELECT tree FROM mls_trees WHERE group_id = ?1";
    let state_sql = "SELECT state FROM mls_groups WHERE group_id = ?1";
    let base_sql = "SELECT base_id FROM mls_state_bases WHERE group_id = ?1";
    let base_len_sql = "SELECT length(base) FROM mls_state_bases WHERE group_id = ?1";
    let tree = stored(&db, tree_sql, &gid);
    let base = stored(&db, base_sql, &gid);
    let base_len: i64 = db
        .conn()
        .query_row(base_len_sql, params![&gid[..]], |r| r.get(0))
        .unwrap();
    assert!(
        stored(&db, state_sql, &gid).is_empty(),
        "a new epoch is all base"
    );

    // Messages change a small part of the state: neither the tree nor the base is
    // written again, only what differs from the base.
    for i in 0..3 {
        let ct = a.encrypt(format!("m{i}").as_bytes()).unwrap();
        a.save().unwrap();
        assert!(matches!(
            b.process(&ct).unwrap(),
            Incoming::Application { .. }
        ));
    }
    let delta = stored(&db, state_sql, &gid);
    assert!(
        !delta.is_empty() && (delta.len() as i64) * 4 < base_len,
        "a message stores a small difference: {} B of a {} B state ({} B tree)",
        delta.len(),
        base_len,
        tree.len()
    );
    assert_eq!(
        stored(&db, tree_sql, &gid),
        tree,
        "the tree was not rewritten"
    );
    assert_eq!(
        stored(&db, base_sql, &gid),
        base,
        "the base was not rewritten"
    );

    // A reloaded group goes on where it was: its next message decrypts, it processes a
    // commit, and the commit's new tree replaces the stored one.
    let mut a = alice.load(&gid).unwrap();
    let ct = a.encrypt(b"after reload").unwrap();
    a.save().unwrap();
    match b.process(&ct).unwrap() {
        Incoming::Application { data, .. } => assert_eq!(data, b"after reload"),
        other => panic!("{other:?}"),
    }
    let update = b.commit(&[], &[]).unwrap();
    b.apply_pending_commit().unwrap();
    let mut a = alice.load(&gid).unwrap();
    assert!(matches!(
        a.process(&update.commit).unwrap(),
        Incoming::Commit { .. }
    ));
    a.save().unwrap();
    assert_ne!(
        stored(&db, tree_sql, &gid),
        tree,
        "a commit stores the new tree"
    );
    assert_ne!(stored(&db, base_sql, &gid), base, "and a new base");
    let a = alice.load(&gid).unwrap();
    assert_eq!(a.epoch(), b.epoch());
    assert_eq!(a.token().unwrap(), b.token().unwrap());
}

#[test]
fn a_state_saved_with_its_tree_still_loads_and_is_split_on_its_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("a.db"), "test passphrase").unwrap();
    let keys = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
    let alice = Mls::new(
        db.clone(),
        &keys.secret,
        &keys.public,
        DEFAULT_CIPHERSUITE,
        None,
    )
    .unwrap();
    let bob = member(dir.path(), "bob");
    let gid = [5u8; 16];
    let mut a = alice.create_group(&gid).unwrap();
    let pending = a.commit(&[bob.key_package(false).unwrap()], &[]).unwrap();
    a.apply_pending_commit().unwrap();
    // As a profile before version 11 stored it: the whole snapshot, no tree row.
    a.inner.write_to_storage().unwrap();
    let mut b = joined(&bob, &pending, 0);
    let mut a = alice.load(&gid).unwrap();
    let ct = a.encrypt(b"old format").unwrap();
    a.save().unwrap();
    assert!(matches!(
        b.process(&ct).unwrap(),
        Incoming::Application { .. }
    ));
    let trees: i64 = db
        .conn()
        .query_row("SELECT count(*) FROM mls_trees", [], |r| r.get(0))
        .unwrap();
    assert_eq!(trees, 1, "the next save stored the tree apart");
    let mut a = alice.load(&gid).unwrap();
    let ct = a.encrypt(b"new format").unwrap();
    assert!(matches!(
        b.process(&ct).unwrap(),
        Incoming::Application { .. }
    ));

    // A tree or a base that does not belong to the state is refused, not run on.
    db.conn()
        .execute("UPDATE mls_trees SET tree_hash = x'00'", [])
        .unwrap();
    assert!(matches!(alice.load(&gid), Err(Error::Storage(_))));
    let fresh = Mls::new(
        db.clone(),
        &keys.secret,
        &keys.public,
        DEFAULT_CIPHERSUITE,
        None,
    )
    .unwrap();
    db.conn()
        .execute("UPDATE mls_state_bases SET base_id = x'00'", [])
        .unwrap();
    assert!(fresh.load(&gid).is_err());
}

#[test]
fn removed_member_cannot_derive_the_next_token() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (member(dir.path(), "alice"), member(dir.path(), "bob"));
    let mut a = alice.create_group(&[2; 16]).unwrap();
    let pending = a.commit(&[bob.key_package(false).unwrap()], &[]).unwrap();
    a.apply_pending_commit().unwrap();
    let mut b = joined(&bob, &pending, 0);
    let bob_index = a
        .members()
        .iter()
        .find(|m| m.fingerprint != a.own_fingerprint().unwrap())
        .unwrap()
        .index;
    let removal = a.commit(&[], &[bob_index]).unwrap();
    a.apply_pending_commit().unwrap();
    match b.process(&removal.commit).unwrap() {
        Incoming::Commit { removed, .. } => assert!(removed),
        other => panic!("{other:?}"),
    }
    let secret = a.encrypt(b"after removal").unwrap();
    assert!(b.process(&secret).is_err());
}

#[test]
fn a_fork_is_reported_not_fatal() {
    // A dishonest relay hands carol a different commit for the same epoch than the one
    // alice and bob applied. Carol's state diverges: everything after fails to decrypt
    // (reported to the user as rejected entries), nothing panics, nothing is displayed.
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, carol) = (
        member(dir.path(), "a"),
        member(dir.path(), "b"),
        member(dir.path(), "c"),
    );
    let mut a = alice.create_group(&[3; 16]).unwrap();
    let kps = vec![
        bob.key_package(false).unwrap(),
        carol.key_package(false).unwrap(),
    ];
    let pending = a.commit(&kps, &[]).unwrap();
    a.apply_pending_commit().unwrap();
    let mut b = joined(&bob, &pending, 0);
    let mut c = joined(&carol, &pending, 1);
    // Two commits for the same epoch: alice's (accepted by the honest log) and bob's.
    let from_alice = a.commit(&[], &[]).unwrap();
    let from_bob = b.commit(&[], &[]).unwrap();
    a.apply_pending_commit().unwrap();
    b.clear_pending_commit();
    b.process(&from_alice.commit).unwrap();
    c.process(&from_bob.commit).unwrap(); // the fork
    assert_eq!(a.token().unwrap(), b.token().unwrap());
    assert_ne!(
        a.token().unwrap(),
        c.token().unwrap(),
        "the forked member derives another token"
    );
    let msg = a.encrypt(b"on the honest branch").unwrap();
    assert!(matches!(
        b.process(&msg).unwrap(),
        Incoming::Application { .. }
    ));
    assert!(c.process(&msg).is_err());
}
