//! Building blocks for servers on the loop: an accept loop that survives
//! running out of descriptors, and buffered connections with bounded memory
//! that speak a [`Protocol`].

use std::io;
use std::time::Duration;

use super::buffer::{Buffer, WriteQueue};
use super::event::{Context, EventLoop, Interest, Ready, Registration};
use crate::sys::errno;
use crate::sys::socket::{SockAddr, Socket, Type};
use crate::sys::Result;

/// Limits and knobs of [`serve`]: start from `Default` and change what you
/// need, by the setters (`ServerOptions::default().max_input(1 << 16)`) or
/// by assigning the fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Bytes asked for per `recv` (default 64 KiB).
    pub read_chunk: usize,
    /// Most bytes of one connection's input held unconsumed (default
    /// 1 MiB): a peer that sends more than the protocol will consume is cut
    /// off with an error instead of growing memory.
    pub max_input: usize,
    /// Most bytes queued for a peer that doesn't read (default 1 MiB):
    /// past it the connection stops reading (and so stops producing
    /// replies) until the queue drains.
    pub max_output: usize,
    /// How long accepting pauses after `EMFILE`/`ENFILE` (default 100 ms).
    pub accept_retry: Duration,
    /// Set `TCP_NODELAY` on accepted TCP connections (default true).
    pub nodelay: bool,
    /// Gather a connection's replies and write them in one `send` at the end
    /// of the loop's turn ([`Context::defer`]) rather than one `send` per
    /// [`Output::write`] (default true). The peer gets all its replies of a
    /// turn together, as Redis does. At most [`BATCH_LIMIT`] bytes are held
    /// back; more goes out at once.
    pub batch_writes: bool,
}

/// The most bytes a connection holds back when [`ServerOptions::batch_writes`]
/// is on.
pub const BATCH_LIMIT: usize = 64 * 1024;

option_setters!(ServerOptions {
    /// Sets [`read_chunk`](Self#structfield.read_chunk).
    read_chunk: usize,
    /// Sets [`max_input`](Self#structfield.max_input).
    max_input: usize,
    /// Sets [`max_output`](Self#structfield.max_output).
    max_output: usize,
    /// Sets [`accept_retry`](Self#structfield.accept_retry).
    accept_retry: Duration,
    /// Sets [`nodelay`](Self#structfield.nodelay).
    nodelay: bool,
    /// Sets [`batch_writes`](Self#structfield.batch_writes).
    batch_writes: bool,
});

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            read_chunk: 64 * 1024,
            max_input: 1024 * 1024,
            max_output: 1024 * 1024,
            accept_retry: Duration::from_millis(100),
            nodelay: true,
            batch_writes: true,
        }
    }
}

/// What a connection speaks: called with the bytes received and not yet
/// consumed, it consumes what it can and writes replies to the [`Output`].
pub trait Protocol: 'static {
    /// Consumes a prefix of `input` and returns its length (0: a message is
    /// incomplete, wait for more). Called again while it consumes. An error
    /// closes this connection only.
    ///
    /// Work too long for one call (a scan of a big table) can be cut into
    /// slices: do one, call [`Output::resume_later`], and return what was
    /// consumed so far (often 0, keeping the request). The connection is
    /// called again next turn with the input still unconsumed, after every
    /// other connection had its turn, even if nothing new arrives.
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> io::Result<usize>;

    /// The connection is closing: the peer closed (`None`), or an error.
    fn on_close(&mut self, _error: Option<&io::Error>) {}
}

/// Where a [`Protocol`] writes: straight to the socket while nothing is
/// queued, into the connection's bounded queue otherwise.
#[derive(Debug)]
pub struct Output<'a> {
    sock: &'a Socket,
    queue: &'a mut WriteQueue,
    close: &'a mut bool,
    again: &'a mut bool,
    batch: bool,
}

impl Output<'_> {
    /// Writes `data` to the peer: sent at once as far as the socket takes
    /// it, the rest queued and sent when the socket is writable. With
    /// [`ServerOptions::batch_writes`] it is held back until the end of the
    /// turn, up to [`BATCH_LIMIT`] bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.batch {
            if self.queue.len() + data.len() <= BATCH_LIMIT {
                self.queue.push(data);
                return Ok(());
            }
            // Too much to hold back: what was gathered goes first.
            if !self.queue.flush(self.sock)? {
                self.queue.push(data);
                return Ok(());
            }
        }
        self.queue.write_to(self.sock, data)
    }

    /// Bytes queued for the peer and not yet sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Closes the connection once what is queued has been sent (a `QUIT`).
    pub fn close(&mut self) {
        *self.close = true;
    }

    /// Asks to be called again next turn with the unconsumed input, even if
    /// no more bytes arrive, instead of being called again at once: the
    /// protocol did a slice of a long piece of work and lets the other
    /// connections run before the next slice. Nothing more is read from
    /// this connection until that call.
    pub fn resume_later(&mut self) {
        *self.again = true;
    }
}

