//! lrp: a reverse proxy that turns plain HTTP into API Gateway-shaped Lambda invocations,
//! routed by the request's Host.

pub mod access_log;
pub mod coalesced_writes;
pub mod config;
pub mod error;
pub mod event;
pub mod healthcheck;
pub mod ids;
pub mod memory;
pub mod metrics;
pub mod open_files;
pub mod router;
pub mod server;
pub mod target;
