//! A headless Chromium driven through WebDriver, for tests of HTML pages and their scripts.
//!
//! [`Browser::start`] starts Debian's `chromedriver` ([`CHROMEDRIVER`], package `chromium-driver`) on a free
//! port as a child process of the test, waits for its `/status`, and opens a session of Debian's Chromium
//! ([`CHROMIUM`], package `chromium`) with `--headless=new --no-sandbox` (tests run as root) and a
//! profile of the session's own in a temporary directory. Both packages are installed by `cargo xtask
//! install` and `cargo xtask test` (the test tools). Dropping the [`Browser`] kills chromedriver's whole
//! process group, Chromium included, even when the test panics; [`Browser::close`] ends the session
//! cleanly first.
//!
//! The helpers take CSS selectors and panic with a clear message on failure (test support). Every wait
//! polls with a deadline ([`Browser::set_timeout`], [`DEFAULT_TIMEOUT`] by default) — nothing sleeps a
//! fixed time — and a wait that times out shows what it saw last, the page's URL and the start of its
//! HTML.
//!
//! **Console errors.** The session is opened with `goog:loggingPrefs` `{"browser": "ALL"}`, so Chromium
//! keeps the page's console messages, uncaught exceptions and failed resource loads; chromedriver hands
//! them out, once each, at `POST /session/{id}/se/log` `{"type": "browser"}` (not part of W3C WebDriver,
//! so fantoccini has no call for it: this module sends it to chromedriver with reqwest). The [`Browser`]
//! keeps every entry it has read, so [`Browser::console_entries`], [`Browser::console_errors`] and
//! [`Browser::assert_no_console_errors`] see everything the page logged since the session started (or
//! since [`Browser::clear_console`]). An error is an entry of level `SEVERE`: `console.error(…)` (source
//! `console-api`), an uncaught exception (source `javascript`), and a resource that failed to load
//! (source `network`) — a missing `/favicon.ico` too, so a page under test should serve one or declare
//! none (`<link rel="icon" href="data:,">`).
//!
//! ```no_run
//! # async fn example() {
//! use distlab_testkit::browser::Browser;
//!
//! let browser = Browser::start().await;
//! browser.goto("http://127.0.0.1:8080/products/SKU-1").await;
//! browser.fill("#checkout [name=quantity]", "2").await;
//! browser.submit("#checkout").await;
//! browser.wait_for_attr("#status", "data-status", "CONFIRMED").await;
//! browser.screenshot("order-confirmed").await;
//! browser.assert_no_console_errors().await;
//! browser.close().await;
//! # }
//! ```

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{POLL_INTERVAL, unused_port};

/// Debian's chromedriver (package `chromium-driver`); `DISTLAB_CHROMEDRIVER` overrides it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Debian's Chromium (package `chromium`); `DISTLAB_CHROMIUM` overrides it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a wait of a [`Browser`] polls before it fails, unless [`Browser::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long chromedriver may take to answer its `/status` once started.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// How much of the page's HTML a failed wait shows.
const HTML_SNIPPET_CHARS: usize = 3000;

/// The window every session gets (screenshots have this size).
pub const WINDOW_SIZE: (u32, u32) = (1280, 900);

fn binary(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: install Debian's `{package}` package (`cargo xtask install` does, as root: \
         `apt-get install chromium chromium-driver`), or point {env} at it",
        path.display()
    );
    path
}

/// The workspace's `.distlab/screenshots`, where [`Browser::screenshot`] writes.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("shared/testkit is two levels below the workspace root")
        .join(".distlab/screenshots")
}

/// A chromedriver of the test's own on a free loopback port, in a process group of its own (Chromium
/// joins it); dropping it kills the whole group.
#[derive(Debug)]
pub struct ChromeDriver {
    port: u16,
    child: Child,
    /// chromedriver's output, and the profile directory of the Chromium it starts.
    dir: tempfile::TempDir,
}

impl ChromeDriver {
    /// Starts chromedriver and waits until its `/status` says it is ready; panics naming the package
    /// when it is not installed, or with chromedriver's output when it does not come up.
    pub async fn start() -> Self {
        let binary = binary("DISTLAB_CHROMEDRIVER", CHROMEDRIVER, "chromium-driver");
        // A free port may be taken by someone else before chromedriver binds it: then try another.
        let mut last_failure = String::new();
        for _ in 0..3 {
            match Self::try_start(&binary).await {
                Ok(driver) => return driver,
                Err(failure) => last_failure = failure,
            }
        }
        panic!(
            "chromedriver ({}) did not start: {last_failure}",
            binary.display()
        )
    }

