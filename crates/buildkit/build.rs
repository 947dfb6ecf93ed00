//! Compiles every `.proto` file under `proto/` (sorted, so the output is stable) with protox
//! (a protobuf compiler in Rust: no `protoc` binary) and generates the prost types, one Rust
//! file per protobuf package. Maps are `BTreeMap`s so that marshalling is deterministic (an
//! op's digest is the sha256 of its marshalled bytes). Another package is one more `.proto`
//! file here and one more module in `lib.rs`.

use std::path::{Path, PathBuf};

fn protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut files = Vec::new();
    protos(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    prost_build::Config::new()
        .btree_map(["."])
        // LLB messages serialise to JSON (the snapshot tests decode LLB to JSON); only package
        // `pb`, whose messages use no well-known types (which have no serde impls).
        .type_attribute(".pb", "#[derive(serde::Serialize)]")
        .compile_fds(descriptors)?;
    Ok(())
}
