-- Version 11: MLS state written per epoch, not per message.
--
-- mls-rs hands the storage a whole group snapshot after every operation. For a large group
-- that is megabytes (the ratchet tree, about 2.6 KB per member with the post-quantum suite,
-- and mls-rs' index of the members' keys, about 1.3 KB per member), while a message changes
-- only a few kilobytes at its end (the epoch's secret tree). So:
--
-- * `mls_trees`: the ratchet tree, written once per epoch, named by the tree hash in the
--   state's group context. `mls_groups` then holds the state without the tree.
-- * `mls_state_bases`: a snapshot written once per epoch (or when the change since grew
--   large). `mls_groups.state` is then only what differs from it: the state is
--   `base[..base_len] ‖ state` of the base named `base_id`. A row without `base_id` holds
--   the whole snapshot (as before version 11).
--
-- Everything is written in one savepoint, so a crash never mixes two epochs.
CREATE TABLE mls_trees (
    group_id BLOB PRIMARY KEY,
    tree_hash BLOB NOT NULL,
    tree BLOB NOT NULL
);
CREATE TABLE mls_state_bases (
    group_id BLOB PRIMARY KEY,
    base_id BLOB NOT NULL,
    base BLOB NOT NULL
);
ALTER TABLE mls_groups ADD COLUMN base_id BLOB;
ALTER TABLE mls_groups ADD COLUMN base_len INTEGER;
