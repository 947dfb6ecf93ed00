//! `docker import`: an image made from a root filesystem tarball (a plain or gzip tar from a
//! file, a URL or a stream) as one gzip layer, with a config for the host platform whose runtime
//! settings come from `--change` Dockerfile instructions (read by the Dockerfile frontend), stored
//! in the local store under a name; `--platform` names another platform in the config (as
//! `docker import --platform`).

use crate::options::rfc3339;
use crate::StateDir;
use rbuild_oci::{Descriptor, DiffId, Digest, History, ImageConfig, MediaType, RootFs, Store};
use rbuild_registry::{Reference, RegistryError};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

/// The instructions `--change` accepts (docker's list).
const CHANGE_INSTRUCTIONS: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Why an import failed; `Display` is the message a user sees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The name is not a valid docker reference.
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    /// No name was given: the store keeps named images only.
    #[error("rbuild import needs a NAME[:TAG]: the local store keeps named images only")]
    NameRequired,
    /// A digest was given as the name.
    #[error("rbuild import: cannot name an image by digest (`{0}`); give NAME[:TAG]")]
    DigestName(String),
    /// A `--change` instruction that import does not apply.
    #[error("{0} is not a valid change command")]
    BadChange(String),
    /// A `--change` instruction that does not parse or convert.
    #[error("invalid --change `{change}`: {message}")]
    Change {
        /// The instruction text.
        change: String,
        /// The frontend's message.
        message: String,
    },
    /// The source cannot be read.
    #[error("cannot read {source_name}: {error}")]
    Read {
        /// The file, URL or `-`.
        source_name: String,
        /// Why.
        error: std::io::Error,
    },
    /// The URL cannot be fetched.
    #[error("cannot fetch {url}: {}", crate::chain(&**source))]
    Fetch {
        /// The URL.
        url: String,
        /// The registry client's error.
        source: Box<RegistryError>,
    },
    /// The source is not a (gzip-compressed) tar archive.
    #[error("{source_name} is not a tar archive (plain or gzip){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    NotATar {
        /// The file, URL or `-`.
        source_name: String,
        /// What the tar reader said about a damaged entry after the first, if that is where it failed.
        message: Option<String>,
    },
    /// The store cannot be opened or written.
    #[error("image store: {}", crate::chain(source))]
    Store {
        /// The store's error.
        #[from]
        source: rbuild_oci::StoreError,
    },
    /// The state root cannot be created.
    #[error("cannot create state directory `{}`: {error}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A blocking task panicked.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Where the root filesystem tarball comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// A local file.
    File(PathBuf),
    /// An http(s) URL, downloaded first.
    Url(String),
    /// Standard input.
    Stdin,
}

impl ImportSource {
    /// `-` is standard input, `http://`/`https://` a URL, anything else a file.
    pub fn parse(s: &str) -> ImportSource {
        if s == "-" {
            ImportSource::Stdin
        } else if s.starts_with("http://") || s.starts_with("https://") {
            ImportSource::Url(s.to_string())
        } else {
            ImportSource::File(PathBuf::from(s))
        }
    }

    fn name(&self) -> String {
        match self {
            ImportSource::File(p) => p.display().to_string(),
            ImportSource::Url(u) => u.clone(),
            ImportSource::Stdin => "-".to_string(),
        }
    }
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The tarball.
    pub source: ImportSource,
    /// `NAME[:TAG]` (required: the store keeps named images only).
    pub name: Option<String>,
    /// `--change` Dockerfile instructions, applied in order.
    pub changes: Vec<String>,
    /// `--message`: the history comment (default `Imported from SOURCE`).
    pub message: Option<String>,
    /// Creation time in Unix seconds (SOURCE_DATE_EPOCH); None = now.
    pub created: Option<i64>,
    /// `--platform`: the config's os/architecture/variant (normalised); None = the host's.
    pub platform: Option<rbuild_oci::Platform>,
}

/// The imported image.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The image ID: the config digest.
    pub id: Digest,
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The name it was stored under (normalised, e.g. `docker.io/library/app:1`).
    pub name: String,
}

/// Checks a `NAME[:TAG]` and returns the normalised name it is stored under.
pub fn import_name(name: Option<&str>) -> Result<String, ImportError> {
    let Some(name) = name else {
        return Err(ImportError::NameRequired);
    };
    let reference =
        Reference::parse(name).map_err(|_| ImportError::InvalidReference(name.to_string()))?;
    if reference.digest.is_some() {
        return Err(ImportError::DigestName(name.to_string()));
    }
    Ok(reference.to_string())
}

