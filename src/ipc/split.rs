//! The two halves of a [`ShmStream`] from [`ShmStream::split`], for a
//! reader and a writer on different threads.

use std::io;
use std::sync::atomic::Ordering;

use super::stream::ShmStream;
use crate::sys::socket::Shutdown;

/// The reading half of a [`ShmStream`], from [`ShmStream::split`].
#[derive(Debug)]
pub struct ShmReadHalf(pub(crate) ShmStream);

/// The writing half of a [`ShmStream`], from [`ShmStream::split`];
/// dropping it shuts down writing, in the process that split the stream
/// (a copy that a forked child drops only releases the child's hold).
#[derive(Debug)]
#[must_use = "dropping the write half shuts the connection down for writing"]
pub struct ShmWriteHalf {
    s: ShmStream,
    /// The pid that split the stream.
    owner: u32,
}

impl ShmReadHalf {
    /// Shuts down reading: our reads return end-of-file and the peer's
    /// writes fail with `BrokenPipe`.
    pub fn shutdown(&self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Read)
    }
}

impl ShmWriteHalf {
    pub(crate) fn new(s: ShmStream, owner: u32) -> Self {
        Self { s, owner }
    }

    /// Shuts down writing: the peer reads end-of-file once it has read
    /// what was sent.
    pub fn shutdown(&self) -> io::Result<()> {
        self.s.shutdown(Shutdown::Write)
    }
}

impl io::Read for ShmReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_inner(buf)
    }
}

impl io::Write for ShmWriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.write_inner(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ShmWriteHalf {
    fn drop(&mut self) {
        let pid = self.s.shared.pid.load(Ordering::Relaxed);
        if !self.s.write_shut.get() && pid == self.owner {
            // Nothing to report from a drop; the peer learns of the close
            // through the header anyway when the other half goes.
            let _ = self.s.shutdown(Shutdown::Write);
        }
    }
}

static_assertions::assert_impl_all!(ShmReadHalf: Send);
static_assertions::assert_impl_all!(ShmWriteHalf: Send);
