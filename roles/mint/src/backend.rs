//! The `ehash` payment backend of the cdk mint.
//!
//! ehash quotes are paid by proof of work that the pool link has already
//! checked, so this backend moves no money. Its job is to refuse every quote
//! the pool link did not ask for: `POST /v1/mint/quote/ehash` over the public
//! HTTP API reaches `create_incoming_payment_request` too, and must fail.
//! The link authorizes each quote with a one-time random token that never
//! leaves the process; a quote request without a live token is refused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use cdk::nuts::{CurrencyUnit, PublicKey};
use cdk_common::payment::{
    CreateIncomingPaymentResponse, Error, Event, IncomingPaymentOptions, MakePaymentResponse,
    MintPayment, OutgoingPaymentOptions, PaymentIdentifier, PaymentQuoteResponse, SettingsResponse,
    WaitPaymentResponse,
};
use futures::Stream;
use roles_common::log_limit::LogLimit;
use serde::{Deserialize, Serialize};

use crate::quote::CheckedShare;

/// What the link expects the quote to be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    share_hash: String,
    amount: u64,
    pubkey: PublicKey,
}

/// The `extra` fields of an ehash quote request, as the link sends them.
#[derive(Debug, Serialize, Deserialize)]
pub struct QuoteExtra {
    pub share_hash: String,
    pub authorization: String,
}

/// The `extra` fields stored with the quote and shown to wallets.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredExtra {
    pub share_hash: String,
}

#[derive(Debug, Default)]
pub struct EhashBackend {
    authorized: Mutex<HashMap<String, Expected>>,
    /// Refusals come from anyone who can reach the HTTP API: logged at
    /// most once per interval.
    refusals: Mutex<LogLimit>,
}

/// A live permission to create one quote. Dropping it withdraws the
/// permission, so a token outlives neither success nor failure.
pub struct Authorization {
    backend: Arc<EhashBackend>,
    token: String,
}

impl Authorization {
    /// The `extra` JSON for the cdk quote request.
    pub fn extra(&self, share: &CheckedShare) -> serde_json::Value {
        serde_json::to_value(QuoteExtra {
            share_hash: hex::encode(share.share_hash),
            authorization: self.token.clone(),
        })
        .expect("serializable")
    }
}

impl Drop for Authorization {
    fn drop(&mut self) {
        self.backend.lock().remove(&self.token);
    }
}

impl EhashBackend {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        roles_common::lock(&self.authorized)
    }

    /// Permits exactly one quote for `share`, locked to its key.
    pub fn authorize(self: &Arc<Self>, share: &CheckedShare, pubkey: PublicKey) -> Authorization {
        let token = hex::encode(rand::random::<[u8; 16]>());
        self.lock().insert(
            token.clone(),
            Expected {
                share_hash: hex::encode(share.share_hash),
                amount: share.amount,
                pubkey,
            },
        );
        Authorization {
            backend: self.clone(),
            token,
        }
    }

    fn refuse(&self, reason: &str) -> Error {
        if let Some(left_out) = roles_common::lock(&self.refusals).check(Instant::now()) {
            tracing::warn!(left_out, "refused an ehash quote request: {reason}");
        }
        Error::Custom(format!(
            "ehash quotes are created only by the authenticated pool link ({reason})"
        ))
    }
}

#[async_trait]
impl MintPayment for EhashBackend {
    type Err = Error;

    async fn get_settings(&self) -> Result<SettingsResponse, Error> {
        Ok(SettingsResponse {
            unit: ehash::constants::UNIT.to_string(),
            bolt11: None,
            bolt12: None,
            onchain: None,
            custom: HashMap::from([(
                ehash::constants::PAYMENT_METHOD.to_string(),
                "{}".to_string(),
            )]),
        })
    }

