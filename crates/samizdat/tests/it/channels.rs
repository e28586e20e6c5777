//! Channels from the command line (issue 34): `channel create`, `post`, `link` (last stdout
//! line), `follow`, `read [--json]`, `mirror add`, `list [--json]`, with the home relay killed
//! half way: the follower reads on from the mirror.

use serde_json::Value;

use crate::World;
use crate::harness::RelayProc;

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn a_channel_from_the_command_line_read_on_from_its_mirror() {
    let mut w = World::new();
    let mirror = RelayProc::start(&w.dir.path().join("mirror"), "127.0.0.1:0");
    let [alice, bob] = w.people(["alice", "bob"]);
    let name = w.text("Evening Courier");
    let created = alice.ok(&["channel", "create", &name, "--about", "the town's news"]);
    assert!(created.contains("created"), "{created}");
    alice.ok(&["channel", "mirror", "add", &name, &mirror.url]);
    let link_out = alice.ok(&["channel", "link", &name]);
    let link = link_out
        .lines()
        .last()
        .expect("the link is the last line")
        .to_string();
    assert!(link.starts_with("samizdat://channel/v1/"), "{link}");

    let first = w.text("the market opens at eight");
    let posted = alice.ok(&["channel", "post", &name, &first]);
    assert!(posted.contains("post 1"), "{posted}");
    let followed = bob.ok(&["channel", "follow", &link]);
    assert!(followed.contains("1 unread"), "{followed}");
    let list = json_lines(&bob.ok(&["channel", "list", "--json"]));
    assert_eq!(list[0]["name"], name.as_str());
    assert_eq!(list[0]["admin"], false);
    assert_eq!(list[0]["relays"].as_array().expect("relays").len(), 2);
    let posts = json_lines(&bob.ok(&["channel", "read", &name, "--json"]));
    assert_eq!(posts[0]["text"], first.as_str());
    assert_eq!(
        json_lines(&bob.ok(&["channel", "list", "--json"]))[0]["unread"],
        0
    );

    // bob cannot post: a clear one-line refusal.
    let err = bob.fails(&["channel", "post", &name, "not mine to say"]);
    assert!(err.contains("admin"), "{err}");

    // The home relay dies after a second post: bob reads it from the mirror.
    let second = w.text("the market closes early today");
    alice.ok(&["channel", "post", &name, &second]);
    w.relay.kill();
    let shown = bob.ok(&["channel", "read", &name]);
    assert!(shown.contains(&second), "{shown}");
    w.assert_no_plaintext();
    for f in walk(&mirror.data) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for s in &w.secrets {
            assert!(
                !bytes.windows(s.len()).any(|win| win == s.as_bytes()),
                "{s:?} in the mirror's {}",
                f.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
