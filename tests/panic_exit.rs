//! A panic on a broker thread ends the whole process at once (exit status
//! 70, one clear log line) instead of leaving a broker with a dead shard
//! whose connections hang. Panics on threads the broker does not own are
//! left alone.
//!
//! The test runs itself as a child process (this test binary, filtered to
//! one test, with `LEPUS_PANIC_CHILD` set): the child starts a broker
//! in-process and panics on a thread named as the broker names its threads.

mod common;

use std::process::Command;
use std::time::Duration;

const CHILD_ENV: &str = "LEPUS_PANIC_CHILD";

#[test]
fn a_panic_on_a_broker_thread_exits_the_process_with_70() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // The child exits without dropping its broker, so its temporary data
    // directory is made in one this process removes.
    let tmp = tempfile::Builder::new().prefix("lepus-test-panic-").tempdir().expect("temporary directory");
    let output = Command::new(exe)
        .args(["--exact", "a_panic_on_a_broker_thread_exits_the_process_with_70", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp.path())
        .output()
        .expect("the child runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(lepus::server::PANIC_EXIT_CODE),
        "status {}; stdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains("a deliberate panic on lepus-shard-7"),
        "the panic message is printed:\n{stderr}"
    );
    assert!(
        stderr.contains(
            "broker thread lepus-shard-7 panicked; exiting so that a supervisor restarts the broker"
        ),
        "the exit is explained:\n{stderr}"
    );
    assert!(!stdout.contains("the child went on"), "nothing runs after the panic:\n{stdout}");
}

/// In the child: a broker (which installs the hook), a panic on a thread
/// that is not the broker's (which must not end the process), then one on a
/// thread named like a shard (which must). Never returns normally.
fn child() -> ! {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).try_init();
    let broker = common::start_broker();
    let other = std::thread::Builder::new()
        .name("not-the-broker".into())
        .spawn(|| panic!("a panic on a thread of the embedding program"))
        .expect("spawn");
    assert!(other.join().is_err(), "the embedding program's panic unwinds as usual");
    let shard = std::thread::Builder::new()
        .name("lepus-shard-7".into())
        .spawn(|| panic!("a deliberate panic on lepus-shard-7"))
        .expect("spawn");
    // The hook exits the process while this thread waits; the join and what
    // follows never happen.
    let _ = shard.join();
    std::thread::sleep(Duration::from_millis(100));
    println!("the child went on");
    drop(broker);
    std::process::exit(0);
}
