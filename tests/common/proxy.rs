//! The proxy under test: starting an engine with a config for the test backends, and the
//! common setups built on it.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use wtgate::config::{BackendConfig, Config};

use super::backend::{Behavior, TestBackend};
use super::wire::Wire;

pub struct Proxy {
    pub addr: SocketAddr,
    engine: Option<wtgate::engine::Engine>,
}

impl Proxy {
    /// The running engine, for its stats and admin controls.
    pub fn engine(&self) -> &wtgate::engine::Engine {
        self.engine.as_ref().expect("engine running")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(e) = self.engine.take() {
            let (tx, rx) = mpsc::channel();
            // Dropped on another thread so that a shard that never stops (e.g. spinning) fails
            // the test instead of hanging the whole suite; such a thread is then left behind.
            let _t = thread::spawn(move || {
                drop(e);
                let _ = tx.send(());
            });
            if rx.recv_timeout(Duration::from_secs(15)).is_err() && !thread::panicking() {
                panic!("dropping the Engine did not return within 15 s (shards not stopping?)");
            }
        }
    }
}

/// Config for these backends: listen on 127.0.0.1:0, one shard; `tweak` may change anything.
pub fn proxy_config(backends: &[(&str, SocketAddr)], tweak: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        backends: backends
            .iter()
            .map(|(p, a)| BackendConfig::parse(&format!("{p}={a}")).unwrap())
            .collect(),
        threads: 1,
        // Many engines run in one test process: pinned, every engine's shard 0 would share CPU 0
        // however idle the other cores are.
        pin: false,
        ..Config::default()
    };
    tweak(&mut cfg);
    cfg
}

/// Starts the proxy; it is accepting when this returns.
pub fn start_proxy(backends: &[(&str, SocketAddr)], tweak: impl FnOnce(&mut Config)) -> Proxy {
    let cfg = proxy_config(backends, tweak);
    let engine = wtgate::engine::Engine::start(cfg).expect("Engine::start");
    let addr = engine.local_addrs()[0];
    Proxy {
        addr,
        engine: Some(engine),
    }
}

/// Two normal backends, `wt1` and `wt2`, behind a proxy.
pub struct Pair {
    pub b1: TestBackend,
    pub b2: TestBackend,
    pub proxy: Proxy,
}

pub fn start_pair(tweak: impl FnOnce(&mut Config)) -> Pair {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let b2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], tweak);
    Pair { b1, b2, proxy }
}

/// A backend answering `bytes` to `request` makes the proxy answer 502 with `Connection: close`,
/// then close.
pub fn expect_502_from(bytes: &'static [u8], request: &[u8]) {
    let b = TestBackend::start("wt1", Behavior::Raw(bytes));
    let proxy = start_proxy(&[b.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(request).unwrap();
    let r = w
        .read_response(false)
        .unwrap_or_else(|e| panic!("no 502 for {:?}: {e}", String::from_utf8_lossy(bytes)));
    assert_eq!(r.status, 502, "{:?} {}", r.head, r.body_str());
    assert!(r.head.has_token("Connection", "close"), "{:?}", r.head);
    w.expect_closed().unwrap();
}
