//! The chunked transfer coding (RFC 9112 §7.1) as a byte-at-a-time state machine.
//!
//! It validates the framing and hands out payload slices; it never buffers, so input can be
//! split anywhere (even inside a chunk-size line) and the same bytes come out. It stops right
//! after the final CRLF so that pipelined bytes stay with the next message.

use super::body::Advance;
use super::error::BodyError;

/// Longest chunk-size line (size, extensions) we scan; real ones are a few bytes.
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section, like the head limit, so a peer cannot make us scan forever.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of the chunk size.
    Size {
        size: u64,
        digits: bool,
    },
    /// Whitespace after the size: only a `;` extension may follow (BWS in the grammar).
    SizeSpace {
        size: u64,
    },
    /// Chunk extensions, skipped up to the CR.
    Extension {
        size: u64,
    },
    /// CR seen at the end of the size line.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Start of a trailer field line, or the CR of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    Done,
}

/// Chunked decoder state machine (used by `BodyFramer`; public for fuzzing and tests).
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes on the current size line or in the trailer section, for the bounds above.
    scanned: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size {
                size: 0,
                digits: false,
            },
            scanned: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes input, calls `data` for each slice of payload bytes; returns bytes consumed
    /// and whether the body ended. Never consumes past the final CRLF.
    pub fn advance(
        &mut self,
        input: &[u8],
        data: &mut dyn FnMut(&[u8]),
    ) -> Result<Advance, BodyError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data { remaining } => {
                    // Payload is the bulk of the bytes: hand it out in one slice, not per byte.
                    let n = remaining.min((input.len() - i) as u64) as usize;
                    data(&input[i..i + n]);
                    i += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                }
                _ => {
                    self.state = self.step(input[i])?;
                    i += 1;
                }
            }
        }
        Ok(Advance {
            consumed: i,
            done: self.is_done(),
        })
    }

    /// One byte outside of chunk data.
    #[inline]
    fn step(&mut self, b: u8) -> Result<State, BodyError> {
        match self.state {
            State::Size { size, digits } => {
                self.count(MAX_SIZE_LINE, BodyError::ChunkLineTooLong)?;
                size_byte(size, digits, b)
            }
            State::SizeSpace { size } => {
                self.count(MAX_SIZE_LINE, BodyError::ChunkLineTooLong)?;
                size_space_byte(size, b)
            }
            State::Extension { size } => {
                self.count(MAX_SIZE_LINE, BodyError::ChunkLineTooLong)?;
                extension_byte(size, b)
            }
            State::SizeLf { size } => self.size_lf(size, b),
            state @ (State::DataCr | State::DataLf) => self.data_end(state, b),
            state @ (State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::EndLf) => {
                self.count(MAX_TRAILERS, BodyError::TrailersTooLarge)?;
                trailer(state, b)
            }
            State::Data { .. } | State::Done => unreachable!("handled in advance"),
        }
    }

    /// Counts a byte of a size line or of the trailers against its bound.
    #[inline]
    fn count(&mut self, limit: usize, too_many: BodyError) -> Result<(), BodyError> {
        self.scanned += 1;
        if self.scanned > limit {
            return Err(too_many);
        }
        Ok(())
    }

    /// The LF that ends a size line: data follows, or the trailers after the last chunk.
    #[inline]
    fn size_lf(&mut self, size: u64, b: u8) -> Result<State, BodyError> {
        match (size, b) {
            (0, b'\n') => {
                self.scanned = 0;
                Ok(State::TrailerStart)
            }
            (size, b'\n') => Ok(State::Data { remaining: size }),
            _ => Err(BodyError::MissingCrlf),
        }
    }

    /// A byte of the CRLF after chunk data.
    #[inline]
    fn data_end(&mut self, state: State, b: u8) -> Result<State, BodyError> {
        match (state, b) {
            (State::DataCr, b'\r') => Ok(State::DataLf),
            (State::DataLf, b'\n') => {
                self.scanned = 0;
                Ok(State::Size {
                    size: 0,
                    digits: false,
                })
            }
            _ => Err(BodyError::MissingCrlf),
        }
    }
}

