//! The OCI distribution protocol client: authentication, manifest and blob pull.
