//! The blocking client of `wtgate admin`: one request per connection to the admin listener,
//! responses read with the h1 core.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::h1::{self, BodyFramer};
use crate::health::Admin;

/// Where `wtgate admin` looks when given no `--url`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8404";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (the status page is the largest, about 10 KiB).
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug)]
pub enum ClientError {
    BadUrl(String),
    /// Could not connect; `hostport` is what `--admin` would have to be.
    Connect {
        url: String,
        hostport: String,
        err: io::Error,
    },
    Io {
        url: String,
        err: io::Error,
    },
    /// Not an HTTP answer, or not the JSON expected.
    BadResponse(String),
    /// The listener answered with an error; `message` is its `error` field.
    Status {
        status: u16,
        message: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl(why) => f.write_str(why),
            ClientError::Connect { url, hostport, err } => write!(
                f,
                "cannot reach the admin listener at {url}: {err}: is wtgate running with \
                 --admin {hostport}? (give its address with --url)"
            ),
            ClientError::Io { url, err } => write!(f, "talking to {url}: {err}"),
            ClientError::BadResponse(why) => write!(f, "unexpected answer: {why}"),
            ClientError::Status { status: 401, .. } => f.write_str(
                "the admin listener wants a token (401): pass the --admin-token wtgate runs \
                 with as --token TOKEN or in WTGATE_ADMIN_TOKEN",
            ),
            ClientError::Status { status, message } => write!(f, "{message} ({status})"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A state change as the listener reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub backend: String,
    pub old: String,
    pub new: String,
}

/// `GET /backends/{prefix}/sessions`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionsInfo {
    pub backend: String,
    pub live: u64,
    pub since_last_request: Option<Duration>,
}

/// How a wait for a drain ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Drained {
    /// No live session left.
    Empty,
    /// The timeout passed with these left.
    TimedOut(SessionsInfo),
}

pub struct AdminClient {
    url: String,
    hostport: String,
    host: String,
    /// Path prefix before the endpoints (a listener behind a path-routing proxy); no final `/`.
    base: String,
    token: Option<String>,
}

/// An admin listener's address as `wtgate admin --url` and `[admin] peers` take it, split up.
struct Parsed {
    hostport: String,
    host: String,
    base: String,
}

/// Splits `http://HOST[:PORT][/BASE]` (the scheme may be left out); the error says what to write.
fn parse_url(url: &str) -> Result<Parsed, String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(
                "the admin listener speaks plain HTTP: use http:// (reach a remote one \
                        through a tunnel, e.g. ssh -L 8404:127.0.0.1:8404 host)"
                    .into(),
            );
        }
        Some(_) => return Err("only http:// URLs are spoken".into()),
        // The scheme may be left out: `127.0.0.1:8404`.
        None => url,
    };
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("expected http://HOST:PORT, e.g. http://127.0.0.1:8404".into());
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let hostport = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Parsed {
        hostport,
        host: authority.to_string(),
        base: base.to_string(),
    })
}

/// Whether `url` is an admin listener's address `wtgate admin` can speak to; if not, why not
/// (for `[admin] peers` in a config file).
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

