//! Channels from the command line (issue 34): `channel create`, `post`, `link` (last stdout
//! line), `follow`, `read [--json]`, `mirror add`, `list [--json]`, `post --file`, `download`,
//! with the home relay killed half way: the follower reads on, and downloads, from the mirror.

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

    // A file with a caption: uploaded to the home relay and the mirror.
    let leaflet = w.text("the leaflet the council did not print");
    let file = w.dir.path().join("leaflet.txt");
    std::fs::write(&file, leaflet.repeat(50)).expect("write");
    let caption = w.text("read and pass it on");
    let posted = alice.ok(&[
        "channel",
        "post",
        &name,
        &caption,
        "--file",
        file.to_str().expect("utf-8"),
    ]);
    assert!(posted.contains("post 2"), "{posted}");

    // The home relay dies after a third post: bob reads it, and the file, from the mirror.
    let second = w.text("the market closes early today");
    alice.ok(&["channel", "post", &name, &second]);
    w.relay.kill();
    let shown = bob.ok(&["channel", "read", &name]);
    assert!(shown.contains(&second), "{shown}");
    assert!(shown.contains("[file: leaflet.txt"), "{shown}");
    let posts = json_lines(&bob.ok(&["channel", "read", &name, "--json"]));
    let with_file = posts.iter().find(|p| p["seq"] == 2).expect("post 2");
    assert_eq!(with_file["text"], caption.as_str());
    assert_eq!(with_file["file"]["name"], "leaflet.txt");
    let out = w.dir.path().join("saved");
    std::fs::create_dir_all(&out).expect("mkdir");
    let saved = bob.ok(&[
        "channel",
        "download",
        &name,
        "2",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(saved.contains("saved"), "{saved}");
    assert_eq!(
        std::fs::read_to_string(out.join("leaflet.txt")).expect("the file"),
        leaflet.repeat(50)
    );
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
