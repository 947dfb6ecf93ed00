//! Image assembly and outputs: local store tags, OCI layout and tarball, docker archive, local directory.
