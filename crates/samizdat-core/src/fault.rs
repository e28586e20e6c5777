//! Fault points for the tests (crashes, lying clients, lost Welcomes, paused transfers).
//!
//! They exist only in builds with the `fault-injection` feature, which only the test builds
//! turn on (the `samizdat` crate's dev-dependencies): a release binary carries neither the
//! hooks nor their variable names, so a stray environment variable cannot wreck a group
//! (security review 3, L4; CI checks `strings target/release/samizdat`).

/// The value of the fault point `name` (the environment variable `SAMIZDAT_TEST_<name>`), or
/// `None` — always `None` without the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub(crate) fn point(name: &str) -> Option<String> {
    // The in-process test world sets its points itself (one process holds every person).
    #[cfg(feature = "testing")]
    if let Some(v) = crate::testing::fault(name) {
        return Some(v);
    }
    std::env::var(format!("SAMIZDAT_TEST_{name}")).ok()
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn point(_name: &str) -> Option<String> {
    None
}

/// Whether the fault point `name` is set to `1`.
pub(crate) fn on(name: &str) -> bool {
    point(name).is_some_and(|v| v == "1")
}
