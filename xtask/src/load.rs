//! `cargo xtask load <name>`: the k6 load tests of `load-tests/` against the running local stack.
//!
//! A script is a file `load-tests/<name>.js`; its first line (a `//` comment) says what it measures and a
//! `// needs: order inventory …` line names the services it calls. Before k6 starts, each of those is
//! probed, so a stack that is down gets one clear message instead of a run full of refused connections.
//! `--rate` and `--duration` become the scripts' `RATE` and `DURATION`; the URLs of the services come from
//! the same variables as in the scripts (`ORDER_URL`, `CONFIG_URLS`, …), passed through unchanged. The JSON
//! summary goes to `load-tests/results/<name>-<UTC time>.json` (git-ignored), and the command fails when
//! k6 does — when a threshold was missed.
//!
//! [`smoke`] is the short run of every flow that `cargo xtask test` can add after the tests.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::install;

/// The folder of the scripts, under the checkout's root.
const SCRIPTS: &str = "load-tests";
/// Where the JSON summaries go (git-ignored), under the checkout's root.
const RESULTS: &str = "load-tests/results";

/// `cargo xtask load`'s arguments.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The script, `load-tests/<name>.js` (without a name, or with an unknown one: the list).
    name: Option<String>,
    /// Iterations started per second (the script's `RATE`; without it, the script's default).
    #[arg(long)]
    rate: Option<u32>,
    /// Seconds to keep that rate (the script's `DURATION`; without it, the script's default).
    #[arg(long)]
    duration: Option<u32>,
}

/// A script of `load-tests/`, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    name: String,
    path: PathBuf,
    /// The first line, without `//`.
    about: String,
    /// The services of the `// needs:` line.
    needs: Vec<String>,
}

/// A service a script may call: its name in `// needs:`, the variable that moves it, its local port.
const SERVICES: &[(&str, &str, &str)] = &[
    ("gateway", "GATEWAY_URL", "http://127.0.0.1:8080"),
    ("order", "ORDER_URL", "http://127.0.0.1:8081"),
    ("inventory", "INVENTORY_URL", "http://127.0.0.1:8082"),
    ("coordinator", "COORDINATOR_URL", "http://127.0.0.1:8083"),
    ("lock", "LOCK_URL", "http://127.0.0.1:8084"),
    ("chaos", "CHAOS_URL", "http://127.0.0.1:8474"),
];

/// The three config nodes, `config-1` … `config-3` in `// needs:`.
const CONFIG_URLS: (&str, &str) = (
    "CONFIG_URLS",
    "http://127.0.0.1:8091,http://127.0.0.1:8092,http://127.0.0.1:8093",
);

/// `cargo xtask load <name> [--rate N] [--duration S]`.
pub fn run(root: &Path, args: LoadArgs) -> anyhow::Result<()> {
    let scripts = discover(&root.join(SCRIPTS))?;
    let Some(name) = args.name.as_deref() else {
        println!("{}", listing(&scripts));
        bail!("name a script: cargo xtask load <name> [--rate N] [--duration S]");
    };
    let Some(script) = scripts.iter().find(|s| s.name == name) else {
        println!("{}", listing(&scripts));
        bail!("no load test called {name:?} in {SCRIPTS}/");
    };
    run_script(root, script, args.rate, args.duration, false)
}

/// The smoke run for `cargo xtask test`: `load-tests/smoke.js` at its defaults — every flow (outbox and 2PC
/// orders, locks, config reads and writes, the storefront) at one iteration per second for 10 s, with the
/// flows' correctness thresholds — about 15 s in all. Needs the whole stack up (it is probed first);
/// installs k6 if it is missing. Fails when a threshold is missed.
pub fn smoke(root: &Path) -> anyhow::Result<()> {
    let scripts = discover(&root.join(SCRIPTS))?;
    let script = scripts
        .iter()
        .find(|s| s.name == "smoke")
        .with_context(|| format!("{SCRIPTS}/smoke.js is missing"))?;
    run_script(root, script, None, None, true)
}

