//! WebSocket helpers: the backend side's own small frame codec (independent of `wtgate_demo::ws`),
//! and the client side, which uses the crate's sans-IO codec (`wtgate_demo::ws`).

use std::io;
use std::net::SocketAddr;

use super::wire::{Response, Wire};

pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Reads one frame; Ok(None) on EOF at a frame boundary.
pub fn read_frame(w: &mut Wire) -> io::Result<Option<RawFrame>> {
    while w.buffered().len() < 2 {
        if w.fill()? == 0 {
            if w.buffered().is_empty() {
                return Ok(None);
            }
            return Err(Wire::eof_err("inside a frame header"));
        }
    }
    let h = w.read_n(2)?;
    let fin = h[0] & 0x80 != 0;
    if h[0] & 0x70 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "RSV bits set"));
    }
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => u16::from_be_bytes(w.read_n(2)?.try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(w.read_n(8)?.try_into().unwrap()) as usize,
        n => n as usize,
    };
    if len > 16 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too big"));
    }
    let key = if masked { Some(w.read_n(4)?) } else { None };
    let mut payload = w.read_n(len)?;
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i & 3];
        }
    }
    Ok(Some(RawFrame {
        fin,
        opcode,
        masked,
        payload,
    }))
}

/// An unmasked (server) frame.
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    if payload.len() < 126 {
        out.push(payload.len() as u8);
    } else if payload.len() <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// The text frame a backend sends after it saw a client's close frame followed by EOF.
pub const WS_AFTER_HALF_CLOSE: &[u8] = b"backend saw your half-close";

/// RFC 6455 §1.3's example key and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A Chromium-like upgrade request (from docs/wt-traffic.txt), including `Accept-Encoding`.
pub fn ws_upgrade_request(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\n\
         Host: 127.0.0.1:9090\r\n\
         Connection: Upgrade\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0\r\n\
         Upgrade: websocket\r\n\
         Origin: http://127.0.0.1:9090\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         Cookie: WtTestCookie=ok\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    .into_bytes()
}

/// A masked (client) frame.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    wtgate_demo::ws::encode_frame(&mut out, true, opcode, payload, Some(mask));
    out
}

/// Reads one frame with `wtgate_demo::ws::decode_frame`: `(fin, opcode, payload)`; Ok(None) on EOF at
/// a frame boundary.
pub fn ws_recv(w: &mut Wire) -> io::Result<Option<(bool, u8, Vec<u8>)>> {
    for _ in 0..1_000_000 {
        if !w.buffered().is_empty() {
            let decoded = match wtgate_demo::ws::decode_frame(w.buffered(), 16 << 20) {
                Ok(Some((f, used))) => Some(((f.fin, f.opcode, f.payload[..].to_vec()), used)),
                Ok(None) => None,
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("decode_frame: {e:?}"),
                    ));
                }
            };
            if let Some((frame, used)) = decoded {
                w.consume(used);
                return Ok(Some(frame));
            }
        }
        if w.fill()? == 0 {
            if w.buffered().is_empty() {
                return Ok(None);
            }
            return Err(Wire::eof_err("inside a WebSocket frame"));
        }
    }
    Err(io::Error::other("ws_recv: no progress"))
}

/// Connects, upgrades `target` through the proxy and checks the 101. Returns the open wire and
/// the 101 response.
pub fn ws_connect(proxy: SocketAddr, target: &str) -> (Wire, Response) {
    let mut w = Wire::connect(proxy);
    w.write_all(&ws_upgrade_request(target)).unwrap();
    let r = w.read_response(false).expect("reading the upgrade answer");
    assert_eq!(
        r.status,
        101,
        "upgrade answer: {:?} {}",
        r.head,
        r.body_str()
    );
    assert_eq!(
        r.header("Sec-WebSocket-Accept"),
        Some(WS_ACCEPT),
        "{:?}",
        r.head
    );
    (w, r)
}
