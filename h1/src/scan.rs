//! Finds the end of a head and rejects the bytes httparse tolerates but a proxy must not.
//!
//! httparse accepts bare `\n` as a line ending and, in values, some bytes another parser down
//! the line may split on. If the backend and we disagree on where a header or the head ends,
//! a client can smuggle a second request past us; so every CR must pair with an LF, every LF
//! with a CR, no NUL anywhere, and no line after the start line may begin with whitespace
//! (obs-fold). Only then does httparse see the head.

use super::error::HeadError;

/// The head's length including the final CRLF CRLF, `None` if the end is not in `buf` yet.
///
/// Empty lines before the start line are skipped (RFC 9112 §2.2: clients may send a CRLF after
/// a body) and count toward the head's length, as they do for httparse. Bytes after the head
/// are never looked at: they are body or the next pipelined message.
pub(super) fn head_len(buf: &[u8], max_head_bytes: usize) -> Result<Option<usize>, HeadError> {
    let mut i = leading_empty_lines(buf);
    let mut line_start = i;
    let mut in_start_line = true;
    let end = buf.len().min(max_head_bytes);
    // Lookahead stays inside the limit too: a byte past it must not decide between "too large"
    // and some other error, or the answer would depend on how the bytes were split into reads.
    let within = &buf[..end];
    while i < end {
        i = skip_printable(within, i);
        let Some(&b) = within.get(i) else {
            break;
        };
        match b {
            b'\r' => {
                let Some(&next) = within.get(i + 1) else {
                    break;
                };
                if next != b'\n' {
                    return Err(HeadError::BareCarriageReturn);
                }
                if i == line_start && !in_start_line {
                    let len = i + 2;
                    return if len <= max_head_bytes {
                        Ok(Some(len))
                    } else {
                        Err(HeadError::TooLarge)
                    };
                }
                in_start_line = false;
                i += 2;
                line_start = i;
                if matches!(within.get(i), Some(b' ' | b'\t')) {
                    return Err(HeadError::ObsFold);
                }
            }
            b'\n' => return Err(HeadError::BareLineFeed),
            0 => return Err(HeadError::NulByte),
            _ => i += 1,
        }
    }
    if buf.len() >= max_head_bytes {
        Err(HeadError::TooLarge)
    } else {
        Ok(None)
    }
}

/// Bytes taken by the CRLFs before the start line.
#[inline]
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    while buf.len() >= i + 2 && buf[i] == b'\r' && buf[i + 1] == b'\n' {
        i += 2;
    }
    i
}