/// One connection's state, owned by its handler.
struct Conn<P> {
    proto: P,
    input: Buffer,
    out: WriteQueue,
    closing: bool,
    /// The protocol asked to be called again next turn.
    again: bool,
    paused: bool,
    writable_interest: bool,
    /// A stream socket: a short read means its queue is empty.
    stream: bool,
    /// An event said the peer closed its end: no edge will follow, so
    /// reads go on until they see it.
    read_closed: bool,
    opts: ServerOptions,
}

enum Step {
    Open,
    Close(Option<io::Error>),
}

impl<P: Protocol> Conn<P> {
    fn new(proto: P, stream: bool, opts: ServerOptions) -> Self {
        Self {
            proto,
            input: Buffer::new(),
            out: WriteQueue::new(),
            closing: false,
            again: false,
            paused: false,
            writable_interest: false,
            stream,
            read_closed: false,
            opts,
        }
    }

    /// Feeds buffered input to the protocol while it consumes and output
    /// has room, until it asks to resume later.
    fn process(&mut self, sock: &Socket) -> io::Result<()> {
        self.again = false;
        while !self.input.is_empty() && self.out.len() < self.opts.max_output && !self.closing {
            let mut out = Output {
                sock,
                queue: &mut self.out,
                close: &mut self.closing,
                again: &mut self.again,
                batch: self.opts.batch_writes,
            };
            let n = self.proto.on_input(self.input.data(), &mut out)?;
            self.input.consume(n);
            if n == 0 || self.again {
                break;
            }
        }
        Ok(())
    }

    /// Checks that one more read stays within `max_input`.
    fn check_room(&self) -> io::Result<()> {
        if self.input.len() >= self.opts.max_input {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "more than {} bytes of unconsumed input",
                    self.opts.max_input
                ),
            ));
        }
        Ok(())
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, sock: &Socket, ready: Ready) -> io::Result<Step> {
        if ready.is_error() {
            let e = sock
                .take_error()?
                .unwrap_or_else(|| io::Error::from_raw_os_error(errno::ECONNREFUSED));
            return Ok(Step::Close(Some(e)));
        }
        if ready.is_deferred() {
            return self.finish(cx, sock);
        }
        self.read_closed |= ready.is_read_closed();
        // Writable (or a retry): send what is queued.
        if !self.out.is_empty() && !self.out.flush(sock)? {
            self.want_writable(cx, true)?;
            return Ok(Step::Open);
        }
        if self.closing {
            return Ok(Step::Close(None));
        }
        if self.paused && self.out.len() < self.opts.max_output / 2 {
            // The peer caught up: go on with what is buffered, then read.
            self.paused = false;
        }
        if !self.paused {
            self.process(sock)?;
            let mut budget = cx.budget();
            loop {
                if self.again {
                    break;
                }
                if self.out.len() >= self.opts.max_output {
                    self.paused = true;
                    break;
                }
                if self.closing {
                    break;
                }
                if budget == 0 {
                    cx.reschedule();
                    break;
                }
                budget -= 1;
                self.check_room()?;
                let chunk = self.opts.read_chunk;
                let room = self.input.spare(chunk);
                let asked = chunk.min(room.len());
                match sock.recv(&mut room[..asked]) {
                    Ok(0) => {
                        // Finish sending what is queued, then close.
                        self.closing = true;
                        break;
                    }
                    Ok(n) => {
                        self.input.commit(n);
                        self.process(sock)?;
                        if self.stream && n < asked && !self.read_closed {
                            // A stream socket returns less than asked only
                            // when its receive queue is empty, and data that
                            // arrives later raises a new edge: drained, without
                            // the extra `recv` that would say `WouldBlock`. Not
                            // once an event brought the peer's end: no edge
                            // would follow, and a later read sees it.
                            break;
                        }
                    }
                    Err(e) if e.is_would_block() => break,
                    Err(e) if e.raw_os_error() == errno::EINTR => continue,
                    Err(e) => return Ok(Step::Close(Some(e.into()))),
                }
            }
            if self.again {
                // The protocol's next slice of work comes next turn; nothing
                // more is read until then.
                cx.reschedule();
            }
        }
        if self.opts.batch_writes && !self.out.is_empty() && !self.writable_interest {
            // Gathered replies go out at the end of the turn (the loop makes
            // one call however often a turn asks).
            cx.defer();
            return Ok(Step::Open);
        }
        self.finish(cx, sock)
    }

    /// Sends what is queued; asks for writability while some is left.
    fn finish(&mut self, cx: &mut Context<'_>, sock: &Socket) -> io::Result<Step> {
        if !self.out.is_empty() {
            if !self.out.flush(sock)? {
                self.want_writable(cx, true)?;
                return Ok(Step::Open);
            }
            if self.paused {
                // Drained at once: resume next turn.
                cx.reschedule();
            }
        }
        self.want_writable(cx, false)?;
        if self.closing {
            return Ok(Step::Close(None));
        }
        Ok(Step::Open)
    }

    fn want_writable(&mut self, cx: &Context<'_>, on: bool) -> io::Result<()> {
        if self.writable_interest != on {
            let interest = if on {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            cx.reregister_current(interest)?;
            self.writable_interest = on;
        }
        Ok(())
    }
}

