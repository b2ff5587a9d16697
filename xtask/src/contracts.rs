//! The last step of `cargo xtask test`: every service's OpenAPI document checked against the service itself,
//! as a client integrator would — schemathesis (PyPI) generates requests from each document, valid and
//! invalid, sends them to the running stack and checks every answer against the document: no server error,
//! only documented status codes, bodies matching their schemas, invalid requests refused and valid ones
//! accepted. A document that lies fails the run. `schemathesis.toml` at the workspace root holds the two
//! exceptions, with their reasons. No admin token is sent: the admin endpoints (faults,
//! partitions, membership) must answer 401 as documented, and are never armed by generated input.

use std::path::Path;

use crate::install::{self, SCHEMATHESIS};

/// The services whose documents are checked, and their ports in the local stack (config: node 1).
const SERVICES: &[(&str, u16)] = &[
    ("order", 8081),
    ("inventory", 8082),
    ("coordinator", 8083),
    ("lock", 8084),
    ("config", 8091),
];

/// Test cases per operation and phase: about a thousand requests over the five services.
const MAX_EXAMPLES: &str = "30";

/// Runs schemathesis with all its checks against every service; fails naming the services whose document
/// does not match.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for (name, port) in SERVICES {
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
    anyhow::ensure!(
        failed.is_empty(),
        "the OpenAPI document of {} does not match the service (see above)",
        failed.join(", ")
    );
    Ok(())
}
