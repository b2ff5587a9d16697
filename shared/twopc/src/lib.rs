//! Two-phase commit (2PC) on PostgreSQL `PREPARE TRANSACTION` — the seed's second way (section 二, "2PC") to
//! keep the order and the inventory consistent.
//!
//! A **coordinator** (协调者) asks every **participant** (参与者) to do its part and vote (准备阶段, phase 1); a
//! yes vote is a *durable* prepared transaction, which survives a crash of the participant and holds its
//! locks. The coordinator decides — commit iff every vote is yes — writes the decision to its log, and only
//! then tells every participant (提交阶段, phase 2), retrying until each acknowledges.
//!
//! This crate holds what both sides share:
//! - [`gid`]: global transaction ids, made and validated by distlab only (Postgres takes a gid as a literal);
//! - [`wire`]: the HTTP bodies between coordinator and participants;
//! - [`protocol`]: the decision rule and the states of a global transaction, with no IO;
//! - [`participant`]: the participant side on a PostgreSQL database — idempotent prepare, commit, rollback
//!   and status, and its routes;
//! - [`faults`]: switches that reproduce the seed's four problems on demand (crash, stall, drop, vote no).

pub mod faults;
pub mod gid;
pub mod participant;
pub mod protocol;
pub mod wire;

pub use gid::Gid;
