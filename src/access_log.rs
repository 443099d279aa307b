//! The access log (`--access-log PATH|-`): one line per request, and one per WebSocket tunnel when
//! it closes, in the one layout [`format_line`] writes and README.md "Access log" documents.
//!
//! A shard never waits for the disk. It formats its lines into a buffer of its own
//! ([`ShardLog`], reused, so a line allocates nothing) and hands the buffer over once it holds
//! [`FLUSH_BYTES`], or every [`FLUSH_EVERY`], to one writer thread through a bounded channel,
//! without blocking: when the channel is full (a slow disk, a pipe nobody reads) the buffer's lines
//! are dropped and counted, and so are the lines the writer fails to write (a full disk). The
//! writer says so on stderr, at most once per [`ERROR_EVERY`]; the counts are in `/metrics`.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError};
use crate::h1::Version;
use crate::log::RateLimit;
use crate::metrics::ShardStats;
use crate::route::{Decision, find_wtd};

/// A shard hands its buffer over once it holds this much.
pub const FLUSH_BYTES: usize = 32 * 1024;
/// … or this long after its first line, whichever comes first.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffers waiting for the writer, at most (about 2 MiB): what a disk may fall behind by before
/// lines are dropped.
const QUEUE: usize = 64;
/// Emptied buffers kept for the shards to reuse.
const SPARES: usize = 16;
/// A shard's flusher task ends after this many quiet [`FLUSH_EVERY`]s; the next line starts it.
const IDLE_TICKS: u32 = 50;
/// The writer's failures go to stderr at most once per this.
pub const ERROR_EVERY: Duration = Duration::from_secs(10);
/// How often an idle writer looks for a reopen request.
const REOPEN_POLL: Duration = Duration::from_secs(1);
/// How long stopping waits for the writer to write what it has: a writer stuck on a pipe nobody
/// reads must not hold up the exit.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);
/// Access logs hold session ids: readable by the owner's group, not by everyone.
const FILE_MODE: u32 = 0o640;

/// Why lines were lost, in the order of `ShardStats::access_log_dropped`.
pub const DROP_REASONS: [&str; 2] = ["queue_full", "write_error"];
const QUEUE_FULL: usize = 0;
const WRITE_ERROR: usize = 1;

/// What kind of line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request and its response (or the answer of our own).
    Http,
    /// A WebSocket tunnel, logged when it closes.
    Tunnel,
}

/// How the backend of a request's last try was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The owner of the request's `wtd` session.
    Affinity,
    /// No session (or nobody's): weighted round-robin.
    RoundRobin,
    /// The session's owner was down, in maintenance, or failed to connect: another backend.
    Redispatch,
    /// Sent again after a backend connection closed before answering.
    Resend,
    /// No backend took new sessions; this one was up but draining (or weighted 0).
    Draining,
    /// No backend was up; this one was marked down and tried all the same (Envoy's "panic").
    Panic,
    /// No backend.
    None,
}

impl Route {
    /// The route of a try chosen by `decision`, after `resends` earlier tries.
    pub fn of(decision: Decision, resends: u32) -> Route {
        match decision {
            _ if resends > 0 => Route::Resend,
            Decision::Owner(_) | Decision::OwnerRetry(_) => Route::Affinity,
            Decision::Balanced(_) => Route::RoundRobin,
            Decision::Redispatched { .. } => Route::Redispatch,
            Decision::Fallback { down: false, .. } => Route::Draining,
            Decision::Fallback { down: true, .. } => Route::Panic,
            Decision::NoBackend => Route::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Affinity => "affinity",
            Route::RoundRobin => "roundrobin",
            Route::Redispatch => "redispatch",
            Route::Resend => "resend",
            Route::Draining => "draining",
            Route::Panic => "panic",
            Route::None => "-",
        }
    }
}

/// A request line as the client sent it; the log keeps only its path and `wtd`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: Version,
}

