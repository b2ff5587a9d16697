//! The sidecar's state: its proxies (each with its toxics and the cuts of the partitions that separate its
//! parts) and its partitions. Every change goes through one async mutex, is checked completely before
//! anything is touched (bad input changes nothing), and ends by publishing each affected proxy's new
//! [`LinkFaults`] to its connections.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::events::{FaultEvent, FaultLog, FaultRef};
use crate::faults::{ActiveToxic, Cut, LinkFaults};
use crate::partition::{CutMode, Partition, parts};
use crate::proxy::{Link, Protocol};
use crate::toxic::{Problem, Rejection, Toxic, ToxicSpec, check_name};

/// Why a request to change the state was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("proxy already exists: {0}")]
    ProxyExists(String),
    #[error("proxy not found: {0}")]
    ProxyNotFound(String),
    #[error("toxic already exists: {0}")]
    ToxicExists(String),
    #[error("toxic not found: {0}")]
    ToxicNotFound(String),
    #[error("partition already exists: {0}")]
    PartitionExists(String),
    #[error("partition not found: {0}")]
    PartitionNotFound(String),
    #[error("invalid toxic type: {0}")]
    InvalidToxicType(String),
    #[error("invalid toxic")]
    InvalidToxic(Vec<Problem>),
    #[error("invalid proxy")]
    InvalidProxy(Vec<Problem>),
    #[error("invalid partition")]
    InvalidPartition(Vec<Problem>),
    #[error("cannot listen on {listen}: address already in use")]
    ListenInUse { listen: String },
    #[error("cannot listen on {listen}: {reason}")]
    CannotListen { listen: String, reason: String },
}

/// A proxy as the API shows it (Toxiproxy's shape plus `protocol`, `advertised` and `cut_by`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProxyView {
    pub name: String,
    /// The address it listens on (the bound port when `:0` was asked for).
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub protocol: Protocol,
    /// A kafka proxy's: the broker address it replaces by its own in the broker's answers (absent: the
    /// upstream's address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised: Option<String>,
    /// Toxiproxy's toxic objects.
    #[schema(value_type = Vec<Object>)]
    pub toxics: Vec<Value>,
    /// Partitions that cut this link now.
    pub cut_by: Vec<String>,
}

/// A proxy to create or (with fields absent) update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyInput {
    pub name: Option<String>,
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub enabled: Option<bool>,
    pub protocol: Option<Protocol>,
    /// `host:port`; empty: none (the upstream's address).
    pub advertised: Option<String>,
}

impl ProxyInput {
    /// Parses Toxiproxy's proxy object; every problem is reported at once.
    pub fn parse(body: &Value) -> Result<ProxyInput, ChaosError> {
        let Some(object) = body.as_object() else {
            return Err(ChaosError::InvalidProxy(vec![problem(
                "body",
                "must be a JSON object",
            )]));
        };
        let mut problems = Vec::new();
        let mut text = |field: &str| match object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                problems.push(problem(field, "must be a string"));
                None
            }
        };
        let name = text("name");
        let listen = text("listen");
        let upstream = text("upstream");
        let advertised = text("advertised");
        let enabled = match object.get("enabled") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                problems.push(problem("enabled", "must be true or false"));
                None
            }
        };
        let protocol = match object.get("protocol") {
            None | Some(Value::Null) => None,
            Some(value) => match serde_json::from_value::<Protocol>(value.clone()) {
                Ok(p) => Some(p),
                Err(_) => {
                    problems.push(problem("protocol", "must be tcp, http or kafka"));
                    None
                }
            },
        };
        if let Some(name) = &name {
            check_name(name, "name", &mut problems);
        }
        if let Some(upstream) = &upstream
            && !is_host_port(upstream)
        {
            problems.push(problem("upstream", "must be host:port"));
        }
        if let Some(listen) = &listen
            && !listen.is_empty()
            && !is_host_port(listen)
        {
            problems.push(problem("listen", "must be host:port"));
        }
        if let Some(advertised) = &advertised
            && !advertised.is_empty()
            && !is_host_port(advertised)
        {
            problems.push(problem("advertised", "must be host:port"));
        }
        if problems.is_empty() {
            Ok(ProxyInput {
                name,
                listen,
                upstream,
                enabled,
                protocol,
                advertised,
            })
        } else {
            Err(ChaosError::InvalidProxy(problems))
        }
    }

    /// The fields a new proxy must have (Toxiproxy: "missing required field").
    fn require_new(&self) -> Result<(), ChaosError> {
        let mut problems = Vec::new();
        if self.name.as_deref().is_none_or(str::is_empty) {
            problems.push(problem("name", "missing required field"));
        }
        if self.upstream.as_deref().is_none_or(str::is_empty) {
            problems.push(problem("upstream", "missing required field"));
        }
        if self.advertised().is_some() && self.protocol != Some(Protocol::Kafka) {
            problems.push(advertised_needs_kafka());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ChaosError::InvalidProxy(problems))
        }
    }
}

