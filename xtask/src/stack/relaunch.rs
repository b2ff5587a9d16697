//! Killing a part of the running stack with `SIGKILL` and starting it again exactly as it ran: the
//! program, arguments, environment and working directory are read from `/proc/<pid>` before the kill. A
//! restart then runs the very binary the stack runs, whichever checkout and target directory `up` built it
//! in (a worktree whose `.distlab` points at another checkout's stack has no `target/release` of its own).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use super::{Part, Stack};

/// How a running process was started.
#[derive(Debug, Clone)]
pub struct Launch {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
}

impl Launch {
    /// The value of an environment variable the process was started with.
    pub fn env(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.to_string_lossy().into_owned())
    }

    /// The program, as the process was started (its path).
    pub fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }
}

/// Splits a NUL-separated `/proc` file (`cmdline`, `environ`).
fn nul_separated(bytes: Vec<u8>) -> Vec<OsString> {
    bytes
        .split(|b| *b == 0)
        .filter(|item| !item.is_empty())
        .map(|item| OsString::from_vec(item.to_vec()))
        .collect()
}

impl Stack {
    /// The pid of `part`'s process, which this stack started and which is alive, and how it was launched.
    pub fn launch_of(&self, part: &Part) -> anyhow::Result<(u32, Launch)> {
        let pid = self
            .pid(part)
            .with_context(|| format!("{} is not running (cargo xtask up)", part.name))?;
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let mut cmdline = nul_separated(
            std::fs::read(proc.join("cmdline"))
                .with_context(|| format!("reading {pid}'s cmdline"))?,
        )
        .into_iter();
        let program = cmdline
            .next()
            .with_context(|| format!("pid {pid} has an empty command line"))?;
        let env = nul_separated(
            std::fs::read(proc.join("environ"))
                .with_context(|| format!("reading {pid}'s environment"))?,
        )
        .into_iter()
        .filter_map(|pair| {
            let bytes = pair.into_vec();
            let at = bytes.iter().position(|b| *b == b'=')?;
            Some((
                OsString::from_vec(bytes[..at].to_vec()),
                OsString::from_vec(bytes[at + 1..].to_vec()),
            ))
        })
        .collect();
        let cwd = std::fs::read_link(proc.join("cwd"))
            .with_context(|| format!("reading {pid}'s working directory"))?;
        Ok((
            pid,
            Launch {
                program,
                args: cmdline.collect(),
                env,
                cwd,
            },
        ))
    }

    /// Starts `part` again as `launch` says, in its own process group, appending to its log file and
    /// recording its pid as `up` does. Does not wait for it to be ready.
    pub fn relaunch(&self, part: &Part, launch: &Launch) -> anyhow::Result<()> {
        // A process killed a moment ago may not have exited yet.
        let deadline = std::time::Instant::now() + super::STOP_TIMEOUT;
        while self.pid(part).is_some() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{} is still running; it is not started twice",
                part.name
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.cwd);
        self.spawn(part, &mut command)
    }
}

/// Sends `SIGKILL` to `pid`: no shutdown, no flush, like a power cut for that process.
pub fn kill_hard(pid: u32) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).context("pid out of range")?;
    let pid = rustix::process::Pid::from_raw(raw).context("pid 0")?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .with_context(|| format!("kill -9 {raw}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_split_on_nul() {
        let items = nul_separated(b"a=1\0b=x=y\0\0".to_vec());
        assert_eq!(items, [OsString::from("a=1"), OsString::from("b=x=y")]);
    }
}
