//! Integration tests: the real `warren` binary, real OCI runtimes, real kernels features.
mod build;
mod cli;
mod examples;
mod features;
#[path = "../../src/bench/gitserve.rs"]
mod gitserve;
mod isolation;
mod network;
mod runtime;
mod server;
mod util;
