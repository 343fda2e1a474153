//! The gateway's fast path: a connection authenticated by its first call, then relayed as
//! bytes to the user's own engine instead of served call by call.
//!
//! The gateway normally terminates HTTP/2 on both sides so that it can check the Hearth token
//! of every call and put the engine's secret in its place. That costs about half a
//! millisecond a call, a large share of Sail's few milliseconds and a few percent of the
//! JVM's. Here the gateway reads only as far as the connection's first request, checks its
//! token, and then relays the connection's bytes to the user's own engine. Every call on the
//! connection reaches the engine of the user who authenticated it; the token is checked again
//! every few seconds, and the connection is closed once it is revoked or expires.
//!
//! Which connections: Sail's (it checks no token of its own: its port is guarded, only
//! Hearth reaches it), and the JVM engine's when the client sends its token as plain metadata
//! (`;x-hearth-token=`) and no `authorization` of its own. The JVM engine checks its secret on
//! every call, so the relay adds it to every header block the client sends: a CONTINUATION
//! frame holding one HPACK field, `authorization` never indexed, which leaves both sides'
//! header tables as they were. The Hearth token travels on to the user's own engine as an
//! unread header (it is that user's already); it never reaches anyone else's.
//!
//! What the relay reads: HTTP/2 frame headers (9 bytes each), to know whether a call is in
//! flight (a stream opened by the client and not yet ended by the engine), so that an engine
//! busy with a long query is never idle, and an open but idle connection does not keep an
//! engine alive for ever; and to find where the client's header blocks end.
//!
//! Anything unexpected before the first request is complete (not HTTP/2, a malformed or huge
//! header block, an unknown engine, no valid token, an engine that cannot start) falls back
//! to the ordinary path, which answers it with a proper gRPC status.

use crate::interactive::engines::{EngineKind, Lease};
use crate::App;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most read while looking for the first request's headers.
const MAX_FIRST: usize = 64 * 1024;

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// What the connection's first call asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FirstCall {
    pub path: String,
    /// The token's two forms as they came (`gateway::token_of` reads them).
    pub plain_token: Option<String>,
    pub authorization: Option<String>,
    pub engine: Option<String>,
}

impl FirstCall {
    pub fn token(&self) -> Option<&str> {
        crate::interactive::gateway::token_of(
            self.plain_token.as_deref(),
            self.authorization.as_deref(),
        )
        .ok()
    }
}

/// A frame header: payload length, type, flags, stream id.
fn frame_header(b: &[u8]) -> (usize, u8, u8, u32) {
    let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
    let id = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff;
    (len, b[3], b[4], id)
}

/// The header block fragment a HEADERS or CONTINUATION frame's payload holds: without
/// HEADERS' pad length, priority and padding. None if the frame's lengths do not add up.
fn fragment(kind: u8, flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if kind != HEADERS {
        return Some(payload);
    }
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        start = 1;
        end = end.checked_sub(usize::from(*payload.first()?))?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end)
}

/// Parses `buf` (everything the client sent so far): Some once the first request's header
/// block is complete, with what it asks; Err if this is not something the relay takes.
fn parse_first(buf: &[u8]) -> Result<Option<FirstCall>, ()> {
    if buf.len() < PREFACE.len() {
        return if PREFACE.starts_with(buf) {
            Ok(None)
        } else {
            Err(())
        };
    }
    if !buf.starts_with(PREFACE) {
        return Err(());
    }
    let mut at = PREFACE.len();
    let mut block: Vec<u8> = Vec::new();
    let mut stream = None;
    loop {
        if buf.len() < at + 9 {
            return Ok(None);
        }
        let (len, kind, flags, id) = frame_header(&buf[at..at + 9]);
        if buf.len() < at + 9 + len {
            return Ok(None);
        }
        let payload = &buf[at + 9..at + 9 + len];
        at += 9 + len;
        match (kind, stream) {
            (HEADERS, None) => {
                block.extend_from_slice(fragment(kind, flags, payload).ok_or(())?);
                stream = Some(id);
                if flags & END_HEADERS != 0 {
                    break;
                }
            }
            (CONTINUATION, Some(s)) if s == id => {
                block.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    break;
                }
            }
            // Anything else inside a header block breaks HTTP/2's rules.
            (_, Some(_)) => return Err(()),
            // SETTINGS, WINDOW_UPDATE, PING before the first request.
            (_, None) => {}
        }
    }
    // A fresh table: the first block of a connection can refer to no earlier one. The
    // decoder is an old crate: a panic on hostile bytes falls back instead of failing.
    let decoded = std::panic::catch_unwind(|| hpack::Decoder::new().decode(&block))
        .map_err(|_| ())?
        .map_err(|_| ())?;
    let mut call = FirstCall::default();
    for (name, value) in decoded {
        let value = String::from_utf8_lossy(&value).into_owned();
        match name.as_slice() {
            b":path" => call.path = value,
            b"x-hearth-token" => call.plain_token = Some(value),
            b"authorization" => call.authorization = Some(value),
            b"x-hearth-engine" => call.engine = Some(value.trim().to_string()),
            _ => {}
        }
    }
    Ok(Some(call))
}

