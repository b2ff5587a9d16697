//! The workspace's service binaries (`distlab-order`, `distlab-inventory`…) run as processes of a test's
//! own, configured by environment variables as in production, and killed when the test drops them.
//!
//! The binaries are found next to the test executable's `deps/` folder (`target/<profile>/`). Cargo builds a
//! package's binaries for tests only when that package has integration tests (the coordinator has none), so
//! they must be built first: `cargo xtask test` runs `cargo build --bins -p order -p inventory -p
//! coordinator` before the tests; by hand, run the same.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The path of the workspace binary `name` built with the running test, or a panic saying how to build it.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build the service binaries first (`cargo build --bins -p order -p inventory -p \
         coordinator`; `cargo xtask test` does)",
        path.display()
    );
    path
}

/// A service binary running on a loopback port of the test's own; killed on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    binary: String,
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl ServiceProcess {
    /// Starts `binary` listening on `port` (`LISTEN_ADDR`) with `env` on top of the test's environment. Its
    /// output goes to the test's when `TEST_LOG` is set, nowhere otherwise.
    pub fn spawn(binary: &str, port: u16, env: &[(&str, String)]) -> Self {
        let output = || {
            if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        let child = Command::new(workspace_binary(binary))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        Self {
            binary: binary.to_owned(),
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits until `/readyz` answers 200, or panics after `timeout` — at once if the process ended.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let http = crate::http();
        let url = format!("{}/readyz", self.url);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                panic!(
                    "{} exited before it was ready ({status}); run with TEST_LOG=1 to see its log",
                    self.binary
                );
            }
            let ready = http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} was not ready within {timeout:?} ({url})",
                self.binary
            );
            tokio::time::sleep(crate::POLL_INTERVAL).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
