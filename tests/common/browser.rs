//! Headless Chromium driven over the DevTools protocol: open a page, evaluate JavaScript in it
//! while it runs. Lets a test change the proxy's state under a page that is already open and see
//! the page redraw itself, which a one-shot `--dump-dom` cannot show.
//!
//! The DevTools WebSocket is spoken with this crate's own frame helpers ([`client_frame`],
//! [`ws_recv`]); requests carry no `Origin`, which Chromium would refuse without
//! `--remote-allow-origins`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use super::wire::{Wire, send_request};
use super::ws::{client_frame, ws_recv};

/// How long Chromium may take to start and say where DevTools listens (a cold start on a loaded
/// 2-core CI box takes seconds).
const START_LIMIT: Duration = Duration::from_secs(60);

/// The first Chromium-like browser on PATH, if any.
pub fn find_chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// A headless browser with one page open, killed (and its profile removed) on drop.
pub struct Browser {
    page: Wire,
    next_id: u64,
    // Dropped last: the page connection closes before the browser is killed.
    _process: Process,
}

/// The browser's process and profile directory, cleaned up on drop (also when a test panics
/// before the page is connected).
struct Process {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts `browser` on `url` and connects to that page's DevTools endpoint.
    pub fn open(browser: &str, url: &str) -> Browser {
        Browser::open_with(browser, url, &[])
    }

    /// Like [`Browser::open`], with `extra` command-line flags given to Chromium before the URL
    /// (e.g. `--ignore-certificate-errors-spki-list=…` to trust a test certificate).
    pub fn open_with(browser: &str, url: &str, extra: &[&str]) -> Browser {
        Browser::open_with_env(browser, url, extra, &[])
    }

    /// Like [`Browser::open_with`], with `env` set for Chromium (e.g. a `HOME` whose NSS
    /// database trusts a test CA).
    pub fn open_with_env(
        browser: &str,
        url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "wtgate-chromium-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let child = Command::new(browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
            ])
            .args(extra)
            .arg(url)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start Chromium");
        let mut process = Process { child, profile };
        let devtools = devtools_addr(&mut process.child);
        Browser {
            page: connect_page(devtools, url),
            next_id: 0,
            _process: process,
        }
    }

    /// Evaluates `expr` in the page and returns its value (as JSON).
    pub fn eval(&mut self, expr: &str) -> Value {
        self.try_eval(expr)
            .unwrap_or_else(|msg| panic!("evaluating {expr}: {msg}"))
    }

    /// Like [`Browser::eval`], but DevTools' refusal (e.g. "Cannot find default execution
    /// context" while a navigation commits, or on an error page) comes back as `Err(message)`.
    pub fn try_eval(&mut self, expr: &str) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let call = json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": { "expression": expr, "returnByValue": true },
        });
        let frame = client_frame(0x1, call.to_string().as_bytes(), [7, 3, 1, 9]);
        self.page.write_all(&frame).expect("send to DevTools");
        // Events (console messages and the like) may come before the answer: skip them.
        for _ in 0..10_000 {
            let (_, _, payload) = ws_recv(&mut self.page)
                .expect("read from DevTools")
                .expect("DevTools closed the connection");
            let msg: Value = serde_json::from_slice(&payload).expect("DevTools JSON");
            if msg["id"] == id {
                if msg.get("error").is_some() {
                    return Err(msg);
                }
                return Ok(msg["result"]["result"]["value"].clone());
            }
        }
        panic!("no DevTools answer to {expr}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Reads Chromium's stderr until it says `DevTools listening on ws://ADDR/…`.
fn devtools_addr(child: &mut Child) -> SocketAddr {
    let stderr = child.stderr.take().expect("Chromium's stderr");
    let (tx, rx) = mpsc::channel();
    // The rest of stderr keeps being drained, so that Chromium never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                let addr = rest.split('/').next().unwrap_or_default().to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(START_LIMIT)
        .expect("Chromium did not say where DevTools listens");
    addr.parse().expect("DevTools address")
}

/// Finds the page showing `url` in DevTools' target list and upgrades to its WebSocket.
fn connect_page(devtools: SocketAddr, url: &str) -> Wire {
    let list = format!("GET /json/list HTTP/1.1\r\nHost: {devtools}\r\nConnection: close\r\n\r\n");
    // The page may be listed a moment after DevTools says it listens, first as about:blank.
    let page = super::eventually(&format!("a DevTools page for {url}"), || {
        let r = send_request(devtools, list.as_bytes()).expect("DevTools target list");
        let targets: Value = serde_json::from_slice(&r.body).expect("DevTools target list JSON");
        targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
            .cloned()
    });
    let ws_url = page["webSocketDebuggerUrl"].as_str().expect("debugger URL");
    let path = &ws_url[ws_url.find("/devtools/").expect("debugger path")..];
    let mut w = Wire::connect(devtools);
    let upgrade = format!(
        "GET {path} HTTP/1.1\r\nHost: {devtools}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\r\n",
        super::ws::WS_KEY
    );
    w.write_all(upgrade.as_bytes()).expect("DevTools upgrade");
    let r = w.read_response(false).expect("DevTools upgrade answer");
    assert_eq!(r.status, 101, "DevTools upgrade: {:?}", r.head);
    w
}