impl AdminClient {
    /// `url`: `http://HOST[:PORT][/BASE]`.
    pub fn new(url: &str, token: Option<String>) -> Result<AdminClient, ClientError> {
        let Parsed {
            hostport,
            host,
            base,
        } = parse_url(url).map_err(|why| ClientError::BadUrl(format!("--url '{url}': {why}")))?;
        Ok(AdminClient {
            url: url.trim_end_matches('/').to_string(),
            host,
            hostport,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The listener's URL as given (without a final `/`), to name it in messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One request; the status and the body of the answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut stream = self.connect()?;
        let io = |err| ClientError::Io {
            url: self.url.clone(),
            err,
        };
        // The header says this is no web page: a listener without a token takes state changes
        // only with it (see `guard`); older listeners ignore it.
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{}: 1\r\n",
            self.base,
            self.host,
            super::ADMIN_HEADER
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if method == "POST" || !body.is_empty() {
            req.push_str(&format!(
                "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).map_err(io)?;
        read_response(&mut stream, method == "HEAD").map_err(|e| match e {
            Failure::Io(err) => io(err),
            Failure::Bad(why) => ClientError::BadResponse(why),
        })
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let connect_err = |err| ClientError::Connect {
            url: self.url.clone(),
            hostport: self.hostport.clone(),
            err,
        };
        let addrs: Vec<SocketAddr> = self
            .hostport
            .to_socket_addrs()
            .map_err(|e| ClientError::BadUrl(format!("--url '{}': {e}", self.url)))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }

    /// A request whose 2xx answer is JSON; any other answer is a [`ClientError::Status`].
    fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let (status, bytes) = self.request(method, path, body)?;
        let value: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
        if !(200..300).contains(&status) {
            let message = match &value {
                Ok(v) => v["error"].as_str().map(str::to_string),
                Err(_) => None,
            };
            let message = message.unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().into());
            return Err(ClientError::Status { status, message });
        }
        value.map_err(|e| ClientError::BadResponse(format!("{method} {path}: not JSON: {e}")))
    }

    /// Sets a backend's admin state.
    pub fn set_state(&self, prefix: &str, state: Admin) -> Result<StateChange, ClientError> {
        let path = format!("/backends/{prefix}/state");
        let v = self.json("POST", &path, Some(state.as_str()))?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| ClientError::BadResponse(format!("POST {path}: no '{k}' in {v}")))
        };
        Ok(StateChange {
            backend: field("backend")?,
            old: field("old")?,
            new: field("new")?,
        })
    }

    /// `POST /reload`: the one-line summary of what changed, and any warnings and settings that
    /// need a restart, as lines to show. A refused file is a [`ClientError::Status`] whose
    /// message holds every error, one per line.
    pub fn reload(&self) -> Result<Vec<String>, ClientError> {
        let v = self.json("POST", "/reload", None)?;
        let summary = v["summary"].as_str().unwrap_or("reloaded");
        let mut lines = vec![format!(
            "reloaded (generation {}): {summary}",
            v["generation"]
        )];
        let strings = |k: &str| -> Vec<String> {
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        lines.extend(
            strings("warnings")
                .into_iter()
                .map(|w| format!("warning: {w}")),
        );
        let restart = strings("need_restart");
        if !restart.is_empty() {
            lines.push(format!("kept until a restart: {}", restart.join(", ")));
        }
        if let Some(n) = v["pending_shards"].as_u64().filter(|&n| n > 0) {
            lines.push(format!(
                "{n} shard(s) had not applied it yet when wtgate answered"
            ));
        }
        Ok(lines)
    }

    pub fn sessions(&self, prefix: &str) -> Result<SessionsInfo, ClientError> {
        let path = format!("/backends/{prefix}/sessions");
        let v = self.json("GET", &path, None)?;
        let live = v["live"]
            .as_u64()
            .ok_or_else(|| ClientError::BadResponse(format!("GET {path}: no 'live' in {v}")))?;
        Ok(SessionsInfo {
            backend: v["backend"].as_str().unwrap_or(prefix).to_string(),
            live,
            since_last_request: v["since_last_request_s"]
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
        })
    }

    /// Polls the backend's live sessions every `every` until none is left or `timeout` passed;
    /// `progress` sees each answer.
    pub fn wait_drained(
        &self,
        prefix: &str,
        timeout: Duration,
        every: Duration,
        progress: &mut dyn FnMut(&SessionsInfo),
    ) -> Result<Drained, ClientError> {
        let start = Instant::now();
        loop {
            let s = self.sessions(prefix)?;
            progress(&s);
            if s.live == 0 {
                return Ok(Drained::Empty);
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(Drained::TimedOut(s));
            }
            std::thread::sleep(every.min(left));
        }
    }
}

/// Several admin listeners, asked at once: the instances of an active-active wtgate behind an L4
/// balancer, which `wtgate admin` operates as one (`--url` repeated, or `[admin] peers`).
///
/// Every request goes to every instance, each on a thread of its own, so that an instance that
/// does not answer costs its connect timeout once, not once per instance; the answers come back
/// in the instances' order, each on its own: nothing is undone where another instance failed.
pub struct Fleet {
    clients: Vec<AdminClient>,
}

/// How a wait for a drain on every instance ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetDrained {
    /// Every instance answered, in the same round, that the backend has no live session left.
    Empty,
    /// The timeout passed; each instance's last answer, in the instances' order.
    TimedOut(Vec<SessionsInfo>),
}

impl Fleet {
    /// A client for each of `urls`, all with `token`; the first bad URL is the error.
    pub fn new(urls: &[String], token: Option<String>) -> Result<Fleet, ClientError> {
        let clients = urls
            .iter()
            .map(|u| AdminClient::new(u, token.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Fleet { clients })
    }

    pub fn clients(&self) -> &[AdminClient] {
        &self.clients
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// `ask` of every instance at once; the answers in the instances' order.
    pub fn each<T: Send>(
        &self,
        ask: impl Fn(&AdminClient) -> Result<T, ClientError> + Sync,
    ) -> Vec<Result<T, ClientError>> {
        if let [one] = &self.clients[..] {
            return vec![ask(one)];
        }
        let ask = &ask;
        std::thread::scope(|s| {
            let asking: Vec<_> = self
                .clients
                .iter()
                .map(|c| s.spawn(move || ask(c)))
                .collect();
            asking
                .into_iter()
                .map(|a| {
                    a.join().unwrap_or_else(|_| {
                        Err(ClientError::BadResponse(
                            "the request's thread panicked".into(),
                        ))
                    })
                })
                .collect()
        })
    }

    /// Polls every instance's live sessions of `prefix` every `every` until all of them answer
    /// none in the same round, or `timeout` passed; `progress` sees each round. An instance that
    /// does not answer ends the wait: its index and why (its sessions are unknown, so the drain
    /// cannot be confirmed).
    pub fn wait_drained(
        &self,
        prefix: &str,
        timeout: Duration,
        every: Duration,
        progress: &mut dyn FnMut(&[SessionsInfo]),
    ) -> Result<FleetDrained, (usize, ClientError)> {
        let start = Instant::now();
        loop {
            let mut round = Vec::with_capacity(self.clients.len());
            for (i, answer) in self.each(|c| c.sessions(prefix)).into_iter().enumerate() {
                round.push(answer.map_err(|e| (i, e))?);
            }
            progress(&round);
            if round.iter().all(|s| s.live == 0) {
                return Ok(FleetDrained::Empty);
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(FleetDrained::TimedOut(round));
            }
            std::thread::sleep(every.min(left));
        }
    }
}

enum Failure {
    Io(io::Error),
    Bad(String),
}

/// Reads one response to the end of its body (or to the close, the listener always closes).
fn read_response(stream: &mut TcpStream, head_request: bool) -> Result<(u16, Vec<u8>), Failure> {
    let limits = h1::Limits::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut eof = false;
    let head = loop {
        match h1::parse_response(&buf, &limits, head_request) {
            Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                buf.drain(..h.head_len);
                continue;
            }
            Ok(Some(h)) => break h,
            Ok(None) if eof => return Err(Failure::Bad("the connection closed mid-head".into())),
            Ok(None) => {}
            Err(e) => return Err(Failure::Bad(e.to_string())),
        }
        let n = read_some(stream, &mut chunk).map_err(Failure::Io)?;
        eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut framer = BodyFramer::new(head.framing);
    let mut body = Vec::new();
    let mut at = head.head_len;
    loop {
        let adv = framer
            .advance_with(&buf[at..], &mut |d: &[u8]| body.extend_from_slice(d))
            .map_err(|e| Failure::Bad(e.to_string()))?;
        at += adv.consumed;
        if adv.done {
            return Ok((head.status, body));
        }
        if body.len() > MAX_RESPONSE {
            return Err(Failure::Bad("the answer is too large".into()));
        }
        let n = read_some(stream, &mut chunk).map_err(Failure::Io)?;
        if n == 0 {
            framer.on_eof().map_err(|e| Failure::Bad(e.to_string()))?;
            return Ok((head.status, body));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One read, again if a signal interrupted it (a process that handles signals, or a test
/// harness, gets `EINTR` from a blocking read).
fn read_some(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = AdminClient::new("http://127.0.0.1:8404", None).unwrap();
        assert_eq!((&*c.hostport, &*c.base), ("127.0.0.1:8404", ""));
        let c = AdminClient::new("http://[::1]:9000/wtgate/", Some(String::new())).unwrap();
        assert_eq!((&*c.hostport, &*c.base), ("[::1]:9000", "/wtgate"));
        assert_eq!(c.token, None, "an empty token is no token");
        let c = AdminClient::new("admin.example", None).unwrap();
        assert_eq!(c.hostport, "admin.example:80");
        let c = AdminClient::new("http://[::1]", None).unwrap();
        assert_eq!(c.hostport, "[::1]:80");
        for bad in ["https://h:1", "ftp://h", "http://", "http://u@h:1"] {
            let e = AdminClient::new(bad, None).err().expect(bad).to_string();
            assert!(e.contains(bad), "{e}");
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(check_url("10.0.0.2:8404"), Ok(()));
    }

    /// A listener that answers each of `n` connections with `body` (JSON, 200), then stops.
    fn answering(n: usize, body: &'static str) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut s in l.incoming().take(n).map_while(Result::ok) {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes());
            }
        });
        url
    }

    /// Every instance is asked; each answer stays with its instance, in order, a failure too.
    #[test]
    fn a_fleet_keeps_each_instances_answer() {
        let one = answering(
            1,
            r#"{"backend":"wt1","live":2,"since_last_request_s":1.5}"#,
        );
        let closed = {
            let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", gone.local_addr().unwrap())
        };
        let two = answering(
            1,
            r#"{"backend":"wt1","live":0,"since_last_request_s":null}"#,
        );
        let fleet = Fleet::new(&[one, closed.clone(), two], None).unwrap();
        assert_eq!(fleet.len(), 3);
        let answers = fleet.each(|c| c.sessions("wt1"));
        assert_eq!(answers[0].as_ref().unwrap().live, 2);
        match &answers[1] {
            Err(ClientError::Connect { url, .. }) => assert_eq!(url, &closed),
            other => panic!("{other:?}"),
        }
        assert_eq!(answers[2].as_ref().unwrap().since_last_request, None);
        assert!(Fleet::new(&["https://h:1".into()], None).is_err());
    }
}
