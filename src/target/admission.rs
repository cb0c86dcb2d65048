//! Admission to a function: how many invocations may run at once (`concurrency`), how many
//! more may wait for a turn (`max_queue`), and the one path every local invocation takes
//! through them: deadline → queue place → slot → finish.
//!
//! Every count is held by a guard that gives it back on drop, so a request abandoned at any
//! point (the client went away, an HTTP/2 stream was reset, the deadline passed) leaves
//! nothing behind.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::TargetError;
use crate::memory;

/// Lambda's longest function timeout: how long an abandoned invocation may still run.
const ABANDONED_INVOCATION_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The limits of one function (for `endpoint` rules: of one endpoint, however many rules
/// point at it). Its limits can change in place, so a reload never gives a function with
/// invocations in flight a second limiter.
pub struct Limiter {
    slots: Arc<Semaphore>,
    /// Requests holding a [`Ticket`]: queued, reading their body, or running.
    admitted: AtomicUsize,
    /// Requests holding a [`Slot`].
    running: AtomicUsize,
    /// `concurrency + max_queue`: the most tickets out at once.
    capacity: AtomicUsize,
    /// Permits to retire as they come back, after a reload lowered `concurrency` while more
    /// than the new limit were running.
    retire: AtomicUsize,
    /// `(concurrency, max_queue)`; locked only to change them.
    limits: Mutex<(usize, usize)>,
}

impl Limiter {
    pub fn new(concurrency: usize, max_queue: usize) -> Arc<Self> {
        Arc::new(Limiter {
            slots: Arc::new(Semaphore::new(concurrency)),
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            capacity: AtomicUsize::new(concurrency.saturating_add(max_queue)),
            retire: AtomicUsize::new(0),
            limits: Mutex::new((concurrency, max_queue)),
        })
    }

    /// `(concurrency, max_queue)`, as last set.
    pub fn limits(&self) -> (usize, usize) {
        self.limits.lock().map_or((0, 0), |limits| *limits)
    }

    /// Changes the limits in place. Running invocations keep their slots; with a lower
    /// `concurrency`, slots are retired as they come back until the new limit holds.
    pub fn set_limits(&self, concurrency: usize, max_queue: usize) {
        let Ok(mut limits) = self.limits.lock() else {
            return;
        };
        let (old, _) = *limits;
        if concurrency > old {
            let mut added = concurrency - old;
            // Permits not yet retired are simply kept instead.
            let kept = self
                .retire
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                    Some(r.saturating_sub(added))
                })
                .map_or(0, |r| r.min(added));
            added -= kept;
            self.slots.add_permits(added);
        } else if concurrency < old {
            let removed = old - concurrency;
            let forgotten = self.slots.forget_permits(removed);
            self.retire.fetch_add(removed - forgotten, Ordering::AcqRel);
        }
        self.capacity
            .store(concurrency.saturating_add(max_queue), Ordering::Release);
        *limits = (concurrency, max_queue);
    }

    /// A place in line, or [`TargetError::QueueFull`] at once: memory stays bounded however
    /// many clients pile up, and a refused request's body is never read.
    pub fn admit(self: &Arc<Self>) -> Result<Ticket, TargetError> {
        let capacity = self.capacity.load(Ordering::Acquire);
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map_err(|_| TargetError::QueueFull)?;
        Ok(Ticket {
            limiter: self.clone(),
        })
    }

    /// Admitted requests that do not run yet: reading their body or waiting for a slot.
    pub fn queued(&self) -> usize {
        let running = self.running.load(Ordering::Acquire);
        self.admitted
            .load(Ordering::Acquire)
            .saturating_sub(running)
    }

    /// Invocations holding a slot.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

