//! Reading what a test built from the store of its root: a blob as JSON, a file in an image's
//! layers.

use rbuild_oci::{Descriptor, Manifest, Store};
use std::io::Read;
use std::path::Path;

/// The blob `desc` of the store in `root`, as JSON.
pub fn read_json<T: serde::de::DeserializeOwned>(root: &Path, desc: &Descriptor) -> T {
    let store = Store::open(root).expect("store");
    serde_json::from_slice(&store.read_blob(&desc.digest).expect("blob")).expect("json")
}

/// The content of `path` in the image `manifest`'s layers (the last layer that has it).
pub fn file_in_image(root: &Path, manifest: &Manifest, path: &str) -> Option<String> {
    let store = Store::open(root).expect("store");
    let mut found = None;
    for layer in &manifest.layers {
        let bytes = store.read_blob(&layer.digest).expect("layer");
        let reader: Box<dyn Read> = if layer.media_type.0.ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        } else {
            Box::new(&bytes[..])
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().expect("tar") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").to_string_lossy().to_string();
            if name.trim_start_matches("./") == path {
                let mut text = String::new();
                entry.read_to_string(&mut text).expect("read");
                found = Some(text);
            }
        }
    }
    found
}
