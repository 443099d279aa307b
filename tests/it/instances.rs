//! Several wtgate instances, active-active behind an L4 balancer, operated as one (issue 18): two
//! `wtgate` processes with one config file, a round-robin TCP forwarder in front (written here),
//! and Wt-like backends wt1, wt2 (and wt3) behind both.
//!
//! Shown: a session reaches its owner whichever instance its connection lands on; one instance
//! killed under load costs only the connections that were on it, and clients that reconnect go on
//! through the other with their sessions; `wtgate admin` with several `--url`s (or the file's
//! `[admin] peers`) changes both, says per instance where it failed, sums the sessions, and its
//! `drain --wait` waits for a WebSocket open through either; a change of the config file (a
//! ConfigMap-style symlink swap) reaches both instances without a signal.
//!
//! Run with `--nocapture` to see the numbers (`instances (b): …` on stderr).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use wtgate::admin::client::AdminClient;
use wtgate_demo::ws::OP_TEXT;

use crate::common::*;

const WS: Behavior = Behavior::WsEcho {
    reject: false,
    close_after: None,
    greet: false,
};

/// The config file every instance reads: one shard, unpinned (two wtgates and the test share the
/// machine), these backends `(prefix, address, weight)`, and `more`. Listeners and admin
/// listeners are each instance's own flags, which win over the file.
fn shared_config(backends: &[(&str, SocketAddr, u32)], more: &str) -> String {
    let mut text = String::from("threads = 1\npin = false\n");
    for (prefix, addr, weight) in backends {
        text.push_str(&format!(
            "[[backend]]\nprefix = \"{prefix}\"\naddress = \"{addr}\"\nweight = {weight}\n"
        ));
    }
    text + more
}

/// One wtgate process: `--config FILE --listen … --admin …` and more flags.
struct Instance {
    serving: Serving,
    listen: SocketAddr,
    url: String,
}

impl Instance {
    fn start(config: &str, more: &[&str]) -> Instance {
        let (listen, admin) = (free_addr(), free_addr());
        let (l, a) = (listen.to_string(), admin.to_string());
        let mut args = vec!["--config", config, "--listen", &l, "--admin", &a];
        args.extend_from_slice(more);
        Instance {
            serving: Serving::start(&args),
            listen,
            url: format!("http://{admin}"),
        }
    }

    fn client(&self) -> AdminClient {
        AdminClient::new(&self.url, None).unwrap()
    }
}

/// The L4 balancer in front of the instances, as a cloud TCP load balancer or IPVS would be:
/// client connection i goes to instance i % n, or, when that one refuses the connect, to the
/// next (a balancer's health check takes a dead one out just the same). Bytes are copied both
/// ways until EOF, half-closes passed on; nothing of HTTP is looked at.
struct Balancer {
    addr: SocketAddr,
    state: Arc<BalancerState>,
    accepting: Option<JoinHandle<()>>,
}

struct BalancerState {
    upstreams: Vec<SocketAddr>,
    stop: AtomicBool,
    next: AtomicUsize,
    /// The instance each client connection went to, by the client's address.
    routes: Mutex<HashMap<SocketAddr, usize>>,
    /// Connects an instance refused.
    refused: Vec<AtomicUsize>,
}

impl Balancer {
    fn start(upstreams: &[SocketAddr]) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BalancerState {
            upstreams: upstreams.to_vec(),
            stop: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            routes: Mutex::new(HashMap::new()),
            refused: upstreams.iter().map(|_| AtomicUsize::new(0)).collect(),
        });
        let s = state.clone();
        let accepting = thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(client) = client {
                    s.forward(client);
                }
            }
        });
        Balancer {
            addr,
            state,
            accepting: Some(accepting),
        }
    }

    /// The instance the connection from `client` went to, once the balancer has connected it.
    fn route(&self, client: SocketAddr) -> Option<usize> {
        let routes = self.state.routes.lock().unwrap();
        routes.get(&client).copied()
    }

    /// [`Balancer::route`] of a connection the balancer has accepted.
    fn route_of(&self, w: &Wire) -> usize {
        let me = w.stream.local_addr().unwrap();
        eventually("the balancer's route", || self.route(me))
    }

    fn refused(&self, instance: usize) -> usize {
        self.state.refused[instance].load(Ordering::SeqCst)
    }
}

