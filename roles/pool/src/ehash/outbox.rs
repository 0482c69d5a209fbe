//! The durable outbox: quote requests the mint has not answered yet survive
//! a pool crash.
//!
//! An append-only journal of records: `Append(share hash, request)` when a
//! share is accepted, `Done(share hash)` when the mint answered. What was
//! appended and never done is replayed on restart (and resent on every mint
//! reconnect); the mint's idempotency per share hash makes replays safe.
//!
//! Appends are group-committed: one writer thread writes every record
//! queued meanwhile and syncs the file once for all of them, then calls
//! each append's `synced` there, so a share needs no task of its own to
//! wait for its record. `Done` records ride along with the next sync
//! (losing one only causes a harmless replay). The journal is rewritten
//! without finished records when they dominate it. The writer keeps where
//! each owed record is in the journal, not its payload: the flow holds
//! the share already, and a rewrite reads the records back.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use roles_common::private;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

const MAGIC: &[u8; 8] = b"HPOUTBX1";
const KIND_APPEND: u8 = 1;
const KIND_DONE: u8 = 2;
/// Largest payload accepted (a MintQuoteRequest frame is ~300 bytes).
const MAX_PAYLOAD: usize = 64 * 1024;
/// Records one sync may cover at most.
const MAX_BATCH: usize = 4096;

/// Requests still owed by the mint, oldest first: (share hash, payload).
pub type Owed = Vec<([u8; 32], Vec<u8>)>;

/// Where a whole record is in the journal: its first byte and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    at: u64,
    len: usize,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Append { key: [u8; 32], payload: Vec<u8> },
    Done { key: [u8; 32] },
}

impl Record {
    /// kind (1) | key (32) | payload length (u32 LE, appends only) | payload | crc32 (u32 LE)
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Record::Append { key, payload } => {
                encode_append(key, payload, out);
            }
            Record::Done { key } => {
                let start = out.len();
                out.push(KIND_DONE);
                out.extend_from_slice(key);
                seal(out, start);
            }
        }
    }

    /// Decodes the records of a journal body; stops at the first torn or
    /// corrupt record and returns how many bytes were valid.
    pub fn decode_all(body: &[u8]) -> (Vec<Record>, usize) {
        let mut records = vec![];
        let mut at = 0;
        while let Some((record, len)) = Self::decode_one(&body[at..]) {
            records.push(record);
            at += len;
        }
        (records, at)
    }

    fn decode_one(bytes: &[u8]) -> Option<(Record, usize)> {
        let kind = *bytes.first()?;
        let key: [u8; 32] = bytes.get(1..33)?.try_into().ok()?;
        let (record, end) = match kind {
            KIND_APPEND => {
                let len = u32::from_le_bytes(bytes.get(33..37)?.try_into().ok()?) as usize;
                if len > MAX_PAYLOAD {
                    return None;
                }
                let payload = bytes.get(37..37 + len)?.to_vec();
                (Record::Append { key, payload }, 37 + len)
            }
            KIND_DONE => (Record::Done { key }, 33),
            _ => return None,
        };
        let crc = u32::from_le_bytes(bytes.get(end..end + 4)?.try_into().ok()?);
        (crc32fast::hash(&bytes[..end]) == crc).then_some((record, end + 4))
    }
}

/// An append record, encoded from a payload the caller keeps, at the end
/// of `out`; returns where it is in `out`.
fn encode_append(key: &[u8; 32], payload: &[u8], out: &mut Vec<u8>) -> Span {
    let start = out.len();
    out.push(KIND_APPEND);
    out.extend_from_slice(key);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    seal(out, start);
    Span {
        at: start as u64,
        len: out.len() - start,
    }
}

