//! The load generator: N connections on one (or a few) monoio runtimes, closed or open loop.
//!
//! Closed loop: every connection sends its next request as soon as the previous answer is in;
//! latency is measured from the actual send. Open loop (`rate`): every connection follows a
//! [`Schedule`] and latency is measured from each request's *due* time (coordinated-omission
//! correction, as wrk2 does).
//!
//! The measured window is `[warmup, warmup + duration)` on the run's clock: a request counts if it
//! is due (open loop) or sent (closed loop) inside it. Every counted request ends as `ok` or as one
//! error kind; requests still unanswered `grace` after the window are counted as timeouts and their
//! connections dropped, so `sent == ok + errors` always holds and a run always ends.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use futures_lite::future;
use hdrhistogram::Histogram;
use monoio::net::TcpStream;
use wtgate_demo::ws;

use crate::stats::{self, Counts, ErrorKind, Schedule};
use crate::timer::Timer;
use crate::tls::{ConnectError, Stream, TlsClient};
use crate::wire::{self, BodyLen, Prepared, RequestSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep-alive HTTP/1.1, one request after another on each connection.
    KeepAlive,
    /// A new TCP connection for every request (`Connection: close`).
    Connect,
    /// WebSocket echo: one upgrade per connection, then `msg_size`-byte binary messages.
    Ws,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub conns: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Stop after this many counted requests (in addition to the time limit).
    pub max_requests: Option<u64>,
    /// Open loop: total requests (messages) per second over all connections.
    pub rate: Option<f64>,
    pub mode: Mode,
    pub spec: RequestSpec,
    pub msg_size: usize,
    /// How long after the window the last answers may take before they count as timeouts.
    pub grace: Duration,
    pub threads: usize,
    /// TLS on every connection (`--tls`), with one client config for the whole run.
    pub tls: Option<TlsClient>,
}

/// What the progress line and the monitor read while the run goes on.
#[derive(Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    tickets: AtomicU64,
    /// Set when every thread has finished.
    pub done: AtomicBool,
}

pub struct LoadResult {
    pub hist: Histogram<u64>,
    pub counts: Counts,
    /// Length of the measured window actually used, in seconds.
    pub window_s: f64,
}

/// Runs the load; blocks until it is over (at most warmup + duration + grace + a little).
pub fn run(cfg: LoadConfig, t0: Instant, live: Arc<Live>) -> io::Result<LoadResult> {
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    let cfg = Arc::new(cfg);
    let mut handles = Vec::new();
    for t in 0..threads {
        let cfg = cfg.clone();
        let live = live.clone();
        // Connections are dealt out round-robin: thread t gets conns t, t+threads, ...
        let conns: Vec<usize> = (t..cfg.conns).step_by(threads).collect();
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || run_thread(cfg, t0, live, conns))?,
        );
    }
    let mut hist = stats::new_histogram();
    let mut counts = Counts::default();
    let mut last_done_ns = 0;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| io::Error::other("a load thread panicked"))??;
        hist.add(&r.hist)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        counts.merge(&r.counts);
        last_done_ns = last_done_ns.max(r.last_done_ns);
    }
    live.done.store(true, Ordering::SeqCst);
    let start = cfg.warmup.as_nanos() as u64;
    let end = start + cfg.duration.as_nanos() as u64;
    // A run stopped by --requests ends when its last answer came; a timed one at its window's end.
    let window_end = if cfg.max_requests.is_some() {
        last_done_ns.clamp(start + 1, end)
    } else {
        end
    };
    Ok(LoadResult {
        hist,
        counts,
        window_s: (window_end - start) as f64 / 1e9,
    })
}

struct ThreadResult {
    hist: Histogram<u64>,
    counts: Counts,
    last_done_ns: u64,
}

struct ThreadStats {
    hist: Histogram<u64>,
    counts: Counts,
    /// Counted requests sent and not yet answered.
    inflight: u64,
    last_done_ns: u64,
}

/// One thread's shared state; every connection task holds an `Rc` of it.
struct Ctx {
    cfg: Arc<LoadConfig>,
    t0: Instant,
    live: Arc<Live>,
    start_ns: u64,
    end_ns: u64,
    stats: RefCell<ThreadStats>,
    timer: Rc<Timer>,
}

