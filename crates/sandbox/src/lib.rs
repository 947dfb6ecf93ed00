//! Runs one process in a fresh root filesystem inside new Linux namespaces.