/// A place in a function's line. Dropping it gives the place back.
pub struct Ticket {
    limiter: Arc<Limiter>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limiter.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ticket {
    /// Waits for a slot until `deadline`. Dropped while waiting, it gives back its place.
    pub async fn slot(self, deadline: Instant) -> Result<Slot, TargetError> {
        let permit = match self.limiter.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = self.limiter.slots.clone().acquire_owned();
                match tokio::time::timeout_at(deadline, waiting).await {
                    Err(_) => return Err(TargetError::Timeout),
                    Ok(Err(_)) => {
                        return Err(TargetError::Transport(
                            "the function is shutting down".into(),
                        ));
                    }
                    Ok(Ok(permit)) => permit,
                }
            }
        };
        self.limiter.running.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            permit: Some(permit),
            ticket: self,
        })
    }

    /// The whole of an invocation after admission: waits for a slot, then runs
    /// `invocation` holding it, all before `deadline`. If the caller goes away or the
    /// deadline passes once the invocation has started, it still finishes on a task of its
    /// own (see [`FinishOnDrop`]) and only then frees the slot.
    pub async fn run<F, T>(
        self,
        deadline: Instant,
        invocation: impl FnOnce(Slot) -> F,
    ) -> Result<T, TargetError>
    where
        F: Future<Output = Result<T, TargetError>> + Send + 'static,
        T: Send + 'static,
    {
        // Around the slot's wait too, which has a timer of its own only while in line.
        tokio::time::timeout_at(deadline, self.run_self_timed(deadline, invocation))
            .await
            .map_err(|_| TargetError::Timeout)?
    }

    /// As [`run`](Self::run), for an invocation that ends by `deadline` on its own (a
    /// `command` invocation times out itself, to stop its instance): one timer, not two.
    pub async fn run_self_timed<F, T>(
        self,
        deadline: Instant,
        invocation: impl FnOnce(Slot) -> F,
    ) -> Result<T, TargetError>
    where
        F: Future<Output = Result<T, TargetError>> + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.slot(deadline).await?;
        FinishOnDrop::new(invocation(slot)).await
    }
}

/// The right to run one invocation now. Dropping it frees the slot and the place in line.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    ticket: Ticket,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let limiter = &self.ticket.limiter;
        limiter.running.fetch_sub(1, Ordering::AcqRel);
        let retired = limiter
            .retire
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
            .is_ok();
        if let (true, Some(permit)) = (retired, self.permit.take()) {
            permit.forget();
        }
    }
}

