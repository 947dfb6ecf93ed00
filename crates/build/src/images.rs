//! Queries and edits of the local image store, as `docker images`, `rmi`, `tag`, `inspect` and
//! `history` see it: images grouped by manifest with their names, IDs (config digests), creation
//! time and unpacked size; resolving a name, an ID prefix or a digest; tagging and untagging.
//! Untagging only drops `index.json` entries: the blobs stay for garbage collection.
//! A multi-platform image (an index) is one image: its ID is the index digest (as `docker
//! images` with the containerd store shows it), its size the unpacked size of every platform's
//! layers (each distinct layer once), it lists its platforms, and queries of one image
//! ([`Images::resolve_platform`]) pick one platform's manifest.

use crate::StateDir;
use rbuild_oci::{
    Compression, Descriptor, Digest, ImageRecord, Index, Platform, Store, StoreError,
    MAX_MANIFEST_BYTES,
};
use rbuild_registry::Reference;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom};

/// Errors of the image store queries; `Display` is docker's wording.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image has this name, ID or digest.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// An ID prefix matches more than one image.
    #[error("ambiguous image ID prefix `{0}`: it matches more than one image")]
    Ambiguous(String),
    /// Removing by ID an image that several repositories name, without force.
    #[error("conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories")]
    Conflict {
        /// The image ID, 12 hex digits.
        id: String,
    },
    /// A new name is not a valid docker reference.
    #[error("\"{reference}\" is not a valid repository/tag: invalid reference format")]
    InvalidReference {
        /// The rejected name.
        reference: String,
    },
    /// The store could not be read or written.
    #[error("image store")]
    Store(#[from] StoreError),
    /// The garbage collector's lock (held while a dangling image is deleted) failed.
    #[error("locking the root against garbage collection")]
    Gc(#[source] Box<crate::gc::GcError>),
    /// A multi-platform image has no manifest for the platform asked (or, when none was asked,
    /// for the host's).
    #[error("image {name}: no manifest for platform {wanted} (the image has {available}); choose one with --platform")]
    NoPlatform {
        /// The image as named.
        name: String,
        /// The platform asked for, e.g. `linux/s390x`.
        wanted: String,
        /// The platforms the image has, comma-separated.
        available: String,
    },
}

/// One image of the store: a manifest with the names that point at it.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The names (`repo:tag`) that point at this manifest, as stored.
    pub names: Vec<String>,
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The manifest and its config.
    pub record: ImageRecord,
    /// The unpacked size: the sum of the layers' uncompressed tar sizes (see [`layer_size`]);
    /// for an index, of every platform's distinct layers.
    pub size: u64,
    /// An index's platforms, in its order (empty for a single image manifest).
    pub platforms: Vec<Platform>,
}

impl ImageSummary {
    /// The image ID: the config digest; for a multi-platform image the index digest.
    pub fn id(&self) -> &Digest {
        if self.descriptor.media_type.is_index() {
            return &self.descriptor.digest;
        }
        &self.record.manifest.config.digest
    }

    /// True when this is a multi-platform image (an index).
    pub fn is_index(&self) -> bool {
        self.descriptor.media_type.is_index()
    }

    /// The image's platforms: an index's, else the config's own (`os/arch[/variant]`).
    pub fn platform_list(&self) -> Vec<Platform> {
        if self.is_index() {
            return self.platforms.clone();
        }
        vec![self.record.config.platform()]
    }

    /// The manifest digest.
    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }

    /// `created` of the config as Unix seconds, if set and valid RFC 3339.
    pub fn created_unix(&self) -> Option<i64> {
        self.record
            .config
            .created
            .as_deref()
            .and_then(parse_rfc3339)
    }
}

/// What one removal did, in docker's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// A name was dropped (`Untagged: NAME`).
    Untagged(String),
    /// The image lost its last name (`Deleted: ID`); its blobs await garbage collection.
    Deleted(Digest),
}

