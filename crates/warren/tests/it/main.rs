//! Integration tests: the real `warren` binary, real OCI runtimes, real kernels features.
mod runtime;
mod util;
