//! The storefront gateway (seed section 四, BASE): the shop's pages, which give up part of the service
//! instead of all of it.
//!
//! - **Basically available**: over an adaptive concurrency limit a page is served degraded at once (the last
//!   known catalog, a banner, no bestsellers) instead of queueing ([`shed`]); checkout has capacity of its
//!   own; a slow or cut-off dependency is cut short by a time-out and a circuit breaker ([`deps`],
//!   [`breaker`]) and the page says what it could not show.
//! - **Soft state**: an order's page shows it PENDING and follows it to CONFIRMED or REJECTED by itself;
//!   a degraded page shows stock "as of" when it was last read.
//! - **Eventually consistent**: the stock and the order converge; the pages say when they are behind.
//!
//! The switch `degrade` (off | auto | on, [`degrade`]) decides; `off` is the shop without BASE.
//!
//! The gateway also serves the live [`console`] at `/console`: the whole running stack on one page.

pub mod breaker;
pub mod catalog;
pub mod checkout;
pub mod config;
pub mod console;
pub mod degrade;
pub mod deps;
pub mod http;
pub mod pages;
pub mod shed;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use distlab_config_client::Follower;
use distlab_platform::http::{ReadinessCheck, Service, ServiceInfo, service_router};
use tokio_util::sync::CancellationToken;

pub use config::Config;

use catalog::Catalog;
use degrade::DegradeSwitch;
use deps::{Dependency, Guard};
use shed::Shedder;

/// A built gateway, ready to run.
#[derive(Debug)]
pub struct Application {
    service: Service,
    switch: DegradeSwitch,
}

impl Application {
    /// Binds the listener, and follows the `degrade` switch unless `config.config_urls` is empty.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        distlab_platform::metrics::install();
        let shutdown = CancellationToken::new();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .context("cannot build the HTTP client")?;
        let nodes = config.config_urls();
        let (switch, follower) = if nodes.is_empty() {
            (DegradeSwitch::fixed(config.degrade), None)
        } else {
            let followed = degrade::followed_switch();
            let follower = Follower::new(followed.clone(), nodes)
                .context("cannot build the config service client")?;
            (
                DegradeSwitch::following(config.degrade, followed),
                Some(follower),
            )
        };
        let catalog = Catalog::new(
            Dependency::new(
                "inventory",
                &config.inventory_url,
                config.inventory_timeout(),
                http.clone(),
            ),
            &config.catalog_prefix,
        );
        let orders = Dependency::new(
            "order",
            &config.order_url,
            config.order_timeout(),
            http.clone(),
        );
        let bestsellers = Dependency::new(
            "bestsellers",
            &config.order_url,
            config.bestsellers_timeout(),
            http.clone(),
        );
        let console = console::Console::new(&config, http, shutdown.clone());
        let state = http::AppState {
            switch: switch.clone(),
            catalog: catalog.clone(),
            orders: orders.clone(),
            bestsellers,
            shedder: Shedder::default(),
        };
        let readiness = vec![switch.readiness_check(), dependencies_check(&state)];
        let router = service_router(
            http::router(state).merge(console::router(console)),
            ServiceInfo {
                openapi: http::openapi(),
                readiness,
            },
        )
        .layer(axum::middleware::from_fn_with_state(
            switch.clone(),
            http::mark_mode,
        ));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let mut service = Service::new(listener, router, shutdown.clone()).with_task(
            keep_catalog_fresh(catalog, config.catalog_refresh(), shutdown.clone()),
        );
        if let Some(follower) = follower {
            service = service.with_task(follower.run(shutdown));
        }
        Ok(Self { service, switch })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.service.shutdown_token()
    }

    /// The degrade mode in force (tests).
    pub fn switch(&self) -> &DegradeSwitch {
        &self.switch
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.service
            .run_until_stopped()
            .await
            .context("gateway failed")
    }
}

/// `/readyz` `dependencies`: each dependency's breaker and the concurrency limits. Always ready — the
/// gateway's job is to answer when its dependencies do not.
fn dependencies_check(state: &http::AppState) -> ReadinessCheck {
    let inventory = state.catalog.inventory().clone();
    let orders = state.orders.clone();
    let bestsellers = state.bestsellers.clone();
    let shedder = state.shedder.clone();
    let catalog = state.catalog.clone();
    ReadinessCheck::with_detail("dependencies", move || {
        let detail = serde_json::json!({
            "inventory": inventory.detail(),
            "order": orders.detail(),
            "bestsellers": bestsellers.detail(),
            "limits": shedder.detail(),
            "catalog_as_of": catalog.last_known().map(|s| s.as_of),
        });
        std::future::ready(Ok(detail))
    })
}

/// Reads the catalog every `every` (through the inventory's breaker), so the degraded pages' stock is never
/// older than that while the inventory answers.
async fn keep_catalog_fresh(catalog: Catalog, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {
                if let Err(error) = catalog.live(Guard::Guarded).await {
                    tracing::debug!(%error, "catalog refresh failed; the last known catalog stays");
                }
            }
        }
    }
}
