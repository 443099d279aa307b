//! monoio 0.2 on its io_uring driver: `RuntimeBuilder::<IoUringDriver>` with the ring set up
//! `COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN` (falling back to fewer flags on older kernels),
//! one task per direction, owned 16 KiB buffers (`read` → `write_all`, one SQE each). With
//! `--splice MODE` the pairs are relayed by `splice_relay` instead.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, RuntimeBuilder};

use crate::{Args, BUF_SIZE, Splice};

/// SQ entries (monoio's default is 1024 too).
const ENTRIES: u32 = 1024;

/// The flag sets tried in order, with the name logged for the one the kernel took.
const SETUPS: [(&str, bool, bool, bool); 4] = [
    // (name, coop_taskrun, single_issuer, defer_taskrun)
    ("COOP_TASKRUN|SINGLE_ISSUER|DEFER_TASKRUN", true, true, true),
    ("COOP_TASKRUN|SINGLE_ISSUER", true, true, false),
    ("COOP_TASKRUN", true, false, false),
    ("no setup flags", false, false, false),
];

/// Runs the relay until the process is killed.
pub fn run(args: Args) -> io::Result<()> {
    crate::pin(args.core).map_err(io::Error::other)?;
    let mut last_err = None;
    for (name, coop, single, defer) in SETUPS {
        // monoio 0.2.4 builds on io-uring 0.6, hence the renamed dependency.
        let mut urb = io_uring_06::IoUring::builder();
        if coop {
            urb.setup_coop_taskrun();
        }
        if single {
            urb.setup_single_issuer();
        }
        if defer {
            urb.setup_defer_taskrun();
        }
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(ENTRIES)
            .uring_builder(urb)
            .build();
        match built {
            Ok(mut rt) => {
                let detail = format!(
                    "monoio 0.2 IoUringDriver, {name}, {ENTRIES} entries, bytes moved by {:?}",
                    args.splice
                );
                return rt.block_on(serve(args, detail));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no ring setup worked")))
}

async fn serve(args: Args, detail: String) -> io::Result<()> {
    let listener = TcpListener::bind(args.listen)?;
    crate::announce("relay-monoio", listener.local_addr()?, &detail);
    loop {
        let client = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                eprintln!("relay-monoio: accept: {e}");
                continue;
            }
        };
        let (backend, mode) = (args.backend, args.splice);
        monoio::spawn(async move {
            if let Err(e) = pair(client, backend, mode).await {
                eprintln!("relay-monoio: backend {backend}: {e}");
            }
        });
    }
}

async fn pair(client: TcpStream, backend: SocketAddr, mode: Splice) -> io::Result<()> {
    let server = TcpStream::connect_addr(backend).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    if mode != Splice::Copy {
        return crate::splice_relay::pair(client, server, mode).await;
    }
    let fds = [client.as_raw_fd(), server.as_raw_fd()];
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = monoio::spawn(copy(cr, sw, fds));
    copy(sr, cw, fds).await;
    up.await;
    Ok(())
}

/// `from` → `to` until EOF, then a half-close. On an error both sockets of the pair (`fds`, kept
/// open by the halves) are shut down, which ends the other direction too.
async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(mut from: R, mut to: W, fds: [i32; 2]) {
    let mut buf = Vec::with_capacity(BUF_SIZE);
    loop {
        let (r, b) = from.read(buf).await;
        buf = b;
        match r {
            Ok(0) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(_) => {}
            Err(_) => break,
        }
        let (r, b) = to.write_all(buf).await;
        buf = b;
        if r.is_err() {
            break;
        }
        buf.clear();
    }
    crate::splice_relay::shutdown_both(fds);
}
