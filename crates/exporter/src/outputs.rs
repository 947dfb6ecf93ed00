//! Writing a stored image out: OCI layout (dir or tar), docker archive, local filesystem.
//! A multi-platform image (an index) goes into an OCI layout whole (`index.json` points at the
//! image index, as BuildKit writes it); the docker archive refuses it with BuildKit's message
//! (BuildKit's `docker` exporter, 0.8 and current, refuses manifest lists); the filesystem
//! outputs write one directory per platform named as buildx names it (`linux_arm64/`).

use crate::ExportError;
use rbuild_oci::{
    canonical_json, Descriptor, Digest, Index, Platform, Store, ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
};
use rbuild_registry::Reference;
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Adds `:latest` when a name has neither tag nor digest (`app` -> `app:latest`).
pub fn normalize_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExportError + 'a {
    move |source| ExportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The blobs of one image: manifest, config, layers; of an index, the index and each image
/// manifest's blobs (each blob once).
fn image_blobs(store: &Store, manifest: &Descriptor) -> Result<Vec<Digest>, ExportError> {
    let mut out = Vec::new();
    let push = |d: &Digest, out: &mut Vec<Digest>| {
        if !out.contains(d) {
            out.push(d.clone());
        }
    };
    let children = if manifest.media_type.is_index() {
        push(&manifest.digest, &mut out);
        let index: Index = serde_json::from_slice(&store.read_blob(&manifest.digest)?)?;
        index
            .manifests
            .into_iter()
            .filter(|d| d.media_type.is_manifest())
            .collect()
    } else {
        vec![manifest.clone()]
    };
    for child in &children {
        let record = store.read_image(&child.digest)?;
        push(&child.digest, &mut out);
        push(&record.manifest.config.digest, &mut out);
        for layer in &record.manifest.layers {
            push(&layer.digest, &mut out);
        }
    }
    Ok(out)
}

/// One name of an archive output, the way BuildKit's `oci`/`docker` exporters spell it.
struct ArchiveName {
    /// The full normalised name (`docker.io/app/x:1`): `io.containerd.image.name`.
    full: String,
    /// What follows the repository (`1`, `@sha256:..`, `1@sha256:..`):
    /// `org.opencontainers.image.ref.name`, as containerd's archive exporter writes it.
    object: String,
    /// The short form (`app/x:1`) for a docker archive's `RepoTags`.
    familiar: String,
}

/// Normalises the names given for an archive output; a name without tag or digest gets `latest`.
fn archive_names(names: &[String]) -> Result<Vec<ArchiveName>, ExportError> {
    names
        .iter()
        .map(|name| {
            let r = Reference::parse(name).map_err(|source| ExportError::InvalidName {
                name: name.clone(),
                source: Box::new(source),
            })?;
            let mut object = r.tag.clone().unwrap_or_default();
            if let Some(d) = &r.digest {
                object.push('@');
                object.push_str(&d.to_string());
            }
            Ok(ArchiveName {
                full: r.to_string(),
                object,
                familiar: r.familiar(),
            })
        })
        .collect()
}

/// The layout's `index.json`: one entry per name (none named when there are no names), with the
/// tag alone as the OCI ref name and the full name in containerd's annotation, so that
/// `skopeo ... oci-archive:out.tar:1` and `umoci unpack --image out:1` find the image.
fn layout_index(manifest: &Descriptor, names: &[ArchiveName]) -> Index {
    let mut index = Index::empty();
    if names.is_empty() {
        index.manifests.push(manifest.clone());
    }
    for name in names {
        let mut desc = manifest.clone();
        let mut ann = desc.annotations.take().unwrap_or_default();
        ann.insert(ANNOTATION_IMAGE_NAME.to_string(), name.full.clone());
        ann.insert(ANNOTATION_REF_NAME.to_string(), name.object.clone());
        desc.annotations = Some(ann);
        index.manifests.push(desc);
    }
    index
}

/// A header for a regular file of `size` bytes: 0644, root-owned, mtime 0. Every numeric field is
/// set: `Header::new_ustar` leaves uid/gid as NUL bytes, which strict readers reject.
fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut header = file_header(data.len() as u64);
    tar.append_data(&mut header, path, data)
}

fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &Store,
    digest: &Digest,
) -> Result<(), ExportError> {
    let path = store.blob_path(digest);
    let mut file = store.open_blob(digest)?;
    let len = file.metadata().map_err(io_err("stat", &path))?.len();
    let mut header = file_header(len);
    tar.append_data(
        &mut header,
        format!("blobs/sha256/{}", digest.hex()),
        &mut file,
    )
    .map_err(io_err("write", &path))?;
    Ok(())
}

/// Writes the image as an OCI image layout: a directory (`tar == false`) or a tarball at `dest`.
/// Each of `names` (image references, normalised here) becomes one `index.json` entry named as
/// BuildKit names it: `org.opencontainers.image.ref.name` is the tag (`1` for `app/x:1`) and
/// `io.containerd.image.name` the full name (`docker.io/app/x:1`).
pub fn write_oci(
    store: &Store,
    manifest: &Descriptor,
    names: &[String],
    dest: &Path,
    tar: bool,
) -> Result<(), ExportError> {
    let names = archive_names(names)?;
    let blobs = image_blobs(store, manifest)?;
    let index = canonical_json(&layout_index(manifest, &names))?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    if tar {
        let sink = Sink::open(dest)?;
        let tmp = sink.path().to_path_buf();
        let mut builder = tar::Builder::new(sink);
        append_bytes(&mut builder, "oci-layout", layout).map_err(io_err("write", &tmp))?;
        append_bytes(&mut builder, "index.json", &index).map_err(io_err("write", &tmp))?;
        for digest in &blobs {
            append_blob(&mut builder, store, digest)?;
        }
        builder
            .into_inner()
            .map_err(io_err("write", &tmp))?
            .finish()?;
    } else {
        let dir = dest.join("blobs/sha256");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        for digest in &blobs {
            let target = dir.join(digest.hex());
            if target.exists() {
                continue;
            }
            let src = store.blob_path(digest);
            if fs::hard_link(&src, &target).is_err() {
                fs::copy(&src, &target).map_err(io_err("copy", &target))?;
            }
        }
        fs::write(dest.join("oci-layout"), layout).map_err(io_err("write", dest))?;
        fs::write(dest.join("index.json"), &index).map_err(io_err("write", dest))?;
    }
    Ok(())
}

/// Writes a `docker load` archive (manifest.json + OCI layout) to `dest`: `RepoTags` holds the
/// short names (`app/x:1`), `index.json` is named as in [`write_oci`].
pub fn write_docker_archive(
    store: &Store,
    manifest: &Descriptor,
    names: &[String],
    dest: &Path,
) -> Result<(), ExportError> {
    if manifest.media_type.is_index() {
        return Err(ExportError::ManifestList);
    }
    let names = archive_names(names)?;
    let record = store.read_image(&manifest.digest)?;
    let blobs = image_blobs(store, manifest)?;
    let repo_tags: Vec<String> = names.iter().map(|n| n.familiar.clone()).collect();
    let docker_manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", record.manifest.config.digest.hex()),
        "RepoTags": repo_tags,
        "Layers": record.manifest.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
    }]);
    let sink = Sink::open(dest)?;
    let tmp = sink.path().to_path_buf();
    let mut builder = tar::Builder::new(sink);
    append_bytes(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(io_err("write", &tmp))?;
    append_bytes(
        &mut builder,
        "index.json",
        &canonical_json(&layout_index(manifest, &names))?,
    )
    .map_err(io_err("write", &tmp))?;
    append_bytes(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&docker_manifest)?,
    )
    .map_err(io_err("write", &tmp))?;
    for digest in &blobs {
        append_blob(&mut builder, store, digest)?;
    }
    builder
        .into_inner()
        .map_err(io_err("write", &tmp))?
        .finish()
}

/// Writes the final filesystem of snapshot `top` (None = empty) as one tar file at `dest`
/// (`--output type=tar`), entries in sorted order with numeric owners.
pub fn write_tar(
    snapshotter: &Snapshotter,
    top: Option<&SnapshotId>,
    dest: &Path,
) -> Result<(), ExportError> {
    let view = snapshotter.view(top)?;
    let sink = Sink::open(dest)?;
    let tmp = sink.path().to_path_buf();
    let mut builder = tar::Builder::new(sink);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let mut links = HashMap::new();
    append_sorted(&mut builder, view.path(), Path::new(""), &mut links)
        .map_err(io_err("write", &tmp))?;
    builder
        .into_inner()
        .map_err(io_err("write", &tmp))?
        .finish()
}

