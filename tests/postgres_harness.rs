//! The PostgreSQL test harness itself (`tests/common/postgres.rs`): a real server starts
//! from the template in well under a second, serves several databases, survives fast and
//! immediate shutdowns and `SIGKILL` with its committed data, and leaves no process, no
//! shared memory segment and no directory behind: when dropped, when its test panics,
//! when the test binary exits without dropping it, and when the test process is killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::postgres::{self, PgServer};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A process as /proc knows it: pid and start time (so a reused pid is not mistaken).
type Identity = (u32, u64);

/// The fields of /proc/<pid>/stat after the command: state, ppid, pgrp, ...
fn stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn identity(pid: u32) -> Option<Identity> {
    // Field 22 of stat is the start time; `rest` starts at field 3.
    Some((pid, stat(pid)?.get(19)?.parse().ok()?))
}

fn process_group(pid: u32) -> Option<u32> {
    stat(pid)?.get(2)?.parse().ok()
}

/// Running (or stopped), not exited: zombies do not count.
fn alive(&(pid, started): &Identity) -> bool {
    stat(pid).is_some_and(|fields| {
        fields[0] != "Z" && fields[0] != "X" && fields.get(19) == Some(&started.to_string())
    })
}

fn identities(pids: &[u32]) -> Vec<Identity> {
    pids.iter().filter_map(|pid| identity(*pid)).collect()
}

fn still_alive(identities: &[Identity]) -> Vec<Identity> {
    identities.iter().copied().filter(alive).collect()
}

/// System V shared memory segments created by `pid`: (key, id, attached processes).
fn segments_created_by(pid: u32) -> Vec<(i64, i64, i64)> {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").expect("/proc/sysvipc/shm");
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let f: Vec<i64> = row
                .split_whitespace()
                .take(7)
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 7 && f[4] == i64::from(pid)).then(|| (f[0], f[1], f[6]))
        })
        .collect()
}

/// Rows 1..=1000 committed in table `events` of database `app`.
async fn with_committed_rows(pg: &PgServer) {
    pg.create_database("app").await;
    pg.sql(
        "app",
        "CREATE TABLE events (id bigint PRIMARY KEY, body text NOT NULL);
         INSERT INTO events SELECT n, 'event ' || n FROM generate_series(1, 1000) n;",
    )
    .await;
}

async fn assert_committed_rows(pg: &PgServer) {
    assert_eq!(
        pg.sql("app", "SELECT count(*), sum(id) FROM events").await,
        "1000|500500"
    );
    // And the server takes writes again.
    pg.sql(
        "app",
        "INSERT INTO events VALUES (1001, 'after the restart')",
    )
    .await;
}

