//! The storefront's HTML (server-rendered with `maud`, which escapes everything it interpolates).

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::catalog::{Bestseller, Product, Snapshot};
use crate::degrade::DegradeMode;

/// Full or degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Full,
    Degraded,
}

impl PageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Degraded => "degraded",
        }
    }
}

/// Why a page is degraded (the label of `gateway_pages_total{reason}` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Over the concurrency limit.
    HighDemand,
    /// `degrade=on`.
    Promotion,
    /// The inventory is slow or cut off: stock from the last known catalog.
    InventoryUnavailable,
    /// The order service is slow or cut off: ordering paused.
    OrdersUnavailable,
    /// The bestsellers panel could not be had in time: dropped (the non-core part goes first).
    PanelUnavailable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HighDemand => "high_demand",
            Self::Promotion => "promotion",
            Self::InventoryUnavailable => "inventory_unavailable",
            Self::OrdersUnavailable => "orders_unavailable",
            Self::PanelUnavailable => "panel_unavailable",
        }
    }

    fn banner(self) -> &'static str {
        match self {
            Self::HighDemand => {
                "High demand right now: you are seeing a lighter shop. Checkout works as usual."
            }
            Self::Promotion => {
                "Promotion: a lighter shop today, so that every checkout goes through."
            }
            Self::InventoryUnavailable => {
                "Live stock cannot be read right now: the stock shown is the last we know."
            }
            Self::OrdersUnavailable => {
                "Ordering is paused: the order service cannot be reached. You can keep browsing."
            }
            Self::PanelUnavailable => "A lighter page right now: the bestsellers are left out.",
        }
    }
}

/// How a page was served: shown in its footer (and the response headers).
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub page: PageKind,
    pub mode: DegradeMode,
    pub reason: Option<Reason>,
    /// When the stock shown was read, when it is not live.
    pub stock_as_of: Option<DateTime<Utc>>,
}

impl Served {
    pub fn full(mode: DegradeMode) -> Self {
        Self {
            page: PageKind::Full,
            mode,
            reason: None,
            stock_as_of: None,
        }
    }

