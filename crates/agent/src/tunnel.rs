//! Byte streams carried over a node's one connection to the server: how Hearth's door
//! reaches a task's web server (its Spark UI) on a joined node, whose loopback the server
//! cannot reach. The server asks the node to open a stream to one task's guarded port
//! (`Open`); from then on both ends relay their socket's bytes as [`TunnelFrame`]s.
//!
//! Both ends run this same code over their own socket (the node a TCP connection to the
//! task's port, the server one end of an in-memory pipe that the door speaks HTTP over).
//! Each direction has a window: a sender keeps at most [`WINDOW`] bytes unacknowledged,
//! and the receiver acknowledges bytes once its socket took them, so a slow reader holds
//! up its writer instead of filling either process's memory.

use hearth_model::cluster::TunnelFrame;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

/// The most bytes of one frame (hex doubles them; the line stays under the frame cap).
pub const FRAME_BYTES: usize = 24 * 1024;
/// Bytes in flight per direction of a stream.
pub const WINDOW: usize = 256 * 1024;

/// How a frame leaves this end (wrapped in the side's own message type). False when the
/// connection is gone.
pub type Send = Box<dyn Fn(TunnelFrame) -> bool + std::marker::Send + Sync>;

fn data_frame(stream: u64, bytes: &[u8]) -> TunnelFrame {
    TunnelFrame {
        stream,
        data: Some(hex::encode(bytes)),
        ack: None,
        close: false,
    }
}

fn ack_frame(stream: u64, bytes: u64) -> TunnelFrame {
    TunnelFrame {
        stream,
        data: None,
        ack: Some(bytes),
        close: false,
    }
}

fn close_frame(stream: u64) -> TunnelFrame {
    TunnelFrame {
        stream,
        data: None,
        ack: None,
        close: true,
    }
}

/// The streams of one connection.
pub struct Tunnels {
    send: Send,
    streams: Mutex<HashMap<u64, Stream>>,
}

struct Stream {
    /// Bytes from the other end, for this end's socket; dropped when the other end closed.
    to_socket: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// What this end may still send before the other end acknowledges.
    window: Arc<Semaphore>,
    /// This end's socket reached its end (and said so).
    local_done: bool,
    /// Bytes received and not yet written to this end's socket: the other end may have at
    /// most a window in flight, so more is a peer that ignores it, and ends the stream
    /// (a hostile node cannot fill the server's memory through a slow door).
    unwritten: Arc<std::sync::atomic::AtomicUsize>,
    reader: tokio::task::AbortHandle,
}

