//! The build-context side of cache keys: the checksums of the context files a File vertex's
//! COPYs read, computed once per build and started for every COPY ahead of the key phase.

use crate::{checksum, dockerignore, Op, SourceOp, WorkVertex, Worker, WorkerError};
use rbuild_llb::FileAction;
use rbuild_solver::ContentDigest;
use std::sync::Arc;

impl Worker {
    /// Starts computing the build-context checksums of the COPYs among `vertices`
    /// concurrently on the blocking pool, so the key phase, which reaches a chain of COPYs one
    /// after another (each key needs its parent's), finds them done: two 1 GiB COPYs are hashed
    /// on two cores at once. A failure is left for the key phase to report.
    pub fn prefetch_context_keys(self: &Arc<Self>, vertices: Vec<WorkVertex>) {
        for vertex in vertices {
            if matches!(vertex.op, Op::File(_)) && vertex.context_inputs.contains(&true) {
                let worker = self.clone();
                tokio::spawn(async move {
                    let _ = worker.context_key(&vertex).await;
                });
            }
        }
    }

    /// The context checksums of File vertex `vertex`'s COPYs, computed once per build.
    async fn context_key(&self, vertex: &WorkVertex) -> Result<Vec<ContentDigest>, WorkerError> {
        let cell = match self.context_keys.lock() {
            Ok(mut memo) => memo.entry(vertex.digest.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        cell.get_or_try_init(|| self.context_checksums(vertex))
            .await
            .cloned()
    }

    pub(crate) async fn file_key_extra(
        &self,
        vertex: &WorkVertex,
    ) -> Result<Vec<ContentDigest>, WorkerError> {
        match &vertex.op {
            Op::File(_) => self.context_key(vertex).await,
            _ => self.context_checksums(vertex).await,
        }
    }

    async fn context_checksums(
        &self,
        vertex: &WorkVertex,
    ) -> Result<Vec<ContentDigest>, WorkerError> {
        let file = match &vertex.op {
            Op::File(file) => file,
            Op::Source(SourceOp::Http { url, checksum, .. }) => {
                let part = self
                    .downloads
                    .key_part(&self.snapshotter, &vertex.digest, url, checksum.as_deref())
                    .await?;
                return Ok(vec![ContentDigest {
                    what: url.clone(),
                    digest: *blake3::hash(&part).as_bytes(),
                }]);
            }
            _ => return Ok(Vec::new()),
        };
        let copies: Vec<_> = file
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c)
                    if vertex
                        .context_inputs
                        .get(c.src_input)
                        .copied()
                        .unwrap_or(false) =>
                {
                    Some(c.clone())
                }
                _ => None,
            })
            .collect();
        if copies.is_empty() {
            return Ok(Vec::new());
        }
        self.with_context_cache(vertex, "COPY", move |cache, context| {
            let mut out = Vec::new();
            for c in &copies {
                let source_exclude = dockerignore::Matcher::new(&c.exclude_patterns);
                out.push(ContentDigest {
                    what: format!("context {}", c.src),
                    digest: cache
                        .checksum_filtered(
                            context,
                            &c.src,
                            c.allow_wildcard,
                            c.follow_symlinks,
                            (!source_exclude.is_empty()).then_some(&source_exclude),
                        )
                        .map_err(WorkerError::Checksum)?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Runs `f` on the blocking pool with a [`checksum::StatCache`] over the build context (the
    /// vertex's `.dockerignore` applied; flushed into the cache index afterwards). `what` names
    /// the instruction in the error of a build without a context.
    pub(crate) async fn with_context_cache<T: Send + 'static>(
        &self,
        vertex: &WorkVertex,
        what: &str,
        f: impl FnOnce(&mut checksum::StatCache<'_>, &std::path::Path) -> Result<T, WorkerError>
            + Send
            + 'static,
    ) -> Result<T, WorkerError> {
        let Some(context) = self.context.clone() else {
            return Err(WorkerError::Graph(format!(
                "{what} from the build context without a context"
            )));
        };
        let index = self.index.clone();
        let excludes = vertex.context_excludes.clone();
        Self::blocking(move || {
            let matcher = dockerignore::Matcher::new(&excludes);
            let mut cache = checksum::StatCache::new(index.as_ref())
                .with_excludes((!matcher.is_empty()).then_some(matcher));
            let out = f(&mut cache, &context)?;
            cache.flush();
            Ok(out)
        })
        .await
    }
}
