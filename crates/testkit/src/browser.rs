//! Real headless Chromium, driven over WebDriver, for tests of what a
//! browser does with the service: its EventSource, its fetch, its page.
//!
//! [`Browser::start`] starts Debian's `chromedriver` on a free port and
//! opens a session with `fantoccini`; Chromium runs headless with a fresh
//! profile in a temporary directory. Dropping the [`Browser`] kills
//! chromedriver and the Chromium it started (one process group) and
//! removes the profile. Screenshots go to `target/browser-artifacts/`,
//! one per test, kept after the run for a person to look at.
//!
//! Nothing here waits without a deadline: a test that drives a browser
//! must end, pass or fail, whatever the browser does.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::{free_port, unique_prefix};

/// How long chromedriver and Chromium get to start and open a session.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How often [`Browser::wait_for`] asks the page.
const POLL: Duration = Duration::from_millis(50);

/// Where Debian's packages put the two programs; `PATH` is searched too.
const CHROMIUM: [&str; 3] = ["/usr/bin/chromium", "chromium", "chromium-browser"];
const CHROMEDRIVER: [&str; 2] = ["/usr/bin/chromedriver", "chromedriver"];

/// One headless Chromium for one test.
pub struct Browser {
    /// The test's name: the screenshot's file name.
    name: String,
    client: Client,
    /// chromedriver, leader of a process group that Chromium joins.
    driver: Child,
    profile: PathBuf,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("name", &self.name)
            .field("driver", &self.driver.id())
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session for the test
    /// `name` (the screenshot is `target/browser-artifacts/<name>.png`).
    ///
    /// # Panics
    /// If `chromium` or `chromedriver` is not installed (`scripts/test`
    /// installs Debian's `chromium` and `chromium-driver`), or the session
    /// does not open within 20 s.
    pub async fn start(name: &str) -> Self {
        let chromium = find(&CHROMIUM, "chromium", "chromium");
        let chromedriver = find(&CHROMEDRIVER, "chromedriver", "chromium-driver");
        let port = free_port();
        let profile = std::env::temp_dir().join(format!("es-chromium-{}", unique_prefix()));
        std::fs::create_dir_all(&profile)
            .unwrap_or_else(|e| panic!("creating {}: {e}", profile.display()));
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: Drop kills it with every Chromium
            // process it started, even if the session was never closed.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let mut browser = BrowserStart {
            driver: Some(driver),
            profile: profile.clone(),
        };
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1000,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        // chromedriver listens a moment after it starts: until then the
        // connection is refused, and only that is worth another try.
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    if let Some(status) = browser.exited() {
                        panic!("chromedriver exited with {status} before a session opened");
                    }
                    if matches!(
                        error,
                        fantoccini::error::NewSessionError::SessionNotCreated(_)
                    ) {
                        panic!(
                            "chromedriver could not start {}: {error}",
                            chromium.display()
                        );
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(error) => panic!("no WebDriver session within {START_TIMEOUT:?}: {error}"),
            }
        };
        Self {
            name: name.to_owned(),
            client,
            driver: browser.driver.take().expect("chromedriver is running"),
            profile,
        }
    }

    /// The WebDriver session, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits until the page has loaded.
    ///
    /// # Panics
    /// If the browser cannot load it.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The value of the JavaScript `expression` in the page, as JSON.
    ///
    /// # Panics
    /// If the script throws or the session is gone.
    pub async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), Vec::new())
            .await
            .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
    }

    /// Polls the JavaScript `condition` until it is truthy or `timeout`
    /// passes; returns whether it held. On a timeout it saves the
    /// screenshot first, so the failure has a picture.
    pub async fn wait_for(&self, condition: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let script = format!("return !!({condition});");
        loop {
            if let Ok(Value::Bool(true)) = self.client.execute(&script, Vec::new()).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                self.screenshot().await;
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves what the window shows as `target/browser-artifacts/<name>.png`
    /// and returns the path. A screenshot that fails is reported, not
    /// fatal: it is evidence, not the test.
    pub async fn screenshot(&self) -> PathBuf {
        let path = artifacts_dir().join(format!("{}.png", self.name));
        match self.client.screenshot().await {
            Ok(png) => {
                if let Err(error) = std::fs::create_dir_all(artifacts_dir())
                    .and_then(|()| std::fs::write(&path, png))
                {
                    eprintln!("cannot save {}: {error}", path.display());
                }
            }
            Err(error) => eprintln!("no screenshot for {}: {error}", self.name),
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// chromedriver and its profile while the session is being opened: a
/// panic there still kills it and removes the directory.
struct BrowserStart {
    driver: Option<Child>,
    profile: PathBuf,
}

impl BrowserStart {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.driver.as_mut()?.try_wait().ok().flatten()
    }
}

impl Drop for BrowserStart {
    fn drop(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            kill_group(&mut driver);
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// SIGKILL to the process group `leader` heads, then reaps the leader.
fn kill_group(leader: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", leader.id())])
        .stderr(Stdio::null())
        .status();
    let _ = leader.kill();
    let _ = leader.wait();
}

/// The first of `candidates` that exists (a path) or is on `PATH` (a name).
fn find(candidates: &[&str], what: &str, package: &str) -> PathBuf {
    candidates
        .iter()
        .find_map(|candidate| {
            let path = Path::new(candidate);
            if path.is_absolute() {
                path.is_file().then(|| path.to_path_buf())
            } else {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join(candidate))
                        .find(|path| path.is_file())
                })
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "{what} is not installed: the browser tests need Debian's `chromium` and \
                 `chromium-driver` packages, which `scripts/test` installs \
                 (or: apt-get install -y chromium chromium-driver; package {package})"
            )
        })
}

/// `target/browser-artifacts`: beside the test binary's profile directory
/// (`target/debug/deps/<test>` is three levels below `target`), or under
/// `CARGO_TARGET_DIR`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("browser-artifacts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_a_failure_that_says_what_installs_it() {
        let panic = std::panic::catch_unwind(|| {
            find(
                &["/nonexistent/chromedriver", "no-such-chromedriver"],
                "chromedriver",
                "chromium-driver",
            )
        })
        .expect_err("a missing program must fail the test");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("scripts/test"), "{message}");
        assert!(message.contains("chromium-driver"), "{message}");
    }

    #[tokio::test]
    async fn a_browser_runs_scripts_waits_with_a_deadline_and_saves_screenshots() {
        let browser = Browser::start("testkit_self_test").await;
        let driver = browser.driver.id();
        browser
            .open("data:text/html,<p id=x>hello</p><script>window.later = 0; setTimeout(() => window.later = 1, 100)</script>")
            .await;
        assert_eq!(
            browser
                .eval("document.getElementById('x').textContent")
                .await,
            "hello"
        );
        assert!(
            browser
                .wait_for("window.later === 1", Duration::from_secs(5))
                .await
        );
        assert!(!browser.wait_for("false", Duration::from_millis(200)).await);
        let path = browser.screenshot().await;
        let png = std::fs::read(&path).expect("the screenshot was saved");
        assert!(
            png.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );

        drop(browser);
        assert!(
            !Path::new(&format!("/proc/{driver}")).exists(),
            "chromedriver outlived its Browser"
        );
    }
}