impl BalancerState {
    fn forward(&self, client: TcpStream) {
        let first = self.next.fetch_add(1, Ordering::SeqCst);
        let n = self.upstreams.len();
        for k in 0..n {
            let i = (first + k) % n;
            match TcpStream::connect_timeout(&self.upstreams[i], Duration::from_secs(1)) {
                Ok(upstream) => {
                    let peer = client.peer_addr().unwrap();
                    self.routes.lock().unwrap().insert(peer, i);
                    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    thread::spawn(move || pipe(client, upstream));
                    thread::spawn(move || pipe(u2, c2));
                    return;
                }
                Err(_) => {
                    self.refused[i].fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        // No instance took it: the client sees its connection closed.
    }
}

/// Copies `from` into `to` until EOF or an error, then passes the end on (a FIN).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
    }
}

/// One request for `target` on `w`; the backend that answered it.
fn ask(w: &mut Wire, target: &str) -> std::io::Result<String> {
    w.write_all(&get(target))?;
    let r = w.read_response(false)?;
    assert_eq!(r.status, 200, "{target}: {}", r.body_str());
    Ok(r.backend().to_string())
}

/// `n` new-session requests on one keep-alive connection to `proxy`: how many each backend got.
fn new_sessions(proxy: SocketAddr, n: usize, tag: &str) -> HashMap<String, usize> {
    let mut w = Wire::connect(proxy);
    let mut seen = HashMap::new();
    for i in 0..n {
        let backend = ask(&mut w, &format!("/new?{tag}={i}")).unwrap();
        *seen.entry(backend).or_default() += 1;
    }
    seen
}

fn counts(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
    pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect()
}

/// Runs `wtgate admin ARGS` to its end (at most 30 s).
fn admin_command(args: &[&str]) -> Output {
    let args = [&["admin"], args].concat();
    run_wtgate(&args, &[], Duration::from_secs(30))
}

/// (a) Connections alternate between the instances; each session's requests come through both,
/// and every one is answered by the session's owner: the instances route by the id alone, with
/// nothing shared between them.
#[test]
fn a_session_reaches_its_owner_through_either_instance() {
    let (b1, b2) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt2", Behavior::Normal),
    );
    let backends = [("wt1", b1.addr, 1), ("wt2", b2.addr, 1)];
    let file = TempConfig::new("instances-owner", &shared_config(&backends, ""));
    let (a, b) = (
        Instance::start(file.path(), &[]),
        Instance::start(file.path(), &[]),
    );
    let lb = Balancer::start(&[a.listen, b.listen]);
    let mut rng = Rng::new(1801);
    let sessions: Vec<String> = (0..4)
        .map(|i| session_id(&mut rng, if i % 2 == 0 { "wt1" } else { "wt2" }))
        .collect();
    // (session, instance) -> requests answered.
    let mut through: HashMap<(usize, usize), usize> = HashMap::new();
    let (connections, per_connection) = (24, 3);
    for c in 0..connections {
        // Each session on two connections in a row, so on one through each instance.
        let s = (c / 2) % sessions.len();
        let sid = &sessions[s];
        let mut w = Wire::connect(lb.addr);
        let via = lb.route_of(&w);
        for n in 0..per_connection {
            let backend = ask(&mut w, &format!("/app?wtd={sid}&n={n}")).unwrap();
            assert_eq!(backend, &sid[..3], "{sid} through instance {via}");
            *through.entry((s, via)).or_default() += 1;
        }
    }
    for s in 0..sessions.len() {
        for via in 0..2 {
            assert!(through.get(&(s, via)) > Some(&0), "{through:?}");
        }
    }
    let on = |via| -> usize {
        through
            .iter()
            .filter(|(k, _)| k.1 == via)
            .map(|e| e.1)
            .sum()
    };
    eprintln!(
        "instances (a): {} requests of {} sessions on {connections} connections, {} through \
         instance A and {} through B; every one answered by its session's owner (wt1 {}, wt2 {})",
        connections * per_connection,
        sessions.len(),
        on(0),
        on(1),
        b1.request_count(),
        b2.request_count()
    );
    assert_eq!(
        b1.request_count() + b2.request_count(),
        connections * per_connection
    );
}

