//! Job output: the job writes `stdout.log` and `stderr.log` in its directory (files, not pipes,
//! so a job survives an agent restart and nothing blocks when nobody reads), and the agent tails
//! them into [`LogChunk`]s of whole lines, each at most [`MAX_CHUNK_BYTES`].

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use crate::job::{LogChunk, LogStream};

/// Largest `data` of one chunk, in bytes.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// How often the tailers look for new output.
const POLL: Duration = Duration::from_millis(100);
/// A partial line (no newline yet, e.g. a progress bar) is sent after this many idle polls.
const PARTIAL_AFTER_POLLS: u32 = 5;

/// How much of a job's output is forwarded: the first `max_bytes` of it (both streams together);
/// past that, only the last `tail_bytes` of each stream, sent when the job ends, after a notice of
/// how many bytes were dropped and where. The log files in the job directory keep what the disk
/// keeps (see [`tail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub max_bytes: u64,
    pub tail_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_bytes: 64 * 1024 * 1024,
            tail_bytes: 256 * 1024,
        }
    }
}

/// The last bytes of one stream, kept once the job's output passed its limit.
#[derive(Debug, Default)]
struct Kept {
    chunks: std::collections::VecDeque<String>,
    bytes: usize,
    /// Bytes of this stream dropped (neither sent nor kept).
    dropped: u64,
}

impl Kept {
    fn push(&mut self, data: String, room: usize) {
        self.bytes += data.len();
        self.chunks.push_back(data);
        while self.bytes > room && self.chunks.len() > 1 {
            let old = self.chunks.pop_front().expect("more than one");
            self.bytes -= old.len();
            self.dropped += old.len() as u64;
        }
    }
}

/// Numbers chunks and hands them to the receiver. Job output waits for room in the channel (the
/// job itself never waits: it writes to a file, which the tailer reads at its own pace), within
/// the job's [`LogLimits`]; the backend's own messages never wait (dropped, and counted, when the
/// channel is full).
pub(crate) struct LogSink {
    state: Mutex<SinkState>,
    /// Keeps job output in order while it waits for room.
    order: tokio::sync::Mutex<()>,
}

struct SinkState {
    tx: Option<mpsc::Sender<LogChunk>>,
    next_seq: u64,
    dropped: u64,
    limits: LogLimits,
    sent_bytes: u64,
    over: bool,
    kept: [Kept; 2],
}

fn stream_index(stream: LogStream) -> usize {
    usize::from(stream == LogStream::Stderr)
}

impl SinkState {
    /// The next chunk, numbered.
    fn chunk(&mut self, stream: LogStream, data: String) -> LogChunk {
        let seq = self.next_seq;
        self.next_seq += 1;
        LogChunk { seq, stream, data }
    }
}

fn without_nul(data: String) -> String {
    if data.contains('\0') {
        data.replace('\0', "\u{FFFD}")
    } else {
        data
    }
}

impl LogSink {
    pub fn new(tx: mpsc::Sender<LogChunk>) -> Self {
        Self::with_limits(tx, LogLimits::default())
    }

    pub fn with_limits(tx: mpsc::Sender<LogChunk>, limits: LogLimits) -> Self {
        Self::resumed(tx, limits, 0)
    }

