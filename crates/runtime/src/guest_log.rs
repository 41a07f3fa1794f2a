//! Guest stdout and stderr, captured per request as log lines.
//!
//! Output is kept in memory up to a cap and handed to the request log when the
//! request ends. Past the cap, output is dropped and counted rather than
//! failing the guest's write: a chatty worker should lose log lines, not
//! requests.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output kept per request, stdout and stderr together.
pub const GUEST_LOG_CAPACITY: usize = 64 * 1024;

/// Lines of a panic message kept in its summary (the log keeps them all).
const PANIC_MESSAGE_LINES: usize = 20;

/// std's hint after a panic, which does not apply to a guest.
fn is_backtrace_note(text: &str) -> bool {
    text.starts_with("note: run with `RUST_BACKTRACE=")
}

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line the guest wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub text: String,
}

#[derive(Default)]
struct Buffers {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    lines: Vec<LogLine>,
    kept: usize,
    dropped: usize,
}

impl Buffers {
    fn push(&mut self, stream: LogStream, bytes: &[u8]) {
        let room = GUEST_LOG_CAPACITY.saturating_sub(self.kept);
        let take = bytes.len().min(room);
        self.kept += take;
        self.dropped += bytes.len() - take;
        let (pending, bytes) = match stream {
            LogStream::Stdout => (&mut self.stdout, &bytes[..take]),
            LogStream::Stderr => (&mut self.stderr, &bytes[..take]),
        };
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            self.lines.push(LogLine {
                stream,
                text: text.trim_end_matches('\r').to_string(),
            });
        }
    }

    fn flush_partial(&mut self) {
        for (stream, pending) in [
            (LogStream::Stdout, &mut self.stdout),
            (LogStream::Stderr, &mut self.stderr),
        ] {
            if !pending.is_empty() {
                let text = String::from_utf8_lossy(pending).into_owned();
                self.lines.push(LogLine { stream, text });
                pending.clear();
            }
        }
    }
}

/// The captured output of one request.
#[derive(Clone, Default)]
pub struct GuestLog {
    inner: Arc<Mutex<Buffers>>,
}

impl GuestLog {
    pub fn new() -> GuestLog {
        GuestLog::default()
    }

    /// A stream to hand to WASI as stdout or stderr.
    pub fn stream(&self, stream: LogStream) -> GuestLogStream {
        GuestLogStream {
            log: self.clone(),
            stream,
        }
    }

    /// Takes the lines written so far, including an unterminated last line,
    /// and how many bytes were dropped past the cap.
    pub fn take(&self) -> (Vec<LogLine>, usize) {
        let mut buffers = self.lock();
        buffers.flush_partial();
        let dropped = std::mem::take(&mut buffers.dropped);
        buffers.kept = 0;
        (std::mem::take(&mut buffers.lines), dropped)
    }

    /// The Rust panic the guest reported on stderr, if any: its location
    /// and its message (which std writes on the lines after `panicked at`),
    /// as one text. The "run with `RUST_BACKTRACE=1`" note std adds is left
    /// out of the log: a guest has no backtrace to show.
    pub fn mentions_panic(&self) -> Option<String> {
        let mut buffers = self.lock();
        buffers.flush_partial();
        let lines = &mut buffers.lines;
        let start = lines
            .iter()
            .position(|l| l.stream == LogStream::Stderr && l.text.contains("panicked at"))?;
        lines.retain(|l| !(l.stream == LogStream::Stderr && is_backtrace_note(&l.text)));
        let mut text = lines[start].text.trim_end().to_string();
        let message: Vec<&str> = lines[start + 1..]
            .iter()
            .take_while(|l| l.stream == LogStream::Stderr && !l.text.contains("panicked at"))
            .map(|l| l.text.as_str())
            .take(PANIC_MESSAGE_LINES)
            .collect();
        if !message.is_empty() {
            text.push(' ');
            text.push_str(&message.join("\n"));
        }
        Some(text)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffers> {
        // A panic while holding this lock cannot leave the buffers in a state
        // worse than a lost line, so a poisoned lock is still used.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// stdout or stderr of one request.
#[derive(Clone)]
pub struct GuestLogStream {
    log: GuestLog,
    stream: LogStream,
}

impl IsTerminal for GuestLogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestLogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.lock().push(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(GUEST_LOG_CAPACITY)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLogStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestLogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.lock().push(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_per_stream_and_keeps_the_unterminated_tail() {
        let log = GuestLog::new();
        let mut out = log.stream(LogStream::Stdout);
        let mut err = log.stream(LogStream::Stderr);
        out.write(Bytes::from_static(b"one\ntw")).unwrap();
        err.write(Bytes::from_static(b"oops\r\n")).unwrap();
        out.write(Bytes::from_static(b"o\nthree")).unwrap();
        let (lines, dropped) = log.take();
        let texts: Vec<_> = lines.iter().map(|l| (l.stream, l.text.as_str())).collect();
        assert_eq!(
            texts,
            [
                (LogStream::Stdout, "one"),
                (LogStream::Stderr, "oops"),
                (LogStream::Stdout, "two"),
                (LogStream::Stdout, "three"),
            ]
        );
        assert_eq!(dropped, 0);
    }

    #[test]
    fn output_past_the_cap_is_dropped_and_counted() {
        let log = GuestLog::new();
        let mut out = log.stream(LogStream::Stdout);
        let line = vec![b'x'; 1023];
        for _ in 0..100 {
            out.write(Bytes::from([line.as_slice(), b"\n"].concat()))
                .unwrap();
        }
        let (lines, dropped) = log.take();
        let kept: usize = lines.iter().map(|l| l.text.len() + 1).sum();
        assert_eq!(kept, GUEST_LOG_CAPACITY);
        assert_eq!(dropped, 100 * 1024 - GUEST_LOG_CAPACITY);
    }

    #[test]
    fn finds_a_panic_message_with_its_location_and_text() {
        let log = GuestLog::new();
        let mut out = log.stream(LogStream::Stdout);
        let mut err = log.stream(LogStream::Stderr);
        out.write(Bytes::from_static(b"before\n")).unwrap();
        err.write(Bytes::from_static(
            b"\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom: it broke\nsecond line\n\
              note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
        ))
        .unwrap();
        assert_eq!(
            log.mentions_panic().unwrap(),
            "thread '<unnamed>' panicked at src/lib.rs:3:5: boom: it broke\nsecond line"
        );
        let (lines, _) = log.take();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "before",
                "",
                "thread '<unnamed>' panicked at src/lib.rs:3:5:",
                "boom: it broke",
                "second line"
            ]
        );
    }

    #[test]
    fn no_panic_no_message() {
        let log = GuestLog::new();
        let mut err = log.stream(LogStream::Stderr);
        err.write(Bytes::from_static(b"warning: slow\n")).unwrap();
        assert_eq!(log.mentions_panic(), None);
    }
}