/// Reads the client's first request (at most [`MAX_FIRST`] bytes, for at most 10 s) into
/// `buf`; None when the relay does not take this connection.
pub async fn read_first<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> Option<FirstCall> {
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match parse_first(buf) {
                Ok(Some(call)) => return Some(call),
                Err(()) => return None,
                Ok(None) if buf.len() >= MAX_FIRST => return None,
                Ok(None) => {}
            }
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let got = tokio::time::timeout(Duration::from_secs(10), read).await;
    if got.is_err() {
        tracing::info!(
            "relay: no first call within 10 s ({} bytes read)",
            buf.len()
        );
    }
    got.ok().flatten()
}

/// Whether the relay takes this first call, and to which engine: the user (of a valid token)
/// and the engine kind.
pub async fn takes(
    app: &Arc<App>,
    call: &FirstCall,
) -> Option<(crate::store::UserRow, EngineKind)> {
    // A release with no engine is answered by the ordinary path without starting one.
    if call.path.ends_with("/ReleaseSession") {
        return None;
    }
    let kind = match call.engine.as_deref() {
        None => EngineKind::Spark,
        Some(name) => EngineKind::for_connect(name.trim())?,
    };
    // The JVM engine would see the client's `authorization` beside the secret the relay adds:
    // that form of the token is swapped call by call instead.
    if kind == EngineKind::Spark && call.authorization.is_some() {
        return None;
    }
    let token = call.token()?;
    let user = crate::auth::user_for_token(app, token, crate::auth::Scope::Connect)
        .await
        .ok()?;
    Some((user, kind))
}

/// Streams in flight on a relayed connection, and the engine lease they hold.
struct Calls {
    open: HashSet<u32>,
    lease: Option<Lease>,
}

/// Watches one direction's frames: opens (client HEADERS) and ends (the engine's
/// END_STREAM, RST_STREAM from either side) of calls; on the client's side, adds `inject`
/// (HPACK fields) to the end of each of its header blocks.
struct FrameWatch {
    from_client: bool,
    header: Vec<u8>,
    skip: usize,
    inject: Option<Vec<u8>>,
    /// With `inject`: the current frame's kind and flags when it is part of a header block,
    /// its payload so far, and the block so far (its fragments, without padding or priority).
    in_block: Option<(u8, u8, u32)>,
    payload: Vec<u8>,
    block: Vec<u8>,
}

/// The most of one header block the relay holds to check it (gRPC's are a few hundred bytes).
const MAX_BLOCK: usize = 64 * 1024;

/// A client's header block the relay will not add to: the connection is closed.
#[derive(Debug, PartialEq, Eq)]
pub struct BadBlock;

impl FrameWatch {
    fn new(from_client: bool, inject: Option<Vec<u8>>) -> FrameWatch {
        FrameWatch {
            from_client,
            header: Vec::with_capacity(9),
            skip: 0,
            inject,
            in_block: None,
            payload: Vec::new(),
            block: Vec::new(),
        }
    }

