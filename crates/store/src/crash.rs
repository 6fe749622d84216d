//! Kill points for crash-injection tests.
//!
//! Production code calls [`crash_point`] at the few places where a crash is most interesting
//! (a transaction committed but its consequences not yet acted on, or a transaction written but
//! not yet committed). When the environment variable [`CRASH_AT_ENV`] names that point, the
//! calling thread announces it on stderr (`SATCHEL_CRASHPOINT <name>`) and then blocks forever,
//! so that a test harness watching stderr can `SIGKILL` the process at exactly that point (on a
//! multi-threaded tokio runtime through `block_in_place`, so the tasks queued on that worker move
//! to another thread and the rest of the process keeps running). When the variable is unset
//! (always, outside tests) a call is one cached comparison.
//!
//! The names are a contract with the crash tests (`crates/server/tests/crash.rs`):
//!
//! | name | where |
//! |---|---|
//! | `after_reserve` | outgoing payment reserved (committed), driver not started |
//! | `after_dispatch` | the node's `pay()` returned, its outcome not processed |
//! | `before_settle` | the node reported success, `settle_payment` not committed |
//! | `during_internal` | `Store::pay_internal`: postings written, not committed |
//! | `during_credit` | `Store::credit_invoice`: postings written, not committed |
//! | `before_idempotent_answer` | a request with an `Idempotency-Key`: its operation returned (committed), its answer not stored |
//! | `keysend_before_credit` | an incoming keysend the node claimed and recorded, not booked |
//! | `during_keysend_credit` | `Store::credit_keysend`: postings written, not committed |
//! | `keysend_after_credit` | an incoming keysend booked (committed), the cursor not advanced |

use std::io::Write as _;
use std::sync::OnceLock;

/// Environment variable naming the kill point to stop at.
pub const CRASH_AT_ENV: &str = "SATCHEL_CRASH_AT";

/// Line prefix written to stderr when a kill point is reached.
pub const CRASH_ANNOUNCEMENT: &str = "SATCHEL_CRASHPOINT";

/// `SATCHEL_CRASH_AT`, read once.
fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            std::env::var(CRASH_AT_ENV)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
        .as_deref()
}

/// A kill point. If `SATCHEL_CRASH_AT` equals `name`, prints `SATCHEL_CRASHPOINT <name>` to
/// stderr and blocks the calling thread forever (the test harness kills the process); otherwise
/// returns at once.
#[inline]
pub fn crash_point(name: &str) {
    if armed() != Some(name) {
        return;
    }
    {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{CRASH_ANNOUNCEMENT} {name}");
        let _ = err.flush();
    }
    let block = || -> ! {
        // `park` may wake spuriously; never return.
        loop {
            std::thread::park();
        }
    };
    // On a multi-threaded tokio runtime, hand this worker's queued tasks to another thread
    // first: only the code path that reached the kill point freezes, the rest of the process
    // (other requests, workers, an embedded node) keeps running until the harness kills it.
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(block)
        }
        _ => block(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unarmed_points_return() {
        // The test environment does not set SATCHEL_CRASH_AT to these names.
        crash_point("after_reserve_not_a_real_point");
        crash_point("");
    }
}
