//! Where a body ends. Bytes are forwarded as they come; this only counts and validates them,
//! so that the proxy knows when the next message starts and whether the connection can be
//! reused.

use super::Framing;
use super::chunked::ChunkedDecoder;
use super::error::BodyError;

/// Result of feeding bytes to a framer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// Bytes at the start of the input that belong to this body.
    pub consumed: usize,
    /// The body is complete; input after `consumed` belongs to the next message.
    pub done: bool,
}

#[derive(Debug, Clone)]
enum State {
    Done,
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Body framing as an explicit state machine, one per message.
#[derive(Debug, Clone)]
pub struct BodyFramer {
    state: State,
}

impl BodyFramer {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::Chunked(ChunkedDecoder::new()),
            Framing::CloseDelimited => State::UntilClose,
        };
        BodyFramer { state }
    }

    /// How many bytes at the start of `input` belong to this body, and whether the body is
    /// complete after them. Never consumes past the end of the body.
    pub fn advance(&mut self, input: &[u8]) -> Result<Advance, BodyError> {
        self.advance_inner(input, |_| {})
    }

    /// [`advance`](Self::advance) for an endpoint that wants the body itself: `data` gets the
    /// payload, in order and in pieces: the consumed bytes as they are, or for a chunked body
    /// the chunk data without sizes, extensions and trailers.
    pub fn advance_with(
        &mut self,
        input: &[u8],
        data: &mut dyn FnMut(&[u8]),
    ) -> Result<Advance, BodyError> {
        self.advance_inner(input, data)
    }

    /// Generic so that the proxy's `advance`, which forwards bytes untouched, compiles to no
    /// call at all for the payload.
    fn advance_inner(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Advance, BodyError> {
        match &mut self.state {
            State::Done => Ok(Advance {
                consumed: 0,
                done: true,
            }),
            State::Length { remaining } => {
                let n = (*remaining).min(input.len() as u64);
                data(&input[..n as usize]);
                *remaining -= n;
                let done = *remaining == 0;
                if done {
                    self.state = State::Done;
                }
                Ok(Advance {
                    consumed: n as usize,
                    done,
                })
            }
            State::Chunked(decoder) => {
                let advance = decoder.advance(input, &mut data)?;
                if advance.done {
                    self.state = State::Done;
                }
                Ok(advance)
            }
            State::UntilClose => {
                data(input);
                Ok(Advance {
                    consumed: input.len(),
                    done: false,
                })
            }
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The peer closed: Ok if that legitimately ends the body (close-delimited, or already
    /// complete), else `Err(Truncated)`: the client must not mistake a cut body for a whole one.
    pub fn on_eof(&self) -> Result<(), BodyError> {
        match self.state {
            State::Done | State::UntilClose => Ok(()),
            State::Length { .. } | State::Chunked(_) => Err(BodyError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adv(consumed: usize, done: bool) -> Advance {
        Advance { consumed, done }
    }

    #[test]
    fn no_body_is_done_at_once() {
        for framing in [Framing::None, Framing::Length(0)] {
            let mut f = BodyFramer::new(framing);
            assert!(f.is_done());
            assert_eq!(f.advance(b"GET / HTTP/1.1"), Ok(adv(0, true)));
            assert_eq!(f.on_eof(), Ok(()));
        }
    }

    #[test]
    fn length_takes_min_of_remaining_and_input() {
        let mut f = BodyFramer::new(Framing::Length(10));
        assert_eq!(f.advance(b"0123"), Ok(adv(4, false)));
        assert_eq!(f.on_eof(), Err(BodyError::Truncated));
        assert_eq!(f.advance(b""), Ok(adv(0, false)));
        assert_eq!(f.advance(b"456789GET /"), Ok(adv(6, true)));
        assert!(f.is_done());
        assert_eq!(f.advance(b"more"), Ok(adv(0, true)));
        assert_eq!(f.on_eof(), Ok(()));
    }

    #[test]
    fn length_near_u64_max() {
        let mut f = BodyFramer::new(Framing::Length(u64::MAX));
        assert_eq!(f.advance(&[0; 100]), Ok(adv(100, false)));
    }

    #[test]
    fn chunked_stops_at_end_and_validates() {
        let mut f = BodyFramer::new(Framing::Chunked);
        assert_eq!(f.advance(b"3\r\nabc\r\n"), Ok(adv(8, false)));
        assert_eq!(f.on_eof(), Err(BodyError::Truncated));
        assert_eq!(f.advance(b"0\r\n\r\nNEXT"), Ok(adv(5, true)));
        assert!(f.is_done());
        assert_eq!(f.on_eof(), Ok(()));
        let mut f = BodyFramer::new(Framing::Chunked);
        assert_eq!(f.advance(b"z\r\n"), Err(BodyError::BadChunkSize));
    }

    #[test]
    fn advance_with_hands_out_the_payload() {
        let collect = |framing, pieces: &[&[u8]]| {
            let mut f = BodyFramer::new(framing);
            let mut body = Vec::new();
            let mut consumed = 0;
            for piece in pieces {
                let a = f
                    .advance_with(piece, &mut |d| body.extend_from_slice(d))
                    .unwrap();
                consumed += a.consumed;
            }
            (body, consumed, f.is_done())
        };
        assert_eq!(
            collect(Framing::Length(5), &[b"he", b"lloGET"]),
            (b"hello".to_vec(), 5, true)
        );
        assert_eq!(
            collect(
                Framing::Chunked,
                &[b"3;x=1\r\nhel\r", b"\n2\r\nlo\r\n0\r\nT: v\r\n\r\nX"]
            ),
            (b"hello".to_vec(), 30, true)
        );
        assert_eq!(
            collect(Framing::CloseDelimited, &[b"he", b"llo"]),
            (b"hello".to_vec(), 5, false)
        );
        assert_eq!(collect(Framing::None, &[b"GET"]), (Vec::new(), 0, true));
    }

    #[test]
    fn close_delimited_takes_everything_until_eof() {
        let mut f = BodyFramer::new(Framing::CloseDelimited);
        assert_eq!(f.advance(b"anything at all"), Ok(adv(15, false)));
        assert!(!f.is_done());
        assert_eq!(f.on_eof(), Ok(()));
    }
}
