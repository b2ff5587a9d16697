//! `cargo xtask scenario paxos`: single-decree Paxos (seed section 五, docs/paxos.md) with three HTTP
//! acceptors (`distlab_paxos::http`, tasks of this process on 8101–8103) that the two proposers reach only
//! through proxies of the chaos sidecar, created here (`paxos-A->acceptor-1` …, ports 17100–17105) and
//! deleted at the end, failure or not.
//!
//! 1. **The seed's example, message for message**: proposer A `[n=2, v=8]`, proposer B `[n=4, v=5]`,
//!    acceptors X Y Z, each step printed in the seed's terms; the learner must end with `v = 8`. The one
//!    place the run differs from the seed's pictures is said where it happens (acceptor X accepts A's
//!    `[n=2, v=8]` before B's prepare reaches it — with real Paxos nothing else makes B propose 8), and the
//!    seed's own schedule is played after it: real Paxos then chooses 5, correctly.
//! 2. **Randomised rounds**: both proposers race on a fresh instance each round, through latency with
//!    jitter and toxics that lose a request or its reply at random, retrying with higher numbers; after
//!    each round (and again at the end, for late messages) the acceptors' own logs and the learner must show
//!    at most one value chosen.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use distlab_paxos::http::{InstanceState, Reply};
use distlab_paxos::{Learner, Message, NodeId, Numbering, Proposal, Proposer, majority};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::json;

use crate::stack::block_on;
use crate::verdict::Verdict;

/// Three acceptors, X Y Z in the seed, on 8101–8103.
const ACCEPTORS: usize = 3;
const ACCEPTOR_NAMES: [&str; ACCEPTORS] = ["X", "Y", "Z"];
const FIRST_ACCEPTOR_PORT: u16 = 8101;
/// A's proxies are 17100–17102, B's 17103–17105.
const FIRST_PROXY_PORT: u16 = 17100;

#[derive(Debug, Clone, clap::Args)]
pub struct PaxosArgs {
    /// Randomised rounds after the seed's example.
    #[arg(long, default_value_t = 30)]
    rounds: u32,
    /// Stop starting rounds after this many seconds.
    #[arg(long, default_value_t = 90)]
    max_seconds: u64,
    /// Seed of the random choices (latency is the sidecar's own); by default the clock's.
    #[arg(long)]
    seed: Option<u64>,
    /// The chaos sidecar's admin API.
    #[arg(
        long,
        env = "DISTLAB_CHAOS_URL",
        default_value = "http://127.0.0.1:8474"
    )]
    chaos: String,
}

/// The seed's two proposers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }

    /// The seed's values: A proposes 8, B proposes 5.
    fn value(self) -> u64 {
        match self {
            Side::A => 8,
            Side::B => 5,
        }
    }

    /// The seed's numbers: A 2, 12, 22, …; B 4, 14, 24, …
    fn numbering(self) -> Numbering {
        match self {
            Side::A => Numbering { first: 2, step: 10 },
            Side::B => Numbering { first: 4, step: 10 },
        }
    }

    fn proxy(self, acceptor: usize) -> (String, u16) {
        let offset = match self {
            Side::A => 0,
            Side::B => ACCEPTORS,
        };
        (
            format!("paxos-{}->acceptor-{}", self.name(), acceptor + 1),
            FIRST_PROXY_PORT + u16::try_from(offset + acceptor).unwrap_or(0),
        )
    }
}

fn acceptor_port(acceptor: usize) -> u16 {
    FIRST_ACCEPTOR_PORT + u16::try_from(acceptor).unwrap_or(0)
}

fn acceptor_id(acceptor: usize) -> NodeId {
    NodeId::try_from(acceptor).unwrap_or(NodeId::MAX)
}