/// One platform's root filesystem for the per-platform outputs: the platform and its top
/// snapshot (None: an empty filesystem).
pub type PlatformRootfs = (Platform, Option<SnapshotId>);

/// `--output type=tar` of a multi-platform build: one tar at `dest` whose top-level directories
/// are the platforms ([`Platform::dir_name`]: `linux_amd64/`, `linux_arm64/`), each holding
/// that platform's filesystem, as buildx writes it.
pub fn write_tar_platforms(
    snapshotter: &Snapshotter,
    platforms: &[PlatformRootfs],
    dest: &Path,
) -> Result<(), ExportError> {
    let sink = Sink::open(dest)?;
    let tmp = sink.path().to_path_buf();
    let mut builder = tar::Builder::new(sink);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    for (platform, top) in platforms {
        let view = snapshotter.view(top.as_ref())?;
        let dir = PathBuf::from(platform.dir_name());
        builder
            .append_dir(&dir, view.path())
            .map_err(io_err("write", &tmp))?;
        let mut links = HashMap::new();
        append_sorted_under(&mut builder, view.path(), Path::new(""), &dir, &mut links)
            .map_err(io_err("write", &tmp))?;
    }
    builder
        .into_inner()
        .map_err(io_err("write", &tmp))?
        .finish()
}

/// `--output type=local,dest=D` of a multi-platform build: each platform's filesystem in its
/// own directory `D/<os>_<arch>[_<variant>]` ([`Platform::dir_name`]), as buildx writes it.
pub fn write_local_platforms(
    snapshotter: &Snapshotter,
    platforms: &[PlatformRootfs],
    dest: &Path,
) -> Result<(), ExportError> {
    for (platform, top) in platforms {
        write_local(snapshotter, top.as_ref(), &dest.join(platform.dir_name()))?;
    }
    Ok(())
}

/// Where an archive output goes: a file, written under a temp name and renamed into place once
/// complete, or the process's standard output when `dest` is `-` (buildx's `dest=-`, e.g.
/// `| docker load`).
enum Sink {
    /// A file: the temp path, the final path and the writer.
    File(PathBuf, PathBuf, io::BufWriter<File>),
    /// Standard output.
    Stdout(io::BufWriter<io::Stdout>),
}

impl Sink {
    /// Opens the sink of `dest`.
    fn open(dest: &Path) -> Result<Sink, ExportError> {
        if dest == Path::new("-") {
            return Ok(Sink::Stdout(io::BufWriter::new(io::stdout())));
        }
        let tmp = dest.with_extension("rbuild-tmp");
        let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        Ok(Sink::File(
            tmp,
            dest.to_path_buf(),
            io::BufWriter::new(file),
        ))
    }

    /// The path written to (for messages).
    fn path(&self) -> &Path {
        match self {
            Sink::File(tmp, _, _) => tmp,
            Sink::Stdout(_) => Path::new("standard output"),
        }
    }

    /// Flushes the stream and, for a file, renames it into place.
    fn finish(self) -> Result<(), ExportError> {
        match self {
            Sink::File(tmp, dest, mut w) => {
                w.flush().map_err(io_err("write", &tmp))?;
                fs::rename(&tmp, &dest).map_err(io_err("rename", &dest))
            }
            Sink::Stdout(mut w) => w
                .flush()
                .map_err(io_err("write", Path::new("standard output"))),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(_, _, w) => w.write(buf),
            Sink::Stdout(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(_, _, w) => w.flush(),
            Sink::Stdout(w) => w.flush(),
        }
    }
}

/// Appends the tree below `root.join(rel)` in sorted order; a file with other names already
/// written (same device and inode, as in the snapshot) becomes a hardlink entry to the first.
fn append_sorted<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    append_sorted_under(builder, root, rel, Path::new(""), links)
}