fn run_script(
    root: &Path,
    script: &Script,
    rate: Option<u32>,
    duration: Option<u32>,
    quiet: bool,
) -> anyhow::Result<()> {
    let lookup = |name: &str| std::env::var(name).ok();
    let endpoints = script
        .needs
        .iter()
        .map(|service| Ok((service.clone(), endpoint(service, &lookup)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let down: Vec<String> = endpoints
        .iter()
        .filter(|(_, address)| !answers(address))
        .map(|(service, address)| format!("{service} ({address})"))
        .collect();
    if !down.is_empty() {
        bail!(
            "the stack is not up: {} not answering (load test {}). Start it with `cargo xtask up`.",
            down.join(", "),
            script.name
        );
    }
    let k6 = install::ensure_k6()?;
    let results = root.join(RESULTS);
    std::fs::create_dir_all(&results)
        .with_context(|| format!("cannot create {}", results.display()))?;
    let file = results.join(format!(
        "{}-{}.json",
        script.name,
        utc_stamp(SystemTime::now())
    ));
    println!("==> k6 run {SCRIPTS}/{}.js ({})", script.name, script.about);
    let mut command = Command::new(&k6);
    command
        .current_dir(root)
        .args(k6_args(script, quiet))
        // Only what was asked for: a RATE or DURATION of the caller's shell must not change a run.
        .env_remove("RATE")
        .env_remove("DURATION")
        .envs(k6_env(rate, duration, &file));
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", k6.display()))?;
    if file.is_file() {
        println!("==> JSON summary: {}", file.display());
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(99) => bail!("load test {}: thresholds missed (k6 exit 99)", script.name),
        _ => bail!("load test {}: k6 failed ({status})", script.name),
    }
}

/// `k6 run`'s arguments. The usage report k6 sends home by default is off: the machine has no network
/// but the stack's.
fn k6_args(script: &Script, quiet: bool) -> Vec<String> {
    let mut args = vec!["run".to_owned(), "--no-usage-report".to_owned()];
    if quiet {
        args.push("--quiet".to_owned());
    }
    args.push(script.path.display().to_string());
    args
}

/// The variables the scripts read: `RATE`, `DURATION` (when given) and `RESULT_FILE`.
fn k6_env(rate: Option<u32>, duration: Option<u32>, file: &Path) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(rate) = rate {
        env.push(("RATE".to_owned(), rate.to_string()));
    }
    if let Some(duration) = duration {
        env.push(("DURATION".to_owned(), format!("{duration}s")));
    }
    env.push(("RESULT_FILE".to_owned(), file.display().to_string()));
    env
}

/// Every script of `dir` (the `.js` files directly in it; `lib/` holds modules), by name.
fn discover(dir: &Path) -> anyhow::Result<Vec<Script>> {
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".js"))
        else {
            continue;
        };
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let (about, needs) = header(&text);
        scripts.push(Script {
            name: name.to_owned(),
            path,
            about,
            needs,
        });
    }
    scripts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scripts)
}

/// A script's first line (its description) and the services of its `// needs:` line, from its leading
/// comment.
fn header(text: &str) -> (String, Vec<String>) {
    let comments: Vec<&str> = text
        .lines()
        .map_while(|line| line.trim_start().strip_prefix("//"))
        .map(str::trim)
        .collect();
    let about = comments.first().copied().unwrap_or_default().to_owned();
    let needs = comments
        .iter()
        .find_map(|line| line.strip_prefix("needs:"))
        .map(|list| list.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    (about, needs)
}

/// The list printed for a missing or unknown name.
fn listing(scripts: &[Script]) -> String {
    let width = scripts.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut text = format!("load tests ({SCRIPTS}/<name>.js):");
    for script in scripts {
        text.push_str(&format!("\n  {:width$}  {}", script.name, script.about));
    }
    text
}

/// The `host:port` a service of `// needs:` is reached at: its variable when set, else the local stack's.
fn endpoint(service: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let url = if let Some(n) = service.strip_prefix("config-") {
        let index: usize = n
            .parse()
            .ok()
            .filter(|i| *i >= 1)
            .with_context(|| format!("unknown service {service:?} in a `// needs:` line"))?;
        let (var, default) = CONFIG_URLS;
        let list = env(var).unwrap_or_else(|| default.to_owned());
        let url = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .nth(index - 1)
            .with_context(|| format!("{var} has no node {index}: {list:?}"))?;
        url.to_owned()
    } else {
        let (_, var, default) = SERVICES
            .iter()
            .find(|(name, _, _)| *name == service)
            .with_context(|| format!("unknown service {service:?} in a `// needs:` line"))?;
        env(var).unwrap_or_else(|| (*default).to_owned())
    };
    host_port(&url).with_context(|| format!("{service}: cannot read the URL {url:?}"))
}

/// `host:port` of an `http://` URL (port 80 when it names none).
fn host_port(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']');
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    })
}

/// Whether something accepts a TCP connection at `address` within a second.
fn answers(address: &str) -> bool {
    address.to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
    })
}

