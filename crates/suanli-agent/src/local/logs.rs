//! Job output: the job writes `stdout.log` and `stderr.log` in its directory (files, not pipes,
//! so a job survives an agent restart and nothing blocks when nobody reads), and the agent tails
//! them into [`LogChunk`]s of whole lines, each at most [`MAX_CHUNK_BYTES`].

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

/// Largest `data` of one chunk, in bytes.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// How often the tailers look for new output.
const POLL: Duration = Duration::from_millis(100);
/// A partial line (no newline yet, e.g. a progress bar) is sent after this many idle polls.
const PARTIAL_AFTER_POLLS: u32 = 5;

/// Which stream a chunk came from; `System` is the backend's own messages about the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    System,
}

/// A piece of a job's output: one or more whole lines (a longer line is cut at 64 KiB).
/// `seq` counts every chunk of the job's handle across streams; a gap means chunks were dropped
/// because the receiver was not read (the files keep everything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub seq: u64,
    pub stream: LogStream,
    pub data: String,
}

/// Numbers chunks and hands them to the receiver without ever blocking the job.
pub(crate) struct LogSink {
    state: Mutex<SinkState>,
}

struct SinkState {
    tx: Option<mpsc::Sender<LogChunk>>,
    next_seq: u64,
    dropped: u64,
}

impl LogSink {
    pub fn new(tx: mpsc::Sender<LogChunk>) -> Self {
        LogSink {
            state: Mutex::new(SinkState {
                tx: Some(tx),
                next_seq: 0,
                dropped: 0,
            }),
        }
    }

    /// Sends to a new receiver from now on (a second handle for the same job).
    pub fn replace(&self, tx: mpsc::Sender<LogChunk>) {
        let mut st = self.state.lock().expect("log sink poisoned");
        st.tx = Some(tx);
        st.next_seq = 0;
        st.dropped = 0;
    }

    /// Ends the stream: the receiver sees `None` after the last chunk.
    pub fn close(&self) {
        self.state.lock().expect("log sink poisoned").tx = None;
    }

    pub fn system(&self, message: impl Into<String>) {
        let mut msg = message.into();
        if !msg.ends_with('\n') {
            msg.push('\n');
        }
        self.emit(LogStream::System, msg);
    }

    /// Sends `data` as chunks. NUL, which a job may well print but the exchange refuses in any
    /// text (its PostgreSQL store cannot keep it), becomes U+FFFD, as invalid UTF-8 already does;
    /// the job directory's log files keep the bytes as they were.
    pub fn emit(&self, stream: LogStream, data: String) {
        let data = if data.contains('\0') {
            data.replace('\0', "\u{FFFD}")
        } else {
            data
        };
        for piece in cap_string(data) {
            self.emit_one(stream, piece);
        }
    }

