//! Integration tests: the real `warren` binary, real OCI runtimes, real kernels features.
mod cli;
mod isolation;
mod runtime;
mod util;
