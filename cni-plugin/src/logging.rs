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

/// The log is rotated once it grows past this: the current file and one older one are kept.
pub(crate) const ROTATE_AT: u64 = 10 << 20;

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
    rotate(file);
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

/// Past [`ROTATE_AT`], `file` becomes `file.1` (replacing the older one) and a new file starts.
/// Concurrent invocations may both rotate; at worst a few lines end up in `.1`.
fn rotate(file: &Path) {
    if std::fs::metadata(file).is_ok_and(|m| m.len() > ROTATE_AT) {
        let mut old = file.as_os_str().to_owned();
        old.push(".1");
        let _ = std::fs::rename(file, old);
    }
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
    fn a_log_past_its_size_is_rotated_into_one_older_file() {
        let dir = TempDir::new().unwrap();
        let file = dir.path().join("cni.log");
        std::fs::write(&file, vec![b'x'; ROTATE_AT as usize + 1]).unwrap();
        let dispatch = dispatch(&file, "info").expect("file opens");
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("after rotation"));
        let current = std::fs::read_to_string(&file).unwrap();
        assert!(current.contains("after rotation") && current.len() < 1000);
        let older = dir.path().join("cni.log.1");
        assert_eq!(std::fs::metadata(older).unwrap().len(), ROTATE_AT + 1);
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