/// The image store of a state root, for queries.
#[derive(Debug, Clone)]
pub struct Images {
    state: StateDir,
    store: Option<Store>,
    sizes: std::sync::Arc<std::sync::Mutex<HashMap<Digest, u64>>>,
}

impl Images {
    /// Opens the store of `state` for reading; a root without a store has no images (nothing
    /// is created until [`Images::tag`] writes).
    pub fn open(state: &StateDir) -> Result<Images, ImageError> {
        let store = if state.has_store() {
            Some(Store::open(&state.store())?)
        } else {
            None
        };
        Ok(Images {
            state: state.clone(),
            store,
            sizes: Default::default(),
        })
    }

    /// Every named image, newest first (images with no valid `created` last).
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let mut by_manifest: BTreeMap<Digest, (Descriptor, Vec<String>)> = BTreeMap::new();
        for tag in store.tags()? {
            by_manifest
                .entry(tag.descriptor.digest.clone())
                .or_insert_with(|| (tag.descriptor.clone(), Vec::new()))
                .1
                .push(tag.name);
        }
        let mut out = Vec::new();
        for (digest, (descriptor, names)) in by_manifest {
            if descriptor.media_type.is_index() {
                out.push(self.index_summary(store, descriptor, names)?);
                continue;
            }
            let record = store.read_image(&digest)?;
            let size = self.image_size(store, &record)?;
            out.push(ImageSummary {
                names,
                descriptor,
                record,
                size,
                platforms: Vec::new(),
            });
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.created_unix()));
        Ok(out)
    }

    /// Every image: the named ones ([`Images::list`]) and then the dangling ones, newest first.
    /// A dangling image is an image manifest the store holds that no tag reaches (e.g. the
    /// previous build of a tag that a rebuild moved; it stays until garbage collection, as in
    /// docker); it has no names. Manifests whose config or layers are gone are left out.
    pub fn list_all(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let mut out = self.list()?;
        let Some(store) = &self.store else {
            return Ok(out);
        };
        let reached = store.reachable_from_tags()?;
        let mut dangling = Vec::new();
        for blob in store.list_blobs()? {
            if reached.contains(&blob.digest) {
                continue;
            }
            if let Some(image) = self.dangling_image(store, &blob.digest) {
                dangling.push(image);
            }
        }
        dangling.sort_by_key(|i| std::cmp::Reverse(i.created_unix()));
        out.extend(dangling);
        Ok(out)
    }

    /// The blob `digest` as a dangling image, when it is an image manifest whose config and
    /// layers the store still holds.
    fn dangling_image(&self, store: &Store, digest: &Digest) -> Option<ImageSummary> {
        // Manifests are small JSON; layers are skipped without reading them.
        let len = std::fs::metadata(store.blob_path(digest)).ok()?.len();
        if len > MAX_MANIFEST_BYTES {
            return None;
        }
        let mut first = [0u8; 1];
        let mut file = store.open_blob(digest).ok()?;
        file.read_exact(&mut first).ok()?;
        if first[0] != b'{' {
            return None;
        }
        let manifest: rbuild_oci::Manifest =
            serde_json::from_slice(&store.read_blob(digest).ok()?).ok()?;
        let config_type = manifest.config.media_type.as_str();
        if config_type != rbuild_oci::MediaType::OCI_CONFIG
            && config_type != rbuild_oci::MediaType::DOCKER_CONFIG
        {
            return None;
        }
        if !manifest.layers.iter().all(|l| store.has_blob(&l.digest)) {
            return None;
        }
        let record = store.read_image(digest).ok()?;
        let size = self.image_size(store, &record).ok()?;
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| rbuild_oci::MediaType::new(rbuild_oci::MediaType::OCI_MANIFEST));
        Some(ImageSummary {
            names: Vec::new(),
            descriptor: Descriptor {
                media_type,
                digest: digest.clone(),
                size: len,
                platform: None,
                annotations: None,
            },
            record,
            size,
            platforms: Vec::new(),
        })
    }

    /// The summary of the stored index `descriptor` named `names`: its record is the host
    /// platform's manifest (else the first readable one), its size every platform's distinct
    /// layers.
    fn index_summary(
        &self,
        store: &Store,
        descriptor: Descriptor,
        names: Vec<String>,
    ) -> Result<ImageSummary, ImageError> {
        let index = read_index(store, &descriptor.digest)?;
        // Platform images the store holds (an attestation manifest or a platform not pulled
        // is left out).
        let mut platforms = Vec::new();
        let mut records = Vec::new();
        for child in &index.manifests {
            let Some(platform) = child.platform.as_ref().filter(|p| p.os != "unknown") else {
                continue;
            };
            if !child.media_type.is_manifest() || !store.has_blob(&child.digest) {
                continue;
            }
            records.push(store.read_image(&child.digest)?);
            platforms.push(platform.clone());
        }
        let host = index
            .select(&Platform::host())
            .and_then(|d| records.iter().position(|r| r.manifest_digest == d.digest))
            .unwrap_or(0);
        let mut seen = std::collections::BTreeSet::new();
        let mut size = 0;
        for layer in records.iter().flat_map(|r| &r.manifest.layers) {
            if seen.insert(layer.digest.clone()) {
                size += self.layer_size(layer)?;
            }
        }
        if records.is_empty() {
            return Err(ImageError::NoSuchImage(descriptor.digest.to_string()));
        }
        let record = records.swap_remove(host);
        Ok(ImageSummary {
            names,
            descriptor,
            record,
            size,
            platforms,
        })
    }

    /// [`Images::resolve`], then for a multi-platform image the manifest of `platform` (none
    /// given: the host's), as `inspect --platform` and `history` show one image: the summary of
    /// that manifest (its descriptor, record and size) under the index's names. A platform the
    /// index lacks is [`ImageError::NoPlatform`]; a single image is returned as it is.
    pub fn resolve_platform(
        &self,
        reference: &str,
        platform: Option<&Platform>,
    ) -> Result<ImageSummary, ImageError> {
        let image = self.resolve(reference)?;
        let Some(store) = self.store.as_ref().filter(|_| image.is_index()) else {
            return Ok(image);
        };
        let want = platform.cloned().unwrap_or_else(Platform::host);
        let index = read_index(store, image.digest())?;
        let Some(child) = index.select(&want) else {
            return Err(ImageError::NoPlatform {
                name: reference.to_string(),
                wanted: want.to_string(),
                available: image
                    .platforms
                    .iter()
                    .map(Platform::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let record = store.read_image(&child.digest)?;
        let size = self.image_size(store, &record)?;
        Ok(ImageSummary {
            names: image.names,
            descriptor: child.clone(),
            record,
            size,
            platforms: Vec::new(),
        })
    }

    /// The image `reference` names: a stored name (`app` means `app:latest`), `NAME@DIGEST`,
    /// a manifest digest, a full image ID or a unique ID prefix (with or without `sha256:`).
    pub fn resolve(&self, reference: &str) -> Result<ImageSummary, ImageError> {
        let named = self.list()?;
        if let Some(i) = named
            .iter()
            .find(|i| i.names.iter().any(|n| same_name(n, reference)))
        {
            return Ok(i.clone());
        }
        // IDs and digests also reach dangling images (as `docker rmi <id>` does).
        let images = self.list_all()?;
        if let Some(i) = images
            .iter()
            .find(|i| i.names.iter().any(|n| same_name(n, reference)))
        {
            return Ok(i.clone());
        }
        if let Some((_, digest)) = reference.split_once('@') {
            if let Some(i) = images.iter().find(|i| i.digest().to_string() == digest) {
                return Ok(i.clone());
            }
            return Err(ImageError::NoSuchImage(reference.to_string()));
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.is_empty() || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageError::NoSuchImage(reference.to_string()));
        }
        if let Some(i) = images.iter().find(|i| i.digest().hex() == hex) {
            return Ok(i.clone());
        }
        let mut found = images.iter().filter(|i| i.id().hex().starts_with(hex));
        match (found.next(), found.next()) {
            (Some(i), None) => Ok(i.clone()),
            (Some(a), Some(b)) if a.id() == b.id() => Ok(a.clone()),
            (Some(_), Some(_)) => Err(ImageError::Ambiguous(reference.to_string())),
            (None, _) => Err(ImageError::NoSuchImage(reference.to_string())),
        }
    }

    /// Names the image `source` resolves to `target` (validated with docker's reference
    /// grammar; `:latest` added when it has no tag).
    pub fn tag(&self, source: &str, target: &str) -> Result<(), ImageError> {
        let parsed = Reference::parse(target).map_err(|_| ImageError::InvalidReference {
            reference: target.to_string(),
        })?;
        if parsed.digest.is_some() {
            return Err(ImageError::InvalidReference {
                reference: target.to_string(),
            });
        }
        let image = self.resolve(source)?;
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ImageError::NoSuchImage(source.to_string()))?;
        store.set_tag(&rbuild_exporter::normalize_tag(target), &image.descriptor)?;
        Ok(())
    }

    /// Removes what `reference` names, as `docker rmi`: a name drops that name; an ID or digest
    /// drops every name of the image, refused without `force` when they span several
    /// repositories. The image is reported deleted when no name is left on it.
    pub fn remove(&self, reference: &str, force: bool) -> Result<Vec<Removal>, ImageError> {
        let image = self.resolve(reference)?;
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ImageError::NoSuchImage(reference.to_string()))?;
        if image.names.is_empty() {
            return self.remove_dangling(store, &image);
        }
        let by_name: Vec<String> = image
            .names
            .iter()
            .filter(|n| same_name(n, reference))
            .cloned()
            .collect();
        let drop = if !by_name.is_empty() {
            by_name
        } else {
            let repos: std::collections::BTreeSet<String> =
                image.names.iter().map(|n| split_name(n).0).collect();
            if repos.len() > 1 && !force {
                return Err(ImageError::Conflict {
                    id: image.id().hex()[..12].to_string(),
                });
            }
            image.names.clone()
        };
        let removed = store.remove_tags(&drop)?;
        let mut out: Vec<Removal> = removed.into_iter().map(Removal::Untagged).collect();
        let still_named = store
            .tags()?
            .iter()
            .any(|t| t.descriptor.digest == *image.digest());
        if !still_named {
            out.push(Removal::Deleted(image.id().clone()));
        }
        Ok(out)
    }

    /// Deletes a dangling image: its manifest blob goes (under the garbage collector's lock, so
    /// no build can be tagging that manifest meanwhile); config and layers are left to the
    /// collector, which keeps what other images or the build cache still reach.
    fn remove_dangling(
        &self,
        store: &Store,
        image: &ImageSummary,
    ) -> Result<Vec<Removal>, ImageError> {
        let _lock =
            crate::gc::GcLock::wait(&self.state, None).map_err(|e| ImageError::Gc(Box::new(e)))?;
        if store
            .tags()?
            .iter()
            .any(|t| t.descriptor.digest == *image.digest())
        {
            // A build named it while we waited: it is no longer dangling.
            return Err(ImageError::NoSuchImage(image.id().to_string()));
        }
        store.remove_blob(image.digest())?;
        Ok(vec![Removal::Deleted(image.id().clone())])
    }

    /// The uncompressed size of one layer blob (cached for this handle).
    pub fn layer_size(&self, layer: &Descriptor) -> Result<u64, ImageError> {
        let Some(store) = &self.store else {
            return Ok(layer.size);
        };
        if let Some(n) = self
            .sizes
            .lock()
            .ok()
            .and_then(|m| m.get(&layer.digest).copied())
        {
            return Ok(n);
        }
        let n = layer_size(store, layer)?;
        if let Ok(mut m) = self.sizes.lock() {
            m.insert(layer.digest.clone(), n);
        }
        Ok(n)
    }

    fn image_size(&self, _store: &Store, record: &ImageRecord) -> Result<u64, ImageError> {
        let mut total = 0;
        for layer in &record.manifest.layers {
            total += self.layer_size(layer)?;
        }
        Ok(total)
    }
}

