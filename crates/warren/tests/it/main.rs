//! Integration tests: the real `warren` binary, real OCI runtimes, real kernels features.
mod build;
mod cli;
mod examples;
mod features;
mod isolation;
mod network;
mod runtime;
mod server;
mod util;
