//! The last step of `cargo xtask test`: every service's OpenAPI document checked against the service itself,
//! as a client integrator would — schemathesis (PyPI) generates requests from each document, valid and
//! invalid, sends them to the running stack and checks every answer against the document: no server error,
//! only documented status codes, bodies matching their schemas, invalid requests refused and valid ones
//! accepted. A document that lies fails the run. `schemathesis.toml` at the workspace root holds the two
//! exceptions, with their reasons. No admin token is sent: the admin endpoints (faults,
//! partitions, membership) must answer 401 as documented, and are never armed by generated input.

use std::path::Path;

use anyhow::Context;

use crate::install::{self, SCHEMATHESIS};

/// The services whose documents are checked, and their ports in the local stack (config: node 1).
const SERVICES: &[(&str, u16)] = &[
    ("order", 8081),
    ("inventory", 8082),
    ("coordinator", 8083),
    ("lock", 8084),
    ("config", 8091),
    ("gateway", 8080),
];

/// Test cases per operation and phase: about a thousand requests over the seven services.
const MAX_EXAMPLES: &str = "30";

/// Runs schemathesis with all its checks against every service; fails naming the services whose document
/// does not match.
pub fn check(root: &Path) -> anyhow::Result<()> {
    // The chaos sidecar's API creates proxies, partitions and switches: its document is checked on a
    // private sidecar with no link and no config service (switches answer 503 there, as documented), so
    // generated requests never touch the stack's links.
    let sidecar = PrivateSidecar::start(root)?;
    let mut services: Vec<(&str, u16)> = SERVICES.to_vec();
    services.push(("chaos", sidecar.port));
    let mut failed = Vec::new();
    for (name, port) in &services {
        println!("==> schemathesis {SCHEMATHESIS}: {name} (:{port}/openapi.json), all checks");
        let status = install::schemathesis()
            .current_dir(root)
            .args([
                "--config-file",
                "schemathesis.toml",
                "run",
                &format!("http://127.0.0.1:{port}/openapi.json"),
                "--checks",
                "all",
                "--max-examples",
                MAX_EXAMPLES,
                "--seed",
                "20261129",
                "--request-timeout",
                "30",
                "--max-response-time",
                "30",
                "--no-color",
            ])
            .status()?;
        if !status.success() {
            failed.push(*name);
        }
    }
    drop(sidecar);
    anyhow::ensure!(
        failed.is_empty(),
        "the OpenAPI document of {} does not match the service (see above)",
        failed.join(", ")
    );
    Ok(())
}

/// A chaos sidecar of the contract check's own, stopped when dropped.
struct PrivateSidecar {
    child: std::process::Child,
    port: u16,
}

impl PrivateSidecar {
    fn start(root: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let binary = root.join("target/release/distlab-chaos");
        let child = std::process::Command::new(&binary)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            // Nothing listens on the discard port: the switchboard has no config service.
            .env("CONFIG_URLS", "http://127.0.0.1:9")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let sidecar = PrivateSidecar { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the private chaos sidecar did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(sidecar)
    }
}

impl Drop for PrivateSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