pub fn scenario(args: PaxosArgs) -> anyhow::Result<Verdict> {
    block_on(async move {
        let admin = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let chaos = args.chaos.trim_end_matches('/').to_owned();
        let version = admin.get(format!("{chaos}/version")).send().await;
        if let Err(error) = version.and_then(|r| r.error_for_status()) {
            bail!(
                "the chaos sidecar does not answer at {chaos} ({error}); start the local stack with \
                 `cargo xtask up`"
            );
        }
        let mut acceptors = Vec::new();
        for i in 0..ACCEPTORS {
            let addr = SocketAddr::from(([127, 0, 0, 1], acceptor_port(i)));
            let running = distlab_paxos::http::spawn(addr).await.with_context(|| {
                format!(
                    "acceptor {} cannot listen on {addr} (is another run of the scenario going?)",
                    i + 1
                )
            })?;
            acceptors.push(running);
        }
        eprintln!("==> acceptors X Y Z listen on 127.0.0.1:8101–8103");
        let proxies = Proxies {
            admin: admin.clone(),
            chaos,
        };
        let outcome = match proxies.create().await {
            Ok(()) => run(&args, &proxies).await,
            Err(error) => Err(error),
        };
        let removed = proxies.delete_all().await;
        for running in acceptors {
            let _ = running.stop().await;
        }
        match (outcome, removed) {
            (Ok(verdict), Ok(())) => Ok(verdict),
            (Ok(_), Err(error)) => Err(error.context("cannot delete the scenario's proxies")),
            (Err(error), removed) => {
                if let Err(cleanup) = removed {
                    eprintln!("warning: cannot delete the scenario's proxies: {cleanup:#}");
                }
                Err(error)
            }
        }
    })
}

/// The scenario's proxies on the chaos sidecar.
struct Proxies {
    admin: reqwest::Client,
    chaos: String,
}

impl Proxies {
    fn all() -> Vec<(String, u16, u16)> {
        [Side::A, Side::B]
            .into_iter()
            .flat_map(|side| {
                (0..ACCEPTORS).map(move |i| {
                    let (name, port) = side.proxy(i);
                    (name, port, acceptor_port(i))
                })
            })
            .collect()
    }

    fn url(&self, name: &str) -> String {
        // `>` in a path segment: encoded, as docs/chaos.md allows.
        format!("{}/proxies/{}", self.chaos, name.replace('>', "%3E"))
    }

    async fn create(&self) -> anyhow::Result<()> {
        for (name, listen, upstream) in Self::all() {
            let body = json!({
                "name": name,
                "listen": format!("127.0.0.1:{listen}"),
                "upstream": format!("127.0.0.1:{upstream}"),
                "protocol": "http",
            });
            let mut response = self
                .admin
                .post(format!("{}/proxies", self.chaos))
                .json(&body)
                .send()
                .await?;
            if response.status() == reqwest::StatusCode::CONFLICT {
                // Left by an earlier run that was killed: ours, so replace it.
                self.admin.delete(self.url(&name)).send().await?;
                response = self
                    .admin
                    .post(format!("{}/proxies", self.chaos))
                    .json(&body)
                    .send()
                    .await?;
            }
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                bail!("cannot create proxy {name} on the chaos sidecar: {status} {text}");
            }
        }
        eprintln!(
            "==> proxies paxos-A->acceptor-1..3 (17100–17102), paxos-B->acceptor-1..3 (17103–17105)"
        );
        Ok(())
    }

    async fn delete_all(&self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for (name, _, _) in Self::all() {
            match self.admin.delete(self.url(&name)).send().await {
                Ok(r)
                    if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => {}
                Ok(r) => failed.push(format!("{name}: {}", r.status())),
                Err(error) => failed.push(format!("{name}: {error}")),
            }
        }
        anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
        eprintln!("==> proxies deleted");
        Ok(())
    }

    /// The faults of the randomised rounds, on every proxy: latency with jitter on the replies, and at
    /// random a request lost on its way (`timeout` upstream) or its reply lost after the acceptor acted on
    /// it (`timeout` downstream). Byte toxics roll once per connection; the proposers open one per request.
    async fn add_toxics(&self, loss: f64) -> anyhow::Result<()> {
        for (name, _, _) in Self::all() {
            let toxics = [
                json!({"name": "jitter", "type": "latency", "stream": "downstream",
                       "attributes": {"latency": 15, "jitter": 15}}),
                json!({"name": "lose-request", "type": "timeout", "stream": "upstream",
                       "toxicity": loss, "attributes": {"timeout": 50}}),
                json!({"name": "lose-reply", "type": "timeout", "stream": "downstream",
                       "toxicity": loss, "attributes": {"timeout": 50}}),
            ];
            for toxic in toxics {
                let response = self
                    .admin
                    .post(format!("{}/toxics", self.url(&name)))
                    .json(&toxic)
                    .send()
                    .await?;
                let status = response.status();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    bail!("cannot add a toxic to {name}: {status} {text}");
                }
            }
        }
        Ok(())
    }

    async fn remove_toxics(&self) -> anyhow::Result<()> {
        for (name, _, _) in Self::all() {
            for toxic in ["jitter", "lose-request", "lose-reply"] {
                self.admin
                    .delete(format!("{}/toxics/{toxic}", self.url(&name)))
                    .send()
                    .await?;
            }
        }
        Ok(())
    }

    /// Connections the sidecar's loss toxics hit on the scenario's links (its fault log).
    async fn loss_hits(&self) -> anyhow::Result<u64> {
        let mut hits = 0;
        for (name, _, _) in Self::all() {
            let log: serde_json::Value = self
                .admin
                .get(format!("{}/events", self.chaos))
                .query(&[("link", name.as_str())])
                .send()
                .await?
                .json()
                .await?;
            let events = log["events"].as_array().cloned().unwrap_or_default();
            // The toxics still active are this run's (earlier runs' ended when they were removed).
            hits += events
                .iter()
                .filter(|e| e.get("ended_at").is_none())
                .filter(|e| {
                    matches!(
                        e["fault"]["name"].as_str(),
                        Some("lose-request" | "lose-reply")
                    )
                })
                .filter_map(|e| e["connections"].as_u64())
                .sum::<u64>();
        }
        Ok(hits)
    }
}

