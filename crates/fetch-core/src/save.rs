//! Saved pages: with [`Options::save_dir`](crate::Options::save_dir) set,
//! the CPU stage writes each page's body to a file under that directory, and
//! the page's record says which ([`Page::saved`](crate::Page::saved)). Only
//! pages are saved: a non-2xx answer's body is never read, so there is
//! nothing to save.
//!
//! **The name** is the SHA-256 of the final URL (after redirects) in hex,
//! in a directory named after its first two hex digits, with an extension
//! from the `Content-Type` ([`relative_path`]):
//! `2a/2a1b4024…a067.html` for `http://example.com/`. It depends on where the
//! page came from and nothing else: not on the order URLs finish, nor on a
//! run's numbering (a resumed run numbers its URLs differently), and
//! `printf %s URL | sha256sum` finds a URL's file. The two-digit directories
//! keep each one to about 4,000 files for a million pages, where one flat
//! directory makes `ls` and backups crawl (git stores its objects the same
//! way, and so does Scrapy's HTTP cache). URLs that end at the same final
//! URL share one file; the last write wins.
//!
//! **The write is atomic**: the body goes to a new file in `DIR/.tmp/`, which
//! is then renamed into place, and the record is written only after that.
//! A killed run leaves at most a temp file behind, never half a page under a
//! name that a record points to; [`prepare`] removes such leftovers when the
//! next run starts. Nothing is `fsync`ed: the promise is against a process
//! that dies (a crash, `kill -9`), not against a power cut, as for
//! `fetchlab run`'s own output; an `fsync` per page would cost a disk flush
//! per page.
//!
//! **A failure** (a full disk, no permission, a file where a directory must
//! go) is that URL's record: [`ErrorKind::Save`], its message naming the
//! file and the cause, and the run goes on.
//!
//! The write is part of the CPU stage ([`crate::parse::page`]), which every
//! model runs off its event loop, so no async runtime's thread ever waits on
//! the disk: saving turns the CPU stage on
//! ([`Options::has_cpu_stage`](crate::Options::has_cpu_stage)). It holds one
//! of the per-core slots while it writes, which bounds the writes at once
//! by the cores too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ErrorKind, FetchError};

/// Where temp files are written before they are renamed into place, inside
/// the save directory (the same file system, so the rename is atomic).
pub const TMP_DIR: &str = ".tmp";

/// Numbers this process's temp files; with the process id in the name, two
/// writes never share a temp file, even across the processes model's workers.
static TEMP_FILES: AtomicU64 = AtomicU64::new(0);

/// The file a page from `final_url` is saved to, relative to the save
/// directory, with `/` between its parts: `2a/2a1b…a067.html`.
pub fn relative_path(final_url: &str, content_type: Option<&str>) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, final_url.as_bytes());
    let mut hex = String::with_capacity(64);
    for &byte in digest.as_ref() {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    format!("{}/{hex}.{}", &hex[..2], extension(content_type))
}

/// The file extension for a `Content-Type` (its media type, parameters and
/// case ignored): `html`, `txt`, `json`, `png`… and `bin` for a type not in
/// the table or no header at all. A convenience for whoever opens the file;
/// the record's `content_type` is what the server said.
pub fn extension(content_type: Option<&str>) -> &'static str {
    let Some(content_type) = content_type else {
        return "bin";
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let known = [
        ("text/html", "html"),
        ("application/xhtml+xml", "xhtml"),
        ("text/plain", "txt"),
        ("text/css", "css"),
        ("text/csv", "csv"),
        ("text/markdown", "md"),
        ("text/javascript", "js"),
        ("application/javascript", "js"),
        ("application/json", "json"),
        ("application/xml", "xml"),
        ("text/xml", "xml"),
        ("application/pdf", "pdf"),
        ("application/zip", "zip"),
        ("application/gzip", "gz"),
        ("application/wasm", "wasm"),
        ("image/png", "png"),
        ("image/jpeg", "jpg"),
        ("image/gif", "gif"),
        ("image/webp", "webp"),
        ("image/avif", "avif"),
        ("image/svg+xml", "svg"),
        ("image/x-icon", "ico"),
        ("image/vnd.microsoft.icon", "ico"),
        ("font/woff2", "woff2"),
    ];
    if let Some((_, ext)) = known.iter().find(|(t, _)| t.eq_ignore_ascii_case(essence)) {
        return ext;
    }
    // Structured syntax suffixes (RFC 6839): `application/ld+json`,
    // `application/rss+xml`.
    let suffix = |s: &str| {
        essence.len() > s.len()
            && essence.is_char_boundary(essence.len() - s.len())
            && essence[essence.len() - s.len()..].eq_ignore_ascii_case(s)
    };
    if suffix("+json") {
        "json"
    } else if suffix("+xml") {
        "xml"
    } else {
        "bin"
    }
}