    /// A sink for a job whose first `already` bytes of output were forwarded before (by an agent
    /// that restarted since): they count against its limit.
    pub fn resumed(tx: mpsc::Sender<LogChunk>, limits: LogLimits, already: u64) -> Self {
        LogSink {
            state: Mutex::new(SinkState {
                tx: Some(tx),
                next_seq: 0,
                dropped: 0,
                limits,
                sent_bytes: already,
                over: false,
                kept: Default::default(),
            }),
            order: tokio::sync::Mutex::new(()),
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

    /// Sends `data` as chunks, at once, never waiting (the backend's messages). NUL, which a job
    /// may well print but the exchange refuses in any text (its PostgreSQL store cannot keep
    /// it), becomes U+FFFD, as invalid UTF-8 already does; the log files keep the bytes.
    pub fn emit(&self, stream: LogStream, data: String) {
        for piece in cap_string(without_nul(data)) {
            self.emit_one(stream, piece);
        }
    }

    fn emit_one(&self, stream: LogStream, data: String) {
        let mut st = self.state.lock().expect("log sink poisoned");
        let Some(tx) = st.tx.clone() else {
            return;
        };
        if st.dropped > 0 && tx.capacity() >= 2 {
            let note = format!(
                "{} messages were dropped because they were not read in time; stdout.log and \
                 stderr.log in the job directory have the job's output\n",
                st.dropped
            );
            let note = st.chunk(LogStream::System, note);
            if tx.try_send(note).is_ok() {
                st.dropped = 0;
            }
        }
        let chunk = st.chunk(stream, data);
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => st.dropped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Sends job output, waiting for room in the channel, within the job's limits.
    pub async fn emit_output(&self, stream: LogStream, data: String) {
        for piece in cap_string(without_nul(data)) {
            let _order = self.order.lock().await;
            let ready = {
                let mut st = self.state.lock().expect("log sink poisoned");
                let Some(tx) = st.tx.clone() else {
                    return;
                };
                let within = !st.over
                    && st.sent_bytes.saturating_add(piece.len() as u64) <= st.limits.max_bytes;
                if within {
                    st.sent_bytes += piece.len() as u64;
                    Some((tx, st.chunk(stream, piece)))
                } else {
                    let room = st.limits.tail_bytes;
                    st.kept[stream_index(stream)].push(piece, room);
                    if st.over {
                        None
                    } else {
                        st.over = true;
                        let notice = format!(
                            "the job's output passed its log limit of {} bytes: what follows is \
                             not sent, but for the last {} bytes of each stream, sent when the job \
                             ends (stdout.log and stderr.log in the job directory may have more)\n",
                            st.limits.max_bytes, st.limits.tail_bytes
                        );
                        Some((tx, st.chunk(LogStream::System, notice)))
                    }
                }
            };
            if let Some((tx, chunk)) = ready {
                let _ = tx.send(chunk).await;
            }
        }
    }

    /// Once the job is over: the last bytes of each stream kept past the limit, each after a
    /// notice of how many bytes were dropped before them.
    pub async fn flush_kept(&self) {
        let _order = self.order.lock().await;
        let (tx, chunks) = {
            let mut st = self.state.lock().expect("log sink poisoned");
            let Some(tx) = st.tx.clone() else {
                return;
            };
            let mut out = Vec::new();
            for stream in [LogStream::Stdout, LogStream::Stderr] {
                let kept = std::mem::take(&mut st.kept[stream_index(stream)]);
                if kept.chunks.is_empty() {
                    continue;
                }
                let notice = format!(
                    "{} bytes of {} were dropped here (the job's log limit); its last {} bytes \
                     follow\n",
                    kept.dropped,
                    if stream == LogStream::Stdout {
                        "stdout"
                    } else {
                        "stderr"
                    },
                    kept.bytes
                );
                out.push(st.chunk(LogStream::System, notice));
                for data in kept.chunks {
                    out.push(st.chunk(stream, data));
                }
            }
            (tx, out)
        };
        for chunk in chunks {
            let _ = tx.send(chunk).await;
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

/// Bytes of a log file kept on disk behind what has been read.
const KEEP_ON_DISK: u64 = 8 * 1024 * 1024;

/// Frees the disk blocks of a log file behind what the tailer has read (keeping the last
/// [`KEEP_ON_DISK`] bytes), so that a job printing without end uses bounded disk: the file keeps
/// its size and offsets (a restarted agent resumes by offset), the freed range reads as zeros.
struct Punch {
    pos: u64,
    punched: u64,
    works: bool,
}

impl Punch {
    async fn new(file: &mut tokio::fs::File) -> Punch {
        use tokio::io::AsyncSeekExt;
        let pos = file.stream_position().await.unwrap_or(0);
        Punch {
            pos,
            punched: 0,
            works: true,
        }
    }

    fn advance(&mut self, file: &tokio::fs::File, n: usize) {
        self.pos += n as u64;
        let upto = self.pos.saturating_sub(KEEP_ON_DISK) & !4095;
        if !self.works || upto < self.punched + KEEP_ON_DISK {
            return;
        }
        let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(file, flags, self.punched, upto - self.punched) {
            Ok(()) => self.punched = upto,
            // Opened read-only, or a file system without holes: the file grows as it did.
            Err(_) => self.works = false,
        }
    }
}

/// Follows one log file until the job is over (`done` turns true), then reads it to the end.
/// Output waits for room to be sent (the job never waits: it writes to the file); the disk
/// behind what was read is freed when the file was opened for writing too (see [`Punch`]).
pub(crate) async fn tail(
    mut file: tokio::fs::File,
    stream: LogStream,
    sink: std::sync::Arc<LogSink>,
    mut done: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_CHUNK_BYTES];
    let mut splitter = Splitter::default();
    let mut idle = 0u32;
    let mut punch = Punch::new(&mut file).await;
    loop {
        // Read `done` before reading: once the job is over, a read that finds nothing more
        // means everything has been read.
        let finished = *done.borrow_and_update();
        match file.read(&mut buf).await {
            Ok(0) => {}
            Ok(n) => {
                idle = 0;
                for chunk in splitter.push(&buf[..n]) {
                    sink.emit_output(stream, chunk).await;
                }
                punch.advance(&file, n);
                continue;
            }
            Err(e) => {
                sink.system(format!("reading {stream:?} log failed: {e}"));
                return;
            }
        }
        if finished {
            for chunk in splitter.flush() {
                sink.emit_output(stream, chunk).await;
            }
            return;
        }
        idle += 1;
        if idle >= PARTIAL_AFTER_POLLS && splitter.has_pending() {
            for chunk in splitter.flush() {
                sink.emit_output(stream, chunk).await;
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
        assert!(note.data.contains("1 messages were dropped"));
        let d = rx.recv().await.unwrap();
        assert_eq!((d.seq, d.data.as_str()), (4, "d\n"));
        sink.close();
        assert!(rx.recv().await.is_none());
    }

    /// Issue 17: output waits for room instead of being dropped; past the limit, a notice, then
    /// only the tail of each stream, when the job ends, after a count of what was dropped.
    #[tokio::test]
    async fn output_waits_for_room_and_keeps_the_tail_past_the_limit() {
        let (tx, mut rx) = mpsc::channel(1);
        let limits = LogLimits {
            max_bytes: 10,
            tail_bytes: 6,
        };
        let sink = std::sync::Arc::new(LogSink::with_limits(tx, limits));
        let s = sink.clone();
        let producer = tokio::spawn(async move {
            for line in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n"] {
                s.emit_output(LogStream::Stdout, line.into()).await;
            }
            s.emit_output(LogStream::Stderr, "oops\n".into()).await;
            s.flush_kept().await;
            s.close();
        });
        let mut got = Vec::new();
        while let Some(c) = rx.recv().await {
            got.push((c.seq, c.stream, c.data));
        }
        producer.await.unwrap();
        let texts: Vec<&str> = got.iter().map(|(_, _, d)| d.as_str()).collect();
        // Nothing was dropped for want of room: the first 10 bytes went as they came.
        assert_eq!(&texts[..2], &["aaaa\n", "bbbb\n"]);
        assert!(
            texts[2].contains("passed its log limit of 10 bytes"),
            "{texts:?}"
        );
        assert!(
            texts[3].contains("10 bytes of stdout were dropped"),
            "{texts:?}"
        );
        // The last 6 bytes of stdout: one chunk ("eeee\n"), the others counted as dropped.
        assert_eq!(texts[4], "eeee\n");
        assert!(
            texts[5].contains("0 bytes of stderr were dropped"),
            "{texts:?}"
        );
        assert_eq!(texts[6], "oops\n");
        assert_eq!(texts.len(), 7);
        let seqs: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(seqs, (0..7).collect::<Vec<u64>>());
    }

    /// A restarted agent counts what was sent before it against the job's limit.
    #[tokio::test]
    async fn a_resumed_sink_counts_what_was_sent_before() {
        let (tx, mut rx) = mpsc::channel(8);
        let limits = LogLimits {
            max_bytes: 10,
            tail_bytes: 100,
        };
        let sink = LogSink::resumed(tx, limits, 8);
        sink.emit_output(LogStream::Stdout, "abc\n".into()).await;
        assert!(rx
            .recv()
            .await
            .unwrap()
            .data
            .contains("passed its log limit"));
        sink.flush_kept().await;
        assert!(rx.recv().await.unwrap().data.contains("0 bytes of stdout"));
        assert_eq!(rx.recv().await.unwrap().data, "abc\n");
    }
}
