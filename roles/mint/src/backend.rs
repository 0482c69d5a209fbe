//! The `ehash` payment backend of the cdk mint.
//!
//! ehash quotes are paid by proof of work that the pool link has already
//! checked, and the link writes them straight into the mint's database
//! (`quote_writer`), so this backend moves no money and creates nothing.
//! Its one job is to refuse: `POST /v1/mint/quote/ehash` over the public
//! HTTP API reaches `create_incoming_payment_request`, and must fail.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use cdk::nuts::CurrencyUnit;
use cdk_common::payment::{
    CreateIncomingPaymentResponse, Error, Event, IncomingPaymentOptions, MakePaymentResponse,
    MintPayment, OutgoingPaymentOptions, PaymentIdentifier, PaymentQuoteResponse, SettingsResponse,
    WaitPaymentResponse,
};
use futures::Stream;
use roles_common::log_limit::LogLimit;

#[derive(Debug, Default)]
pub struct EhashBackend {
    /// Refusals come from anyone who can reach the HTTP API: logged at
    /// most once per interval.
    refusals: Mutex<LogLimit>,
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
        _options: IncomingPaymentOptions,
    ) -> Result<CreateIncomingPaymentResponse, Error> {
        if let Some(left_out) = roles_common::lock(&self.refusals).check(Instant::now()) {
            tracing::warn!(left_out, "refused an ehash quote request over HTTP");
        }
        Err(Error::Custom(
            "ehash quotes are created only by the authenticated pool link".to_string(),
        ))
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

    #[tokio::test]
    async fn every_quote_request_reaching_the_backend_is_refused() {
        let backend = EhashBackend::default();
        let options = IncomingPaymentOptions::Custom(Box::new(CustomIncomingPaymentOptions {
            method: "ehash".into(),
            description: None,
            amount: Some(Amount::new(64, CurrencyUnit::custom("hash"))),
            unix_expiry: None,
            extra_json: Some(r#"{"share_hash":"07"}"#.into()),
            quote_id: QuoteId::new(),
            pubkey: Some(SecretKey::generate().public_key()),
        }));
        let refused = backend.create_incoming_payment_request(options).await;
        assert!(
            matches!(&refused, Err(Error::Custom(m)) if m.contains("only by the authenticated pool link")),
            "{refused:?}"
        );
    }
}
