//! PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt): the header a TCP load balancer or
//! TLS terminator sends before the client's first byte, naming the client it accepted.
//!
//! Same shape as the HTTP parsers: the bytes read so far in; "incomplete", a header, or a typed
//! error out. An error is reported as soon as the bytes seen decide it, so a client that speaks
//! HTTP straight at a PROXY listener is refused on its first byte instead of being waited for.
//! The answer for any prefix of the input is either "incomplete" or the answer for the whole
//! input, however the bytes are split across reads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::ProxyHeaderError;

/// The longest header accepted, in bytes, fixed part included; so the shell never needs more
/// buffered than this before the header is decided.
///
/// v1 lines stop at 107 bytes. A v2 length may claim up to 64 KiB, but the largest address block
/// (AF_UNIX, 216 bytes) plus every TLV senders emit (ALPN, authority, unique id, the SSL sub-TLVs,
/// cloud endpoint ids, even a forwarded client certificate) fits in 4 KiB; it stays well under
/// the request-head limit, so a header and the first request fit the proxy's buffer together.
pub const MAX_HEADER_LEN: usize = 4096;

/// What a PROXY header says about the connection it precedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client; `None` for v1 `UNKNOWN`, v2 `LOCAL` (the peer's own health checks) and v2
    /// AF_UNIX/AF_UNSPEC: then the connection's own peer address stands.
    pub source: Option<SocketAddr>,
    /// The address the client connected to; `None` exactly when `source` is.
    pub destination: Option<SocketAddr>,
    /// The client spoke TLS to the sender (v2 `PP2_TYPE_SSL` with `PP2_CLIENT_SSL` set).
    pub ssl: bool,
}

impl ProxyHeader {
    const NO_ADDRESS: ProxyHeader = ProxyHeader {
        source: None,
        destination: None,
        ssl: false,
    };
}

/// Parses the PROXY header (v1 or v2) at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((header, n)))`: the header is `buf[..n]`; what
/// follows is the client's data. Anything that is not a well-formed header is an error, decided
/// by the fewest bytes possible.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyHeaderError::NotProxyProtocol),
    }
}

const V1_PREFIX: &[u8] = b"PROXY ";
/// The spec's bound on a v1 line, CRLF included.
const V1_MAX: usize = 107;

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    // One left-to-right pass that stops at the first defect: a prefix then sees the same defect
    // first as the whole input does, which is what keeps split reads consistent.
    let mut cr = None;
    for (i, &b) in buf.iter().enumerate().take(V1_MAX) {
        if let Some(&want) = V1_PREFIX.get(i) {
            if b != want {
                return Err(ProxyHeaderError::NotProxyProtocol);
            }
            continue;
        }
        match b {
            // Its LF would be byte 108, whatever comes next.
            b'\r' if i + 2 > V1_MAX => return Err(ProxyHeaderError::V1TooLong),
            b'\r' => match buf.get(i + 1) {
                Some(b'\n') => {
                    cr = Some(i);
                    break;
                }
                Some(_) => return Err(ProxyHeaderError::V1BadByte),
                None => return Ok(None),
            },
            b' '..=b'~' => {}
            _ => return Err(ProxyHeaderError::V1BadByte),
        }
    }
    let Some(cr) = cr else {
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    let header = v1_fields(&buf[V1_PREFIX.len()..cr])?;
    Ok(Some((header, cr + 2)))
}

/// `rest`: the line after `PROXY ` and before CRLF, known to be printable ASCII.
fn v1_fields(rest: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    if let Some(after) = rest.strip_prefix(b"UNKNOWN") {
        // The spec has receivers ignore whatever follows UNKNOWN, but only as its own field.
        return match after.first() {
            None | Some(b' ') => Ok(ProxyHeader::NO_ADDRESS),
            Some(_) => Err(ProxyHeaderError::V1BadSyntax),
        };
    }
    let (v6, fields) = if let Some(f) = rest.strip_prefix(b"TCP4 ") {
        (false, f)
    } else if let Some(f) = rest.strip_prefix(b"TCP6 ") {
        (true, f)
    } else {
        return Err(ProxyHeaderError::V1BadSyntax);
    };
    let mut parts = fields.split(|&b| b == b' ');
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ProxyHeaderError::V1BadSyntax);
    };
    if [src, dst, sport, dport].iter().any(|f| f.is_empty()) {
        return Err(ProxyHeaderError::V1BadSyntax);
    }
    let (src, dst) = (v1_ip(src, v6)?, v1_ip(dst, v6)?);
    let (sport, dport) = (v1_port(sport)?, v1_port(dport)?);
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
        ssl: false,
    })
}

