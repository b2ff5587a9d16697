//! `cargo xtask scenario raft`: seed section 六 (Raft) measured on the running stack's config cluster
//! (docs/raft-config.md, "Elections measured" and "Partition replay").
//!
//! 1. **Elections.** The leader is killed with `SIGKILL`, `--kills` times. After each kill the two survivors'
//!    `GET /v1/cluster` is polled every 5 ms until both name the same new leader at the same term and that
//!    node says it leads: the time from the kill to then is one sample. The term it was elected in says how
//!    many rounds the election took (one more than the killed leader's term: one round); a round in which
//!    both survivors were seen as candidates of the same term is counted as a **split vote** (openraft 0.9
//!    settles it within the term: a vote for a higher node id outranks one for a lower id at the same term). The killed node is then
//!    started again exactly as it ran (its command line, environment and working directory, read from `/proc` before the kill) and must be a follower that has caught
//!    up before the next kill. A text histogram, p50/p95/max, and an SVG chart
//!    (`.distlab/reports/raft-elections.svg`; `docs/img/raft-elections.svg` with `--write-chart`).
//! 2. **Partition replay** (as "The Secret Lives of Data" tells it). The leader is cut off from both
//!    followers by a chaos partition (`hold`: a pulled cable) and at once sent a write: it appends it to its
//!    log but can never commit it, and the client gets a 503. The majority elects a new leader at a higher
//!    term and commits writes of its own. After the heal the old leader steps down, its uncommitted entry is
//!    overwritten by the new leader's log, and every node serves the majority's writes and not the lost one.
//!    Every step is asserted from the nodes' own `GET /v1/cluster` and reads, and printed.
//!
//! The scenario restarts what it kills and heals what it cuts, also when a step fails.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::chaos_cli::{Admin, segment};
use crate::report::svg::{Band, Chart, Panel, Series, render};
use crate::stack::{PARTS, Part, Stack, block_on, kill_hard};
use crate::verdict::Verdict;

/// The election timeout range and heartbeat interval of `distlab-config` unless its environment overrides
/// them (`ELECTION_TIMEOUT_MIN_MS`, `ELECTION_TIMEOUT_MAX_MS`, `HEARTBEAT_INTERVAL_MS`; see
/// services/config/src/settings.rs): the seed's 150–300 ms.
const DEFAULT_TIMING_MS: Timing = Timing {
    election_min: 150,
    election_max: 300,
    heartbeat: 50,
};
/// How often the survivors are asked who leads after a kill.
const POLL: Duration = Duration::from_millis(5);
/// How often the cluster is polled while waiting for something slower (a restart, a catch-up).
const SLOW_POLL: Duration = Duration::from_millis(20);
/// Client time-out of one `GET /v1/cluster`.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the survivors may take to agree on a new leader.
const ELECTION_DEADLINE: Duration = Duration::from_secs(10);
/// How long the cluster may take to have all three nodes up, agreeing and caught up.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// Width of a histogram bucket.
const BUCKET_MS: f64 = 50.0;
/// Name of the chaos partition of the replay.
const PARTITION: &str = "raft-replay";
/// Client time-out of the write sent to the cut-off leader (the node answers after its 2 s quorum
/// time-out).
const MINORITY_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the old leader may take, after the heal, to step down and match the new leader's log.
const HEAL_DEADLINE: Duration = Duration::from_secs(20);

/// The seed section and claim of the verdict.
const SECTION: &str = "六 Raft";
const CLAIM: &str = "a new leader within a few election timeouts; split votes rare; an entry commits only on a majority";

#[derive(Debug, Clone, clap::Args)]
pub struct RaftArgs {
    /// How many times the leader is killed.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Also write the histogram to docs/img/raft-elections.svg (the chart the docs show).
    #[arg(long)]
    write_chart: bool,
    /// Skip the elections (kills).
    #[arg(long)]
    skip_elections: bool,
    /// Skip the partition replay.
    #[arg(long)]
    skip_partition: bool,
}

/// Election timing of the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    election_min: u64,
    election_max: u64,
    heartbeat: u64,
}

/// One config node of the stack.
#[derive(Debug, Clone, Copy)]
struct Node {
    id: u64,
    part: &'static Part,
}

impl Node {
    fn name(&self) -> &'static str {
        self.part.name
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.part.port)
    }
}

/// The stack's config nodes `config-1`…`config-3`.
fn config_nodes() -> anyhow::Result<Vec<Node>> {
    (1..=3)
        .map(|id| {
            let name = format!("config-{id}");
            PARTS
                .iter()
                .find(|p| p.name == name)
                .map(|part| Node { id, part })
                .with_context(|| format!("the stack has no part {name}"))
        })
        .collect()
}

/// A node's `GET /v1/cluster`, the fields the scenario reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    id: u64,
    state: String,
    leader: Option<u64>,
    term: u64,
    last_log_index: u64,
    commit_index: u64,
}

