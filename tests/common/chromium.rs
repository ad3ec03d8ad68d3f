//! The real headless Chromium, driven from the command line, for the status page tests:
//! the DOM it rendered (`--dump-dom`), with JavaScript on or off, and screenshots.
//!
//! Every run gets a fresh temporary profile, runs as a child process in a process group
//! of its own with a hard timeout, and is killed (the whole group, by its PID) when it
//! hangs, when it is done, and when the test panics: no Chromium outlives its run. At
//! most [`MAX_PARALLEL`] runs at once, whatever the number of test threads.
//!
//! JavaScript is switched off through the profile's content settings (the default
//! `javascript` setting "block"), not with `--blink-settings=scriptEnabled=false`: that
//! flag also stops the DevTools evaluation `--dump-dom` relies on, and Chromium then
//! prints nothing and exits 0.
//!
//! Chromium is noisy on stderr (D-Bus, GPU, ...): stderr is shown when a run fails,
//! never taken as a failure by itself. A failure is a non-zero exit, a timeout, a page
//! that did not load (`Page load failed` on stderr), or no DOM at all.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use scraper::{ElementRef, Html, Selector};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;

/// The longest one Chromium run may take before it is killed and the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Chromium processes at most at once (the machines running these tests may have two
/// cores, shared with the exporter under test).
pub const MAX_PARALLEL: usize = 2;

static SLOTS: Semaphore = Semaphore::const_new(MAX_PARALLEL);

/// Flags of every run: headless, no sandbox (tests may run as root in a container), and
/// nothing that reaches the network or a desktop.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--no-proxy-server",
];

/// The profile preferences that block JavaScript on every site.
const NO_JAVASCRIPT_PREFERENCES: &str =
    r#"{"profile":{"default_content_setting_values":{"javascript":2}}}"#;

/// The Chromium binary on PATH (`chromium`, else `chromium-browser`). Never skips: fails
/// the test saying how to install it.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "neither `chromium` nor `chromium-browser` found on PATH. The status page tests \
         render the pages in a real headless Chromium: apt-get install chromium"
    );
}

/// The DOM Chromium built for `url`, serialized, with JavaScript on.
pub async fn dump_dom(url: &str) -> String {
    run_dump(url, true, TIMEOUT).await
}

/// The DOM Chromium built for `url` with JavaScript off for every site.
pub async fn dump_dom_without_javascript(url: &str) -> String {
    run_dump(url, false, TIMEOUT).await
}

/// [`dump_dom`] with another timeout (to prove that a hanging run is killed).
pub async fn dump_dom_within(url: &str, timeout: Duration) -> String {
    run_dump(url, true, timeout).await
}

/// A `width`×`height` screenshot of `url` (JavaScript on) written as PNG to `path`;
/// checks that the file is a non-empty PNG.
pub async fn screenshot(url: &str, path: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(path);
    let run = run(
        url,
        &[
            format!("--screenshot={}", path.display()),
            format!("--window-size={width},{height}"),
        ],
        true,
        TIMEOUT,
    )
    .await;
    run.check_loaded(url);
    let png = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "Chromium wrote no screenshot of {url} to {}: {e}\nstderr:\n{}",
            path.display(),
            run.stderr
        )
    });
    assert!(
        png.len() > 8 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot of {url} at {} is not a PNG ({} bytes)",
        path.display(),
        png.len()
    );
}

async fn run_dump(url: &str, javascript: bool, timeout: Duration) -> String {
    let run = run(url, &["--dump-dom".to_owned()], javascript, timeout).await;
    run.check_loaded(url);
    assert!(
        run.stdout.contains("<html") && run.stdout.contains("</html>"),
        "Chromium printed no DOM for {url} (JavaScript {}): {:?}\nstderr:\n{}",
        if javascript { "on" } else { "off" },
        run.stdout,
        run.stderr
    );
    run.stdout
}

/// What one finished run printed.
struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    /// Fails when Chromium says the page did not load (it still exits 0 then).
    fn check_loaded(&self, url: &str) {
        assert!(
            !self.stderr.contains("Page load failed"),
            "Chromium could not load {url}\nstderr:\n{}",
            self.stderr
        );
    }
}

/// Kills the process group `pgid` (SIGKILL) when dropped: the browser and every helper
/// process it started in its group.
struct KillGroup {
    pgid: u32,
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        // `kill -KILL -- -PGID`: the group whose id is the browser's PID. A group that is
        // already gone is not an error here.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pgid)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Reads `pipe` to its end into a buffer the caller can look at meanwhile.
fn drain(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
) -> (Arc<Mutex<Vec<u8>>>, tokio::task::JoinHandle<()>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buffer);
    let task = tokio::spawn(async move {
        let Some(mut pipe) = pipe else { return };
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n) = pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&chunk[..n]);
        }
    });
    (buffer, task)
}

