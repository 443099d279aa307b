//! The WebSocket echo a demo backend turns into after a 101.

use std::io::Write;
use std::time::Duration;

use crate::server::{Conn, lingering_close};
use crate::ws;

const WS_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const WS_MAX_PAYLOAD: usize = 1 << 20;

/// Echoes WebSocket frames until the client closes, errs, or stays idle for 2 minutes.
pub(crate) fn ws_echo(mut conn: Conn) {
    let _ = conn.stream.set_read_timeout(Some(WS_IDLE_TIMEOUT));
    let mut out = Vec::new();
    let mut in_message = false; // inside a fragmented data message
    loop {
        let mut used = 0;
        let mut close_code = None;
        let mut peer_closed = false;
        while close_code.is_none() && !peer_closed {
            let rest = &conn.buf[used..];
            let h = match ws::decode_header(rest, WS_MAX_PAYLOAD) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    close_code = Some(e.close_code());
                    break;
                }
            };
            let Some(mask) = h.mask else {
                close_code = Some(1002); // clients must mask
                break;
            };
            if rest.len() < h.frame_len() {
                break;
            }
            let mut payload = rest[h.header_len..h.frame_len()].to_vec();
            ws::apply_mask(&mut payload, mask);
            used += h.frame_len();
            match h.opcode {
                ws::OP_PING => ws::encode_frame(&mut out, true, ws::OP_PONG, &payload, None),
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    let reply: &[u8] = match payload.len() {
                        0 => &[],
                        1 => &[0x03, 0xEA], // 1002: a close body needs a 2-byte code
                        _ => &payload[..2],
                    };
                    ws::encode_frame(&mut out, true, ws::OP_CLOSE, reply, None);
                    peer_closed = true;
                }
                op => {
                    if (op == ws::OP_CONT) != in_message {
                        close_code = Some(1002);
                        break;
                    }
                    in_message = !h.fin;
                    ws::encode_frame(&mut out, h.fin, op, &payload, None);
                }
            }
        }
        conn.consume(used);
        if let Some(code) = close_code {
            ws::encode_frame(&mut out, true, ws::OP_CLOSE, &code.to_be_bytes(), None);
        }
        if !out.is_empty() {
            if conn.stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close_code.is_some() || peer_closed {
            return lingering_close(&conn.stream);
        }
        match conn.fill() {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
