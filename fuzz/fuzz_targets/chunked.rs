//! The chunked decoder on arbitrary bytes, whole and in random splits.
//!
//! Invariants: no panic; it never consumes past its input, and takes everything it is given until
//! the body ends; the payload, the bytes consumed, the end and the error are the same however the
//! input is split; a body it accepts is also accepted, with the same payload, by a second, naive
//! decoder written from RFC 9112 §7.1 (so it does not end a body early or late).

#![no_main]

mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use wtgate::h1::{BodyError, BodyFramer, ChunkedDecoder, Framing};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    payload: Vec<u8>,
    consumed: usize,
    done: bool,
    error: Option<BodyError>,
}

fn decode(data: &[u8], cuts: &[usize]) -> Outcome {
    let mut d = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let mut consumed = 0;
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        let piece = &data[start..end];
        start = end;
        match d.advance(piece, &mut |s| payload.extend_from_slice(s)) {
            Ok(a) => {
                assert!(a.consumed <= piece.len());
                consumed += a.consumed;
                assert_eq!(a.done, d.is_done());
                if a.done {
                    return Outcome {
                        payload,
                        consumed,
                        done: true,
                        error: None,
                    };
                }
                assert_eq!(
                    a.consumed,
                    piece.len(),
                    "an unfinished body takes all it is given"
                );
            }
            Err(e) => {
                // Bytes taken by earlier calls before a failing one depend on the split; what
                // counts is the error and the payload handed out before it.
                return Outcome {
                    payload,
                    consumed: 0,
                    done: false,
                    error: Some(e),
                };
            }
        }
    }
    Outcome {
        payload,
        consumed,
        done: false,
        error: None,
    }
}

/// RFC 9112 §7.1 read plainly: hex size, anything up to CRLF, data, CRLF; after the last chunk,
/// lines up to an empty one. Lenient about what it skips, strict about where things end.
fn naive(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let line_end = |from: usize| -> Option<usize> {
        data.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let mut pos = 0;
    let mut payload = Vec::new();
    loop {
        let end = line_end(pos)?;
        let line = &data[pos..end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let mut size: u64 = 0;
        for &b in &line[..digits] {
            size = size
                .checked_mul(16)?
                .checked_add(u64::from((b as char).to_digit(16)?))?;
        }
        pos = end + 2;
        if size == 0 {
            loop {
                let end = line_end(pos)?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Some((payload, pos));
                }
            }
        }
        let size = usize::try_from(size).ok()?;
        let data_end = pos.checked_add(size)?;
        payload.extend_from_slice(data.get(pos..data_end)?);
        if data.get(data_end..data_end + 2)? != b"\r\n" {
            return None;
        }
        pos = data_end + 2;
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(data, &[]);
    let mut rng = Rng::from_bytes(data);
    for _ in 0..4 {
        let cuts = random_cuts(&mut rng, data.len());
        assert_eq!(decode(data, &cuts), whole, "cuts {cuts:?}");
    }
    if data.len() <= 512 {
        assert_eq!(decode(data, &every_byte(data.len())), whole, "byte by byte");
    }
    if whole.done {
        let (payload, len) = naive(data).expect("the naive decoder rejects what we accepted");
        assert_eq!((payload, len), (whole.payload.clone(), whole.consumed));
    }
    // BodyFramer agrees with the decoder it wraps.
    let mut f = BodyFramer::new(Framing::Chunked);
    match f.advance(data) {
        Ok(a) => {
            assert_eq!((a.consumed, a.done), (whole.consumed, whole.done));
            assert_eq!(f.on_eof().is_ok(), a.done);
        }
        Err(e) => assert_eq!(Some(e), whole.error),
    }
});
