//! Work from `mining.notify`: the job, its 80-byte header, the nonce scan
//! and finding a share.

use std::ops::{Deref, DerefMut};

use serde_json::Value;
use stratum_core::bitcoin::hashes::{sha256, sha256d, Hash, HashEngine};

use super::{bad, hex_param, str_param, u32_param, ParseError, Share};
use crate::difficulty::target_from_difficulty;

/// A job as `mining.notify` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: String,
    /// The previous block hash as SV1 sends it (every 4-byte word swapped).
    pub prevhash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub merkle_branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

fn hash32(bytes: Vec<u8>, name: &str) -> Result<[u8; 32], ParseError> {
    bytes
        .try_into()
        .map_err(|_| bad(format!("{name} is not 32 bytes")))
}

impl Job {
    /// Parses `mining.notify` params.
    pub fn from_params(p: &Value) -> Result<Job, ParseError> {
        let branch = p
            .get(4)
            .and_then(Value::as_array)
            .ok_or_else(|| bad("merkle branch missing"))?
            .iter()
            .map(|h| {
                let b = h
                    .as_str()
                    .and_then(|s| hex::decode(s).ok())
                    .ok_or_else(|| bad("merkle branch entry is not hex"))?;
                hash32(b, "merkle branch entry")
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Job {
            job_id: str_param(p, 0, "job id")?.to_string(),
            prevhash: hash32(hex_param(p, 1, "prevhash")?, "prevhash")?,
            coinb1: hex_param(p, 2, "coinb1")?,
            coinb2: hex_param(p, 3, "coinb2")?,
            merkle_branch: branch,
            version: u32_param(p, 5, "version")?,
            nbits: u32_param(p, 6, "nbits")?,
            ntime: u32_param(p, 7, "ntime")?,
            clean: p.get(8).and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The merkle root of the coinbase built with these extranonces.
    pub fn merkle_root(&self, extranonce1: &[u8], extranonce2: &[u8]) -> [u8; 32] {
        let mut coinbase = Vec::with_capacity(
            self.coinb1.len() + extranonce1.len() + extranonce2.len() + self.coinb2.len(),
        );
        coinbase.extend_from_slice(&self.coinb1);
        coinbase.extend_from_slice(extranonce1);
        coinbase.extend_from_slice(extranonce2);
        coinbase.extend_from_slice(&self.coinb2);
        let mut root = sha256d::Hash::hash(&coinbase).to_byte_array();
        for node in &self.merkle_branch {
            let mut cat = [0u8; 64];
            cat[..32].copy_from_slice(&root);
            cat[32..].copy_from_slice(node);
            root = sha256d::Hash::hash(&cat).to_byte_array();
        }
        root
    }

    /// The 80-byte block header.
    pub fn header(
        &self,
        extranonce1: &[u8],
        extranonce2: &[u8],
        ntime: u32,
        nonce: u32,
        version: u32,
    ) -> [u8; 80] {
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        for (dst, src) in h[4..36].chunks_mut(4).zip(self.prevhash.chunks(4)) {
            dst.copy_from_slice(src);
            dst.reverse();
        }
        h[36..68].copy_from_slice(&self.merkle_root(extranonce1, extranonce2));
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.nbits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// Tries nonces from 0 up, at the job's ntime, until the header's
    /// big-endian hash satisfies `accept`. `rolled` is (mask, bits): the
    /// version bits under `mask` are replaced by `bits`.
    pub fn find_share(
        &self,
        extranonce1: &[u8],
        extranonce2: Vec<u8>,
        rolled: Option<(u32, u32)>,
        accept: impl Fn(&[u8; 32]) -> bool,
    ) -> Option<Found> {
        let (version, version_bits) = match rolled {
            Some((mask, bits)) => ((self.version & !mask) | (bits & mask), Some(bits & mask)),
            None => (self.version, None),
        };
        let mut header = self.header(extranonce1, &extranonce2, self.ntime, 0, version);
        let (found, _) = scan_with(&header, 0, u32::MAX, accept);
        let (nonce, mut hash) = found?;
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        hash.reverse();
        Some(Found {
            share: Share {
                job_id: self.job_id.clone(),
                extranonce2,
                ntime: self.ntime,
                nonce,
                version_bits,
            },
            header,
            hash,
        })
    }
}

/// A share found on a job, with the header it commits to and that header's
/// hash; it reads as the [`Share`] to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub share: Share,
    pub header: [u8; 80],
    /// sha256d of the header, little-endian (SV2 order).
    pub hash: [u8; 32],
}

impl Deref for Found {
    type Target = Share;
    fn deref(&self) -> &Share {
        &self.share
    }
}

impl DerefMut for Found {
    fn deref_mut(&mut self) -> &mut Share {
        &mut self.share
    }
}

/// Finds a share on `job` whose hash satisfies `accept(hash_be, target_be)`
/// for the target of `difficulty` (a test may want one that misses it).
/// `run` numbers the search so that successive runs find different shares:
/// it is the extranonce2, and with a version mask every even run rolls one
/// bit under the mask.
pub fn search(
    job: &Job,
    extranonce1: &[u8],
    extranonce2_size: usize,
    difficulty: f64,
    version_mask: Option<u32>,
    run: u64,
    accept: impl Fn(&[u8; 32], &[u8; 32]) -> bool,
) -> Found {
    let target = target_from_difficulty(difficulty);
    let rolled = version_mask
        .filter(|_| run & 1 == 0)
        .map(|mask| (mask, 0x0000_2000u32 << (run % 8)));
    job.find_share(
        extranonce1,
        extranonce2(run, extranonce2_size),
        rolled,
        |hash| accept(hash, &target),
    )
    .expect("some nonce is accepted")
}

/// sha256d of a header, big-endian (the order targets are compared in).
pub fn header_hash_be(header: &[u8; 80]) -> [u8; 32] {
    let mut h = sha256d::Hash::hash(header).to_byte_array();
    h.reverse();
    h
}

/// Whether a big-endian hash meets a big-endian target.
pub fn meets(hash_be: &[u8; 32], target_be: &[u8; 32]) -> bool {
    hash_be <= target_be
}

/// Scans nonces `start..end` of `header` (nonce bytes ignored) for a hash
/// meeting `target`; returns the first nonce found and how many hashes were done.
/// Hashes the first 64 bytes once (midstate).
pub fn scan(
    header: &[u8; 80],
    start: u32,
    end: u32,
    target_be: &[u8; 32],
) -> (Option<(u32, [u8; 32])>, u64) {
    // quick reject: the most significant byte of the BE hash is hash[31]
    scan_by(header, start, end, |hash_le| {
        hash_le[31] <= target_be[0] && meets(&reversed(hash_le), target_be)
    })
}

/// Like [`scan`], for the first big-endian hash `accept` takes.
pub fn scan_with(
    header: &[u8; 80],
    start: u32,
    end: u32,
    accept: impl Fn(&[u8; 32]) -> bool,
) -> (Option<(u32, [u8; 32])>, u64) {
    scan_by(header, start, end, |hash_le| accept(&reversed(hash_le)))
}

fn reversed(hash: &[u8; 32]) -> [u8; 32] {
    let mut h = *hash;
    h.reverse();
    h
}

/// The scan loop; `accept` sees each hash little-endian (as sha256d gives it).
fn scan_by(
    header: &[u8; 80],
    start: u32,
    end: u32,
    accept: impl Fn(&[u8; 32]) -> bool,
) -> (Option<(u32, [u8; 32])>, u64) {
    let mut mid = sha256::Hash::engine();
    mid.input(&header[..64]);
    let mut tail = [0u8; 16];
    tail.copy_from_slice(&header[64..80]);
    let mut nonce = start;
    while nonce < end {
        tail[12..16].copy_from_slice(&nonce.to_le_bytes());
        let mut e = mid.clone();
        e.input(&tail);
        let first = sha256::Hash::from_engine(e);
        let hash = sha256::Hash::hash(first.as_byte_array()).to_byte_array();
        if accept(&hash) {
            return (Some((nonce, reversed(&hash))), u64::from(nonce - start) + 1);
        }
        nonce += 1;
    }
    (None, u64::from(end - start))
}

/// `n` as an extranonce2 of `size` bytes (little-endian counter, zero padded).
pub fn extranonce2(n: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    for (d, s) in v.iter_mut().zip(n.to_le_bytes()) {
        *d = s;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bitcoin block 125552, the classic worked example of the header hash.
    #[test]
    fn known_block_header_hashes_to_its_block_hash() {
        let header: [u8; 80] = hex::decode(
            "01000000\
             81cd02ab7e569e8bcd9317e2fe99f2de44d49ab2b8851ba4a308000000000000\
             e320b6c2fffc8d750423db8b1eb942ae710e951ed797f7affc8892b0f1fc122b\
             c7f5d74d\
             f2b9441a\
             42a14695",
        )
        .unwrap()
        .try_into()
        .unwrap();
        assert_eq!(
            hex::encode(header_hash_be(&header)),
            "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d"
        );
        // the scan finds the same nonce with the block's own target
        let target = target_from_difficulty(244112.49);
        let nonce = 0x9546a142;
        let (found, hashes) = scan(&header, nonce - 10, nonce + 10, &target);
        assert_eq!(found.map(|(n, _)| n), Some(nonce));
        assert_eq!(hashes, 11);
        assert_eq!(found.unwrap().1, header_hash_be(&header));
    }

    fn job() -> Job {
        Job {
            job_id: "2a".into(),
            prevhash: [7; 32],
            coinb1: vec![1, 2, 3],
            coinb2: vec![4, 5],
            merkle_branch: vec![[0x11; 32]],
            version: 0x2000_0000,
            nbits: 0x207f_ffff,
            ntime: 0x6000_0000,
            clean: true,
        }
    }

    #[test]
    fn a_found_share_is_the_header_it_claims() {
        let job = job();
        let target = target_from_difficulty(1.0 / 1_048_576.0);
        let found = job
            .find_share(&[0xaa], vec![1, 0], Some((0x1fff_e000, 0xffff_ffff)), |h| {
                meets(h, &target)
            })
            .unwrap();
        assert_eq!(found.version_bits, Some(0x1fff_e000));
        let header = job.header(&[0xaa], &[1, 0], job.ntime, found.nonce, 0x3fff_e000);
        assert_eq!(found.header, header);
        let mut hash = header_hash_be(&header);
        assert!(meets(&hash, &target));
        hash.reverse();
        assert_eq!(found.hash, hash);
        // scan_with and the midstate scan agree
        let (scanned, _) = scan(
            &job.header(&[0xaa], &[1, 0], job.ntime, 0, 0x3fff_e000),
            0,
            u32::MAX,
            &target,
        );
        assert_eq!(scanned.map(|(n, _)| n), Some(found.nonce));
    }

    #[test]
    fn successive_searches_differ_and_can_miss_the_target() {
        let job = job();
        let d = 1.0 / 1_048_576.0;
        let a = search(&job, &[0xaa], 4, d, Some(0x1fff_e000), 2, |h, t| h <= t);
        let b = search(&job, &[0xaa], 4, d, Some(0x1fff_e000), 3, |h, t| h <= t);
        assert_eq!(a.extranonce2, [2, 0, 0, 0]);
        assert_eq!(a.version_bits, Some(0x0000_8000));
        assert_eq!(
            (b.extranonce2.as_slice(), b.version_bits),
            (&[3, 0, 0, 0][..], None)
        );
        let weak = search(&job, &[0xaa], 4, d, None, 4, |h, t| h > t);
        let mut be = weak.hash;
        be.reverse();
        assert!(!meets(&be, &target_from_difficulty(d)));
    }
}
