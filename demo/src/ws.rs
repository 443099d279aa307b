//! Sans-IO WebSocket framing (RFC 6455 §5) and the handshake's `Sec-WebSocket-Accept` (§4.2.2).
//!
//! No sockets and no connection state: callers own their buffers, feed bytes in and get frames out.
//! "Need more bytes" is a normal result (`Ok(None)`), not an error. Used by the demo backend, the
//! integration tests and the load generator; the proxy itself never parses frames (it tunnels bytes).
//!
//! What is checked when decoding: reserved bits (no extensions are negotiated here), known opcodes,
//! control frames unfragmented and ≤ 125 bytes, the 64-bit length's top bit, and `max_payload`
//! (checked as soon as the length is known, before the payload arrives). Not checked here, left to the
//! endpoint: whether frames are masked (see [`FrameHeader::mask`]), the order of fragments, UTF-8 of
//! text, close payloads, and non-minimal length encodings (accepted).

use std::fmt;

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame (UTF-8 payload).
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame (optional 2-byte status code + UTF-8 reason).
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Largest payload a control frame (close, ping, pong) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest frame header: 2 bytes + 8-byte extended length + 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
/// The key is used as given (trim header whitespace before calling).
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID);
    base64(&sha.digest().bytes())
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One decoded frame, payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A decoded frame header, for callers that want the payload in place (no copy).
/// The payload is `buf[header_len..header_len + payload_len]`, still masked if `mask` is `Some`
/// (unmask it with [`apply_mask`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: u8,
    /// The masking key; clients must mask, servers must not (RFC 6455 §5.1).
    pub mask: Option<[u8; 4]>,
    pub header_len: usize,
    pub payload_len: usize,
}

impl FrameHeader {
    /// Header plus payload: the bytes this frame occupies in the buffer.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why a byte stream is not a valid frame. Each of these should end the connection
/// (send a close frame with [`WsError::close_code`], then close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// RSV1–3 set without a negotiated extension.
    ReservedBits,
    /// Opcode 3–7 or 0xB–0xF.
    UnknownOpcode(u8),
    /// A close/ping/pong with more than 125 bytes of payload.
    ControlTooLong(u64),
    /// A close/ping/pong without FIN.
    ControlFragmented,
    /// 64-bit payload length with the most significant bit set.
    InvalidLength,
    /// Payload longer than the caller's limit.
    TooLong { len: u64, max: usize },
}

impl WsError {
    /// The close status code to send for this error: 1009 (message too big) or 1002 (protocol error).
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::TooLong { .. } => 1009,
            _ => 1002,
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::ReservedBits => write!(f, "websocket frame has reserved bits set"),
            WsError::UnknownOpcode(op) => write!(f, "websocket frame has unknown opcode {op:#x}"),
            WsError::ControlTooLong(len) => {
                write!(
                    f,
                    "websocket control frame payload of {len} bytes exceeds 125"
                )
            }
            WsError::ControlFragmented => write!(f, "websocket control frame is fragmented"),
            WsError::InvalidLength => {
                write!(f, "websocket 64-bit payload length has its top bit set")
            }
            WsError::TooLong { len, max } => {
                write!(
                    f,
                    "websocket payload of {len} bytes exceeds the limit of {max}"
                )
            }
        }
    }
}

impl std::error::Error for WsError {}

/// XORs `buf` with the masking key, as if `buf` started at payload offset 0. Masking and
/// unmasking are the same operation.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key index restarts at 0.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Appends one frame to `out`. `mask: Some(k)` for client→server frames (the payload is masked
/// with `k`), `None` for server→client frames. Only the low 4 bits of `opcode` are used; the caller
/// keeps control frames ≤ 125 bytes and unfragmented.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    debug_assert!(opcode <= 0xF, "opcode {opcode:#x} does not fit in 4 bits");
    let len = payload.len();
    out.reserve(MAX_HEADER_LEN + len);
    out.push(u8::from(fin) << 7 | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key);
        }
        None => out.extend_from_slice(payload),
    }
}

