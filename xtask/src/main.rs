//! distlab's dev tooling, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! - `up` / `down` / `status` / `logs <part>`: the local stack of docs/architecture.md — two PostgreSQL clusters, a
//!   Kafka-compatible broker (tansu), Redis ×3, ZooKeeper and the services — on their own ports, with all
//!   state in the git-ignored `.distlab/` folder of the checkout. Nothing of the machine's own PostgreSQL or
//!   Redis is used.
//! - `test`: installs what is missing, starts the stack (or reuses a healthy one), runs the whole test suite
//!   with cargo-nextest and stops what it started. This is what CI runs.
//! - `bench <name>`: runs a benchmark and its baseline in the same run and prints both and their ratio.
//! - `chaos list|partition|heal|latency|http-error|disable|enable|events|reset`: break and heal links of
//!   the running stack through the chaos sidecar, without writing JSON.
//! - `scenario [name|all]`: one scenario per seed section against the running stack (flash-sale, outbox,
//!   2pc, cap, base, paxos, raft); `all` runs them in turn and ends with a verdict table.
//! - `compose up|down|test|check`: the Docker Compose stack of `deploy/`, with images built on the machine.
//! - `load <name> [--rate N] [--duration S]`: a k6 load test of `load-tests/` against the running stack.

#![allow(clippy::print_stdout, unreachable_pub)]

mod base;
mod bench;
mod cap;
mod chaos_bench;
mod chaos_cli;
mod compose;
mod config_bench;
mod contracts;
mod install;
mod load;
mod locks;
mod observability;
mod outbox_scenario;
mod paxos;
mod raft;
mod report;
mod scenarios;
mod stack;
mod twopc_scenario;
mod verdict;

use std::process::ExitCode;

