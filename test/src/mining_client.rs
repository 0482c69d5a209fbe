//! An SV2 mining client of the pool: it opens channels, tracks their jobs,
//! finds shares on the CPU and collects the ehash notifications.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ehash_ext_sv2::EhashMessage;
use roles_common::sv2::ConnectError;
use stratum_core::binary_sv2::{B032Owned, Seq064KOwned, Str0255Owned, U256Owned};
use stratum_core::bitcoin::{
    block::{Header, Version},
    hashes::{sha256d, Hash},
    pow::CompactTarget,
    BlockHash, Target, TxMerkleNode,
};
use stratum_core::channels_sv2::merkle_root::merkle_root_from_path;
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::extensions_sv2::RequestExtensionsOwned;
use stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, NewMiningJobOwned,
    OpenExtendedMiningChannelOwned, OpenStandardMiningChannelOwned, SetCustomMiningJobOwned,
    SetNewPrevHashOwned, SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
};
use stratum_core::parsers_sv2::{
    AnyMessageOwned, ExtensionsNegotiationOwned, ExtensionsOwned, MiningOwned,
};

use crate::keys::POOL_PUBLIC_KEY;
use crate::sv2_client::{str0255, Incoming, ReadError, Sv2Conn};

/// What a client knows about one of its channels.
#[derive(Debug, Clone, Default)]
pub struct ChannelState {
    pub channel_id: u32,
    pub extended: bool,
    pub target: [u8; 32],
    pub extranonce_prefix: Vec<u8>,
    pub extranonce_size: u16,
    pub extended_jobs: HashMap<u32, NewExtendedMiningJobOwned>,
    pub standard_jobs: HashMap<u32, NewMiningJobOwned>,
    pub prev_hash: Option<SetNewPrevHashOwned>,
    /// The job to mine on: set by SetNewPrevHash or a non-future job.
    pub active_job: Option<u32>,
    pub prev_hash_count: usize,
}

impl ChannelState {
    /// A channel the pool just opened: extended if it has an extranonce size.
    fn opened(
        channel_id: u32,
        target: &U256Owned,
        extranonce_prefix: &[u8],
        extranonce_size: Option<u16>,
    ) -> Self {
        ChannelState {
            channel_id,
            extended: extranonce_size.is_some(),
            target: target.to_array(),
            extranonce_prefix: extranonce_prefix.to_vec(),
            extranonce_size: extranonce_size.unwrap_or(0),
            ..Default::default()
        }
    }

    pub fn target(&self) -> Target {
        Target::from_le_bytes(self.target)
    }
}

/// A share found by [`MiningClient::find_share`].
#[derive(Debug, Clone)]
pub struct FoundShare {
    pub job_id: u32,
    pub nonce: u32,
    pub ntime: u32,
    pub version: u32,
    pub extranonce: Vec<u8>,
    pub header: [u8; 80],
    pub hash: [u8; 32],
}

/// sha256d of a header, little-endian (SV2 order).
pub fn sha256d(bytes: &[u8]) -> [u8; 32] {
    sha256d::Hash::hash(bytes).to_byte_array()
}

fn error_code(code: &Str0255Owned) -> String {
    String::from_utf8_lossy(code.as_bytes()).to_string()
}

static SEARCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An SV2 mining client that tracks its channels' jobs and finds shares on the CPU.
pub struct MiningClient {
    pub conn: Sv2Conn,
    pub channels: HashMap<u32, ChannelState>,
    /// Messages received and not yet consumed by a `wait_*` call.
    pub seen: Vec<Incoming>,
    next_request_id: u32,
    next_sequence: u32,
}

impl MiningClient {
    pub async fn connect(
        addr: SocketAddr,
        authority_key: &str,
    ) -> Result<MiningClient, ConnectError> {
        Ok(MiningClient::over(
            Sv2Conn::connect(addr, authority_key).await?,
        ))
    }

    /// A client on a connection already made (before SetupConnection).
    pub fn over(conn: Sv2Conn) -> MiningClient {
        MiningClient {
            conn,
            channels: HashMap::new(),
            seen: Vec::new(),
            next_request_id: 1,
            next_sequence: 1,
        }
    }

    /// A client of the pool at `addr` that finished SetupConnection.
    pub async fn set_up(addr: SocketAddr) -> MiningClient {
        let mut c = MiningClient::connect(addr, POOL_PUBLIC_KEY)
            .await
            .expect("connects");
        c.setup_connection(0).await;
        c
    }