/// Decodes the header of the frame at the start of `buf`. `Ok(None)`: the header is incomplete.
/// `Ok(Some(h))` does not mean the payload has arrived: check `buf.len() >= h.frame_len()`.
pub fn decode_header(buf: &[u8], max_payload: usize) -> Result<Option<FrameHeader>, WsError> {
    let &[b0, b1, ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let len7 = b1 & 0x7F;
    check_opcode(buf, opcode, fin, len7)?;
    let Some((len, mut header_len)) = payload_len(buf, len7)? else {
        return Ok(None);
    };
    if len > max_payload as u64 {
        return Err(WsError::TooLong {
            len,
            max: max_payload,
        });
    }
    let mask = if b1 & 0x80 != 0 {
        if buf.len() < header_len + 4 {
            return Ok(None);
        }
        let key = buf_array(&buf[header_len..header_len + 4]);
        header_len += 4;
        Some(key)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        header_len,
        payload_len: len as usize,
    }))
}

/// Known opcodes only, and control frames unfragmented and short; `len7` is the 7-bit length.
fn check_opcode(buf: &[u8], opcode: u8, fin: bool, len7: u8) -> Result<(), WsError> {
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => Ok(()),
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin {
                return Err(WsError::ControlFragmented);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                // 126/127 announce at least 126 bytes; report the real length when we have it.
                let len = match len7 {
                    126 if buf.len() >= 4 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
                    127 if buf.len() >= 10 => u64::from_be_bytes(buf_array(&buf[2..10])),
                    _ => 126,
                };
                return Err(WsError::ControlTooLong(len));
            }
            Ok(())
        }
        op => Err(WsError::UnknownOpcode(op)),
    }
}