fn v1_ip(field: &[u8], v6: bool) -> Result<IpAddr, ProxyHeaderError> {
    let text = std::str::from_utf8(field).map_err(|_| ProxyHeaderError::V1BadAddress)?;
    // std's parsers are strict: four decimal octets without leading zeros (no octal reading),
    // RFC 4291 text for IPv6 with no zone id or brackets.
    let ip = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| ProxyHeaderError::V1BadAddress)
}

/// Plain decimal only: `u16::from_str` would take a `+`, and leading zeros are refused because
/// no sender writes them and some readers take them as octal.
fn v1_port(field: &[u8]) -> Result<u16, ProxyHeaderError> {
    let canonical = field.len() <= 5
        && field.iter().all(u8::is_ascii_digit)
        && (field.len() == 1 || field[0] != b'0');
    if !canonical {
        return Err(ProxyHeaderError::V1BadPort);
    }
    let n = field
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).map_err(|_| ProxyHeaderError::V1BadPort)
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport, length.
const V2_FIXED: usize = 16;
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_CLIENT_SSL: u8 = 0x01;
/// `client` (1 byte) and `verify` (4 bytes) before the SSL TLV's sub-TLVs.
const SSL_TLV_FIXED: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Unspec,
    Inet,
    Inet6,
    Unix,
}

impl Family {
    fn of(byte: u8) -> Result<Family, ProxyHeaderError> {
        match (byte >> 4, byte & 0x0f) {
            (0, 0) => Ok(Family::Unspec),
            (1, 1) => Ok(Family::Inet),
            (2, 1) => Ok(Family::Inet6),
            (3, 1) => Ok(Family::Unix),
            (1..=3, 2) => Err(ProxyHeaderError::V2Datagram),
            _ => Err(ProxyHeaderError::V2BadFamily),
        }
    }

    fn address_len(self) -> usize {
        match self {
            Family::Unspec => 0,
            Family::Inet => 12,
            Family::Inet6 => 36,
            Family::Unix => 216,
        }
    }
}

/// What the version/command byte asks for, with the family when it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// The sender's own connection (health checks): no client to name.
    Local,
    Proxy(Family),
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let Some(command) = v2_command(buf)? else {
        return Ok(None);
    };
    let Some(len) = v2_block_len(buf, command)? else {
        return Ok(None);
    };
    let total = V2_FIXED + len;
    let Some(block) = buf.get(V2_FIXED..total) else {
        return Ok(None);
    };
    let Command::Proxy(family) = command else {
        return Ok(Some((ProxyHeader::NO_ADDRESS, total)));
    };
    let (addresses, tlvs) = block.split_at(family.address_len());
    let (source, destination) = v2_addresses(family, addresses);
    let ssl = client_ssl(tlvs)?;
    Ok(Some((
        ProxyHeader {
            source,
            destination,
            ssl,
        },
        total,
    )))
}

/// The signature, then the version/command and family/transport bytes; `None` if they have not
/// all arrived.
#[inline]
fn v2_command(buf: &[u8]) -> Result<Option<Command>, ProxyHeaderError> {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] != V2_SIGNATURE[..seen] {
        return Err(ProxyHeaderError::NotProxyProtocol);
    }
    let Some(&version_command) = buf.get(12) else {
        return Ok(None);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::V2BadVersion);
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyHeaderError::V2BadCommand),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(None);
    };
    // LOCAL: the spec has receivers ignore the family along with the rest of the block.
    if local {
        return Ok(Some(Command::Local));
    }
    Ok(Some(Command::Proxy(Family::of(family)?)))
}

/// The length of the block after the fixed part, checked against our bound and against the
/// family's addresses; `None` if the length bytes have not arrived.
#[inline]
fn v2_block_len(buf: &[u8], command: Command) -> Result<Option<usize>, ProxyHeaderError> {
    let Some(&[hi, lo]) = buf.get(14..V2_FIXED) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if V2_FIXED + len > MAX_HEADER_LEN {
        return Err(ProxyHeaderError::V2TooLong);
    }
    if let Command::Proxy(family) = command
        && len < family.address_len()
    {
        return Err(ProxyHeaderError::V2ShortAddress);
    }
    Ok(Some(len))
}