    /// Feeds bytes; calls `event(opened, stream)` for each call opened or ended. With `out`,
    /// writes the bytes to pass on there (the same bytes, plus what is injected).
    fn feed(
        &mut self,
        mut bytes: &[u8],
        mut out: Option<&mut Vec<u8>>,
        mut event: impl FnMut(bool, u32),
    ) -> Result<(), BadBlock> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                if let Some(out) = out.as_deref_mut() {
                    out.extend_from_slice(&bytes[..n]);
                }
                if self.in_block.is_some() {
                    self.payload.extend_from_slice(&bytes[..n]);
                }
                self.skip -= n;
                bytes = &bytes[n..];
                if self.skip == 0 {
                    self.end_of_frame(out.as_deref_mut())?;
                }
                continue;
            }
            let need = 9 - self.header.len();
            let n = need.min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < 9 {
                continue;
            }
            let (len, kind, flags, id) = frame_header(&self.header);
            if id != 0 {
                if kind == RST_STREAM {
                    event(false, id);
                } else if self.from_client && kind == HEADERS {
                    event(true, id);
                } else if !self.from_client && flags & END_STREAM != 0 && kind != CONTINUATION {
                    event(false, id);
                }
                if self.inject.is_some() && matches!(kind, HEADERS | CONTINUATION) {
                    if self.block.len() + len > MAX_BLOCK {
                        return Err(BadBlock);
                    }
                    self.in_block = Some((kind, flags, id));
                    // The block goes on in the frame injected after this one.
                    self.header[4] &= !END_HEADERS;
                }
            }
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&self.header);
            }
            self.header.clear();
            self.skip = len;
            if len == 0 {
                self.end_of_frame(out.as_deref_mut())?;
            }
        }
        Ok(())
    }

    /// A frame's payload has passed. A frame of a header block adds its fragment to the
    /// block; the last one is followed by the injected CONTINUATION, once the block is seen
    /// to end where a field ends: a block ending inside a field would swallow the injected
    /// bytes into a field of the client's making (whose value an engine might echo).
    fn end_of_frame(&mut self, out: Option<&mut Vec<u8>>) -> Result<(), BadBlock> {
        let Some((kind, flags, id)) = self.in_block.take() else {
            return Ok(());
        };
        self.block
            .extend_from_slice(fragment(kind, flags, &self.payload).ok_or(BadBlock)?);
        self.payload.clear();
        if flags & END_HEADERS == 0 {
            return Ok(());
        }
        let complete = hpack_fields_end(&self.block);
        self.block.clear();
        if !complete {
            return Err(BadBlock);
        }
        let (Some(fields), Some(out)) = (&self.inject, out) else {
            return Ok(());
        };
        let len = fields.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
        out.extend_from_slice(&[CONTINUATION, END_HEADERS]);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(fields);
        Ok(())
    }
}