    /// Receives one message and updates channel state from it.
    pub async fn recv(&mut self) -> Result<Incoming, ReadError> {
        let msg = self.conn.recv().await?;
        if let Incoming::Sv2(AnyMessageOwned::Mining(m)) = &msg {
            self.observe(m);
        }
        Ok(msg)
    }

    fn observe(&mut self, m: &MiningOwned) {
        match m {
            MiningOwned::NewExtendedMiningJob(j) => {
                if let Some(c) = self.channels.get_mut(&j.channel_id) {
                    c.extended_jobs.insert(j.job_id, j.clone());
                    if j.min_ntime.clone().into_inner().is_some() {
                        c.active_job = Some(j.job_id);
                    }
                }
            }
            MiningOwned::NewMiningJob(j) => {
                if let Some(c) = self.channels.get_mut(&j.channel_id) {
                    c.standard_jobs.insert(j.job_id, j.clone());
                    if j.min_ntime.clone().into_inner().is_some() {
                        c.active_job = Some(j.job_id);
                    }
                }
            }
            MiningOwned::SetNewPrevHash(p) => {
                if let Some(c) = self.channels.get_mut(&p.channel_id) {
                    c.prev_hash = Some(p.clone());
                    c.active_job = Some(p.job_id);
                    c.prev_hash_count += 1;
                }
            }
            MiningOwned::SetTarget(t) => {
                if let Some(c) = self.channels.get_mut(&t.channel_id) {
                    c.target = t.maximum_target.to_array();
                }
            }
            MiningOwned::SetExtranoncePrefix(p) => {
                if let Some(c) = self.channels.get_mut(&p.channel_id) {
                    c.extranonce_prefix = p.extranonce_prefix.as_bytes().to_vec();
                }
            }
            _ => {}
        }
    }

    /// Waits for a message matching `pred` (others are kept in `seen`).
    pub async fn wait_for<T>(&mut self, mut pred: impl FnMut(&Incoming) -> Option<T>) -> T {
        loop {
            let msg = self.recv().await.expect("connection open");
            if let Some(t) = pred(&msg) {
                return t;
            }
            self.seen.push(msg);
        }
    }

    /// SetupConnection of the mining protocol; panics unless it succeeds.
    pub async fn setup_connection(&mut self, flags: u32) {
        self.conn.setup(Protocol::MiningProtocol, flags).await;
    }

