//! Storage faults: a full disk answers 503 (never a false 2xx), fails `/readyz`, counts
//! the failures, and recovers by itself when space returns; a corrupt or incompatible
//! database at start-up is a clear error naming the file, never a silent reset.
//!
//! The full-disk test mounts a small tmpfs, so it needs root (as CI has).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cloud66_ssl_exporter::config::AppConfig;
use cloud66_ssl_exporter::{App, DB_FILE};
use common::*;
use serde_json::json;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(path.to_owned())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount runs");
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn big_event(i: usize) -> String {
    // About 40 KB, so a few dozen fill the disk.
    let domains: Vec<String> = (0..2000).map(|d| format!("d{d}-{i}.example.com")).collect();
    payload(
        "ssl_certificate.install.ok",
        i as i64,
        3,
        &format!("big-{i}"),
        json!({"server_names": domains.join(",")}),
    )
}

#[tokio::test]
async fn a_full_disk_gets_503_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), "1m");
    let server = TestServer::start(&disk.0).await;
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let reply = server.post_event(&big_event(i)).await;
        match reply.status {
            200 => acknowledged.push(i),
            503 => {
                let error = reply.json()["error"].as_str().expect("error").to_owned();
                assert!(error.starts_with("event not stored"), "{error}");
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!(refused, 3, "the disk filled up");
    assert!(!acknowledged.is_empty());
    assert_eq!(
        request(server.addr, "GET", "/readyz", &[], "").await.status,
        503
    );
    let m = server.metrics().await;
    assert!(
        sample(&m, "cloud66_ssl_exporter_storage_commit_failures_total").expect("counter") >= 3.0
    );
    for i in &acknowledged {
        let series = cert_series("ssl_install_successes_total", "3", &format!("big-{i}"));
        assert_eq!(
            sample(&m, &series),
            Some(1.0),
            "acknowledged event {i} is counted"
        );
    }
    assert_eq!(
        sample(&m, "cloud66_ssl_exporter_certificates"),
        Some(acknowledged.len() as f64),
        "refused events are not counted"
    );

    disk.resize("64m");
    assert_eq!(
        request(server.addr, "GET", "/readyz", &[], "").await.status,
        200
    );
    let reply = server.post_event(&big_event(1000)).await;
    assert_eq!(reply.status, 200, "recovered by itself: {}", reply.body);
    server.stop().await;

    // Everything acknowledged, and nothing else, is there after a restart.
    let server = TestServer::start(&disk.0).await;
    let m = server.metrics().await;
    assert_eq!(
        sample(&m, "cloud66_ssl_exporter_certificates"),
        Some(acknowledged.len() as f64 + 1.0)
    );
    server.stop().await;
}

async fn open_error(dir: &Path) -> String {
    match App::open(AppConfig::new(dir)).await {
        Ok(_) => panic!("opened a database that should have been refused"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_corrupt_database_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join(DB_FILE);
    std::fs::write(&db, vec![0x42; 8192]).expect("write garbage");
    let error = open_error(dir.path()).await;
    assert!(error.contains(&db.display().to_string()), "{error}");
    assert!(error.contains("not a database"), "{error}");
    assert_eq!(
        std::fs::read(&db).expect("still there"),
        vec![0x42; 8192],
        "never reset"
    );

    // The binary says so on stderr and exits 1.
    let output = Command::new(env!("CARGO_BIN_EXE_cloud66-ssl-exporter"))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg(format!("--storage.path={}", dir.path().display()))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(DB_FILE) && stderr.contains("not a database"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join(DB_FILE);
    let conn = rusqlite::Connection::open(&db).expect("create");
    conn.pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(conn);
    let error = open_error(dir.path()).await;
    assert!(error.contains(&db.display().to_string()), "{error}");
    assert!(error.contains("schema version 99"), "{error}");
}

#[tokio::test]
async fn a_second_exporter_on_the_same_store_exits_naming_the_directory_and_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Exporter::spawn(dir.path(), &["--webhook.insecure-no-auth"]).await;
    let first_pid = first.child.id().expect("first runs");
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloud66-ssl-exporter"))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg(format!("--storage.path={}", dir.path().display()))
        .arg("--webhook.insecure-no-auth")
        .stdin(std::process::Stdio::null())
        .output();
    let second = tokio::time::timeout(std::time::Duration::from_secs(30), second)
        .await
        .expect("the second exporter exits at once")
        .expect("it runs");
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("level=error"))
        .collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(
        errors[0].contains(&format!(
            "cannot lock storage directory {}",
            dir.path().display()
        )) && errors[0].contains(&format!("PID {first_pid}")),
        "{stderr}"
    );
    // The first keeps serving; once it is gone the store is free again.
    let reply = request(first.addr, "GET", "/readyz", &[], "").await;
    assert_eq!(reply.status, 200);
    first.kill().await;
    let again = Exporter::spawn(dir.path(), &["--webhook.insecure-no-auth"]).await;
    let reply = request(again.addr, "GET", "/readyz", &[], "").await;
    assert_eq!(
        reply.status, 200,
        "a lock dies with its process, even after kill -9"
    );
    again.kill().await;
}