impl ProxyInput {
    /// The advertised address asked for (an empty one is none).
    fn advertised(&self) -> Option<&str> {
        self.advertised.as_deref().filter(|a| !a.is_empty())
    }
}

fn advertised_needs_kafka() -> Problem {
    problem(
        "advertised",
        "only a proxy with \"protocol\": \"kafka\" rewrites an advertised address",
    )
}

fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

fn problem(field: &str, message: &str) -> Problem {
    Problem {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

struct ProxyEntry {
    name: String,
    /// As asked (`listen` of the API before binding).
    listen: String,
    bound: Option<SocketAddr>,
    upstream: String,
    protocol: Protocol,
    /// A kafka proxy's advertised address to rewrite (`None`: the upstream's).
    advertised: Option<String>,
    enabled: bool,
    toxics: Vec<Arc<ActiveToxic>>,
    cuts: BTreeMap<String, Arc<Cut>>,
    faults: watch::Sender<Arc<LinkFaults>>,
    running: Option<CancellationToken>,
    /// The accept loop, which owns the listener (it lets go of it once `running` is cancelled).
    accepting: Option<tokio::task::JoinHandle<()>>,
    disabled: Option<Arc<FaultEvent>>,
}

impl std::fmt::Debug for ProxyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyEntry")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl ProxyEntry {
    fn view(&self) -> ProxyView {
        ProxyView {
            name: self.name.clone(),
            listen: self
                .bound
                .map(|a| a.to_string())
                .unwrap_or_else(|| self.listen.clone()),
            upstream: self.upstream.clone(),
            enabled: self.enabled,
            protocol: self.protocol,
            advertised: self.advertised.clone(),
            toxics: self.toxics.iter().map(|t| t.toxic.to_json()).collect(),
            cut_by: self.cuts.keys().cloned().collect(),
        }
    }

    fn toxic_index(&self, toxic: &str) -> Result<usize, ChaosError> {
        self.toxics
            .iter()
            .position(|t| t.toxic.name == toxic)
            .ok_or_else(|| ChaosError::ToxicNotFound(toxic.to_owned()))
    }

    fn publish(&self) {
        self.faults.send_replace(Arc::new(LinkFaults {
            toxics: self.toxics.clone(),
            cuts: self.cuts.values().cloned().collect(),
        }));
    }

    /// Binds (again: the bound port is kept, so a re-enabled proxy listens where it did) and starts
    /// accepting.
    async fn start(&mut self) -> Result<(), ChaosError> {
        if self.running.is_some() {
            return Ok(());
        }
        // A proxy started again on its own address (re-enabled, or changed) must wait until the old
        // listener is closed, or the address is still in use.
        if let Some(stopped) = self.accepting.take() {
            let _ = stopped.await;
        }
        let address = match self.bound {
            Some(bound) => bound.to_string(),
            None if self.listen.is_empty() => "127.0.0.1:0".to_owned(),
            None => self.listen.clone(),
        };
        let listener = TcpListener::bind(&address).await.map_err(|error| {
            if error.kind() == std::io::ErrorKind::AddrInUse {
                ChaosError::ListenInUse {
                    listen: address.clone(),
                }
            } else {
                ChaosError::CannotListen {
                    listen: address.clone(),
                    reason: error.to_string(),
                }
            }
        })?;
        self.bound = listener.local_addr().ok();
        let stop = CancellationToken::new();
        let link = Arc::new(Link::new(
            &self.name,
            &self.upstream,
            self.protocol,
            self.faults.subscribe(),
            self.kafka_rewrite(),
        ));
        self.accepting = Some(tokio::spawn(crate::proxy::run(
            listener,
            link,
            stop.clone(),
        )));
        self.running = Some(stop);
        tracing::info!(link = %self.name, listen = ?self.bound, upstream = %self.upstream, "proxy started");
        Ok(())
    }

    /// A kafka proxy's rewrite: the advertised address (or the upstream's) to the bound port.
    fn kafka_rewrite(&self) -> Option<crate::kafka::Rewrite> {
        let port = self.bound?.port();
        let advertised = self.advertised.as_deref().unwrap_or(&self.upstream);
        (self.protocol == Protocol::Kafka)
            .then(|| crate::kafka::Rewrite::of(advertised, port))
            .flatten()
    }

    /// Closes the listener and every open connection.
    fn stop(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
            tracing::info!(link = %self.name, "proxy stopped");
        }
    }

    fn end_all(&mut self) {
        for toxic in self.toxics.drain(..) {
            toxic.event.end();
        }
        for cut in std::mem::take(&mut self.cuts).into_values() {
            cut.event.end();
        }
        if let Some(disabled) = self.disabled.take() {
            disabled.end();
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    proxies: BTreeMap<String, ProxyEntry>,
    partitions: BTreeMap<String, Partition>,
}

impl Registry {
    fn proxy(&mut self, name: &str) -> Result<&mut ProxyEntry, ChaosError> {
        self.proxies
            .get_mut(name)
            .ok_or_else(|| ChaosError::ProxyNotFound(name.to_owned()))
    }

    fn known_parts(&self) -> BTreeSet<String> {
        parts(self.proxies.keys().map(String::as_str))
    }
}

/// The sidecar's state, shared by the admin API.
#[derive(Debug, Default)]
pub struct Chaos {
    registry: Mutex<Registry>,
    next_toxic: AtomicU64,
    pub events: FaultLog,
}

impl Chaos {
    pub async fn proxies(&self) -> BTreeMap<String, ProxyView> {
        let registry = self.registry.lock().await;
        registry
            .proxies
            .iter()
            .map(|(name, p)| (name.clone(), p.view()))
            .collect()
    }

    pub async fn proxy(&self, name: &str) -> Result<ProxyView, ChaosError> {
        Ok(self.registry.lock().await.proxy(name)?.view())
    }

    pub async fn create_proxy(&self, input: ProxyInput) -> Result<ProxyView, ChaosError> {
        input.require_new()?;
        let mut registry = self.registry.lock().await;
        let name = input.name.clone().unwrap_or_default();
        if registry.proxies.contains_key(&name) {
            return Err(ChaosError::ProxyExists(name));
        }
        let view = self.add(&mut registry, input).await?;
        Ok(view)
    }

    async fn add(
        &self,
        registry: &mut Registry,
        input: ProxyInput,
    ) -> Result<ProxyView, ChaosError> {
        let advertised = input.advertised().map(str::to_owned);
        let name = input.name.unwrap_or_default();
        let (faults, _) = watch::channel(Arc::new(LinkFaults::default()));
        let mut entry = ProxyEntry {
            name: name.clone(),
            listen: input.listen.unwrap_or_default(),
            bound: None,
            upstream: input.upstream.unwrap_or_default(),
            protocol: input.protocol.unwrap_or_default(),
            advertised,
            enabled: input.enabled.unwrap_or(true),
            toxics: Vec::new(),
            cuts: BTreeMap::new(),
            faults,
            running: None,
            accepting: None,
            disabled: None,
        };
        self.events.register_link(&name);
        if entry.enabled {
            entry.start().await?;
        } else {
            entry.disabled = Some(self.disabled_event(&name));
        }
        for partition in registry.partitions.values() {
            if partition.cuts(&name) {
                entry
                    .cuts
                    .insert(partition.name.clone(), self.cut(&name, partition));
            }
        }
        entry.publish();
        let view = entry.view();
        registry.proxies.insert(name, entry);
        Ok(view)
    }

    fn disabled_event(&self, link: &str) -> Arc<FaultEvent> {
        self.events.open(
            link,
            FaultRef {
                kind: "disabled",
                name: "disabled".into(),
                fault_type: "disabled".into(),
            },
        )
    }

    fn cut(&self, link: &str, partition: &Partition) -> Arc<Cut> {
        let mode = match partition.mode {
            CutMode::Hold => "hold",
            CutMode::Reset => "reset",
        };
        Arc::new(Cut {
            mode: partition.mode,
            event: self.events.open(
                link,
                FaultRef {
                    kind: "partition",
                    name: partition.name.clone(),
                    fault_type: mode.into(),
                },
            ),
        })
    }

    /// Toxiproxy's `POST /proxies/{name}`: change listen, upstream, enabled (and protocol).
    pub async fn update_proxy(
        &self,
        name: &str,
        input: ProxyInput,
    ) -> Result<ProxyView, ChaosError> {
        let mut registry = self.registry.lock().await;
        let entry = registry.proxy(name)?;
        let moved = input.listen.as_ref().is_some_and(|l| {
            *l != entry.listen && Some(l.as_str()) != entry.bound.map(|b| b.to_string()).as_deref()
        });
        let protocol = input.protocol.unwrap_or(entry.protocol);
        // An advertised address belongs to a kafka proxy: it goes when the protocol changes.
        let advertised = match &input.advertised {
            Some(_) => input.advertised().map(str::to_owned),
            None if protocol == Protocol::Kafka => entry.advertised.clone(),
            None => None,
        };
        if advertised.is_some() && protocol != Protocol::Kafka {
            return Err(ChaosError::InvalidProxy(vec![advertised_needs_kafka()]));
        }
        let retargeted = input
            .upstream
            .as_ref()
            .is_some_and(|u| *u != entry.upstream)
            || protocol != entry.protocol
            || advertised != entry.advertised;
        let enabled = input.enabled.unwrap_or(entry.enabled);
        if moved || retargeted {
            let was_running = entry.running.is_some();
            let old = (
                entry.listen.clone(),
                entry.bound,
                entry.upstream.clone(),
                entry.protocol,
                entry.advertised.clone(),
            );
            entry.stop();
            if let Some(listen) = input.listen.clone().filter(|_| moved) {
                entry.listen = listen;
                entry.bound = None;
            }
            if let Some(upstream) = input.upstream.clone() {
                entry.upstream = upstream;
            }
            entry.protocol = protocol;
            entry.advertised = advertised;
            if enabled && let Err(error) = entry.start().await {
                // Put it back as it was: bad input changes nothing.
                (
                    entry.listen,
                    entry.bound,
                    entry.upstream,
                    entry.protocol,
                    entry.advertised,
                ) = old;
                if was_running {
                    let _ = entry.start().await;
                }
                return Err(error);
            }
        } else if enabled && entry.running.is_none() {
            entry.start().await?;
        } else if !enabled {
            entry.stop();
        }
        if enabled != entry.enabled {
            entry.enabled = enabled;
            if enabled {
                if let Some(event) = entry.disabled.take() {
                    event.end();
                }
            } else {
                let event = self.disabled_event(name);
                let entry = registry.proxy(name)?;
                entry.disabled = Some(event);
            }
        }
        Ok(registry.proxy(name)?.view())
    }

    pub async fn delete_proxy(&self, name: &str) -> Result<(), ChaosError> {
        let mut registry = self.registry.lock().await;
        let mut entry = registry
            .proxies
            .remove(name)
            .ok_or_else(|| ChaosError::ProxyNotFound(name.to_owned()))?;
        entry.stop();
        entry.end_all();
        Ok(())
    }

    /// Toxiproxy's `POST /populate`: makes each listed proxy exist as described. A proxy that exists with the
    /// same listen address and upstream is kept (with its toxics and connections); one that differs is
    /// replaced. If one cannot listen, the proxies this call created are removed again.
    pub async fn populate(&self, inputs: Vec<ProxyInput>) -> Result<Vec<ProxyView>, ChaosError> {
        for input in &inputs {
            input.require_new()?;
        }
        let mut registry = self.registry.lock().await;
        let mut created = Vec::new();
        let mut views = Vec::new();
        for input in inputs {
            let name = input.name.clone().unwrap_or_default();
            if let Some(existing) = registry.proxies.get(&name) {
                let same_listen = input.listen.as_deref().is_none_or(|l| {
                    l == existing.listen
                        || Some(l.to_owned()) == existing.bound.map(|b| b.to_string())
                });
                let same = same_listen
                    && input.upstream.as_deref() == Some(existing.upstream.as_str())
                    && input.protocol.unwrap_or_default() == existing.protocol
                    && input.advertised() == existing.advertised.as_deref();
                if same {
                    views.push(existing.view());
                    continue;
                }
                if let Some(mut old) = registry.proxies.remove(&name) {
                    old.stop();
                    old.end_all();
                }
            }
            match self.add(&mut registry, input).await {
                Ok(view) => {
                    created.push(name);
                    views.push(view);
                }
                Err(error) => {
                    for name in created {
                        if let Some(mut entry) = registry.proxies.remove(&name) {
                            entry.stop();
                            entry.end_all();
                        }
                    }
                    return Err(error);
                }
            }
        }
        Ok(views)
    }

    /// `POST /reset`: every proxy enabled, every toxic removed, every partition healed.
    pub async fn reset(&self) -> Result<(), ChaosError> {
        let mut registry = self.registry.lock().await;
        registry.partitions.clear();
        for entry in registry.proxies.values_mut() {
            entry.end_all();
            entry.enabled = true;
            entry.start().await?;
            entry.publish();
        }
        Ok(())
    }

    pub async fn toxics(&self, proxy: &str) -> Result<Vec<Value>, ChaosError> {
        let mut registry = self.registry.lock().await;
        Ok(registry
            .proxy(proxy)?
            .toxics
            .iter()
            .map(|t| t.toxic.to_json())
            .collect())
    }

    pub async fn toxic(&self, proxy: &str, toxic: &str) -> Result<Value, ChaosError> {
        let mut registry = self.registry.lock().await;
        let entry = registry.proxy(proxy)?;
        let index = entry.toxic_index(toxic)?;
        Ok(entry.toxics[index].toxic.to_json())
    }

    pub async fn add_toxic(&self, proxy: &str, body: &Value) -> Result<Value, ChaosError> {
        let mut registry = self.registry.lock().await;
        let entry = registry.proxy(proxy)?;
        let toxic = ToxicSpec::parse(body).map_err(rejected)?.0;
        if toxic.kind.is_http() && entry.protocol != Protocol::Http {
            return Err(ChaosError::InvalidToxic(vec![problem(
                "type",
                "HTTP toxics need a proxy with \"protocol\": \"http\"",
            )]));
        }
        if entry.toxics.iter().any(|t| t.toxic.name == toxic.name) {
            return Err(ChaosError::ToxicExists(toxic.name));
        }
        let active = self.activate(proxy, toxic);
        let json = active.toxic.to_json();
        entry.toxics.push(active);
        entry.publish();
        Ok(json)
    }

    fn activate(&self, link: &str, toxic: Toxic) -> Arc<ActiveToxic> {
        let event = self.events.open(
            link,
            FaultRef {
                kind: "toxic",
                name: toxic.name.clone(),
                fault_type: toxic.kind.type_name().into(),
            },
        );
        Arc::new(ActiveToxic {
            id: self.next_toxic.fetch_add(1, Ordering::Relaxed) + 1,
            toxic,
            event,
        })
    }

    /// Updating a toxic replaces it: connections roll its toxicity again and its timers start again.
    pub async fn update_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        body: &Value,
    ) -> Result<Value, ChaosError> {
        let mut registry = self.registry.lock().await;
        let entry = registry.proxy(proxy)?;
        let index = entry.toxic_index(toxic)?;
        let updated = entry.toxics[index].toxic.update(body).map_err(rejected)?;
        entry.toxics[index].event.end();
        let active = self.activate(proxy, updated);
        let json = active.toxic.to_json();
        entry.toxics[index] = active;
        entry.publish();
        Ok(json)
    }

    pub async fn delete_toxic(&self, proxy: &str, toxic: &str) -> Result<(), ChaosError> {
        let mut registry = self.registry.lock().await;
        let entry = registry.proxy(proxy)?;
        let index = entry.toxic_index(toxic)?;
        let removed = entry.toxics.remove(index);
        removed.event.end();
        entry.publish();
        Ok(())
    }

    pub async fn partitions(&self) -> Vec<PartitionView> {
        let registry = self.registry.lock().await;
        registry
            .partitions
            .values()
            .map(|p| partition_view(p, &registry))
            .collect()
    }

    pub async fn partition(&self, name: &str) -> Result<PartitionView, ChaosError> {
        let registry = self.registry.lock().await;
        registry
            .partitions
            .get(name)
            .map(|p| partition_view(p, &registry))
            .ok_or_else(|| ChaosError::PartitionNotFound(name.to_owned()))
    }

    pub async fn create_partition(
        &self,
        name: &str,
        sides: Vec<Vec<String>>,
        mode: CutMode,
    ) -> Result<PartitionView, ChaosError> {
        let mut registry = self.registry.lock().await;
        let partition = Partition::parse(name, sides, mode, &registry.known_parts())
            .map_err(ChaosError::InvalidPartition)?;
        if registry.partitions.contains_key(name) {
            return Err(ChaosError::PartitionExists(name.to_owned()));
        }
        for (link, entry) in registry.proxies.iter_mut() {
            if partition.cuts(link) {
                entry
                    .cuts
                    .insert(partition.name.clone(), self.cut(link, &partition));
                entry.publish();
            }
        }
        let view = partition_view(&partition, &registry);
        registry.partitions.insert(name.to_owned(), partition);
        tracing::info!(partition = name, links = ?view.links, "partition made");
        Ok(view)
    }

    pub async fn heal(&self, name: &str) -> Result<(), ChaosError> {
        let mut registry = self.registry.lock().await;
        registry
            .partitions
            .remove(name)
            .ok_or_else(|| ChaosError::PartitionNotFound(name.to_owned()))?;
        for entry in registry.proxies.values_mut() {
            if let Some(cut) = entry.cuts.remove(name) {
                cut.event.end();
                entry.publish();
            }
        }
        tracing::info!(partition = name, "partition healed");
        Ok(())
    }

    /// Stops every proxy (the process is shutting down).
    pub async fn stop_all(&self) {
        let mut registry = self.registry.lock().await;
        for entry in registry.proxies.values_mut() {
            entry.stop();
        }
    }
}

fn rejected(rejection: Rejection) -> ChaosError {
    match rejection {
        Rejection::UnknownType(t) => {
            ChaosError::InvalidToxicType(t.unwrap_or_else(|| "(missing)".into()))
        }
        Rejection::Invalid(problems) => ChaosError::InvalidToxic(problems),
    }
}

/// A partition as the API shows it: its sides, its mode and the links it cuts now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartitionView {
    pub name: String,
    pub sides: Vec<BTreeSet<String>>,
    pub mode: CutMode,
    pub links: Vec<String>,
}

fn partition_view(partition: &Partition, registry: &Registry) -> PartitionView {
    PartitionView {
        name: partition.name.clone(),
        sides: partition.sides.clone(),
        mode: partition.mode,
        links: registry
            .proxies
            .keys()
            .filter(|l| partition.cuts(l))
            .cloned()
            .collect(),
    }
}

/// Problems as the `details` of an error body.
pub fn problems_json(problems: &[Problem]) -> Value {
    json!({"errors": problems.iter().map(|p| json!({"field": p.field, "message": p.message})).collect::<Vec<_>>()})
}