/// The config `--change` instructions give to a `FROM scratch` image (docker's allowed list).
pub fn change_config(changes: &[String], created: &str) -> Result<ImageConfig, ImportError> {
    let mut text = String::from("FROM scratch\n");
    for change in changes {
        let word = change.split_whitespace().next().unwrap_or("");
        if !CHANGE_INSTRUCTIONS.contains(&word.to_ascii_uppercase().as_str()) {
            return Err(ImportError::BadChange(word.to_string()));
        }
        text.push_str(change.trim_end());
        text.push('\n');
    }
    let fail = |message: String| ImportError::Change {
        change: changes.join("; "),
        message,
    };
    let df = rbuild_frontend::parse(&text).map_err(|e| fail(e.to_string()))?;
    let opts = rbuild_frontend::ConvertOptions {
        dockerfile_name: "--change".to_string(),
        created: Some(created.to_string()),
        ..Default::default()
    };
    let plan = rbuild_frontend::convert(&df, &opts, &Default::default())
        .map_err(|e| fail(e.to_string()))?;
    let mut config = plan.config;
    // `FROM scratch` brings BuildKit's default PATH and WORKDIR `/`; `docker import` sets only
    // what the changes say.
    let says = |word: &str| {
        changes.iter().any(|c| {
            c.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
        })
    };
    let run = &mut config.config;
    if let Some(env) = &mut run.env {
        let sets_path = says("ENV") && changes.iter().any(|c| c.contains("PATH"));
        if !sets_path {
            env.retain(|e| !e.starts_with("PATH="));
        }
        if env.is_empty() {
            run.env = None;
        }
    }
    if !says("WORKDIR") {
        run.working_dir = None;
    }
    config.history.clear();
    Ok(config)
}

/// Imports a root filesystem tarball into the store of `state` and names it.
pub async fn import_image(
    state: &StateDir,
    request: ImportRequest,
) -> Result<Imported, ImportError> {
    let name = import_name(request.name.as_deref())?;
    let secs = request.created.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let created = rfc3339(secs);
    let mut config = change_config(&request.changes, &created)?;
    if let Some(p) = &request.platform {
        let p = p.normalized();
        config.os = p.os;
        config.architecture = p.architecture;
        config.variant = p.variant;
    }
    let source_name = request.source.name();
    let root = state.store();
    let store = crate::error::blocking_with::<_, ImportError>(move || {
        std::fs::create_dir_all(&root).map_err(|error| ImportError::StateDir {
            path: root.clone(),
            error,
        })?;
        Ok(Store::open(&root)?)
    })
    .await?;
    // A URL is downloaded into the store's temp area first.
    let (path, _download) = match &request.source {
        ImportSource::Url(url) => {
            let tmp = store.temp_path("import");
            rbuild_registry::fetch_url(url, &tmp)
                .await
                .map_err(|e| ImportError::Fetch {
                    url: url.clone(),
                    source: Box::new(e),
                })?;
            (Some(tmp.clone()), Some(TempFile(tmp)))
        }
        ImportSource::File(p) => (Some(p.clone()), None),
        ImportSource::Stdin => (None, None),
    };
    let (store2, what) = (store.clone(), source_name.clone());
    let (layer, diff_id) = crate::error::blocking_with::<_, ImportError>(move || {
        let reader: Box<dyn Read> = match &path {
            Some(p) => Box::new(std::fs::File::open(p).map_err(|error| ImportError::Read {
                source_name: what.clone(),
                error,
            })?),
            None => Box::new(std::io::stdin()),
        };
        store_layer(&store2, reader, &what)
    })
    .await?;
    config.created = Some(created.clone());
    config.rootfs = RootFs {
        kind: "layers".to_string(),
        diff_ids: vec![diff_id],
    };
    config.history = vec![History {
        created: Some(created),
        created_by: None,
        author: None,
        comment: Some(
            request
                .message
                .clone()
                .unwrap_or_else(|| format!("Imported from {source_name}")),
        ),
        empty_layer: false,
    }];
    let tag = name.clone();
    let (descriptor, manifest) = crate::error::blocking_with::<_, ImportError>(move || {
        let (desc, manifest) = store.write_image(&config, vec![layer])?;
        store.set_tag(&tag, &desc)?;
        Ok((desc, manifest))
    })
    .await?;
    Ok(Imported {
        id: manifest.config.digest,
        descriptor,
        name,
    })
}

/// Removes a downloaded file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl From<crate::error::TaskFailed> for ImportError {
    fn from(e: crate::error::TaskFailed) -> Self {
        ImportError::Task(e.0)
    }
}

