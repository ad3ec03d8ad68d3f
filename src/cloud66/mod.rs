//! Cloud66 API reconciliation: reads every stack's SSL certificates from Cloud66's API,
//! the source of truth, so that certificates are visible from the first sync and
//! missed webhooks heal.
//!
//! - `model`: the API's responses, parsed tolerantly of the documented drift (pure).
//! - `client`: HTTPS requests with the token, timeouts, retries, the request budget.
//! - [`stacks`]: the stack directory and how a uid gets its webhook stack id.
//! - `sync`: one sync, and the loop that schedules syncs.
//!
//! Observations go through the same storage writer as webhooks and follow the same
//! "newest wins, per aspect" rule; nothing here runs on a request path.

mod client;
mod metrics;
mod model;
pub mod stacks;
mod sync;

pub use metrics::SyncMetrics;
pub use stacks::{IdSource, StackRecord};
pub use sync::{SyncStatus, Syncer, Trigger};
