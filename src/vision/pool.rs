//! A fixed set of engines that each serve one caller at a time (an ONNX Runtime session, a dlib
//! network), lent out per call. Engines hold as many as there are CPU slots, so in the service a
//! caller never waits here: it already holds a slot.

use std::sync::{Condvar, Mutex};

pub struct Pool<T> {
    idle: Mutex<Vec<T>>,
    freed: Condvar,
}

impl<T> Pool<T> {
    pub fn new(engines: Vec<T>) -> Self {
        assert!(!engines.is_empty(), "a pool needs at least one engine");
        Self {
            idle: Mutex::new(engines),
            freed: Condvar::new(),
        }
    }

    /// An engine, waiting for one to be returned if all are lent out.
    pub fn lease(&self) -> Lease<'_, T> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(engine) = idle.pop() {
                return Lease {
                    pool: self,
                    engine: Some(engine),
                };
            }
            idle = self.freed.wait(idle).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give(&self, engine: T) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(engine);
        self.freed.notify_one();
    }
}

/// An engine out of its pool; back in on drop, even when the call using it panicked.
pub struct Lease<'a, T> {
    pool: &'a Pool<T>,
    engine: Option<T>,
}

impl<T> std::ops::Deref for Lease<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.engine.as_ref().expect("held until drop")
    }
}

impl<T> std::ops::DerefMut for Lease<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.engine.as_mut().expect("held until drop")
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            self.pool.give(engine);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_goes_back_even_after_a_panic() {
        let pool = Pool::new(vec![1]);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _engine = pool.lease();
            panic!("inference failed");
        }));
        assert!(panicked.is_err());
        assert_eq!(*pool.lease(), 1);
    }
}