/// A byte where the size's hex digits may go on: another digit or, once there is one, BWS, an
/// extension or the CR.
#[inline]
fn size_byte(size: u64, digits: bool, b: u8) -> Result<State, BodyError> {
    match b {
        b if b.is_ascii_hexdigit() => {
            let digit = u64::from(hex_value(b));
            let size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(digit))
                .ok_or(BodyError::ChunkSizeOverflow)?;
            Ok(State::Size { size, digits: true })
        }
        _ if !digits => Err(BodyError::BadChunkSize),
        b';' => Ok(State::Extension { size }),
        b' ' | b'\t' => Ok(State::SizeSpace { size }),
        b'\r' => Ok(State::SizeLf { size }),
        b'\n' => Err(BodyError::MissingCrlf),
        _ => Err(BodyError::BadChunkSize),
    }
}

/// A byte after whitespace that follows the size: only more of it or an extension.
#[inline]
fn size_space_byte(size: u64, b: u8) -> Result<State, BodyError> {
    match b {
        b';' => Ok(State::Extension { size }),
        b' ' | b'\t' => Ok(State::SizeSpace { size }),
        b'\n' => Err(BodyError::MissingCrlf),
        _ => Err(BodyError::BadChunkSize),
    }
}

/// A byte of the chunk extensions, which run to the CR.
#[inline]
fn extension_byte(size: u64, b: u8) -> Result<State, BodyError> {
    match b {
        b'\r' => Ok(State::SizeLf { size }),
        b'\n' => Err(BodyError::MissingCrlf),
        b if is_field_byte(b) => Ok(State::Extension { size }),
        _ => Err(BodyError::BadChunkSize),
    }
}