/// The index blob `digest` of `store`.
fn read_index(store: &Store, digest: &Digest) -> Result<Index, StoreError> {
    let bytes = store.read_blob(digest)?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
        what: format!("index {digest}"),
        source,
    })
}

/// The unpacked size of a layer: the length of its uncompressed tar, which is what docker's
/// SIZE adds up (the store records no diff sizes). A gzip blob under 4 GiB answers from its
/// trailer (ISIZE, the uncompressed length mod 2^32, exact for the single-member gzip that
/// rbuild and registries write); zstd and larger gzip blobs are decompressed and counted; a
/// blob of unknown compression counts its own size.
pub fn layer_size(store: &Store, layer: &Descriptor) -> Result<u64, StoreError> {
    let io_err = |source: io::Error| StoreError::Io {
        action: "read",
        path: store.blob_path(&layer.digest),
        source,
    };
    match layer.media_type.layer_compression() {
        Some(Compression::None) | None => Ok(layer.size),
        Some(Compression::Gzip) if layer.size < (1 << 32) && layer.size >= 18 => {
            let mut f = store.open_blob(&layer.digest)?;
            f.seek(SeekFrom::End(-4)).map_err(io_err)?;
            let mut b = [0u8; 4];
            f.read_exact(&mut b).map_err(io_err)?;
            Ok(u64::from(u32::from_le_bytes(b)))
        }
        Some(Compression::Gzip) => {
            let f = store.open_blob(&layer.digest)?;
            io::copy(&mut flate2::read::GzDecoder::new(f), &mut io::sink()).map_err(io_err)
        }
        Some(Compression::Zstd) => {
            let f = store.open_blob(&layer.digest)?;
            let mut d = zstd::stream::read::Decoder::new(f).map_err(io_err)?;
            io::copy(&mut d, &mut io::sink()).map_err(io_err)
        }
    }
}