/// Ends the record that starts at `start` with its crc32.
fn seal(out: &mut Vec<u8>, start: usize) {
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// What is still owed after applying `records` in order: appended, not done,
/// in first-append order.
pub fn pending_after(records: Vec<Record>) -> Owed {
    let mut order = vec![];
    let mut live: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
    for record in records {
        match record {
            Record::Append { key, payload } => {
                if live.insert(key, payload).is_none() {
                    order.push(key);
                }
            }
            Record::Done { key } => {
                live.remove(&key);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|key| live.remove(&key).map(|payload| (key, payload)))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("outbox payload of {0} bytes is larger than {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("the outbox writer has stopped")]
    Stopped,
}

/// What to do once a record is on disk, or with why it is not: called on
/// the writer's thread. Dropped uncalled (the writer stopped with it
/// queued), it is called with that.
pub struct Synced(Option<Then>);

type Then = Box<dyn FnOnce(Result<(), String>) + Send>;

impl Synced {
    pub fn new(then: impl FnOnce(Result<(), String>) + Send + 'static) -> Self {
        Self(Some(Box::new(then)))
    }

    /// A `Synced` that answers the receiver, for a caller that awaits it.
    fn to_await() -> (Self, oneshot::Receiver<Result<(), String>>) {
        let (answer, answered) = oneshot::channel();
        (Self::new(move |result| drop(answer.send(result))), answered)
    }

    fn call(mut self, result: Result<(), String>) {
        if let Some(then) = self.0.take() {
            then(result);
        }
    }
}

impl Drop for Synced {
    fn drop(&mut self) {
        if let Some(then) = self.0.take() {
            then(Err(OutboxError::Stopped.to_string()));
        }
    }
}

enum Command {
    Append {
        key: [u8; 32],
        payload: Vec<u8>,
        synced: Synced,
    },
    Done {
        key: [u8; 32],
    },
    /// Write and sync everything queued before it, then stop: nothing more
    /// touches the journal (no compaction after), so another writer may
    /// take it over once `synced` is called.
    Close {
        synced: Synced,
    },
}

/// Handle to the journal writer task.
#[derive(Clone)]
pub struct Outbox {
    commands: mpsc::Sender<Command>,
}

impl Outbox {
    /// Opens (or creates) the journal at `path`, compacts it, and starts the
    /// writer. Returns the records still owed, oldest first, to replay.
    pub fn open(path: &Path) -> Result<(Outbox, Owed), OutboxError> {
        let io_err = |source| OutboxError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            private::create_dir(dir).map_err(io_err)?;
        }
        let mut bytes = vec![];
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let body = match bytes.strip_prefix(MAGIC.as_slice()) {
            Some(body) => body,
            // Empty, or cut inside its header (a disk that filled up as
            // the file was made): nothing was ever owed in it.
            None if MAGIC.starts_with(&bytes) => &[][..],
            None => {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a Hashpool outbox journal (bad magic)",
                )))
            }
        };
        let (records, valid) = Record::decode_all(body);
        if valid < body.len() {
            warn!(
                "outbox {}: ignoring {} bytes of a torn or corrupt tail",
                path.display(),
                body.len() - valid
            );
        }
        let pending = pending_after(records);
        // Start from a compact journal holding only what is owed.
        let (file, live) =
            rewrite(path, pending.iter().map(|(k, p)| (k, p.as_slice()))).map_err(io_err)?;
        if !pending.is_empty() {
            info!(
                "outbox {}: {} quote requests still owed by the mint, replaying",
                path.display(),
                pending.len()
            );
        }
        let (commands, queue) = mpsc::channel(MAX_BATCH);
        let good_len = file.metadata().map_err(io_err)?.len();
        let writer = Writer {
            path: path.to_path_buf(),
            file,
            good_len,
            live,
            done_since_compaction: 0,
            torn: false,
        };
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(io_err)?;
        Ok((Outbox { commands }, pending))
    }

    /// Appends a request; `synced` is called once it is on disk (or with
    /// why not). Waits for no one: only when the writer is a whole batch
    /// behind does a task queue the record. A command the writer never
    /// takes is dropped, which tells its `synced` the writer stopped.
    pub fn append(&self, key: [u8; 32], payload: Vec<u8>, synced: Synced) {
        if payload.len() > MAX_PAYLOAD {
            return synced.call(Err(OutboxError::TooLarge(payload.len()).to_string()));
        }
        let command = Command::Append {
            key,
            payload,
            synced,
        };
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(command) {
            let commands = self.commands.clone();
            tokio::spawn(async move { commands.send(command).await });
        }
    }

    /// [`Outbox::append`], returning once the request is on disk.
    #[cfg(test)]
    pub async fn append_synced(&self, key: [u8; 32], payload: Vec<u8>) -> Result<(), String> {
        let (synced, done) = Synced::to_await();
        self.append(key, payload, synced);
        done.await.map_err(|_| OutboxError::Stopped.to_string())?
    }

    /// Marks a request answered (written with the next sync).
    pub async fn done(&self, key: [u8; 32]) {
        let _ = self.commands.send(Command::Done { key }).await;
    }

    /// Returns once everything sent to the writer before it is on disk and
    /// the writer is done with the journal (at shutdown, so a restart on the
    /// same journal reads it all, and writes it alone). An append still
    /// waiting for room (see [`Outbox::append`]) is answered that the writer
    /// stopped.
    pub async fn close(self) -> Result<(), OutboxError> {
        let (synced, done) = Synced::to_await();
        self.commands
            .send(Command::Close { synced })
            .await
            .map_err(|_| OutboxError::Stopped)?;
        done.await
            .map_err(|_| OutboxError::Stopped)?
            .map_err(|e| OutboxError::Io {
                path: PathBuf::from("outbox"),
                source: io::Error::other(e),
            })
    }
}