impl Status {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: v["node_id"].as_u64()?,
            state: v["state"].as_str()?.to_owned(),
            leader: v["leader"].as_u64(),
            term: v["term"].as_u64()?,
            last_log_index: v["last_log_index"].as_u64()?,
            commit_index: v["commit_index"].as_u64()?,
        })
    }

    fn leads(&self) -> bool {
        self.state == "leader"
    }

    /// `leader, term 7, log 120, committed 120` / `follower of 2, term 7, …`.
    fn brief(&self) -> String {
        let role = match (self.state.as_str(), self.leader) {
            ("leader", _) => "LEADER".to_owned(),
            (state, Some(leader)) if leader != self.id => format!("{state} of node {leader}"),
            (state, _) => format!("{state}, no leader"),
        };
        format!(
            "{role}, term {}, log {}, committed {}",
            self.term, self.last_log_index, self.commit_index
        )
    }
}

/// The config nodes over HTTP, on their own ports (no chaos link: a partition never cuts the scenario off).
#[derive(Debug, Clone)]
struct Cluster {
    http: reqwest::Client,
    nodes: Vec<Node>,
}

/// A cluster in which all three nodes answer and agree on a leader and term, the followers caught up.
#[derive(Debug, Clone)]
struct Settled {
    leader: Node,
    term: u64,
    statuses: Vec<Status>,
}

impl Cluster {
    fn node(&self, id: u64) -> anyhow::Result<Node> {
        self.nodes
            .iter()
            .copied()
            .find(|n| n.id == id)
            .with_context(|| format!("no config node {id} in the stack"))
    }

    async fn status(&self, node: Node) -> Option<Status> {
        let response = self
            .http
            .get(format!("{}/v1/cluster", node.url()))
            .timeout(STATUS_TIMEOUT)
            .send()
            .await
            .ok()?;
        Status::from_json(&response.json::<Value>().await.ok()?)
    }

    async fn statuses(&self, nodes: &[Node]) -> Vec<Option<Status>> {
        futures::future::join_all(nodes.iter().map(|n| self.status(*n))).await
    }

    /// Polls until every node answers, all name the same leader at the same term, the leader says it
    /// leads, and each follower's log reaches the leader's commit index.
    async fn settled(&self, deadline: Duration) -> anyhow::Result<Settled> {
        let until = Instant::now() + deadline;
        loop {
            let statuses = self.statuses(&self.nodes).await;
            let why = match agreement(&statuses) {
                Ok((leader, term)) => {
                    return Ok(Settled {
                        leader: self.node(leader)?,
                        term,
                        statuses: statuses.into_iter().flatten().collect(),
                    });
                }
                Err(why) => why,
            };
            if Instant::now() > until {
                bail!("the config cluster did not settle within {deadline:?}: {why}");
            }
            tokio::time::sleep(SLOW_POLL).await;
        }
    }

    /// `PUT /v1/kv/{key}` on `node`: the status and body, or the transport error (a time-out).
    async fn put(
        &self,
        node: Node,
        key: &str,
        value: &Value,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let response = self
            .http
            .put(format!("{}/v1/kv/{key}", node.url()))
            .json(&json!({ "value": value }))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {timeout:?}")
                } else {
                    e.to_string()
                }
            })?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// `GET /v1/kv/{key}` on `node`: the status and the value (if 200).
    async fn get(&self, node: Node, key: &str, consistency: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(format!(
                "{}/v1/kv/{key}?consistency={consistency}",
                node.url()
            ))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("GET {key} on {}", node.name()))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Ok((status, body["value"].clone()))
    }
}

/// The leader and term every status agrees on, followers caught up to its commit index; or why not.
fn agreement(statuses: &[Option<Status>]) -> Result<(u64, u64), String> {
    let answered: Vec<&Status> = statuses.iter().flatten().collect();
    if answered.len() < statuses.len() {
        return Err(format!(
            "{} of {} nodes answer",
            answered.len(),
            statuses.len()
        ));
    }
    let leaders: BTreeSet<(Option<u64>, u64)> =
        answered.iter().map(|s| (s.leader, s.term)).collect();
    let [(Some(leader), term)] = leaders.iter().copied().collect::<Vec<_>>()[..] else {
        return Err(format!("no common leader and term: {leaders:?}"));
    };
    let Some(head) = answered.iter().find(|s| s.id == leader) else {
        return Err(format!("node {leader} is named leader but did not answer"));
    };
    if !head.leads() {
        return Err(format!(
            "node {leader} is named leader but is {}",
            head.state
        ));
    }
    if let Some(behind) = answered
        .iter()
        .find(|s| s.last_log_index < head.commit_index)
    {
        return Err(format!(
            "node {} has log {} < the leader's commit index {}",
            behind.id, behind.last_log_index, head.commit_index
        ));
    }
    Ok((leader, term))
}

