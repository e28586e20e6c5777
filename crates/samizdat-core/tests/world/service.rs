//! The service that owns a profile.

use futures_util::FutureExt;
use samizdat_core::testing::World;
use samizdat_core::{ClientHandle, Error, Mode};

use crate::run;

/// `ClientHandle::wipe`: the service stops, closes the profile and deletes its home, answers
/// only then, and every later call says the service stopped.
#[test]
fn the_service_wipes_the_profile_it_owns() {
    run(async {
        let mut w = World::new().await;
        let alice = w.person("alice").await;
        let home = alice.home.clone();
        assert!(home.join("profile.db").exists());
        let handle = ClientHandle::start(alice.profile, Mode::Realtime).expect("a service");
        let other = handle.clone();
        handle.wipe().await.expect("wiped");
        assert!(
            !home.exists(),
            "the profile's home is gone when wipe answers"
        );
        other.stopped().await;
        let after = other
            .call(|p| async move { p.contacts() }.boxed_local())
            .await;
        assert!(matches!(after, Err(Error::Stopped(_))), "{after:?}");
    });
}
