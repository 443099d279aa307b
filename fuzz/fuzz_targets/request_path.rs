//! The proxy's whole sans-IO request path over a client byte stream: `parse_request` on what is
//! buffered, then a `BodyFramer` over the bytes after the head, then the next pipelined request,
//! with the stream delivered in arbitrary pieces, as `src/proxy.rs` does it.
//!
//! Invariants: no panic; nothing is ever consumed past the bytes received; an unfinished body
//! takes every byte it is given; the sequence of heads, bodies and errors is the same however the
//! stream is split; every head we forward re-parses to the same method, target, version and
//! framing, and its body (the bytes we would forward) ends at the same byte under that framing.

#![no_main]

mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use wtgate::h1::{
    BodyError, BodyFramer, ForwardOptions, Framing, Limits, RequestError, parse_request,
    write_forward_request,
};

#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A head: where it started in the stream, its length, framing, target.
    Head {
        at: usize,
        len: usize,
        framing: Framing,
        target: Vec<u8>,
    },
    HeadError(RequestError),
    /// A complete body of this many bytes.
    Body(usize),
    BodyError(BodyError),
    /// The stream ended inside a head (bytes pending) or a body (bytes taken so far).
    EndInHead(usize),
    EndInBody(usize),
}

enum State {
    Head,
    Body { framer: BodyFramer, taken: usize },
    Failed,
}

/// Runs the stream through the request path in the given pieces; `check` is called with each
/// complete request: where its head starts in `data`, the head's length, the body's length.
fn run(
    data: &[u8],
    cuts: &[usize],
    limits: &Limits,
    check: &mut dyn FnMut(usize, usize, usize),
) -> Vec<Event> {
    let mut events = Vec::new();
    // `data[pos..received]` is buffered and unconsumed, like the proxy's InBuf.
    let mut pos = 0;
    let mut state = State::Head;
    let mut head_at = 0;
    for &received in cuts.iter().chain(std::iter::once(&data.len())) {
        loop {
            let buffered = &data[pos..received];
            match &mut state {
                State::Failed => break,
                State::Head => match parse_request(buffered, limits) {
                    Ok(Some(h)) => {
                        assert!(h.head_len <= buffered.len(), "head past the bytes received");
                        events.push(Event::Head {
                            at: pos,
                            len: h.head_len,
                            framing: h.framing,
                            target: buffered[h.target.clone()].to_vec(),
                        });
                        head_at = pos;
                        pos += h.head_len;
                        state = State::Body {
                            framer: BodyFramer::new(h.framing),
                            taken: 0,
                        };
                    }
                    Ok(None) => break,
                    Err(e) => {
                        events.push(Event::HeadError(e));
                        state = State::Failed;
                    }
                },
                State::Body { framer, taken } => match framer.advance(buffered) {
                    Ok(a) => {
                        assert!(a.consumed <= buffered.len(), "body past the bytes received");
                        assert_eq!(a.done, framer.is_done());
                        if !a.done {
                            assert_eq!(a.consumed, buffered.len());
                        }
                        pos += a.consumed;
                        *taken += a.consumed;
                        if a.done {
                            let taken = *taken;
                            events.push(Event::Body(taken));
                            check(head_at, pos - taken - head_at, taken);
                            state = State::Head;
                        } else {
                            break;
                        }
                    }
                    Err(e) => {
                        events.push(Event::BodyError(e));
                        state = State::Failed;
                    }
                },
            }
        }
    }
    match state {
        State::Head if pos < data.len() => events.push(Event::EndInHead(data.len() - pos)),
        State::Body { taken, .. } => events.push(Event::EndInBody(taken)),
        _ => {}
    }
    events
}

/// The head we forward for `head` (parsed from `msg`), re-parsed, frames the same body.
fn check_forward(msg: &[u8], body: &[u8], limits: &Limits) {
    let h = parse_request(msg, limits).unwrap().unwrap();
    let mut out = Vec::new();
    let opts = ForwardOptions {
        forwarded_for: Some("192.0.2.1"),
        proto: "http",
        // Trusted copies the most incoming bytes into the forwarded head.
        trusted: true,
    };
    write_forward_request(&mut out, msg, &h, &opts);
    let head_len = out.len();
    out.extend_from_slice(body);
    let h2 = match parse_request(&out, &ROOMY) {
        Ok(Some(h2)) => h2,
        other => panic!(
            "forwarded head does not re-parse: {other:?}\n{}",
            String::from_utf8_lossy(&out[..head_len])
        ),
    };
    assert_eq!(h2.head_len, head_len);
    assert_eq!(&out[h2.method.clone()], &msg[h.method.clone()]);
    assert_eq!(&out[h2.target.clone()], &msg[h.target.clone()]);
    assert_eq!(
        (h2.version, h2.framing, h2.upgrade),
        (h.version, h.framing, h.upgrade)
    );
    let mut f = BodyFramer::new(h2.framing);
    let a = f
        .advance(&out[head_len..])
        .expect("the forwarded body frames");
    assert!(
        a.done && a.consumed == body.len(),
        "{a:?} for a body of {}",
        body.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let limits = &LIMITS[0];
    let whole = run(data, &[], limits, &mut |at, head_len, body_len| {
        let body = &data[at + head_len..at + head_len + body_len];
        check_forward(&data[at..at + head_len], body, limits);
    });
    let mut rng = Rng::from_bytes(data);
    for _ in 0..3 {
        let cuts = random_cuts(&mut rng, data.len());
        let split = run(data, &cuts, limits, &mut |_, _, _| {});
        assert_eq!(split, whole, "cuts {cuts:?}");
    }
    if data.len() <= 256 {
        let split = run(data, &every_byte(data.len()), limits, &mut |_, _, _| {});
        assert_eq!(split, whole, "byte by byte");
    }
});