/// The payload length and the header's length up to the masking key; `None` while the extended
/// length is incomplete.
fn payload_len(buf: &[u8], len7: u8) -> Result<Option<(u64, usize)>, WsError> {
    Ok(Some(match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(buf_array(&buf[2..10]));
            if len >> 63 != 0 {
                return Err(WsError::InvalidLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    }))
}

/// Decodes the frame at the start of `buf`. `Ok(None)`: need more bytes.
/// `Ok(Some((frame, used)))`: the frame, payload unmasked, and how many bytes of `buf` it took.
pub fn decode_frame(buf: &[u8], max_payload: usize) -> Result<Option<(Frame, usize)>, WsError> {
    let Some(h) = decode_header(buf, max_payload)? else {
        return Ok(None);
    };
    if buf.len() < h.frame_len() {
        return Ok(None);
    }
    let mut payload = buf[h.header_len..h.frame_len()].to_vec();
    if let Some(key) = h.mask {
        apply_mask(&mut payload, key);
    }
    Ok(Some((
        Frame {
            fin: h.fin,
            opcode: h.opcode,
            payload,
        },
        h.frame_len(),
    )))
}

/// Copies a slice of known length N into an array (callers pass exactly N bytes).
fn buf_array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn decode_all(buf: &[u8]) -> (Frame, usize) {
        decode_frame(buf, MAX).unwrap().unwrap()
    }

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // From docs/wt-traffic.txt: a real browser handshake answered by Wt.
        assert_eq!(
            accept_key("QCUVFQhbuTMi1xe8BM4rpQ=="),
            "8HY4GeqsiL1h4lqHrC4npTiRHGU="
        );
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xFF, 0xFE, 0xFD]), "//79");
    }

    #[test]
    fn rfc_unmasked_hello() {
        let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (f, n) = decode_all(&wire);
        assert_eq!(n, 7);
        assert_eq!(
            f,
            Frame {
                fin: true,
                opcode: OP_TEXT,
                payload: b"Hello".to_vec()
            }
        );
        let mut out = Vec::new();
        encode_frame(&mut out, true, OP_TEXT, b"Hello", None);
        assert_eq!(out, wire);
    }

    #[test]
    fn rfc_masked_hello() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (f, n) = decode_all(&wire);
        assert_eq!(n, 11);
        assert_eq!(
            f,
            Frame {
                fin: true,
                opcode: OP_TEXT,
                payload: b"Hello".to_vec()
            }
        );
        let h = decode_header(&wire, MAX).unwrap().unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!((h.header_len, h.payload_len), (6, 5));
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            true,
            OP_TEXT,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(out, wire);
    }

    #[test]
    fn rfc_fragmented_and_control_examples() {
        // "Hel" + "lo" in two fragments, back to back in one buffer.
        let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let (f1, n1) = decode_all(&wire);
        assert_eq!(
            f1,
            Frame {
                fin: false,
                opcode: OP_TEXT,
                payload: b"Hel".to_vec()
            }
        );
        let (f2, n2) = decode_all(&wire[n1..]);
        assert_eq!(
            f2,
            Frame {
                fin: true,
                opcode: OP_CONT,
                payload: b"lo".to_vec()
            }
        );
        assert_eq!(n1 + n2, wire.len());
        // Unmasked ping, masked pong.
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(decode_all(&ping).0.opcode, OP_PING);
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (f, _) = decode_all(&pong);
        assert_eq!((f.opcode, f.payload.as_slice()), (OP_PONG, &b"Hello"[..]));
    }

    #[test]
    fn length_encodings() {
        for (len, header) in [
            (0usize, vec![0x82, 0x00]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0x00, 126]),
            (256, vec![0x82, 126, 0x01, 0x00]),
            (65535, vec![0x82, 126, 0xFF, 0xFF]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
            (100_000, vec![0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x86, 0xA0]),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            encode_frame(&mut out, true, OP_BINARY, &payload, None);
            assert_eq!(&out[..header.len()], &header[..], "len {len}");
            assert_eq!(out.len(), header.len() + len);
            let (f, n) = decode_all(&out);
            assert_eq!((n, f.payload == payload), (out.len(), true), "len {len}");

            let mut masked = Vec::new();
            let key = [1, 2, 3, 0xF0];
            encode_frame(&mut masked, false, OP_BINARY, &payload, Some(key));
            assert_eq!(masked[1] & 0x80, 0x80);
            let (f, n) = decode_all(&masked);
            assert_eq!(
                (n, f.fin, f.payload == payload),
                (masked.len(), false, true),
                "len {len}"
            );
        }
    }

    #[test]
    fn split_input_needs_more_until_complete() {
        for len in [5usize, 200, 70_000] {
            let payload = vec![b'x'; len];
            let mut wire = Vec::new();
            encode_frame(&mut wire, true, OP_TEXT, &payload, Some([9, 8, 7, 6]));
            for cut in 0..wire.len() {
                assert_eq!(
                    decode_frame(&wire[..cut], MAX),
                    Ok(None),
                    "len {len} cut {cut}"
                );
            }
            // Trailing bytes of the next frame are left alone.
            wire.extend_from_slice(&[0x81, 0x80]);
            let (f, n) = decode_frame(&wire, MAX).unwrap().unwrap();
            assert_eq!((f.payload.len(), n), (len, wire.len() - 2));
        }
    }

    #[test]
    fn mask_matches_bytewise_xor_at_every_length() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut fast = orig.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = orig
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow);
            apply_mask(&mut fast, key);
            assert_eq!(fast, orig);
        }
    }

    #[test]
    fn errors() {
        assert_eq!(decode_frame(&[0xC1, 0x00], MAX), Err(WsError::ReservedBits));
        assert_eq!(decode_frame(&[0x91, 0x00], MAX), Err(WsError::ReservedBits));
        assert_eq!(
            decode_frame(&[0x83, 0x00], MAX),
            Err(WsError::UnknownOpcode(3))
        );
        assert_eq!(
            decode_frame(&[0x8B, 0x00], MAX),
            Err(WsError::UnknownOpcode(0xB))
        );
        assert_eq!(
            decode_frame(&[0x09, 0x00], MAX),
            Err(WsError::ControlFragmented)
        );
        assert_eq!(
            decode_frame(&[0x89, 126], MAX),
            Err(WsError::ControlTooLong(126))
        );
        assert_eq!(
            decode_frame(&[0x88, 126, 0x01, 0x00], MAX),
            Err(WsError::ControlTooLong(256))
        );
        let mut ok = Vec::new();
        encode_frame(&mut ok, true, OP_PING, &[0; 125], None);
        assert!(decode_frame(&ok, MAX).unwrap().is_some());
        let top = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(decode_frame(&top, usize::MAX), Err(WsError::InvalidLength));
        // The limit is enforced from the header alone, before the payload arrives.
        assert_eq!(
            decode_frame(&[0x82, 126, 0x01, 0x00], 255),
            Err(WsError::TooLong { len: 256, max: 255 })
        );
        assert!(
            decode_frame(&[0x82, 126, 0x01, 0x00], 256)
                .unwrap()
                .is_none()
        );
        assert_eq!(WsError::TooLong { len: 1, max: 0 }.close_code(), 1009);
        assert_eq!(WsError::ReservedBits.close_code(), 1002);
        let e: Box<dyn std::error::Error> = Box::new(WsError::UnknownOpcode(3));
        assert!(e.to_string().contains("0x3"));
    }
}