fn text_of(buffer: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// One Chromium run on `url` with `extra` flags; fails the test on a timeout or a
/// non-zero exit.
async fn run(url: &str, extra: &[String], javascript: bool, timeout: Duration) -> Run {
    let binary = binary();
    let _slot = SLOTS
        .acquire()
        .await
        .expect("the Chromium semaphore is never closed");
    let profile = tempfile::tempdir().expect("a temporary Chromium profile");
    let user_data = profile.path().join("profile");
    let default = user_data.join("Default");
    std::fs::create_dir_all(&default).expect("profile directory");
    if !javascript {
        std::fs::write(default.join("Preferences"), NO_JAVASCRIPT_PREFERENCES)
            .expect("profile preferences");
    }
    let mut command = tokio::process::Command::new(&binary);
    command
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", user_data.display()))
        .args(extra)
        .arg(url)
        // Nothing of the developer's desktop configuration, nothing written to it.
        .env("XDG_CONFIG_HOME", profile.path().join("config"))
        .env("XDG_CACHE_HOME", profile.path().join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let pid = child.id().expect("a running child has a PID");
    let group = KillGroup { pgid: pid };
    let (stdout, stdout_task) = drain(child.stdout.take());
    let (stderr, stderr_task) = drain(child.stderr.take());
    let status: ExitStatus = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.expect("waiting for Chromium"),
        Err(_) => {
            drop(group);
            let _ = child.kill().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), stderr_task).await;
            panic!(
                "Chromium (PID {pid}) did not finish {url} within {} s and was killed\n\
                 stderr:\n{}",
                timeout.as_secs(),
                text_of(&stderr)
            );
        }
    };
    // Helpers still in the group (there should be none) go now, so that the pipes close.
    drop(group);
    for task in [stdout_task, stderr_task] {
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            panic!(
                "Chromium (PID {pid}) exited on {url} but its output did not end\nstderr:\n{}",
                text_of(&stderr)
            );
        }
    }
    let run = Run {
        stdout: text_of(&stdout),
        stderr: text_of(&stderr),
    };
    assert!(
        status.success(),
        "Chromium failed on {url}: {status}\nstderr:\n{}",
        run.stderr
    );
    drop(profile);
    run
}

/// The processes of process group `pgid` that still run (zombies left out), from
/// `/proc`: what a finished or killed run must not leave behind.
pub fn live_group_members(pgid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let (state, pgrp) = (*fields.first()?, fields.get(2)?.parse::<u32>().ok()?);
            (pgrp == pgid && state != "Z" && state != "X").then_some(stat)
        })
        .collect()
}

/// A CSS selector; panics on a malformed one (a bug in the test).
pub fn selector(css: &str) -> Selector {
    Selector::parse(css).unwrap_or_else(|e| panic!("bad selector {css:?}: {e}"))
}

/// The text of `element`, whitespace runs collapsed to one space, trimmed.
pub fn text(element: ElementRef<'_>) -> String {
    element
        .text()
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text of `element` exactly as in the DOM (no whitespace collapsed).
pub fn raw_text(element: ElementRef<'_>) -> String {
    element.text().collect()
}

/// Elements under `element` matching `css`.
pub fn within<'a>(element: ElementRef<'a>, css: &str) -> Vec<ElementRef<'a>> {
    element.select(&selector(css)).collect()
}

/// The one element under `element` matching `css`; panics when there is not exactly one.
pub fn one_within<'a>(element: ElementRef<'a>, css: &str) -> ElementRef<'a> {
    let found = within(element, css);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {css:?} in {}",
        element.html()
    );
    found[0]
}

/// A DOM Chromium dumped, parsed.
pub struct Dom {
    /// The serialized DOM as Chromium printed it.
    pub source: String,
    /// The same, parsed.
    pub html: Html,
}

impl Dom {
    /// Parses a dumped DOM.
    pub fn parse(source: String) -> Dom {
        let html = Html::parse_document(&source);
        Dom { source, html }
    }

    /// Loads `url` in Chromium (JavaScript on) and parses what it rendered.
    pub async fn load(url: &str) -> Dom {
        Dom::parse(dump_dom(url).await)
    }

    /// Loads `url` in Chromium with JavaScript off and parses what it rendered.
    pub async fn load_without_javascript(url: &str) -> Dom {
        Dom::parse(dump_dom_without_javascript(url).await)
    }

    /// Every element matching `css`, in document order.
    pub fn select(&self, css: &str) -> Vec<ElementRef<'_>> {
        self.html.select(&selector(css)).collect()
    }

    /// The one element matching `css`; panics when there is not exactly one.
    pub fn one(&self, css: &str) -> ElementRef<'_> {
        let found = self.select(css);
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {css:?}, found {}",
            found.len()
        );
        found[0]
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.select(css).len()
    }

    /// The texts (whitespace collapsed) of every element matching `css`.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.select(css).into_iter().map(text).collect()
    }

    /// The text (whitespace collapsed) of the one element matching `css`.
    pub fn text(&self, css: &str) -> String {
        text(self.one(css))
    }

    /// The `name` attribute of every element matching `css` (missing ones left out).
    pub fn attrs(&self, css: &str, name: &str) -> Vec<String> {
        self.select(css)
            .into_iter()
            .filter_map(|e| e.attr(name).map(str::to_owned))
            .collect()
    }

    /// The `name` attribute of the one element matching `css`, if it has one.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.one(css).attr(name).map(str::to_owned)
    }
}