/// Runs an invocation in place, and if it is dropped unfinished (the client went away, or its
/// deadline passed) lets it finish on a task of its own, at most [`ABANDONED_INVOCATION_LIMIT`].
/// The invocation holds its slot, so the slot stays taken until the function is really done:
/// an RIE would refuse a second invoke meanwhile (the real one crashes), and a command instance
/// must not be lost half-way. Unlike spawning every invocation, the common path costs no task
/// and no cross-thread wake-up. Until it finishes it is its worker's [`memory::Work`].
struct FinishOnDrop<F: Future + Send + 'static>
where
    F::Output: Send,
{
    future: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> FinishOnDrop<F>
where
    F::Output: Send,
{
    fn new(future: F) -> Self {
        FinishOnDrop {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F: Future + Send + 'static> Future for FinishOnDrop<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let (Some(future), Ok(runtime)) =
            (self.future.take(), tokio::runtime::Handle::try_current())
        {
            let work = memory::Work::begin();
            runtime.spawn(async move {
                let _ = tokio::time::timeout(ABANDONED_INVOCATION_LIMIT, future).await;
                drop(work);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    async fn until(what: impl Fn() -> bool) {
        while !what() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_and_a_long_wait_times_out() {
        let limiter = Limiter::new(1, 1);
        let first = limiter.admit().unwrap().slot(far()).await.unwrap();
        let queued = tokio::spawn(limiter.admit().unwrap().slot(far()));
        until(|| limiter.queued() == 1).await;
        assert_eq!(limiter.admit().err(), Some(TargetError::QueueFull));
        drop(first);
        assert!(queued.await.unwrap().is_ok());
        assert_eq!((limiter.queued(), limiter.running()), (0, 0));

        let _held = limiter.admit().unwrap().slot(far()).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        let waited = limiter.admit().unwrap().slot(soon).await;
        assert_eq!(waited.err(), Some(TargetError::Timeout));
        assert_eq!(limiter.queued(), 0);
    }

    #[tokio::test]
    async fn a_dropped_waiter_gives_back_its_place() {
        let limiter = Limiter::new(1, 3);
        let running = limiter.admit().unwrap().slot(far()).await.unwrap();
        // Three waiters fill the queue; their futures are then dropped mid-wait, as hyper
        // drops a request future when the client goes away.
        let waiters: Vec<_> = (0..3)
            .map(|_| tokio::spawn(limiter.admit().unwrap().slot(far())))
            .collect();
        until(|| limiter.queued() == 3).await;
        assert_eq!(limiter.admit().err(), Some(TargetError::QueueFull));
        for waiter in &waiters {
            waiter.abort();
        }
        for waiter in waiters {
            assert!(waiter.await.is_err_and(|e| e.is_cancelled()));
        }
        assert_eq!(limiter.queued(), 0);
        // A ticket dropped before it ever waited (a body that never arrived) too.
        drop(limiter.admit().unwrap());
        assert_eq!(limiter.queued(), 0);

        let next = tokio::spawn(limiter.admit().unwrap().slot(far()));
        until(|| limiter.queued() == 1).await;
        drop(running);
        assert!(next.await.unwrap().is_ok());
        assert_eq!((limiter.queued(), limiter.running()), (0, 0));
    }

    #[tokio::test]
    async fn an_abandoned_run_keeps_its_slot_until_the_invocation_finishes() {
        let limiter = Limiter::new(1, 1);
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let run = limiter.admit().unwrap().run(far(), |slot| async move {
            let _slot = slot;
            let _ = finished.await;
            Ok(())
        });
        let run = tokio::spawn(run);
        until(|| limiter.running() == 1).await;
        run.abort();
        assert!(run.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(
            limiter.running(),
            1,
            "the invocation goes on without its caller"
        );
        finish.send(()).unwrap();
        until(|| limiter.running() == 0).await;
        assert_eq!(limiter.queued(), 0);
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_invocation_too() {
        let limiter = Limiter::new(1, 0);
        let soon = Instant::now() + Duration::from_millis(20);
        let outcome = limiter
            .admit()
            .unwrap()
            .run(soon, |slot| async move {
                let _slot = slot;
                std::future::pending::<Result<(), TargetError>>().await
            })
            .await;
        assert_eq!(outcome, Err(TargetError::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_self_timed_run_is_left_to_time_itself_out() {
        let limiter = Limiter::new(1, 0);
        let soon = Instant::now() + Duration::from_millis(20);
        let outcome = limiter
            .admit()
            .unwrap()
            .run_self_timed(soon, |slot| async move {
                let _slot = slot;
                tokio::time::sleep(Duration::from_millis(40)).await;
                Ok(())
            })
            .await;
        assert_eq!(
            outcome,
            Ok(()),
            "not cut at the deadline by a timer of its own"
        );
        assert_eq!(limiter.running(), 0);
    }

    #[tokio::test]
    async fn limits_change_in_place() {
        let limiter = Limiter::new(2, 0);
        let a = limiter.admit().unwrap().slot(far()).await.unwrap();
        let b = limiter.admit().unwrap().slot(far()).await.unwrap();
        // Lowered to 1 while two run: neither is cut off, and no third may start.
        limiter.set_limits(1, 2);
        assert_eq!(limiter.limits(), (1, 2));
        let c = tokio::spawn(limiter.admit().unwrap().slot(far()));
        drop(a);
        tokio::task::yield_now().await;
        assert_eq!(limiter.running(), 1, "a's slot was retired");
        drop(b);
        let c = c.await.unwrap().unwrap();
        assert_eq!(limiter.running(), 1);
        // Raised to 3: two more run beside c.
        limiter.set_limits(3, 0);
        let d = limiter.admit().unwrap().slot(far()).await.unwrap();
        let e = limiter.admit().unwrap().slot(far()).await.unwrap();
        assert_eq!(limiter.running(), 3);
        assert_eq!(limiter.admit().err(), Some(TargetError::QueueFull));
        drop((c, d, e));
        assert_eq!((limiter.running(), limiter.queued()), (0, 0));
    }
}
