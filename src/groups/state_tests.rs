//! Rebalances step by step with a fake clock.

use super::*;

const LIMITS: GroupLimits = GroupLimits {
    min_session_timeout_ms: 1_000,
    max_session_timeout_ms: 60_000,
    initial_rebalance_delay_ms: 300,
    max_size: 4,
};

fn args(member_id: &str, protocols: &[&str]) -> JoinArgs {
    JoinArgs {
        member_id: member_id.to_string(),
        instance_id: None,
        client_id: "c".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 5_000,
        protocol_type: "consumer".to_string(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
    }
}

fn join_result(replies: &[Reply], waiter: Waiter) -> Option<JoinResult> {
    replies.iter().find_map(|r| match r {
        Reply::Join(w, j) if *w == waiter => Some(j.clone()),
        _ => None,
    })
}

fn sync_result(replies: &[Reply], waiter: Waiter) -> Option<SyncResult> {
    replies.iter().find_map(|r| match r {
        Reply::Sync(w, s) if *w == waiter => Some(s.clone()),
        _ => None,
    })
}

/// A new member's first join: MEMBER_ID_REQUIRED with its id, then the real join.
fn first_join(
    group: &mut Group,
    now: Millis,
    waiter: Waiter,
    protocols: &[&str],
) -> (String, Vec<Reply>) {
    let replies = group.join(now, args("", protocols), waiter);
    let r = join_result(&replies, waiter).expect("immediate answer");
    assert_eq!(r.error, Some(GroupError::MemberIdRequired));
    let id = r.member_id;
    let replies = group.join(now, args(&id, protocols), waiter + 1000);
    (id, replies)
}

/// Brings a two-member group to Stable; returns (leader, follower).
fn stable_pair(group: &mut Group) -> (String, String) {
    let (a, r1) = first_join(group, 0, 1, &["range"]);
    assert!(
        r1.is_empty(),
        "the initial rebalance waits for more members"
    );
    let (b, r2) = first_join(group, 100, 2, &["range"]);
    assert!(r2.is_empty());
    let replies = group.tick(400);
    let ja = join_result(&replies, 1001).expect("a joined");
    let jb = join_result(&replies, 1002).expect("b joined");
    assert_eq!((ja.generation, jb.generation), (1, 1));
    assert_eq!(ja.leader, jb.leader);
    let (leader, follower) = if ja.leader == a { (a, b) } else { (b, a) };
    let leader_join = if ja.member_id == leader { &ja } else { &jb };
    assert_eq!(
        leader_join.members.len(),
        2,
        "the leader learns every member"
    );
    let follower_join = if ja.member_id == follower { &ja } else { &jb };
    assert!(follower_join.members.is_empty());
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));

    // The follower's sync waits for the leader's assignment.
    assert!(group.sync(410, &follower, 1, vec![], 21).is_empty());
    let replies = group.sync(
        420,
        &leader,
        1,
        vec![
            (leader.clone(), Bytes::from("L")),
            (follower.clone(), Bytes::from("F")),
        ],
        22,
    );
    assert_eq!(
        sync_result(&replies, 21).expect("follower").assignment,
        Bytes::from("F")
    );
    assert_eq!(
        sync_result(&replies, 22).expect("leader").assignment,
        Bytes::from("L")
    );
    assert_eq!(group.state(), GroupState::Stable);
    (leader, follower)
}

#[test]
fn two_members_join_sync_and_become_stable() {
    let mut group = Group::new("g", LIMITS);
    let (leader, follower) = stable_pair(&mut group);
    assert_eq!(group.heartbeat(500, &leader, 1), Ok(()));
    assert_eq!(group.heartbeat(500, &follower, 1), Ok(()));
    assert_eq!(
        group.heartbeat(500, &follower, 0),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        group.heartbeat(500, "nobody", 1),
        Err(GroupError::UnknownMemberId)
    );
    // A sync in a stable group returns the current assignment.
    let replies = group.sync(600, &follower, 1, vec![], 30);
    assert_eq!(
        sync_result(&replies, 30).expect("sync").assignment,
        Bytes::from("F")
    );
}

#[test]
fn a_silent_member_expires_and_the_survivor_rebalances() {
    let mut group = Group::new("g", LIMITS);
    let (leader, follower) = stable_pair(&mut group);
    // Only the leader keeps heart-beating.
    for t in (1_000..=10_000).step_by(1_000) {
        assert_eq!(group.heartbeat(t, &leader, 1), Ok(()));
        assert!(group.tick(t).is_empty());
    }
    group.tick(10_500);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat(10_600, &leader, 1),
        Err(GroupError::RebalanceInProgress)
    );
    let replies = group.join(10_700, args(&leader, &["range"]), 40);
    let j = join_result(&replies, 40).expect("the only member completes the rebalance at once");
    assert_eq!(j.generation, 2);
    assert_eq!(j.members.len(), 1);
    assert!(!group.members().any(|m| m.id == follower));
}

