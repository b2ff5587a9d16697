//! What a scenario concludes, for the table `cargo xtask scenario all` ends with: the seed section it
//! plays, the seed's claim, what the run measured, and whether the checker found the claim held.

/// One scenario's conclusion.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The seed section, e.g. `五 Paxos`.
    pub section: &'static str,
    /// The seed's claim, in a line.
    pub claim: &'static str,
    /// What the run measured, in a line (numbers).
    pub measured: String,
    /// Whether the scenario's checker found the claim held.
    pub passed: bool,
}
