//! The two PostgreSQL clusters: a private data directory owned by `postgres`, `initdb`, `pg_ctl`, `psql`.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::install::{self, run};

use super::parts::{Kind, PARTS, Part};
use super::{Stack, fnv1a, path_str};

impl Stack {
    /// Where a PostgreSQL cluster's files live: `.distlab/<part>`, owned by `postgres` when running as root.
    /// If the `postgres` user cannot reach the checkout (e.g. it is under a private home directory), the
    /// files go to `/var/tmp/distlab-<hash>/<part>` and `.distlab/<part>` is a symbolic link to it.
    pub(super) fn prepare_pg_dir(&self, part: &Part) -> anyhow::Result<PathBuf> {
        let dir = self.state.join(part.name);
        if !install::is_root() {
            fs::create_dir_all(&dir)?;
            return Ok(dir);
        }
        if !dir.exists() {
            fs::create_dir_all(&self.state)?;
            let reachable = Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-x", path_str(&self.state)?])
                .status()
                .is_ok_and(|s| s.success());
            if reachable {
                fs::create_dir_all(&dir)?;
            } else {
                let outside = PathBuf::from(format!(
                    "/var/tmp/distlab-{:016x}",
                    fnv1a(path_str(&self.root)?)
                ))
                .join(part.name);
                fs::create_dir_all(&outside)?;
                std::os::unix::fs::symlink(&outside, &dir)?;
            }
        }
        run(Command::new("chown").args([
            "-R",
            "postgres:postgres",
            &format!("{}/", path_str(&dir)?),
        ]))?;
        Ok(dir)
    }

    pub(super) fn start_postgres(&self, part: &Part) -> anyhow::Result<()> {
        let bin = install::postgres_bin_dir().context("PostgreSQL is not installed")?;
        let dir = self.prepare_pg_dir(part)?;
        let data = dir.join("data");
        if !data.join("PG_VERSION").exists() {
            as_postgres(bin.join("initdb"))
                .args([
                    "-D",
                    path_str(&data)?,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ])
                .stdout(Stdio::null())
                .status()
                .context("initdb failed")?
                .success()
                .then_some(())
                .context("initdb failed")?;
        }
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_prepared_transactions=64 -c max_connections=200 \
             -c shared_buffers=256MB -c fsync=on -c synchronous_commit=on -c track_commit_timestamp=on \
             -c shared_preload_libraries=pg_stat_statements",
            part.port,
            path_str(&dir)?
        );
        let status = as_postgres(bin.join("pg_ctl"))
            .args([
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&dir.join("postgres.log"))?,
                "-o",
                &options,
            ])
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "pg_ctl start failed; see {}",
            dir.join("postgres.log").display()
        );
        Ok(())
    }

    pub(super) fn psql(&self, part: &Part, sql: &str) -> anyhow::Result<String> {
        self.psql_in(part, "postgres", sql)
    }

    pub(super) fn psql_in(&self, part: &Part, database: &str, sql: &str) -> anyhow::Result<String> {
        let bin = install::postgres_bin_dir().context("PostgreSQL is not installed")?;
        let output = Command::new(bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &part.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "psql on {}: {}",
            part.name,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub(super) fn create_database(&self, part: &Part, database: &str) -> anyhow::Result<()> {
        let exists = self.psql(
            part,
            &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
        )?;
        if exists.trim() != "1" {
            self.psql(part, &format!("CREATE DATABASE \"{database}\""))?;
        }
        Ok(())
    }

    /// Drops the databases that tests made (`test_…`) and left behind — first rolling back the prepared
    /// transactions a failed 2PC test may have left in them (they would keep the database in use).
    pub fn drop_test_databases(&self) -> anyhow::Result<()> {
        for part in PARTS
            .iter()
            .filter(|p| matches!(p.kind, Kind::Postgres { .. }))
        {
            let prepared = self.psql(
                part,
                "SELECT database || ' ' || gid FROM pg_prepared_xacts WHERE database LIKE 'test\\_%'",
            )?;
            for line in prepared.lines() {
                let Some((database, gid)) = line.split_once(' ') else {
                    continue;
                };
                if gid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    self.psql_in(part, database, &format!("ROLLBACK PREPARED '{gid}'"))?;
                }
            }
            let names = self.psql(
                part,
                "SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'",
            )?;
            for name in names.lines().filter(|n| !n.is_empty()) {
                self.psql(part, &format!("DROP DATABASE \"{name}\" WITH (FORCE)"))?;
            }
        }
        Ok(())
    }
}

/// A command run as the `postgres` user when we are root (PostgreSQL refuses to run as root).
pub(super) fn as_postgres(program: PathBuf) -> Command {
    if install::is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}
