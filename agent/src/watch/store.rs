//! Reports on disk: one JSON file each (the osl.v1 Report message), written
//! atomically (temp file, fsync, rename, fsync of the directory) so a reader or
//! a restarted agent never sees half a report, and bounded in count and bytes
//! (the oldest go first).
//!
//! The directory may be shared (an emptyDir other containers of the pod can
//! write): a name is built only from an id of the store's own format, files are
//! opened without following symlinks and served only when regular, and a full
//! disk makes room by deleting the oldest reports; a report that still cannot be
//! written is kept in memory (a few, see [`MEMORY_REPORTS`]) and served marked as
//! not persisted.

use crate::error::{AgentError, ReadError};
use osl_proto::v1;
use std::collections::VecDeque;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// At most this many reports the disk refused are kept in memory…
pub const MEMORY_REPORTS: usize = 8;
/// …and at most this many bytes of them (as JSON); the oldest go first.
pub const MEMORY_BYTES: u64 = 4 << 20;

/// A full disk: deleting more than this many times the report's size (and
/// [`MAKE_ROOM_SLACK`]) did not make room, so the disk is full of something else
/// and the older reports are worth more than one more try.
const MAKE_ROOM_FACTOR: u64 = 2;
const MAKE_ROOM_SLACK: u64 = 64 << 10;

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    max_reports: usize,
    max_bytes: u64,
    /// Reports the disk refused, oldest first, marked with why.
    memory: Mutex<VecDeque<Held>>,
}

#[derive(Debug)]
struct Held {
    report: v1::Report,
    size: u64,
}

/// Where [`Store::write`] put a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Disk(PathBuf),
    /// The disk refused it for `reason`: kept in memory only, served as not persisted.
    Memory {
        reason: String,
    },
}

/// A report the store did not keep (logged at WARN by the store).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0} is not a report id")]
    InvalidId(String),
    #[error("report {id} is {bytes} bytes, more than the store's bound of {max} (--max-report-bytes): not kept")]
    TooLarge { id: String, bytes: u64, max: u64 },
    #[error("report {id} could not be written ({reason}) and at {bytes} bytes is too big to keep in memory")]
    Lost { id: String, reason: String, bytes: u64 },
    #[error("cannot encode report {id}: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