#[tokio::test]
async fn starts_a_real_server_with_two_databases() {
    let started = Instant::now();
    let pg = PgServer::start().await;
    eprintln!(
        "server started in {:?} (with initdb if the first)",
        started.elapsed()
    );
    let started = Instant::now();
    let second = PgServer::start().await;
    eprintln!("second server started in {:?}", started.elapsed());
    assert_ne!(second.port(), pg.port());
    drop(second);
    let postmaster = pg.pid().expect("running");

    let alpha = pg.create_database("alpha").await;
    let beta = pg.create_database("beta").await;
    assert_eq!(
        alpha,
        format!(
            "postgres://postgres@127.0.0.1:{}/alpha?sslmode=disable",
            pg.port()
        )
    );
    assert_eq!(beta, pg.url("beta"));
    pg.sql(
        "alpha",
        "CREATE TABLE t (id int PRIMARY KEY, name text); INSERT INTO t VALUES (1, 'one'), (2, 'zwei');",
    )
    .await;
    assert_eq!(
        pg.sql("alpha", "SELECT id, name FROM t ORDER BY id").await,
        "1|one\n2|zwei"
    );
    assert_eq!(
        pg.sql(
            "beta",
            "SELECT count(*) FROM pg_tables WHERE tablename = 't'"
        )
        .await,
        "0"
    );
    assert_eq!(
        pg.admin_sql("SELECT datname FROM pg_database WHERE datname LIKE '%a' ORDER BY 1")
            .await,
        "alpha\nbeta"
    );

    // Its own cluster, durable, on loopback only, UTF-8.
    assert_eq!(
        pg.admin_sql(
            "SELECT current_setting('data_directory'), current_setting('fsync'),
                    current_setting('synchronous_commit'), current_setting('listen_addresses'),
                    current_setting('server_encoding'), current_setting('port')"
        )
        .await,
        format!(
            "{}|on|on|127.0.0.1|UTF8|{}",
            pg.data_dir().display(),
            pg.port()
        )
    );
    // The C.UTF-8 locale where the C library has it (Debian 12 does), else C.
    let ctype = pg
        .admin_sql("SELECT datctype FROM pg_database WHERE datname = 'postgres'")
        .await;
    match ctype.as_str() {
        "C.UTF-8" => assert_eq!(pg.admin_sql("SELECT upper('grün')").await, "GRÜN"),
        "C" => {}
        other => panic!("unexpected LC_CTYPE {other}"),
    }

    // Failures are reported, not swallowed.
    let error = pg.try_sql("alpha", "SELEC 1").await.unwrap_err();
    assert!(error.contains("syntax error"), "{error}");
    let error = pg.try_sql("gamma", "SELECT 1").await.unwrap_err();
    assert!(error.contains("\"gamma\" does not exist"), "{error}");

    // Not root: the server runs as the postgres user when the tests run as root.
    let uid = std::fs::read_to_string(format!("/proc/{postmaster}/status"))
        .expect("status")
        .lines()
        .find_map(|line| line.strip_prefix("Uid:").map(str::to_owned))
        .expect("Uid line");
    assert_ne!(uid.split_whitespace().next(), Some("0"), "{uid}");
}

#[tokio::test]
async fn servers_started_together_are_independent() {
    let started = Instant::now();
    let (a, b, c) = tokio::join!(PgServer::start(), PgServer::start(), PgServer::start());
    eprintln!("three servers started in {:?}", started.elapsed());
    let mut ports = vec![a.port(), b.port(), c.port()];
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    for (pg, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        pg.admin_sql(&format!("CREATE TABLE only_in_{name} ()"))
            .await;
    }
    assert_eq!(
        b.admin_sql(
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE tablename LIKE 'only_in_%'"
        )
        .await,
        "only_in_b"
    );
}

#[tokio::test]
async fn fast_shutdown_and_start_again_keep_committed_data() {
    let pg = PgServer::start().await;
    with_committed_rows(&pg).await;
    let before = pg.pid().expect("running");

    let status = pg.stop_fast().await;
    assert!(status.success(), "fast shutdown exits cleanly: {status}");
    assert_eq!(pg.pid(), None);
    assert!(pg.processes().is_empty(), "{:?}", pg.processes());
    assert!(!pg.data_dir().join("postmaster.pid").exists());
    assert!(pg.log().contains("received fast shutdown request"));
    let error = pg.try_sql("app", "SELECT 1").await.unwrap_err();
    assert!(error.contains("Connection refused"), "{error}");

    let restarted = Instant::now();
    pg.start_again().await;
    eprintln!("restart after a fast shutdown: {:?}", restarted.elapsed());
    assert_ne!(pg.pid(), Some(before));
    assert_committed_rows(&pg).await;
}