/// One line's values; `None` is written `-`.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub kind: Kind,
    /// The client's address (from the PROXY protocol header where the listener takes one).
    pub client: Option<SocketAddr>,
    /// The prefix of the backend of the last try.
    pub backend: Option<&'a str>,
    pub route: Route,
    /// When the request head had been read, or the tunnel opened: the durations start here.
    pub started: Instant,
    /// When the last try's backend connection was ready.
    pub connected: Option<Instant>,
    /// When the first response byte came from the backend.
    pub first_byte: Option<Instant>,
    /// The status sent to the client: the backend's, or one of our own.
    pub status: Option<u16>,
    /// Bytes read from the client (head and body; a tunnel's client-to-backend bytes).
    pub bytes_in: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
    /// What ended it early: a `ProxyError` or `Rejection` name.
    pub error: Option<&'static str>,
    /// `None` for a request whose head was refused.
    pub request: Option<RequestLine<'a>>,
}

/// Opens the log `cfg` asks for, if any, and starts its writer.
pub fn open(cfg: &Config) -> Result<Option<AccessLog>, ConfigError> {
    let Some(spec) = cfg.access_log.as_deref() else {
        return Ok(None);
    };
    AccessLog::open(spec)
        .map(Some)
        .map_err(|e| ConfigError::Invalid(format!("--access-log {spec}: cannot open it: {e}")))
}

/// The writer thread, owned by the engine; dropping it (after the shards) lets the writer finish.
pub struct AccessLog {
    sink: Arc<Sink>,
    shared: Arc<WriterShared>,
    /// Closed when the writer thread ends. (In a mutex so that the engine stays `Sync`.)
    done: Mutex<Receiver<()>>,
}

/// What the shards hand their buffers to.
pub struct Sink {
    tx: SyncSender<Msg>,
    shared: Arc<WriterShared>,
}

/// Asks the writer to reopen its file (after log rotation); for a signal handler's thread.
#[derive(Clone)]
pub struct Reopen(Arc<WriterShared>);

impl Reopen {
    /// The writer reopens the file before its next write, or within a second when idle.
    pub fn reopen(&self) {
        self.0.reopen.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct WriterShared {
    reopen: AtomicBool,
    spares: Mutex<Vec<Vec<u8>>>,
}

impl WriterShared {
    fn spare(&self) -> Vec<u8> {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        spares
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FLUSH_BYTES + FLUSH_BYTES / 4))
    }

    fn give(&self, mut buf: Vec<u8>) {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        // A buffer that grew around a huge line is not worth keeping.
        if spares.len() < SPARES && buf.capacity() <= 4 * FLUSH_BYTES {
            buf.clear();
            spares.push(buf);
        }
    }
}

enum Msg {
    Lines(Batch),
    /// Every shard has stopped: end once what came before is written.
    Close,
}

/// Lines of one shard on their way to the writer.
struct Batch {
    buf: Vec<u8>,
    lines: u64,
    /// Where lost lines are counted: the stats of the shard they came from.
    stats: Arc<ShardStats>,
}

impl AccessLog {
    /// Opens `spec` (a file, appended to and created if missing, or `-` for stdout) and starts the
    /// writer thread.
    pub fn open(spec: &str) -> io::Result<AccessLog> {
        let target = Target::parse(spec);
        let out = target.open()?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let shared = Arc::new(WriterShared::default());
        let (done_tx, done) = mpsc::channel::<()>();
        let writer = Writer {
            target,
            out,
            rx,
            shared: shared.clone(),
            lost: 0,
            partial: false,
            errors: RateLimit::new(1, ERROR_EVERY),
        };
        std::thread::Builder::new()
            .name("wtgate-access-log".into())
            .spawn(move || {
                writer.run();
                drop(done_tx);
            })?;
        let sink = Arc::new(Sink {
            tx,
            shared: shared.clone(),
        });
        Ok(AccessLog {
            sink,
            shared,
            done: Mutex::new(done),
        })
    }