const SUFFIX: &str = ".json";
const TEMP_PREFIX: &str = ".tmp-";
/// The container part of a report not about a container.
const HOST: &str = "host";
/// The container part: the first digits of its id.
const CONTAINER_DIGITS: usize = 12;
/// Longer than any id [`report_id`] makes (19 + 11 + 12 + 20 and dashes).
const MAX_ID_LEN: usize = 80;

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
        Ok(Self { dir, max_reports: max_reports.max(1), max_bytes, memory: Mutex::default() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a report and drops the oldest beyond the bounds. A disk that is full
    /// (ENOSPC, EDQUOT, or EIO as some filesystems say it) gets room: the oldest
    /// reports are deleted, one at a time, until the write goes through (or twice
    /// its size was freed in vain: then the disk is full of something else). A
    /// report that still cannot be written (or fails otherwise) is kept in memory.
    ///
    /// Refused: an id not of the store's format, and a report bigger than the
    /// store's byte bound (it would evict every other one, then itself).
    pub fn write(&self, report: &v1::Report) -> Result<Saved, WriteError> {
        let id = report.id.as_str();
        let refuse = |e: WriteError| {
            tracing::warn!(report = %shown(id), error = %e, "report refused");
            Err(e)
        };
        if parse_id(id).is_none() {
            return refuse(WriteError::InvalidId(shown(id)));
        }
        let bytes = match serde_json::to_vec_pretty(report) {
            Ok(b) => b,
            Err(source) => return refuse(WriteError::Encode { id: id.to_string(), source }),
        };
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return refuse(WriteError::TooLarge { id: id.to_string(), bytes: size, max: self.max_bytes });
        }
        let budget = MAKE_ROOM_FACTOR * size.next_multiple_of(4096) + MAKE_ROOM_SLACK;
        let (mut freed, mut deleted) = (0u64, 0usize);
        let error = loop {
            match self.write_file(id, &bytes) {
                Ok(path) => {
                    if deleted > 0 {
                        tracing::info!(report = %id, deleted, freed, "disk full: older reports deleted to make room");
                    }
                    self.memory().retain(|h| h.report.id != id);
                    self.enforce_bounds();
                    return Ok(Saved::Disk(path));
                }
                Err(e) if is_full(&e) && freed < budget => match self.delete_oldest() {
                    Some(n) => {
                        freed += n;
                        deleted += 1;
                    }
                    None => break e,
                },
                Err(e) => break e,
            }
        };
        let mut reason = format!("cannot write to {}: {error}", self.dir.display());
        if deleted > 0 {
            reason += &format!(" (after deleting {deleted} older reports, {freed} bytes, to make room)");
        }
        self.keep_in_memory(report, size, reason)
    }

    /// Temp file (never through a symlink), fsync, rename; the temp file goes if
    /// any of that fails.
    fn write_file(&self, id: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.dir.join(format!("{id}{SUFFIX}"));
        let temp = self.dir.join(format!("{TEMP_PREFIX}{id}"));
        let written = create_new(&temp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&temp, &path)
        });
        if let Err(e) = written {
            if let Err(rm) = fs::remove_file(&temp)
                && rm.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %temp.display(), error = %rm, "cannot remove a failed report's temp file");
            }
            return Err(e);
        }
        // The report is in place: a failed fsync of the directory does not unmake it.
        if let Err(e) = fs::File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot fsync the report directory");
        }
        Ok(path)
    }

    /// Deletes the oldest report on disk; returns the bytes it held.
    fn delete_oldest(&self) -> Option<u64> {
        self.files().into_iter().find_map(|f| {
            let path = self.dir.join(format!("{}{SUFFIX}", f.id));
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(report = %f.id, "disk full: oldest report deleted to make room");
                    Some(f.disk_bytes)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a report to make room");
                    None
                }
            }
        })
    }

    fn keep_in_memory(&self, report: &v1::Report, size: u64, reason: String) -> Result<Saved, WriteError> {
        let id = report.id.clone();
        if size > MEMORY_BYTES {
            let e = WriteError::Lost { id, reason, bytes: size };
            tracing::warn!(error = %e, "report lost");
            return Err(e);
        }
        let mut memory = self.memory();
        memory.retain(|h| h.report.id != id);
        while memory.len() >= MEMORY_REPORTS || memory.iter().map(|h| h.size).sum::<u64>() + size > MEMORY_BYTES {
            let Some(dropped) = memory.pop_front() else { break };
            tracing::warn!(report = %dropped.report.id, "a report kept in memory dropped for a newer one: lost");
        }
        let mut kept = report.clone();
        kept.not_persisted_reason = reason.clone();
        memory.push_back(Held { report: kept, size });
        tracing::warn!(
            report = %id,
            reason = %reason,
            "report not persisted: kept in memory only, served until the agent restarts or {MEMORY_REPORTS} newer ones \
             replace it"
        );
        Ok(Saved::Memory { reason })
    }

    fn memory(&self) -> MutexGuard<'_, VecDeque<Held>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Report files, oldest first: regular files named by a report id (a symlink,
    /// a FIFO, a directory is never one).
    fn files(&self) -> Vec<File> {
        let mut files: Vec<File> = fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.strip_suffix(SUFFIX)?.to_string();
                        let key = parse_id(&name)?;
                        // readdir's type, or lstat: neither follows a symlink.
                        let meta = e.metadata().ok()?;
                        if !meta.file_type().is_file() {
                            tracing::debug!(name = %shown(&name), kind = ?meta.file_type(), "not a regular file: skipped");
                            return None;
                        }
                        Some(File { key, id: name, size: meta.len(), disk_bytes: meta.blocks() * 512 })
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort_by(|a, b| (a.key, &a.id).cmp(&(b.key, &b.id)));
        files
    }

    /// Over a bound, the oldest report of the container with the most goes first: a
    /// crash-looping container (a post-mortem and two pre-OOM reports every few
    /// seconds) thins out its own history, not the other containers' reports.
    fn enforce_bounds(&self) {
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|f| f.size).sum();
        while files.len() > self.max_reports || (total > self.max_bytes && files.len() > 1) {
            let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
            for f in &files {
                *counts.entry(container_of(&f.id)).or_default() += 1;
            }
            let most = counts.values().copied().max().unwrap_or(0);
            let at = files.iter().position(|f| counts[container_of(&f.id)] == most).unwrap_or(0);
            let oldest = files.remove(at);
            let _ = fs::remove_file(self.dir.join(format!("{}{SUFFIX}", oldest.id)));
            total = total.saturating_sub(oldest.size);
        }
    }

    /// Every report, newest first: on disk, and those kept in memory.
    pub fn list(&self) -> Vec<v1::ReportSummary> {
        let summary = |r: v1::Report, size: u64| {
            let t = r.trigger.unwrap_or_default();
            v1::ReportSummary {
                id: r.id,
                kind: r.kind,
                created_at_unix_ms: r.created_at_unix_ms,
                container_id: r.container_id,
                cgroup_path: r.cgroup_path,
                trigger_event: t.event,
                usage_pct: t.usage_pct,
                size_bytes: size,
                not_persisted_reason: r.not_persisted_reason,
            }
        };
        let mut out: Vec<((u64, u64), v1::ReportSummary)> = self
            .files()
            .into_iter()
            .filter_map(|f| {
                let (r, size) = self.read(&f.id).ok()?;
                Some((f.key, summary(r, size)))
            })
            .collect();
        for h in self.memory().iter() {
            if !out.iter().any(|(_, s)| s.id == h.report.id)
                && let Some(key) = parse_id(&h.report.id)
            {
                out.push((key, summary(h.report.clone(), h.size)));
            }
        }
        out.sort_by(|a, b| (b.0, &b.1.id).cmp(&(a.0, &a.1.id)));
        out.into_iter().map(|(_, s)| s).collect()
    }

    pub fn get(&self, id: &str) -> Result<v1::Report, AgentError> {
        if parse_id(id).is_none() {
            return Err(AgentError::InvalidArgument(format!("{} is not a report id", shown(id))));
        }
        if let Some(h) = self.memory().iter().find(|h| h.report.id == id) {
            return Ok(h.report.clone());
        }
        self.read(id).map(|(r, _)| r)
    }

    /// A report file: never through a symlink, never blocking on a FIFO, a regular
    /// file of at most the store's byte bound only. `id` is valid.
    fn read(&self, id: &str) -> Result<(v1::Report, u64), AgentError> {
        let path = self.dir.join(format!("{id}{SUFFIX}"));
        let not_found = || AgentError::ReportNotFound { id: id.to_string() };
        let io = |e: std::io::Error| -> AgentError {
            match e.kind() {
                std::io::ErrorKind::NotFound => not_found(),
                _ => ReadError::from_io(&path, e).into(),
            }
        };
        let skip = |what: String| {
            tracing::warn!(path = %path.display(), "{what}: not a report, not served");
            not_found()
        };
        // lstat first: a device node is not even opened.
        let before = fs::symlink_metadata(&path).map_err(io)?;
        if !before.file_type().is_file() {
            return Err(skip(format!("not a regular file ({:?})", before.file_type())));
        }
        let file =
            fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path).map_err(
                |e| match e.raw_os_error() {
                    Some(libc::ELOOP) => skip("a symlink".into()),
                    _ => io(e),
                },
            )?;
        // What was opened, in case the name was swapped after the lstat.
        let meta = file.metadata().map_err(io)?;
        if !meta.file_type().is_file() || (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
            return Err(skip(format!("replaced while opened, by a {:?}", meta.file_type())));
        }
        if meta.nlink() != 1 {
            return Err(skip(format!("{} hard links (the store makes one)", meta.nlink())));
        }
        if meta.len() > self.max_bytes {
            return Err(skip(format!("{} bytes, more than the store's bound of {}", meta.len(), self.max_bytes)));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(self.max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
        let size = bytes.len() as u64;
        let report = serde_json::from_slice(&bytes).map_err(|e| AgentError::from(ReadError::parse(&path, e)))?;
        Ok((report, size))
    }
}