/// Gets `dir` ready before a run: creates it (and its parents) if missing,
/// removes what a killed run left in its `.tmp/`, and proves that a page can
/// be written there (a probe file written as a page is, then removed).
/// Returns it as an absolute path, which stays right if the working
/// directory changes (or in a worker process). An error names the path.
///
/// Two runs must not share a save directory at once: the second one's start
/// removes the first's temp files, and the pages being written then end as
/// `save` errors (never as half a page).
pub fn prepare(dir: &Path) -> io::Result<PathBuf> {
    // (create_dir_all's own word for a file in the way is "File exists".)
    if dir.exists() && !dir.is_dir() {
        let why = format!("{}: not a directory", dir.display());
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, why));
    }
    fs::create_dir_all(dir).map_err(at(dir))?;
    let dir = fs::canonicalize(dir).map_err(at(dir))?;
    let tmp = dir.join(TMP_DIR);
    fs::create_dir_all(&tmp).map_err(at(&tmp))?;
    for entry in fs::read_dir(&tmp).map_err(at(&tmp))? {
        let path = entry.map_err(at(&tmp))?.path();
        // Only files are ever written there; anything else is not ours.
        if path.is_file() {
            fs::remove_file(&path).map_err(at(&path))?;
        }
    }
    let probe = format!(".probe-{}", std::process::id());
    write_atomically(&dir, &probe, b"")?;
    let probe = dir.join(probe);
    fs::remove_file(&probe).map_err(at(&probe))?;
    Ok(dir)
}