    async fn create_incoming_payment_request(
        &self,
        options: IncomingPaymentOptions,
    ) -> Result<CreateIncomingPaymentResponse, Error> {
        let IncomingPaymentOptions::Custom(options) = options else {
            return Err(Error::UnsupportedPaymentOption);
        };
        if options.method != ehash::constants::PAYMENT_METHOD {
            return Err(Error::UnsupportedPaymentOption);
        }
        let extra: QuoteExtra = options
            .extra_json
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| self.refuse("no authorization"))?;
        let expected = self
            .lock()
            .remove(&extra.authorization)
            .ok_or_else(|| self.refuse("unknown authorization"))?;
        // NUT-20 on every ehash quote, and exactly the share the link checked.
        let pubkey = options
            .pubkey
            .ok_or_else(|| self.refuse("no NUT-20 pubkey"))?;
        let amount = options.amount.as_ref().map(|a| a.value());
        if pubkey != expected.pubkey
            || amount != Some(expected.amount)
            || extra.share_hash != expected.share_hash
        {
            return Err(self.refuse("request differs from the checked share"));
        }
        Ok(CreateIncomingPaymentResponse {
            // cdk's own quote id, never a value a client chose.
            request_lookup_id: PaymentIdentifier::QuoteId(options.quote_id.clone()),
            request: format!("ehash:{}", expected.share_hash),
            expiry: None,
            extra_json: Some(
                serde_json::to_value(StoredExtra {
                    share_hash: expected.share_hash,
                })
                .expect("serializable"),
            ),
        })
    }

    async fn get_payment_quote(
        &self,
        _unit: &CurrencyUnit,
        _options: OutgoingPaymentOptions,
    ) -> Result<PaymentQuoteResponse, Error> {
        Err(Error::UnsupportedPaymentOption)
    }

    async fn make_payment(
        &self,
        _unit: &CurrencyUnit,
        _options: OutgoingPaymentOptions,
    ) -> Result<MakePaymentResponse, Error> {
        Err(Error::UnsupportedPaymentOption)
    }

    /// Payments are recorded directly by the link when the quote is
    /// created; there is no external event stream.
    async fn wait_payment_event(&self) -> Result<Pin<Box<dyn Stream<Item = Event> + Send>>, Error> {
        Ok(Box::pin(futures::stream::pending()))
    }

    fn is_payment_event_stream_active(&self) -> bool {
        false
    }

    fn cancel_payment_event_stream(&self) {}

    async fn check_incoming_payment_status(
        &self,
        _payment_identifier: &PaymentIdentifier,
    ) -> Result<Vec<WaitPaymentResponse>, Error> {
        Ok(vec![])
    }

    async fn check_outgoing_payment(
        &self,
        _payment_identifier: &PaymentIdentifier,
    ) -> Result<MakePaymentResponse, Error> {
        Err(Error::UnsupportedPaymentOption)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdk::nuts::SecretKey;
    use cdk_common::payment::CustomIncomingPaymentOptions;
    use cdk_common::{Amount, QuoteId};

    fn share(amount: u64) -> (CheckedShare, PublicKey) {
        let secret = SecretKey::generate();
        let pubkey = secret.public_key();
        let share = CheckedShare {
            share_hash: [7; 32],
            amount,
            locking_key: ehash::LockingKey::from_bytes(&pubkey.to_bytes()).unwrap(),
            header: [0; 80],
            target: stratum_core::bitcoin::pow::Target::MAX,
            proof: Default::default(),
        };
        (share, pubkey)
    }

    fn options(
        extra: Option<serde_json::Value>,
        amount: u64,
        pubkey: Option<PublicKey>,
    ) -> (IncomingPaymentOptions, QuoteId) {
        let quote_id = QuoteId::new();
        let options = IncomingPaymentOptions::Custom(Box::new(CustomIncomingPaymentOptions {
            method: "ehash".into(),
            description: None,
            amount: Some(Amount::new(amount, CurrencyUnit::custom("hash"))),
            unix_expiry: None,
            extra_json: extra.map(|e| e.to_string()),
            quote_id: quote_id.clone(),
            pubkey,
        }));
        (options, quote_id)
    }

    #[tokio::test]
    async fn an_authorized_quote_is_created_once_with_cdks_quote_id_as_lookup_id() {
        let backend = EhashBackend::new();
        let (share, pubkey) = share(64);
        let auth = backend.authorize(&share, pubkey);
        let (opts, quote_id) = options(Some(auth.extra(&share)), 64, Some(pubkey));
        let created = backend.create_incoming_payment_request(opts).await.unwrap();
        assert_eq!(
            created.request_lookup_id,
            PaymentIdentifier::QuoteId(quote_id)
        );
        assert_eq!(created.request, format!("ehash:{}", "07".repeat(32)));
        assert_eq!(created.extra_json.unwrap()["share_hash"], "07".repeat(32));

        // The token is spent: the same request again is refused.
        let (opts, _) = options(Some(auth.extra(&share)), 64, Some(pubkey));
        assert!(backend.create_incoming_payment_request(opts).await.is_err());
    }

    #[tokio::test]
    async fn anything_but_the_authorized_share_is_refused() {
        let backend = EhashBackend::new();
        let (share, pubkey) = share(64);
        let (_, other_key) = self::share(1);

        for (extra, amount, key) in [
            (None, 64, Some(pubkey)),
            (
                Some(serde_json::json!({"share_hash": "07".repeat(32), "authorization": "guess"})),
                64,
                Some(pubkey),
            ),
        ] {
            let _auth = backend.authorize(&share, pubkey);
            let (opts, _) = options(extra, amount, key);
            assert!(backend.create_incoming_payment_request(opts).await.is_err());
        }
        for (amount, key) in [(65, Some(pubkey)), (64, Some(other_key)), (64, None)] {
            let auth = backend.authorize(&share, pubkey);
            let (opts, _) = options(Some(auth.extra(&share)), amount, key);
            assert!(backend.create_incoming_payment_request(opts).await.is_err());
        }
    }

    #[tokio::test]
    async fn a_dropped_authorization_is_withdrawn() {
        let backend = EhashBackend::new();
        let (share, pubkey) = share(64);
        let extra = {
            let auth = backend.authorize(&share, pubkey);
            auth.extra(&share)
        };
        let (opts, _) = options(Some(extra), 64, Some(pubkey));
        assert!(backend.create_incoming_payment_request(opts).await.is_err());
        assert!(backend.lock().is_empty());
    }
}