enum Admit {
    Warmup,
    Measured,
    Stop,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Decides whether a request due (or sent) at `at_ns` is sent, and whether it counts.
    fn admit(&self, at_ns: u64) -> Admit {
        if at_ns >= self.end_ns || self.live.done.load(Ordering::Relaxed) {
            return Admit::Stop;
        }
        if at_ns < self.start_ns {
            return Admit::Warmup;
        }
        if let Some(max) = self.cfg.max_requests
            && self.live.tickets.fetch_add(1, Ordering::Relaxed) >= max
        {
            return Admit::Stop;
        }
        let mut s = self.stats.borrow_mut();
        s.counts.sent += 1;
        s.inflight += 1;
        Admit::Measured
    }

    /// Records how a counted request ended: its latency from `from_ns` if it succeeded.
    fn finish(&self, from_ns: u64, outcome: Result<u64, ErrorKind>) {
        let done = self.now_ns();
        let mut s = self.stats.borrow_mut();
        s.inflight -= 1;
        s.last_done_ns = s.last_done_ns.max(done);
        match outcome {
            Ok(bytes) => {
                s.counts.ok += 1;
                s.counts.bytes += bytes;
                s.hist.saturating_record(stats::latency_us(from_ns, done));
                self.live.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                s.counts.error(kind);
                self.live.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn connected(&self, s: &Stream) {
        let mut st = self.stats.borrow_mut();
        st.counts.connects += 1;
        st.counts.resumed += u64::from(s.resumed());
    }

    async fn sleep_until(&self, at_ns: u64) {
        self.timer.sleep_until(at_ns).await;
    }

    /// Do not spin on a refusing or broken target: 5 ms, or to the window's end.
    async fn pause_after_failure(&self) {
        let pause = self.now_ns() + 5_000_000;
        self.sleep_until(pause.min(self.end_ns)).await;
    }
}

/// Raises RLIMIT_MEMLOCK (io_uring) and RLIMIT_NOFILE as far as allowed.
pub fn raise_limits() {
    for (res, want) in [
        (libc::RLIMIT_MEMLOCK, libc::RLIM_INFINITY),
        (libc::RLIMIT_NOFILE, 1 << 20),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with valid pointers to locals.
        unsafe {
            if libc::getrlimit(res, &mut lim) != 0 {
                continue;
            }
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max.max(want),
            };
            if libc::setrlimit(res, &raised) != 0 {
                let soft = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                libc::setrlimit(res, &soft);
            }
        }
    }
}

fn run_thread(
    cfg: Arc<LoadConfig>,
    t0: Instant,
    live: Arc<Live>,
    conns: Vec<usize>,
) -> io::Result<ThreadResult> {
    let mut rt = crate::rt::runtime()?;
    rt.block_on(thread_main(cfg, t0, live, conns))
}

/// One thread's connections until they are done or the grace after the window is over.
async fn thread_main(
    cfg: Arc<LoadConfig>,
    t0: Instant,
    live: Arc<Live>,
    conns: Vec<usize>,
) -> io::Result<ThreadResult> {
    let timer = Timer::new(t0)?;
    monoio::spawn(timer.clone().drive());
    let start_ns = cfg.warmup.as_nanos() as u64;
    let end_ns = start_ns + cfg.duration.as_nanos() as u64;
    let ctx = Rc::new(Ctx {
        cfg: cfg.clone(),
        t0,
        live,
        start_ns,
        end_ns,
        stats: RefCell::new(ThreadStats {
            hist: stats::new_histogram(),
            counts: Counts::default(),
            inflight: 0,
            last_done_ns: 0,
        }),
        timer,
    });
    let tasks: Vec<_> = conns
        .iter()
        .map(|&c| {
            let ctx = ctx.clone();
            monoio::spawn(async move {
                match ctx.cfg.mode {
                    Mode::Ws => ws_conn(ctx, c).await,
                    _ => http_conn(ctx, c).await,
                }
            })
        })
        .collect();
    let deadline = end_ns + cfg.grace.as_nanos() as u64;
    let all = async {
        for t in tasks {
            t.await;
        }
        true
    };
    let finished = future::or(all, async {
        ctx.sleep_until(deadline).await;
        false
    })
    .await;
    Ok(thread_result(&ctx, finished))
}

/// The thread's counts; if its connections did not all finish, what they had in flight timed out
/// (they never run again: the runtime ends with the thread's main future).
fn thread_result(ctx: &Ctx, finished: bool) -> ThreadResult {
    let mut s = ctx.stats.borrow_mut();
    if !finished {
        let stuck = s.inflight;
        for _ in 0..stuck {
            s.counts.error(ErrorKind::Timeout);
        }
        ctx.live.errors.fetch_add(stuck, Ordering::Relaxed);
        s.inflight = 0;
    }
    ThreadResult {
        hist: std::mem::replace(&mut s.hist, stats::new_histogram()),
        counts: std::mem::take(&mut s.counts),
        last_done_ns: s.last_done_ns,
    }
}

/// Per-connection open-loop schedule, if the run has a rate.
fn schedule_for(ctx: &Ctx, conn: usize) -> Option<Schedule> {
    let rate = ctx.cfg.rate?;
    let conns = ctx.cfg.conns.max(1);
    let per_conn = rate / conns as f64;
    let s = Schedule::new(0, per_conn, 0);
    let phase = stats::phase_ns(conn, conns, s.interval_ns());
    Some(Schedule::new(0, per_conn, phase))
}

/// Picks the next request time: due time (open loop, after sleeping until then) or now.
async fn next_slot(ctx: &Ctx, sched: &mut Option<Schedule>) -> (u64, Admit) {
    match sched {
        Some(s) => {
            let due = s.take();
            let admit = ctx.admit(due);
            if !matches!(admit, Admit::Stop) {
                ctx.sleep_until(due).await;
            }
            (due, admit)
        }
        None => {
            let now = ctx.now_ns();
            (now, ctx.admit(now))
        }
    }
}

/// A read buffer: `data[start..]` is unread. The ring reads into the spare capacity after
/// `data.len()`, so the buffer is owned and lent to each read.
struct RBuf {
    data: Vec<u8>,
    start: usize,
    cap: usize,
}

impl RBuf {
    fn new(cap: usize) -> RBuf {
        RBuf {
            data: Vec::with_capacity(cap),
            start: 0,
            cap,
        }
    }
    fn unread(&self) -> &[u8] {
        &self.data[self.start..]
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.data.len() {
            self.clear();
        }
    }
    fn clear(&mut self) {
        self.start = 0;
        self.data.clear();
    }
    /// Reads once after the unread bytes; `Eof` on 0 bytes, `BadResponse` if full.
    async fn fill(&mut self, s: &mut Stream) -> Result<usize, ErrorKind> {
        if self.data.capacity() == 0 {
            // A read dropped in flight (a timeout) kept the buffer: start afresh.
            *self = RBuf::new(self.cap);
        }
        let end = self.data.len();
        if end == self.data.capacity() {
            if self.start == 0 {
                return Err(ErrorKind::BadResponse);
            }
            self.data.copy_within(self.start..end, 0);
            self.data.truncate(end - self.start);
            self.start = 0;
        }
        match s.read_into(&mut self.data).await {
            Ok(0) => Err(ErrorKind::Eof),
            Ok(n) => Ok(n),
            Err(_) => Err(ErrorKind::Io),
        }
    }
}

/// Sends all of `bytes` (shared, so that the ring can hold them while the write is in flight).
async fn send(s: &mut Stream, bytes: &Rc<Vec<u8>>) -> Result<(), ErrorKind> {
    s.write_all(bytes.clone()).await.map_err(|_| ErrorKind::Io)
}

/// Connects, with the TLS handshake if the run has TLS: a failed handshake is a connect error.
async fn connect(ctx: &Ctx) -> Result<Stream, ErrorKind> {
    match Stream::connect(ctx.cfg.target, ctx.cfg.tls.as_ref()).await {
        Ok(s) => {
            ctx.connected(&s);
            Ok(s)
        }
        Err(ConnectError::Tcp) => Err(ErrorKind::Connect),
        Err(ConnectError::Handshake(e)) => {
            // Why, once per run on stderr: a wrong --tls-ca or --tls-name fails them all alike.
            static TOLD: Once = Once::new();
            TOLD.call_once(|| eprintln!("wtgate-bench: TLS handshake failed: {e}"));
            Err(ErrorKind::Connect)
        }
    }
}

/// Closes with RST instead of FIN (SO_LINGER 0), so a connection-per-request run leaves no
/// TIME_WAIT sockets behind and cannot run out of ephemeral ports.
fn close_hard(s: Stream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a pointer to a local of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// A kept-alive connection's end: `close_notify` over TLS, given at most 100 ms.
async fn goodbye(mut s: Stream) {
    let _ = future::or(
        s.close_notify(),
        monoio::time::sleep(Duration::from_millis(100)),
    )
    .await;
}

/// Reads one whole response; returns its head and the bytes it took (head + body).
async fn read_response(
    s: &mut Stream,
    buf: &mut RBuf,
    heads: &mut wire::HeadReader,
) -> Result<(wire::RespHead, u64), ErrorKind> {
    let head = loop {
        match heads.parse(buf.unread()) {
            Ok(Some(h)) => break h,
            Ok(None) => {
                buf.fill(s).await?;
            }
            Err(_) => return Err(ErrorKind::BadResponse),
        }
    };
    buf.consume(head.head_len);
    let mut total = head.head_len as u64;
    match head.body {
        BodyLen::Length(mut left) => {
            loop {
                let take = (buf.unread().len() as u64).min(left);
                buf.consume(take as usize);
                left -= take;
                total += take;
                if left == 0 {
                    break;
                }
                buf.fill(s).await?;
            }
            // Anything after the body is not ours (no pipelining): a confused server.
            if !buf.unread().is_empty() {
                return Err(ErrorKind::BadResponse);
            }
        }
        BodyLen::UntilClose => loop {
            total += buf.unread().len() as u64;
            buf.clear();
            match buf.fill(s).await {
                Ok(_) => {}
                Err(ErrorKind::Eof) => break,
                Err(e) => return Err(e),
            }
        },
        BodyLen::Chunked => return Err(ErrorKind::BadResponse),
    }
    Ok((head, total))
}

/// Checks status and routing of a complete response.
fn judge(head: &wire::RespHead, expect: Option<&str>) -> Result<(), ErrorKind> {
    if let Some(kind) = ErrorKind::of_status(head.status) {
        return Err(kind);
    }
    if let Some(p) = expect
        && head.backend() != Some(p.as_bytes())
    {
        return Err(ErrorKind::Misrouted);
    }
    Ok(())
}

/// One request and its answer on the connection in `stream` (opened first if there is none); the
/// bytes of the answer if it is a success from the right backend.
async fn http_exchange(
    ctx: &Ctx,
    stream: &mut Option<Stream>,
    buf: &mut RBuf,
    heads: &mut wire::HeadReader,
    req: &Prepared,
) -> Result<u64, ErrorKind> {
    let s = match stream {
        Some(s) => s,
        None => stream.insert(connect(ctx).await?),
    };
    buf.clear();
    send(s, &req.bytes).await?;
    let (head, bytes) = read_response(s, buf, heads).await?;
    if head.close && ctx.cfg.mode != Mode::Connect {
        // The server ends the connection after this answer: reconnect next time.
        *stream = None;
    }
    judge(&head, req.expect.as_deref()).map(|_| bytes)
}

async fn http_conn(ctx: Rc<Ctx>, conn: usize) {
    let cfg = &ctx.cfg;
    let reqs: Vec<Prepared> = wire::prepare(&cfg.spec, conn, 60);
    let cap = if cfg.spec.resp_size.unwrap_or(0) >= 64 * 1024 {
        256 * 1024
    } else {
        64 * 1024
    };
    let mut buf = RBuf::new(cap);
    let mut heads = wire::HeadReader::default();
    let mut sched = schedule_for(&ctx, conn);
    let mut stream: Option<Stream> = None;
    let per_request = cfg.mode == Mode::Connect;
    let mut i = 0usize;
    loop {
        let (due, admit) = next_slot(&ctx, &mut sched).await;
        let measured = match admit {
            Admit::Stop => break,
            Admit::Warmup => false,
            Admit::Measured => true,
        };
        let req = &reqs[i % reqs.len()];
        i += 1;
        let from = if sched.is_some() { due } else { ctx.now_ns() };
        let outcome = http_exchange(&ctx, &mut stream, &mut buf, &mut heads, req).await;
        let failed = outcome.is_err();
        if measured {
            ctx.finish(from, outcome);
        }
        if (per_request || failed)
            && let Some(s) = stream.take()
        {
            close_hard(s);
        }
        if failed {
            ctx.pause_after_failure().await;
        }
    }
    if let Some(s) = stream.take() {
        goodbye(s).await;
    }
}

/// Reads the upgrade answer; `Ok` once the tunnel is open.
async fn ws_handshake(
    ctx: &Ctx,
    s: &mut Stream,
    buf: &mut RBuf,
    up: &Prepared,
) -> Result<(), ErrorKind> {
    let _ = ctx;
    send(s, &up.bytes).await?;
    let head = loop {
        match wire::parse_response_head(buf.unread()) {
            Ok(Some(h)) => break h,
            Ok(None) => {
                buf.fill(s).await?;
            }
            Err(_) => return Err(ErrorKind::BadResponse),
        }
    };
    buf.consume(head.head_len);
    if head.status != 101 {
        return Err(ErrorKind::of_status(head.status).unwrap_or(ErrorKind::StatusOther));
    }
    if let Some(p) = up.expect.as_deref()
        && head.backend() != Some(p.as_bytes())
    {
        return Err(ErrorKind::Misrouted);
    }
    Ok(())
}

/// One connection's WebSocket message: the payload and the masked frame that carries it.
fn ws_message(conn: usize, msg_size: usize) -> (Vec<u8>, Rc<Vec<u8>>) {
    let payload: Vec<u8> = (0..msg_size).map(|i| (i * 31 + conn) as u8).collect();
    let mut frame = Vec::new();
    ws::encode_frame(
        &mut frame,
        true,
        ws::OP_BINARY,
        &payload,
        Some([0x12, 0x34, 0x56, conn as u8]),
    );
    (payload, Rc::new(frame))
}

/// Opens a tunnel: connects and reads the upgrade's answer.
async fn ws_open(ctx: &Ctx, buf: &mut RBuf, up: &Prepared) -> Result<Stream, ErrorKind> {
    let mut s = connect(ctx).await?;
    buf.clear();
    ws_handshake(ctx, &mut s, buf, up).await?;
    Ok(s)
}

/// Sends one message and reads its echo; the bytes of the echo frame if it is the same payload.
async fn ws_echo(
    s: &mut Stream,
    buf: &mut RBuf,
    frame: &Rc<Vec<u8>>,
    payload: &[u8],
) -> Result<u64, ErrorKind> {
    send(s, frame).await?;
    loop {
        match ws::decode_header(buf.unread(), payload.len().max(125)) {
            Ok(Some(h)) if buf.unread().len() >= h.frame_len() => {
                let data = &buf.unread()[h.header_len..h.frame_len()];
                let good = h.opcode == ws::OP_BINARY && h.mask.is_none() && data == payload;
                let n = h.frame_len();
                buf.consume(n);
                return if good {
                    Ok(n as u64)
                } else {
                    Err(ErrorKind::BadEcho)
                };
            }
            Ok(_) => {
                buf.fill(s).await?;
            }
            Err(_) => return Err(ErrorKind::BadResponse),
        }
    }
}

/// A polite close frame (the echo server answers and closes), given at most 100 ms.
async fn ws_close(mut s: Stream) {
    let mut close = Vec::new();
    ws::encode_frame(
        &mut close,
        true,
        ws::OP_CLOSE,
        &1000u16.to_be_bytes(),
        Some([1, 2, 3, 4]),
    );
    let _ = future::or(
        async {
            let _ = s.write_all(Rc::new(close)).await;
            s.close_notify().await;
        },
        monoio::time::sleep(Duration::from_millis(100)),
    )
    .await;
}

async fn ws_conn(ctx: Rc<Ctx>, conn: usize) {
    let cfg = &ctx.cfg;
    let prefix = (!cfg.spec.prefixes.is_empty())
        .then(|| cfg.spec.prefixes[conn % cfg.spec.prefixes.len()].as_str());
    let up = wire::ws_upgrade(&cfg.spec.host, prefix, conn);
    let (payload, frame) = ws_message(conn, cfg.msg_size);
    let mut buf = RBuf::new((cfg.msg_size + 64).max(64 * 1024));
    let mut sched = schedule_for(&ctx, conn);
    let mut stream: Option<Stream> = None;
    loop {
        if stream.is_none() {
            // Open (or reopen) the tunnel; the handshake itself is not a measured message, but
            // its failure is counted when the next message cannot be sent.
            match ws_open(&ctx, &mut buf, &up).await {
                Ok(s) => stream = Some(s),
                Err(kind) => {
                    let (due, admit) = next_slot(&ctx, &mut sched).await;
                    match admit {
                        Admit::Stop => break,
                        Admit::Warmup => {}
                        Admit::Measured => ctx.finish(due, Err(kind)),
                    }
                    ctx.pause_after_failure().await;
                    continue;
                }
            }
        }
        let (due, admit) = next_slot(&ctx, &mut sched).await;
        let measured = match admit {
            Admit::Stop => break,
            Admit::Warmup => false,
            Admit::Measured => true,
        };
        let from = if sched.is_some() { due } else { ctx.now_ns() };
        let s = stream.as_mut().expect("connected above");
        let outcome = ws_echo(s, &mut buf, &frame, &payload).await;
        let failed = outcome.is_err();
        if measured {
            ctx.finish(from, outcome);
        }
        if failed {
            stream = None;
            ctx.pause_after_failure().await;
        }
    }
    if let Some(s) = stream.take() {
        ws_close(s).await;
    }
}

/// Result of an idle-connection run.
pub struct IdleResult {
    pub opened: usize,
    pub failed: usize,
    pub misrouted: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub open_s: f64,
}

/// Opens `conns` keep-alive connections to `target`, sends one request on each (so the proxy has
/// set up everything a live connection needs), then holds them all idle for `hold` and measures the
/// RSS of `pids` before and during the hold. At most `parallel` connections are being opened at a
/// time; the whole run is bounded by `limit`.
pub fn run_idle(
    target: SocketAddr,
    spec: RequestSpec,
    conns: usize,
    parallel: usize,
    hold: Duration,
    limit: Duration,
    pids: Vec<u32>,
) -> io::Result<IdleResult> {
    let mut rt = crate::rt::runtime()?;
    rt.block_on(async move {
        let rss_before_kib = crate::procfs::rss_kib(&pids);
        let sh = Rc::new(Idle {
            target,
            spec,
            conns,
            limit,
            t0: Instant::now(),
            next: Cell::new(0),
            kept: RefCell::new(Vec::with_capacity(conns)),
            failed: Cell::new(0),
            misrouted: Cell::new(0),
        });
        let workers: Vec<_> = (0..parallel.max(1))
            .map(|_| monoio::spawn(idle_worker(sh.clone())))
            .collect();
        for w in workers {
            w.await;
        }
        let open_s = sh.t0.elapsed().as_secs_f64();
        // Let the proxy settle (freed request buffers, pooled backend connections), then measure.
        let settle = hold.min(limit.saturating_sub(sh.t0.elapsed()));
        monoio::time::sleep(settle).await;
        let rss_after_kib = crate::procfs::rss_kib(&pids);
        let opened = sh.kept.borrow().len();
        sh.kept.borrow_mut().clear();
        Ok(IdleResult {
            opened,
            failed: sh.failed.get(),
            misrouted: sh.misrouted.get(),
            rss_before_kib,
            rss_after_kib,
            open_s,
        })
    })
}

/// What the workers of an idle run share.
struct Idle {
    target: SocketAddr,
    spec: RequestSpec,
    conns: usize,
    limit: Duration,
    t0: Instant,
    /// The next connection to open.
    next: Cell<usize>,
    kept: RefCell<Vec<Stream>>,
    failed: Cell<usize>,
    misrouted: Cell<usize>,
}

/// Opens connections one after another until all are open or the time is up.
async fn idle_worker(sh: Rc<Idle>) {
    let mut buf = RBuf::new(16 * 1024);
    let mut heads = wire::HeadReader::default();
    loop {
        let i = sh.next.get();
        if i >= sh.conns || sh.t0.elapsed() > sh.limit {
            break;
        }
        sh.next.set(i + 1);
        let Some(req) = wire::prepare(&sh.spec, i, 1).pop() else {
            break;
        };
        let attempt = async {
            let mut s = TcpStream::connect_addr(sh.target)
                .await
                .map(Stream::plain)
                .map_err(|_| ErrorKind::Connect)?;
            buf.clear();
            send(&mut s, &req.bytes).await?;
            let (head, _) = read_response(&mut s, &mut buf, &mut heads).await?;
            judge(&head, req.expect.as_deref())?;
            Ok::<_, ErrorKind>(s)
        };
        // A connection parked in a full backlog must not hold the run past its limit.
        let left = sh.limit.saturating_sub(sh.t0.elapsed());
        let r = future::or(attempt, async {
            monoio::time::sleep(left).await;
            Err(ErrorKind::Timeout)
        })
        .await;
        match r {
            Ok(s) => sh.kept.borrow_mut().push(s),
            Err(ErrorKind::Misrouted) => sh.misrouted.set(sh.misrouted.get() + 1),
            Err(_) => sh.failed.set(sh.failed.get() + 1),
        }
    }
}
