//! The OpenRPC document and the line protocol's limits.

use super::*;

#[test]
fn openrpc_lists_every_method_with_resolvable_refs() {
    let doc = openrpc();
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, METHODS);
    let text = doc.to_string();
    assert!(!text.contains("#/definitions/"), "unrewritten refs");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').expect("end of ref")];
        assert!(schemas.contains_key(name), "dangling ref {name}");
    }
    let send = doc["methods"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "send"))
        .expect("send");
    let text_param = send["params"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "text"))
        .expect("text param");
    // Optional in the schema: a file may go without a caption (the handler refuses a
    // send with neither, as invalid params).
    assert_ne!(text_param["required"], true);
    assert!(
        send["params"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "file")),
        "send documents its file parameter"
    );
}

#[test]
fn core_errors_map_to_stable_codes() {
    let e = RpcError::from(Error::NotFound("x".into()));
    assert_eq!(
        (e.code, e.data.as_ref().map(|d| d["kind"].clone())),
        (codes::NOT_FOUND, Some(json!("not_found")))
    );
    let e = RpcError::from(Error::RelayUnreachable("r".into()));
    assert_eq!(e.code, codes::RELAY_UNREACHABLE);
}