pub fn scenario(args: RaftArgs) -> anyhow::Result<Verdict> {
    let stack = Stack::discover()?;
    let reports_dir = stack.root().join(".distlab").join("reports");
    let cluster = Cluster {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            .build()?,
        nodes: config_nodes()?,
    };
    block_on(async {
        let settled = cluster
            .settled(Duration::from_secs(10))
            .await
            .context("the config cluster is not up and settled (cargo xtask up)")?;
        let timing = timing(&stack, &cluster)?;
        println!(
            "==> Raft on the config cluster: leader {} at term {}; election timeout {}–{} ms, heartbeat every {} ms{}",
            settled.leader.name(),
            settled.term,
            timing.election_min,
            timing.election_max,
            timing.heartbeat,
            if timing == DEFAULT_TIMING_MS {
                " (distlab-config's defaults, the seed's 150–300 ms)"
            } else {
                " (set in the nodes' environment)"
            }
        );
        println!(
            "    openraft 0.9 draws each node's timeout once, at start, and a follower that knew a leader waits its \
             leader lease ({} ms, the longest timeout) on top: it stands {}–{} ms after the last heartbeat, checked \
             on a tick every {} ms",
            timing.election_max,
            timing.election_max + timing.election_min,
            2 * timing.election_max,
            timing.heartbeat * 3 / 2
        );
        let mut measured = Vec::new();
        let mut passed = true;
        if !args.skip_elections {
            let elections = elections(&stack, &cluster, args.kills).await?;
            let summary = Summary::of(&elections);
            print!("{}", report(&elections, &summary));
            std::fs::create_dir_all(&reports_dir)?;
            let svg = render(&chart(&elections, &summary, timing));
            let path = reports_dir.join("raft-elections.svg");
            std::fs::write(&path, &svg)?;
            println!("chart: {}", path.display());
            if args.write_chart {
                let docs = stack.root().join("docs/img/raft-elections.svg");
                std::fs::create_dir_all(docs.parent().context("docs/img")?)?;
                std::fs::write(&docs, &svg)?;
                println!("chart: {}", docs.display());
            }
            // "A few election timeouts": p95 within three of the longest; split votes "rare": at most one
            // election in ten.
            let fast = summary.p95 <= 3.0 * timing.election_max as f64;
            let rare = summary.split_votes * 10 <= elections.len();
            passed &= fast && rare;
            measured.push(format!(
                "{} kills: new leader p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; {} split vote(s), {} election(s) of more than one round",
                elections.len(),
                summary.p50,
                summary.p95,
                summary.max,
                summary.split_votes,
                summary.extra_rounds
            ));
        }
        if !args.skip_partition {
            let replay = partition_replay(&cluster).await?;
            println!("\n==> partition replay: checks");
            for check in &replay {
                println!(
                    "  [{}] {}",
                    if check.held { "ok" } else { "FAILED" },
                    check.what
                );
            }
            let held = replay.iter().filter(|c| c.held).count();
            passed &= held == replay.len();
            measured.push(if held == replay.len() {
                "partition: the cut-off leader's write was appended, never committed, dropped on heal".to_owned()
            } else {
                format!("partition: {} of {} checks FAILED", replay.len() - held, replay.len())
            });
        }
        let verdict = Verdict {
            section: SECTION,
            claim: CLAIM,
            measured: measured.join("; "),
            passed,
        };
        println!(
            "\nverdict — {}\n  claim:    {}\n  measured: {}\n  {}",
            verdict.section,
            verdict.claim,
            verdict.measured,
            if verdict.passed { "HELD" } else { "NOT HELD" }
        );
        Ok(verdict)
    })
}

/// The nodes' election timing: the defaults, or what the leader's environment sets.
fn timing(stack: &Stack, cluster: &Cluster) -> anyhow::Result<Timing> {
    let node = cluster.nodes[0];
    let (_, launch) = stack.launch_of(node.part)?;
    let read = |name: &str, default: u64| -> anyhow::Result<u64> {
        launch.env(name).map_or(Ok(default), |v| {
            v.parse()
                .with_context(|| format!("{name}={v} in {}'s environment", node.name()))
        })
    };
    Ok(Timing {
        election_min: read("ELECTION_TIMEOUT_MIN_MS", DEFAULT_TIMING_MS.election_min)?,
        election_max: read("ELECTION_TIMEOUT_MAX_MS", DEFAULT_TIMING_MS.election_max)?,
        heartbeat: read("HEARTBEAT_INTERVAL_MS", DEFAULT_TIMING_MS.heartbeat)?,
    })
}

/// One kill of the leader and the election after it.
#[derive(Debug, Clone, PartialEq)]
struct Election {
    killed: u64,
    old_term: u64,
    new_leader: u64,
    new_term: u64,
    /// From the kill to the survivors agreeing on the new leader.
    ms: f64,
    /// Terms in which both survivors were seen as candidates (each voted for itself: a split vote).
    split_terms: Vec<u64>,
    /// How long the killed node took, once started again, to be a caught-up follower.
    rejoin_ms: f64,
    /// The term once it had rejoined (above `new_term`: its return disturbed the leader).
    rejoin_term: u64,
}

impl Election {
    fn rounds(&self) -> u64 {
        self.new_term.saturating_sub(self.old_term)
    }
}