/// A report file of the directory.
struct File {
    key: (u64, u64),
    id: String,
    size: u64,
    /// What deleting it frees.
    disk_bytes: u64,
}

/// A new file, never through a symlink (O_EXCL): a stale one in the way (a
/// killed writer's, or planted) is removed first.
fn create_new(path: &Path) -> std::io::Result<fs::File> {
    let open = || fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).open(path);
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()
        }
        r => r,
    }
}

/// The errors that say the disk is full (EIO: as some filesystems, FUSE and
/// network ones, report it).
fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EIO))
}

/// The id of a report written at `created_at_unix_ms` about `container_id`:
/// `<unix ms>-<kind>-<container>-<seq>`, the container as its id's first 12 hex
/// digits, lower-cased (an id that is not hex is hashed to 12), or `host`.
pub fn report_id(created_at_unix_ms: i64, kind: v1::ReportKind, container_id: Option<&str>, seq: u64) -> String {
    let kind = osl_proto::enum_names::report_kind::name_of(kind as i32);
    let who = match container_id {
        None => HOST.to_string(),
        Some(id) => {
            let lower = id.to_ascii_lowercase();
            match lower.get(..CONTAINER_DIGITS) {
                Some(digits) if digits.bytes().all(|b| b.is_ascii_hexdigit()) => digits.to_string(),
                _ => format!("{:012x}", fnv1a(id.as_bytes()) >> 16),
            }
        }
    };
    format!("{}-{kind}-{who}-{seq}", created_at_unix_ms.max(0))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Whether `id` is of the store's format, and its order (time, then sequence):
/// `<unix ms>-<kind>-<container>[-<sequence>]`, numbers in decimal without leading
/// zeros, the kind a [`v1::ReportKind`]'s short name, the container `host` or 12
/// lower-case hex digits (reports of agents before the sequence lack it).
fn parse_id(id: &str) -> Option<(u64, u64)> {
    if id.len() > MAX_ID_LEN {
        return None;
    }
    let mut parts = id.split('-');
    let at = number(parts.next()?)?;
    let kind = parts.next()?;
    let known = v1::ReportKind::from_str_name(&format!("REPORT_KIND_{}", kind.to_ascii_uppercase()))
        .is_some_and(|k| osl_proto::enum_names::report_kind::name_of(k as i32) == kind);
    let who = parts.next()?;
    let container = who == HOST
        || (who.len() == CONTAINER_DIGITS && who.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let seq = match parts.next() {
        Some(s) => number(s)?,
        None => 0,
    };
    (known && container && parts.next().is_none()).then_some((at, seq))
}

fn number(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// An id for a log line or an error: escaped, and cut short.
fn shown(id: &str) -> String {
    let mut s: String = id.chars().take(MAX_ID_LEN).collect();
    if s.len() < id.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// The container part of `<unix ms>-<kind>-<container>-<sequence>`.
fn container_of(id: &str) -> &str {
    id.split('-').nth(2).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbb";

    fn report(id: &str, pad: usize) -> v1::Report {
        v1::Report { id: id.into(), cgroup_path: "x".repeat(pad), ..Default::default() }
    }

    fn ids(store: &Store) -> Vec<String> {
        store.list().into_iter().map(|s| s.id).collect()
    }

    #[test]
    fn bounded_by_count_and_bytes_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 3, 1 << 20).unwrap();
        for i in 0..5 {
            store.write(&report(&format!("100{i}-pre_oom-{A}"), 10)).unwrap();
        }
        assert_eq!(
            ids(&store),
            [format!("1004-pre_oom-{A}"), format!("1003-pre_oom-{A}"), format!("1002-pre_oom-{A}")]
        );
        let small = Store::open(dir.path(), 100, 5000).unwrap();
        small.write(&report(&format!("2000-pre_oom-{B}"), 3000)).unwrap();
        small.write(&report(&format!("2001-pre_oom-{B}"), 3000)).unwrap();
        // The byte bound also takes from the container with the most reports first.
        assert_eq!(ids(&small), [format!("2001-pre_oom-{B}"), format!("1004-pre_oom-{A}")], "the newest of each");
    }

    #[test]
    fn a_crash_loop_thins_out_its_own_reports_not_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 6, 1 << 20).unwrap();
        store.write(&report(&format!("1000-pre_oom-{A}-0"), 10)).unwrap();
        store.write(&report(&format!("1001-post_mortem-{A}-1"), 10)).unwrap();
        for i in 0..10 {
            store.write(&report(&format!("20{i:02}-post_mortem-{B}-{i}"), 10)).unwrap();
        }
        let want: Vec<String> = (6..10)
            .rev()
            .map(|i| format!("20{i:02}-post_mortem-{B}-{i}"))
            .chain([format!("1001-post_mortem-{A}-1"), format!("1000-pre_oom-{A}-0")])
            .collect();
        assert_eq!(ids(&store), want);
    }

    #[test]
    fn half_written_files_are_never_listed_and_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".tmp-1-pre_oom-host"), b"{\"id\": \"1-pre").unwrap();
        std::fs::write(dir.path().join("not-a-report.txt"), b"x").unwrap();
        let store = Store::open(dir.path(), 10, 1 << 20).unwrap();
        assert!(!dir.path().join(".tmp-1-pre_oom-host").exists());
        assert!(store.list().is_empty());
        store.write(&report("5-pre_oom-host", 1)).unwrap();
        assert_eq!(store.get("5-pre_oom-host").unwrap().id, "5-pre_oom-host");
        assert!(matches!(store.get("6-pre_oom-host"), Err(AgentError::ReportNotFound { .. })));
        assert!(matches!(store.get("../etc/passwd"), Err(AgentError::InvalidArgument(_))));
        assert!(matches!(store.write(&report("../../x", 1)), Err(WriteError::InvalidId(_))));
        assert!(!dir.path().join("../../x.json").exists() && !dir.path().join(".tmp-../../x").exists());
    }

    #[test]
    fn ids_are_made_lower_case_and_anything_else_is_refused() {
        let upper = "3F2A9C0D1E5B7A8F6C4D2E0B9A7C5E3D1F0B8A6C4E2D0F9B7A5C3E1D0F2B4A6C";
        let id = report_id(1_700_000_000_000, v1::ReportKind::PreOom, Some(upper), 7);
        assert_eq!(id, "1700000000000-pre_oom-3f2a9c0d1e5b-7");
        assert_eq!(report_id(-5, v1::ReportKind::PostMortem, None, 0), "0-post_mortem-host-0");
        let odd = report_id(1, v1::ReportKind::PreOom, Some("../not hex at all"), 1);
        assert!(parse_id(&odd).is_some(), "{odd}");
        for kind in [v1::ReportKind::PreOom, v1::ReportKind::PostMortem] {
            for c in [None, Some(upper), Some("short"), Some("é€ü")] {
                let id = report_id(i64::MAX, kind, c, u64::MAX);
                assert!(parse_id(&id).is_some(), "{id}");
            }
        }
        assert_eq!(parse_id("1700000000000-pre_oom-3f2a9c0d1e5b"), Some((1_700_000_000_000, 0)), "no sequence");
        assert_eq!(parse_id("12-post_mortem-host-3"), Some((12, 3)));
        let too_long = format!("1-pre_oom-host-{}", "1".repeat(100));
        for bad in [
            "",
            "../x",
            "A/B",
            "1-pre_oom-3F2A9C0D1E5B-0",
            "1-PRE_OOM-host-0",
            "1-pre_oom-3f2a9c0d1e5b7-0",
            "1-pre_oom-3f2a9c0d1e5-0",
            "1-pre_oom-3f2a9c0d1e5g-0",
            "1-pre_oom-nope",
            "1-pre_oom-host-0-0",
            "1-pre_oom-host-",
            "01-pre_oom-host-0",
            "1-pre_oom-host-01",
            "-1-pre_oom-host",
            "1-unknown-host-0",
            "1-pre_oom-host-0\0",
            "1\0-pre_oom-host-0",
            "1-pre_oom-host-99999999999999999999999",
            "1-pre_oom-host-0/../../x",
            too_long.as_str(),
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file_and_the_report_is_served_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 10, 1 << 20).unwrap();
        let id = format!("3-pre_oom-{A}-0");
        // A non-empty directory where the report goes: the rename fails.
        std::fs::create_dir_all(dir.path().join(format!("{id}.json/x"))).unwrap();
        let saved = store.write(&report(&id, 10)).unwrap();
        let Saved::Memory { reason } = saved else { panic!("{saved:?}") };
        assert!(reason.contains("cannot write to"), "{reason}");
        assert!(!dir.path().join(format!(".tmp-{id}")).exists(), "the temp file is removed");
        let listed = store.list();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].id.as_str(), listed[0].not_persisted_reason.as_str()), (id.as_str(), reason.as_str()));
        assert_eq!(store.get(&id).unwrap().not_persisted_reason, reason);
    }

    #[test]
    fn the_memory_list_is_bounded_oldest_dropped_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100, 1 << 30).unwrap();
        for i in 0..MEMORY_REPORTS + 3 {
            let s = store.keep_in_memory(&report(&format!("{}-pre_oom-host-{i}", 10 + i), 1), 100, "full".into());
            assert!(matches!(s, Ok(Saved::Memory { .. })));
        }
        let kept = ids(&store);
        assert_eq!(kept.len(), MEMORY_REPORTS);
        assert_eq!(kept.last().unwrap(), "13-pre_oom-host-3", "the three oldest dropped");
        // By bytes: two of 3 MiB do not fit in 4 MiB; one bigger than that is lost.
        let three = 3 << 20;
        store.keep_in_memory(&report("100-pre_oom-host-0", 1), three, "full".into()).unwrap();
        store.keep_in_memory(&report("101-pre_oom-host-0", 1), three, "full".into()).unwrap();
        assert_eq!(ids(&store), ["101-pre_oom-host-0"]);
        let lost = store.keep_in_memory(&report("102-pre_oom-host-0", 1), MEMORY_BYTES + 1, "full".into());
        assert!(matches!(lost, Err(WriteError::Lost { .. })), "{lost:?}");
    }

    #[test]
    fn symlinks_fifos_and_hard_links_are_never_followed_or_served() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.json");
        std::fs::write(&secret, serde_json::to_vec(&report("1-pre_oom-host-0", 1)).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 10, 1 << 20).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("1-pre_oom-host-0.json")).unwrap();
        let fifo = dir.path().join("2-pre_oom-host-0.json");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        std::fs::hard_link(&secret, dir.path().join("3-pre_oom-host-0.json")).unwrap();
        store.write(&report("4-pre_oom-host-0", 1)).unwrap();
        assert_eq!(ids(&store), ["4-pre_oom-host-0"], "only the regular file");
        for id in ["1-pre_oom-host-0", "2-pre_oom-host-0", "3-pre_oom-host-0"] {
            assert!(matches!(store.get(id), Err(AgentError::ReportNotFound { .. })), "{id}");
        }
        // A planted temp file that is a symlink is replaced, not written through.
        let id = "5-pre_oom-host-0";
        std::os::unix::fs::symlink(&secret, dir.path().join(format!(".tmp-{id}"))).unwrap();
        assert!(matches!(store.write(&report(id, 1)), Ok(Saved::Disk(_))));
        let secret_now: v1::Report = serde_json::from_slice(&std::fs::read(&secret).unwrap()).unwrap();
        assert_eq!(secret_now.id, "1-pre_oom-host-0", "the file outside is untouched");
    }
}