    pub fn degraded(mode: DegradeMode, reason: Reason) -> Self {
        Self {
            page: PageKind::Degraded,
            mode,
            reason: Some(reason),
            stock_as_of: None,
        }
    }
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:.8rem 1.5rem;display:flex;justify-content:space-between}
header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:56rem;margin:1.5rem auto;padding:0 1rem}
.banner{background:#ffe8a3;border:1px solid #e0b000;padding:.7rem 1rem;border-radius:.4rem;margin-bottom:1rem}
.products{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(13rem,1fr));gap:1rem}
.product{background:#fff;border-radius:.5rem;padding:1rem;box-shadow:0 1px 3px #0002}
.product a{font-weight:600;color:#1d3557}
.price{color:#555}.stock{font-weight:600}
aside{background:#fff;border-radius:.5rem;padding:.5rem 1rem;margin-top:1.5rem}
form label{display:block;margin:.5rem 0}
button{background:#e63946;color:#fff;border:0;padding:.6rem 1.2rem;border-radius:.3rem;font-size:1rem;cursor:pointer}
.status{font-weight:700;padding:.2rem .5rem;border-radius:.3rem;background:#ddd}
.status[data-status=CONFIRMED]{background:#b7e4c7}.status[data-status=REJECTED]{background:#f4a3a8}
.error{background:#fde2e4;border:1px solid #e63946;padding:.7rem 1rem;border-radius:.4rem}
footer{max-width:56rem;margin:2rem auto;padding:0 1rem;color:#777;font-size:.85rem}
";

fn layout(title: &str, served: &Served, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No favicon request (a 404 would be a console error).
                link rel="icon" href="data:,";
                title { (title) " · distlab shop" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header { a href="/" { "distlab shop" } span { "BASE demo" } }
                main {
                    @if let Some(reason) = served.reason {
                        div #banner .banner data-reason=(reason.as_str()) {
                            (reason.banner())
                            @if let Some(as_of) = served.stock_as_of {
                                " Stock as of "
                                span #stock-as-of { (as_of.format("%Y-%m-%d %H:%M:%S UTC")) } "."
                            }
                        }
                    }
                    (body)
                }
                footer #served data-page=(served.page.as_str()) data-mode=(served.mode.as_str()) {
                    "Served as a " strong { (served.page.as_str()) } " page · degrade mode "
                    strong { (served.mode.as_str()) }
                    @if let Some(reason) = served.reason { " · " (reason.as_str()) }
                }
                script src="/static/app.js" defer {}
            }
        }
    }
}

/// "N in stock", or "Sold out" (the inventory's unfenced adjustments — the lock demo's — can take stock
/// below zero).
fn stock(available: i64) -> Markup {
    html! {
        @if available > 0 { span .stock { (available) } " in stock" }
        @else { span .stock .sold-out data-available=(available) { "Sold out" } }
    }
}

fn price(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents.rem_euclid(100))
}

/// The catalog: every product with its stock, and the bestsellers panel when there is one.
pub fn catalog(
    snapshot: Option<&Snapshot>,
    bestsellers: Option<&[Bestseller]>,
    served: &Served,
) -> Markup {
    layout(
        "Catalog",
        served,
        html! {
            h1 { "Catalog" }
            @match snapshot {
                None => p #error .error { "The catalog is not available yet. Please try again in a moment." },
                Some(snapshot) if snapshot.products.is_empty() => p { "No products yet." },
                Some(snapshot) => ul .products {
                    @for product in &snapshot.products {
                        li .product data-sku=(product.sku) {
                            a href={ "/products/" (product.sku) } { (product.name) }
                            div .price { "$" (price(product.price_cents)) }
                            div { (stock(product.available)) }
                        }
                    }
                },
            }
            @if let Some(bestsellers) = bestsellers {
                aside #bestsellers {
                    h2 { "Bestsellers" }
                    @if bestsellers.is_empty() { p { "Nothing sold yet." } }
                    ol {
                        @for b in bestsellers {
                            @let name = snapshot.and_then(|s| s.find(&b.sku)).map_or(b.sku.as_str(), |p| p.name.as_str());
                            li data-sku=(b.sku) { a href={ "/products/" (b.sku) } { (name) } " — " (b.units) " sold" }
                        }
                    }
                }
            }
        },
    )
}

/// A product with the checkout form (or the notice that ordering is paused).
pub fn product(
    product: &Product,
    idempotency_key: &str,
    ordering_paused: bool,
    served: &Served,
) -> Markup {
    layout(
        &product.name,
        served,
        html! {
            h1 { (product.name) }
            p .price { "$" (price(product.price_cents)) }
            p { (stock(product.available)) }
            @if ordering_paused {
                p #ordering-paused .error { "Ordering is paused: the order service cannot be reached right now." }
            } @else {
                form #checkout method="post" action="/checkout" autocomplete="off" {
                    input type="hidden" name="sku" value=(product.sku);
                    input type="hidden" name="idempotency_key" value=(idempotency_key);
                    label { "Quantity " input #quantity type="number" name="quantity" value="1" min="1" max="1000" required; }
                    label { "Your name " input #customer type="text" name="customer_id" value="guest"
                        pattern="[A-Za-z0-9._\\-]{1,64}" required; }
                    button #buy type="submit" { "Buy" }
                }
            }
        },
    )
}

/// What the order page shows of an order.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct OrderView {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub items: Vec<OrderItem>,
    pub mode: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct OrderItem {
    pub sku: String,
    pub quantity: i64,
}

/// An order and its status, which the page's script keeps current until it is decided.
pub fn order(order: &OrderView, served: &Served) -> Markup {
    layout(
        "Your order",
        served,
        html! {
            h1 { "Your order" }
            p { "Order " code #order-id { (order.id) } " (" (order.mode) ")" }
            ul { @for item in &order.items { li { (item.quantity) " × " (item.sku) } } }
            p #order data-order-id=(order.id) {
                "Status: " span #status .status data-status=(order.status) { (order.status) }
                " " span #reason { @if let Some(reason) = &order.reason { "(" (reason) ")" } }
            }
            p #pending-note { @if order.status == "PENDING" {
                "The inventory has not answered yet: this page updates by itself (soft state, eventually consistent)."
            } }
        },
    )
}

/// A checkout whose outcome is not known (sent, but no answer in time): the same order again, with the same
/// idempotency key, so that retrying cannot order twice.
pub fn unconfirmed(checkout: &crate::checkout::Checkout, served: &Served) -> Markup {
    layout(
        "Order not confirmed yet",
        served,
        html! {
            h1 { "Order not confirmed yet" }
            p #error .error {
                "The order service did not answer in time: your order may or may not have been placed. "
                "Try again with the button below — it cannot order twice."
            }
            form #checkout method="post" action="/checkout" autocomplete="off" {
                input type="hidden" name="sku" value=(checkout.sku);
                input type="hidden" name="quantity" value=(checkout.quantity);
                input type="hidden" name="customer_id" value=(checkout.customer_id);
                @if let Some(key) = &checkout.idempotency_key {
                    input type="hidden" name="idempotency_key" value=(key);
                }
                button #buy type="submit" { "Try again" }
            }
        },
    )
}

/// An error page.
pub fn error(title: &str, message: &str, served: &Served) -> Markup {
    layout(
        title,
        served,
        html! {
            h1 { (title) }
            p #error .error { (message) }
            p { a href="/" { "Back to the catalog" } }
        },
    )
}
