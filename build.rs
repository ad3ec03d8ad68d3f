//! Build script: records the git revision for `--version` and the build-info metric.
//!
//! Sets `GIT_REVISION` to the 12-character abbreviated commit hash, or `unknown` when git
//! or the repository is missing (a build from a source tarball).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Emits `GIT_REVISION` and the files whose change should rerun this script.
fn main() {
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo::rustc-env=GIT_REVISION={revision}");
    // Any rerun-if-changed line stops cargo from rerunning this script on every file change.
    println!("cargo::rerun-if-changed=build.rs");
    watch_head();
}

/// Reruns this script when the checked-out commit changes: `HEAD` moves on checkout, and
/// the branch it points to moves on commit (the file, `packed-refs`, or the directory the
/// file will appear in on a branch's first commit).
fn watch_head() {
    let (Some(git_dir), Some(common_dir)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) else {
        return;
    };
    let head = Path::new(&git_dir).join("HEAD");
    watch_if_exists(&head);
    let Ok(content) = std::fs::read_to_string(&head) else {
        return;
    };
    let Some(reference) = content.strip_prefix("ref:").map(str::trim) else {
        return; // Detached HEAD: the file itself holds the commit.
    };
    let reference = Path::new(&common_dir).join(reference);
    if reference.exists() {
        watch_if_exists(&reference);
    } else if let Some(parent) = reference.parent() {
        watch_if_exists(parent);
    }
    watch_if_exists(&Path::new(&common_dir).join("packed-refs"));
}

/// Emits `rerun-if-changed` for `path` if it exists (a missing path would rerun every build).
fn watch_if_exists(path: &Path) {
    if path.exists() {
        println!("cargo::rerun-if-changed={}", PathBuf::from(path).display());
    }
}

/// The trimmed output of a successful git command, or `None`.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}
