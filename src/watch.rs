//! Following the config file (`--watch-config`, `watch = true`): a poll of its metadata once a
//! second, on a thread of its own, that reports a change once it has settled.
//!
//! A poll rather than inotify: one `stat(2)` a second costs nothing measurable, and it follows
//! symbolic links by construction. A Kubernetes ConfigMap volume updates by writing a new
//! directory and renaming a symlink `..data` over the old one, with the file itself a symlink
//! `wtgate.toml -> ..data/wtgate.toml`; inotify on the path would watch the old inode, and
//! following such swaps means watching every directory on the way and re-arming after each. A
//! stat of the path follows every link and sees the new file's inode. It works the same on
//! filesystems where inotify sees no change made elsewhere (NFS, some overlay setups).
//!
//! What is compared is the file's device, inode, size and modification time ([`Signature`]). A
//! new signature is acted on only once a second poll sees it unchanged, so that a file written
//! in place (truncated, then written) is read whole, not half-written: a change takes effect 1 to
//! 2 poll intervals after it was made.

use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the poll compares: the file the path leads to (links followed), its size and its
/// modification time to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Signature {
    /// The signature of the file at `path`, following symbolic links.
    pub fn of(path: &Path) -> io::Result<Signature> {
        let m = std::fs::metadata(path)?;
        Ok(Signature {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// What one poll found worth saying.
#[derive(Debug)]
pub enum Event {
    /// The file changed, and has stayed so for a poll: read it again.
    Changed,
    /// The path cannot be read now (said once until it can again); nothing is reloaded.
    Unreadable(io::Error),
}

/// The poll's state: what was last acted on, and a change seen but not yet settled.
#[derive(Debug)]
pub struct Follower {
    /// The signature last put in force or refused (`None`: the file was missing then).
    acted: Option<Signature>,
    /// A signature other than `acted`, seen at the last poll.
    pending: Option<Signature>,
    /// Whether the path could not be read at the last poll.
    unreadable: bool,
}

impl Follower {
    /// Starts from `start`, the file's signature taken before it was read for the config in
    /// force (so that a change made while it was read is seen).
    pub fn new(start: Option<Signature>) -> Follower {
        Follower {
            acted: start,
            pending: None,
            unreadable: false,
        }
    }

    /// One poll's finding, `now`; what to do about it.
    pub fn step(&mut self, now: io::Result<Signature>) -> Option<Event> {
        let sig = match now {
            Ok(sig) => sig,
            Err(e) => {
                self.pending = None;
                let first = !self.unreadable;
                self.unreadable = true;
                return first.then_some(Event::Unreadable(e));
            }
        };
        self.unreadable = false;
        if self.acted == Some(sig) {
            self.pending = None;
            None
        } else if self.pending == Some(sig) {
            // Settled: acted on once, whether the reload is put in force or refused; the next
            // change gets the next try.
            (self.acted, self.pending) = (Some(sig), None);
            Some(Event::Changed)
        } else {
            self.pending = Some(sig);
            None
        }
    }
}

/// Polls `path` every `every` on a thread of its own (named `wtgate-watch`), starting from
/// `start`, and hands each [`Event`] to `on_event`, until it answers `Break` (wtgate's never
/// does: it follows the file for as long as it runs).
pub fn spawn(
    path: PathBuf,
    every: Duration,
    start: Option<Signature>,
    mut on_event: impl FnMut(Event) -> ControlFlow<()> + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wtgate-watch".into())
        .spawn(move || {
            let mut follower = Follower::new(start);
            loop {
                std::thread::sleep(every);
                let Some(event) = follower.step(Signature::of(&path)) else {
                    continue;
                };
                if on_event(event).is_break() {
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("wtgate-watch-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Polls until the follower says something (at most `polls` times).
    fn polls(f: &mut Follower, path: &Path, polls: usize) -> Option<Event> {
        (0..polls).find_map(|_| f.step(Signature::of(path)))
    }

    /// Kubernetes' atomic writer: `wtgate.toml -> ..data/wtgate.toml`, `..data -> ..TIMESTAMP`;
    /// an update writes a new timestamped directory and renames a new `..data` link over the old
    /// one. Even with the same size and modification time, the new file is another inode.
    #[test]
    fn a_configmap_symlink_swap_is_seen() {
        let dir = Dir::new("configmap");
        let version = |name: &str, text: &str| {
            let d = dir.0.join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("wtgate.toml"), text).unwrap();
            let f = std::fs::File::options()
                .write(true)
                .open(d.join("wtgate.toml"))
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
                .unwrap();
        };
        version("..2026_01_01_00_00_00.1", "threads = 1\n");
        symlink("..2026_01_01_00_00_00.1", dir.0.join("..data")).unwrap();
        let path = dir.0.join("wtgate.toml");
        symlink("..data/wtgate.toml", &path).unwrap();
        let mut f = Follower::new(Some(Signature::of(&path).unwrap()));
        assert!(polls(&mut f, &path, 3).is_none(), "nothing changed");

        version("..2026_01_01_00_05_00.2", "threads = 2\n");
        symlink("..2026_01_01_00_05_00.2", dir.0.join("..data_tmp")).unwrap();
        std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
        assert!(
            f.step(Signature::of(&path)).is_none(),
            "a change waits one poll"
        );
        assert!(matches!(f.step(Signature::of(&path)), Some(Event::Changed)));
        assert!(polls(&mut f, &path, 3).is_none(), "acted on once");
    }

    /// A file rewritten in place is acted on once it stops changing; a file that vanishes is said
    /// once, and its return with other contents is a change.
    #[test]
    fn changes_settle_before_they_count_and_a_missing_file_is_said_once() {
        let dir = Dir::new("in-place");
        let path = dir.0.join("wtgate.toml");
        std::fs::write(&path, "threads = 1\n").unwrap();
        let mut f = Follower::new(Some(Signature::of(&path).unwrap()));
        std::fs::write(&path, "").unwrap();
        assert!(f.step(Signature::of(&path)).is_none());
        std::fs::write(&path, "threads = 2\npin = false\n").unwrap();
        assert!(f.step(Signature::of(&path)).is_none(), "still changing");
        assert!(matches!(f.step(Signature::of(&path)), Some(Event::Changed)));

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            f.step(Signature::of(&path)),
            Some(Event::Unreadable(_))
        ));
        assert!(polls(&mut f, &path, 3).is_none(), "said once");
        std::fs::write(&path, "threads = 3\n").unwrap();
        assert!(matches!(polls(&mut f, &path, 2), Some(Event::Changed)));
    }

    /// The thread reports a change made after it started.
    #[test]
    fn the_thread_reports_a_change() {
        let dir = Dir::new("thread");
        let path = dir.0.join("wtgate.toml");
        std::fs::write(&path, "threads = 1\n").unwrap();
        let start = Signature::of(&path).ok();
        let (tx, rx) = std::sync::mpsc::channel();
        let watching = spawn(path.clone(), Duration::from_millis(10), start, move |e| {
            let _ = tx.send(format!("{e:?}"));
            ControlFlow::Break(())
        })
        .unwrap();
        std::fs::write(&path, "threads = 22\n").unwrap();
        let event = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(event, "Changed");
        watching.join().unwrap();
    }
}