/// Stores the tarball as a gzip layer blob (as given when already gzip, else compressed) and
/// returns its descriptor and diff ID (the digest of the uncompressed tar), after checking that
/// it reads as a tar archive.
fn store_layer(
    store: &Store,
    reader: Box<dyn Read>,
    what: &str,
) -> Result<(Descriptor, DiffId), ImportError> {
    let read_err = |error: std::io::Error| ImportError::Read {
        source_name: what.to_string(),
        error,
    };
    let mut input = BufReader::with_capacity(1 << 20, reader);
    let gzip = input
        .fill_buf()
        .map_err(read_err)?
        .starts_with(&[0x1f, 0x8b]);
    let mut blob = store.blob_writer()?;
    let diff = if gzip {
        // The blob is the input as it is; the tar is its decompression.
        let mut tar = flate2::read::MultiGzDecoder::new(Tee {
            inner: input,
            out: &mut blob,
        });
        let diff = hash_tar(&mut tar, what)?;
        let mut rest = tar.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink()).map_err(read_err)?;
        diff
    } else {
        // The tar is the input; the blob its gzip compression.
        let mut gz = flate2::write::GzEncoder::new(&mut blob, flate2::Compression::default());
        let diff = hash_tar(
            &mut Tee {
                inner: input,
                out: &mut gz,
            },
            what,
        )?;
        gz.finish().map_err(read_err)?;
        diff
    };
    let (digest, size) = blob.commit(None)?;
    Ok((
        Descriptor {
            media_type: MediaType::new(MediaType::OCI_LAYER_GZIP),
            digest,
            size,
            platform: None,
            annotations: None,
        },
        DiffId(diff),
    ))
}

/// Reads `reader` to its end as a tar archive (at least one entry) and returns the digest of
/// all its bytes.
fn hash_tar(reader: &mut dyn Read, what: &str) -> Result<Digest, ImportError> {
    let mut hashed = rbuild_oci::Sha256Reader::new(reader);
    {
        let mut archive = tar::Archive::new(&mut hashed);
        let mut count = 0usize;
        for entry in archive.entries().map_err(|e| not_tar(what, 0, e))? {
            let mut entry = entry.map_err(|e| not_tar(what, count, e))?;
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| not_tar(what, count, e))?;
            count += 1;
        }
        if count == 0 {
            return Err(ImportError::NotATar {
                source_name: what.to_string(),
                message: Some("no entries".to_string()),
            });
        }
    }
    // Whatever follows the end-of-archive blocks is part of the layer too.
    std::io::copy(&mut hashed, &mut std::io::sink()).map_err(|error| ImportError::Read {
        source_name: what.to_string(),
        error,
    })?;
    Ok(hashed.finish().0)
}

/// A tar reading error; its text is kept only past the first entry (before it, the reader's
/// message quotes whatever bytes the file has).
fn not_tar(what: &str, entries_read: usize, e: std::io::Error) -> ImportError {
    ImportError::NotATar {
        source_name: what.to_string(),
        message: (entries_read > 0).then(|| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").to_string();
            format!("after {entries_read} entries: {first}")
        }),
    }
}

/// Copies what is read from `inner` to `out`.
struct Tee<R, W: Write> {
    inner: R,
    out: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.out.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_normalised() {
        assert_eq!(
            import_name(Some("app:1")).unwrap(),
            "docker.io/library/app:1"
        );
        assert_eq!(
            import_name(Some("127.0.0.1:5000/a/b")).unwrap(),
            "127.0.0.1:5000/a/b:latest"
        );
        assert!(matches!(import_name(None), Err(ImportError::NameRequired)));
        assert!(matches!(
            import_name(Some("Up:1")),
            Err(ImportError::InvalidReference(_))
        ));
        let pinned = format!("app@sha256:{}", "a".repeat(64));
        assert!(matches!(
            import_name(Some(&pinned)),
            Err(ImportError::DigestName(_))
        ));
    }

    #[test]
    fn changes_set_only_what_they_say() {
        let none = change_config(&[], "2024-01-02T03:04:05Z").unwrap();
        assert_eq!(none.config, Default::default());
        let changes = [
            "ENV PATH=/opt/bin A=1".to_string(),
            "cmd [\"sh\"]".to_string(),
            "WORKDIR /w".to_string(),
        ];
        let c = change_config(&changes, "2024-01-02T03:04:05Z").unwrap();
        assert_eq!(
            c.config.env,
            Some(vec!["PATH=/opt/bin".to_string(), "A=1".to_string()])
        );
        assert_eq!(c.config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(c.config.working_dir.as_deref(), Some("/w"));
        assert!(c.history.is_empty());
        for bad in ["RUN true", "COPY a b", "FROM x", "ARG A"] {
            assert!(
                matches!(
                    change_config(&[bad.to_string()], "x"),
                    Err(ImportError::BadChange(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn sources_are_told_apart() {
        assert_eq!(ImportSource::parse("-"), ImportSource::Stdin);
        assert_eq!(
            ImportSource::parse("https://x/r.tar"),
            ImportSource::Url("https://x/r.tar".into())
        );
        assert_eq!(
            ImportSource::parse("r.tar"),
            ImportSource::File("r.tar".into())
        );
    }
}