/// A proposer's way to the acceptors: its own proxies.
#[derive(Clone)]
struct Wire {
    http: reqwest::Client,
    side: Side,
}

impl Wire {
    async fn send(
        &self,
        instance: u64,
        acceptor: usize,
        message: Message,
    ) -> anyhow::Result<Reply> {
        let route = match message {
            Message::Prepare { .. } => "prepare",
            Message::Accept { .. } => "accept",
            other => bail!("a proposer does not send `{other}`"),
        };
        let (_, port) = self.side.proxy(acceptor);
        let response = self
            .http
            .post(format!("http://127.0.0.1:{port}/paxos/{instance}/{route}"))
            .json(&message)
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }
}

async fn state(http: &reqwest::Client, instance: u64) -> anyhow::Result<Vec<InstanceState>> {
    let mut states = Vec::new();
    for i in 0..ACCEPTORS {
        // Read directly, not through a proxy: the check must not be faulted.
        let state: InstanceState = http
            .get(format!(
                "http://127.0.0.1:{}/paxos/{instance}/state",
                acceptor_port(i)
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        states.push(state);
    }
    Ok(states)
}

/// The proposals a majority of acceptors accepted, from their own logs.
fn chosen_by_logs(states: &[InstanceState]) -> BTreeSet<Proposal> {
    let mut votes: BTreeMap<Proposal, usize> = BTreeMap::new();
    for s in states {
        let distinct: BTreeSet<Proposal> = s.accepted_log.iter().copied().collect();
        for p in distinct {
            *votes.entry(p).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .filter(|(_, count)| *count >= majority(states.len()))
        .map(|(p, _)| p)
        .collect()
}

async fn run(args: &PaxosArgs, proxies: &Proxies) -> anyhow::Result<Verdict> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    println!("== 五 Paxos: the seed's example, message for message ==");
    let replay = seed_replay(&http).await?;
    println!();
    println!("== the seed's own schedule (A's accept dropped by all three), with real Paxos ==");
    let literal = seed_schedule(&http).await?;
    println!();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "== randomised: {} rounds at most, {} s at most, both proposers racing, random seed {seed} ==",
        args.rounds, args.max_seconds
    );
    proxies.add_toxics(0.1).await?;
    let rounds = randomised(args, seed, &http).await;
    let hits = proxies.loss_hits().await.unwrap_or(0);
    proxies.remove_toxics().await?;
    let rounds = rounds?;
    // Late messages (a request whose reply was lost may still be on its way): look once more, at the end.
    let mut late_violations = 0;
    for r in &rounds {
        let values: BTreeSet<u64> = chosen_by_logs(&state(&http, r.instance).await?)
            .iter()
            .map(|p| p.v)
            .collect();
        if values.len() > 1 {
            late_violations += 1;
        }
    }
    print_rounds(&rounds, hits);
    let one_value = rounds.iter().filter(|r| r.values.len() == 1).count();
    let two_values = rounds.iter().filter(|r| r.values.len() > 1).count() + late_violations;
    let undecided = rounds.iter().filter(|r| r.values.is_empty()).count();
    let chose = |v: u64| {
        rounds
            .iter()
            .filter(|r| r.values.len() == 1 && r.values.contains(&v))
            .count()
    };
    let lost: u32 = rounds.iter().map(|r| r.lost).sum();
    let retries: u32 = rounds.iter().map(|r| r.retries).sum();
    let measured = format!(
        "seed replay v = {}; seed's own schedule v = {}; {one_value}/{} randomised rounds chose one value \
         (A's 8: {}, B's 5: {}), {two_values} chose two, {undecided} undecided; {lost} requests lost or \
         unanswered ({hits} loss-toxic hits at the sidecar), {retries} retries",
        replay.map_or("none".into(), |v| v.to_string()),
        literal.map_or("none".into(), |v| v.to_string()),
        rounds.len(),
        chose(Side::A.value()),
        chose(Side::B.value()),
    );
    Ok(Verdict {
        section: "五 Paxos",
        claim: "only one value is chosen; the seed's run ends with v = 8",
        measured,
        passed: replay == Some(8) && two_values == 0 && !rounds.is_empty(),
    })
}

/// One step of a replay: a message from a proposer to an acceptor through the proposer's proxy.
struct Replay<'a> {
    http: &'a reqwest::Client,
    instance: u64,
    step: usize,
    learner: Learner,
    quiet: bool,
}

impl Replay<'_> {
    /// Sends `message` from `side` to `acceptor`; prints the step; feeds an acceptance to the learner and
    /// a promise to `proposer`, returning what the proposer sends next (its accept request, once a majority
    /// promised).
    async fn step(
        &mut self,
        side: Side,
        proposer: &mut Proposer,
        acceptor: usize,
        message: Message,
        note: &str,
    ) -> anyhow::Result<(Reply, Option<Message>)> {
        let wire = Wire {
            http: self.http.clone(),
            side,
        };
        let reply = wire.send(self.instance, acceptor, message).await?;
        self.step += 1;
        let target = ACCEPTOR_NAMES[acceptor];
        let answer = match reply.replies.first() {
            None => format!(
                "dropped ({target} promised not to accept n < {})",
                reply.promised.map_or(0, |n| n.0)
            ),
            Some(m @ Message::Promise { .. }) => format!("{target}: {m}"),
            Some(Message::Accepted { n, v }) => {
                format!("{target} accepts [n={n}, v={v}] and tells the learner")
            }
            Some(other) => format!("{target}: {other}"),
        };
        if !self.quiet {
            println!(
                "{:>3}. {side} → {target}  {:<28} {answer}",
                self.step,
                message.to_string(),
                side = side.name()
            );
            if !note.is_empty() {
                println!("       {note}");
            }
        }
        let mut next = None;
        for m in &reply.replies {
            match m {
                Message::Accepted { .. } => {
                    let before = self.learner.chosen();
                    self.learner.handle(acceptor_id(acceptor), *m);
                    if before.is_none()
                        && let Some(v) = self.learner.chosen()
                        && !self.quiet
                    {
                        println!("       learner: a majority accepted it — v = {v} is chosen");
                    }
                }
                Message::Promise { .. } => {
                    if let Some(out) = proposer
                        .handle(acceptor_id(acceptor), *m)
                        .into_iter()
                        .next()
                    {
                        if !self.quiet {
                            println!(
                                "       {} heard from a majority: its {}",
                                side.name(),
                                out.message
                            );
                        }
                        next = Some(out.message);
                    }
                }
                _ => {}
            }
        }
        Ok((reply, next))
    }
}

