//! A TCP relay on 127.0.0.1 port 0 in front of a role, that can lose a
//! write the way a dying link does (the bytes never arrive, then the
//! connection closes), or stop reading from its clients the way a role too
//! busy to read does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Losing nothing.
const OFF: usize = usize::MAX;

pub struct Relay {
    pub addr: SocketAddr,
    lose_over: Arc<AtomicUsize>,
    held: watch::Sender<bool>,
}

impl Relay {
    /// Relays every connection to `target`, in both directions.
    pub fn start(target: String) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("bound");
        let listener = TcpListener::from_std(listener).expect("in a runtime");
        let lose_over = Arc::new(AtomicUsize::new(OFF));
        let armed = lose_over.clone();
        let (held, holding) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, armed.clone(), holding.clone()));
            }
        });
        Relay {
            addr,
            lose_over,
            held,
        }
    }

    /// Stops reading what clients send (what the role sends them still
    /// goes), until [`Relay::release`]: their writes pile up in the
    /// sockets' buffers, then wait in theirs. A relay dropped while held
    /// holds its connections for good.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// The next read of more than `len` bytes from a client is dropped,
    /// and its connection closed (once).
    pub fn lose_next_write_over(&self, len: usize) {
        self.lose_over.store(len, Ordering::SeqCst);
    }
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    lose_over: Arc<AtomicUsize>,
    mut held: watch::Receiver<bool>,
) {
    let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    // The relay's owner may drop it and leave its connections running.
    let mut owned = true;
    loop {
        let holding = *held.borrow_and_update();
        tokio::select! {
            changed = held.changed(), if owned => owned = changed.is_ok(),
            n = client.read(&mut up), if !holding => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let over = lose_over.load(Ordering::SeqCst);
                    if n > over
                        && lose_over
                            .compare_exchange(over, OFF, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        return;
                    }
                    if server.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
            },
            n = server.read(&mut down) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}
