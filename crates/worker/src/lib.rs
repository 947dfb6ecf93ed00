//! Executes llb ops for the solver using the snapshotter, sandbox and registry.