fn first(out: Vec<distlab_paxos::Outgoing>) -> anyhow::Result<Message> {
    out.into_iter()
        .next()
        .map(|o| o.message)
        .context("the proposer sent nothing")
}

/// The seed's example: ends with the learner's `v = 8`, or fails.
async fn seed_replay(http: &reqwest::Client) -> anyhow::Result<Option<u64>> {
    const X: usize = 0;
    const Y: usize = 1;
    const Z: usize = 2;
    let mut a = Proposer::new(Side::A.value(), Side::A.numbering(), ACCEPTORS);
    let mut b = Proposer::new(Side::B.value(), Side::B.numbering(), ACCEPTORS);
    println!("proposer A [n=2, v=8], proposer B [n=4, v=5]; acceptors X Y Z; one learner");
    println!("(a prepare carries only n: in Paxos a proposer's value waits for phase 2)");
    let mut r = Replay {
        http,
        instance: 0,
        step: 0,
        learner: Learner::new(ACCEPTORS),
        quiet: false,
    };
    let prepare_a = first(a.start())?;
    let prepare_b = first(b.start())?;
    r.step(Side::A, &mut a, X, prepare_a, "").await?;
    let (_, accept_a) = r.step(Side::A, &mut a, Y, prepare_a, "").await?;
    let accept_a = accept_a.context("A should have heard from a majority (X, Y)")?;
    r.step(Side::B, &mut b, Z, prepare_b, "").await?;
    let (reply, _) = r
        .step(
            Side::A,
            &mut a,
            Z,
            prepare_a,
            "as in the seed: Z had promised 4 to B",
        )
        .await?;
    anyhow::ensure!(
        reply.replies.is_empty(),
        "Z should have dropped A's prepare [n=2]"
    );
    r.step(
        Side::A,
        &mut a,
        X,
        accept_a,
        "HERE THE RUN DIFFERS FROM THE SEED'S PICTURES: there A's accept request is dropped by all three. \
         Here it reaches X before B's prepare does, and X accepts [n=2, v=8] — in real Paxos an acceptor \
         records a value only when it accepts one, so this is the only way B can hear of v=8 (the seed's \
         acceptor records [n, v] already at the prepare).",
    )
    .await?;
    let (_, accept_b) = r
        .step(
            Side::B,
            &mut b,
            X,
            prepare_b,
            "X reports what it accepted: [n=2, v=8]",
        )
        .await?;
    let accept_b = accept_b.context("B should have heard from a majority (Z, X)")?;
    anyhow::ensure!(
        accept_b
            == Message::Accept {
                n: b.number(),
                v: 8
            },
        "B must adopt the value 8 it was told about, not propose {accept_b}"
    );
    r.step(
        Side::B,
        &mut b,
        Y,
        prepare_b,
        "late: B already heard from a majority",
    )
    .await?;
    for acceptor in [Y, Z] {
        let (reply, _) = r.step(Side::A, &mut a, acceptor, accept_a, "").await?;
        anyhow::ensure!(
            reply.replies.is_empty(),
            "A's accept [n=2] should be dropped"
        );
    }
    for acceptor in [X, Y, Z] {
        r.step(Side::B, &mut b, acceptor, accept_b, "").await?;
    }
    let chosen = r.learner.chosen();
    let states = state(http, 0).await?;
    let by_logs = chosen_by_logs(&states);
    println!(
        "learner: v = {}   (acceptors' logs: chosen {})",
        chosen.map_or("nothing".into(), |v| v.to_string()),
        by_logs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    anyhow::ensure!(
        chosen == Some(8),
        "the seed's example must end with v = 8, the learner has {chosen:?}"
    );
    Ok(chosen)
}

/// The seed's pictures taken literally under real Paxos: A's accept is dropped by all three, so no
/// acceptor ever accepted 8, B is told "no previous" and proposes — and gets — its own 5. Not a violation:
/// 8 had never been chosen.
async fn seed_schedule(http: &reqwest::Client) -> anyhow::Result<Option<u64>> {
    let mut a = Proposer::new(Side::A.value(), Side::A.numbering(), ACCEPTORS);
    let mut b = Proposer::new(Side::B.value(), Side::B.numbering(), ACCEPTORS);
    let mut r = Replay {
        http,
        instance: u64::from(u32::MAX),
        step: 0,
        learner: Learner::new(ACCEPTORS),
        quiet: true,
    };
    let prepare_a = first(a.start())?;
    let prepare_b = first(b.start())?;
    r.step(Side::A, &mut a, 0, prepare_a, "").await?;
    let (_, accept_a) = r.step(Side::A, &mut a, 1, prepare_a, "").await?;
    let accept_a = accept_a.context("A should have heard from a majority")?;
    r.step(Side::B, &mut b, 2, prepare_b, "").await?;
    let (_, accept_b) = r.step(Side::B, &mut b, 0, prepare_b, "").await?;
    r.step(Side::B, &mut b, 1, prepare_b, "").await?;
    for acceptor in 0..ACCEPTORS {
        r.step(Side::A, &mut a, acceptor, accept_a, "").await?;
    }
    if let Some(accept_b) = accept_b {
        println!("B was told \"no previous\" by every acceptor: its {accept_b}");
        for acceptor in 0..ACCEPTORS {
            r.step(Side::B, &mut b, acceptor, accept_b, "").await?;
        }
    }
    let chosen = r.learner.chosen();
    anyhow::ensure!(
        chosen == Some(Side::B.value()),
        "with A's accept dropped by all, real Paxos must choose B's 5, the learner has {chosen:?}"
    );
    println!(
        "learner: v = {} — the seed's pictures say 8, but 8 was never accepted by anyone, so B's own value \
         is the right outcome; the seed gets 8 only because its acceptors record a value at the prepare",
        chosen.map_or("nothing".into(), |v| v.to_string())
    );
    Ok(chosen)
}

/// What one randomised round saw.
#[derive(Debug)]
struct Round {
    instance: u64,
    /// The values chosen, from the acceptors' logs and the learner together.
    values: BTreeSet<u64>,
    /// The value each proposer saw its own accept request get a majority for, if it did in time.
    a: Option<Proposal>,
    b: Option<Proposal>,
    attempts: (u32, u32),
    lost: u32,
    retries: u32,
    elapsed: Duration,
}

/// A small deterministic generator (SplitMix64) for back-offs; xtask needs no `rand`.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Default)]
struct Tally {
    attempts: u32,
    lost: u32,
}

/// One proposer's run on `instance`: prepare, and accept once a majority promised, retrying with a higher
/// number after a random back-off until its own accept request got a majority or the deadline passed.
async fn propose(
    side: Side,
    instance: u64,
    http: reqwest::Client,
    learner: Arc<Mutex<Learner>>,
    mut rng: Rng,
    deadline: Instant,
) -> (Option<Proposal>, Tally) {
    let wire = Wire { http, side };
    let mut proposer = Proposer::new(side.value(), side.numbering(), ACCEPTORS);
    let mut tally = Tally::default();
    // A random head start, so either proposer may get its value chosen before the other gets going.
    tokio::time::sleep(Duration::from_millis(rng.below(80))).await;
    let mut prepare = proposer.start();
    while Instant::now() < deadline {
        tally.attempts += 1;
        let Some(out) = prepare.first().map(|o| o.message) else {
            break;
        };
        // Phase 1: a prepare to each acceptor; the accept request goes as soon as a majority promised.
        let mut pending: FuturesUnordered<_> = (0..ACCEPTORS)
            .map(|i| {
                let wire = wire.clone();
                async move { (i, wire.send(instance, i, out).await) }
            })
            .collect();
        let mut accept = None;
        while let Some((i, reply)) = pending.next().await {
            match reply {
                Ok(reply) => {
                    if reply.replies.is_empty()
                        && let Some(n) = reply.promised
                    {
                        proposer.observe(n);
                    }
                    for m in reply.replies {
                        if let Some(o) = proposer.handle(acceptor_id(i), m).into_iter().next() {
                            accept = Some(o.message);
                        }
                    }
                }
                Err(_) => tally.lost += 1,
            }
            if accept.is_some() {
                break;
            }
        }
        drop(pending);
        if let Some(accept) = accept {
            // Phase 2.
            let mut pending: FuturesUnordered<_> = (0..ACCEPTORS)
                .map(|i| {
                    let wire = wire.clone();
                    async move { (i, wire.send(instance, i, accept).await) }
                })
                .collect();
            let mut accepted = 0;
            while let Some((i, reply)) = pending.next().await {
                match reply {
                    Ok(reply) => {
                        if reply.replies.is_empty()
                            && let Some(n) = reply.promised
                        {
                            proposer.observe(n);
                        }
                        for m in reply.replies {
                            if let Message::Accepted { .. } = m {
                                accepted += 1;
                                learner
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .handle(acceptor_id(i), m);
                            }
                        }
                    }
                    Err(_) => tally.lost += 1,
                }
                if accepted >= majority(ACCEPTORS)
                    && let Message::Accept { n, v } = accept
                {
                    return (Some(Proposal { n, v }), tally);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10 + rng.below(60))).await;
        prepare = proposer.retry();
    }
    (None, tally)
}

async fn randomised(
    args: &PaxosArgs,
    seed: u64,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Round>> {
    // One connection per request, so the sidecar rolls each toxic per message.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_millis(300))
        .build()?;
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut rounds = Vec::new();
    for round in 1..=u64::from(args.rounds) {
        if started.elapsed() > Duration::from_secs(args.max_seconds) {
            eprintln!("  time is up after {} rounds", rounds.len());
            break;
        }
        let instance = round;
        let learner = Arc::new(Mutex::new(Learner::new(ACCEPTORS)));
        let round_start = Instant::now();
        let deadline = round_start + Duration::from_secs(10);
        let (a, b) = tokio::join!(
            propose(
                Side::A,
                instance,
                client.clone(),
                learner.clone(),
                Rng(rng.next()),
                deadline
            ),
            propose(
                Side::B,
                instance,
                client.clone(),
                learner.clone(),
                Rng(rng.next()),
                deadline
            ),
        );
        let elapsed = round_start.elapsed();
        let states = state(http, instance).await?;
        let mut values: BTreeSet<u64> = chosen_by_logs(&states).iter().map(|p| p.v).collect();
        values.extend(
            learner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .chosen_values(),
        );
        values.extend(a.0.iter().chain(b.0.iter()).map(|p| p.v));
        let r = Round {
            instance,
            values,
            a: a.0,
            b: b.0,
            attempts: (a.1.attempts, b.1.attempts),
            lost: a.1.lost + b.1.lost,
            retries: a.1.attempts.saturating_sub(1) + b.1.attempts.saturating_sub(1),
            elapsed,
        };
        eprintln!(
            "  round {round:>2}: chosen {:?} in {:.0?} (attempts A {} B {}, {} lost)",
            r.values, r.elapsed, r.attempts.0, r.attempts.1, r.lost
        );
        rounds.push(r);
    }
    Ok(rounds)
}

fn print_rounds(rounds: &[Round], hits: u64) {
    println!(
        "| round | chosen | A's ballot got a majority for | B's ballot got a majority for | attempts A/B | lost | ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    let show = |p: Option<Proposal>| p.map_or("— (gave up)".into(), |p| p.to_string());
    for r in rounds {
        let values = r
            .values
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        println!(
            "| {} | {} | {} | {} | {}/{} | {} | {} |",
            r.instance,
            if values.is_empty() {
                "none".into()
            } else {
                values
            },
            show(r.a),
            show(r.b),
            r.attempts.0,
            r.attempts.1,
            r.lost,
            r.elapsed.as_millis()
        );
    }
    let max = rounds.iter().map(|r| r.elapsed).max().unwrap_or_default();
    let lost: u32 = rounds.iter().map(|r| r.lost).sum();
    let retries: u32 = rounds.iter().map(|r| r.retries).sum();
    let count = |v: u64| {
        rounds
            .iter()
            .filter(|r| r.values.len() == 1 && r.values.contains(&v))
            .count()
    };
    println!();
    println!(
        "| rounds | chose A's 8 | chose B's 5 | chose two values | undecided | requests lost or unanswered | loss-toxic hits (sidecar) | retries | slowest round |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {lost} | {hits} | {retries} | {} ms |",
        rounds.len(),
        count(Side::A.value()),
        count(Side::B.value()),
        rounds.iter().filter(|r| r.values.len() > 1).count(),
        rounds.iter().filter(|r| r.values.is_empty()).count(),
        max.as_millis()
    );
}