/// Whether an HPACK header block ends exactly where a field (or table size update) ends
/// (RFC 7541 6). Reads only prefixes and lengths: no table, no Huffman.
fn hpack_fields_end(b: &[u8]) -> bool {
    /// An integer with an N-bit prefix at `i`: its value and where it ends.
    fn int(b: &[u8], i: usize, bits: u32) -> Option<(usize, usize)> {
        let max = (1usize << bits) - 1;
        let mut v = usize::from(*b.get(i)?) & max;
        let mut i = i + 1;
        if v < max {
            return Some((v, i));
        }
        let mut shift = 0u32;
        loop {
            let byte = *b.get(i)?;
            i += 1;
            v = v.checked_add(usize::from(byte & 0x7f).checked_shl(shift)?)?;
            if byte & 0x80 == 0 {
                return Some((v, i));
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
    }
    fn string(b: &[u8], i: usize) -> Option<usize> {
        let (len, i) = int(b, i, 7)?;
        let end = i.checked_add(len)?;
        (end <= b.len()).then_some(end)
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = if c & 0x80 != 0 {
            int(b, i, 7).map(|(_, i)| i)
        } else if c & 0xe0 == 0x20 {
            int(b, i, 5).map(|(_, i)| i)
        } else {
            // Literals: with indexing (01, a 6-bit index), without or never indexed (000x,
            // 4 bits); index 0 means the name follows as a string.
            let bits = if c & 0xc0 == 0x40 { 6 } else { 4 };
            int(b, i, bits).and_then(|(index, i)| {
                let i = if index == 0 { string(b, i)? } else { i };
                string(b, i)
            })
        };
        match next {
            Some(n) => i = n,
            None => return false,
        }
    }
    true
}

/// `authorization: Bearer SECRET` as one HPACK field, never indexed: no table on either side
/// changes (RFC 7541 6.2.3; `authorization` is entry 23 of the static table), so it can be
/// added to any header block of a connection whose other fields pass as they came.
fn authorization_field(secret: &str) -> Vec<u8> {
    let value = format!("Bearer {secret}");
    let mut out = Vec::with_capacity(value.len() + 4);
    hpack_int(&mut out, 0x10, 4, 23);
    hpack_int(&mut out, 0x00, 7, value.len());
    out.extend_from_slice(value.as_bytes());
    out
}

/// An HPACK integer with an N-bit prefix (RFC 7541 5.1) after the bits `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, bits: u32, mut v: usize) {
    let max = (1usize << bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Relays the connection `client` (whose first bytes are `first`) to the leased engine of
/// `user`, connected as `upstream`, until either side closes, the token stops being valid, a
/// header block is one the relay will not add to, or Hearth stops.
pub async fn relay<S>(
    app: Arc<App>,
    user: crate::store::UserRow,
    token: String,
    lease: Lease,
    mut upstream: tokio::net::TcpStream,
    client: S,
    first: Vec<u8>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let engine = lease.engine.clone();
    let kind = engine.kind;
    tracing::info!(user = %user.name, engine = engine.id, kind = kind.name(), "relaying a Spark Connect connection");
    let _ = upstream.set_nodelay(true);
    let calls = Arc::new(Mutex::new(Calls {
        open: HashSet::new(),
        lease: None,
    }));
    let on_event = {
        let (calls, app, uid) = (calls.clone(), app.clone(), user.id);
        move |opened: bool, id: u32| {
            let mut c = calls.lock().unwrap_or_else(|p| p.into_inner());
            if opened {
                c.open.insert(id);
                if c.lease.is_none() {
                    c.lease = app.engines.lease_running(uid, kind);
                }
            } else {
                c.open.remove(&id);
                if c.open.is_empty() {
                    c.lease = None;
                }
            }
        }
    };
    // The JVM engine's secret, added to every call (Sail's port is guarded instead).
    let inject = (kind == EngineKind::Spark).then(|| authorization_field(&engine.secret));
    let rewrites = inject.is_some();
    let mut to_engine = FrameWatch::new(true, inject);
    // The bytes already read hold the first call's opening.
    let mut out = PREFACE.to_vec();
    let fed = to_engine.feed(&first[PREFACE.len()..], Some(&mut out), on_event.clone());
    drop((lease, first));
    if fed.is_err() || upstream.write_all(&out).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = upstream.into_split();
    let up = {
        let (engine, mut on_event) = (engine.clone(), on_event.clone());
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                engine.touch();
                let written = if rewrites {
                    out.clear();
                    if to_engine
                        .feed(&buf[..n], Some(&mut out), &mut on_event)
                        .is_err()
                    {
                        tracing::info!(engine = engine.id, "closed a relayed Spark Connect connection: a header block that does not end where a field ends");
                        return;
                    }
                    let w = uw.write_all(&out).await;
                    // Empty header blocks each grow by a whole field: give a large buffer back.
                    if out.capacity() > 4 * buf.len() {
                        out = Vec::new();
                    }
                    w
                } else {
                    // Nothing to add (Sail): the bytes as read, watched only.
                    let _ = to_engine.feed(&buf[..n], None, &mut on_event);
                    uw.write_all(&buf[..n]).await
                };
                if written.is_err() {
                    return;
                }
            }
        }
    };
    let down = {
        let (engine, mut on_event) = (engine.clone(), on_event.clone());
        async move {
            let mut watch = FrameWatch::new(false, None);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match ur.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                engine.touch();
                let _ = watch.feed(&buf[..n], None, &mut on_event);
                if cw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let still_valid = async {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if app.is_shutting_down() {
                return;
            }
            if !token_still_valid(&app, &token, user.id) {
                tracing::info!(user = %user.name, engine = engine.id, "closed a relayed Spark Connect connection: its token was revoked or expired");
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = still_valid => {}
    }
    // Whatever ended it, no call is in flight any more.
    calls.lock().unwrap_or_else(|p| p.into_inner()).lease = None;
}

/// The token is still the user's and not revoked or expired (a cheap look in the store).
fn token_still_valid(app: &App, token: &str, user_id: i64) -> bool {
    let Some(id) = crate::auth::token_id(token) else {
        return false;
    };
    match app.store.token(id) {
        Ok(Some(t)) => {
            t.user_id == user_id && t.expires_at.is_none_or(|e| e > crate::store::now_ms())
        }
        _ => false,
    }
}

/// An empty SETTINGS frame: gRPC clients wait for the server's SETTINGS before their first
/// call, and the relay must see that call before it knows where to relay.
pub const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;

/// The client's side of a connection without the client's acknowledgement of
/// [`EMPTY_SETTINGS`] (its first SETTINGS ACK): whoever serves the connection afterwards
/// (Sail, or the ordinary path) sent its own SETTINGS, expects exactly one ACK for it, and
/// treats any other as a protocol error.
pub struct StripAck<S> {
    inner: S,
    /// Bytes of the preface still to pass.
    preface: usize,
    header: Vec<u8>,
    /// Payload bytes of the current frame still to pass.
    payload: usize,
    stripped: bool,
    out: Vec<u8>,
    out_at: usize,
}

impl<S> StripAck<S> {
    /// Hands `first` (what was read so far) to the next reader again, before the rest: the
    /// ordinary path reads the connection from its start.
    pub fn replay(mut self, first: Vec<u8>) -> StripAck<S> {
        let rest = self.out.split_off(self.out_at);
        self.out = first;
        self.out.extend(rest);
        self.out_at = 0;
        self
    }

    pub fn new(inner: S) -> StripAck<S> {
        StripAck {
            inner,
            preface: PREFACE.len(),
            header: Vec::with_capacity(9),
            payload: 0,
            stripped: false,
            out: Vec::new(),
            out_at: 0,
        }
    }

    /// Passes `bytes` on, minus the one ACK frame.
    fn filter(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.stripped {
                self.out.extend_from_slice(bytes);
                return;
            }
            let pass = if self.preface > 0 {
                let n = self.preface.min(bytes.len());
                self.preface -= n;
                n
            } else if self.payload > 0 {
                let n = self.payload.min(bytes.len());
                self.payload -= n;
                n
            } else {
                0
            };
            if pass > 0 {
                self.out.extend_from_slice(&bytes[..pass]);
                bytes = &bytes[pass..];
                continue;
            }
            let n = (9 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 9 {
                let (len, kind, flags, _) = frame_header(&self.header);
                if kind == SETTINGS && flags & ACK != 0 && len == 0 {
                    self.stripped = true;
                } else {
                    self.out.extend_from_slice(&self.header);
                    self.payload = len;
                }
                self.header.clear();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StripAck<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.out_at < me.out.len() {
                let n = (me.out.len() - me.out_at).min(buf.remaining());
                buf.put_slice(&me.out[me.out_at..me.out_at + n]);
                me.out_at += n;
                return Poll::Ready(Ok(()));
            }
            if me.stripped {
                // Nothing more to take out: straight through, no copy.
                return Pin::new(&mut me.inner).poll_read(cx, buf);
            }
            me.out.clear();
            me.out_at = 0;
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    me.filter(&chunk[..n]);
                }
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StripAck<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn headers_block(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        hpack::Encoder::new().encode(pairs.iter().copied())
    }

    #[test]
    fn the_token_comes_as_plain_metadata_or_as_a_bearer() {
        let first = |pairs: &[(&[u8], &[u8])]| {
            let mut bytes = PREFACE.to_vec();
            bytes.extend(frame(HEADERS, END_HEADERS, 1, &headers_block(pairs)));
            parse_first(&bytes).expect("valid").expect("complete")
        };
        let plain = first(&[(b":path", b"/x"), (b"x-hearth-token", b" hth_1_p ")]);
        assert_eq!(
            (plain.token(), plain.authorization.is_some()),
            (Some("hth_1_p"), false)
        );
        // Both: the plain one counts (as on the ordinary path), and the bearer is noticed.
        let both = first(&[
            (b"authorization", b"Bearer hth_1_b"),
            (b"x-hearth-token", b"hth_1_p"),
        ]);
        assert_eq!(
            (both.token(), both.authorization.is_some()),
            (Some("hth_1_p"), true)
        );
        let bearer = first(&[(b"authorization", b"Bearer hth_1_b")]);
        assert_eq!(
            (bearer.token(), bearer.authorization.is_some()),
            (Some("hth_1_b"), true)
        );
    }

    #[test]
    fn the_first_call_is_read_across_settings_and_continuation() {
        let block = headers_block(&[
            (b":method", b"POST"),
            (b":path", b"/spark.connect.SparkConnectService/ExecutePlan"),
            (b"authorization", b"Bearer hth_1_abc"),
            (b"x-hearth-engine", b"sail"),
        ]);
        let (a, b) = block.split_at(block.len() / 2);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        bytes.extend(frame(HEADERS, 0, 1, a));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        // Byte by byte: not enough yet, then the call.
        for cut in 0..bytes.len() {
            assert_eq!(parse_first(&bytes[..cut]), Ok(None), "at {cut}");
        }
        let call = parse_first(&bytes).expect("valid").expect("complete");
        assert_eq!(call.token(), Some("hth_1_abc"));
        assert_eq!(call.engine.as_deref(), Some("sail"));
        assert!(call.path.ends_with("/ExecutePlan"));
    }

    #[test]
    fn what_is_not_http2_or_breaks_its_rules_is_left_to_the_ordinary_path() {
        assert_eq!(parse_first(b"GET / HTTP/1.1\r\n"), Err(()));
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 0, 1, &headers_block(&[(b":path", b"/x")])));
        bytes.extend(frame(0x0, 0, 1, b"data inside a header block"));
        assert_eq!(parse_first(&bytes), Err(()));
        let mut garbage = PREFACE.to_vec();
        garbage.extend(frame(HEADERS, END_HEADERS, 1, &[0xff; 40]));
        assert_eq!(parse_first(&garbage), Err(()));
    }

    #[test]
    fn the_clients_first_settings_ack_is_dropped_and_nothing_else() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        input.extend(frame(SETTINGS, ACK, 0, &[]));
        input.extend(frame(HEADERS, END_HEADERS, 1, b"abc"));
        input.extend(frame(SETTINGS, ACK, 0, &[]));
        let mut want = PREFACE.to_vec();
        want.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        want.extend(frame(HEADERS, END_HEADERS, 1, b"abc"));
        want.extend(frame(SETTINGS, ACK, 0, &[]));
        // Whatever the reads' sizes.
        for size in [1, 2, 5, 9, 13, 1000] {
            let mut s = StripAck::new(());
            for chunk in input.chunks(size) {
                s.filter(chunk);
            }
            assert_eq!(s.out, want, "reads of {size}");
        }
    }

    #[test]
    fn a_call_is_in_flight_from_the_clients_headers_to_the_engines_end_of_stream() {
        let mut events = Vec::new();
        let mut client = FrameWatch::new(true, None);
        let mut engine = FrameWatch::new(false, None);
        let opening = frame(HEADERS, END_HEADERS, 3, b"xx");
        // Split anywhere: frame headers are found across reads.
        let (a, b) = opening.split_at(4);
        let mut out = Vec::new();
        let mut fed = |bytes| client.feed(bytes, Some(&mut out), |o, id| events.push((o, id)));
        assert_eq!(fed(a), Ok(()));
        assert_eq!(fed(b), Ok(()));
        assert_eq!(out, opening, "nothing to inject: passed as it came");
        let mut watched = |bytes: &[u8]| engine.feed(bytes, None, |o, id| events.push((o, id)));
        assert_eq!(watched(&frame(0x0, 0, 3, b"rows")), Ok(()));
        assert_eq!(
            watched(&frame(HEADERS, END_HEADERS | END_STREAM, 3, b"t")),
            Ok(())
        );
        assert_eq!(events, vec![(true, 3), (false, 3)]);
    }

    #[test]
    fn hpack_integers_follow_rfc_7541() {
        // RFC 7541 C.1: 10 and 1337 with a 5-bit prefix, 42 with an 8-bit one.
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 10);
        hpack_int(&mut out, 0, 5, 1337);
        hpack_int(&mut out, 0, 8, 42);
        assert_eq!(out, vec![10, 31, 154, 10, 42]);
    }

    #[test]
    fn the_engines_secret_ends_every_header_block_and_the_tables_stay_in_step() {
        let secret = "s".repeat(200); // a value longer than one byte's length prefix
        let mut enc = hpack::Encoder::new();
        let call = |path: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> {
            vec![
                (b":method", b"POST"),
                (b":path", path),
                (b"x-hearth-token", b"hth_1_abc"),
            ]
        };
        // Two calls from one client: the second refers to the first's fields by index.
        let first = enc.encode(call(b"/spark.connect.SparkConnectService/ExecutePlan"));
        let second = enc.encode(call(b"/spark.connect.SparkConnectService/ReleaseExecute"));
        let (a, b) = first.split_at(first.len() / 2);
        let mut input = frame(0x4, 0, 0, &[]); // SETTINGS: passes untouched
        input.extend(frame(
            HEADERS,
            PADDED,
            1,
            &[&[2u8][..], a, &[0, 0]].concat(),
        ));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"request"));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        let injected = authorization_field(&secret);
        let mut want = frame(0x4, 0, 0, &[]);
        want.extend(frame(
            HEADERS,
            PADDED,
            1,
            &[&[2u8][..], a, &[0, 0]].concat(),
        ));
        want.extend(frame(CONTINUATION, 0, 1, b));
        want.extend(frame(CONTINUATION, END_HEADERS, 1, &injected));
        want.extend(frame(0x0, END_STREAM, 1, b"request"));
        want.extend(frame(HEADERS, END_STREAM, 3, &second));
        want.extend(frame(CONTINUATION, END_HEADERS, 3, &injected));
        for size in [1, 2, 9, 10, 17, 4096] {
            let mut watch = FrameWatch::new(true, Some(injected.clone()));
            let mut out = Vec::new();
            let mut opened = Vec::new();
            for chunk in input.chunks(size) {
                let fed = watch.feed(chunk, Some(&mut out), |o, id| opened.push((o, id)));
                assert_eq!(fed, Ok(()), "reads of {size}");
            }
            assert_eq!(out, want, "reads of {size}");
            assert_eq!(opened, vec![(true, 1), (true, 3)]);
        }
        // The engine's decoder, one table for the connection: both blocks decode, the second
        // still finds the first's fields, and the secret is the last field of each.
        let mut dec = hpack::Decoder::new();
        for block in [
            [&first[..], &injected[..]].concat(),
            [&second[..], &injected[..]].concat(),
        ] {
            let fields = dec.decode(&block).expect("decodes");
            let last = fields.last().expect("fields");
            assert_eq!(last.0, b"authorization".to_vec());
            assert_eq!(last.1, format!("Bearer {secret}").into_bytes());
            assert!(fields
                .iter()
                .any(|(n, v)| n == b"x-hearth-token" && v == b"hth_1_abc"));
        }
    }

    #[test]
    fn a_block_must_end_where_a_field_ends_or_the_connection_is_closed() {
        let whole = hpack::Encoder::new().encode(vec![
            (&b":path"[..], &b"/x"[..]),
            (b"content-type", b"application/grpc"),
            (b"x-long", &[b'v'; 300][..]),
        ]);
        assert!(hpack_fields_end(&whole));
        assert!(hpack_fields_end(&[]));
        // Cut anywhere inside a field: the injected field would become part of it.
        let ends: Vec<usize> = (0..=whole.len())
            .filter(|&cut| hpack_fields_end(&whole[..cut]))
            .collect();
        assert_eq!(
            ends.len(),
            4,
            "the empty block and after each field: {ends:?}"
        );
        assert!(ends.contains(&whole.len()));
        // A literal `content-type` (static 31) whose value would take in the secret.
        let mut trap = vec![0x0f, 0x10]; // without indexing, name index 31
        hpack_int(&mut trap, 0, 7, 73);
        assert!(!hpack_fields_end(&trap));
        let mut watch = FrameWatch::new(true, Some(authorization_field("secret")));
        let mut out = Vec::new();
        let fed = watch.feed(
            &frame(HEADERS, END_HEADERS, 1, &trap),
            Some(&mut out),
            |_, _| {},
        );
        assert_eq!(fed, Err(BadBlock));
        assert!(
            !out.windows(6).any(|w| w == b"secret"),
            "nothing injected into a block that ends inside a field"
        );
        // A block larger than the relay holds.
        let mut watch = FrameWatch::new(true, Some(authorization_field("secret")));
        let huge = frame(HEADERS, 0, 1, &vec![0x80 | 2; MAX_BLOCK + 1]);
        assert_eq!(watch.feed(&huge, None, |_, _| {}), Err(BadBlock));
    }
}