    /// For a shard's [`ShardLog`].
    pub fn sink(&self) -> Arc<Sink> {
        self.sink.clone()
    }

    pub fn reopener(&self) -> Reopen {
        Reopen(self.shared.clone())
    }
}

impl Drop for AccessLog {
    /// The shards have stopped and handed their last lines over: the writer writes what is
    /// queued, then ends. Told so by a message rather than by the channel closing, since a
    /// shard's task may outlive its shard for a while with a sender in hand.
    fn drop(&mut self) {
        let deadline = Instant::now() + CLOSE_LIMIT;
        while let Err(TrySendError::Full(_)) = self.sink.tx.try_send(Msg::Close) {
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Where the lines go.
enum Target {
    Stdout,
    File(std::path::PathBuf),
}

impl Target {
    fn parse(spec: &str) -> Target {
        match spec {
            "-" => Target::Stdout,
            path => Target::File(path.into()),
        }
    }

    fn open(&self) -> io::Result<Output> {
        let Target::File(path) = self else {
            return Ok(Output::Stdout(io::stdout()));
        };
        // Non-blocking, a FIFO without a reader fails at once (ENXIO) rather than blocking the
        // open; the writes then block, as they should on the writer's own thread.
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        set_blocking(&file)?;
        Ok(Output::File(file))
    }

    fn name(&self) -> String {
        match self {
            Target::Stdout => "stdout".into(),
            Target::File(path) => path.display().to_string(),
        }
    }
}

fn set_blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(2) F_GETFL on a descriptor `file` owns; it touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above, F_SETFL with flags it just returned.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

enum Output {
    Stdout(io::Stdout),
    File(File),
}

impl Output {
    /// Writes `buf`, returning how much went out before an error.
    fn write(&mut self, buf: &[u8]) -> (usize, io::Result<()>) {
        let out: &mut dyn Write = match self {
            Output::Stdout(s) => s,
            Output::File(f) => f,
        };
        let mut written = 0;
        while written < buf.len() {
            match out.write(&buf[written..]) {
                Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (written, Err(e)),
            }
        }
        (written, out.flush())
    }
}

/// The writer thread's state.
struct Writer {
    target: Target,
    out: Output,
    rx: Receiver<Msg>,
    shared: Arc<WriterShared>,
    /// Lines lost to write errors since the last good write.
    lost: u64,
    /// A failed write left a line cut short: the next write starts on a new line.
    partial: bool,
    errors: RateLimit,
}

impl Writer {
    fn run(mut self) {
        loop {
            match self.rx.recv_timeout(REOPEN_POLL) {
                Ok(Msg::Lines(batch)) => {
                    self.reopen_if_asked();
                    self.write(batch);
                }
                Err(RecvTimeoutError::Timeout) => self.reopen_if_asked(),
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn write(&mut self, batch: Batch) {
        let (written, result) = self.write_lines(&batch.buf);
        match result {
            Ok(()) => self.recovered(),
            Err(e) => {
                let done = &batch.buf[..written];
                let whole = done.iter().filter(|&&b| b == b'\n').count() as u64;
                let lost = batch.lines.saturating_sub(whole);
                let dropped = &batch.stats.access_log_dropped[WRITE_ERROR];
                dropped.fetch_add(lost, Ordering::Relaxed);
                self.partial |= done.last().is_some_and(|&b| b != b'\n');
                self.failed(&e, lost);
            }
        }
        self.shared.give(batch.buf);
    }

    /// Writes whole lines: after a failed write cut one short, a newline ends it first.
    fn write_lines(&mut self, buf: &[u8]) -> (usize, io::Result<()>) {
        if self.partial {
            if let (_, Err(e)) = self.out.write(b"\n") {
                return (0, Err(e));
            }
            self.partial = false;
        }
        self.out.write(buf)
    }

    fn failed(&mut self, e: &io::Error, lost: u64) {
        self.lost += lost;
        if self.errors.allow(Instant::now()).is_some() {
            eprintln!(
                "wtgate: access log {}: {e}: lines are dropped until a write succeeds ({} so far)",
                self.target.name(),
                self.lost
            );
        }
    }

    fn recovered(&mut self) {
        if self.lost > 0 {
            eprintln!(
                "wtgate: access log {}: writing again, {} lines were lost",
                self.target.name(),
                self.lost
            );
            self.lost = 0;
            self.errors = RateLimit::new(1, ERROR_EVERY);
        }
    }

    fn reopen_if_asked(&mut self) {
        if !self.shared.reopen.swap(false, Ordering::Relaxed) {
            return;
        }
        match self.target.open() {
            Ok(out) => {
                self.out = out;
                self.partial = false;
                eprintln!("wtgate: access log {} reopened", self.target.name());
            }
            Err(e) => eprintln!(
                "wtgate: access log {}: cannot reopen it: {e}; still writing to the one open",
                self.target.name()
            ),
        }
    }
}

/// One shard's side of the access log: off, or its buffer.
pub struct ShardLog(Option<Rc<Buffer>>);

struct Buffer {
    shard: usize,
    sink: Arc<Sink>,
    stats: Arc<ShardStats>,
    buf: RefCell<Vec<u8>>,
    /// Lines in `buf`.
    lines: Cell<u64>,
    /// Whether a flusher task runs.
    flusher: Cell<bool>,
    clock: RefCell<DateCache>,
}

impl ShardLog {
    /// `sink`: the engine's log, or `None` when it is off.
    pub fn new(shard: usize, sink: Option<Arc<Sink>>, stats: Arc<ShardStats>) -> ShardLog {
        ShardLog(sink.map(|sink| {
            Rc::new(Buffer {
                shard,
                buf: RefCell::new(sink.shared.spare()),
                sink,
                stats,
                lines: Cell::new(0),
                flusher: Cell::new(false),
                clock: RefCell::new(DateCache::default()),
            })
        }))
    }

    /// Whether lines are logged: what only the log needs is measured only then.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Adds a line; it ends now.
    pub fn write(&self, line: &Line) {
        let Some(b) = &self.0 else { return };
        let now = Instant::now();
        let wall = SystemTime::now()
            .checked_sub(now.saturating_duration_since(line.started))
            .unwrap_or(UNIX_EPOCH);
        let len = {
            let mut buf = b.buf.borrow_mut();
            format_line(
                &mut buf,
                &mut b.clock.borrow_mut(),
                wall,
                b.shard,
                line,
                now,
            );
            buf.len()
        };
        b.lines.set(b.lines.get() + 1);
        ShardStats::count(&b.stats.access_log_lines);
        if len >= FLUSH_BYTES {
            b.flush();
        } else if !b.flusher.replace(true) {
            crate::net::spawn(flusher(Rc::downgrade(b)));
        }
    }

    /// Hands what is buffered to the writer now (the shard is stopping).
    pub fn flush(&self) {
        if let Some(b) = &self.0 {
            b.flush();
        }
    }
}

/// Hands the buffer over every [`FLUSH_EVERY`] while lines come; ends when they stop, or with
/// the shard (it holds no strong reference, so the shard's end drops the buffer, flushing it).
async fn flusher(buffer: Weak<Buffer>) {
    let mut quiet = 0;
    while quiet < IDLE_TICKS {
        crate::net::sleep(FLUSH_EVERY).await;
        let Some(b) = buffer.upgrade() else { return };
        if b.lines.get() == 0 {
            quiet += 1;
        } else {
            quiet = 0;
            b.flush();
        }
    }
    if let Some(b) = buffer.upgrade() {
        b.flusher.set(false);
    }
}

impl Buffer {
    fn flush(&self) {
        let lines = self.lines.replace(0);
        if lines == 0 {
            return;
        }
        let mut buf = self.buf.borrow_mut();
        let batch = Batch {
            buf: std::mem::take(&mut *buf),
            lines,
            stats: self.stats.clone(),
        };
        match self.sink.tx.try_send(Msg::Lines(batch)) {
            Ok(()) => *buf = self.sink.shared.spare(),
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                let Msg::Lines(batch) = msg else { return };
                // The writer is behind (or gone): these lines are lost, the buffer is reused.
                let dropped = &self.stats.access_log_dropped[QUEUE_FULL];
                dropped.fetch_add(lines, Ordering::Relaxed);
                *buf = batch.buf;
                buf.clear();
            }
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Writes one line, as README.md "Access log" documents it:
///
/// `TIME CLIENT SHARD KIND BACKEND ROUTE TC TR TT STATUS BYTES_IN BYTES_OUT ERROR "REQUEST"`
///
/// TIME is when the request head had been read (a tunnel: when it opened), in UTC with
/// milliseconds; TC, TR, TT are the microseconds from then to the backend connection being
/// ready, to the first response byte, and to the end (a tunnel: its duration).
pub fn format_line(
    out: &mut Vec<u8>,
    date: &mut DateCache,
    wall: SystemTime,
    shard: usize,
    line: &Line,
    now: Instant,
) {
    date.write(out, wall);
    match line.client {
        Some(a) => {
            let _ = write!(out, " {}", SocketAddr::new(a.ip().to_canonical(), a.port()));
        }
        None => out.extend_from_slice(b" -"),
    }
    let kind = match line.kind {
        Kind::Http => "http",
        Kind::Tunnel => "tunnel",
    };
    let _ = write!(out, " {shard} {kind} ");
    escaped(out, line.backend.unwrap_or("-").as_bytes());
    let _ = write!(out, " {} ", line.route.as_str());
    let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(line.started));
    for d in [
        since(line.connected),
        since(line.first_byte),
        since(Some(now)),
    ] {
        optional(out, d.map(|d| d.as_micros()));
        out.push(b' ');
    }
    optional(out, line.status);
    let _ = write!(out, " {} {} ", line.bytes_in, line.bytes_out);
    out.extend_from_slice(line.error.unwrap_or("-").as_bytes());
    out.extend_from_slice(b" \"");
    match &line.request {
        Some(r) => request_line(out, r),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\"\n");
}

fn optional(out: &mut Vec<u8>, v: Option<impl std::fmt::Display>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push(b'-'),
    }
}

/// `METHOD PATH[?wtd=ID] VERSION`: of the query, only the `wtd` parameter is kept, so that tokens
/// in the others never reach the log; the fragment goes too.
fn request_line(out: &mut Vec<u8>, r: &RequestLine) {
    escaped(out, r.method);
    out.push(b' ');
    let path_end = r.target.iter().position(|&b| b == b'?' || b == b'#');
    escaped(out, &r.target[..path_end.unwrap_or(r.target.len())]);
    if let Some(wtd) = find_wtd(r.target) {
        out.extend_from_slice(b"?wtd=");
        escaped(out, wtd);
    }
    out.push(b' ');
    out.extend_from_slice(r.version.as_str().as_bytes());
}

/// Printable ASCII as it is, but `"` and `\`, which would end the quoted field or be read as an
/// escape, and anything else as `\xHH`: a line stays one line of fields whatever a client sent.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// `2025-01-31T12:34:56` of the latest second written, so that the date is worked out once a
/// second rather than once a line.
#[derive(Default)]
pub struct DateCache {
    second: Option<u64>,
    text: [u8; 19],
}

impl DateCache {
    /// Writes `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn write(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        if self.second != Some(secs) {
            let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
            let s = secs % 86_400;
            let mut text = &mut self.text[..];
            let (h, mi, s) = (s / 3600, s / 60 % 60, s % 60);
            let _ = write!(text, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            self.second = Some(secs);
        }
        out.extend_from_slice(&self.text);
        let _ = write!(out, ".{:03}Z", since.subsec_millis());
    }
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(secs: u64, ms: u64) -> String {
        let mut out = Vec::new();
        let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms);
        DateCache::default().write(&mut out, t);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn dates_are_utc_with_milliseconds() {
        assert_eq!(date(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(date(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(date(1_700_000_000, 999), "2023-11-14T22:13:20.999Z");
        assert_eq!(date(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
        // The cached second is redrawn when the second changes, and only the millis otherwise.
        let mut cache = DateCache::default();
        let mut out = Vec::new();
        for (s, ms) in [(86_399, 1), (86_399, 500), (86_400, 2)] {
            cache.write(&mut out, UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T23:59:59.001Z 1970-01-01T23:59:59.500Z 1970-01-02T00:00:00.002Z "
        );
    }

    fn line<'a>(t0: Instant, target: &'a [u8]) -> Line<'a> {
        Line {
            kind: Kind::Http,
            client: Some("[::ffff:192.0.2.7]:51234".parse().unwrap()),
            backend: Some("wt1"),
            route: Route::Affinity,
            started: t0,
            connected: Some(t0 + Duration::from_micros(120)),
            first_byte: Some(t0 + Duration::from_micros(450)),
            status: Some(200),
            bytes_in: 312,
            bytes_out: 5120,
            error: None,
            request: Some(RequestLine {
                method: b"GET",
                target,
                version: Version::Http11,
            }),
        }
    }

    fn format(l: &Line, now: Instant) -> String {
        let mut out = Vec::new();
        let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        format_line(&mut out, &mut DateCache::default(), wall, 3, l, now);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_request_line_keeps_the_path_and_wtd_only() {
        let t0 = Instant::now();
        let end = t0 + Duration::from_micros(1800);
        let l = line(t0, b"/app/x?token=s3cret&wtd=wt1abc&request=style#frag");
        assert_eq!(
            format(&l, end),
            "2023-11-14T22:13:20.123Z 192.0.2.7:51234 3 http wt1 affinity 120 450 1800 200 312 \
             5120 - \"GET /app/x?wtd=wt1abc HTTP/1.1\"\n"
        );
        let l = line(t0, b"/?a=1&b=2");
        assert!(format(&l, end).ends_with(" \"GET / HTTP/1.1\"\n"));
        let l = line(t0, b"/p\"q\\r?wtd=x\"y");
        assert!(
            format(&l, end).ends_with(" \"GET /p\\x22q\\x5cr?wtd=x\\x22y HTTP/1.1\"\n"),
            "{}",
            format(&l, end)
        );
    }

    #[test]
    fn absent_values_are_dashes() {
        let t0 = Instant::now();
        let l = Line {
            kind: Kind::Tunnel,
            client: None,
            backend: None,
            route: Route::None,
            connected: None,
            first_byte: None,
            status: None,
            error: Some("client_gone"),
            request: None,
            ..line(t0, b"/")
        };
        assert_eq!(
            format(&l, t0 + Duration::from_secs(2)),
            "2023-11-14T22:13:20.123Z - 3 tunnel - - - - 2000000 - 312 5120 client_gone \"-\"\n"
        );
    }

    #[test]
    fn routes_name_the_last_decision_and_a_resend_wins() {
        let cases = [
            (Decision::Owner(0), 0, "affinity"),
            (Decision::Balanced(1), 0, "roundrobin"),
            (
                Decision::Redispatched {
                    owner: 0,
                    to: 1,
                    why: crate::route::Moved::Down,
                },
                0,
                "redispatch",
            ),
            (Decision::Owner(0), 1, "resend"),
            (Decision::NoBackend, 0, "-"),
        ];
        for (d, resends, want) in cases {
            assert_eq!(Route::of(d, resends).as_str(), want, "{d:?}");
        }
    }
}
