//! The client side of a connection: its PROXY protocol header (where the listener takes one),
//! then request heads one after another, each handed to [`super::exchange::forward`].

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::access_log::{Kind, Line, Route};
use crate::h1::{self, ProxyHeader, RequestHead};
use crate::metrics::ShardStats;
use crate::net::{InBuf, Sock, TcpStream, timeout};
use crate::proxy::Rejection;
use crate::proxy::exchange::{self, Next};
use crate::shard::{Shard, Watch};

/// One client connection.
pub struct Client {
    pub sock: Sock,
    /// Bytes read from the client and not yet used: the rest of a head, body bytes, pipelined
    /// requests.
    pub buf: InBuf,
    pub info: ClientInfo,
    /// Set while the connection waits for its next request (a graceful stop closes it then),
    /// with the time the shard's sweeper closes it if nothing comes.
    pub idle: Rc<Watch>,
    /// The connection's place under `--maxconn`; taken by a WebSocket tunnel that goes on in a
    /// task of its own ([`super::exchange`]'s `upgraded`), which then also closes the socket.
    pub slot: Option<Slot>,
    /// Its key in the shard's table of open sockets.
    pub key: u64,
}

/// A client connection's place under `--maxconn` on its shard: given back, and the listener's
/// open-connections gauge lowered, when dropped, by whichever task ends the connection.
pub struct Slot {
    pub shard: Rc<Shard>,
    /// Which listen address it came on.
    pub listener: usize,
    pub permit: crate::engine::permits::Permit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = &self.shard.stats.listeners[self.listener].open;
        open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a request knows about the client connection it came on.
#[derive(Clone)]
pub struct ClientInfo {
    /// The client's address and port (from the PROXY protocol header where the listener takes
    /// one), for the access log.
    pub peer: Option<SocketAddr>,
    /// The client's address as text (from the PROXY protocol header where the listener takes
    /// one), for X-Forwarded-For and log lines.
    pub ip: Option<String>,
    /// The scheme the client used: `https` when a PROXY v2 header says it spoke TLS.
    pub proto: &'static str,
    /// Requests this connection carried before the current one.
    pub earlier_requests: u64,
}

impl ClientInfo {
    fn new(peer: Option<SocketAddr>, proto: &'static str) -> ClientInfo {
        ClientInfo {
            peer,
            ip: peer.map(|p| p.ip().to_canonical().to_string()),
            proto,
            earlier_requests: 0,
        }
    }
}

/// Serves one client connection until it closes; `proxy_protocol`: it starts with a PROXY
/// protocol header, which says who the client is.
pub async fn serve(slot: Slot, stream: TcpStream, proxy_protocol: bool) {
    let shard = slot.shard.clone();
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let sock = Sock::new(stream);
    let idle = Rc::new(Watch::default());
    let key = shard.track(&sock, Some(idle.clone()));
    let mut client = Client {
        sock,
        buf: InBuf::new(shard.bufs.clone()),
        info: ClientInfo::new(peer, "http"),
        idle,
        slot: Some(slot),
        key,
    };
    let listen = shard.cfg.listen[client.slot.as_ref().map_or(0, |s| s.listener)];
    // What runs once or while bytes flow is boxed, so that the connection's task, which lives
    // as long as the connection, is sized by its idle wait (issue 17): the PROXY header, the
    // handshake, each request.
    let accepted = (!proxy_protocol || Box::pin(accept_proxy_header(&shard, &mut client)).await)
        && (!listen.tls || Box::pin(start_tls(&shard, &mut client)).await);
    while accepted && wait_for_request(&shard, &mut client).await {
        let next = if listen.redirect_https {
            Box::pin(redirect_one(&shard, &mut client)).await
        } else {
            Box::pin(one_request(&shard, &mut client)).await
        };
        if next == Next::Close {
            break;
        }
        client.info.earlier_requests += 1;
    }
    // Unless a tunnel took the connection over: it closes it when it ends.
    if client.slot.is_some() {
        shard.untrack(key);
        client.sock.shutdown_both();
    }
}

/// Reads the PROXY protocol header and takes the client's address (and scheme) from it. False:
/// the connection is to be closed (not a valid header, the client went away or took longer than
/// `--request-head-timeout`), as HAProxy does.
async fn accept_proxy_header(shard: &Shard, client: &mut Client) -> bool {
    let Some(header) = read_proxy_header(shard, client).await else {
        ShardStats::count(&shard.stats.rejections[Rejection::ProxyProtocol.index()]);
        return false;
    };
    let proto = if header.ssl { "https" } else { "http" };
    if let Some(source) = header.source {
        client.info = ClientInfo::new(Some(source), proto);
    } else {
        client.info.proto = proto;
    }
    true
}

async fn read_proxy_header(shard: &Shard, client: &mut Client) -> Option<ProxyHeader> {
    let (started, limit) = (Instant::now(), shard.settings().timeouts.request_head);
    loop {
        if !client.buf.is_empty() {
            match h1::parse_proxy_header(client.buf.data()) {
                Ok(Some((header, len))) => {
                    client.buf.consume(len);
                    return Some(header);
                }
                Ok(None) => {}
                Err(e) => {
                    shard.log_failure(format_args!("closed a connection: PROXY protocol: {e}"));
                    return None;
                }
            }
        }
        let wait = limit.saturating_sub(started.elapsed());
        match timeout(wait, client.buf.read_idle(&client.sock)).await {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
}

/// The TLS handshake of a `tls` listener's connection, within `--tls-handshake-timeout`; false:
/// the connection is to be closed (counted by reason in `/metrics`). A plain HTTP request gets a
/// readable 400 first.
async fn start_tls(shard: &Shard, client: &mut Client) -> bool {
    let Some(tls) = shard.tls() else {
        return false;
    };
    let limit = shard.settings().timeouts.tls_handshake;
    let stats = &shard.stats;
    let handshake = crate::net::tls::handshake(
        &client.sock,
        &mut client.buf,
        tls.server.clone(),
        shard.stats.clone(),
    );
    // Boxed: the handshake's state (rustls' included) is not kept in every connection's task.
    let done = timeout(limit, async { Ok(Box::pin(handshake).await) }).await;
    match done {
        Ok(Ok(agreed)) => {
            ShardStats::count(&stats.tls_handshakes[agreed.index()]);
            client.info.proto = "https";
            true
        }
        Ok(Err(e)) => {
            ShardStats::count(&stats.tls_failures[e.index()]);
            if matches!(e, crate::net::tls::HandshakeError::PlainHttp) {
                let answer = crate::tls::PLAIN_HTTP_ANSWER;
                let _ = timeout(limit, async { client.sock.write_all(answer).await.0 }).await;
            }
            false
        }
        Err(_) => {
            ShardStats::count(&stats.tls_timeouts);
            false
        }
    }
}

/// Waits for the first bytes of the connection's next request, with nothing but the poll of its
/// socket (no buffer, no request state, no timer), marked idle meanwhile (a graceful stop
/// closes it then). False: the connection ends (the shard drains, or the client stayed silent
/// for `--keepalive-timeout`, or `--request-head-timeout` before its first request).
async fn wait_for_request(shard: &Shard, client: &mut Client) -> bool {
    if shard.draining() {
        return false;
    }
    if !client.buf.is_empty() {
        return true;
    }
    client.buf.release();
    let t = shard.settings().timeouts;
    let wait = match client.info.earlier_requests {
        0 => t.request_head,
        _ => t.keepalive,
    };
    // No timer of its own: the shard's sweeper shuts the socket down at the deadline, which
    // makes it readable (EOF), and the request's read then finds the connection over. Readable
    // also at an error.
    client.idle.idle_for(wait);
    let ready = client.sock.readable().await;
    client.idle.busy();
    ready.is_ok() && !shard.draining()
}

/// One request of the connection, from its head to the end of its response.
async fn one_request(shard: &Shard, client: &mut Client) -> Next {
    let head = match read_request_head(shard, client).await {
        Ok(Some(head)) => head,
        Ok(None) => return Next::Close,
        Err(rejection) => {
            ShardStats::count(&shard.stats.rejections[rejection.index()]);
            let (started, read) = (Instant::now(), client.buf.data().len());
            let sent = answer(shard, &client.sock, rejection.status(), true).await;
            log_rejection(shard, client, rejection, started, (read, sent));
            return Next::Close;
        }
    };
    ShardStats::count(&shard.stats.requests);
    exchange::forward(shard, client, head).await
}

/// One request of a `redirect-https` listener's connection, answered with its redirect.
async fn redirect_one(shard: &Shard, client: &mut Client) -> Next {
    let (answer, close) = match read_request_head(shard, client).await {
        Ok(Some(head)) => {
            let answer = h1::https_redirect(&head, client.buf.data());
            client.buf.consume(head.head_len);
            shard.give_request_head(head);
            match answer {
                Some(a) => {
                    let close = a.ends_with(b"close\r\n\r\n");
                    (a, close)
                }
                None => (h1::error_response(400, true), true),
            }
        }
        Ok(None) => return Next::Close,
        Err(rejection) => (h1::error_response(rejection.status(), true), true),
    };
    let written = timeout(shard.settings().timeouts.client, async {
        client.sock.write_all(answer).await.0
    })
    .await;
    if written.is_err() || close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// Reads until a whole request head is buffered. `Ok(None)`: the client closed or idled out
/// between requests.
async fn read_request_head(
    shard: &Shard,
    client: &mut Client,
) -> Result<Option<RequestHead>, Rejection> {
    let mut head = shard.take_request_head();
    match fill_request_head(shard, client, &mut head).await {
        Ok(true) => Ok(Some(head)),
        other => {
            shard.give_request_head(head);
            other.map(|_| None)
        }
    }
}

/// Reads until `head` holds a whole request head (`Ok(true)`) or the client is gone (`Ok(false)`).
/// The timeouts are those in force when the wait began: a reload meanwhile applies to the next.
async fn fill_request_head(
    shard: &Shard,
    client: &mut Client,
    head: &mut RequestHead,
) -> Result<bool, Rejection> {
    let t = shard.settings().timeouts;
    let mut started: Option<Instant> = None;
    loop {
        if !client.buf.is_empty() {
            match h1::parse_request_into(client.buf.data(), &shard.limits, head) {
                Ok(true) => return Ok(true),
                Ok(false) if client.buf.is_full() => return Err(Rejection::HeadTooLarge),
                Ok(false) => {}
                Err(e) => return Err(Rejection::from_status(e.status())),
            }
            started.get_or_insert_with(Instant::now);
        }
        let wait = match started {
            Some(s) => t.request_head.saturating_sub(s.elapsed()),
            None if client.info.earlier_requests == 0 => t.request_head,
            None => t.keepalive,
        };
        // A request's first read comes after `wait_for_request` saw the socket readable: it
        // reads at once, without polling again (one ring operation less per request).
        let read = if started.is_none() && client.buf.is_empty() {
            timeout(wait, client.buf.read_from(&client.sock)).await
        } else {
            timeout(wait, client.buf.read_idle(&client.sock)).await
        };
        match read {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut && started.is_some() => {
                return Err(Rejection::HeadTimeout);
            }
            Err(_) => return Ok(false),
        }
    }
}

/// The access-log line of a request refused before routing: no request line (its head is not
/// valid), `bytes` read from the client and written to it.
fn log_rejection(
    shard: &Shard,
    client: &Client,
    rejection: Rejection,
    started: Instant,
    bytes: (usize, usize),
) {
    shard.access_log.write(&Line {
        kind: Kind::Http,
        client: client.info.peer,
        backend: None,
        route: Route::None,
        started,
        connected: None,
        first_byte: None,
        status: Some(rejection.status()),
        bytes_in: bytes.0 as u64,
        bytes_out: bytes.1 as u64,
        error: Some(rejection.name()),
        request: None,
    });
}

/// Answers a status of the proxy's own; returns the bytes written (0 if the write failed). Errors
/// writing it don't matter otherwise: we close anyway.
pub async fn answer(shard: &Shard, client: &Sock, status: u16, close: bool) -> usize {
    let resp = h1::error_response(status, close);
    let len = resp.len();
    let written = timeout(shard.settings().timeouts.client, async {
        client.write_all(resp).await.0
    })
    .await;
    if written.is_ok() { len } else { 0 }
}