/// True when the stored `name` is what `reference` means (`app` = `app:latest`,
/// `docker.io/library/app:1` = `app:1`).
fn same_name(name: &str, reference: &str) -> bool {
    if name == reference || name == rbuild_exporter::normalize_tag(reference) {
        return true;
    }
    match (Reference::parse(name), Reference::parse(reference)) {
        (Ok(a), Ok(b)) => b.digest.is_none() && a.name() == b.name() && a.tag == b.tag,
        _ => false,
    }
}

/// A stored name split as docker shows it: (`REPOSITORY`, `TAG`), `<none>` when there is no tag.
pub fn split_name(name: &str) -> (String, String) {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => {
            (name[..i].to_string(), name[i + 1..].to_string())
        }
        _ => (name.to_string(), "<none>".to_string()),
    }
}

/// Parses an RFC 3339 time (`2024-01-02T03:04:05.123Z`, `...+01:00`) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let off = oh * 3600 + om * 60;
            if &rest[..1] == "-" {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date and time (UTC) of Unix seconds: (year, month, day, hour, minute, second).
pub fn civil_from_unix(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        (secs % 3600 / 60) as u32,
        (secs % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-02-29T12:30:15.5Z"), Some(1709209815));
        assert_eq!(parse_rfc3339("2024-02-29T13:30:15+01:00"), Some(1709209815));
        assert_eq!(parse_rfc3339("2024-02-29"), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(civil_from_unix(1709209815), (2024, 2, 29, 12, 30, 15));
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
    }

    #[test]
    fn names_split_and_match_as_docker() {
        assert_eq!(split_name("app:1"), ("app".into(), "1".into()));
        assert_eq!(
            split_name("localhost:5000/a/b:x"),
            ("localhost:5000/a/b".into(), "x".into())
        );
        assert_eq!(
            split_name("localhost:5000/a"),
            ("localhost:5000/a".into(), "<none>".into())
        );
        assert!(same_name("app:latest", "app"));
        assert!(same_name("app:1", "docker.io/library/app:1"));
        assert!(!same_name("app:1", "app:2"));
        assert!(!same_name("app:1", "other:1"));
    }
}