async fn elections(
    stack: &Stack,
    cluster: &Cluster,
    kills: usize,
) -> anyhow::Result<Vec<Election>> {
    println!("\n==> elections: the leader killed (SIGKILL) {kills} times");
    let mut elections = Vec::with_capacity(kills);
    for k in 1..=kills {
        let before = cluster.settled(SETTLE_DEADLINE).await?;
        let leader = before.leader;
        let (pid, launch) = stack.launch_of(leader.part)?;
        let survivors: Vec<Node> = cluster
            .nodes
            .iter()
            .copied()
            .filter(|n| n.id != leader.id)
            .collect();
        let killed_at = Instant::now();
        kill_hard(pid)?;
        let elected = new_leader(cluster, &survivors, leader.id, before.term, killed_at).await;
        // Started again whatever happened, so that the stack is left with three nodes.
        let restarted_at = Instant::now();
        stack
            .relaunch(leader.part, &launch)
            .with_context(|| format!("starting {} again ({})", leader.name(), launch.program()))?;
        let (new_leader, new_term, ms, split_terms) = elected?;
        let rejoined = cluster
            .settled(SETTLE_DEADLINE)
            .await
            .with_context(|| format!("{} did not rejoin as a caught-up follower", leader.name()))?;
        let election = Election {
            killed: leader.id,
            old_term: before.term,
            new_leader,
            new_term,
            ms,
            split_terms,
            rejoin_ms: restarted_at.elapsed().as_secs_f64() * 1000.0,
            rejoin_term: rejoined.term,
        };
        println!("  {k:>3}. {}", describe(&election));
        elections.push(election);
    }
    Ok(elections)
}

/// `config-2 (term 7) killed → node 1 leads at term 8 after 412 ms (1 round); …`.
fn describe(e: &Election) -> String {
    let mut line = format!(
        "node {} (leader, term {}) killed → node {} leads at term {} after {:>4.0} ms ({} round{})",
        e.killed,
        e.old_term,
        e.new_leader,
        e.new_term,
        e.ms,
        e.rounds(),
        if e.rounds() == 1 { "" } else { "s" }
    );
    if !e.split_terms.is_empty() {
        let _ = write!(line, ", SPLIT VOTE at term {:?}", e.split_terms);
    }
    let _ = write!(
        line,
        "; node {} back as a caught-up follower {:.1} s after its restart",
        e.killed,
        e.rejoin_ms / 1000.0
    );
    if e.rejoin_term != e.new_term {
        let _ = write!(
            line,
            " (term now {}: its return caused an election)",
            e.rejoin_term
        );
    }
    line
}

