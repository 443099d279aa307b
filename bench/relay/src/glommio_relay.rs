//! glommio 0.9 as released: one `LocalExecutor` pinned to the core, one task per direction, plain
//! `poll_read`/`poll_write` on glommio's `TcpStream` with a 16 KiB buffer each, no tricks (wtgate's
//! own `net::Sock` skips glommio's read path; this one deliberately does not).

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use crate::{Args, BUF_SIZE};

/// glommio registers this much memory for its own buffers; its 10 MiB default is over the 8 MiB
/// memlock limit of the bench machine, and nothing here uses registered buffers (wtgate uses the
/// same value).
const IO_MEMORY: usize = 256 * 1024;

/// Runs the relay until the process is killed.
pub fn run(args: Args) -> io::Result<()> {
    args.copy_only("relay-glommio")?;
    let placement = match args.core {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    let placed = format!("{placement:?}");
    let ex = LocalExecutorBuilder::new(placement)
        .name("relay-glommio")
        .io_memory(IO_MEMORY)
        .make()
        .map_err(|e| io::Error::other(e.to_string()))?;
    ex.run(async move {
        let listener = TcpListener::bind(args.listen)?;
        let addr = listener.local_addr()?;
        crate::announce(
            "relay-glommio",
            addr,
            &format!("glommio 0.9, {placed}, default ring setup"),
        );
        loop {
            let client = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("relay-glommio: accept: {e}");
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let backend = args.backend;
            glommio::spawn_local(async move {
                if let Err(e) = serve(client, backend).await {
                    eprintln!("relay-glommio: backend {backend}: {e}");
                }
            })
            .detach();
        }
    })
}

async fn serve(client: TcpStream, backend: std::net::SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(backend).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let client = Rc::new(RefCell::new(client));
    let server = Rc::new(RefCell::new(server));
    let up = glommio::spawn_local(copy(client.clone(), server.clone()));
    let down = copy(server, client);
    let _ = future::zip(up, down).await;
    Ok(())
}

/// `from` → `to` until EOF, then a half-close; on an error both sockets are shut down, which
/// ends the other direction too.
async fn copy(from: Rc<RefCell<TcpStream>>, to: Rc<RefCell<TcpStream>>) {
    let mut buf = vec![0u8; BUF_SIZE];
    let r: io::Result<()> = async {
        loop {
            // The RefCell is borrowed only inside one poll, never across an await, so the task
            // for the other direction (which holds the same streams) never finds it borrowed.
            let n = future::poll_fn(|cx| Pin::new(&mut *from.borrow_mut()).poll_read(cx, &mut buf))
                .await?;
            if n == 0 {
                shutdown(&to, libc::SHUT_WR);
                return Ok(());
            }
            let mut data = &buf[..n];
            while !data.is_empty() {
                let w = future::poll_fn(|cx| Pin::new(&mut *to.borrow_mut()).poll_write(cx, data))
                    .await?;
                if w == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                data = &data[w..];
            }
        }
    }
    .await;
    if r.is_err() {
        shutdown(&from, libc::SHUT_RDWR);
        shutdown(&to, libc::SHUT_RDWR);
    }
}

/// shutdown(2) right away. glommio's own `shutdown` is an io_uring op to await, and awaiting it
/// would hold the `RefCell` borrow across a suspension point.
fn shutdown(s: &RefCell<TcpStream>, how: i32) {
    let fd = s.borrow().as_raw_fd();
    // SAFETY: shutdown(2) on a descriptor that `s` keeps open; it touches no memory of ours.
    unsafe { libc::shutdown(fd, how) };
}