/// A byte of the trailer section or of the final CRLF.
#[inline]
fn trailer(state: State, b: u8) -> Result<State, BodyError> {
    Ok(match (state, b) {
        (State::TrailerStart, b'\r') => State::EndLf,
        // Anything else opening a line (SP/HTAB = obs-fold, ':' = empty name, LF) is bad.
        (State::TrailerStart | State::TrailerName, b) if is_tchar(b) => State::TrailerName,
        (State::TrailerName, b':') => State::TrailerValue,
        (State::TrailerStart | State::TrailerName, _) => return Err(BodyError::BadTrailer),
        (State::TrailerValue, b'\r') => State::TrailerLf,
        (State::TrailerValue, b) if is_field_byte(b) => State::TrailerValue,
        (State::TrailerValue, _) => return Err(BodyError::BadTrailer),
        (State::TrailerLf, b'\n') => State::TrailerStart,
        (State::TrailerLf, _) => return Err(BodyError::BadTrailer),
        (State::EndLf, b'\n') => State::Done,
        (State::EndLf, _) => return Err(BodyError::MissingCrlf),
        _ => unreachable!("not in the trailers"),
    })
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// field-vchar / SP / HTAB / obs-text: everything but controls and DEL.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in one go; returns (payload, consumed, done).
    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut out = Vec::new();
        let mut d = ChunkedDecoder::new();
        let a = d.advance(input, &mut |s| out.extend_from_slice(s))?;
        Ok((out, a.consumed, a.done))
    }

    /// Feeds `input` in the given pieces, as a socket would.
    fn decode_split(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut out = Vec::new();
        let mut d = ChunkedDecoder::new();
        let mut consumed = 0;
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            let piece = &input[start..end];
            let a = d.advance(piece, &mut |s| out.extend_from_slice(s))?;
            consumed += a.consumed;
            if a.done {
                return Ok((out, consumed, true));
            }
            assert_eq!(
                a.consumed,
                piece.len(),
                "an unfinished body takes all it is given"
            );
            start = end;
        }
        Ok((out, consumed, false))
    }

    const BODY: &[u8] =
        b"4\r\nWiki\r\n5;name=val;q=\"x y\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: yes\r\n\r\n";
    const PAYLOAD: &[u8] = b"Wikipedia in\r\n\r\nchunks.";

    #[test]
    fn decodes_with_extensions_and_trailers() {
        assert_eq!(decode(BODY), Ok((PAYLOAD.to_vec(), BODY.len(), true)));
    }

    #[test]
    fn stops_at_the_final_crlf() {
        let mut buf = BODY.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(decode(&buf), Ok((PAYLOAD.to_vec(), BODY.len(), true)));
        let mut d = ChunkedDecoder::new();
        d.advance(BODY, &mut |_| {}).unwrap();
        assert_eq!(
            d.advance(b"more", &mut |_| panic!("no data after the end")),
            Ok(Advance {
                consumed: 0,
                done: true
            })
        );
    }

    #[test]
    fn every_split_point_gives_the_same_payload() {
        for cut in 0..=BODY.len() {
            assert_eq!(
                decode_split(BODY, &[cut]),
                Ok((PAYLOAD.to_vec(), BODY.len(), true)),
                "cut at {cut}"
            );
        }
        for a in 0..=BODY.len() {
            for b in a..=BODY.len() {
                assert_eq!(decode_split(BODY, &[a, b]).unwrap().0, PAYLOAD);
            }
        }
    }

    #[test]
    fn random_splits_of_a_large_body() {
        // xorshift: a fixed seed keeps failures reproducible without a rand dependency.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut body = Vec::new();
        let mut payload = Vec::new();
        for i in 0..200 {
            let len = (next() % 300) as usize;
            let chunk: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            if len == 0 {
                continue;
            }
            if i % 2 == 0 {
                body.extend_from_slice(format!("{len:x}\r\n").as_bytes());
            } else {
                body.extend_from_slice(format!("{len:08X};ext=1\r\n").as_bytes());
            }
            body.extend_from_slice(&chunk);
            body.extend_from_slice(b"\r\n");
            payload.extend_from_slice(&chunk);
        }
        body.extend_from_slice(b"0\r\nA: b\r\n\r\n");
        for _ in 0..200 {
            let mut cuts: Vec<usize> = (0..(next() % 40))
                .map(|_| (next() % (body.len() as u64 + 1)) as usize)
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                decode_split(&body, &cuts),
                Ok((payload.clone(), body.len(), true)),
                "cuts {cuts:?}"
            );
        }
    }

    /// Seeded generator of valid chunked bodies: random sizes (hex of either case, leading
    /// zeros), extensions (tokens, quoted strings, BWS before `;`), trailers, and payload bytes
    /// that include CR, LF and whole fake chunk lines.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }

        fn size_line(&mut self, size: usize) -> String {
            let hex = if self.below(2) == 0 {
                format!("{size:x}")
            } else {
                format!("{size:X}")
            };
            let mut line = "0".repeat(self.below(4) as usize) + &hex;
            let extensions = self.below(4);
            if extensions > 0 {
                line.push_str(self.pick(&["", " ", "\t", " \t "]));
            }
            for _ in 0..extensions {
                line.push(';');
                line.push_str(self.pick(&["a", "name", "x-ext", "q"]));
                line.push_str(self.pick(&["", "=1", "=token", "=\"quoted ; value\"", "=\"\\\"\""]));
            }
            line + "\r\n"
        }

        /// (wire bytes, payload).
        fn body(&mut self) -> (Vec<u8>, Vec<u8>) {
            let mut wire = Vec::new();
            let mut payload = Vec::new();
            for _ in 0..self.below(12) {
                let size = match self.below(4) {
                    0 => 1,
                    1 => 1 + self.below(16) as usize,
                    2 => 1 + self.below(600) as usize,
                    _ => 1 + self.below(5000) as usize,
                };
                let mut data: Vec<u8> = (0..size).map(|_| self.next() as u8).collect();
                if size > 12 && self.below(3) == 0 {
                    // Payload that looks like framing must stay payload.
                    data[..12].copy_from_slice(b"\r\n0\r\n\r\nGET /");
                }
                wire.extend_from_slice(self.size_line(size).as_bytes());
                wire.extend_from_slice(&data);
                wire.extend_from_slice(b"\r\n");
                payload.extend_from_slice(&data);
            }
            wire.extend_from_slice(self.size_line(0).as_bytes());
            for i in 0..self.below(4) {
                let name =
                    self.pick(&["X-Trailer", "checksum", "Server-Timing", "a!#$%&'*+-.^_`|~"]);
                let value = self.pick(&["", "v", " spaced\tvalue ", "caf\u{e9}", "a, b; c=\"d\""]);
                wire.extend_from_slice(format!("{name}{i}:{value}\r\n").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            (wire, payload)
        }
    }

    /// The property: any valid body, split anywhere into any number of reads, yields the same
    /// payload, ends at the same byte, and leaves the pipelined bytes after it alone.
    #[test]
    fn random_bodies_decode_the_same_however_split() {
        let mut g = Gen(0x5EED_0FC4_C4C4);
        for round in 0..400 {
            let (wire, payload) = g.body();
            let mut input = wire.clone();
            input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let want = Ok((payload.clone(), wire.len(), true));
            assert_eq!(decode(&input), want, "round {round} whole");
            for _ in 0..10 {
                let many = g.below(4) == 0;
                let n = g.below(if many { 200 } else { 8 });
                let mut cuts: Vec<usize> = (0..n)
                    .map(|_| g.below(input.len() as u64 + 1) as usize)
                    .collect();
                cuts.sort_unstable();
                assert_eq!(
                    decode_split(&input, &cuts),
                    want,
                    "round {round} cuts {cuts:?}"
                );
            }
            if wire.len() < 3000 {
                let every: Vec<usize> = (1..input.len()).collect();
                assert_eq!(
                    decode_split(&input, &every),
                    want,
                    "round {round} byte by byte"
                );
            }
        }
    }

    #[test]
    fn incomplete_is_not_done() {
        assert_eq!(decode(b"4\r\nWi"), Ok((b"Wi".to_vec(), 5, false)));
        assert_eq!(decode(b"0\r\n\r"), Ok((vec![], 4, false)));
        assert_eq!(decode(b""), Ok((vec![], 0, false)));
    }

    #[test]
    fn sizes_are_hex_any_case_with_leading_zeros() {
        let body = b"a\r\n0123456789\r\nA\r\n0123456789\r\n0000\r\n\r\n";
        assert_eq!(decode(body).unwrap().0.len(), 20);
        assert!(decode(b"fF\r\n").is_ok());
    }

    #[test]
    fn bad_sizes() {
        for body in [
            &b"\r\n"[..],
            b"g\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b";x\r\n",
            b" 1\r\n",
            b"0x1\r\n",
            b"1 \r\n",
            b"1 x;\r\n",
        ] {
            assert_eq!(
                decode(body),
                Err(BodyError::BadChunkSize),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // Whitespace is allowed only before an extension.
        assert!(decode(b"1 ;x\r\na\r\n0\r\n\r\n").unwrap().2);
    }

    #[test]
    fn size_overflow() {
        assert_eq!(
            decode(b"10000000000000000\r\n"),
            Err(BodyError::ChunkSizeOverflow)
        );
        assert!(decode(b"ffffffffffffffff\r\n").is_ok());
        assert!(
            decode(b"0000000000000000000000001\r\na\r\n0\r\n\r\n")
                .unwrap()
                .2
        );
    }

    #[test]
    fn size_line_is_bounded() {
        let mut body = b"1;".to_vec();
        body.resize(MAX_SIZE_LINE + 10, b'x');
        assert_eq!(decode(&body), Err(BodyError::ChunkLineTooLong));
    }

    #[test]
    fn crlf_is_required_everywhere() {
        for body in [
            &b"1\na\r\n0\r\n\r\n"[..],
            b"1\rxa\r\n0\r\n\r\n",
            b"1\r\nab\r\n0\r\n\r\n",
            b"1\r\na\n0\r\n\r\n",
            b"1\r\na\rx0\r\n\r\n",
            b"0\r\n\rx",
            b"1;ext\n",
        ] {
            assert_eq!(
                decode(body),
                Err(BodyError::MissingCrlf),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn bare_cr_or_control_in_extension() {
        assert_eq!(decode(b"1;a\0\r\n"), Err(BodyError::BadChunkSize));
        assert_eq!(decode(b"1;a\rb\r\n"), Err(BodyError::MissingCrlf));
    }

    #[test]
    fn bad_trailers() {
        for body in [
            &b"0\r\nX: a\nY: b\r\n\r\n"[..],
            b"0\r\nX: a\rY\r\n\r\n",
            b"0\r\nX: a\0\r\n\r\n",
            b"0\r\nX: a\r\n folded\r\n\r\n",
            b"0\r\n: a\r\n\r\n",
            b"0\r\nX a: b\r\n\r\n",
            b"0\r\nnocolon\r\n\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(
                decode(body),
                Err(BodyError::BadTrailer),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn trailers_are_bounded() {
        let mut body = b"0\r\n".to_vec();
        for i in 0..2000 {
            body.extend_from_slice(format!("X-{i}: value\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        assert_eq!(decode(&body), Err(BodyError::TrailersTooLarge));
    }
}
