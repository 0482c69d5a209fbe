//! A channel with no share accepted over the idle checks' whole periods is
//! closed by the pool, and its place goes to the next channel; an accepted
//! share starts the count over, a refused one does not.

use super::*;

const IDLE: IdleChannels = IdleChannels {
    check_secs: 60,
    checks: 10,
};

fn core_closing_idle_channels(max_channels: u32) -> PoolCore {
    PoolCore::new(CoreConfig {
        idle_channels: Some(IDLE),
        max_channels,
        ..config()
    })
    .unwrap()
}

/// Idle checks that close nothing.
fn quiet_checks(core: &mut PoolCore, n: u32) {
    for _ in 0..n {
        assert!(core.on_idle_tick().is_empty());
    }
}

/// The channels an idle check closed, as the downstream is told.
fn closed_by(actions: &[Action]) -> Vec<(ConnId, u32, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(conn, AnyMessageOwned::Mining(MiningOwned::CloseChannel(c))) => Some((
                *conn,
                c.channel_id,
                String::from_utf8_lossy(c.reason_code.as_bytes()).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

fn open_error_code(actions: &[Action]) -> Option<String> {
    actions.iter().find_map(|a| match a {
        Action::Send(_, AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(e))) => {
            Some(String::from_utf8_lossy(e.error_code.as_bytes()).into_owned())
        }
        _ => None,
    })
}

#[test]
fn a_timeout_is_checked_every_tenth_of_it_and_never_cut_short() {
    assert_eq!(IdleChannels::for_timeout(0), None);
    assert_eq!(IdleChannels::for_timeout(600), Some(IDLE));
    let short = IdleChannels::for_timeout(3).unwrap();
    assert_eq!((short.check_secs, short.checks), (1, 3));
    let odd = IdleChannels::for_timeout(605).unwrap();
    assert_eq!((odd.check_secs, odd.checks), (60, 11));
    assert!(odd.timeout_secs() >= 605);
}

#[test]
fn a_channel_with_no_accepted_share_is_closed_at_the_timeout_and_its_place_freed() {
    let mut core = core_closing_idle_channels(1);
    let (channel_id, _, _) = open_on_tip(&mut core, NEVER);
    // Every place is taken.
    let refused = on_message(&mut core, 1, open_extended(&format!("{KEY}.late")));
    assert_eq!(
        open_error_code(&refused).as_deref(),
        Some("channel-capacity-exhausted")
    );

    // The first check comes part of a period after the open: it does not count.
    quiet_checks(&mut core, IDLE.checks);
    let actions = core.on_idle_tick();
    assert_eq!(
        closed_by(&actions),
        vec![(1, channel_id, "idle-channel".to_string())]
    );
    assert_eq!(
        stats_events(&actions),
        vec![StatsEvent::ChannelClosed {
            conn: 1,
            channel_id
        }]
    );
    assert_eq!(core.stats().channels_open, 0);

    // Its place is free again.
    let (reopened, _, _) = open_with_event(&mut core);
    assert_ne!(reopened, channel_id);
}

#[test]
fn an_accepted_share_starts_the_count_over_and_a_refused_one_does_not() {
    let mut core = core_closing_idle_channels(10);
    let (mining, job, target) = open_on_tip(&mut core, NEVER);
    let (refused_only, _, other_job) = open_with_event(&mut core);
    quiet_checks(&mut core, IDLE.checks / 2);

    let (good, _) = share(&core, mining, &job, |h| h <= target);
    accepted(&mut core, MiningOwned::SubmitSharesExtended(good));
    let (bad, _) = share(&core, refused_only, &other_job, |h| h > target);
    let answer = on_message(
        &mut core,
        1,
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(bad)),
    );
    assert!(
        matches!(
            &answer[..],
            [Action::Send(
                _,
                AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(_))
            )]
        ),
        "{answer:?}"
    );

    quiet_checks(&mut core, IDLE.checks - IDLE.checks / 2);
    assert_eq!(
        closed_by(&core.on_idle_tick()),
        vec![(1, refused_only, "idle-channel".to_string())]
    );
    quiet_checks(&mut core, IDLE.checks / 2 - 1);
    assert_eq!(
        closed_by(&core.on_idle_tick()),
        vec![(1, mining, "idle-channel".to_string())]
    );
    assert_eq!(core.stats().channels_open, 0);
}

#[test]
fn without_a_timeout_no_channel_is_closed_for_idleness() {
    let mut core = core();
    open_on_tip(&mut core, NEVER);
    quiet_checks(&mut core, 100_000);
    assert_eq!(core.stats().channels_open, 1);
}