/// What one load client saw.
#[derive(Debug, Default)]
struct ClientLog {
    /// The instance each of its connections went to, in order.
    connections: Vec<usize>,
    /// Requests answered, per connection (same order).
    answered: Vec<usize>,
    /// Failed requests: the index of the connection each failed on.
    errors: Vec<usize>,
}

/// Progress a load client shares while it runs.
struct Progress {
    answered: AtomicUsize,
    /// Requests answered on the connection it uses now.
    on_this_connection: AtomicUsize,
    /// The instance of the connection it uses now (`usize::MAX` before the first).
    via: AtomicUsize,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            answered: AtomicUsize::new(0),
            on_this_connection: AtomicUsize::new(0),
            via: AtomicUsize::new(usize::MAX),
        }
    }
}

/// Shut until opened once; then open for good.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            open: Mutex::new(false),
            opened: Condvar::new(),
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Waits until it is open (10 s at most).
    fn pass(&self) {
        let open = self.open.lock().unwrap();
        let (open, _) = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(10), |open| !*open)
            .unwrap();
        assert!(*open, "the gate stayed shut");
    }
}

/// A client of session `sid`: one keep-alive connection through the balancer, a request after
/// another; after a failed one, a new connection (as a browser reconnects) once `reconnect` is
/// open. Until `stop`.
fn load_client(
    lb: &Balancer,
    sid: &str,
    progress: &Progress,
    reconnect: &Gate,
    stop: &AtomicBool,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut conn: Option<Wire> = None;
    for n in 0..1_000_000 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let w = conn.get_or_insert_with(|| {
            let w = Wire::connect(lb.addr);
            let via = lb.route_of(&w);
            log.connections.push(via);
            log.answered.push(0);
            progress.on_this_connection.store(0, Ordering::SeqCst);
            progress.via.store(via, Ordering::SeqCst);
            w
        });
        match ask(w, &format!("/app?wtd={sid}&n={n}")) {
            Ok(backend) => {
                assert_eq!(backend, &sid[..3], "{sid}: {log:?}");
                *log.answered.last_mut().unwrap() += 1;
                progress.answered.fetch_add(1, Ordering::SeqCst);
                progress.on_this_connection.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                log.errors.push(log.connections.len() - 1);
                conn = None;
                reconnect.pass();
            }
        }
    }
    log
}