/// `2026-11-29T17-05-03Z`: a UTC time that is also a file name (no colons).
fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_header_gives_the_description_and_the_services() {
        let (about, needs) = header(
            "// Outbox orders: placed and followed.\n// needs: order  inventory\n//\n// more\n\nimport x from 'y';\n// needs: not this one\n",
        );
        assert_eq!(about, "Outbox orders: placed and followed.");
        assert_eq!(needs, ["order", "inventory"]);
        assert_eq!(header("import x from 'y';\n"), (String::new(), Vec::new()));
    }

    #[test]
    fn services_default_to_the_local_stack_and_follow_their_variables() {
        assert_eq!(endpoint("order", &no_env).unwrap(), "127.0.0.1:8081");
        assert_eq!(endpoint("chaos", &no_env).unwrap(), "127.0.0.1:8474");
        assert_eq!(endpoint("config-3", &no_env).unwrap(), "127.0.0.1:8093");
        let env = |name: &str| match name {
            "ORDER_URL" => Some("http://orders.internal:9000/".to_owned()),
            "CONFIG_URLS" => Some("http://a:1, http://b".to_owned()),
            _ => None,
        };
        assert_eq!(endpoint("order", &env).unwrap(), "orders.internal:9000");
        assert_eq!(endpoint("config-2", &env).unwrap(), "b:80");
        assert!(endpoint("config-3", &env).is_err());
        assert!(endpoint("config-0", &no_env).is_err());
        assert!(endpoint("billing", &no_env).is_err());
    }

    #[test]
    fn urls_become_host_and_port() {
        assert_eq!(
            host_port("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            host_port("http://localhost/x?y").as_deref(),
            Some("localhost:80")
        );
        assert_eq!(
            host_port("http://[::1]:8081/").as_deref(),
            Some("[::1]:8081")
        );
        assert_eq!(host_port("http://[::1]").as_deref(), Some("[::1]:80"));
        assert_eq!(host_port("https://example.test"), None);
        assert_eq!(host_port("http://"), None);
    }

    #[test]
    fn rate_and_duration_become_the_scripts_variables() {
        let file = Path::new("/r/outbox-x.json");
        assert_eq!(
            k6_env(Some(120), Some(45), file),
            [
                ("RATE".to_owned(), "120".to_owned()),
                ("DURATION".to_owned(), "45s".to_owned()),
                ("RESULT_FILE".to_owned(), "/r/outbox-x.json".to_owned()),
            ]
        );
        assert_eq!(
            k6_env(None, None, file),
            [("RESULT_FILE".to_owned(), "/r/outbox-x.json".to_owned())]
        );
    }

    #[test]
    fn k6_runs_the_script_without_reporting_usage() {
        let script = Script {
            name: "smoke".to_owned(),
            path: PathBuf::from("load-tests/smoke.js"),
            about: String::new(),
            needs: Vec::new(),
        };
        assert_eq!(
            k6_args(&script, true),
            ["run", "--no-usage-report", "--quiet", "load-tests/smoke.js"]
        );
        assert_eq!(
            k6_args(&script, false),
            ["run", "--no-usage-report", "load-tests/smoke.js"]
        );
    }

    #[test]
    fn stamps_are_utc_and_file_safe() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970-01-01T00-00-00Z");
        // 2026-11-29 17:05:03 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_971_903);
        assert_eq!(utc_stamp(t), "2026-11-29T17-05-03Z");
        // 2024-02-29 23:59:59 UTC, a leap day
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(utc_stamp(t), "2024-02-29T23-59-59Z");
    }

    #[test]
    fn the_repository_scripts_are_found_with_their_headers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(SCRIPTS);
        let scripts = discover(&dir).unwrap();
        let names: Vec<&str> = scripts.iter().map(|s| s.name.as_str()).collect();
        for expected in ["2pc", "config", "locks", "outbox", "smoke", "storefront"] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        for script in &scripts {
            assert!(
                !script.about.is_empty(),
                "{} has no description",
                script.name
            );
            assert!(
                !script.needs.is_empty(),
                "{} has no needs line",
                script.name
            );
            for service in &script.needs {
                endpoint(service, &no_env).unwrap();
            }
        }
        let listing = listing(&scripts);
        assert!(listing.contains("\n  smoke "), "{listing}");
    }

    #[test]
    fn discovery_skips_modules_and_other_files() {
        let dir = std::env::temp_dir().join(format!("distlab-load-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::write(dir.join("b.js"), "// B\n// needs: lock\n").unwrap();
        std::fs::write(dir.join("a.js"), "// A\n").unwrap();
        std::fs::write(dir.join("lib").join("common.js"), "// module\n").unwrap();
        std::fs::write(dir.join("README.md"), "# x\n").unwrap();
        let scripts = discover(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<&str> = scripts.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(scripts[1].needs, ["lock"]);
        assert_eq!(scripts[0].about, "A");
    }
}