#[tokio::test]
async fn sigkill_and_start_again_recover_committed_data() {
    let pg = PgServer::start().await;
    with_committed_rows(&pg).await;
    for round in 1..=2 {
        let postmaster = pg.pid().expect("running");
        let children = identities(&pg.processes());
        assert!(children.len() >= 4, "postmaster and children: {children:?}");

        let status = pg.kill().await;
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
        // The orphaned children exited on their own (or were killed after 2 s).
        assert_eq!(still_alive(&children), vec![]);
        // As after a real crash: the lock file and the shared memory segment stay.
        let pidfile = std::fs::read_to_string(pg.data_dir().join("postmaster.pid"))
            .expect("postmaster.pid is left behind");
        assert_eq!(
            pidfile.lines().next(),
            Some(postmaster.to_string().as_str())
        );
        assert!(!segments_created_by(postmaster).is_empty());

        let restarted = Instant::now();
        pg.start_again().await;
        eprintln!("restart {round} after SIGKILL: {:?}", restarted.elapsed());
        assert!(
            pg.log().contains(
                "database system was not properly shut down; automatic recovery in progress"
            ),
            "{}",
            pg.log()
        );
        // PostgreSQL removed the dead server's segment itself.
        assert_eq!(segments_created_by(postmaster), vec![]);
        assert_eq!(
            pg.sql(
                "app",
                "SELECT count(*), sum(id) FROM events WHERE id <= 1000"
            )
            .await,
            "1000|500500"
        );
    }
    assert_committed_rows(&pg).await;
}

#[tokio::test]
async fn a_crashed_servers_pid_reused_by_another_server_does_not_block_the_restart() {
    let (pg, other) = tokio::join!(PgServer::start(), PgServer::start());
    pg.kill().await;
    // The dead postmaster's pid now belongs to another live postgres process: PostgreSQL
    // alone would refuse to start ("lock file already exists").
    let pidfile = pg.data_dir().join("postmaster.pid");
    let content = std::fs::read_to_string(&pidfile).expect("postmaster.pid");
    let (_, rest) = content.split_once('\n').expect("lines");
    let other_pid = other.pid().expect("running");
    std::fs::write(&pidfile, format!("{other_pid}\n{rest}")).expect("rewrite");
    pg.start_again().await;
    assert!(
        pg.log().contains(&format!(
            "naming pid {other_pid}, which is not this cluster's"
        )),
        "{}",
        pg.log()
    );
    assert_eq!(pg.admin_sql("SELECT 1").await, "1");
    assert_eq!(other.admin_sql("SELECT 1").await, "1");
}

#[tokio::test]
async fn immediate_shutdown_and_start_again_recover_committed_data() {
    let pg = PgServer::start().await;
    with_committed_rows(&pg).await;
    pg.stop_immediate().await;
    assert_eq!(pg.pid(), None);
    assert!(pg.processes().is_empty());
    assert!(pg.log().contains("received immediate shutdown request"));
    let restarted = Instant::now();
    pg.start_again().await;
    eprintln!(
        "restart after an immediate shutdown: {:?}",
        restarted.elapsed()
    );
    assert!(pg.log().contains("automatic recovery in progress"));
    assert_committed_rows(&pg).await;
}

#[tokio::test]
async fn dropping_the_server_leaves_no_process_behind() {
    let pg = PgServer::start().await;
    pg.create_database("app").await;
    let postmaster = pg.pid().expect("running");
    // Its own process group, not the test's; its children are session leaders.
    assert_eq!(process_group(postmaster), Some(postmaster));
    assert_ne!(process_group(std::process::id()), Some(postmaster));
    let processes = identities(&pg.processes());
    assert!(processes.iter().any(|(pid, _)| *pid == postmaster));
    assert!(processes.len() >= 4, "{processes:?}");
    let dir = pg.dir().to_owned();

    drop(pg);
    assert_eq!(still_alive(&processes), vec![]);
    assert_eq!(postgres::cluster_processes(&dir), Vec::<u32>::new());
    assert!(!dir.exists(), "{} is removed", dir.display());
}

#[tokio::test]
async fn dropping_a_killed_server_removes_its_shared_memory() {
    let pg = PgServer::start().await;
    let postmaster = pg.pid().expect("running");
    let dir = pg.dir().to_owned();
    pg.kill().await;
    let left = segments_created_by(postmaster);
    assert!(
        left.len() == 1 && left[0].2 == 0,
        "one unattached segment: {left:?}"
    );
    drop(pg);
    assert_eq!(segments_created_by(postmaster), vec![]);
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_panicking_test_leaves_no_process_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    let test = tokio::spawn(async move {
        let pg = PgServer::start().await;
        tx.send((pg.dir().to_owned(), identities(&pg.processes())))
            .expect("send");
        panic!("a test fails while its server runs (expected in this test)");
    });
    assert!(test.await.expect_err("the test panicked").is_panic());
    let (dir, processes) = rx.recv().expect("the server had started");
    assert!(processes.len() >= 4);
    assert_eq!(still_alive(&processes), vec![]);
    assert!(!dir.exists());
}

