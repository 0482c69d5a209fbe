use cdk::nuts::SecretKey;

use super::*;
use crate::config::MintConfig;

async fn mint() -> Arc<Mint> {
    let config = MintConfig {
        database: ":memory:".into(),
        chain: None,
        ..roles_common::testing::load_shipped("mint.toml")
    };
    let db = crate::open_database(&config).await.unwrap();
    Arc::new(crate::build_mint(&config, db).await.unwrap())
}

fn share(amount: u64) -> ShareToQuote {
    let pubkey = SecretKey::generate().public_key();
    ShareToQuote {
        share_hex: hex::encode(rand::random::<[u8; 32]>()),
        amount,
        pubkey,
        locking_key: LockingKey::from_bytes(&pubkey.to_bytes()).unwrap(),
        audit_entry: b"{}".to_vec(),
    }
}

async fn stored(mint: &Mint, quote_id: &QuoteId) -> MintQuote {
    mint.localstore()
        .get_mint_quote(quote_id)
        .await
        .unwrap()
        .expect("the quote is stored")
}

async fn quote_all(
    writer: &Arc<QuoteWriter>,
    shares: &[ShareToQuote],
) -> Vec<Result<QuoteId, Rejection>> {
    let tasks: Vec<_> = shares
        .iter()
        .map(|share| {
            let (writer, share) = (writer.clone(), share.clone());
            tokio::spawn(async move { writer.quote(share).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Quotes `shares` at once, all queued while the writer is held, so they
/// reach it together.
async fn quote_together(
    writer: &Arc<QuoteWriter>,
    shares: &[ShareToQuote],
) -> Vec<Result<QuoteId, Rejection>> {
    let mut queued = None;
    writer
        .while_idle(async {
            queued = Some(tokio::spawn({
                let (writer, shares) = (writer.clone(), shares.to_vec());
                async move { quote_all(&writer, &shares).await }
            }));
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        })
        .await;
    queued.expect("spawned").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_waiting_together_are_written_in_one_group_each_quoted_and_paid_once() {
    let mint = mint().await;
    let writer = Arc::new(QuoteWriter::start(mint.clone()));
    let shares: Vec<_> = (1..=300).map(share).collect();

    // Everything queues while the writer is held, then goes in few groups.
    let answers = quote_together(&writer, &shares).await;
    assert!(
        writer.groups_written() <= 3,
        "{} groups for 300 waiting shares",
        writer.groups_written()
    );

    let mut ids = std::collections::HashSet::new();
    for (share, answer) in shares.iter().zip(&answers) {
        let quote_id = answer.clone().expect("quoted");
        assert!(ids.insert(quote_id.clone()), "a quote id given twice");
        let quote = stored(&mint, &quote_id).await;
        assert_eq!(quote.amount_paid().value(), share.amount);
        assert_eq!(quote.pubkey, Some(share.pubkey));
        assert_eq!(quote.request, format!("ehash:{}", share.share_hex));
        assert_eq!(
            writer.indexed_quote(&share.share_hex).await.unwrap(),
            Some(quote_id)
        );
    }

    // The same shares again, in other groups: the same quotes, paid once.
    let again = quote_all(&writer, &shares).await;
    assert_eq!(again, answers);
    for (share, answer) in shares.iter().zip(&answers) {
        let quote = stored(&mint, answer.as_ref().unwrap()).await;
        assert_eq!(quote.amount_paid().value(), share.amount);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_share_twice_in_one_group_gets_one_quote() {
    let mint = mint().await;
    let writer = Arc::new(QuoteWriter::start(mint.clone()));
    let one = share(5);
    let answers = quote_together(&writer, &vec![one.clone(); 4]).await;
    let first = answers[0].clone().unwrap();
    assert!(
        answers.iter().all(|a| a.as_ref() == Ok(&first)),
        "{answers:?}"
    );
    assert_eq!(stored(&mint, &first).await.amount_paid().value(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_that_cannot_be_written_fails_alone_and_its_group_is_quoted() {
    let mint = mint().await;
    let writer = Arc::new(QuoteWriter::start(mint.clone()));
    // A share quoted at 7, then claimed at 8: its quote shows 7 paid.
    let quoted = share(7);
    writer.quote(quoted.clone()).await.unwrap();
    let mut group: Vec<_> = (1..=20).map(share).collect();
    group.insert(
        10,
        ShareToQuote {
            amount: 8,
            ..quoted
        },
    );

    let answers = quote_together(&writer, &group).await;
    for (i, answer) in answers.iter().enumerate() {
        if i == 10 {
            let rejection = answer.as_ref().unwrap_err();
            assert_eq!(rejection.code, mint_quote_sv2::error_code::MINT_ERROR);
            assert!(
                rejection.message.contains("7 paid, expected 8"),
                "{rejection}"
            );
        } else {
            let quote = stored(&mint, answer.as_ref().unwrap()).await;
            assert_eq!(quote.amount_paid().value(), group[i].amount);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_created_but_never_indexed_is_found_indexed_and_paid() {
    let mint = mint().await;
    let writer = QuoteWriter::start(mint.clone());
    let orphan = share(3);
    // As an older mint left it: created by its request, never indexed.
    let quote_id = QuoteId::new();
    let unit = CurrencyUnit::custom(ehash::constants::UNIT);
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    tx.add_mint_quote(MintQuote::new(
        Some(quote_id.clone()),
        format!("ehash:{}", orphan.share_hex),
        unit.clone(),
        Some(Amount::new(3, unit.clone())),
        0,
        PaymentIdentifier::QuoteId(quote_id.clone()),
        Some(orphan.pubkey),
        Amount::new(0, unit.clone()),
        Amount::new(0, unit),
        PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into()),
        0,
        0,
        vec![],
        vec![],
        None,
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(writer.quote(orphan.clone()).await.unwrap(), quote_id);
    assert_eq!(stored(&mint, &quote_id).await.amount_paid().value(), 3);
    assert_eq!(
        writer.indexed_quote(&orphan.share_hex).await.unwrap(),
        Some(quote_id)
    );
}