    /// Sends RequestExtensions and returns the answer.
    pub async fn request_extensions(&mut self, extensions: Vec<u16>) -> ExtensionsNegotiationOwned {
        self.conn
            .send(AnyMessageOwned::Extensions(
                ExtensionsOwned::ExtensionsNegotiation(
                    ExtensionsNegotiationOwned::RequestExtensions(RequestExtensionsOwned {
                        request_id: 7,
                        requested_extensions: Seq064KOwned::new(extensions).expect("fits"),
                    }),
                ),
            ))
            .await;
        self.wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                r,
            ))) => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// Opens an extended channel; Err(error_code) if refused.
    pub async fn open_extended(
        &mut self,
        identity: &str,
        nominal_hash_rate: f32,
        min_extranonce_size: u16,
    ) -> Result<u32, String> {
        self.open_channel(identity, nominal_hash_rate, Some(min_extranonce_size))
            .await
    }

    /// Opens a standard channel; Err(error_code) if refused.
    pub async fn open_standard(
        &mut self,
        identity: &str,
        nominal_hash_rate: f32,
    ) -> Result<u32, String> {
        self.open_channel(identity, nominal_hash_rate, None).await
    }

    /// Sends OpenExtendedMiningChannel without waiting for the answer
    /// (which `open_extended` would register).
    pub async fn try_open_extended(
        &mut self,
        identity: &str,
        nominal_hash_rate: f32,
        min_extranonce_size: u16,
    ) -> Result<u32, String> {
        self.send_open(identity, nominal_hash_rate, Some(min_extranonce_size))
            .await
    }

    /// Sends an open request; its request id, or Err once the connection is gone.
    async fn send_open(
        &mut self,
        identity: &str,
        nominal_hash_rate: f32,
        min_extranonce_size: Option<u16>,
    ) -> Result<u32, String> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let (user_identity, max_target) = (str0255(identity), U256Owned::from([0xffu8; 32]));
        let request = match min_extranonce_size {
            Some(min_extranonce_size) => {
                MiningOwned::OpenExtendedMiningChannel(OpenExtendedMiningChannelOwned {
                    request_id,
                    user_identity,
                    nominal_hash_rate,
                    max_target,
                    min_extranonce_size,
                })
            }
            None => MiningOwned::OpenStandardMiningChannel(OpenStandardMiningChannelOwned {
                request_id,
                user_identity,
                nominal_hash_rate,
                max_target,
            }),
        };
        self.conn.try_send(AnyMessageOwned::Mining(request)).await?;
        Ok(request_id)
    }

    /// Opens an extended channel if `min_extranonce_size` is given, else a
    /// standard one, and registers the channel the pool opens.
    async fn open_channel(
        &mut self,
        identity: &str,
        nominal_hash_rate: f32,
        min_extranonce_size: Option<u16>,
    ) -> Result<u32, String> {
        let request_id = self
            .send_open(identity, nominal_hash_rate, min_extranonce_size)
            .await
            .expect("connection open");
        let channel = self
            .wait_for(|m| match m {
                Incoming::Sv2(AnyMessageOwned::Mining(
                    MiningOwned::OpenExtendedMiningChannelSuccess(s),
                )) if s.request_id == request_id => Some(Ok(ChannelState::opened(
                    s.channel_id,
                    &s.target,
                    s.extranonce_prefix.as_bytes(),
                    Some(s.extranonce_size),
                ))),
                Incoming::Sv2(AnyMessageOwned::Mining(
                    MiningOwned::OpenStandardMiningChannelSuccess(s),
                )) if s.request_id == request_id => Some(Ok(ChannelState::opened(
                    s.channel_id,
                    &s.target,
                    s.extranonce_prefix.as_bytes(),
                    None,
                ))),
                Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(e)))
                    if e.request_id == request_id =>
                {
                    Some(Err(error_code(&e.error_code)))
                }
                _ => None,
            })
            .await?;
        let channel_id = channel.channel_id;
        self.channels.insert(channel_id, channel);
        self.replay_seen();
        Ok(channel_id)
    }

    /// Jobs that arrived before the channel was registered.
    fn replay_seen(&mut self) {
        let seen: Vec<Incoming> = self.seen.clone();
        for m in &seen {
            if let Incoming::Sv2(AnyMessageOwned::Mining(m)) = m {
                self.observe(m);
            }
        }
    }

    /// Sends CloseChannel for `channel_id` (the pool answers nothing).
    pub async fn close_channel(&mut self, channel_id: u32) {
        let close = CloseChannelOwned {
            channel_id,
            reason_code: str0255("done"),
        };
        self.conn
            .send(AnyMessageOwned::Mining(MiningOwned::CloseChannel(close)))
            .await;
    }

    /// Sends SetCustomMiningJob: the job id the pool gave it, or the error code.
    pub async fn set_custom_job(&mut self, m: &SetCustomMiningJobOwned) -> Result<u32, String> {
        self.conn
            .send(AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(
                m.clone(),
            )))
            .await;
        let (channel_id, request_id) = (m.channel_id, m.request_id);
        self.wait_for(|msg| match msg {
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJobSuccess(ok)))
                if ok.channel_id == channel_id && ok.request_id == request_id =>
            {
                Some(Ok(ok.job_id))
            }
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJobError(e)))
                if e.channel_id == channel_id && e.request_id == request_id =>
            {
                Some(Err(e.error_code.as_utf8_or_hex()))
            }
            _ => None,
        })
        .await
    }

    /// Mines custom job `m` (accepted as `job_id`) from now on: the job the
    /// pool built from it, the way channels_sv2 builds it.
    pub fn mine_custom_job(&mut self, m: &SetCustomMiningJobOwned, job_id: u32) {
        let c = &self.channels[&m.channel_id];
        let full_extranonce = c.extranonce_prefix.len() + c.extranonce_size as usize;
        let job = JobFactory::new(true, None, None)
            .new_extended_job_from_custom_job(
                m.clone(),
                c.extranonce_prefix.clone(),
                full_extranonce,
            )
            .expect("the pool built the same job");
        let mut message = job.get_job_message().clone();
        message.job_id = job_id;
        self.observe(&MiningOwned::NewExtendedMiningJob(message));
        self.observe(&MiningOwned::SetNewPrevHash(SetNewPrevHashOwned {
            channel_id: m.channel_id,
            job_id,
            prev_hash: m.prev_hash.clone(),
            min_ntime: m.min_ntime,
            nbits: m.nbits,
        }));
    }

    /// Waits until `channel_id` has a job and a prevhash to mine on.
    pub async fn wait_for_work(&mut self, channel_id: u32) {
        while !self.has_work(channel_id) {
            let msg = self.recv().await.expect("connection open");
            self.seen.push(msg);
        }
    }

    fn has_work(&self, channel_id: u32) -> bool {
        let Some(c) = self.channels.get(&channel_id) else {
            return false;
        };
        let Some(job) = c.active_job else {
            return false;
        };
        c.prev_hash.is_some()
            && (c.extended_jobs.contains_key(&job) || c.standard_jobs.contains_key(&job))
    }

    /// Waits for the next SetNewPrevHash of `channel_id` after `count` seen.
    pub async fn wait_for_prev_hash_count(&mut self, channel_id: u32, count: usize) {
        while self.channels[&channel_id].prev_hash_count < count || !self.has_work(channel_id) {
            let msg = self.recv().await.expect("connection open");
            self.seen.push(msg);
        }
    }

    /// The header of a share on the active job (or `job_id`).
    pub fn header(&self, channel_id: u32, job_id: u32, extranonce: &[u8], nonce: u32) -> [u8; 80] {
        let c = &self.channels[&channel_id];
        let prev = c.prev_hash.as_ref().expect("prevhash");
        let (version, merkle_root) = if c.extended {
            let job = &c.extended_jobs[&job_id];
            let mut full = c.extranonce_prefix.clone();
            full.extend_from_slice(extranonce);
            let root = merkle_root_from_path(
                job.coinbase_tx_prefix.as_bytes(),
                job.coinbase_tx_suffix.as_bytes(),
                &full,
                job.merkle_path.as_slice(),
            )
            .expect("coinbase deserializes");
            (job.version, root)
        } else {
            let job = &c.standard_jobs[&job_id];
            (job.version, job.merkle_root.to_array())
        };
        let header = Header {
            version: Version::from_consensus(version as i32),
            prev_blockhash: BlockHash::from_byte_array(prev.prev_hash.to_array()),
            merkle_root: TxMerkleNode::from_byte_array(merkle_root),
            time: prev.min_ntime,
            bits: CompactTarget::from_consensus(prev.nbits),
            nonce,
        };
        stratum_core::bitcoin::consensus::serialize(&header)
            .try_into()
            .expect("80 bytes")
    }

    /// Searches nonces on the active job for a header whose hash satisfies `accept(hash_as_target)`.
    pub fn find_share(&self, channel_id: u32, accept: impl Fn(Target) -> bool) -> FoundShare {
        let c = &self.channels[&channel_id];
        let job_id = c.active_job.expect("active job");
        let prev = c.prev_hash.as_ref().expect("prevhash");
        let version = if c.extended {
            c.extended_jobs[&job_id].version
        } else {
            c.standard_jobs[&job_id].version
        };
        // Every search starts somewhere new, so two searches never find the same share.
        let run = SEARCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut extranonce = vec![0x42u8; c.extranonce_size as usize];
        for (i, b) in run.to_le_bytes().iter().enumerate().take(extranonce.len()) {
            extranonce[i] = *b;
        }
        let start = (run as u32).wrapping_mul(0x9e37_79b9);
        // Fix the merkle root once; only the nonce changes.
        let base = self.header(channel_id, job_id, &extranonce, 0);
        let mut header = base;
        for i in 0u32.. {
            let nonce = start.wrapping_add(i);
            header[76..80].copy_from_slice(&nonce.to_le_bytes());
            let hash = sha256d(&header);
            if accept(Target::from_le_bytes(hash)) {
                return FoundShare {
                    job_id,
                    nonce,
                    ntime: prev.min_ntime,
                    version,
                    extranonce,
                    header,
                    hash,
                };
            }
        }
        unreachable!("no nonce found")
    }

    /// A share meeting the channel target (and not the network target unless `block`).
    pub fn valid_share(&self, channel_id: u32, block: bool) -> FoundShare {
        let c = &self.channels[&channel_id];
        let target = c.target();
        let network = Target::from_compact(CompactTarget::from_consensus(
            c.prev_hash.as_ref().expect("prevhash").nbits,
        ));
        self.find_share(channel_id, |h| h <= target && (h <= network) == block)
    }

    /// Sends a share; returns its sequence number.
    pub async fn submit(&mut self, channel_id: u32, share: &FoundShare) -> u32 {
        let seq = self.next_sequence;
        self.next_sequence += 1;
        self.submit_with_seq(channel_id, share, seq).await;
        seq
    }

    pub async fn submit_with_seq(&mut self, channel_id: u32, share: &FoundShare, seq: u32) {
        let extended = self
            .channels
            .get(&channel_id)
            .map(|c| c.extended)
            .unwrap_or(true);
        let msg = if extended {
            MiningOwned::SubmitSharesExtended(SubmitSharesExtendedOwned {
                channel_id,
                sequence_number: seq,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
                extranonce: B032Owned::new(share.extranonce.clone()).expect("fits"),
            })
        } else {
            MiningOwned::SubmitSharesStandard(SubmitSharesStandardOwned {
                channel_id,
                sequence_number: seq,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
            })
        };
        self.conn.send(AnyMessageOwned::Mining(msg)).await;
    }

    /// Sends `n` shares on `channel_id`'s active job with random nonces
    /// (nearly all below any target), without waiting for the answers;
    /// the last one's sequence number, or Err once the connection is gone.
    pub async fn send_junk_shares(&mut self, channel_id: u32, n: u32) -> Result<u32, String> {
        let template = self.find_share(channel_id, |_| true);
        for _ in 0..n {
            let seq = self.next_sequence;
            self.next_sequence += 1;
            let msg = MiningOwned::SubmitSharesExtended(SubmitSharesExtendedOwned {
                channel_id,
                sequence_number: seq,
                job_id: template.job_id,
                nonce: rand::random(),
                ntime: template.ntime,
                version: template.version,
                extranonce: B032Owned::new(template.extranonce.clone()).expect("fits"),
            });
            self.conn.try_send(AnyMessageOwned::Mining(msg)).await?;
        }
        Ok(self.next_sequence - 1)
    }

    /// UpdateChannel: the channel's hash rate is `nominal_hash_rate` now.
    pub async fn update_channel(&mut self, channel_id: u32, nominal_hash_rate: f32) {
        let update = stratum_core::mining_sv2::UpdateChannelOwned {
            channel_id,
            nominal_hash_rate,
            maximum_target: U256Owned::from([0xff; 32]),
        };
        self.conn
            .send(AnyMessageOwned::Mining(MiningOwned::UpdateChannel(update)))
            .await;
    }

    /// Waits for the answer to share `seq`: Ok(()) for SubmitShares.Success,
    /// Err(error_code) for SubmitShares.Error.
    /// Submits `share` and waits for the pool's answer (see [`Self::share_result`]).
    pub async fn submit_and_wait(
        &mut self,
        channel_id: u32,
        share: &FoundShare,
    ) -> Result<(), String> {
        let seq = self.submit(channel_id, share).await;
        self.share_result(channel_id, seq).await
    }

    pub async fn share_result(&mut self, channel_id: u32, seq: u32) -> Result<(), String> {
        self.wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s)))
                if s.channel_id == channel_id && s.last_sequence_number == seq =>
            {
                Some(Ok(()))
            }
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))
                if e.channel_id == channel_id && e.sequence_number == seq =>
            {
                Some(Err(error_code(&e.error_code)))
            }
            _ => None,
        })
        .await
    }

    /// Finds, submits and waits for one valid non-block share.
    pub async fn mine_one(&mut self, channel_id: u32) -> Result<FoundShare, String> {
        let share = self.valid_share(channel_id, false);
        let seq = self.submit(channel_id, &share).await;
        self.share_result(channel_id, seq).await.map(|_| share)
    }

    /// Waits until `n` MintQuoteNotifications arrived (counting those already
    /// seen) and returns them, removing them from `seen`.
    pub async fn notifications(
        &mut self,
        n: usize,
    ) -> Vec<ehash_ext_sv2::MintQuoteNotificationOwned> {
        let mut found = vec![];
        let mut rest = vec![];
        for m in std::mem::take(&mut self.seen) {
            match m {
                Incoming::Ehash(EhashMessage::MintQuoteNotification(q)) => found.push(q),
                other => rest.push(other),
            }
        }
        self.seen = rest;
        while found.len() < n {
            let q = tokio::time::timeout(
                Duration::from_secs(30),
                self.wait_for(|m| match m {
                    Incoming::Ehash(EhashMessage::MintQuoteNotification(q)) => Some(q.clone()),
                    _ => None,
                }),
            )
            .await
            .expect("notification in time");
            found.push(q);
        }
        found
    }

    /// Acknowledges notifications received on `channel_id`, as a translator
    /// does once it recorded them.
    pub async fn ack(&mut self, channel_id: u32, share_hashes: &[[u8; 32]]) {
        for ack in ehash_ext_sv2::acks(channel_id, share_hashes) {
            self.conn.send_ehash(ack).await;
        }
    }

    /// Whether any ehash message (0xC0/0xC1) was received so far.
    pub fn saw_ehash(&self) -> bool {
        self.seen.iter().any(|m| matches!(m, Incoming::Ehash(_)))
    }
}