/// Writes `records` to a fresh journal next to `path` and renames it over
/// `path`; returns the journal, open to append, and where each record is.
/// Once renamed, that journal is returned even if syncing its directory
/// fails (logged): the old one, no longer at `path`, must not be appended
/// to, and a crash brings back at worst the old one, which holds them all.
fn rewrite<'a>(
    path: &Path,
    records: impl Iterator<Item = (&'a [u8; 32], &'a [u8])>,
) -> io::Result<(File, HashMap<[u8; 32], Span>)> {
    let mut bytes = MAGIC.to_vec();
    let mut live = HashMap::new();
    for (key, payload) in records {
        live.insert(*key, encode_append(key, payload, &mut bytes));
    }
    let (file, synced) = private::replace_file_and_open(path, &bytes)?;
    if let Err(e) = synced {
        warn!(
            "outbox {}: rewritten, but its directory not synced: {e}",
            path.display()
        );
    }
    Ok((file, live))
}

struct Writer {
    path: PathBuf,
    file: File,
    /// Length of the journal up to its last record written whole: a failed
    /// write is cut back to it, so a torn record never hides the ones after.
    good_len: u64,
    /// The records owed, by share hash.
    live: HashMap<[u8; 32], Span>,
    done_since_compaction: usize,
    /// A failed write could not be cut back: its bytes must go before
    /// anything more is written, or they would hide it at the next start.
    torn: bool,
}

