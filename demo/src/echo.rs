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
    let mut echo = Echo {
        out: Vec::new(),
        in_message: false,
    };
    loop {
        let (used, stop) = echo.answer_frames(&conn.buf);
        conn.consume(used);
        if let Stop::Close(code) = stop {
            ws::encode_frame(&mut echo.out, true, ws::OP_CLOSE, &code.to_be_bytes(), None);
        }
        if !echo.out.is_empty() {
            if conn.stream.write_all(&echo.out).is_err() {
                return;
            }
            echo.out.clear();
        }
        if !matches!(stop, Stop::NeedMore) {
            return lingering_close(&conn.stream);
        }
        match conn.fill() {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Why the echo stopped answering the frames it has.
enum Stop {
    /// The next frame is not all there yet.
    NeedMore,
    /// A frame broke the protocol: close with this code.
    Close(u16),
    /// The client's close was answered.
    PeerClosed,
}

/// The echo's answers not yet written, and whether a fragmented data message is open.
struct Echo {
    out: Vec<u8>,
    in_message: bool,
}

impl Echo {
    /// Answers the whole frames at the start of `buf`: how many bytes they took, and why it
    /// stopped there.
    fn answer_frames(&mut self, buf: &[u8]) -> (usize, Stop) {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            let h = match ws::decode_header(rest, WS_MAX_PAYLOAD) {
                Ok(Some(h)) => h,
                Ok(None) => return (used, Stop::NeedMore),
                Err(e) => return (used, Stop::Close(e.close_code())),
            };
            let Some(mask) = h.mask else {
                return (used, Stop::Close(1002)); // clients must mask
            };
            if rest.len() < h.frame_len() {
                return (used, Stop::NeedMore);
            }
            let mut payload = rest[h.header_len..h.frame_len()].to_vec();
            ws::apply_mask(&mut payload, mask);
            used += h.frame_len();
            if let Some(stop) = self.answer(&h, &payload) {
                return (used, stop);
            }
        }
    }

    /// Answers one frame; `Some` if it ends the echo.
    fn answer(&mut self, h: &ws::FrameHeader, payload: &[u8]) -> Option<Stop> {
        match h.opcode {
            ws::OP_PING => ws::encode_frame(&mut self.out, true, ws::OP_PONG, payload, None),
            ws::OP_PONG => {}
            ws::OP_CLOSE => {
                let reply: &[u8] = match payload.len() {
                    0 => &[],
                    1 => &[0x03, 0xEA], // 1002: a close body needs a 2-byte code
                    _ => &payload[..2],
                };
                ws::encode_frame(&mut self.out, true, ws::OP_CLOSE, reply, None);
                return Some(Stop::PeerClosed);
            }
            op => {
                if (op == ws::OP_CONT) != self.in_message {
                    return Some(Stop::Close(1002));
                }
                self.in_message = !h.fin;
                ws::encode_frame(&mut self.out, h.fin, op, payload, None);
            }
        }
        None
    }
}
