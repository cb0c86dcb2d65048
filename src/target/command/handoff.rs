//! The invocation on its way to a runtime: put down by the invoker, taken by whichever of the
//! runtime's connections asks `/next`. An instance serves one invocation at a time, so one
//! place is enough. Unlike a channel, it lets a connection wait until an invocation is offered
//! without taking it: a connection that has not read its runtime's `/next` yet must leave the
//! invocation to one that has, and must still learn that the runtime has work, since the
//! runtime may answer on any of its connections.

use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

pub struct Handoff<T> {
    slot: Mutex<Slot<T>>,
    changed: Notify,
}

enum Slot<T> {
    Empty,
    Waiting(T),
    Closed,
}

impl<T> Handoff<T> {
    pub fn new() -> Self {
        Handoff {
            slot: Mutex::new(Slot::Empty),
            changed: Notify::new(),
        }
    }

    /// Puts `item` down for the runtime; gives it back once the hand-off is closed.
    pub fn offer(&self, item: T) -> Result<(), T> {
        {
            let mut slot = self.lock();
            if matches!(*slot, Slot::Closed) {
                return Err(item);
            }
            *slot = Slot::Waiting(item);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// From now on nothing is handed over: waiters get `None`, offers are refused.
    pub fn close(&self) {
        *self.lock() = Slot::Closed;
        self.changed.notify_waiters();
    }

    /// The waiting item, once there is one; `None` once closed.
    pub async fn take(&self) -> Option<T> {
        loop {
            if let Some(taken) = self.try_take() {
                return taken;
            }
            let mut changed = pin!(self.changed.notified());
            // Registered before looking again, so an offer in between is not missed.
            changed.as_mut().enable();
            if let Some(taken) = self.try_take() {
                return taken;
            }
            changed.await;
        }
    }

    /// Returns once an item waits (left in place), is offered (whether or not another took it
    /// first), or the hand-off is closed.
    pub async fn offered(&self) {
        let mut changed = pin!(self.changed.notified());
        changed.as_mut().enable();
        if matches!(*self.lock(), Slot::Empty) {
            changed.await;
        }
    }

    /// `Some(item)` or `Some(None)` (closed) when there is an answer now, `None` if not.
    fn try_take(&self) -> Option<Option<T>> {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Slot::Empty) {
            Slot::Waiting(item) => Some(Some(item)),
            Slot::Empty => None,
            Slot::Closed => {
                *slot = Slot::Closed;
                Some(None)
            }
        }
    }

    /// Nothing panics while holding the lock, so a poisoned one is still consistent.
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::task::JoinHandle;

    use super::*;

    fn spawn_take(handoff: &Arc<Handoff<u8>>) -> JoinHandle<Option<u8>> {
        let handoff = handoff.clone();
        tokio::spawn(async move { handoff.take().await })
    }

    fn spawn_waiter(handoff: &Arc<Handoff<u8>>) -> JoinHandle<()> {
        let handoff = handoff.clone();
        tokio::spawn(async move { handoff.offered().await })
    }

    #[tokio::test]
    async fn a_taker_waits_for_the_offer_and_a_waiter_leaves_it_in_place() {
        let handoff = Arc::new(Handoff::new());
        let waiter = spawn_waiter(&handoff);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(handoff.offer(1).is_ok());
        waiter.await.unwrap();
        assert_eq!(handoff.take().await, Some(1), "left in place");

        let taker = spawn_take(&handoff);
        tokio::task::yield_now().await;
        assert!(!taker.is_finished());
        assert!(handoff.offer(2).is_ok());
        assert_eq!(taker.await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn a_waiter_learns_of_an_offer_that_a_taker_took_first() {
        let handoff = Handoff::new();
        let mut taker = pin!(handoff.take());
        let mut waiter = pin!(handoff.offered());
        assert!(futures_util::poll!(taker.as_mut()).is_pending());
        assert!(futures_util::poll!(waiter.as_mut()).is_pending());
        assert!(handoff.offer(1).is_ok());
        assert_eq!(taker.await, Some(1));
        assert!(
            futures_util::poll!(waiter).is_ready(),
            "the slot is empty again, but an offer was made"
        );
    }

    #[tokio::test]
    async fn closing_ends_every_wait_and_refuses_offers() {
        let handoff = Arc::new(Handoff::new());
        let (taker, waiter) = (spawn_take(&handoff), spawn_waiter(&handoff));
        tokio::task::yield_now().await;
        handoff.close();
        assert_eq!(taker.await.unwrap(), None);
        waiter.await.unwrap();
        assert_eq!(handoff.offer(3), Err(3));
        assert_eq!(handoff.take().await, None);
    }
}