#[test]
fn members_that_miss_the_rebalance_deadline_are_dropped() {
    let mut group = Group::new("g", LIMITS);
    let (leader, follower) = stable_pair(&mut group);
    // A third member arrives; only the leader rejoins.
    let (_c, _) = first_join(&mut group, 1_000, 3, &["range"]);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert!(group.join(1_100, args(&leader, &["range"]), 50).is_empty());
    assert!(group.tick(5_000).is_empty(), "deadline not reached");
    let replies = group.tick(6_001);
    let j = join_result(&replies, 50).expect("leader");
    assert_eq!(j.generation, 2);
    assert_eq!(
        j.members.len(),
        2,
        "leader and the newcomer; the follower missed it"
    );
    assert!(!group.members().any(|m| m.id == follower));
}

#[test]
fn leaving_rebalances_and_the_last_leave_empties_the_group() {
    let mut group = Group::new("g", LIMITS);
    let (leader, follower) = stable_pair(&mut group);
    let (results, _) = group.leave(1_000, std::slice::from_ref(&follower));
    assert_eq!(results, vec![Ok(())]);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    let replies = group.join(1_100, args(&leader, &["range"]), 60);
    assert_eq!(join_result(&replies, 60).expect("rejoin").generation, 2);
    let (results, _) = group.leave(1_200, &[leader, "ghost".to_string()]);
    assert_eq!(results, vec![Ok(()), Err(GroupError::UnknownMemberId)]);
    assert_eq!(group.state(), GroupState::Empty);
    assert!(group.is_empty());
}

#[test]
fn a_static_member_returns_without_a_rebalance() {
    let mut group = Group::new("g", LIMITS);
    let mut a = args("", &["range"]);
    a.instance_id = Some("door-lock-1".to_string());
    let replies = group.join(0, a.clone(), 1);
    assert!(replies.is_empty(), "static members skip MEMBER_ID_REQUIRED");
    let (b, _) = first_join(&mut group, 10, 2, &["range"]);
    let replies = group.tick(400);
    let ja = join_result(&replies, 1).expect("a");
    let leader = ja.leader.clone();
    let assignments = group
        .members()
        .map(|m| (m.id.clone(), Bytes::from(m.id.clone())))
        .collect();
    group.sync(410, &leader, 1, assignments, 3);
    let follower = if leader == b {
        ja.member_id.clone()
    } else {
        b.clone()
    };
    group.sync(410, &follower, 1, vec![], 4);
    assert_eq!(group.state(), GroupState::Stable);
    let old_a = ja.member_id.clone();

    // "door-lock-1" restarts: same instance id, no member id.
    let replies = group.join(2_000, a, 5);
    let again = join_result(&replies, 5).expect("answered at once");
    assert_eq!(again.error, None);
    assert_eq!(again.generation, 1, "no new generation");
    assert_ne!(again.member_id, old_a);
    assert_eq!(group.state(), GroupState::Stable);
    let replies = group.sync(2_010, &again.member_id, 1, vec![], 6);
    assert_eq!(
        sync_result(&replies, 6).expect("sync").assignment,
        Bytes::from(old_a.clone()),
        "old assignment kept"
    );
    // The others keep going undisturbed; the old id is gone.
    let other = group
        .members()
        .find(|m| m.id != again.member_id)
        .map(|m| m.id.clone())
        .expect("other");
    assert_eq!(group.heartbeat(2_020, &other, 1), Ok(()));
    assert_eq!(
        group.heartbeat(2_020, &old_a, 1),
        Err(GroupError::UnknownMemberId)
    );
    // The replaced consumer still names its instance id: it is fenced, not "unknown",
    // so that it stops instead of rejoining (librdkafka 0102_static_group_rebalance).
    assert_eq!(
        group.check_instance(&old_a, Some("door-lock-1")),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        group.check_instance(&again.member_id, Some("door-lock-1")),
        Ok(())
    );
    let mut stale = args(&old_a, &["range"]);
    stale.instance_id = Some("door-lock-1".to_string());
    let replies = group.join(2_030, stale, 7);
    assert_eq!(
        join_result(&replies, 7).expect("answered").error,
        Some(GroupError::FencedInstanceId)
    );
}

