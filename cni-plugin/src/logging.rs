// SPDX-License-Identifier: Apache-2.0
//! Logging to the configured file — never to stdout, which belongs to the runtime.
//!
//! The subscriber is scoped to one invocation ([`tracing::dispatcher::with_default`]) rather than
//! installed globally, so library callers and tests can run several invocations in one process.
//! Logging must never make a verb fail: if the file cannot be opened, nothing is logged.

use std::{
    fs::{DirBuilder, OpenOptions},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
    sync::Mutex,
};

use tracing::{level_filters::LevelFilter, Dispatch};

/// A dispatcher writing to `file` at `level`, or `None` if the file cannot be opened.
pub(crate) fn dispatch(file: &Path, level: &str) -> Option<Dispatch> {
    let (filter, known) = parse_level(level);
    if filter == LevelFilter::OFF {
        return None;
    }
    if let Some(dir) = file.parent() {
        // An error here shows up as a failure to open the file just below.
        let _ = DirBuilder::new().recursive(true).mode(0o755).create(dir);
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(file)
        .ok()?;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Mutex::new(out))
        .with_ansi(false)
        .with_max_level(filter)
        .with_target(false)
        .finish();
    let dispatch = Dispatch::new(subscriber);
    if !known {
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::warn!(log_level = level, "unknown logLevel, using info");
        });
    }
    Some(dispatch)
}

/// The filter for a `logLevel` value, and whether the value was recognised.
fn parse_level(level: &str) -> (LevelFilter, bool) {
    match level.to_ascii_lowercase().as_str() {
        "off" | "none" => (LevelFilter::OFF, true),
        "error" => (LevelFilter::ERROR, true),
        "warn" | "warning" => (LevelFilter::WARN, true),
        "info" => (LevelFilter::INFO, true),
        "debug" => (LevelFilter::DEBUG, true),
        "trace" => (LevelFilter::TRACE, true),
        _ => (LevelFilter::INFO, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn logs_go_to_the_file_and_its_directory_is_created() {
        let dir = TempDir::new().unwrap();
        let file = dir.path().join("nested/dir/cni.log");
        let dispatch = dispatch(&file, "debug").expect("file opens");
        tracing::dispatcher::with_default(&dispatch, || tracing::debug!("hello from the test"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("hello from the test"), "{text}");
    }

    #[test]
    fn an_unopenable_file_means_no_logging() {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        // A path below a regular file can never be created.
        assert!(dispatch(&dir.path().join("file/cni.log"), "info").is_none());
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("DEBUG"), (LevelFilter::DEBUG, true));
        assert_eq!(parse_level("loud"), (LevelFilter::INFO, false));
        assert_eq!(parse_level("off"), (LevelFilter::OFF, true));
    }
}
