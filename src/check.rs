//! Active health checks, the I/O half: one TCP connect, or one `GET <path>` whose status must be
//! 2xx/3xx, all within one time limit. The rise/fall rules live in `health.rs`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::config::Check;
use crate::h1;
use crate::health::FailReason;
use crate::net::{BufPool, InBuf, Sock, timeout};

/// `Ok` if the backend passes `check` within `limit`, else why not.
pub async fn probe(addr: SocketAddr, check: &Check, limit: Duration) -> Result<(), FailReason> {
    let verdict = timeout(limit, async {
        let stream = glommio::net::TcpStream::connect(addr)
            .await
            .map_err(std::io::Error::from)?;
        let Check::Http(path) = check else {
            return Ok(Ok(()));
        };
        let sock = Sock::new(stream);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wtgate-check\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await?;
        let limits = h1::Limits::default();
        let mut buf = InBuf::new(Rc::new(BufPool::new(limits.max_head_bytes + 1024, 0)));
        loop {
            if buf.is_full() {
                return Ok(Err(FailReason::BadResponse));
            }
            if buf.read_from(&sock).await? == 0 {
                return Ok(Err(FailReason::Closed));
            }
            match h1::parse_response(buf.data(), &limits, false) {
                Ok(Some(head)) if (100..200).contains(&head.status) => {
                    buf.consume(head.head_len)
                }
                Ok(Some(head)) if (200..400).contains(&head.status) => return Ok(Ok(())),
                Ok(Some(head)) => return Ok(Err(FailReason::Status(head.status))),
                Ok(None) => {}
                Err(_) => return Ok(Err(FailReason::BadResponse)),
            }
        }
    })
    .await;
    verdict.unwrap_or_else(|e| Err(FailReason::from_io(&e)))
}
