//! Helpers shared by the collector's integration tests.

use std::path::{Path, PathBuf};

/// The Python of the test virtual environment that `test.sh` makes (or `PICKET_PYTHON`),
/// holding the third-party judges. A test that needs it fails with this message rather than
/// passing without it. (tests/lib.rs has the same for the end-to-end crate, which the
/// collector's tests cannot depend on.)
pub fn python() -> PathBuf {
    let path = std::env::var_os("PICKET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run ./test.sh, which installs the PyPI tools the interop tests need",
        path.display()
    );
    path
}
