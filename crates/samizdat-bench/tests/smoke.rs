//! The benchmark binary runs and reports measured figures (its own process, its own crate).

use std::process::Command;

#[test]
fn mls_benchmark_reports_figures_for_both_sides() {
    let out = Command::new(env!("CARGO_BIN_EXE_samizdat-bench"))
        .args(["mls", "--members", "10", "--messages", "3", "--json"])
        .output()
        .expect("runs samizdat-bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["benchmark"], "mls");
    let ops = report["results"][0]["ops"].as_array().expect("ops");
    assert!(ops.len() >= 4, "{report}");
    for op in ops {
        for side in ["core_ms", "raw_ms"] {
            let ms = op[side].as_f64().expect("a number");
            assert!(ms > 0.0, "{side} of {} is {ms}", op["op"]);
        }
    }
}
