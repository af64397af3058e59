//! The `tidings` service: multi-tenant real-time analytics dashboards on the Tidings Socket.IO
//! server (organisation rooms, an HTTP ingestion API, statistics, a live dashboard).
//!
//! The binary (`main.rs`) wires it to the command line; this library holds the service so that its
//! integration tests can drive it.

pub mod analytics;