/// Saves one page's body under `dir` and returns its [`relative_path`]; a
/// failure is a `save` error saying which file and why.
pub(crate) fn save(
    dir: &Path,
    final_url: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<String, FetchError> {
    let relative = relative_path(final_url, content_type);
    match write_atomically(dir, &relative, body) {
        Ok(()) => Ok(relative),
        Err(e) => Err(FetchError::new(
            ErrorKind::Save,
            format!("cannot save the page: {e}"),
        )),
    }
}

/// Writes `body` to a new temp file in `dir/.tmp/` and renames it to
/// `dir/relative`, creating the directories on the way the first time they
/// are missing (one failed call then, instead of a check per page). On an
/// error the temp file is removed.
fn write_atomically(dir: &Path, relative: &str, body: &[u8]) -> io::Result<()> {
    let tmp_dir = dir.join(TMP_DIR);
    let n = TEMP_FILES.fetch_add(1, Ordering::Relaxed);
    let tmp = tmp_dir.join(format!("{}-{n}", std::process::id()));
    let mut file = match create_new(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&tmp_dir).map_err(at(&tmp_dir))?;
            create_new(&tmp)
        }
        created => created,
    }
    .map_err(at(&tmp))?;
    let target = dir.join(relative);
    let written = file.write_all(body).map_err(at(&tmp)).and_then(|()| {
        drop(file);
        rename_into(&tmp, &target)
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A file that did not exist: never someone else's temp file, half written.
fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Renames `tmp` to `target` (replacing an older copy at once, as a rename
/// does), creating `target`'s directory if that is what was missing.
fn rename_into(tmp: &Path, target: &Path) -> io::Result<()> {
    match fs::rename(tmp, target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(at(parent))?;
            }
            fs::rename(tmp, target).map_err(at(target))
        }
        renamed => renamed.map_err(at(target)),
    }
}

/// An I/O error that names the path it happened at (std's do not).
fn at(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is under `dir`, as relative paths with `/`, sorted.
    fn files(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
                    out.push(parts.join("/"));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn the_name_is_the_sha256_of_the_final_url() {
        // `printf %s URL | sha256sum` gives the same digits.
        assert_eq!(
            relative_path("", None),
            "e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.bin"
        );
        assert_eq!(
            relative_path("http://example.com/", Some("text/html; charset=utf-8")),
            "2a/2a1b402420ef46577471cdc7409b0fa2c6a204db316e59ade2d805435489a067.html"
        );
        let other = relative_path("http://example.com/?", Some("text/html"));
        assert!(!other.starts_with("2a/2a1b4024"), "{other}");
    }

    #[test]
    fn the_extension_follows_the_media_type() {
        let cases = [
            (None, "bin"),
            (Some("text/html"), "html"),
            (Some("TEXT/HTML; Charset=UTF-8"), "html"),
            (Some(" text/plain ;charset=latin1"), "txt"),
            (Some("application/json"), "json"),
            (Some("application/ld+json"), "json"),
            (Some("application/rss+xml"), "xml"),
            (Some("image/svg+xml"), "svg"),
            (Some("image/png"), "png"),
            (Some("image/jpeg"), "jpg"),
            (Some("application/octet-stream"), "bin"),
            (Some("+json"), "bin"),
            (Some(""), "bin"),
            (Some("garbage/é+xml"), "xml"),
        ];
        for (content_type, ext) in cases {
            assert_eq!(extension(content_type), ext, "{content_type:?}");
        }
    }

    #[test]
    fn a_page_is_saved_whole_and_no_temp_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let name = save(dir.path(), "http://h/a", Some("text/plain"), b"first").unwrap();
        assert_eq!(name, relative_path("http://h/a", Some("text/plain")));
        assert_eq!(fs::read(dir.path().join(&name)).unwrap(), b"first");
        // The same final URL again: the newer body replaces the older.
        save(dir.path(), "http://h/a", Some("text/plain"), b"second!").unwrap();
        assert_eq!(fs::read(dir.path().join(&name)).unwrap(), b"second!");
        let other = save(dir.path(), "http://h/b", None, b"").unwrap();
        let mut expected = vec![name, other];
        expected.sort();
        assert_eq!(files(dir.path()), expected, "no temp file left");
    }

    #[test]
    fn writes_racing_for_one_name_leave_one_whole_body() {
        let dir = tempfile::tempdir().unwrap();
        let bodies: Vec<Vec<u8>> = (1..=8).map(|n| vec![b'a' + n as u8; n * 10_000]).collect();
        std::thread::scope(|s| {
            for body in &bodies {
                s.spawn(|| save(dir.path(), "http://h/same", None, body).unwrap());
            }
        });
        let name = relative_path("http://h/same", None);
        let saved = fs::read(dir.path().join(&name)).unwrap();
        assert!(bodies.contains(&saved), "one body, whole");
        assert_eq!(files(dir.path()), [name]);
    }

    #[test]
    fn a_failed_save_is_a_save_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the page's fan-out directory must go.
        let name = relative_path("http://h/blocked", Some("text/html"));
        let blocker = dir.path().join(&name[..2]);
        fs::write(&blocker, b"in the way").unwrap();
        let error = save(dir.path(), "http://h/blocked", Some("text/html"), b"x").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Save);
        assert!(error.message().contains(&name[3..]), "{error}");
        assert_eq!(files(dir.path()), [&name[..2]], "no temp file left");

        // A save directory that is a file: not even the temp file can be made.
        let file = dir.path().join("a-file");
        fs::write(&file, b"").unwrap();
        let error = save(&file, "http://h/x", None, b"x").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Save);
        assert!(error.message().contains("a-file"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_directory_is_a_save_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).unwrap();
        // Root (CI runs as root) writes through permission bits: nothing to test.
        let privileged = File::create(dir.path().join("probe")).is_ok();
        if !privileged {
            let error = save(dir.path(), "http://h/a", None, b"x").unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Save);
            assert!(error.message().contains("Permission denied"), "{error}");
            assert!(prepare(dir.path()).is_err());
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn prepare_makes_the_directory_and_clears_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new/deeper");
        let absolute = prepare(&dir).unwrap();
        assert!(absolute.is_absolute());
        assert_eq!(absolute, fs::canonicalize(&dir).unwrap());
        assert!(files(&dir).is_empty(), "the probe is removed");

        // What a killed run left in .tmp goes; saved pages stay.
        fs::write(dir.join(TMP_DIR).join("123-4"), b"half a pa").unwrap();
        let name = save(&dir, "http://h/", None, b"page").unwrap();
        prepare(&dir).unwrap();
        assert_eq!(files(&dir), [name]);

        let file = root.path().join("a-file");
        fs::write(&file, b"").unwrap();
        for bad in [file.clone(), file.join("below")] {
            let error = prepare(&bad).unwrap_err();
            assert!(error.to_string().contains("a-file"), "{error}");
        }
    }
}
