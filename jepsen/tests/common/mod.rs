//! Helpers shared by the jepsen crate's integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The DOM of `page` as rendered by headless Chromium, or `None` (with a "skipped" line) when
/// Chromium is not installed. The flags keep it off the network and out of the sandbox it
/// cannot use as root.
pub fn chromium_dom(page: &Path) -> Option<String> {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        eprintln!("skipped: chromium not installed (apt-get install chromium)");
        return None;
    };
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    if !out.status.success() {
        eprintln!("chromium: {}", String::from_utf8_lossy(&out.stderr));
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
