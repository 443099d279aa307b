//! The proxy's own faults (issue 22, findings 3, 4, 6, 7, 8): never blamed on a backend, never a
//! stop that outlives `--grace`, never a shard that dies alone, never a shard left on a backend's
//! old address, and a failure the client can read for what it was.

use std::net::{SocketAddr, TcpListener, TcpStream};

use crate::common::*;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The open-files limit under which the process has exactly one descriptor number left free
/// (new descriptors take the lowest free number below the limit).
fn one_fd_left(pid: u32) -> usize {
    let used: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (1..)
        .find(|&l| l - used.iter().filter(|&&fd| fd < l).count() == 1)
        .unwrap()
}

fn prlimit_nofile(pid: u32, n: usize) {
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(ok.success());
}

/// Finding 3: wtgate out of descriptors. A request whose backend connect fails with `EMFILE`
/// gets a 503 of its own, the log says it is wtgate's own limit, and the backend is not marked
/// down: once descriptors are free, the next request is served at once.
#[test]
fn running_out_of_descriptors_is_not_the_backends_fault() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let listen = free_port();
    let w = Serving::start(&one_backend_args(
        listen,
        b.addr,
        &["--check-interval", "1h"],
    ));
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    // One descriptor left: the client connection takes it, its backend connect finds none.
    let limit = one_fd_left(w.pid());
    prlimit_nofile(w.pid(), limit);
    let r = send_request(addr, &get("/?starved=1")).unwrap();
    assert_eq!(r.status, 503, "{:?}", r.head);
    let lines = w.lines_until("wtgate's own limit");
    assert!(
        !lines.iter().any(|l| l.contains("up -> down")),
        "{lines:#?}"
    );
    prlimit_nofile(w.pid(), limit + 64);
    let r = send_request(addr, &get("/?fed=1")).unwrap();
    assert_eq!((r.status, r.backend()), (200, "wt1"), "{:?}", r.head);
    let (_, _, rest) = w.stop();
    assert!(!rest.iter().any(|l| l.contains("up -> down")), "{rest:#?}");
}

/// Finding 4: every slot of `--maxconn` held by an idle keep-alive client, then SIGTERM: wtgate
/// still stops within `--grace` (the idle clients are closed), not when their keep-alive ends.
#[test]
fn a_stop_at_maxconn_keeps_to_the_grace() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let listen = free_port();
    let mut w = Serving::start(&one_backend_args(
        listen,
        b.addr,
        &[
            "--maxconn",
            "2",
            "--keepalive-timeout",
            "1h",
            "--grace",
            "1s",
        ],
    ));
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let idle: Vec<Wire> = (0..2)
        .map(|i| {
            let mut c = Wire::connect(addr);
            c.write_all(&get(&format!("/?idle={i}"))).unwrap();
            assert_eq!(c.read_response(false).unwrap().status, 200);
            c
        })
        .collect();
    // The accept loop now waits for a free slot.
    let waiting = TcpStream::connect(addr).unwrap();
    w.signal("-TERM");
    assert_eq!(w.exit_code(), Some(0), "wtgate outlived its grace");
    drop((idle, waiting));
}

/// Finding 6: a panicking shard takes the process with it (so that systemd restarts it), rather
/// than leave its listener in the SO_REUSEPORT group with nobody accepting.
#[test]
fn a_panicking_shard_ends_the_process() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let listen = free_port();
    let mut w = Serving::start_with_env(
        &args(&[
            "--threads",
            "2",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--backend",
            &format!("wt1={}", b.addr),
        ]),
        &[("WTGATE_TEST_PANIC", "accept")],
    );
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let _ = TcpStream::connect(addr);
    w.wait_for_line("a thread panicked");
    assert_ne!(w.exit_code(), Some(0));
}

