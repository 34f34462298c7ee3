//! `twoway DIR_A DIR_B`: two-way reconciliation (issue: not built yet).
