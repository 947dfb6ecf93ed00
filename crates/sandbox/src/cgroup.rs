//! Per-run cgroups (placeholder).
