//! Planners: pure functions from trees to plans. Nothing here touches a disk; the
//! `twoway` planner lives in its own crate and builds on [`mirror`]'s plan type.

pub mod additive;
pub mod mirror;
pub mod moves;
