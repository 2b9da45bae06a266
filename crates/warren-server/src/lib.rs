#![forbid(unsafe_code)]
//! Warren control-plane server.

pub mod activity;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod coord;
pub mod error;
pub mod governor;
pub mod jobs;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod openapi;
pub mod preview;
pub mod quota;
pub mod routes;
pub mod secrets;
pub mod serve;
pub mod session_audit;
pub mod ssh;
pub mod tasks;
pub mod webhooks;
