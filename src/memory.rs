//! lrp's allocator, and how a worker gives memory back to the OS once its work stops.
//!
//! mimalloc keeps the pages a thread freed and returns them to the OS a second later, but
//! only when that thread calls into the allocator again: a worker that goes quiet after a
//! burst (large bodies, many connections) would hold what the burst needed, tens of MiB,
//! until its next request. So each worker notes the [`Work`] it does, and asks mimalloc to
//! return its free memory once no invocation has begun or ended on it for a second
//! (`mi_collect`: <https://microsoft.github.io/mimalloc/group__extended.html>).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A worker that began and ended no invocation for this long (up to twice this) is quiet.
const QUIET: Duration = Duration::from_secs(1);

thread_local! {
    /// The collector of the worker this thread is: all of a worker's tasks run on its thread.
    static THIS_WORKER: Arc<QuietCollector> = Arc::default();
}

/// An invocation on this thread's worker, noted as it begins and as it ends.
pub struct Work(());

impl Work {
    pub fn begin() -> Work {
        note_work();
        Work(())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        note_work();
    }
}

fn note_work() {
    // Not there only while the thread exits.
    let _ = THIS_WORKER.try_with(|worker| worker.note_work());
}

/// Gives this worker's free memory back to the OS each time it goes quiet after work. Spawn
/// it once on each worker's runtime; it runs as long as the runtime does.
pub async fn collect_when_quiet() {
    let worker = THIS_WORKER.with(Arc::clone);
    worker.run(return_free_memory).await
}

/// Returns the calling thread's free memory to the OS.
fn return_free_memory() {
    // SAFETY: mi_collect takes no pointers; it only releases pages no allocation uses.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// One worker's record of work, and the loop that collects when the work stops.
#[derive(Default)]
struct QuietCollector {
    work: Notify,
}

impl QuietCollector {
    /// One compare-and-swap, unless the collector waits for work to begin (once per quiet
    /// spell), when it is woken.
    fn note_work(&self) {
        self.work.notify_one();
    }

    /// Runs `collect` once each time the worker goes quiet after work; sleeps, without
    /// timers, while it stays quiet.
    async fn run(&self, collect: impl Fn()) {
        loop {
            self.work.notified().await;
            // Work noted during a period leaves a permit for the next look.
            loop {
                tokio::time::sleep(QUIET).await;
                if self.work.notified().now_or_never().is_none() {
                    break;
                }
            }
            let started = Instant::now();
            collect();
            tracing::debug!(
                took_us = started.elapsed().as_micros() as u64,
                "worker quiet: free memory returned to the OS"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn collects_once_per_quiet_spell_after_work_and_never_while_dormant() {
        let quiet = Arc::new(QuietCollector::default());
        let collections = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let (quiet, collections) = (quiet.clone(), collections.clone());
            async move {
                quiet
                    .run(|| {
                        collections.fetch_add(1, Ordering::SeqCst);
                    })
                    .await;
            }
        });
        let collected = || collections.load(Ordering::SeqCst);

        tokio::time::sleep(QUIET * 10).await;
        assert_eq!(collected(), 0, "nothing to collect before any work");

        // Work every half period: never quiet.
        for _ in 0..10 {
            quiet.note_work();
            tokio::time::sleep(QUIET / 2).await;
        }
        assert_eq!(collected(), 0, "busy all along");

        tokio::time::sleep(QUIET * 2).await;
        assert_eq!(collected(), 1, "quiet within two periods of the last work");
        tokio::time::sleep(QUIET * 10).await;
        assert_eq!(collected(), 1, "once per quiet spell");

        quiet.note_work();
        tokio::time::sleep(QUIET * 2).await;
        assert_eq!(
            collected(),
            2,
            "the next spell of work is collected after too"
        );
    }
}