/// (b) Eight clients, each with its session (wt1's or wt2's) and a keep-alive connection through
/// the balancer, four on each instance. Instance A is killed (SIGKILL) under load: the clients
/// on it get one failed request each, on that connection; they reconnect, the balancer finds A
/// refusing and sends them to B, and their sessions go on at their owners. No client on B, and
/// no reconnected client, sees an error.
#[test]
fn one_instance_killed_under_load_costs_only_its_own_connections() {
    let (b1, b2) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt2", Behavior::Normal),
    );
    let backends = [("wt1", b1.addr, 1), ("wt2", b2.addr, 1)];
    let file = TempConfig::new("instances-kill", &shared_config(&backends, ""));
    let (a, b) = (
        Instance::start(file.path(), &[]),
        Instance::start(file.path(), &[]),
    );
    let lb = Balancer::start(&[a.listen, b.listen]);
    let clients = 8;
    let mut rng = Rng::new(1802);
    let sids: Vec<String> = (0..clients)
        .map(|i| session_id(&mut rng, ["wt1", "wt2"][i % 2]))
        .collect();
    let progress: Vec<Progress> = (0..clients).map(|_| Progress::new()).collect();
    let (stop, reconnect) = (AtomicBool::new(false), Gate::new());
    let (mut window, mut accepted_dying) = (Duration::ZERO, 0);
    let (logs, before, after) = thread::scope(|s| {
        let running: Vec<_> = (0..clients)
            .map(|i| {
                let (lb, sid, p) = (&lb, &sids[i], &progress[i]);
                let (gate, stop) = (&reconnect, &stop);
                s.spawn(move || load_client(lb, sid, p, gate, stop))
            })
            .collect();
        let answered = || -> usize {
            progress
                .iter()
                .map(|p| p.answered.load(Ordering::SeqCst))
                .sum()
        };
        eventually("every client under way", || {
            progress
                .iter()
                .all(|p| p.answered.load(Ordering::SeqCst) >= 50)
                .then_some(())
        });
        let at_kill: Vec<usize> = progress
            .iter()
            .map(|p| p.answered.load(Ordering::SeqCst))
            .collect();
        let before = answered();
        a.serving.signal("-KILL");
        // A killed process's listening socket is closed as it exits, and until then the kernel
        // still completes connects to it (which are then reset): a balancer sends nobody there
        // only once connects are refused, so the clients reconnect after that.
        let killed = Instant::now();
        eventually("A refusing connects", || {
            match TcpStream::connect_timeout(&a.listen, Duration::from_secs(1)) {
                Ok(_) => {
                    accepted_dying += 1;
                    None
                }
                Err(_) => Some(()),
            }
        });
        window = killed.elapsed();
        reconnect.open();
        // Every client on a connection through B, with 200 answers on it and since the kill.
        eventually("every client served through B again", || {
            progress
                .iter()
                .zip(&at_kill)
                .all(|(p, &then)| {
                    p.via.load(Ordering::SeqCst) == 1
                        && p.on_this_connection.load(Ordering::SeqCst) >= 200
                        && p.answered.load(Ordering::SeqCst) >= then + 200
                })
                .then_some(())
        });
        let after = answered() - before;
        stop.store(true, Ordering::SeqCst);
        let logs: Vec<ClientLog> = running.into_iter().map(|r| r.join().unwrap()).collect();
        (logs, before, after)
    });

    let on_a_at_kill = logs.iter().filter(|l| l.connections[0] == 0).count();
    let errors: usize = logs.iter().map(|l| l.errors.len()).sum();
    let mut errors_on_b = 0;
    let mut reconnects = 0;
    let mut reconnects_to_a = 0;
    let mut after_reconnect = 0;
    for (i, l) in logs.iter().enumerate() {
        errors_on_b += l.errors.iter().filter(|&&c| l.connections[c] == 1).count();
        reconnects += l.connections.len() - 1;
        reconnects_to_a += l.connections[1..].iter().filter(|&&v| v == 0).count();
        after_reconnect += l.answered[1..].iter().sum::<usize>();
        assert_eq!(
            l.connections.last(),
            Some(&1),
            "client {i} ends on B: {l:?}"
        );
        let failed_last = l.errors.last() == Some(&(l.connections.len() - 1));
        assert!(
            !failed_last,
            "client {i}: its last connection failed: {l:?}"
        );
    }
    eprintln!(
        "instances (b): {clients} clients, {before} requests answered before instance A was \
         killed, {after} after; {on_a_at_kill} client connections were on A: {errors} failed \
         requests ({errors_on_b} on connections through B); {reconnects} reconnects \
         ({reconnects_to_a} through A; the balancer's connects refused by A: {}), \
         {after_reconnect} requests answered after reconnecting, 0 errors there; every answer \
         from its session's owner. A refused connects {:.0} ms after SIGKILL ({accepted_dying} \
         probe connects, every 20 ms, accepted before)",
        lb.refused(0),
        window.as_secs_f64() * 1000.0
    );
    assert_eq!(on_a_at_kill, clients / 2, "{logs:?}");
    assert_eq!(errors_on_b, 0, "{logs:?}");
    assert_eq!(errors, on_a_at_kill, "one per connection on A: {logs:?}");
    assert_eq!(reconnects_to_a, 0, "{logs:?}");
    for l in logs.iter().filter(|l| l.connections[0] == 1) {
        assert_eq!((l.connections.len(), l.errors.len()), (1, 0), "{l:?}");
    }
    for l in logs.iter().filter(|l| l.connections[0] == 0) {
        // One error per connection through A, none on the one through B.
        let through_a = l.connections.iter().filter(|&&v| v == 0).count();
        assert_eq!(l.errors.len(), through_a, "{l:?}");
    }
}