#[test]
fn a_join_that_replaces_a_waiting_join_answers_the_waiting_one() {
    let mut group = Group::new("g", LIMITS);
    let (a, replies) = first_join(&mut group, 0, 1, &["range"]);
    assert!(replies.is_empty(), "parked until the initial delay passes");
    // The same member joins again before the first join was answered.
    let replies = group.join(50, args(&a, &["range"]), 2);
    assert_eq!(
        join_result(&replies, 1001)
            .expect("the first join is answered")
            .error,
        Some(GroupError::RebalanceInProgress)
    );
    let replies = group.tick(400);
    assert_eq!(join_result(&replies, 2).expect("second").error, None);
}

#[test]
fn a_group_holds_at_most_max_size_members() {
    let mut group = Group::new("g", LIMITS);
    for w in 0..4 {
        first_join(&mut group, 0, w, &["range"]);
    }
    let replies = group.join(0, args("", &["range"]), 99);
    assert_eq!(
        join_result(&replies, 99).expect("refused").error,
        Some(GroupError::GroupMaxSizeReached)
    );
}

#[test]
fn protocol_selection_and_mismatches() {
    let mut group = Group::new("g", LIMITS);
    first_join(&mut group, 0, 1, &["range", "roundrobin"]);
    first_join(&mut group, 0, 2, &["roundrobin", "range"]);
    first_join(&mut group, 0, 3, &["roundrobin", "cooperative-sticky"]);
    let replies = group.join(0, args("", &["sticky"]), 4);
    let r = join_result(&replies, 4).expect("rejected at once");
    assert_eq!(r.error, Some(GroupError::InconsistentGroupProtocol));
    let replies = group.tick(400);
    let j = join_result(&replies, 1001).expect("joined");
    assert_eq!(j.protocol_name.as_deref(), Some("roundrobin"));

    let mut bad = args("", &["range"]);
    bad.session_timeout_ms = 10;
    let replies = Group::new("h", LIMITS).join(0, bad, 9);
    assert_eq!(
        join_result(&replies, 9).expect("answer").error,
        Some(GroupError::InvalidSessionTimeout)
    );
}

#[test]
fn sync_and_commit_checks() {
    let mut group = Group::new("g", LIMITS);
    assert_eq!(
        group.check_commit("", -1),
        Ok(()),
        "simple consumers commit to an empty group"
    );
    let (leader, follower) = stable_pair(&mut group);
    assert_eq!(group.check_commit("", -1), Err(GroupError::UnknownMemberId));
    assert_eq!(group.check_commit(&leader, 1), Ok(()));
    assert_eq!(
        group.check_commit(&leader, 0),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        group.check_commit("ghost", 1),
        Err(GroupError::UnknownMemberId)
    );
    let replies = group.sync(500, &leader, 7, vec![], 70);
    assert_eq!(
        sync_result(&replies, 70).expect("sync").error,
        Some(GroupError::IllegalGeneration)
    );
    let replies = group.sync(500, "ghost", 1, vec![], 71);
    assert_eq!(
        sync_result(&replies, 71).expect("sync").error,
        Some(GroupError::UnknownMemberId)
    );
    let (newcomer, _) = first_join(&mut group, 600, 8, &["range"]);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.check_commit(&leader, 1),
        Ok(()),
        "as in Kafka, members keep committing what they processed while the others rejoin"
    );
    group.join(700, args(&leader, &["range"]), 80);
    let replies = group.join(700, args(&follower, &["range"]), 81);
    assert!(
        join_result(&replies, 81).is_some(),
        "{replies:?} {newcomer}"
    );
    assert_eq!(group.state(), GroupState::CompletingRebalance);
    assert_eq!(
        group.check_commit(&leader, 2),
        Err(GroupError::RebalanceInProgress),
        "no commits while the new assignment is being handed out"
    );
    assert_eq!(
        group.check_commit(&leader, 1),
        Err(GroupError::IllegalGeneration)
    );
}

#[test]
fn an_unknown_member_id_is_refused_and_pending_ids_expire() {
    let mut group = Group::new("g", LIMITS);
    let replies = group.join(0, args("made-up", &["range"]), 1);
    assert_eq!(
        join_result(&replies, 1).expect("answer").error,
        Some(GroupError::UnknownMemberId)
    );
    let replies = group.join(0, args("", &["range"]), 2);
    let id = join_result(&replies, 2).expect("answer").member_id;
    group.tick(20_000);
    let replies = group.join(20_001, args(&id, &["range"]), 3);
    assert_eq!(
        join_result(&replies, 3).expect("answer").error,
        Some(GroupError::UnknownMemberId)
    );
}
