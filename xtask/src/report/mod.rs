//! Experiment reports: what a run measured, written as standalone files to look at afterwards.

pub mod svg;