/// Accepts connections on `listener` (made non-blocking) in a loop until
/// `WouldBlock`, at most a budget per turn, calling `on_conn` for each.
/// On `EMFILE`/`ENFILE` it stops accepting for `retry` and goes on serving,
/// then tries again (pending connections wait in the backlog); aborted
/// connections are skipped.
pub fn listen<F>(
    lp: &EventLoop,
    listener: Socket,
    retry: Duration,
    mut on_conn: F,
) -> Result<Registration>
where
    F: FnMut(&mut Context<'_>, Socket, SockAddr) -> io::Result<()> + 'static,
{
    listener.set_nonblocking(true)?;
    let mut paused = false;
    lp.register(
        listener,
        Interest::READABLE,
        move |cx, l: &Socket, ready| {
            if paused && !ready.is_rescheduled() {
                return Ok(());
            }
            paused = false;
            for _ in 0..cx.budget() {
                match l.accept() {
                    Ok((s, addr)) => on_conn(cx, s, addr)?,
                    Err(e) if e.is_would_block() => return Ok(()),
                    Err(e) if matches!(e.raw_os_error(), errno::EMFILE | errno::ENFILE) => {
                        paused = true;
                        if let Some(key) = cx.current() {
                            cx.after(retry, move |cx| cx.schedule(key, Interest::READABLE));
                        }
                        return Ok(());
                    }
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            errno::EINTR | errno::ECONNABORTED | errno::EPROTO
                        ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            cx.reschedule();
            Ok(())
        },
    )
}

/// Serves `listener`: accepts (as [`listen`]) and runs a connection per
/// peer with the protocol `make` returns, edge-triggered, with the bounds of
/// `opts`. A connection's error closes that connection only.
///
/// On a stream socket a read shorter than asked ends the turn's reading (its
/// queue was empty; new data raises a new edge). One peer can make a read
/// short while more is queued: a Unix-socket peer that sends descriptors
/// (the kernel stops a read at each message that carries some, and closes
/// them). Its own connection then waits for its next send; no other
/// connection is affected.
pub fn serve<P, F>(
    lp: &EventLoop,
    listener: Socket,
    opts: ServerOptions,
    mut make: F,
) -> Result<Registration>
where
    P: Protocol,
    F: FnMut(&SockAddr) -> P + 'static,
{
    let retry = opts.accept_retry;
    // A short read ends a turn early only on a stream socket: a seqpacket
    // socket returns one record per read and more may be queued.
    let stream = listener.socket_type()? == Type::STREAM;
    listen(lp, listener, retry, move |cx, sock, addr| {
        if opts.nodelay && matches!(addr, SockAddr::Inet(_)) {
            // Best effort: a Unix peer has no TCP_NODELAY.
            let _ = sock.set_nodelay(true);
        }
        sock.set_nonblocking(true)?;
        let mut conn = Conn::new(make(&addr), stream, opts.clone());
        let reg = cx.register(sock, Interest::READABLE, move |cx, sock: &Socket, ready| {
            match conn.on_ready(cx, sock, ready) {
                Ok(Step::Open) => {}
                Ok(Step::Close(e)) => {
                    conn.proto.on_close(e.as_ref());
                    cx.deregister_current();
                }
                Err(e) => {
                    conn.proto.on_close(Some(&e));
                    cx.deregister_current();
                }
            }
            Ok(())
        })?;
        // Registering reports data that arrived before it (epoll and kqueue
        // both check readiness on add), so no first read is needed here.
        reg.detach();
        Ok(())
    })
}
