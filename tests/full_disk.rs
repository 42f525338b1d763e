//! A full disk under the message log: persistent publishes that cannot be
//! written are nacked, the broker keeps serving everything else, and what it
//! confirmed before the disk filled up is still there after a restart.
//!
//! The data directory is a small tmpfs mounted for the test, which needs
//! root (as CI and the development machines run); without the privilege the
//! test says so and does nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

/// A tmpfs of `mb` MiB, unmounted (and its mount point removed) on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(mb: u32) -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(unique("full-disk"));
        std::fs::create_dir_all(&dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(SmallDisk(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn start_on(path: &Path) -> lepus::Server {
    let mut config = in_process_config(path);
    config.shards = 1;
    // The disk alarm would block publishers long before the disk is full;
    // this test is about what happens when it is full all the same.
    config.disk_free_limit_bytes = 0;
    lepus::Server::start(config).expect("lepus starts on the small disk")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_persistent_publishes_and_keeps_what_it_confirmed() {
    if external() {
        return;
    }
    let Some(disk) = SmallDisk::mount(4) else {
        eprintln!("full_disk: cannot mount a tmpfs here (not root?); nothing tested");
        return;
    };
    let server = start_on(disk.path());
    let addr = server.local_addrs()[0];
    let conn = lapin_conn_addr(addr).await;
    let ch = conn.create_channel().await.expect("channel");
    let queue = unique("full");
    declare_durable(&ch, &queue).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let body = vec![7u8; 16 * 1024];
    let props = BasicProperties::default().with_delivery_mode(2);
    let (mut acked, mut nacked) = (0u32, 0u32);
    // 4 MiB cannot take 1000 × 16 KiB: the log runs out of space on the way.
    for _ in 0..1000 {
        let confirm = ch
            .basic_publish("", &queue, BasicPublishOptions::default(), &body, props.clone())
            .await
            .expect("publish");
        if within("confirm", confirm).await.expect("confirmation").is_ack() {
            acked += 1;
        } else {
            nacked += 1;
        }
    }
    assert!(nacked > 0, "a full disk must refuse some publishes ({acked} acked)");
    assert!(acked > 0, "the first publishes fit");
    // Everything else still works: transient messages, other channels.
    let other = unique("transient");
    let ch2 = conn.create_channel().await.expect("a new channel");
    ch2.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch2.queue_declare(&other, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    publish_confirmed(&ch2, "", &other, "still here", BasicProperties::default()).await;
    assert_eq!(drain(&ch2, &other).await, ["still here"]);
    drop(conn);
    server.shutdown();
    // After a restart every acked message is there (nacked ones may be too).
    let server = start_on(disk.path());
    let conn = lapin_conn_addr(server.local_addrs()[0]).await;
    let recovered = queue_len(&conn, &queue).await;
    assert!(recovered >= acked, "{recovered} recovered, {acked} were confirmed");
    drop(conn);
    server.shutdown();
}
