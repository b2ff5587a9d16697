use clap::Subcommand;
#[derive(Debug, Subcommand)]
pub enum Which { Outbox }
pub fn run(_s: &crate::stack::Stack, _w: Which) -> anyhow::Result<()> { Ok(()) }