/// Index of the first byte at or after `i` that is `\r` or a control before it, or
/// `bytes.len()` if there is none.
#[inline]
fn skip_printable(bytes: &[u8], mut i: usize) -> usize {
    // Nearly every byte of a head is printable: skip them eight at a time.
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word: [u8; 8] = chunk.try_into().expect("eight bytes");
        let mask = control_mask(u64::from_le_bytes(word));
        if mask != 0 {
            return i + (mask.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|&b| b > b'\r') {
        i += 1;
    }
    i
}

/// High bit set in (at least) the lowest byte of `word` that is below 14 (`\r` and the
/// controls before it), zero if there is none. Borrows can only mark bytes above a real hit,
/// so the lowest set bit is exact.
fn control_mask(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    word.wrapping_sub(ONES * 14) & !word & HIGHS
}

/// The first line after any leading empty lines, without its CRLF (`head` must be scanned).
pub(super) fn start_line(head: &[u8]) -> &[u8] {
    let mut rest = head;
    while let Some(tail) = rest.strip_prefix(b"\r\n") {
        rest = tail;
    }
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    #[test]
    fn finds_end_of_head_and_ignores_what_follows() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody\n\0\r";
        assert_eq!(head_len(buf, MAX), Ok(Some(27)));
    }

    #[test]
    fn incomplete_is_none() {
        for cut in 0..27 {
            let buf = &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..cut];
            assert_eq!(head_len(buf, MAX), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn leading_empty_lines_count() {
        assert_eq!(
            head_len(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", MAX),
            Ok(Some(22))
        );
        assert_eq!(start_line(b"\r\nGET / HTTP/1.1\r\n\r\n"), b"GET / HTTP/1.1");
    }

    #[test]
    fn bare_lf_anywhere_is_refused() {
        for buf in [
            &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n",
            b"\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(head_len(buf, MAX), Err(HeadError::BareLineFeed));
        }
    }

    #[test]
    fn bare_cr_is_refused() {
        assert_eq!(
            head_len(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", MAX),
            Err(HeadError::BareCarriageReturn)
        );
        assert_eq!(
            head_len(b"GET / HTTP/1.1\r\n\r\r\n", MAX),
            Err(HeadError::BareCarriageReturn)
        );
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(
            head_len(b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", MAX),
            Err(HeadError::NulByte)
        );
    }

    #[test]
    fn obs_fold_is_refused() {
        assert_eq!(
            head_len(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", MAX),
            Err(HeadError::ObsFold)
        );
        assert_eq!(
            head_len(b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", MAX),
            Err(HeadError::ObsFold)
        );
        // Whitespace before the first header is the same trick.
        assert_eq!(
            head_len(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", MAX),
            Err(HeadError::ObsFold)
        );
    }

    #[test]
    fn control_mask_finds_the_first_low_byte() {
        for pos in 0..8 {
            for ctl in [0u8, b'\t', b'\n', b'\r'] {
                let mut w = *b"abcdefgh";
                w[pos] = ctl;
                let mask = control_mask(u64::from_le_bytes(w));
                assert_eq!(mask.trailing_zeros() / 8, pos as u32);
            }
        }
        assert_eq!(
            control_mask(u64::from_le_bytes(*b"~\x0e\x7f\xff \x80AZ")),
            0
        );
    }

    #[test]
    fn every_position_of_a_bad_byte_is_found() {
        let good = b"GET /some/longer/path?with=query HTTP/1.1\r\nHost: example\r\nX-Long-Header: value value\r\n\r\n";
        let fold = good.len() - 2;
        for pos in 0..good.len() - 4 {
            if matches!(good[pos], b'\r' | b'\n') {
                continue;
            }
            let mut buf = good.to_vec();
            buf[pos] = 0;
            assert_eq!(head_len(&buf, MAX), Err(HeadError::NulByte), "{pos}");
            buf[pos] = b'\n';
            assert_eq!(head_len(&buf, MAX), Err(HeadError::BareLineFeed), "{pos}");
        }
        assert_eq!(head_len(good, MAX), Ok(Some(fold + 2)));
    }

    /// Found by fuzzing (request_head and response_head with a 200-byte limit): a CR as the last
    /// byte within the limit was answered 431 when nothing followed yet, but 400 (bare CR) when
    /// the next byte, past the limit, had arrived in the same read. Bytes past the limit are now
    /// never looked at, so the answer is the same however the input is split.
    #[test]
    fn nothing_past_the_limit_is_looked_at() {
        let max = 20;
        let mut buf = b"GET / HTTP/1.1\r\nX: a".to_vec();
        buf.resize(max - 1, b'a');
        buf.push(b'\r');
        assert_eq!(head_len(&buf, max), Err(HeadError::TooLarge));
        for next in [b'x', b'\n', b' '] {
            let mut more = buf.clone();
            more.push(next);
            assert_eq!(head_len(&more, max), Err(HeadError::TooLarge), "{next}");
        }
        // A line ending right at the limit with a fold or a bare CR just past it.
        let mut buf = b"GET / HTTP/1.1\r\nX: a".to_vec();
        buf.resize(max - 2, b'a');
        buf.extend_from_slice(b"\r\n");
        for next in [&b" "[..], b"\t", b"\r", b"\rx"] {
            let mut more = buf.clone();
            more.extend_from_slice(next);
            assert_eq!(head_len(&more, max), Err(HeadError::TooLarge), "{next:?}");
        }
        // Within the limit those bytes still count.
        assert_eq!(
            head_len(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", max + 10),
            Err(HeadError::ObsFold)
        );
    }

    #[test]
    fn size_limit_counts_the_whole_head() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_len(buf, 27), Ok(Some(27)));
        assert_eq!(head_len(buf, 26), Err(HeadError::TooLarge));
        assert_eq!(head_len(&buf[..20], 20), Err(HeadError::TooLarge));
        assert_eq!(head_len(&buf[..19], 20), Ok(None));
    }
}