/// [`append_sorted`] with every entry named below `prefix` in the archive (a platform's
/// directory).
fn append_sorted_under<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    prefix: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let named = prefix.join(&child);
        let full = root.join(&child);
        let meta = fs::symlink_metadata(&full)?;
        if meta.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                let mut h = tar::Header::new_gnu();
                h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                builder.append_link(&mut h, &named, first)?;
                continue;
            }
            links.insert(key, named.clone());
        }
        builder.append_path_with_name(&full, &named)?;
        if meta.is_dir() {
            append_sorted_under(builder, root, &child, prefix, links)?;
        }
    }
    Ok(())
}

/// Unpacks `archive` into `dest` entry by entry, then gives directories their mtimes from the
/// archive (the tar crate sets none, and writing into a directory changes its mtime).
fn unpack_keeping_dir_times<R: io::Read>(
    archive: &mut tar::Archive<R>,
    dest: &Path,
) -> io::Result<()> {
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel = entry.path()?.into_owned();
        if !entry.unpack_in(dest)? {
            continue;
        }
        if entry.header().entry_type().is_dir() {
            dirs.push((dest.join(rel), entry.header().mtime()?));
        }
    }
    for (dir, mtime) in dirs.iter().rev() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(*mtime);
        let times = fs::FileTimes::new().set_accessed(t).set_modified(t);
        File::open(dir)?.set_times(times)?;
    }
    Ok(())
}

/// Copies the final filesystem of snapshot `top` (None = empty) into directory `dest`, with the
/// image's owners; rootless (in a user namespace) the files belong to the user running rbuild,
/// as BuildKit's client writes a local output, since in-image owners would land on the user's
/// subordinate ids and leave a directory the user cannot clean up.
pub fn write_local(
    snapshotter: &Snapshotter,
    top: Option<&SnapshotId>,
    dest: &Path,
) -> Result<(), ExportError> {
    fs::create_dir_all(dest).map_err(io_err("create", dest))?;
    let view = snapshotter.view(top)?;
    let (reader, writer) = io::pipe().map_err(io_err("pipe", dest))?;
    let src = view.path().to_path_buf();
    let producer = std::thread::spawn(move || -> io::Result<()> {
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        builder.mode(tar::HeaderMode::Complete);
        builder.append_dir(".", &src)?;
        append_sorted(&mut builder, &src, Path::new(""), &mut HashMap::new())?;
        builder.finish()
    });
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(!rbuild_snapshotter::in_user_namespace());
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let unpacked =
        unpack_keeping_dir_times(&mut archive, dest).map_err(io_err("unpack into", dest));
    drop(archive);
    let produced = producer.join().map_err(|_| ExportError::Io {
        action: "read",
        path: dest.to_path_buf(),
        source: io::Error::other("copy thread panicked"),
    })?;
    unpacked?;
    produced.map_err(io_err("read snapshot for", dest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_names(names: &[&str]) -> Vec<(String, String)> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        archive_names(&names)
            .unwrap()
            .into_iter()
            .map(|n| (n.object, n.full))
            .collect()
    }

    #[test]
    fn archive_names_follow_containerd() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            entry_names(&["app/x:1", "app", "127.0.0.1:5000/app:2"]),
            vec![
                ("1".to_string(), "docker.io/app/x:1".to_string()),
                (
                    "latest".to_string(),
                    "docker.io/library/app:latest".to_string()
                ),
                ("2".to_string(), "127.0.0.1:5000/app:2".to_string()),
            ]
        );
        assert_eq!(
            entry_names(&[&format!("app@{d}"), &format!("app:1@{d}")]),
            vec![
                (format!("@{d}"), format!("docker.io/library/app@{d}")),
                (format!("1@{d}"), format!("docker.io/library/app:1@{d}")),
            ]
        );
        let bad = archive_names(&["Bad:Name".to_string()]);
        assert!(matches!(bad, Err(ExportError::InvalidName { .. })));
    }

    #[test]
    fn tags_get_latest() {
        assert_eq!(normalize_tag("app"), "app:latest");
        assert_eq!(normalize_tag("app:1"), "app:1");
        assert_eq!(
            normalize_tag("127.0.0.1:5000/app"),
            "127.0.0.1:5000/app:latest"
        );
        assert_eq!(
            normalize_tag("127.0.0.1:5000/app:2"),
            "127.0.0.1:5000/app:2"
        );
    }
}