    async fn try_start(binary: &Path) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log =
            File::create(dir.path().join("chromedriver.log")).expect("create chromedriver's log");
        let port = unused_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot spawn it: {e}"))?;
        let mut driver = Self { port, child, dir };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client");
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                return Err(format!("it exited ({status}): {}", driver.log()));
            }
            let ready = match http.get(format!("{}/status", driver.url())).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|body| body["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return Ok(driver);
            }
            if Instant::now() >= deadline {
                driver.kill();
                return Err(format!(
                    "no ready /status within {DRIVER_START_TIMEOUT:?}: {}",
                    driver.log()
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The WebDriver endpoint, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// chromedriver's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    fn profile_dir(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// Kills chromedriver and everything it started (its process group).
    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One entry of the browser's console log, as chromedriver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleEntry {
    /// `SEVERE` (errors), `WARNING`, `INFO` or `DEBUG`.
    pub level: String,
    /// Where it came from: `console-api` (`console.*`), `javascript` (uncaught exceptions), `network`, …
    pub source: String,
    /// The text, prefixed by Chromium with the script's URL and line:column.
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl ConsoleEntry {
    /// Whether this entry is an error (level `SEVERE`).
    pub fn is_error(&self) -> bool {
        self.level == "SEVERE"
    }

    fn from_json(entry: &Value) -> Self {
        let text = |key: &str| entry[key].as_str().unwrap_or_default().to_owned();
        Self {
            level: text("level"),
            source: text("source"),
            message: text("message"),
            timestamp: entry["timestamp"].as_i64().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ConsoleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} {}] {}", self.level, self.source, self.message)
    }
}

/// A headless Chromium session of the test's own (see the [module](self) documentation).
#[derive(Debug)]
pub struct Browser {
    client: Client,
    session_id: String,
    http: reqwest::Client,
    console: Mutex<Vec<ConsoleEntry>>,
    timeout: Duration,
    /// Last, so that it is dropped (killing Chromium) after the client.
    driver: ChromeDriver,
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session that keeps the console log.
    pub async fn start() -> Self {
        let chromium = binary("DISTLAB_CHROMIUM", CHROMIUM, "chromium");
        let driver = ChromeDriver::start().await;
        let (width, height) = WINDOW_SIZE;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-extensions",
                    "--no-first-run",
                    "--no-default-browser-check",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", driver.profile_dir().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver did not open a Chromium session ({}): {e}\nchromedriver's output:\n{}",
                    chromium.display(),
                    driver.log()
                )
            });
        let session_id = client
            .session_id()
            .await
            .expect("the session's id")
            .expect("a session was opened");
        Self {
            client,
            session_id,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            console: Mutex::new(Vec::new()),
            timeout: DEFAULT_TIMEOUT,
            driver,
        }
    }

    /// The fantoccini client, for anything the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How long the waits poll before failing from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(self) {
        let Self { client, driver, .. } = self;
        if let Err(e) = client.close().await {
            panic!(
                "cannot end the browser session: {e}\nchromedriver's output:\n{}",
                driver.log()
            );
        }
        drop(driver);
    }

    /// Loads `url` and waits until it has loaded (the page's `load` event).
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
    }

    /// The URL of the current page.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(String::from)
            .unwrap_or_else(|e| panic!("cannot read the current URL: {e}"))
    }

    /// The current page's HTML (its DOM now, serialized).
    pub async fn html(&self) -> String {
        self.client
            .source()
            .await
            .unwrap_or_else(|e| panic!("cannot read the page's HTML: {e}"))
    }

    /// Waits until an element matches `css`, and returns the first one.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.poll(&format!("an element matching `{css}`"), || async {
            self.find(css).await
        })
        .await
    }

    /// Waits until the first element matching `css` has the text `expected` (its rendered text, trimmed);
    /// returns the element.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> Element {
        self.poll(
            &format!("`{css}` to have the text {expected:?}"),
            || async {
                let element = self.find(css).await?;
                let text = element.text().await.map_err(|e| e.to_string())?;
                if text.trim() == expected {
                    Ok(element)
                } else {
                    Err(format!("its text is {:?}", text.trim()))
                }
            },
        )
        .await
    }

    /// Waits until the first element matching `css` has the attribute `name` equal to `expected`;
    /// returns the element.
    pub async fn wait_for_attr(&self, css: &str, name: &str, expected: &str) -> Element {
        self.poll(&format!("`{css}` to have {name}={expected:?}"), || async {
            let element = self.find(css).await?;
            match element.attr(name).await.map_err(|e| e.to_string())? {
                Some(value) if value == expected => Ok(element),
                Some(value) => Err(format!("its {name} is {value:?}")),
                None => Err(format!("it has no {name}")),
            }
        })
        .await
    }

    /// Waits until no element matches `css`.
    pub async fn wait_for_absent(&self, css: &str) {
        self.poll(&format!("no element matching `{css}`"), || async {
            match self.client.find_all(Locator::Css(css)).await {
                Ok(found) if found.is_empty() => Ok(()),
                Ok(found) => Err(format!("{} still match", found.len())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// The rendered text (trimmed) of the first element matching `css`, waiting for it to exist.
    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        let text = element
            .text()
            .await
            .unwrap_or_else(|e| panic!("cannot read the text of `{css}`: {e}"));
        text.trim().to_owned()
    }

    /// The attribute `name` of the first element matching `css`, waiting for the element to exist.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.wait_for(css).await;
        element
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("cannot read {name} of `{css}`: {e}"))
    }

    /// Clicks the first element matching `css`, waiting for it to exist.
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        if let Err(e) = element.click().await {
            self.fail(&format!("cannot click `{css}`: {e}")).await;
        }
    }

    /// Replaces the value of the form field matching `css` by `value`, typing it as a user would.
    pub async fn fill(&self, css: &str, value: &str) {
        let element = self.wait_for(css).await;
        if let Err(e) = element.clear().await {
            self.fail(&format!("cannot clear `{css}`: {e}")).await;
        }
        if let Err(e) = element.send_keys(value).await {
            self.fail(&format!("cannot type into `{css}`: {e}")).await;
        }
    }

    /// Submits the form matching `form_css` as a user would: clicks its submit button, or, when it has
    /// none, calls `requestSubmit()` (validation and `submit` handlers run either way). Wait for something
    /// of the next page afterwards.
    pub async fn submit(&self, form_css: &str) {
        let form = self.wait_for(form_css).await;
        let button = form
            .find(Locator::Css(
                "button:not([type]), button[type=submit], input[type=submit], input[type=image]",
            ))
            .await;
        let outcome = match button {
            Ok(button) => button.click().await,
            Err(_) => self
                .client
                .execute(
                    "arguments[0].requestSubmit()",
                    vec![serde_json::to_value(&form).expect("an element reference")],
                )
                .await
                .map(drop),
        };
        if let Err(e) = outcome {
            self.fail(&format!("cannot submit `{form_css}`: {e}")).await;
        }
    }

    /// Saves a PNG of the window to `.distlab/screenshots/<name>.png` under the workspace root, and
    /// returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("cannot take a screenshot: {e}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Every console entry the page logged since the session started (or since [`Self::clear_console`]).
    pub async fn console_entries(&self) -> Vec<ConsoleEntry> {
        let fresh = self.read_console_log().await;
        let mut console = self.console.lock().expect("the console log");
        console.extend(fresh);
        console.clone()
    }

    /// The console entries that are errors (level `SEVERE`): `console.error`, uncaught exceptions,
    /// resources that failed to load.
    pub async fn console_errors(&self) -> Vec<ConsoleEntry> {
        let mut entries = self.console_entries().await;
        entries.retain(ConsoleEntry::is_error);
        entries
    }

    /// Waits until the console holds an error whose message contains `text`, and returns it.
    pub async fn wait_for_console_error(&self, text: &str) -> ConsoleEntry {
        self.poll(&format!("a console error containing {text:?}"), || async {
            let errors = self.console_errors().await;
            errors
                .iter()
                .find(|e| e.message.contains(text))
                .cloned()
                .ok_or_else(|| format!("the console errors are {}", list(&errors)))
        })
        .await
    }

    /// Panics listing the console errors, if there are any.
    pub async fn assert_no_console_errors(&self) {
        let errors = self.console_errors().await;
        if !errors.is_empty() {
            panic!(
                "the page logged {} console error(s) (at {}): {}",
                errors.len(),
                self.url().await,
                list(&errors)
            );
        }
    }

    /// Forgets the console entries read so far (and those chromedriver still holds), e.g. after a test
    /// checked an error it expected.
    pub async fn clear_console(&self) {
        let _ = self.console_entries().await;
        self.console.lock().expect("the console log").clear();
    }

    /// Reads (and so empties) chromedriver's buffer of the browser's console log.
    async fn read_console_log(&self) -> Vec<ConsoleEntry> {
        let url = format!("{}/session/{}/se/log", self.driver.url(), self.session_id);
        let response = self
            .http
            .post(&url)
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("cannot read the console log ({url}): {e}"));
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("the console log ({url}) is not JSON: {e}"));
        let Some(entries) = body["value"].as_array().filter(|_| status.is_success()) else {
            panic!("chromedriver did not give the console log ({url}): {status} {body}");
        };
        entries.iter().map(ConsoleEntry::from_json).collect()
    }

    async fn find(&self, css: &str) -> Result<Element, String> {
        self.client.find(Locator::Css(css)).await.map_err(|e| {
            if e.is_no_such_element() {
                "no element matches".to_owned()
            } else {
                e.to_string()
            }
        })
    }

    /// Calls `check` every [`POLL_INTERVAL`] until it returns `Ok`, or fails after the timeout with the
    /// last reason `check` gave and the page's URL and HTML.
    async fn poll<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let last = match check().await {
                Ok(value) => return value,
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "timed out after {:?} waiting for {what} (last: {last})",
                    self.timeout
                ))
                .await;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Panics with `message`, the page's URL and the start of its HTML.
    async fn fail(&self, message: &str) -> ! {
        let url = match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("(unknown: {e})"),
        };
        let html = match self.client.source().await {
            Ok(html) => snippet(&html),
            Err(e) => format!("(cannot read it: {e})"),
        };
        panic!("{message}\npage: {url}\nHTML:\n{html}")
    }
}

fn snippet(html: &str) -> String {
    match html.char_indices().nth(HTML_SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}… ({} more bytes)", &html[..cut], html.len() - cut),
        None => html.to_owned(),
    }
}

fn list(entries: &[ConsoleEntry]) -> String {
    if entries.is_empty() {
        return "none".to_owned();
    }
    entries
        .iter()
        .map(|e| format!("\n  {e}"))
        .collect::<String>()
}