/// Finding 7: a backend's host name moves to another address. The checking shard finds it by
/// looking the name up again, and every shard connects there from then on: the other shard does
/// not try the old address, so the backend is never marked down.
#[test]
fn a_new_address_for_a_name_reaches_every_shard() {
    let port = free_port();
    let old = TcpListener::bind(("127.0.0.1", port)).unwrap();
    drop(old);
    let b1 = TestBackend::start_at(
        "wt1",
        Behavior::Normal,
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    let hosts = std::env::temp_dir().join(format!("wtgate-test-hosts-{}", std::process::id()));
    std::fs::write(&hosts, "wt1.wtgate-test 127.0.0.1\n").unwrap();
    let listen = free_port();
    let w = Serving::start_with_env(
        &args(&[
            "--threads",
            "2",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--backend",
            &format!("wt1=wt1.wtgate-test:{port}"),
            "--check-interval",
            "50ms",
            "--fall",
            "1000",
        ]),
        &[("WTGATE_TEST_HOSTS", hosts.to_str().unwrap())],
    );
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    for i in 0..10 {
        let r = send_request(addr, &get(&format!("/?before={i}"))).unwrap();
        assert_eq!(r.status, 200);
    }
    // The server moves: the old address refuses, the name says where it is now.
    drop(b1);
    let b2 = TestBackend::start_at(
        "wt1",
        Behavior::Normal,
        format!("127.0.0.2:{port}").parse().unwrap(),
    );
    std::fs::write(&hosts, "wt1.wtgate-test 127.0.0.2\n").unwrap();
    w.wait_for_line("now resolves to 127.0.0.2");
    for i in 0..20 {
        let r = send_request(addr, &get(&format!("/?after={i}"))).unwrap();
        assert_eq!(r.status, 200, "{:?}", r.head);
    }
    assert!(b2.request_count() >= 20);
    let (_, _, rest) = w.stop();
    let _ = std::fs::remove_file(&hosts);
    assert!(
        !rest.iter().any(|l| l.contains("up -> down")),
        "a shard still went to the old address: {rest:#?}"
    );
}

/// Finding 8: one backend, whose fresh connection closes before answering: the request (resent
/// once, to the same backend, which does the same) gets a 502 and the access log says
/// `upstream_closed`, not "503 no backend is up" while the backend is up.
#[test]
fn a_connection_closed_unanswered_on_the_only_backend_is_a_502() {
    let b = TestBackend::start("wt1", Behavior::CloseUnanswered);
    let proxy = start_proxy(&[b.spec()], |_| {});
    let r = send_request(proxy.addr, &get("/?once=1")).unwrap();
    assert_eq!(r.status, 502, "{:?}", r.head);
    let stats = proxy.engine().stats();
    let closed = stats.failures.iter().find(|(k, _)| *k == "upstream_closed");
    assert_eq!(closed.map(|c| c.1), Some(1), "{stats:?}");
    assert_eq!(
        (stats.no_backend, stats.backend("wt1").unwrap().up_on_shards),
        (0, 1)
    );
}

/// The CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Issue 17: `accept` meeting EMFILE. Connections past the open-files limit wait in the kernel's
/// backlog; the shard backs off between tries instead of spinning on the failing accept (and
/// says so once a second, not at every try), a connection it already has keeps being served (on
/// its pooled backend connection), and once descriptors are free the waiting connections are
/// served too.
#[test]
fn accept_at_the_open_files_limit_neither_spins_nor_stops_served_connections() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let listen = free_port();
    let w = Serving::start(&one_backend_args(listen, b.addr, &[]));
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let mut served = Wire::connect(addr);
    served.write_all(&get("/?before")).unwrap();
    assert_eq!(served.read_response(false).unwrap().status, 200);
    let pid = w.pid();
    prlimit_nofile(pid, one_fd_left(pid));
    // The first takes the last descriptor; the others wait in the backlog.
    let waiting: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    w.wait_for_line("accept failed");
    let cpu_before = cpu_seconds(pid);
    let wall = std::time::Instant::now();
    // Said once a second, with the tries left out in between (one every 50 ms: about 20).
    let next = w.wait_for_line("accept failed");
    assert!(next.contains("similar lines left out"), "{next}");
    let (cpu, wall) = (cpu_seconds(pid) - cpu_before, wall.elapsed().as_secs_f64());
    // A shard spinning on its failing accept would use all of its core.
    assert!(
        cpu < wall / 2.0,
        "{cpu:.3} s of CPU in {wall:.3} s at EMFILE"
    );
    served.write_all(&get("/?during")).unwrap();
    assert_eq!(served.read_response(false).unwrap().status, 200);
    prlimit_nofile(pid, 4096);
    for (i, c) in waiting.into_iter().enumerate() {
        let mut c = Wire::new(c);
        c.write_all(&get(&format!("/?after={i}"))).unwrap();
        assert_eq!(
            c.read_response(false).unwrap().status,
            200,
            "waiting connection {i}"
        );
    }
}
