//! Behaviour tests in one process (`samizdat_core::testing::World`): relays on SQLite in a
//! temporary directory, profiles that stay open, the profile clock moved instead of slept.
//! Each test is the in-process form of one that used to spawn a process per command.

mod calls;
mod channels;
mod delivery;
mod devices;
mod groups;
mod hostile;
mod messages;
mod relays;
mod service;

/// One runtime per test (nextest runs each test in a process of its own). The test's future
/// lives on the heap: a device link holds two profiles' sync futures at once, more than a
/// test thread's stack in a debug build.
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(Box::pin(f))
}