impl Tunnels {
    pub fn new(send: Send) -> Arc<Tunnels> {
        Arc::new(Tunnels {
            send,
            streams: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Stream>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Relays `socket` as stream `id` until both ends are done. False (and the socket
    /// dropped) if a stream `id` is open already: ids are never reused while open.
    pub fn attach<S>(self: &Arc<Self>, id: u64, socket: S) -> bool
    where
        S: AsyncRead + AsyncWrite + std::marker::Send + 'static,
    {
        // Holding the lock while spawning: the reader's first frame cannot outrun the entry.
        let mut streams = self.lock();
        if streams.contains_key(&id) {
            return false;
        }
        let (mut rd, mut wr) = tokio::io::split(socket);
        let (to_socket, mut from_peer) = mpsc::unbounded_channel::<Vec<u8>>();
        let window = Arc::new(Semaphore::new(WINDOW));
        let unwritten = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let me = Arc::downgrade(self);
        let pending = unwritten.clone();
        tokio::spawn(async move {
            while let Some(bytes) = from_peer.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
                pending.fetch_sub(bytes.len(), std::sync::atomic::Ordering::SeqCst);
                let Some(t) = me.upgrade() else { break };
                (t.send)(ack_frame(id, bytes.len() as u64));
            }
            let _ = wr.shutdown().await;
        });
        let me = Arc::downgrade(self);
        let win = window.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; FRAME_BYTES];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let Ok(permits) = win.acquire_many(n as u32).await else {
                    break;
                };
                permits.forget();
                let Some(t) = me.upgrade() else { return };
                if !(t.send)(data_frame(id, &buf[..n])) {
                    break;
                }
            }
            if let Some(t) = me.upgrade() {
                (t.send)(close_frame(id));
                t.local_done(id);
            }
        });
        streams.insert(
            id,
            Stream {
                to_socket: Some(to_socket),
                window,
                local_done: false,
                unwritten,
                reader: reader.abort_handle(),
            },
        );
        true
    }

    fn local_done(&self, id: u64) {
        let mut streams = self.lock();
        if let Some(s) = streams.get_mut(&id) {
            s.local_done = true;
            if s.to_socket.is_none() {
                streams.remove(&id);
            }
        }
    }

    /// A frame from the other end. Frames of unknown streams are dropped (a stream ended
    /// here while the other end still sent).
    pub fn deliver(&self, frame: TunnelFrame) {
        let mut streams = self.lock();
        let Some(s) = streams.get_mut(&frame.stream) else {
            return;
        };
        if let Some(n) = frame.ack {
            s.window
                .add_permits((n as usize).min(WINDOW.saturating_sub(s.window.available_permits())));
        }
        if let Some(hex) = &frame.data {
            match hex::decode(hex) {
                // The other end keeps to the window: more would be a broken peer.
                Ok(bytes)
                    if bytes.len() <= FRAME_BYTES
                        && s.unwritten.load(std::sync::atomic::Ordering::SeqCst) + bytes.len()
                            <= WINDOW =>
                {
                    if let Some(tx) = &s.to_socket {
                        s.unwritten
                            .fetch_add(bytes.len(), std::sync::atomic::Ordering::SeqCst);
                        let _ = tx.send(bytes);
                    }
                }
                _ => {
                    s.reader.abort();
                    streams.remove(&frame.stream);
                    return;
                }
            }
        }
        if frame.close {
            // Whatever came before the close is still written, then the socket shut.
            s.to_socket = None;
            if s.local_done {
                streams.remove(&frame.stream);
            }
        }
    }

    /// Ends every stream at once (the connection that carried them is gone).
    pub fn close_all(&self) {
        for (_, s) in self.lock().drain() {
            s.reader.abort();
        }
    }

    /// Ends one stream from this side (it could not be set up, or is no longer wanted).
    pub fn abort(&self, id: u64) {
        if let Some(s) = self.lock().remove(&id) {
            s.reader.abort();
            (self.send)(close_frame(id));
        }
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Two ends joined back to back in memory, each delivering what the other sends: for
/// tests of what streams carry, without a node connection.
pub fn joined_pair() -> (Arc<Tunnels>, Arc<Tunnels>) {
    let (tx_a, mut rx_a) = mpsc::unbounded_channel::<TunnelFrame>();
    let (tx_b, mut rx_b) = mpsc::unbounded_channel::<TunnelFrame>();
    let a = Tunnels::new(Box::new(move |f| tx_a.send(f).is_ok()));
    let b = Tunnels::new(Box::new(move |f| tx_b.send(f).is_ok()));
    let (a2, b2) = (Arc::downgrade(&a), Arc::downgrade(&b));
    tokio::spawn(async move {
        while let Some(f) = rx_a.recv().await {
            match b2.upgrade() {
                Some(b) => b.deliver(f),
                None => return,
            }
        }
    });
    tokio::spawn(async move {
        while let Some(f) = rx_b.recv().await {
            match a2.upgrade() {
                Some(a) => a.deliver(f),
                None => return,
            }
        }
    });
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_cross_both_ways_in_order_and_both_ends_close() {
        let (a, b) = joined_pair();
        let (mut client, a_end) = tokio::io::duplex(1024);
        let (b_end, mut server) = tokio::io::duplex(1024);
        a.attach(1, a_end);
        b.attach(1, b_end);
        // More than a window, in odd sizes: nothing lost, nothing reordered.
        let sent: Vec<u8> = (0..(WINDOW * 3 + 777)).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for piece in sent.chunks(10_007) {
                    client.write_all(piece).await.expect("write");
                }
                client.shutdown().await.expect("shutdown");
                let mut back = Vec::new();
                client.read_to_end(&mut back).await.expect("read back");
                back
            })
        };
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), sent.len());
        assert!(got == sent);
        server.write_all(b"answer").await.expect("answer");
        server.shutdown().await.expect("shutdown");
        drop(server);
        assert_eq!(writer.await.expect("joined"), b"answer");
        // Both ends forget the stream once both directions ended.
        for _ in 0..100 {
            if a.is_empty() && b.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("streams left open: {} and {}", a.len(), b.len());
    }

    #[tokio::test]
    async fn a_slow_reader_holds_up_the_writer_at_the_window() {
        let (a, b) = joined_pair();
        let (mut client, a_end) = tokio::io::duplex(64 * 1024);
        // The far socket's buffer is small and nobody reads it.
        let (b_end, _server) = tokio::io::duplex(1024);
        a.attach(7, a_end);
        b.attach(7, b_end);
        let flood = tokio::spawn(async move {
            let chunk = vec![1u8; 16 * 1024];
            let mut written = 0usize;
            loop {
                if client.write_all(&chunk).await.is_err() {
                    return written;
                }
                written += chunk.len();
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!flood.is_finished());
        // Held: what left `a` is at most one window (plus what the pipes buffer).
        let avail = a.lock().get(&7).map(|s| s.window.available_permits());
        assert_eq!(avail, Some(0), "the window is used up and not refilled");
        flood.abort();
    }

    #[tokio::test]
    async fn a_peer_that_ignores_the_window_is_cut_off() {
        // Nobody reads the far socket, so nothing is written, nothing acknowledged.
        let t = Tunnels::new(Box::new(|_| true));
        let (_far, end) = tokio::io::duplex(16);
        assert!(t.attach(5, end));
        let chunk = vec![7u8; FRAME_BYTES];
        for _ in 0..(WINDOW / FRAME_BYTES) {
            t.deliver(data_frame(5, &chunk));
        }
        assert_eq!(t.len(), 1, "a window's worth is taken");
        t.deliver(data_frame(5, &chunk));
        assert!(t.is_empty(), "beyond the window: the stream ends");
        // An id in use is never taken twice.
        let (_a, one) = tokio::io::duplex(16);
        let (_b, two) = tokio::io::duplex(16);
        assert!(t.attach(9, one));
        assert!(!t.attach(9, two));
    }

    #[test]
    fn a_frame_beyond_the_window_ends_the_stream() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let t = Tunnels::new(Box::new(|_| true));
            let (_far, end) = tokio::io::duplex(1024);
            t.attach(3, end);
            t.deliver(data_frame(3, &vec![0u8; FRAME_BYTES + 1]));
            assert!(t.is_empty());
            t.deliver(data_frame(9, b"unknown stream: dropped"));
        });
    }
}