// zookeeper-client spawns its session tasks through `asyncs`, which needs to be told the runtime is tokio.
use asyncs as _;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "distlab dev tooling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local stack (idempotent: healthy parts are left running).
    Up {
        /// Start the infrastructure only, not the order and inventory services.
        #[arg(long)]
        infra_only: bool,
    },
    /// Stop every part that `up` started.
    Down,
    /// One row per part: port, pid, health; then every link of the chaos sidecar and its faults.
    Status,
    /// Print the log of one part (see `status` for the names).
    Logs {
        part: String,
        /// Lines from the end.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing as the log grows.
        #[arg(short, long)]
        follow: bool,
    },
    /// Check the code (fmt, clippy, doc), install what is missing, start the stack, run every test, stop
    /// what was started.
    Test {
        /// Only the tests that need no running stack (unit tests, in-process routers, storage suites):
        /// no install, no stack, no code checks.
        #[arg(long)]
        fast: bool,
        /// Arguments passed to `cargo nextest run` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        nextest_args: Vec<String>,
    },
    /// Install the Debian packages and tools the stack needs.
    Install,
    /// Run a benchmark against the running stack, with its baseline in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// Break and heal links of the running stack through the chaos sidecar (see `chaos --help`).
    Chaos {
        #[command(subcommand)]
        command: chaos_cli::ChaosCommand,
    },
    /// Check deploy/observability (promtool, the dashboards) against the running stack's metrics.
    Observability {
        #[command(subcommand)]
        command: observability::Subcommand,
    },
    /// Run a scenario against the running stack and print what happened (without a name: one scenario per
    /// seed section; `all` runs them all and ends with a verdict table).
    Scenario {
        #[command(subcommand)]
        which: Option<Scenario>,
    },
    /// Run a k6 load test of `load-tests/` against the running stack (without a name: the list).
    Load(load::LoadArgs),
    /// The Docker Compose stack of deploy/ with locally built images (no registry needed): up, down,
    /// test (up, walkthrough, down), check (validate the compose files), proxies.
    Compose {
        #[command(subcommand)]
        command: compose::ComposeCommand,
    },
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// 秒杀: 1,000 buyers, 100 units, without a lock and with each lock backend.
    FlashSale(locks::FlashSaleArgs),
    /// 本地消息表: outbox orders placed while the broker is killed and restarted; every order settles and
    /// the stock agrees.
    Outbox(outbox_scenario::OutboxArgs),
    /// 2PC: the seed's four problems (blocking, single point of failure, inconsistency, over-conservative),
    /// each followed by its recovery.
    #[command(name = "2pc")]
    TwoPc,
    /// CAP: the order side's stock replica in CP and in AP mode under a real partition, checked from the
    /// recorded history; plus the config service's minority reads.
    Cap(cap::CapArgs),
    /// BASE: the storefront gateway driven to 3× its measured capacity by an open-model load, with
    /// degrade=auto, with degrade=off, and with the inventory cut off; side by side, with a chart.
    Base(base::BaseArgs),
    /// 五 Paxos: the seed's example message for message (ends with v = 8), then randomised rounds of two
    /// racing proposers through the chaos sidecar; at most one value may be chosen.
    Paxos(paxos::PaxosArgs),
    /// Raft: the config cluster's leader killed N times (time to a new leader, split votes, a histogram),
    /// then cut off by a partition (its write appended, never committed, dropped on heal).
    Raft(raft::RaftArgs),
    /// Every scenario above, one after the other (the short variants), then a table: seed section, the
    /// seed's claim, what was measured, PASS/FAIL.
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up { infra_only } => stack::Stack::discover().and_then(|s| s.up(!infra_only)),
        Command::Down => stack::Stack::discover().and_then(|s| s.down()),
        Command::Status => stack::Stack::discover().and_then(|s| s.status()),
        Command::Logs {
            part,
            lines,
            follow,
        } => stack::Stack::discover().and_then(|s| s.logs(&part, lines, follow)),
        Command::Test {
            fast: true,
            nextest_args,
        } => fast_test(&nextest_args),
        Command::Test {
            fast: false,
            nextest_args,
        } => test(&nextest_args),
        Command::Install => install::ensure_all(true),
        Command::Bench { which } => stack::Stack::discover().and_then(|s| bench::run(&s, which)),
        Command::Chaos { command } => chaos_cli::run(command),
        Command::Observability {
            command: observability::Subcommand::Check,
        } => stack::Stack::discover().and_then(|s| observability::check(s.root())),
        Command::Scenario { which: None } => {
            scenarios::list();
            Ok(())
        }
        Command::Scenario { which: Some(which) } => scenarios::run(which),
        Command::Load(args) => stack::Stack::discover().and_then(|s| load::run(s.root(), args)),
        Command::Compose { command } => {
            stack::Stack::discover().and_then(|s| compose::run(s.root(), command))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask test`: the README's test command and what CI runs. It checks the code first (formatting,
/// clippy with warnings denied, rustdoc with warnings denied), runs every test against the stack, then
/// checks every service's OpenAPI document against the service ([`contracts`]). It stops exactly the parts
/// it started: a part that was already running (e.g. `cargo xtask up --infra-only` earlier) is left running.
fn test(nextest_args: &[String]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let stack = stack::Stack::discover()?;
    check_code(stack.root())?;
    install::ensure_all(true)?;
    let mut started_parts = Vec::new();
    let outcome = stack
        .up_recording(true, &mut started_parts)
        .and_then(|()| stack.drop_test_databases())
        .and_then(|()| {
            // The traces test runs these binaries as processes (distlab_testkit::processes); cargo builds a
            // package's binaries for tests only when the package has integration tests of its own.
            println!(
                "==> cargo build --bins -p order -p inventory -p coordinator (for the traces test)"
            );
            install::run(
                std::process::Command::new(env!("CARGO"))
                    .current_dir(stack.root())
                    .args(["build", "--quiet", "--bins"])
                    .args(["-p", "order", "-p", "inventory", "-p", "coordinator"]),
            )?;
            println!("==> cargo nextest run --workspace");
            let status = std::process::Command::new(env!("CARGO"))
                .current_dir(stack.root())
                .args(["nextest", "run", "--workspace", "--no-fail-fast"])
                .args(nextest_args)
                .status()?;
            let contracts = contracts::check(stack.root());
            let observability = observability::check(stack.root());
            let smoke = load::smoke(stack.root());
            // The compose stack publishes on 127.0.0.2, beside the local stack's 127.0.0.1.
            let compose = compose::test_if_engine(stack.root());
            anyhow::ensure!(status.success(), "tests failed ({status})");
            contracts?;
            observability.context("the dashboards' check failed")?;
            smoke.context("the k6 smoke test failed")?;
            compose.context("the compose test failed")
        });
    if let Err(error) = stack.stop(started_parts) {
        eprintln!("warning: cannot stop the stack: {error:#}");
    }
    println!("==> cargo xtask test took {:.0?}", started.elapsed());
    outcome
}

/// `cargo xtask test --fast`: the tests of every library and binary target — pure cores, in-process
/// routers on a database that cannot be reached, openraft's storage suite on temporary directories. They
/// need no running stack, so nothing is installed or started (only cargo-nextest, if missing).
fn fast_test(nextest_args: &[String]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    install::ensure_nextest()?;
    let root = stack::Stack::discover()?.root().to_path_buf();
    println!("==> cargo nextest run --workspace --lib --bins (no stack needed)");
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "nextest",
            "run",
            "--workspace",
            "--lib",
            "--bins",
            "--no-fail-fast",
        ])
        .args(nextest_args)
        .status()?;
    println!("==> cargo xtask test --fast took {:.0?}", started.elapsed());
    anyhow::ensure!(status.success(), "tests failed ({status})");
    Ok(())
}

/// What CI checks besides the tests: formatting, clippy on every target with warnings denied, and the
/// documentation of the workspace's crates with rustdoc warnings denied (broken links included).
fn check_code(root: &std::path::Path) -> anyhow::Result<()> {
    let cargo = |args: &[&str], env: &[(&str, &str)]| -> anyhow::Result<()> {
        println!("==> cargo {}", args.join(" "));
        let status = std::process::Command::new(env!("CARGO"))
            .current_dir(root)
            .args(args)
            .envs(env.iter().copied())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "`cargo {}` failed ({status})",
            args.join(" ")
        );
        Ok(())
    };
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}
