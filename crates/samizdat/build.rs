//! Embeds every `locales/*.ftl` file: the app and the CLI speak each language found there, so a
//! new language is one new file (its `language-name` message names it in the switcher).

use std::fmt::Write;
use std::path::PathBuf;

fn main() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir")).join("locales");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut codes: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("locales/")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let code = path.file_stem()?.to_str()?.to_string();
            (path.extension()? == "ftl").then_some((code, path))
        })
        .collect();
    // English first: it is the fallback and the CLI's language.
    codes.sort_by_key(|(code, _)| (code != "en", code.clone()));
    assert!(
        codes.first().is_some_and(|(c, _)| c == "en"),
        "locales/en.ftl is required"
    );
    let mut out =
        String::from("/// Every language: its code and its Fluent source (English first).\n");
    out.push_str("pub const LOCALES: &[(&str, &str)] = &[\n");
    for (code, path) in &codes {
        println!("cargo:rerun-if-changed={}", path.display());
        let _ = writeln!(
            out,
            "    ({code:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let target = PathBuf::from(std::env::var("OUT_DIR").expect("out dir")).join("locales.rs");
    std::fs::write(target, out).expect("write locales.rs");
}
