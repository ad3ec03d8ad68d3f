//! Splitting a scrape's work over two cores.

/// Runs `a` on a second thread while `b` runs on this one, and returns both results.
/// If no thread can be started (or `a` panicked there), `a` runs here afterwards: the
/// work gets done either way, only slower.
pub(crate) fn both<A: Send, B>(a: impl Fn() -> A + Sync, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|scope| {
        let other = std::thread::Builder::new().spawn_scoped(scope, &a);
        let b = b();
        let a = other
            .ok()
            .and_then(|other| other.join().ok())
            .unwrap_or_else(&a);
        (a, b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_results_come_back_in_order_and_the_first_ran_elsewhere() {
        let here = std::thread::current().id();
        let (a, b) = both(|| std::thread::current().id(), || "b");
        assert_ne!(a, here);
        assert_eq!(b, "b");
    }
}