    fn emit_one(&self, stream: LogStream, data: String) {
        let mut st = self.state.lock().expect("log sink poisoned");
        let Some(tx) = st.tx.clone() else {
            return;
        };
        if st.dropped > 0 && tx.capacity() >= 2 {
            let note = LogChunk {
                seq: st.next_seq,
                stream: LogStream::System,
                data: format!(
                    "{} log chunks were dropped because they were not read in time; \
                     stdout.log and stderr.log in the job directory have everything\n",
                    st.dropped
                ),
            };
            st.next_seq += 1;
            if tx.try_send(note).is_ok() {
                st.dropped = 0;
            }
        }
        let chunk = LogChunk {
            seq: st.next_seq,
            stream,
            data,
        };
        st.next_seq += 1;
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => st.dropped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Splits a string into pieces of at most `MAX_CHUNK_BYTES`, at character boundaries.
fn cap_string(s: String) -> Vec<String> {
    if s.len() <= MAX_CHUNK_BYTES {
        return vec![s];
    }
    let mut out = Vec::new();
    let mut rest = s.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_CHUNK_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    out
}

/// Turns a byte stream into chunks of whole lines (pure, tested on its own).
#[derive(Debug, Default)]
pub(crate) struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// Adds bytes; returns the chunks now complete (whole lines, or 64 KiB of one long line).
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        if let Some(last_nl) = self.pending.iter().rposition(|&b| b == b'\n') {
            let complete: Vec<u8> = self.pending.drain(..=last_nl).collect();
            out.extend(chunk_bytes(&complete));
        }
        while self.pending.len() >= MAX_CHUNK_BYTES {
            let cut = char_cut(&self.pending, MAX_CHUNK_BYTES);
            let piece: Vec<u8> = self.pending.drain(..cut).collect();
            out.extend(cap_string(String::from_utf8_lossy(&piece).into_owned()));
        }
        out
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Everything still pending (a last line without newline).
    pub fn flush(&mut self) -> Vec<String> {
        let rest = std::mem::take(&mut self.pending);
        chunk_bytes(&rest)
    }
}

/// A cut at or before `max` that does not split a UTF-8 sequence (when the bytes are UTF-8).
fn char_cut(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut cut = max;
    for _ in 0..3 {
        if cut > 0 && (b[cut] & 0xC0) == 0x80 {
            cut -= 1;
        } else {
            break;
        }
    }
    if (b[cut] & 0xC0) == 0x80 || cut == 0 {
        max
    } else {
        cut
    }
}

/// Splits bytes into chunks of at most `MAX_CHUNK_BYTES`, at line ends where possible.
fn chunk_bytes(b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < b.len() {
        let rest = &b[start..];
        let end = if rest.len() <= MAX_CHUNK_BYTES {
            b.len()
        } else {
            match rest[..MAX_CHUNK_BYTES].iter().rposition(|&c| c == b'\n') {
                Some(i) => start + i + 1,
                None => start + char_cut(rest, MAX_CHUNK_BYTES),
            }
        };
        out.extend(cap_string(
            String::from_utf8_lossy(&b[start..end]).into_owned(),
        ));
        start = end;
    }
    out
}

/// Follows one log file until the job is over (`done` turns true), then reads it to the end.
pub(crate) async fn tail(
    mut file: tokio::fs::File,
    stream: LogStream,
    sink: std::sync::Arc<LogSink>,
    mut done: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_CHUNK_BYTES];
    let mut splitter = Splitter::default();
    let mut idle = 0u32;
    loop {
        // Read `done` before reading: once the job is over, a read that finds nothing more
        // means everything has been read.
        let finished = *done.borrow_and_update();
        match file.read(&mut buf).await {
            Ok(0) => {}
            Ok(n) => {
                idle = 0;
                for chunk in splitter.push(&buf[..n]) {
                    sink.emit(stream, chunk);
                }
                continue;
            }
            Err(e) => {
                sink.system(format!("reading {stream:?} log failed: {e}"));
                return;
            }
        }
        if finished {
            for chunk in splitter.flush() {
                sink.emit(stream, chunk);
            }
            return;
        }
        idle += 1;
        if idle >= PARTIAL_AFTER_POLLS && splitter.has_pending() {
            for chunk in splitter.flush() {
                sink.emit(stream, chunk);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = done.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_grouped_and_partial_lines_wait() {
        let mut s = Splitter::default();
        assert_eq!(s.push(b"one\ntwo\nthr"), vec!["one\ntwo\n"]);
        assert!(s.has_pending());
        assert_eq!(s.push(b"ee\n"), vec!["three\n"]);
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.flush(), vec!["tail"]);
        assert!(s.flush().is_empty());
    }

    #[test]
    fn long_output_is_cut_at_64k_without_splitting_characters() {
        let mut s = Splitter::default();
        // A long line of 3-byte characters: cuts must fall on character boundaries.
        let line = "汉".repeat(50_000);
        let mut out = s.push(line.as_bytes());
        out.extend(s.push(b"\n"));
        out.extend(s.flush());
        assert!(out.iter().all(|c| c.len() <= MAX_CHUNK_BYTES));
        assert_eq!(out.concat(), format!("{line}\n"));

        // Many short lines: chunks end at line ends.
        let many: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let chunks = Splitter::default().push(many.as_bytes());
        assert!(chunks.len() > 1);
        assert!(chunks
            .iter()
            .all(|c| c.len() <= MAX_CHUNK_BYTES && c.ends_with('\n')));
        assert_eq!(chunks.concat(), many);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_still_capped() {
        let bytes = vec![0xFFu8; MAX_CHUNK_BYTES + 10];
        let mut s = Splitter::default();
        let mut out = s.push(&bytes);
        out.extend(s.flush());
        assert!(out.iter().all(|c| c.len() <= MAX_CHUNK_BYTES));
        assert_eq!(out.concat().chars().count(), MAX_CHUNK_BYTES + 10);
    }

    /// Issue 16: the exchange refuses NUL in any text (PostgreSQL cannot store it); a job that
    /// prints one must not make its log unsendable.
    #[tokio::test]
    async fn nul_in_output_is_sent_as_a_replacement_character() {
        let (tx, mut rx) = mpsc::channel(4);
        let sink = LogSink::new(tx);
        sink.emit(LogStream::Stdout, "a\0b\n".into());
        assert_eq!(rx.recv().await.unwrap().data, "a\u{FFFD}b\n");
    }

    #[tokio::test]
    async fn sink_numbers_chunks_and_reports_drops() {
        let (tx, mut rx) = mpsc::channel(2);
        let sink = LogSink::new(tx);
        sink.emit(LogStream::Stdout, "a\n".into());
        sink.emit(LogStream::Stderr, "b\n".into());
        sink.emit(LogStream::Stdout, "c\n".into()); // dropped: channel full
        assert_eq!(rx.recv().await.unwrap().seq, 0);
        assert_eq!(rx.recv().await.unwrap().seq, 1);
        sink.emit(LogStream::Stdout, "d\n".into());
        let note = rx.recv().await.unwrap();
        assert_eq!(note.stream, LogStream::System);
        assert!(note.data.contains("1 log chunks were dropped"));
        let d = rx.recv().await.unwrap();
        assert_eq!((d.seq, d.data.as_str()), (4, "d\n"));
        sink.close();
        assert!(rx.recv().await.is_none());
    }
}