/// Polls the survivors every [`POLL`] until both name the same leader (not `killed`) at the same term above
/// `old_term` and that node says it leads: the leader, its term, the milliseconds since `killed_at`, and the
/// terms in which both survivors were seen as candidates.
async fn new_leader(
    cluster: &Cluster,
    survivors: &[Node],
    killed: u64,
    old_term: u64,
    killed_at: Instant,
) -> anyhow::Result<(u64, u64, f64, Vec<u64>)> {
    let mut candidates: BTreeSet<(u64, u64)> = BTreeSet::new();
    loop {
        let statuses = cluster.statuses(survivors).await;
        let elapsed = killed_at.elapsed();
        for s in statuses.iter().flatten() {
            if s.state == "candidate" {
                candidates.insert((s.term, s.id));
            }
        }
        if let [Some(a), Some(b)] = &statuses[..]
            && a.term == b.term
            && a.term > old_term
            && a.leader == b.leader
            && let Some(leader) = a.leader
            && leader != killed
            && [a, b].iter().any(|s| s.id == leader && s.leads())
        {
            let split = split_terms(&candidates, survivors.len());
            return Ok((leader, a.term, elapsed.as_secs_f64() * 1000.0, split));
        }
        if elapsed > ELECTION_DEADLINE {
            bail!(
                "no new leader within {ELECTION_DEADLINE:?} of killing node {killed}: {:?}",
                statuses
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Terms in which `voters` distinct nodes were candidates at once (each voted for itself).
fn split_terms(candidates: &BTreeSet<(u64, u64)>, voters: usize) -> Vec<u64> {
    let terms: BTreeSet<u64> = candidates.iter().map(|(term, _)| *term).collect();
    terms
        .into_iter()
        .filter(|t| candidates.iter().filter(|(term, _)| term == t).count() >= voters)
        .collect()
}

/// The numbers of a run of elections.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    p50: f64,
    p95: f64,
    min: f64,
    max: f64,
    /// Elections in which a split vote was seen.
    split_votes: usize,
    /// Elections of more than one round (a split vote, or a round no one won for another reason).
    extra_rounds: usize,
    /// Restarts after which the term had moved on (the returning node started an election).
    disruptive_rejoins: usize,
}

impl Summary {
    fn of(elections: &[Election]) -> Self {
        let mut ms: Vec<f64> = elections.iter().map(|e| e.ms).collect();
        ms.sort_by(f64::total_cmp);
        Self {
            p50: percentile(&ms, 50.0),
            p95: percentile(&ms, 95.0),
            min: ms.first().copied().unwrap_or(0.0),
            max: ms.last().copied().unwrap_or(0.0),
            split_votes: elections
                .iter()
                .filter(|e| !e.split_terms.is_empty())
                .count(),
            extra_rounds: elections.iter().filter(|e| e.rounds() > 1).count(),
            disruptive_rejoins: elections
                .iter()
                .filter(|e| e.rejoin_term != e.new_term)
                .count(),
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Counts per [`BUCKET_MS`] bucket from 0 to past the largest value (at least to 350 ms, past the
/// longest election timeout).
fn histogram(ms: &[f64]) -> Vec<usize> {
    let top = ms.iter().copied().fold(350.0, f64::max);
    let buckets = (top / BUCKET_MS).floor() as usize + 1;
    let mut counts = vec![0; buckets];
    for &v in ms {
        counts[((v / BUCKET_MS).floor() as usize).min(buckets - 1)] += 1;
    }
    counts
}

/// The elections' text report: histogram, percentiles, rounds.
fn report(elections: &[Election], summary: &Summary) -> String {
    let ms: Vec<f64> = elections.iter().map(|e| e.ms).collect();
    let mut out = format!(
        "\n  kill → new leader agreed by both survivors ({} kills, {:.0} ms buckets)\n",
        elections.len(),
        BUCKET_MS
    );
    for (i, count) in histogram(&ms).iter().enumerate() {
        let lo = i as f64 * BUCKET_MS;
        let _ = writeln!(
            out,
            "  {:>4.0}–{:<4.0} ms | {:<20} {count}",
            lo,
            lo + BUCKET_MS,
            "#".repeat(*count)
        );
    }
    let rounds: Vec<String> = elections.iter().map(|e| e.rounds().to_string()).collect();
    let _ = writeln!(
        out,
        "  p50 {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms",
        summary.p50, summary.p95, summary.min, summary.max
    );
    let _ = writeln!(
        out,
        "  rounds per election (new term − killed leader's term): {}",
        rounds.join(" ")
    );
    let _ = writeln!(
        out,
        "  split votes (both survivors candidates in one term; openraft lets the higher node id win it in the same term): {} of {}; elections of more than one round: {}",
        summary.split_votes,
        elections.len(),
        summary.extra_rounds
    );
    let _ = writeln!(
        out,
        "  seed: \"a split vote again in the next round is unlikely, since every node's random timeout differs\" — {}",
        if summary.split_votes == 0 {
            "not one split vote seen".to_owned()
        } else {
            format!(
                "{} split vote(s), none repeated in the next round: {}",
                summary.split_votes,
                elections
                    .iter()
                    .all(|e| e.split_terms.windows(2).all(|w| w[1] != w[0] + 1))
            )
        }
    );
    if summary.disruptive_rejoins > 0 {
        let _ = writeln!(
            out,
            "  restarted nodes that started an election on their return: {}",
            summary.disruptive_rejoins
        );
    }
    out
}

/// The histogram as an SVG chart: its outline, the election timeout range shaded, p50 and p95 marked.
fn chart(elections: &[Election], summary: &Summary, timing: Timing) -> Chart {
    let ms: Vec<f64> = elections.iter().map(|e| e.ms).collect();
    let counts = histogram(&ms);
    let x_max = counts.len() as f64 * BUCKET_MS;
    let mut outline = vec![(0.0, 0.0)];
    for (i, count) in counts.iter().enumerate() {
        let lo = i as f64 * BUCKET_MS;
        outline.push((lo, *count as f64));
        outline.push((lo + BUCKET_MS, *count as f64));
    }
    outline.push((x_max, 0.0));
    let top = counts.iter().copied().max().unwrap_or(0) as f64;
    let marker = |name: String, at: f64, color: &str| Series {
        name,
        color: color.into(),
        points: vec![(at, 0.0), (at, top)],
        dashed: true,
    };
    Chart {
        title: format!(
            "Raft on the config cluster: the leader killed {} times, time to a new leader",
            elections.len()
        ),
        x_label: "ms from SIGKILL of the leader to a new leader both survivors agree on".into(),
        x_min: 0.0,
        x_max,
        bands: vec![Band {
            from: timing.election_min as f64,
            to: timing.election_max as f64,
            label: format!(
                "election timeout {}–{} ms",
                timing.election_min, timing.election_max
            ),
            color: "#2ca02c".into(),
        }],
        panels: vec![Panel {
            title: format!(
                "elections per {BUCKET_MS:.0} ms ({} split vote(s), {} of more than one round)",
                summary.split_votes, summary.extra_rounds
            ),
            y_label: "elections".into(),
            y_min: 0.0,
            y_max: None,
            y_unit: String::new(),
            series: vec![
                Series {
                    name: "elections".into(),
                    color: "#1f77b4".into(),
                    points: outline,
                    dashed: false,
                },
                marker(format!("p50 {:.0} ms", summary.p50), summary.p50, "#ff7f0e"),
                marker(format!("p95 {:.0} ms", summary.p95), summary.p95, "#d62728"),
            ],
        }],
    }
}

/// One assertion of the partition replay.
#[derive(Debug, Clone, PartialEq)]
struct Check {
    what: String,
    held: bool,
}

/// Collects checks, printing each as it is made.
#[derive(Debug, Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn check(&mut self, held: bool, what: String) {
        println!("      {} {what}", if held { "✓" } else { "✗ FAILED:" });
        self.0.push(Check { what, held });
    }
}

async fn partition_replay(cluster: &Cluster) -> anyhow::Result<Vec<Check>> {
    println!("\n==> partition replay: the leader cut off from both followers");
    let chaos = Admin::new()?;
    let path = format!("/partitions/{}", segment(PARTITION));
    if chaos
        .request(reqwest::Method::GET, "/partitions", None)
        .await?["partitions"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == PARTITION))
    {
        chaos.request(reqwest::Method::DELETE, &path, None).await?;
        println!("  healed a partition `{PARTITION}` left over from an earlier run");
    }
    let mut checks = Checks::default();
    let settled = cluster.settled(SETTLE_DEADLINE).await?;
    let old = settled.leader;
    let majority: Vec<Node> = cluster
        .nodes
        .iter()
        .copied()
        .filter(|n| n.id != old.id)
        .collect();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = format!("distlab/scenario/raft-replay-{millis}");
    let (before_key, lost_key) = (format!("{prefix}/before"), format!("{prefix}/minority"));
    let majority_keys: Vec<String> = (1..=3).map(|i| format!("{prefix}/majority-{i}")).collect();

    // 1. A write everyone has, so that the logs start equal.
    let (status, body) = cluster
        .put(
            old,
            &before_key,
            &json!("before the cut"),
            Duration::from_secs(5),
        )
        .await
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        status == 200,
        "the first write was refused: {status} {body}"
    );
    let settled = cluster.settled(SETTLE_DEADLINE).await?;
    println!(
        "  1. {} leads at term {}; `{before_key}` committed; every node: {}",
        old.name(),
        settled.term,
        settled
            .statuses
            .iter()
            .map(|s| format!("log {} committed {}", s.last_log_index, s.commit_index))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let old_term = settled.term;
    let at_cut = cluster
        .status(old)
        .await
        .context("the leader does not answer")?;

    // 2. The cut, and at once a write to the old leader (before it notices it has lost its majority: a
    //    leader that has heard from no majority for an election timeout refuses writes without proposing).
    let sides = json!([
        [old.name()],
        majority.iter().map(|n| n.name()).collect::<Vec<_>>()
    ]);
    let made = chaos
        .request(
            reqwest::Method::POST,
            "/partitions",
            Some(json!({"name": PARTITION, "sides": sides, "mode": "hold"})),
        )
        .await?;
    let cut_at = Instant::now();
    let lost_write = {
        let cluster = cluster.clone();
        let key = lost_key.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let answer = cluster
                .put(
                    old,
                    &key,
                    &json!("written on the cut-off leader"),
                    MINORITY_WRITE_TIMEOUT,
                )
                .await;
            (answer, sent.elapsed())
        })
    };
    let links: Vec<String> = made["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    println!(
        "  2. partition `{PARTITION}` (hold) cuts {} off from {} and {}: {}",
        old.name(),
        majority[0].name(),
        majority[1].name(),
        links.join(", ")
    );
    let during = during_partition(
        cluster,
        &mut checks,
        old,
        &majority,
        old_term,
        &at_cut,
        &lost_key,
        &majority_keys,
        cut_at,
        lost_write,
    )
    .await;
    let healed = chaos.request(reqwest::Method::DELETE, &path, None).await;
    let healed_at = Instant::now();
    let new_leader = match (during, healed) {
        (Ok(new_leader), Ok(_)) => new_leader,
        (Err(error), Ok(_)) => return Err(error),
        (Ok(_), Err(heal)) => {
            return Err(heal.context(format!(
                "healing `{PARTITION}`: run `cargo xtask chaos heal {PARTITION}`"
            )));
        }
        (Err(error), Err(heal)) => {
            return Err(error.context(format!(
                "and healing `{PARTITION}` failed too ({heal:#}): run `cargo xtask chaos heal {PARTITION}`"
            )));
        }
    };
    println!("  6. partition healed");

    // 7. The old leader steps down and its log becomes the new leader's: all three nodes end with the same
    //    term, log and commit index.
    let until = healed_at + HEAL_DEADLINE;
    let statuses = loop {
        let statuses = cluster.statuses(&cluster.nodes).await;
        let all: Vec<&Status> = statuses.iter().flatten().collect();
        if all.len() == cluster.nodes.len()
            && all.iter().all(|s| {
                s.leader == Some(new_leader.id)
                    && (s.term, s.last_log_index, s.commit_index)
                        == (all[0].term, all[0].last_log_index, all[0].commit_index)
            })
            && all.iter().any(|s| s.id == new_leader.id && s.leads())
        {
            break all.into_iter().cloned().collect::<Vec<Status>>();
        }
        if Instant::now() > until {
            bail!(
                "the nodes did not converge on {}'s log within {HEAL_DEADLINE:?} of the heal: {statuses:?}",
                new_leader.name()
            );
        }
        tokio::time::sleep(SLOW_POLL).await;
    };
    let stepped = statuses
        .iter()
        .find(|s| s.id == old.id)
        .context("the old leader's status")?;
    println!(
        "  7. {:.2} s after the heal {} is {}",
        healed_at.elapsed().as_secs_f64(),
        old.name(),
        stepped.brief()
    );
    checks.check(
        stepped.state == "follower" && stepped.term > old_term,
        format!(
            "the old leader stepped down: follower of node {} at term {} (it led at term {old_term})",
            new_leader.id, stepped.term
        ),
    );
    checks.check(
        true,
        format!(
            "the three logs match: {}",
            statuses
                .iter()
                .map(|s| format!("node {} {}", s.id, s.brief()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );

    // 8. Reads on every node: the majority's writes everywhere, the lost write nowhere.
    for node in &cluster.nodes {
        for consistency in ["stale", "linearizable"] {
            let (status, _) = cluster.get(*node, &lost_key, consistency).await?;
            checks.check(
                status == 404,
                format!(
                    "{} ({consistency}): the cut-off leader's key → {status}",
                    node.name()
                ),
            );
        }
        let mut found = Vec::new();
        for key in std::iter::once(&before_key).chain(&majority_keys) {
            let (status, value) = cluster.get(*node, key, "stale").await?;
            found.push(status == 200 && !value.is_null());
        }
        checks.check(
            found.iter().all(|f| *f),
            format!(
                "{} (stale): `before` and the majority's {} writes present",
                node.name(),
                majority_keys.len()
            ),
        );
    }
    // The scenario's keys are removed again (best effort).
    for key in std::iter::once(&before_key).chain(&majority_keys) {
        let _ = cluster
            .http
            .delete(format!("{}/v1/kv/{key}", new_leader.url()))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
    }
    Ok(checks.0)
}

/// The write sent to the cut-off leader: its answer (status and body, or why none came) and how long it took.
type LostWrite = tokio::task::JoinHandle<(Result<(u16, String), String>, Duration)>;

/// Steps 3–5, while the partition is in force (the caller heals, whatever this returns); the new leader.
#[allow(clippy::too_many_arguments)]
async fn during_partition(
    cluster: &Cluster,
    checks: &mut Checks,
    old: Node,
    majority: &[Node],
    old_term: u64,
    at_cut: &Status,
    lost_key: &str,
    majority_keys: &[String],
    cut_at: Instant,
    lost_write: LostWrite,
) -> anyhow::Result<Node> {
    // 3. The old leader appends the write to its log…
    let until = cut_at + Duration::from_secs(2);
    let appended = loop {
        let status = cluster.status(old).await;
        if let Some(s) = &status
            && s.last_log_index > at_cut.last_log_index
        {
            break s.clone();
        }
        if Instant::now() > until {
            bail!(
                "{} did not append the write to its log within 2 s of the cut (before: log {}; now {status:?}); \
                 did it refuse it at once (no_quorum)?",
                old.name(),
                at_cut.last_log_index
            );
        }
        tokio::time::sleep(POLL).await;
    };
    println!(
        "  3. write `{lost_key}` sent to {} {:.0} ms after the cut: it is {}",
        old.name(),
        cut_at.elapsed().as_secs_f64() * 1000.0,
        appended.brief()
    );
    checks.check(
        appended.last_log_index > at_cut.last_log_index
            && appended.commit_index == at_cut.commit_index,
        format!(
            "appended to the old leader's log (log {} → {}) but not committed (commit index stays {})",
            at_cut.last_log_index, appended.last_log_index, at_cut.commit_index
        ),
    );

    // 4. …while the majority elects a new leader at a higher term and commits other writes.
    let until = cut_at + ELECTION_DEADLINE;
    let (new_leader, new_term) = loop {
        let statuses = cluster.statuses(majority).await;
        if let [Some(a), Some(b)] = &statuses[..]
            && a.term == b.term
            && a.term > old_term
            && a.leader == b.leader
            && let Some(leader) = a.leader
            && [a, b].iter().any(|s| s.id == leader && s.leads())
        {
            break (cluster.node(leader)?, a.term);
        }
        if Instant::now() > until {
            bail!("the majority elected no leader within {ELECTION_DEADLINE:?}: {statuses:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    let old_now = cluster.status(old).await;
    println!(
        "  4. {:.0} ms after the cut {} leads the majority at term {new_term}; {} still says: {}",
        cut_at.elapsed().as_secs_f64() * 1000.0,
        new_leader.name(),
        old.name(),
        old_now
            .as_ref()
            .map_or("no answer".to_owned(), Status::brief)
    );
    checks.check(
        new_term > old_term,
        format!(
            "the majority elected node {} at term {new_term} > {old_term}",
            new_leader.id
        ),
    );
    for (i, key) in majority_keys.iter().enumerate() {
        let (status, body) = cluster
            .put(
                new_leader,
                key,
                &json!(format!("majority write {}", i + 1)),
                Duration::from_secs(5),
            )
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            status == 200,
            "the new leader refused a write during the partition: {status} {body}"
        );
    }
    let leader_status = cluster
        .status(new_leader)
        .await
        .context("the new leader does not answer")?;
    checks.check(
        leader_status.commit_index > at_cut.commit_index,
        format!(
            "the majority committed {} writes: {} is {}",
            majority_keys.len(),
            new_leader.name(),
            leader_status.brief()
        ),
    );

    // 5. The cut-off leader's client gets an error, and its entry is still uncommitted.
    let (answer, took) = lost_write.await.context("the write task failed")?;
    let old_now = cluster
        .status(old)
        .await
        .context("the old leader does not answer")?;
    let refused = match &answer {
        Ok((status, _)) => *status >= 500,
        Err(_) => true,
    };
    println!(
        "  5. the client of {} got {} after {:.2} s; {} is {}",
        old.name(),
        match &answer {
            Ok((status, body)) => format!("{status} {}", error_code(body)),
            Err(error) => error.clone(),
        },
        took.as_secs_f64(),
        old.name(),
        old_now.brief()
    );
    checks.check(
        refused,
        "the write to the cut-off leader was not acknowledged".to_owned(),
    );
    checks.check(
        old_now.commit_index == at_cut.commit_index,
        format!(
            "the old leader has committed nothing since the cut (commit index {}; it says it is {} at term {})",
            old_now.commit_index, old_now.state, old_now.term
        ),
    );
    Ok(new_leader)
}

/// The `error.code` of distlab's error body, or the body.
fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(80).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        id: u64,
        state: &str,
        leader: Option<u64>,
        term: u64,
        log: u64,
        commit: u64,
    ) -> Status {
        Status {
            id,
            state: state.into(),
            leader,
            term,
            last_log_index: log,
            commit_index: commit,
        }
    }

    #[test]
    fn agreement_needs_every_node_one_leader_and_caught_up_logs() {
        let leader = status(2, "leader", Some(2), 5, 10, 10);
        let f1 = status(1, "follower", Some(2), 5, 10, 10);
        let f3 = status(3, "follower", Some(2), 5, 10, 9);
        assert_eq!(
            agreement(&[Some(f1.clone()), Some(leader.clone()), Some(f3.clone())]),
            Ok((2, 5))
        );
        assert!(agreement(&[Some(f1.clone()), Some(leader.clone()), None]).is_err());
        let behind = status(3, "follower", Some(2), 5, 8, 8);
        assert!(agreement(&[Some(f1.clone()), Some(leader.clone()), Some(behind)]).is_err());
        let other_term = status(3, "follower", Some(2), 6, 10, 10);
        assert!(agreement(&[Some(f1.clone()), Some(leader.clone()), Some(other_term)]).is_err());
        let not_leading = status(2, "candidate", Some(2), 5, 10, 10);
        assert!(agreement(&[Some(f1), Some(not_leading), Some(f3)]).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&v, 100.0), 20.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn histogram_buckets_are_50_ms_and_reach_past_the_timeouts() {
        let counts = histogram(&[10.0, 49.9, 50.0, 420.0]);
        assert_eq!(counts.len(), 9);
        assert_eq!((counts[0], counts[1], counts[8]), (2, 1, 1));
        assert_eq!(histogram(&[]).len(), 8);
    }

    #[test]
    fn a_split_vote_is_both_survivors_candidates_in_one_term() {
        let seen: BTreeSet<(u64, u64)> = [(7, 1), (7, 3), (8, 1)].into_iter().collect();
        assert_eq!(split_terms(&seen, 2), [7]);
        let e = Election {
            killed: 2,
            old_term: 6,
            new_leader: 1,
            new_term: 8,
            ms: 612.0,
            split_terms: vec![7],
            rejoin_ms: 900.0,
            rejoin_term: 8,
        };
        assert_eq!(e.rounds(), 2);
        let s = Summary::of(std::slice::from_ref(&e));
        assert_eq!(
            (s.split_votes, s.extra_rounds, s.disruptive_rejoins),
            (1, 1, 0)
        );
        assert!(
            describe(&e).contains("SPLIT VOTE at term [7]"),
            "{}",
            describe(&e)
        );
    }

    #[test]
    fn the_chart_is_an_outline_with_markers() {
        let e = |ms| Election {
            killed: 1,
            old_term: 1,
            new_leader: 2,
            new_term: 2,
            ms,
            split_terms: vec![],
            rejoin_ms: 0.0,
            rejoin_term: 2,
        };
        let elections = [e(210.0), e(260.0), e(270.0)];
        let chart = chart(&elections, &Summary::of(&elections), DEFAULT_TIMING_MS);
        let series = &chart.panels[0].series;
        assert_eq!(series.len(), 3);
        assert!(
            series[0].points.contains(&(250.0, 2.0)) && series[0].points.contains(&(300.0, 2.0))
        );
        assert_eq!(series[1].points, [(260.0, 0.0), (260.0, 2.0)]);
        assert!(render(&chart).contains("election timeout 150–300 ms"));
    }
}