/// Source and destination from an address block of `family`'s length.
// Always inlined: returned by value, two socket addresses cost a copy the caller can avoid.
#[inline(always)]
fn v2_addresses(family: Family, addresses: &[u8]) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let port = |at: usize| u16::from_be_bytes(array::<2>(addresses, at));
    match family {
        Family::Inet => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::from(array::<4>(addresses, at)));
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        Family::Inet6 => {
            let ip = |at: usize| IpAddr::V6(Ipv6Addr::from(array::<16>(addresses, at)));
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        Family::Unix | Family::Unspec => (None, None),
    }
}

/// `N` bytes at `at`; callers only ask inside an address block whose length was checked.
fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Splits the TLV at the start of `rest` into (type, value, what follows); `None` if it is
/// truncated.
fn next_tlv(rest: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&[kind, hi, lo], rest) = rest.split_first_chunk::<3>()?;
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    (len <= rest.len()).then(|| (kind, &rest[..len], &rest[len..]))
}

/// Walks every TLV (and the SSL TLV's sub-TLVs) so a malformed one is refused rather than
/// skipped; answers whether the SSL TLV says the client used TLS.
fn client_ssl(mut tlvs: &[u8]) -> Result<bool, ProxyHeaderError> {
    let mut ssl = None;
    while !tlvs.is_empty() {
        let (kind, value, rest) = next_tlv(tlvs).ok_or(ProxyHeaderError::V2BadTlv)?;
        tlvs = rest;
        if kind != PP2_TYPE_SSL {
            continue;
        }
        // Two SSL TLVs could say different things; which one a reader believes is arbitrary.
        if ssl.is_some() || value.len() < SSL_TLV_FIXED {
            return Err(ProxyHeaderError::V2BadSslTlv);
        }
        let mut sub = &value[SSL_TLV_FIXED..];
        while !sub.is_empty() {
            sub = next_tlv(sub).ok_or(ProxyHeaderError::V2BadSslTlv)?.2;
        }
        ssl = Some(value[0] & PP2_CLIENT_SSL != 0);
    }
    Ok(ssl.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<Option<(ProxyHeader, usize)>, ProxyHeaderError>;

    /// Parses `input` whole and as every prefix a socket could deliver: each prefix is
    /// incomplete or gives the whole answer, a header is incomplete until its last byte, and
    /// what follows a header never changes it.
    fn parse_all_ways(input: &[u8]) -> Parsed {
        let whole = parse_proxy_header(input);
        for k in 0..input.len() {
            let part = parse_proxy_header(&input[..k]);
            assert!(
                part == Ok(None) || part == whole,
                "prefix {k} of {input:?}: {part:?}, whole: {whole:?}"
            );
        }
        if let Ok(Some((header, n))) = whole {
            assert!(n <= input.len());
            for k in 0..n {
                assert_eq!(parse_proxy_header(&input[..k]), Ok(None), "prefix {k}");
            }
            let mut more = input[..n].to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(parse_proxy_header(&more), Ok(Some((header, n))));
        }
        whole
    }

    fn ok(input: &[u8]) -> ProxyHeader {
        match parse_all_ways(input) {
            Ok(Some((h, n))) => {
                assert_eq!(n, input.len(), "{input:?}");
                h
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn err(input: &[u8]) -> ProxyHeaderError {
        match parse_all_ways(input) {
            Err(e) => e,
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn addressed(src: &str, dst: &str, ssl: bool) -> ProxyHeader {
        ProxyHeader {
            source: addr(src),
            destination: addr(dst),
            ssl,
        }
    }

    #[test]
    fn v1_tcp4() {
        assert_eq!(
            ok(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
            addressed("192.168.0.1:56324", "192.168.0.11:443", false)
        );
        assert_eq!(
            ok(b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
            addressed("0.0.0.0:0", "255.255.255.255:65535", false)
        );
    }

    #[test]
    fn v1_tcp6() {
        assert_eq!(
            ok(b"PROXY TCP6 2001:db8::1 ::1 65535 8080\r\n"),
            addressed("[2001:db8::1]:65535", "[::1]:8080", false)
        );
        assert_eq!(
            ok(b"PROXY TCP6 ::ffff:10.0.0.1 fe80::1 1 2\r\n"),
            addressed("[::ffff:10.0.0.1]:1", "[fe80::1]:2", false)
        );
        // The spec's 107 bytes are sized for the longest 39-character IPv6 text.
        let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), 104);
        ok(longest);
    }

    #[test]
    fn v1_unknown() {
        let none = ProxyHeader::NO_ADDRESS;
        assert_eq!(ok(b"PROXY UNKNOWN\r\n"), none);
        assert_eq!(
            ok(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2 whatever else\r\n"),
            none
        );
        let mut max = b"PROXY UNKNOWN ".to_vec();
        max.resize(105, b'x');
        max.extend_from_slice(b"\r\n");
        assert_eq!(ok(&max), none);
        assert_eq!(err(b"PROXY UNKNOWNX\r\n"), ProxyHeaderError::V1BadSyntax);
    }

    #[test]
    fn v1_line_length() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(106, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(err(&long), ProxyHeaderError::V1TooLong);
        // Decided at byte 107, without waiting for a CRLF that can no longer come in time.
        assert_eq!(
            parse_proxy_header(&long[..107]),
            Err(ProxyHeaderError::V1TooLong)
        );
        assert_eq!(parse_proxy_header(&long[..106]), Ok(None));
        let mut no_crlf = b"PROXY ".to_vec();
        no_crlf.resize(200, b'1');
        assert_eq!(err(&no_crlf), ProxyHeaderError::V1TooLong);
        // The dotted-quad IPv6 form is longer: legal text, but over the line bound.
        assert_eq!(
            err(b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n"),
            ProxyHeaderError::V1TooLong
        );
    }

    #[test]
    fn v1_bad_bytes() {
        for line in [
            &b"PROXY TCP4 1.2.3.4\n"[..],
            b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
            b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n",
            b"PROXY UNKNOWN \xff\r\n",
            b"PROXY UNKNOWN \x7f\r\n",
            b"PROXY \n",
        ] {
            assert_eq!(err(line), ProxyHeaderError::V1BadByte, "{line:?}");
        }
    }

    #[test]
    fn v1_bad_syntax() {
        for line in [
            &b"PROXY \r\n"[..],
            b"PROXY TCP4\r\n",
            b"PROXY TCP4 \r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY unknown\r\n",
        ] {
            assert_eq!(err(line), ProxyHeaderError::V1BadSyntax, "{line:?}");
        }
    }

    #[test]
    fn v1_addresses_match_the_family() {
        for line in [
            &b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 ::ffff:5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 [::1] ::2 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::2 1 2\r\n",
            b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::2 1 2\r\n",
        ] {
            assert_eq!(err(line), ProxyHeaderError::V1BadAddress, "{line:?}");
        }
    }

    #[test]
    fn v1_ports() {
        for port in [
            "65536", "99999", "100000", "+1", "-1", "01", "00", "1a", "0x10",
        ] {
            let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 {port} 80\r\n");
            assert_eq!(
                err(line.as_bytes()),
                ProxyHeaderError::V1BadPort,
                "{line:?}"
            );
            let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 80 {port}\r\n");
            assert_eq!(
                err(line.as_bytes()),
                ProxyHeaderError::V1BadPort,
                "{line:?}"
            );
        }
        assert_eq!(
            ok(b"PROXY TCP4 1.2.3.4 5.6.7.8 10000 9\r\n").source,
            addr("1.2.3.4:10000")
        );
    }

    #[test]
    fn anything_else_is_refused_at_the_first_wrong_byte() {
        assert_eq!(parse_proxy_header(b""), Ok(None));
        for (input, decided_at) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], 1),
            (b"POST / HTTP/1.1\r\n\r\n", 2),
            (b"PUT / HTTP/1.1\r\n\r\n", 2),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 3),
            (b"PROXX TCP4", 5),
            (b"PROXY\r\n", 6),
            (b"\x16\x03\x01\x02\x00", 1),
            (b"\r\n\r\nGET", 5),
            (b"\r\n\r\n\0\r\nQUIT\r", 12),
            (b"\n", 1),
            (b"p", 1),
        ] {
            assert_eq!(err(input), ProxyHeaderError::NotProxyProtocol, "{input:?}");
            assert_eq!(
                parse_proxy_header(&input[..decided_at]),
                Err(ProxyHeaderError::NotProxyProtocol),
                "{input:?}"
            );
            assert_eq!(parse_proxy_header(&input[..decided_at - 1]), Ok(None));
        }
    }

    fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    fn inet(tlvs: &[u8]) -> Vec<u8> {
        let mut block = vec![10, 0, 0, 1, 192, 168, 1, 2, 0xdc, 0x04, 0x01, 0xbb];
        block.extend_from_slice(tlvs);
        v2(0x21, 0x11, &block)
    }

    fn ssl_tlv(client: u8, subs: &[u8]) -> Vec<u8> {
        let mut value = vec![client, 0, 0, 0, 0];
        value.extend_from_slice(subs);
        tlv(PP2_TYPE_SSL, &value)
    }

    #[test]
    fn v2_inet() {
        assert_eq!(
            ok(&inet(&[])),
            addressed("10.0.0.1:56324", "192.168.1.2:443", false)
        );
    }

    #[test]
    fn v2_inet6() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "::1".parse().unwrap();
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&[0xff, 0xff, 0x00, 0x00]);
        assert_eq!(
            ok(&v2(0x21, 0x21, &block)),
            addressed("[2001:db8::7]:65535", "[::1]:0", false)
        );
    }

    #[test]
    fn v2_unix_and_unspec_carry_no_address() {
        let unix = vec![b'/'; 216];
        assert_eq!(ok(&v2(0x21, 0x31, &unix)), ProxyHeader::NO_ADDRESS);
        assert_eq!(ok(&v2(0x21, 0x00, &[])), ProxyHeader::NO_ADDRESS);
        let mut with_ssl = unix.clone();
        with_ssl.extend_from_slice(&ssl_tlv(PP2_CLIENT_SSL, &[]));
        assert!(ok(&v2(0x21, 0x31, &with_ssl)).ssl);
        assert!(ok(&v2(0x21, 0x00, &ssl_tlv(PP2_CLIENT_SSL, &[]))).ssl);
    }

    #[test]
    fn v2_local_ignores_the_block() {
        assert_eq!(ok(&v2(0x20, 0x00, &[])), ProxyHeader::NO_ADDRESS);
        // Addresses, bad TLVs, even a family we would refuse: LOCAL discards it all.
        assert_eq!(
            ok(&inet(&[]).tap(|h| h[12] = 0x20)),
            ProxyHeader::NO_ADDRESS
        );
        assert_eq!(ok(&v2(0x20, 0xff, &[0x20, 0xff])), ProxyHeader::NO_ADDRESS);
        assert_eq!(ok(&v2(0x20, 0x12, &[])), ProxyHeader::NO_ADDRESS);
    }

    trait Tap {
        fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
    }

    impl Tap for Vec<u8> {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }

    #[test]
    fn v2_ssl_tlv() {
        let version = tlv(0x21, b"TLSv1.3");
        let cn = tlv(0x22, b"client.example");
        let mut subs = version.clone();
        subs.extend_from_slice(&cn);
        let h = ok(&inet(&ssl_tlv(0x07, &subs)));
        assert_eq!(h, addressed("10.0.0.1:56324", "192.168.1.2:443", true));
        // Certificate bits without PP2_CLIENT_SSL: not TLS.
        assert!(!ok(&inet(&ssl_tlv(0x06, &[]))).ssl);
        assert!(!ok(&inet(&ssl_tlv(0x00, &version))).ssl);
        // Other TLVs around it, before and after.
        let mut tlvs = tlv(0x01, b"h2");
        tlvs.extend_from_slice(&tlv(0x04, &[]));
        tlvs.extend_from_slice(&ssl_tlv(PP2_CLIENT_SSL, &[]));
        tlvs.extend_from_slice(&tlv(0xea, b"vpce-0123456789abcdef"));
        assert!(ok(&inet(&tlvs)).ssl);
        // Unknown and empty TLVs alone change nothing.
        assert!(!ok(&inet(&tlv(0xee, &[1, 2, 3, 4, 5]))).ssl);
    }

    #[test]
    fn v2_bad_tlvs() {
        for tlvs in [
            vec![0x01],
            vec![0x01, 0x00],
            vec![0x01, 0x00, 0x01],
            vec![0x01, 0x00, 0x03, b'h', b'2'],
            tlv(0x01, b"h2").tap(|t| t.push(0x04)),
            vec![0x20, 0xff, 0xff, 0x01],
        ] {
            assert_eq!(err(&inet(&tlvs)), ProxyHeaderError::V2BadTlv, "{tlvs:?}");
        }
        let mut twice = ssl_tlv(PP2_CLIENT_SSL, &[]);
        twice.extend_from_slice(&ssl_tlv(0, &[]));
        for tlvs in [
            tlv(PP2_TYPE_SSL, &[]),
            tlv(PP2_TYPE_SSL, &[1, 0, 0, 0]),
            ssl_tlv(1, &[0x21]),
            ssl_tlv(1, &[0x21, 0x00, 0x02, b'x']),
            ssl_tlv(1, &tlv(0x21, b"TLSv1.3").tap(|t| t.push(0))),
            twice,
        ] {
            assert_eq!(err(&inet(&tlvs)), ProxyHeaderError::V2BadSslTlv, "{tlvs:?}");
        }
    }

    #[test]
    fn v2_version_and_command() {
        for version_command in [0x11, 0x31, 0x01, 0xf1] {
            let input = inet(&[]).tap(|h| h[12] = version_command);
            assert_eq!(err(&input), ProxyHeaderError::V2BadVersion);
            assert_eq!(
                parse_proxy_header(&input[..13]),
                Err(ProxyHeaderError::V2BadVersion)
            );
        }
        for version_command in [0x22, 0x2f] {
            let input = inet(&[]).tap(|h| h[12] = version_command);
            assert_eq!(err(&input), ProxyHeaderError::V2BadCommand);
            assert_eq!(
                parse_proxy_header(&input[..13]),
                Err(ProxyHeaderError::V2BadCommand)
            );
        }
    }

    #[test]
    fn v2_families() {
        for family in [0x12, 0x22, 0x32] {
            let input = v2(0x21, family, &[0; 216]);
            assert_eq!(err(&input), ProxyHeaderError::V2Datagram, "{family:#x}");
            assert_eq!(
                parse_proxy_header(&input[..14]),
                Err(ProxyHeaderError::V2Datagram)
            );
        }
        for family in [
            0x01, 0x02, 0x10, 0x20, 0x30, 0x13, 0x41, 0x40, 0xf1, 0x1f, 0xff,
        ] {
            let input = v2(0x21, family, &[0; 216]);
            assert_eq!(err(&input), ProxyHeaderError::V2BadFamily, "{family:#x}");
            assert_eq!(
                parse_proxy_header(&input[..14]),
                Err(ProxyHeaderError::V2BadFamily)
            );
        }
    }

    #[test]
    fn v2_lengths() {
        for (family, short) in [(0x11, 11), (0x21, 35), (0x31, 215), (0x11, 0)] {
            let input = v2(0x21, family, &vec![0; short]);
            assert_eq!(err(&input), ProxyHeaderError::V2ShortAddress);
            assert_eq!(
                parse_proxy_header(&input[..16]),
                Err(ProxyHeaderError::V2ShortAddress)
            );
        }
        let largest = MAX_HEADER_LEN - V2_FIXED;
        let mut tlvs = tlv(0x05, &vec![b'u'; largest - 12 - 3 - 8]);
        tlvs.extend_from_slice(&ssl_tlv(1, &[]));
        let input = inet(&tlvs);
        assert_eq!(input.len(), MAX_HEADER_LEN);
        assert!(ok(&input).ssl);
        // One more byte is refused as soon as the length is read, before any of the block.
        let input = inet(&tlvs).tap(|h| {
            h.push(0);
            let len = u16::try_from(largest + 1).unwrap().to_be_bytes();
            h[14..16].copy_from_slice(&len);
        });
        assert_eq!(err(&input), ProxyHeaderError::V2TooLong);
        assert_eq!(
            parse_proxy_header(&input[..16]),
            Err(ProxyHeaderError::V2TooLong)
        );
        assert_eq!(
            parse_proxy_header(&v2(0x21, 0x11, &[]).tap(|h| h[14..16].fill(0xff))),
            Err(ProxyHeaderError::V2TooLong)
        );
        // Data after the block belongs to the client, however it looks.
        let mut input = inet(&[]);
        let n = input.len();
        input.extend_from_slice(&[0x20, 0x00]);
        assert_eq!(
            parse_proxy_header(&input),
            Ok(Some((
                addressed("10.0.0.1:56324", "192.168.1.2:443", false),
                n
            )))
        );
    }

    #[test]
    fn every_single_byte_change_stays_consistent() {
        let mut tlvs = tlv(0x01, b"h2");
        tlvs.extend_from_slice(&ssl_tlv(PP2_CLIENT_SSL, &tlv(0x21, b"TLSv1.3")));
        let valid = [
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 ::1 65535 8080\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            inet(&tlvs),
            v2(0x20, 0x00, &[]),
        ];
        for header in valid {
            for at in 0..header.len() {
                for byte in [0x00, 0xff, b' ', b'\r', b'\n', b'0', header[at] ^ 0x01] {
                    let mut changed = header.clone();
                    changed[at] = byte;
                    // Checks prefixes agree; the outcome itself may be anything.
                    let _ = parse_all_ways(&changed);
                }
            }
        }
    }

    #[test]
    fn max_header_len_covers_v1() {
        const { assert!(V1_MAX <= MAX_HEADER_LEN) };
    }
}
