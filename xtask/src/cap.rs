//! `cargo xtask scenario cap`: the CAP experiment (`distlab_testkit::cap`) once per mode on the running
//! stack, the CP vs AP table from the checked histories, a chart of availability and staleness over time
//! (`.distlab/reports/cap.svg`), and the config service's own CAP choice under a minority partition
//! (`distlab_testkit::cap_config`).

use std::fmt::Write as _;

use anyhow::Context;
use distlab_testkit::cap::{self, Phase, Plan, Report};

use crate::report::svg::{Band, Chart, Panel, Series, render};
use crate::stack::{Stack, block_on};

#[derive(Debug, Clone, clap::Args)]
pub struct CapArgs {
    /// The short run of the system test (3 s healthy, 6 s partition, 2 s healed) instead of 10/20/5 s.
    #[arg(long)]
    short: bool,
    /// Modes to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "CP,AP")]
    modes: Vec<String>,
    /// What the partition does on the wire: reset (a rejecting firewall) or hold (a pulled cable; longer
    /// than 10 s it wedges tansu's consumer group, see docs/cap.md).
    #[arg(long, default_value = "reset")]
    cut: String,
    /// Skip the config service's minority experiment.
    #[arg(long)]
    skip_config: bool,
}

pub fn scenario(args: CapArgs) -> anyhow::Result<crate::verdict::Verdict> {
    let stack = Stack::discover()?;
    let reports_dir = stack.root().join(".distlab").join("reports");
    std::fs::create_dir_all(&reports_dir)?;
    let mut plan = if args.short {
        Plan::short()
    } else {
        Plan::full()
    };
    plan.cut = args.cut.clone();
    let modes: Vec<String> = args.modes.iter().map(|m| m.to_uppercase()).collect();
    for mode in &modes {
        anyhow::ensure!(
            mode == "CP" || mode == "AP",
            "a mode is CP or AP, not {mode}"
        );
    }
    block_on(async {
        let endpoints = cap::Endpoints::local()
            .await
            .context("the stack is not running (cargo xtask up)")?;
        let progress = |line: &str| eprintln!("  {line}");
        let http = reqwest::Client::new();
        let previous = cap::switch_value(&http, &endpoints).await?;
        let mut reports = Vec::new();
        let mut partitions = Vec::new();
        let mut failure = None;
        for mode in &modes {
            eprintln!("==> CAP experiment, {mode}");
            match cap::run(mode, &plan, &endpoints, &progress).await {
                Ok(history) => {
                    let csv = reports_dir.join(format!("cap-{}-ops.csv", mode.to_lowercase()));
                    std::fs::write(&csv, ops_csv(&history))?;
                    partitions.push(history.partition);
                    reports.push(cap::check(&history));
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        // The switch goes back to what it was (unset: orders follow their own mode again).
        cap::restore_switch(&http, &endpoints, previous.as_deref()).await?;
        eprintln!(
            "  cap_mode restored to {}",
            previous.as_deref().unwrap_or("unset")
        );
        if let Some(error) = failure {
            return Err(error);
        }
        let table = table(&reports);
        println!("{table}");
        let chart = chart(
            &reports,
            partitions.first().copied().unwrap_or((0.0, 0.0)),
            &plan,
        );
        let svg_path = reports_dir.join("cap.svg");
        std::fs::write(&svg_path, render(&chart))?;
        std::fs::write(reports_dir.join("cap.md"), &table)?;
        println!(
            "chart: {}  table: {}",
            svg_path.display(),
            reports_dir.join("cap.md").display()
        );
        let verdict = verdict(&reports);
        if !args.skip_config {
            eprintln!("==> the config service's own choice: a node cut off into the minority");
            let nodes: Vec<String> = (1..=3)
                .map(|n| format!("http://127.0.0.1:{}", 8090 + n))
                .collect();
            let outcome =
                distlab_testkit::cap_config::run(&nodes, &endpoints.chaos, &progress).await?;
            for (what, value) in distlab_testkit::cap_config::rows(&outcome) {
                println!("  {what:<48} {value}");
            }
        }
        Ok(verdict)
    })
}

/// Every operation of a run, one line each (for a reader who wants to look closer).
fn ops_csv(history: &cap::History) -> String {
    let mut out = String::from("kind,sku,start_s,end_s,phase,status,version,order_id\n");
    let mut ops: Vec<&cap::Op> = history.ops.iter().collect();
    ops.sort_by(|a, b| a.start.total_cmp(&b.start));
    for op in ops {
        let _ = writeln!(
            out,
            "{:?},{},{:.3},{:.3},{},{},{},{}",
            op.kind,
            op.sku,
            op.start,
            op.end,
            cap::phase_of(history, op.start).name(),
            op.status.map_or("none".into(), |s| s.to_string()),
            op.version.map_or(String::new(), |v| v.to_string()),
            op.order_id.map_or(String::new(), |id| id.to_string()),
        );
    }
    out
}

fn percent(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// The CP vs AP table (Markdown).
/// The claim judged: in CP no read is stale and less is answered during the partition than in AP; in both
/// modes nothing accepted is lost or applied twice and the stock is conserved once drained.
fn verdict(reports: &[Report]) -> crate::verdict::Verdict {
    let mode = |name: &str| reports.iter().find(|r| r.mode == name);
    let safe = |r: &Report| {
        r.lost_orders == 0
            && r.duplicated_orders == 0
            && r.confirmed_beyond_stock == 0
            && r.drained
            && r.conservation_problems.is_empty()
    };
    let during = |r: &Report| r.phase(Phase::Partition).availability();
    let mut passed = !reports.is_empty() && reports.iter().all(safe);
    if let Some(cp) = mode("CP") {
        passed &= cp.stale_reads() == 0;
    }
    if let (Some(cp), Some(ap)) = (mode("CP"), mode("AP")) {
        passed &= during(ap) > during(cp);
    }
    let measured = reports
        .iter()
        .map(|r| {
            format!(
                "{}: {} answered during the partition, {} stale reads",
                r.mode,
                percent(during(r)),
                r.stale_reads()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
        + if reports.iter().all(safe) {
            "; nothing lost, stock conserved"
        } else {
            "; orders lost or stock not conserved"
        };
    crate::verdict::Verdict {
        section: "三 CAP",
        claim: "under a partition a system keeps consistency (CP) or availability (AP), not both",
        measured,
        passed,
    }
}

pub fn table(reports: &[Report]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, value: &dyn Fn(&Report) -> String| {
        rows.push((name.to_owned(), reports.iter().map(value).collect()));
    };
    for phase in Phase::ALL {
        row(&format!("answered within 1 s, {}", phase.name()), &|r| {
            percent(r.phase(phase).availability())
        });
    }
    row("stock reads answered during the partition", &|r| {
        let p = r.phase(Phase::Partition);
        format!("{} of {}", p.reads_available, p.reads)
    });
    row("orders accepted during the partition", &|r| {
        let p = r.phase(Phase::Partition);
        format!("{} of {}", p.orders_accepted, p.orders)
    });
    row("stale reads (of the reads answered, all phases)", &|r| {
        let answered: u64 = r.phases.values().map(|p| p.reads_available).sum();
        format!("{} of {answered}", r.stale_reads())
    });
    row("most a read was behind the inventory", &|r| {
        let worst = r
            .phases
            .values()
            .map(|p| p.max_staleness)
            .fold(0.0, f64::max);
        format!("{worst:.2} s")
    });
    row("units promised beyond the real stock", &|r| {
        format!(
            "{} ({} orders, {} REJECTED oversold_during_partition)",
            r.oversold_units_promised, r.oversold_orders, r.oversold_orders_with_reason
        )
    });
    row("units confirmed beyond the stock, reconciled", &|r| {
        r.confirmed_beyond_stock.to_string()
    });
    row("accepted orders lost / duplicated", &|r| {
        format!("{} / {}", r.lost_orders, r.duplicated_orders)
    });
    row("refused orders that committed later (2PC)", &|r| {
        r.refused_but_recorded.to_string()
    });
    row("units sold at the inventory's counter", &|r| {
        r.units_sold_at_counter.to_string()
    });
    row("replica equal to the inventory after heal", &|r| {
        r.converged_after_heal
            .map_or("not within the run".into(), |s| format!("{s:.2} s"))
    });
    row("conservation once drained", &|r| {
        if !r.drained {
            "NOT DRAINED".into()
        } else if r.conservation_problems.is_empty() {
            "holds".into()
        } else {
            r.conservation_problems.join("; ")
        }
    });
    let columns: Vec<String> = reports.iter().map(|r| r.mode.to_string()).collect();
    crate::report::markdown_table("", &columns, &rows)
}

/// Availability and staleness per second, one line per mode, the partition shaded.
fn chart(reports: &[Report], partition: (f64, f64), plan: &Plan) -> Chart {
    let colour = |mode: &str| if mode == "CP" { "#1f77b4" } else { "#d62728" };
    let x_max = (plan.healthy + plan.partition + plan.after_heal).as_secs_f64();
    Chart {
        title: "CAP on the running stack: CP vs AP under a partition".into(),
        x_label: "seconds since the start of the run".into(),
        x_min: 0.0,
        x_max,
        bands: vec![Band {
            from: partition.0,
            to: partition.1,
            label: "order side | inventory side partitioned".into(),
            color: "#999999".into(),
        }],
        panels: vec![
            Panel {
                title: "requests answered within 1 s (reads and orders)".into(),
                y_label: "answered".into(),
                y_min: 0.0,
                y_max: Some(100.0),
                y_unit: " %".into(),
                series: reports
                    .iter()
                    .map(|r| Series {
                        name: r.mode.clone(),
                        color: colour(&r.mode).into(),
                        points: r
                            .timeline
                            .iter()
                            .map(|s| (s.t, s.availability * 100.0))
                            .collect(),
                        dashed: false,
                    })
                    .collect(),
            },
            Panel {
                title: "how far behind the inventory a stock read was (0 = current)".into(),
                y_label: "staleness".into(),
                y_min: 0.0,
                y_max: None,
                y_unit: " s".into(),
                series: reports
                    .iter()
                    .map(|r| Series {
                        name: r.mode.clone(),
                        color: colour(&r.mode).into(),
                        points: r.timeline.iter().map(|s| (s.t, s.staleness)).collect(),
                        dashed: r.mode == "CP",
                    })
                    .collect(),
            },
        ],
    }
}