/// `wtgate admin ARGS` started, its stdout lines sent on as they come.
fn spawn_admin(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wtgate"))
        .arg("admin")
        .args(args)
        .env_remove("WTGATE_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

/// Waits for the line of `lines` that holds `part` (10 s at most); the lines before it too.
fn line_with(lines: &mpsc::Receiver<String>, part: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => {
                let found = l.contains(part);
                seen.push(l);
                if found {
                    return seen;
                }
            }
            Err(e) => panic!("no line with {part:?} in {seen:#?}: {e}"),
        }
    }
}

/// (c) A session of wt1 lives only through instance B: its WebSocket is open there. `wtgate
/// admin --url A --url B` counts it on B (and the total); its `drain --wait` drains wt1 on both
/// and does not return while the WebSocket is open (with a short --timeout it runs to its end and
/// names B's session), and returns once it has closed (and `--session-idle` passed).
#[test]
fn a_drain_through_both_instances_waits_for_a_websocket_on_either() {
    let (b1, b2) = (TestBackend::start("wt1", WS), TestBackend::start("wt2", WS));
    let backends = [("wt1", b1.addr, 1), ("wt2", b2.addr, 1)];
    let idle = "[sessions]\nidle = \"1s\"\n";
    let file = TempConfig::new("instances-drain", &shared_config(&backends, idle));
    let (a, b) = (
        Instance::start(file.path(), &[]),
        Instance::start(file.path(), &[]),
    );
    let urls = ["--url", &a.url, "--url", &b.url];
    let sid = session_id(&mut Rng::new(1803), "wt1");
    let (mut ws, _) = ws_connect(b.listen, &format!("/app?wtd={sid}&request=ws"));
    echo(&mut ws, "through B");
    eventually("B counts the WebSocket's session", || {
        (b.client().sessions("wt1").unwrap().live == 1).then_some(())
    });

    let out = admin_command(&[&urls[..], &["sessions", "wt1"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    let want = [
        format!("{}: wt1: 0 live sessions", a.url),
        format!("{}: wt1: 1 live session, last request", b.url),
        "total of 2 instances: wt1: 1 live session, last request".to_string(),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), want.len(), "{stdout}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()), "{line:?} is not {want:?}");
    }

    let started = Instant::now();
    let out = admin_command(&[&urls[..], &["drain", "wt1", "--wait", "--timeout", "2s"]].concat());
    let short = started.elapsed();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for want in [
        format!("{}: wt1: ready -> drain", a.url),
        format!("{}: wt1: ready -> drain", b.url),
        format!(
            "wt1: 1 live session(s) remain after 2s ({}: 0, {}: 1)",
            a.url, b.url
        ),
    ] {
        assert!(t.contains(&want), "no {want:?} in {t}");
    }

    let (mut waiting, lines) =
        spawn_admin(&[&urls[..], &["drain", "wt1", "--wait", "--timeout", "60s"]].concat());
    let seen = line_with(&lines, "wt1: 1 live session");
    assert!(
        seen.iter().any(|l| l.ends_with("wt1: drain -> drain")),
        "{seen:?}"
    );
    echo(&mut ws, "still open");
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "--wait returned with B's WebSocket open"
    );
    let closed = Instant::now();
    drop(ws);
    let seen = line_with(&lines, "drained");
    let took = closed.elapsed();
    let status = eventually("the drain command's exit", || waiting.try_wait().unwrap());
    assert!(status.success(), "{seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("wt1: drained: no live session left on 2 instances")
    );
    let zero = format!("wt1: 0 live sessions ({}: 0, {}: 0)", a.url, b.url);
    assert!(seen.contains(&zero), "{seen:?}");
    eprintln!(
        "instances (c): with wt1's WebSocket open through B only, `drain wt1 --wait --timeout 2s` \
         on both instances ran {:.1} s and exited 1 naming B's session; `--wait --timeout 60s` \
         returned {:.1} s after the WebSocket closed (--session-idle 1s, polls every 1s)",
        short.as_secs_f64(),
        took.as_secs_f64()
    );
}

/// One WebSocket echo on `w`.
fn echo(w: &mut Wire, text: &str) {
    w.write_all(&client_frame(OP_TEXT, text.as_bytes(), [7, 7, 7, 7]))
        .unwrap();
    let (_, _, payload) = ws_recv(w).unwrap().expect("an echo");
    assert_eq!(payload, text.as_bytes());
}

/// A directory laid out as Kubernetes mounts a ConfigMap: `wtgate.toml -> ..data/wtgate.toml`,
/// `..data -> ..VERSION`; [`ConfigMap::update`] swaps `..data` atomically, as the kubelet does.
struct ConfigMap {
    dir: PathBuf,
    version: usize,
}

impl ConfigMap {
    fn new(name: &str, text: &str) -> ConfigMap {
        let dir = std::env::temp_dir().join(format!("wtgate-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut map = ConfigMap { dir, version: 0 };
        map.update(text);
        std::os::unix::fs::symlink("..data/wtgate.toml", map.path()).unwrap();
        map
    }

    fn path(&self) -> PathBuf {
        self.dir.join("wtgate.toml")
    }

    fn update(&mut self, text: &str) {
        self.version += 1;
        let version = format!("..2026_01_01_00_00_{:02}.{}", self.version, self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("wtgate.toml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

impl Drop for ConfigMap {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Path as the `&str` the command line takes.
fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (d) Both instances read one ConfigMap-style file that says `watch = true`. An update (wt3
/// added, wt2's weight 0) is swapped in as the kubelet does, with no signal to anyone: both
/// instances put it in force, new sessions go to wt1 and wt3 through either, and wt2's existing
/// session still reaches wt2.
#[test]
fn a_config_change_reaches_both_instances_without_a_signal() {
    let (b1, b2, b3) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt2", Behavior::Normal),
        TestBackend::start("wt3", Behavior::Normal),
    );
    let before = [("wt1", b1.addr, 1), ("wt2", b2.addr, 1)];
    // Top-level keys come before the first table.
    let text = format!("watch = true\n{}", shared_config(&before, ""));
    let mut map = ConfigMap::new("instances-configmap", &text);
    let path = map.path();
    let (a, b) = (
        Instance::start(arg(&path), &[]),
        Instance::start(arg(&path), &[]),
    );
    for i in [&a, &b] {
        assert_eq!(
            new_sessions(i.listen, 4, "x"),
            counts(&[("wt1", 2), ("wt2", 2)])
        );
    }

    let after = [
        ("wt1", b1.addr, 1),
        ("wt2", b2.addr, 0),
        ("wt3", b3.addr, 1),
    ];
    map.update(&format!("watch = true\n{}", shared_config(&after, "")));
    let swapped = Instant::now();
    let mut took = Vec::new();
    for i in [&a, &b] {
        let lines = i.serving.lines_until("wtgate: reloaded:");
        took.push(swapped.elapsed());
        assert!(
            lines.iter().any(|l| l.contains("changed: reloading it")),
            "{lines:?}"
        );
        let reloaded = lines.last().unwrap();
        assert!(
            reloaded.ends_with("reloaded: added wt3; wt2: weight 1 -> 0"),
            "{reloaded}"
        );
    }
    let sid2 = session_id(&mut Rng::new(1804), "wt2");
    for i in [&a, &b] {
        assert_eq!(
            new_sessions(i.listen, 4, "y"),
            counts(&[("wt1", 2), ("wt3", 2)])
        );
        assert_eq!(
            ask(&mut Wire::connect(i.listen), &format!("/?wtd={sid2}")).unwrap(),
            "wt2"
        );
    }
    eprintln!(
        "instances (d): ConfigMap-style swap of ..data (wt3 added, wt2 weight 0), no signal: \
         instance A reloaded {:.1} s after it, B {:.1} s after it (poll 1 s, a change settles for \
         one poll)",
        took[0].as_secs_f64(),
        took[1].as_secs_f64()
    );
}

/// (e) `--watch-config` on a plain file: a file rewritten in place that does not validate is
/// refused and logged and the running config stays (as for SIGHUP); a good one replaced by a
/// rename is put in force. `check` says the file is watched; without `--config`, the flag is
/// refused.
#[test]
fn watch_config_refuses_a_broken_file_and_takes_the_next_good_one() {
    let (b1, b2) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt2", Behavior::Normal),
    );
    let good = shared_config(&[("wt1", b1.addr, 1)], "");
    let file = TempConfig::new("instances-watch-flag", &good);
    let a = Instance::start(file.path(), &["--watch-config"]);
    std::fs::write(
        file.path(),
        format!("{good}[[backend]]\nprefix = \"wt2\"\n"),
    )
    .unwrap();
    let refused = a.serving.wait_for_line("reload refused");
    assert!(
        refused.contains("the running config stays")
            && refused.contains("backend[1]: a backend needs"),
        "{refused}"
    );
    assert_eq!(new_sessions(a.listen, 2, "x"), counts(&[("wt1", 2)]));
    file.write(&shared_config(
        &[("wt1", b1.addr, 1), ("wt2", b2.addr, 1)],
        "",
    ));
    let reloaded = a.serving.wait_for_line("wtgate: reloaded:");
    assert!(reloaded.ends_with("reloaded: added wt2"), "{reloaded}");
    assert_eq!(
        new_sessions(a.listen, 2, "y"),
        counts(&[("wt1", 1), ("wt2", 1)])
    );

    let out = run_wtgate(
        &["check", "--config", file.path(), "--watch-config"],
        &[],
        Duration::from_secs(10),
    );
    let want = format!(
        "config file: {} watched, a change in force within 2s",
        file.path()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&want),
        "{}",
        text(&out)
    );
    let out = run_wtgate(
        &["check", "--watch-config", "--backend", "wt1=127.0.0.1:9"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--watch-config follows the --config file"),
        "{}",
        text(&out)
    );
}

/// (f) One of the two instances does not answer (`[admin] peers` names one where nothing
/// listens): `wtgate admin --config FILE` makes the drain on the other, says so on stdout, names
/// the one that failed and where it was made on stderr, does not wait, and exits 1; `sessions`
/// and `reload` likewise. One `--url` gives the output it always gave.
#[test]
fn an_instance_that_fails_is_named_and_nothing_is_half_done_silently() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let dead = format!("http://{}", closed_port());
    let (admin_a, listen_a) = (free_addr(), free_addr());
    let peers = format!("[admin]\npeers = [\"http://{admin_a}\", \"{dead}\"]\n");
    let file = TempConfig::new(
        "instances-peers",
        &shared_config(&[("wt1", b1.addr, 1)], &peers),
    );
    let (l, m) = (listen_a.to_string(), admin_a.to_string());
    let _a = Serving::start(&["--config", file.path(), "--listen", &l, "--admin", &m]);
    let a_url = format!("http://{admin_a}");
    let config = ["--config", file.path()];

    let out = admin_command(&[&config[..], &["drain", "wt1", "--wait"]].concat());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        stdout,
        format!("{a_url}: wt1: ready -> drain\n"),
        "did not wait: {stderr}"
    );
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(
        errors[0].starts_with(&format!("wtgate: {dead}: cannot reach the admin listener")),
        "{stderr}"
    );
    let summary =
        format!("wtgate: wt1: drain made on 1 of 2 instances, not on {dead}: not waiting;");
    assert!(errors[1].starts_with(&summary), "{stderr}");

    let out = admin_command(&[&config[..], &["sessions", "wt1"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{a_url}: wt1: 0 live sessions\ntotal of the 1 of 2 instances that answered: wt1: 0 live sessions\n"
        )
    );
    let out = admin_command(&[&config[..], &["reload"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("{a_url}: reloaded (generation 1)")),
        "{}",
        text(&out)
    );
    let want = format!("reload: put in force on 1 of 2 instances, not on {dead}");
    assert!(text(&out).contains(&want), "{}", text(&out));

    // One instance: the output as it always was; an instance named twice is refused.
    let out = admin_command(&["--url", &a_url, "ready", "wt1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "wt1: drain -> ready\n"
    );
    let out = admin_command(&[
        "--url",
        &a_url,
        "--url",
        &format!("{a_url}/"),
        "ready",
        "wt1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is named twice"), "{}", text(&out));
    eprintln!(
        "instances (f): with one of two instances not answering, drain/sessions/reload each \
         exited 1 with a line for the dead one and a summary; the live one was changed"
    );
}
