//! A TCP relay on 127.0.0.1 port 0 in front of a role, that can lose a
//! write the way a dying link does (the bytes never arrive, then the
//! connection closes), stop reading from its clients the way a role too
//! busy to read does, or cut every connection the way a role that stops
//! does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Losing nothing.
const OFF: usize = usize::MAX;

/// What the relay does with its clients' connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Relaying,
    /// Not reading what clients send.
    Held,
    /// Closing every connection at once.
    Cut,
}

pub struct Relay {
    pub addr: SocketAddr,
    lose_over: Arc<AtomicUsize>,
    state: watch::Sender<State>,
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
        let (state, watching) = watch::channel(State::Relaying);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() == State::Cut {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, armed.clone(), watching.clone()));
            }
        });
        Relay {
            addr,
            lose_over,
            state,
        }
    }

    /// Stops reading what clients send (what the role sends them still
    /// goes), until [`Relay::release`]: their writes pile up in the
    /// sockets' buffers, then wait in theirs. A relay dropped while held
    /// holds its connections for good.
    pub fn hold(&self) {
        self.state.send_replace(State::Held);
    }

    /// Relays again, after [`Relay::hold`] or [`Relay::cut`].
    pub fn release(&self) {
        self.state.send_replace(State::Relaying);
    }

    /// Closes every connection, and each new one at once, until
    /// [`Relay::release`]: to its clients, the role behind it is down. A
    /// relay dropped while cut closes every new connection for good.
    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
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
    mut state: watch::Receiver<State>,
) {
    let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    // The relay's owner may drop it and leave its connections running.
    let mut owned = true;
    loop {
        let holding = match *state.borrow_and_update() {
            State::Cut => return,
            held => held == State::Held,
        };
        tokio::select! {
            changed = state.changed(), if owned => owned = changed.is_ok(),
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