impl Writer {
    /// Runs on its own thread: blocking file IO, one sync per batch.
    fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        while queue.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
            let closing = batch.iter().any(|c| matches!(c, Command::Close { .. }));
            self.commit(std::mem::take(&mut batch));
            if closing {
                return;
            }
            if self.done_since_compaction > 10_000
                && self.done_since_compaction > 2 * self.live.len()
            {
                self.compact();
            }
        }
    }

    fn commit(&mut self, batch: Vec<Command>) {
        // First, as it may rewrite the journal: the offsets below follow.
        let whole = self.whole();
        let mut bytes = vec![];
        let mut waiting = vec![];
        let mut appended = vec![];
        for command in batch {
            match command {
                Command::Append {
                    key,
                    payload,
                    synced,
                } => {
                    // `bytes` go on the journal after its `good_len` bytes.
                    let span = encode_append(&key, &payload, &mut bytes);
                    let at = self.good_len + span.at;
                    appended.push((key, Span { at, ..span }));
                    waiting.push(synced);
                }
                Command::Done { key } => {
                    Record::Done { key }.encode_into(&mut bytes);
                    if self.live.remove(&key).is_some() {
                        self.done_since_compaction += 1;
                    }
                }
                Command::Close { synced } => waiting.push(synced),
            }
        }
        let result = whole
            .and_then(|()| self.file.write_all(&bytes))
            .and_then(|()| {
                if waiting.is_empty() {
                    Ok(())
                } else {
                    self.file.sync_data()
                }
            })
            .map_err(|e| {
                warn!("outbox {}: write failed: {e}", self.path.display());
                self.cut_back();
                e.to_string()
            });
        if result.is_ok() {
            self.good_len += bytes.len() as u64;
            // Only what is on disk is owed: a failed append is refused to its
            // caller and never replayed.
            self.live.extend(appended);
        }
        for synced in waiting {
            synced.call(result.clone());
        }
    }

    /// After a failed write: the journal back to its last whole record (the
    /// file is in append mode, so the next record follows it).
    fn cut_back(&mut self) {
        self.torn = true;
        match self.file.set_len(self.good_len) {
            Ok(()) => self.torn = false,
            Err(e) => warn!(
                "outbox {}: cannot cut a failed write back: {e}",
                self.path.display()
            ),
        }
    }

    /// Whether the journal ends with its last whole record, so that more
    /// can follow: the bytes of a write that could not be cut back are cut
    /// now, or the journal rewritten without them; failing both, nothing
    /// more is written.
    fn whole(&mut self) -> io::Result<()> {
        if self.torn {
            self.cut_back();
        }
        if self.torn && self.compact() {
            self.torn = false;
        }
        match self.torn {
            true => Err(io::Error::other("the journal ends with a torn write")),
            false => Ok(()),
        }
    }

    /// Rewrites the journal with only the records owed; whether it did.
    fn compact(&mut self) -> bool {
        let rewritten = self
            .read_live()
            .and_then(|owed| rewrite(&self.path, owed.iter().map(|(k, p)| (k, p.as_slice()))));
        match rewritten {
            Ok((file, live)) => {
                self.good_len = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = file;
                self.live = live;
                self.done_since_compaction = 0;
                true
            }
            Err(e) => {
                warn!(
                    "outbox {}: compaction failed, keeping the journal: {e}",
                    self.path.display()
                );
                false
            }
        }
    }

    /// The owed records, read back from the journal; an error if one is not
    /// where it was written whole, so a rewrite never loses or alters one.
    fn read_live(&self) -> io::Result<Owed> {
        self.live
            .iter()
            .map(|(key, span)| {
                let mut bytes = vec![0; span.len];
                self.file.read_exact_at(&mut bytes, span.at)?;
                match Record::decode_one(&bytes) {
                    Some((Record::Append { key: read, payload }, len))
                        if read == *key && len == span.len =>
                    {
                        Ok((*key, payload))
                    }
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the record of {} is not where it was written",
                            ehash::share::hex_be(key)
                        ),
                    )),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored() {
        let records = vec![
            Record::Append {
                key: key(1),
                payload: b"one".to_vec(),
            },
            Record::Done { key: key(1) },
            Record::Append {
                key: key(2),
                payload: vec![0xab; 300],
            },
        ];
        let mut bytes = vec![];
        for r in &records {
            r.encode_into(&mut bytes);
        }
        assert_eq!(Record::decode_all(&bytes), (records.clone(), bytes.len()));
        for cut in 1..bytes.len() {
            let (decoded, valid) = Record::decode_all(&bytes[..cut]);
            assert!(decoded.len() < 3 && valid <= cut);
            assert_eq!(&decoded[..], &records[..decoded.len()]);
        }
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 10;
        corrupt[last] ^= 1;
        assert_eq!(Record::decode_all(&corrupt).0.len(), 2);
    }

    #[test]
    fn pending_is_what_was_appended_and_not_done() {
        let pending = pending_after(vec![
            Record::Append {
                key: key(1),
                payload: b"a".to_vec(),
            },
            Record::Append {
                key: key(2),
                payload: b"b".to_vec(),
            },
            Record::Done { key: key(1) },
            Record::Append {
                key: key(3),
                payload: b"c".to_vec(),
            },
            Record::Append {
                key: key(2),
                payload: b"b".to_vec(),
            },
        ]);
        assert_eq!(
            pending,
            vec![(key(2), b"b".to_vec()), (key(3), b"c".to_vec())]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_a_restart_and_replays_what_is_owed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.journal");
        let (outbox, pending) = Outbox::open(&path).unwrap();
        assert!(pending.is_empty());
        let appends: Vec<_> = (0..200u8)
            .map(|n| {
                let outbox = outbox.clone();
                tokio::spawn(async move { outbox.append_synced(key(n), vec![n; 10]).await })
            })
            .collect();
        for a in appends {
            a.await.unwrap().unwrap();
        }
        for n in 0..150u8 {
            outbox.done(key(n)).await;
        }
        // A sync after the done records: append one more.
        outbox.append_synced(key(250), vec![1]).await.unwrap();
        drop(outbox); // like a crash: no shutdown step

        let (_outbox, pending) = Outbox::open(&path).unwrap();
        // The concurrent appends landed in any order; the last one is last.
        let mut keys: Vec<u8> = pending.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys.pop(), Some(250));
        keys.sort();
        assert_eq!(keys, (150..200u8).collect::<Vec<_>>());
        assert!(pending
            .iter()
            .all(|(k, p)| k[0] == 250 || *p == vec![k[0]; 10]));
    }

    /// Closing writes what was queued and stops the writer: the journal is
    /// the next writer's at once (a pool restarted in the same process).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_outbox_has_written_everything_queued_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.journal");
        let (outbox, _) = Outbox::open(&path).unwrap();
        for n in 0..20u8 {
            outbox.append(key(n), vec![n], Synced::new(|_| {}));
        }
        outbox.done(key(0)).await;
        let after_close = outbox.clone();
        outbox.close().await.unwrap();
        assert_eq!(
            after_close.append_synced(key(30), vec![30]).await,
            Err(OutboxError::Stopped.to_string()),
            "the writer has stopped"
        );
        let (_outbox, owed) = Outbox::open(&path).unwrap();
        let keys: Vec<u8> = owed.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, (1..20u8).collect::<Vec<_>>());
    }

    /// Part of a record (key 2) at the end of the journal at `path`, as a
    /// write that failed half way leaves it.
    fn tear(path: &Path) {
        let mut torn = vec![];
        Record::Append {
            key: key(2),
            payload: vec![2; 50],
        }
        .encode_into(&mut torn);
        let mut raw = OpenOptions::new().append(true).open(path).unwrap();
        raw.write_all(&torn[..20]).unwrap();
    }

    #[test]
    fn a_torn_write_is_cut_back_so_later_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.journal");
        let (file, live) = rewrite(&path, [(&key(1), b"one".as_slice())].into_iter()).unwrap();
        let good_len = file.metadata().unwrap().len();
        tear(&path);
        let mut writer = Writer {
            path: path.clone(),
            file,
            good_len,
            live,
            done_since_compaction: 0,
            torn: false,
        };
        writer.cut_back();
        writer.commit(vec![Command::Append {
            key: key(3),
            payload: b"three".to_vec(),
            synced: Synced::new(|result| assert_eq!(result, Ok(()))),
        }]);
        let (_outbox, pending) = Outbox::open(&path).unwrap();
        let keys: Vec<u8> = pending.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, vec![1, 3], "the record after the torn one is read");
    }

    /// A failed write that could not be cut back at once is cut before the
    /// next write, so the records after it are read at the next start.
    #[test]
    fn a_torn_write_that_could_not_be_cut_back_goes_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.journal");
        let mut writer = writer(&path);
        writer.commit(vec![append(key(1), b"one".to_vec())]);
        tear(&path);
        writer.torn = true;
        writer.commit(vec![append(key(3), b"three".to_vec())]);
        let (_outbox, pending) = Outbox::open(&path).unwrap();
        let keys: Vec<u8> = pending.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, vec![1, 3], "the record after the torn one is read");
    }

    /// The writer of a fresh journal at `path`.
    fn writer(path: &Path) -> Writer {
        let (file, live) = rewrite(path, std::iter::empty()).unwrap();
        Writer {
            path: path.to_path_buf(),
            good_len: file.metadata().unwrap().len(),
            file,
            live,
            done_since_compaction: 0,
            torn: false,
        }
    }

    fn append(key: [u8; 32], payload: Vec<u8>) -> Command {
        Command::Append {
            key,
            payload,
            synced: Synced::new(|result| assert_eq!(result, Ok(()))),
        }
    }

    #[test]
    fn a_compaction_keeps_exactly_the_owed_records_read_back_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.journal");
        let mut writer = writer(&path);
        // Two batches, so that records sit at offsets of both.
        let payload = |n: u8| vec![n; 10 + n as usize];
        writer.commit((0..100).map(|n| append(key(n), payload(n))).collect());
        writer.commit((100..200).map(|n| append(key(n), payload(n))).collect());
        writer.commit(
            (0..200)
                .filter(|n| n % 3 != 0)
                .map(|n| Command::Done { key: key(n) })
                .collect(),
        );
        let before = std::fs::metadata(&path).unwrap().len();
        writer.compact();
        assert!(std::fs::metadata(&path).unwrap().len() < before / 2);
        // What the writer goes on with is where the rewrite put it.
        writer.commit(vec![append(key(200), payload(200))]);
        writer.commit(vec![Command::Done { key: key(3) }]);
        writer.compact();
        drop(writer);

        let (_outbox, owed) = Outbox::open(&path).unwrap();
        let mut owed: Vec<(u8, Vec<u8>)> = owed.into_iter().map(|(k, p)| (k[0], p)).collect();
        owed.sort();
        let expected: Vec<(u8, Vec<u8>)> = (0..=200)
            .filter(|n| n % 3 == 0 && *n != 3 || *n == 200)
            .map(|n| (n as u8, payload(n as u8)))
            .collect();
        assert_eq!(owed, expected);
    }

    #[test]
    fn a_record_not_where_it_was_written_stops_the_compaction_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.journal");
        let mut writer = writer(&path);
        writer.commit((0..3).map(|n| append(key(n), vec![n; 20])).collect());
        writer.commit(vec![Command::Done { key: key(0) }]);
        // The journal no longer says what the writer thinks it does.
        writer.live.get_mut(&key(2)).unwrap().at -= 1;
        writer.compact();
        drop(writer);
        let (_outbox, owed) = Outbox::open(&path).unwrap();
        let keys: Vec<u8> = owed.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, vec![1, 2], "the journal was kept as it was");
    }

    #[test]
    fn a_synced_is_called_once_and_dropped_uncalled_it_reports_the_writer_stopped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        Synced::new(move |result| tx.send(result).unwrap()).call(Ok(()));
        drop(Synced::new(move |result| tx2.send(result).unwrap()));
        let results: Vec<_> = rx.iter().collect();
        assert_eq!(results, vec![Ok(()), Err(OutboxError::Stopped.to_string())]);
    }

    #[tokio::test]
    async fn an_oversized_payload_is_refused_through_its_callback() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(&dir.path().join("outbox.journal")).unwrap();
        let refused = outbox.append_synced(key(1), vec![0; MAX_PAYLOAD + 1]).await;
        assert!(refused.unwrap_err().contains("larger than"));
        assert_eq!(outbox.append_synced(key(2), vec![2; 10]).await, Ok(()));
    }

    #[test]
    fn a_journal_cut_inside_its_header_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.journal");
        for cut in 1..MAGIC.len() {
            std::fs::write(&path, &MAGIC[..cut]).unwrap();
            let (_, owed) = Outbox::open(&path).unwrap();
            assert!(owed.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.journal");
        std::fs::write(&path, b"not a journal").unwrap();
        assert!(Outbox::open(&path)
            .err()
            .unwrap()
            .to_string()
            .contains("bad magic"));
    }
}
