//! Reports on disk: one JSON file each (the osl.v1 Report message), written
//! atomically (temp file, fsync, rename, fsync of the directory) so a reader or
//! a restarted agent never sees half a report, and bounded in count and bytes
//! (the oldest go first).

use crate::error::{AgentError, ReadError};
use osl_proto::v1;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    max_reports: usize,
    max_bytes: u64,
}

const SUFFIX: &str = ".json";
const TEMP_PREFIX: &str = ".tmp-";

impl Store {
    /// Opens (creating) the directory and removes temp files a killed writer left.
    pub fn open(dir: impl Into<PathBuf>, max_reports: usize, max_bytes: u64) -> std::io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self { dir, max_reports: max_reports.max(1), max_bytes })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a report and drops the oldest beyond the bounds. Returns its path.
    pub fn write(&self, report: &v1::Report) -> std::io::Result<PathBuf> {
        let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
        let path = self.dir.join(format!("{}{SUFFIX}", report.id));
        let temp = self.dir.join(format!("{TEMP_PREFIX}{}", report.id));
        {
            let mut f = fs::File::create(&temp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&temp, &path)?;
        fs::File::open(&self.dir)?.sync_all()?;
        self.enforce_bounds();
        Ok(path)
    }

    /// Report files, oldest first, with their sizes.
    fn files(&self) -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.strip_suffix(SUFFIX)?.to_string();
                        valid_id(&name).then(|| (name, e.metadata().map_or(0, |m| m.len())))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Over a bound, the oldest report of the container with the most goes first: a
    /// crash-looping container (a post-mortem and two pre-OOM reports every few
    /// seconds) thins out its own history, not the other containers' reports.
    fn enforce_bounds(&self) {
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|(_, n)| n).sum();
        while files.len() > self.max_reports || (total > self.max_bytes && files.len() > 1) {
            let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
            for (id, _) in &files {
                *counts.entry(container_of(id)).or_default() += 1;
            }
            let most = counts.values().copied().max().unwrap_or(0);
            let at = files.iter().position(|(id, _)| counts[container_of(id)] == most).unwrap_or(0);
            let (oldest, size) = files.remove(at);
            let _ = fs::remove_file(self.dir.join(format!("{oldest}{SUFFIX}")));
            total = total.saturating_sub(size);
        }
    }

    /// Every report, newest first.
    pub fn list(&self) -> Vec<v1::ReportSummary> {
        let mut out: Vec<v1::ReportSummary> = self
            .files()
            .into_iter()
            .filter_map(|(id, size)| {
                let r = self.get(&id).ok()?;
                let t = r.trigger.unwrap_or_default();
                Some(v1::ReportSummary {
                    id,
                    kind: r.kind,
                    created_at_unix_ms: r.created_at_unix_ms,
                    container_id: r.container_id,
                    cgroup_path: r.cgroup_path,
                    trigger_event: t.event,
                    usage_pct: t.usage_pct,
                    size_bytes: size,
                })
            })
            .collect();
        out.reverse();
        out
    }

    pub fn get(&self, id: &str) -> Result<v1::Report, AgentError> {
        if !valid_id(id) {
            return Err(AgentError::InvalidArgument(format!("{id:?} is not a report id")));
        }
        let path = self.dir.join(format!("{id}{SUFFIX}"));
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AgentError::ReportNotFound { id: id.to_string() },
            _ => ReadError::from_io(&path, e).into(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ReadError::parse(&path, e).into())
    }
}

/// The container part of `<unix ms>-<kind>-<container>-<sequence>`.
fn container_of(id: &str) -> &str {
    id.split('-').nth(2).unwrap_or("")
}

/// `<unix ms>-<kind>-<container>`: digits, lower-case letters, `-` and `_`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, pad: usize) -> v1::Report {
        v1::Report { id: id.into(), cgroup_path: "x".repeat(pad), ..Default::default() }
    }

    #[test]
    fn bounded_by_count_and_bytes_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 3, 1 << 20).unwrap();
        for i in 0..5 {
            store.write(&report(&format!("100{i}-pre_oom-abc"), 10)).unwrap();
        }
        let ids: Vec<String> = store.list().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["1004-pre_oom-abc", "1003-pre_oom-abc", "1002-pre_oom-abc"]);
        let small = Store::open(dir.path(), 100, 5000).unwrap();
        small.write(&report("2000-pre_oom-big", 3000)).unwrap();
        small.write(&report("2001-pre_oom-big", 3000)).unwrap();
        let ids: Vec<String> = small.list().into_iter().map(|s| s.id).collect();
        // The byte bound also takes from the container with the most reports first.
        assert_eq!(ids, ["2001-pre_oom-big", "1004-pre_oom-abc"], "bytes bound keeps the newest of each");
    }

    #[test]
    fn a_crash_loop_thins_out_its_own_reports_not_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 6, 1 << 20).unwrap();
        store.write(&report("1000-pre_oom-aaa-0", 10)).unwrap();
        store.write(&report("1001-post_mortem-aaa-1", 10)).unwrap();
        for i in 0..10 {
            store.write(&report(&format!("20{i:02}-post_mortem-bbb-{i}"), 10)).unwrap();
        }
        let ids: Vec<String> = store.list().into_iter().map(|s| s.id).collect();
        assert_eq!(
            ids,
            [
                "2009-post_mortem-bbb-9",
                "2008-post_mortem-bbb-8",
                "2007-post_mortem-bbb-7",
                "2006-post_mortem-bbb-6",
                "1001-post_mortem-aaa-1",
                "1000-pre_oom-aaa-0"
            ]
        );
    }

    #[test]
    fn half_written_files_are_never_listed_and_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".tmp-1-pre_oom-x"), b"{\"id\": \"1-pre").unwrap();
        std::fs::write(dir.path().join("not-a-report.txt"), b"x").unwrap();
        let store = Store::open(dir.path(), 10, 1 << 20).unwrap();
        assert!(!dir.path().join(".tmp-1-pre_oom-x").exists());
        assert!(store.list().is_empty());
        store.write(&report("5-pre_oom-x", 1)).unwrap();
        assert_eq!(store.get("5-pre_oom-x").unwrap().id, "5-pre_oom-x");
        assert!(matches!(store.get("6-pre_oom-x"), Err(AgentError::ReportNotFound { .. })));
        assert!(matches!(store.get("../etc/passwd"), Err(AgentError::InvalidArgument(_))));
    }
}
