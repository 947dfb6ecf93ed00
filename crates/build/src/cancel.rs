//! Cancellation of a build from the solve on: the caller's cancel future raced against each
//! phase (solve, export, cache export, push), and the flag that blocking export work checks
//! between layers and chunks. Once the future completes the phase stops, the flag stays raised
//! and every later phase fails at once with [`BuildError::Canceled`].

use crate::error::BuildError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The caller's cancel future and what it did.
pub(crate) struct Cancel<F> {
    /// The cancel future (polled only while a phase runs).
    future: Pin<Box<F>>,
    /// Raised once the future completed; blocking work reads it.
    flag: Arc<AtomicBool>,
    /// The future's output once it completed (it is never polled again).
    signal: Option<i32>,
}

impl<F: Future<Output = i32>> Cancel<F> {
    /// Wraps the caller's cancel future.
    pub(crate) fn new(future: F) -> Cancel<F> {
        Cancel {
            future: Box::pin(future),
            flag: Arc::new(AtomicBool::new(false)),
            signal: None,
        }
    }

    /// The flag blocking work checks (raised when the build is canceled).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Fails with [`BuildError::Canceled`] when the build was canceled already.
    fn check(&self) -> Result<(), BuildError> {
        match self.signal {
            Some(signal) => Err(BuildError::Canceled { signal }),
            None => Ok(()),
        }
    }

    /// Records the future's output and raises the flag.
    fn canceled(&mut self, signal: i32) -> BuildError {
        self.signal = Some(signal);
        self.flag.store(true, Ordering::SeqCst);
        BuildError::Canceled { signal }
    }

    /// Runs `work` until it ends or the build is canceled; then `work` is dropped (an HTTP
    /// request in flight is abandoned, so a push never reaches its manifest).
    pub(crate) async fn run<T>(
        &mut self,
        work: impl Future<Output = Result<T, BuildError>>,
    ) -> Result<T, BuildError> {
        self.check()?;
        tokio::select! {
            r = work => r,
            signal = self.future.as_mut() => Err(self.canceled(signal)),
        }
    }

    /// Runs `f` on the blocking pool until it ends; when the build is canceled meanwhile, raises
    /// the flag and waits for `f` to return (it checks the flag between layers and chunks, so it
    /// stops promptly and removes its temp files) before failing with the cancel.
    pub(crate) async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
    ) -> Result<T, BuildError> {
        self.check()?;
        let mut task = tokio::task::spawn_blocking(f);
        let signal = tokio::select! {
            r = &mut task => return r.map_err(|e| BuildError::Task(e.to_string()))?,
            signal = self.future.as_mut() => signal,
        };
        let error = self.canceled(signal);
        let _ = task.await;
        Err(error)
    }

    /// As [`Cancel::blocking`] for work that cannot stop midway (copying into an output or a
    /// cache directory): on cancel it is left to finish or die with the process (it checks the
    /// flag before it names anything) and the build fails at once.
    pub(crate) async fn detached<T: Send + 'static>(
        &mut self,
        f: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
    ) -> Result<T, BuildError> {
        self.check()?;
        let task = tokio::task::spawn_blocking(f);
        tokio::select! {
            r = task => r.map_err(|e| BuildError::Task(e.to_string()))?,
            signal = self.future.as_mut() => Err(self.canceled(signal)),
        }
    }
}

/// Fails with [`BuildError::Canceled`] (signal 0: the caller's cancel carries the real one) when
/// `flag` is raised: the check blocking work makes before each step that becomes visible.
pub(crate) fn stop_if_canceled(flag: &AtomicBool) -> Result<(), BuildError> {
    if flag.load(Ordering::SeqCst) {
        return Err(BuildError::Canceled { signal: 0 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_blocking_step_sees_the_flag_and_is_awaited() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut cancel = Cancel::new(async move {
            let _ = rx.await;
            15
        });
        let flag = cancel.flag();
        let stopped = Arc::new(AtomicBool::new(false));
        let seen = stopped.clone();
        tx.send(()).unwrap();
        let r = cancel
            .blocking(move || {
                while !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                seen.store(true, Ordering::SeqCst);
                stop_if_canceled(&flag)
            })
            .await;
        assert!(
            matches!(r, Err(BuildError::Canceled { signal: 15 })),
            "{r:?}"
        );
        assert!(stopped.load(Ordering::SeqCst), "the step was not awaited");
        // Every later phase fails at once, without polling the finished future again.
        let later = cancel.run(async { Ok(()) }).await;
        assert!(matches!(later, Err(BuildError::Canceled { signal: 15 })));
        let later = cancel.detached(|| Ok(())).await;
        assert!(matches!(later, Err(BuildError::Canceled { signal: 15 })));
    }

    #[tokio::test]
    async fn work_that_ends_first_keeps_its_result() {
        let mut cancel = Cancel::new(std::future::pending::<i32>());
        assert_eq!(cancel.run(async { Ok(1) }).await.unwrap(), 1);
        assert_eq!(cancel.blocking(|| Ok(2)).await.unwrap(), 2);
        assert_eq!(cancel.detached(|| Ok(3)).await.unwrap(), 3);
        assert!(stop_if_canceled(&cancel.flag()).is_ok());
    }
}