#[test]
#[should_panic(
    expected = "PostgreSQL tests need a real PostgreSQL server: apt-get install postgresql"
)]
fn a_missing_installation_fails_with_the_install_hint() {
    postgres::bin_dir_in(Path::new("/nonexistent/usr/lib/postgresql"));
}

const CHILD_ENV: &str = "PGTEST_HARNESS_CHILD";

/// What a child test binary started: its clusters' directories, its template's, and
/// the clusters' processes.
struct ChildServers {
    clusters: Vec<PathBuf>,
    template: PathBuf,
    processes: Vec<Identity>,
}

/// Runs this test binary as a child that starts the shared server and one of its own
/// (never dropped), prints their directories and processes, and then exits (`exit`) or
/// waits to be killed (`hang`).
async fn child_with_servers(mode: &str) -> (tokio::process::Child, ChildServers) {
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_holding_servers",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the test binary runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut dirs, mut pids, mut template) = (Vec::new(), Vec::new(), None);
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some((_, dir)) = line.split_once("@@cluster ") {
                dirs.push(PathBuf::from(dir));
            } else if let Some((_, dir)) = line.split_once("@@template ") {
                template = Some(PathBuf::from(dir));
            } else if let Some((_, pid)) = line.split_once("@@pid ") {
                pids.push(pid.parse::<u32>().expect("pid"));
            } else if line.contains("@@ready") {
                return;
            }
        }
        panic!("the child ended before its servers were ready");
    })
    .await
    .expect("the child's servers are ready within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let processes = identities(&pids);
    assert_eq!(dirs.len(), 2);
    assert!(processes.len() >= 8, "{processes:?}");
    let servers = ChildServers {
        clusters: dirs,
        template: template.expect("the child names its template"),
        processes,
    };
    (child, servers)
}

#[tokio::test]
async fn servers_never_dropped_are_removed_when_the_test_binary_exits() {
    let (mut child, servers) = child_with_servers("exit").await;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the child exits")
        .expect("wait");
    assert!(status.success(), "{status}");
    assert_eq!(still_alive(&servers.processes), vec![]);
    for dir in servers.clusters.iter().chain([&servers.template]) {
        assert!(!dir.exists(), "{} is removed at exit", dir.display());
    }
}

#[tokio::test]
async fn servers_die_with_a_killed_test_process() {
    let (mut child, servers) = child_with_servers("hang").await;
    child
        .kill()
        .await
        .expect("SIGKILL to the child test process");
    // The postmasters get SIGKILL (parent-death signal), their children follow.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !still_alive(&servers.processes).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(still_alive(&servers.processes), vec![]);
    // Only the directories (and the crashed clusters' segments) stay: tidy up.
    for dir in &servers.clusters {
        assert!(dir.exists());
        postgres::remove_cluster(dir);
        assert!(!dir.exists());
    }
    std::fs::remove_dir_all(&servers.template).expect("the child's template");
}

/// The child of the two tests above; does nothing when run otherwise.
#[tokio::test]
#[ignore = "run in a child process by the two tests above"]
async fn child_holding_servers() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let shared = PgServer::shared().await;
    assert!(std::ptr::eq(shared, PgServer::shared().await));
    shared.create_database("shared_one").await;
    let own = PgServer::start().await;
    for pg in [shared, &own] {
        println!("@@cluster {}", pg.dir().display());
        for pid in pg.processes() {
            println!("@@pid {pid}");
        }
    }
    println!("@@template {}", postgres::template_dir().display());
    println!("@@ready");
    match mode.as_str() {
        "exit" => std::mem::forget(own),
        _ => tokio::time::sleep(Duration::from_secs(120)).await,
    }
}
