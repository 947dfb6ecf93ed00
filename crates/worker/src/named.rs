//! Named local contexts (`--build-context NAME=DIR`): unlike the main build context, read in
//! place, such a source becomes a snapshot of its directory, keyed by the directory's content
//! checksum (less its `.dockerignore`), so it is cached like any other result.

use crate::file_op::apply_file_actions;
use crate::{checksum, dockerignore, Value, Worker, WorkerError};
use rbuild_llb::FileAction;
use rbuild_solver::ContentDigest;
use std::path::PathBuf;

impl Worker {
    /// The directory of the named local source `name`.
    pub(crate) fn named_dir(&self, name: &str) -> Result<PathBuf, WorkerError> {
        self.named_contexts
            .get(name)
            .cloned()
            .ok_or_else(|| WorkerError::Graph(format!("no directory for named context {name}")))
    }

    /// Content checksum of a named local context (all of it, less its excludes).
    pub(crate) async fn named_key_extra(
        &self,
        name: &str,
        excludes: &[String],
    ) -> Result<Vec<ContentDigest>, WorkerError> {
        let dir = self.named_dir(name)?;
        let index = self.index.clone();
        let excludes = excludes.to_vec();
        let what = format!("named context {name}");
        Self::blocking(move || {
            let matcher = dockerignore::Matcher::new(&excludes);
            let mut cache = checksum::StatCache::new(index.as_ref())
                .with_excludes((!matcher.is_empty()).then_some(matcher));
            let digest = cache
                .checksum(&dir, "/", false, true)
                .map_err(WorkerError::Checksum)?;
            cache.flush();
            Ok(vec![ContentDigest { what, digest }])
        })
        .await
    }

    /// A snapshot holding a named local context's files (owners reset to 0:0, as the main
    /// context's files are when copied).
    pub(crate) async fn named_snapshot(
        &self,
        name: &str,
        excludes: &[String],
    ) -> Result<Value, WorkerError> {
        let dir = self.named_dir(name)?;
        let snapshotter = self.snapshotter.clone();
        let matcher = dockerignore::Matcher::new(excludes);
        let file = rbuild_llb::FileOp {
            actions: vec![FileAction::Copy(rbuild_llb::CopyAction {
                allow_wildcard: false,
                ..rbuild_llb::CopyAction::new(0, "/", "/")
            })],
        };
        Self::blocking(move || {
            let active = snapshotter.prepare(None)?;
            let inputs = [Value::Context];
            // No copy pool: a named context's snapshot is made once per content.
            match apply_file_actions(
                &snapshotter,
                &active,
                &file,
                &inputs,
                Some(&dir),
                &matcher,
                None,
            ) {
                Ok(_) => Ok(Value::Fs(Some(snapshotter.commit(active)?))),
                Err(e) => {
                    let _ = snapshotter.abort(active);
                    Err(e)
                }
            }
        })
        .await
    }
}
