//! The File op (COPY/ADD/WORKDIR actions applied by rbuild itself in a mounted snapshot, with
//! the copy pool) and the Merge op (`COPY --link` layers stacked on a base).

use crate::{dockerignore, fsops, users, Value, Worker, WorkerError};
use rbuild_llb::FileAction;
use rbuild_snapshotter::Snapshotter;
use rbuild_solver::CacheIndex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

impl Worker {
    /// Applies a File op's actions to a new snapshot on input 0 (scratch when it has none).
    pub(crate) async fn run_file(
        &self,
        file: &rbuild_llb::FileOp,
        inputs: Vec<Value>,
        excludes: &[String],
    ) -> Result<Value, WorkerError> {
        let parent = Self::fs_input(&inputs, 0)?;
        let snapshotter = self.snapshotter.clone();
        let context = self.context.clone();
        let file = file.clone();
        let excludes = dockerignore::Matcher::new(excludes);
        let index = self.index.clone();
        Self::blocking(move || {
            let active = snapshotter.prepare(parent.as_ref())?;
            let result = apply_file_actions(
                &snapshotter,
                &active,
                &file,
                &inputs,
                context.as_deref(),
                &excludes,
                index,
            );
            match result {
                Ok(pool) => {
                    let id = snapshotter.commit(active)?;
                    if let Some(pool) = pool {
                        let started = std::time::Instant::now();
                        match pool.finish(&id) {
                            Ok(stats) => tracing::debug!(
                                snapshot = %id,
                                linked = stats.linked,
                                copied = stats.copied,
                                recorded = stats.recorded,
                                record_time = ?started.elapsed(),
                                "copy pool"
                            ),
                            Err(e) => tracing::debug!("copy pool: not recorded: {e}"),
                        }
                    }
                    Ok(Value::Fs(Some(id)))
                }
                Err(e) => {
                    let _ = snapshotter.abort(active);
                    Err(e)
                }
            }
        })
        .await
    }

    /// Stacks the layers of inputs 1.. on input 0 (`COPY --link`).
    pub(crate) async fn run_merge(&self, inputs: Vec<Value>) -> Result<Value, WorkerError> {
        let mut top = Self::fs_input(&inputs, 0)?;
        let mut layers = Vec::new();
        for i in 1..inputs.len() {
            layers.push(Self::fs_input(&inputs, i)?);
        }
        let snapshotter = self.snapshotter.clone();
        Self::blocking(move || {
            for layer in layers.into_iter().flatten() {
                top = Some(snapshotter.merge(top.as_ref(), &layer)?);
            }
            Ok(Value::Fs(top))
        })
        .await
    }
}

/// The copy pool of a File op (see [`fsops::CopyPool`]): with a cache index, on the overlay
/// backend, and never for ops that unpack archives (an archive's hardlink entries are chowned
/// in place, which must not reach a pooled inode).
fn copy_pool(
    snapshotter: &Snapshotter,
    active: &rbuild_snapshotter::Active,
    file: &rbuild_llb::FileOp,
    index: Option<CacheIndex>,
    mount: &Path,
) -> Option<fsops::CopyPool> {
    let unpacks = file
        .actions
        .iter()
        .any(|a| matches!(a, FileAction::Copy(c) if c.attempt_unpack));
    if unpacks {
        return None;
    }
    let upper = active.upperdir().to_path_buf();
    fsops::CopyPool::new(
        index?,
        snapshotter.clone(),
        mount.to_path_buf(),
        upper,
        active.id().clone(),
        active.parent(),
    )
}

/// Applies `file`'s actions in the mounted active snapshot (blocking), with the copy pool
/// when it applies; returns the pool to record once the snapshot is committed.
pub(crate) fn apply_file_actions(
    snapshotter: &Snapshotter,
    active: &rbuild_snapshotter::Active,
    file: &rbuild_llb::FileOp,
    inputs: &[Value],
    context: Option<&Path>,
    excludes: &dockerignore::Matcher,
    index: Option<CacheIndex>,
) -> Result<Option<Arc<fsops::CopyPool>>, WorkerError> {
    let mount = active.mount()?;
    let root = mount.path().to_path_buf();
    let direct = (snapshotter.backend() == rbuild_snapshotter::Backend::Overlay).then(|| {
        fsops::DirectUpper {
            mount: root.clone(),
            upper: active.upperdir().to_path_buf(),
        }
    });
    let pool = copy_pool(snapshotter, active, file, index, &root).map(Arc::new);
    let mut views: HashMap<usize, rbuild_snapshotter::MountGuard> = HashMap::new();
    for action in &file.actions {
        match action {
            FileAction::Copy(copy) => {
                let op_name = if copy.attempt_unpack { "ADD" } else { "COPY" };
                let (src_root, reset_owner) = match inputs.get(copy.src_input) {
                    Some(Value::Context) => (
                        context
                            .ok_or_else(|| WorkerError::Graph("no build context".into()))?
                            .to_path_buf(),
                        true,
                    ),
                    Some(Value::Fs(id)) => {
                        let view = match views.entry(copy.src_input) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(snapshotter.view(id.as_ref())?)
                            }
                        };
                        (view.path().to_path_buf(), false)
                    }
                    None => {
                        return Err(WorkerError::Graph(format!(
                            "copy source input {} missing",
                            copy.src_input
                        )))
                    }
                };
                let owner = match &copy.owner {
                    Some(o) => Some(users::resolve_chown(&root, o).map_err(WorkerError::User)?),
                    None => None,
                };
                let exclude = (reset_owner && !excludes.is_empty()).then(|| excludes.clone());
                let symbolic = match &copy.mode_str {
                    Some(m) => {
                        Some(
                            fsops::SymbolicMode::parse(m).map_err(|e| WorkerError::File {
                                op: op_name,
                                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                            })?,
                        )
                    }
                    None => None,
                };
                let source_exclude = dockerignore::Matcher::new(&copy.exclude_patterns);
                let settings = fsops::CopySettings {
                    owner,
                    reset_owner,
                    mode: copy.mode,
                    symbolic,
                    exclude,
                    source_exclude: (!source_exclude.is_empty()).then_some(source_exclude),
                    direct: direct.clone(),
                    pool: pool.clone().filter(|_| reset_owner && direct.is_some()),
                };
                fsops::copy_action(&src_root, &root, copy, &settings).map_err(|source| {
                    WorkerError::File {
                        op: op_name,
                        source,
                    }
                })?;
            }
            FileAction::Mkdir(mkdir) => {
                let owner = match &mkdir.owner {
                    Some(o) => Some(users::resolve_chown(&root, o).map_err(WorkerError::User)?),
                    None => None,
                };
                fsops::mkdir_action(&root, mkdir, owner).map_err(|source| WorkerError::File {
                    op: "WORKDIR",
                    source,
                })?;
            }
        }
    }
    drop(views);
    drop(mount);
    if let Some(pool) = &pool {
        pool.settle()
            .map_err(|source| WorkerError::File { op: "COPY", source })?;
    }
    Ok(pool)
}
