//! How many invocations of one function may run at once, and how many may wait for a turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::TargetError;

pub struct Slots {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    concurrency: usize,
    max_waiting: usize,
}

impl Slots {
    pub fn new(concurrency: usize, max_waiting: usize) -> Self {
        Slots {
            running: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            concurrency,
            max_waiting,
        }
    }

    /// `(concurrency, max_waiting)`, as built.
    pub fn limits(&self) -> (usize, usize) {
        (self.concurrency, self.max_waiting)
    }

    /// A turn to invoke, waiting until `deadline` at the most. A full queue is refused at
    /// once, so that memory stays bounded however many clients pile up.
    pub async fn acquire(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, TargetError> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(TargetError::QueueFull);
        }
        let permit = tokio::time::timeout_at(deadline, self.running.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Err(_) => Err(TargetError::Timeout),
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(TargetError::Transport(
                "the function is shutting down".into(),
            )),
        }
    }

    /// Invocations waiting for a turn.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_queue_is_refused_and_a_long_wait_times_out() {
        let slots = Arc::new(Slots::new(1, 1));
        let far = Instant::now() + Duration::from_secs(60);
        let first = slots.acquire(far).await.unwrap();
        let queued = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(far).await.map(drop) }
        });
        while slots.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(slots.acquire(far).await.err(), Some(TargetError::QueueFull));
        drop(first);
        assert_eq!(queued.await.unwrap(), Ok(()));

        let _held = slots.acquire(far).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(slots.acquire(soon).await.err(), Some(TargetError::Timeout));
        assert_eq!(slots.waiting(), 0);
    }
}
