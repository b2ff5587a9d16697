//! `cargo xtask scenario`: one scenario per section of the seed, each ending with a [`Verdict`]; without a
//! name the list, with `all` every one of them in turn and a table of their verdicts.

use std::time::Instant;

use crate::Scenario;
use crate::verdict::Verdict;

/// The scenarios in the seed's order: name, seed section, what it does.
const LIST: &[(&str, &str, &str)] = &[
    (
        "flash-sale",
        "一 distributed locks",
        "1,000 buyers, 100 units: without a lock, then with each of the four lock backends",
    ),
    (
        "outbox",
        "二 local message table",
        "outbox orders while the broker is killed and restarted; every order settles, stock agrees",
    ),
    (
        "2pc",
        "二 2PC",
        "the four problems: blocking, coordinator down, inconsistency, one no aborts all; each recovered",
    ),
    (
        "cap",
        "三 CAP",
        "a real partition under load, in CP and in AP mode, judged from the recorded history",
    ),
    (
        "base",
        "四 BASE",
        "the storefront at 3x its measured capacity, degrading or not",
    ),
    (
        "paxos",
        "五 Paxos",
        "the seed's example replayed over HTTP through the sidecar (v = 8), then randomised racing rounds",
    ),
    (
        "raft",
        "六 Raft",
        "the config cluster's leader killed 20 times (elections timed), then cut off: its write dropped",
    ),
];

/// Prints the scenarios, one per seed section.
pub fn list() {
    println!(
        "scenarios, one per section of the seed (cargo xtask scenario <name>; `all` runs them all):\n"
    );
    for (name, section, what) in LIST {
        println!("  {name:<11} {section:<24} {what}");
    }
}

/// Runs one scenario (or all) and fails when a verdict is FAIL.
pub fn run(which: Scenario) -> anyhow::Result<()> {
    if let Scenario::All = which {
        return all();
    }
    let verdict = one(which)?;
    println!("\n{}", table(&[(verdict.clone(), None)]));
    anyhow::ensure!(verdict.passed, "the checker found the claim did not hold");
    Ok(())
}

fn one(which: Scenario) -> anyhow::Result<Verdict> {
    match which {
        Scenario::FlashSale(args) => crate::locks::flash_sale(args),
        Scenario::Outbox(args) => crate::outbox_scenario::scenario(args),
        Scenario::TwoPc => crate::twopc_scenario::scenario(),
        Scenario::Cap(args) => crate::cap::scenario(args),
        Scenario::Base(args) => crate::base::scenario(args),
        Scenario::Paxos(args) => crate::paxos::scenario(args),
        Scenario::Raft(args) => crate::raft::scenario(args),
        Scenario::All => anyhow::bail!("`all` is not one scenario"),
    }
}

/// Every scenario with its short settings, one after the other; a failing one is a FAIL row, not the end.
fn all() -> anyhow::Result<()> {
    let started = Instant::now();
    let runs: Vec<(&str, anyhow::Result<Scenario>)> = vec![
        ("flash-sale", args_of(&[]).map(Scenario::FlashSale)),
        ("outbox", args_of(&[]).map(Scenario::Outbox)),
        ("2pc", Ok(Scenario::TwoPc)),
        ("cap", args_of(&["--short"]).map(Scenario::Cap)),
        ("base", args_of(&["--short"]).map(Scenario::Base)),
        ("paxos", args_of(&[]).map(Scenario::Paxos)),
        ("raft", args_of(&[]).map(Scenario::Raft)),
    ];
    let mut rows = Vec::new();
    for (name, scenario) in runs {
        println!("\n======== scenario {name} ========");
        let began = Instant::now();
        let verdict = scenario.and_then(one);
        let seconds = began.elapsed().as_secs_f64();
        match verdict {
            Ok(verdict) => rows.push((verdict, Some(seconds))),
            Err(error) => {
                eprintln!("scenario {name} failed: {error:#}");
                rows.push((
                    Verdict {
                        section: LIST
                            .iter()
                            .find(|(n, _, _)| *n == name)
                            .map_or("?", |(_, section, _)| section),
                        claim: "—",
                        measured: format!("the scenario failed: {error:#}"),
                        passed: false,
                    },
                    Some(seconds),
                ));
            }
        }
    }
    println!(
        "\n{}\n{} scenarios in {:.0} s",
        table(&rows),
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let failed = rows.iter().filter(|(v, _)| !v.passed).count();
    anyhow::ensure!(failed == 0, "{failed} of {} scenarios FAILED", rows.len());
    Ok(())
}

/// A markdown table of verdicts (with each run's seconds when known).
fn table(rows: &[(Verdict, Option<f64>)]) -> String {
    let cell = |text: &str| text.replace('|', "\\|");
    let mut out =
        String::from("| section | the seed's claim | measured | verdict |\n|---|---|---|---|\n");
    for (verdict, seconds) in rows {
        out.push_str(&format!(
            "| {} | {} | {}{} | **{}** |\n",
            cell(verdict.section),
            cell(verdict.claim),
            cell(&verdict.measured),
            seconds.map_or(String::new(), |s| format!(" ({s:.0} s)")),
            if verdict.passed { "PASS" } else { "FAIL" }
        ));
    }
    out
}

/// A scenario's arguments as if given on the command line.
fn args_of<T: clap::Args + clap::FromArgMatches>(argv: &[&str]) -> anyhow::Result<T> {
    let matches = T::augment_args(clap::Command::new("scenario"))
        .try_get_matches_from(std::iter::once("scenario").chain(argv.iter().copied()))?;
    Ok(T::from_arg_matches(&matches)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_arguments_parse_for_every_scenario() {
        args_of::<crate::locks::FlashSaleArgs>(&[]).unwrap();
        args_of::<crate::outbox_scenario::OutboxArgs>(&[]).unwrap();
        args_of::<crate::cap::CapArgs>(&["--short"]).unwrap();
        args_of::<crate::base::BaseArgs>(&["--short"]).unwrap();
        args_of::<crate::paxos::PaxosArgs>(&[]).unwrap();
        args_of::<crate::raft::RaftArgs>(&[]).unwrap();
    }

    #[test]
    fn the_verdict_table_has_one_row_per_scenario_and_escapes_pipes() {
        let verdict = |passed| Verdict {
            section: "三 CAP",
            claim: "C or A",
            measured: "a | b".into(),
            passed,
        };
        let text = table(&[(verdict(true), Some(12.0)), (verdict(false), None)]);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("a \\| b (12 s) | **PASS**"), "{text}");
        assert!(text.contains("**FAIL**"), "{text}");
    }
}
