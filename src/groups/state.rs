//! One consumer group as a pure state machine (Kafka's classic group protocol).
//!
//! No sockets, no clocks, no tasks: every operation takes `now` (milliseconds on a
//! monotonic clock the caller owns) and returns the answers it can give. Answers to
//! JoinGroup and SyncGroup may be deferred until the rebalance completes; the caller hands
//! in a [`Waiter`] token and gets it back in a [`Reply`] later, from this or another call
//! (often from [`Group::tick`]). That makes rebalances testable step by step with a fake
//! clock, which is where the expensive bugs are.
//!
//! States: Empty → PreparingRebalance (collecting joins) → CompletingRebalance (waiting
//! for the leader's assignment) → Stable; any join, leave or expiry goes back to
//! PreparingRebalance.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// A request waiting for its answer; the caller maps it to whatever sends the response.
pub type Waiter = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn kafka_name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// Errors the protocol answers with (mapped to Kafka codes by the API layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    MemberIdRequired,
    FencedInstanceId,
    InvalidSessionTimeout,
    InvalidGroupId,
    GroupMaxSizeReached,
    /// A JoinGroup whose fields exceed tern's bounds (ids, metadata).
    InvalidRequest,
    /// The coordinator holds as many groups as it may (`groups.max_groups`).
    CoordinatorNotAvailable,
}

/// Broker-side limits (Kafka's group.min/max.session.timeout.ms and the initial delay).
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub min_session_timeout_ms: u64,
    pub max_session_timeout_ms: u64,
    /// How long a rebalance of an empty group waits for more members to arrive.
    pub initial_rebalance_delay_ms: u64,
    /// Members (and members waiting for their id) per group: Kafka's `group.max.size`.
    pub max_size: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 1000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinArgs {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    /// Assignor names with their metadata, in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets its id with MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    fn error(error: GroupError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(Waiter, JoinResult),
    Sync(Waiter, SyncResult),
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_seen: Millis,
    join_waiter: Option<Waiter>,
    sync_waiter: Option<Waiter>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    limits: GroupLimits,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with when they expire.
    pending: BTreeMap<String, Millis>,
    /// When the current rebalance gives up on members that did not rejoin.
    rebalance_deadline: Millis,
    /// The initial rebalance of an empty group waits at least until then.
    initial_delay_until: Millis,
    next_member: u64,
}

impl Group {
    pub fn new(id: &str, limits: GroupLimits) -> Group {
        Group {
            id: id.to_string(),
            limits,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: 0,
            initial_delay_until: 0,
            next_member: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        format!(
            "{}-{}-{}",
            if client_id.is_empty() {
                "member"
            } else {
                client_id
            },
            self.generation,
            self.next_member
        )
    }

    /// JoinGroup.
    pub fn join(&mut self, now: Millis, args: JoinArgs, waiter: Waiter) -> Vec<Reply> {
        let reject = |error| {
            vec![Reply::Join(
                waiter,
                JoinResult::error(error, &args.member_id),
            )]
        };
        if args.session_timeout_ms < self.limits.min_session_timeout_ms
            || args.session_timeout_ms > self.limits.max_session_timeout_ms
        {
            return reject(GroupError::InvalidSessionTimeout);
        }
        if args.protocols.is_empty() || !self.accepts_protocols(&args) {
            return reject(GroupError::InconsistentGroupProtocol);
        }
        let mut member_id = args.member_id.clone();
        if !member_id.is_empty() {
            if let Some(instance) = &args.instance_id {
                // A static member replaced by a newer instance: fenced, as in Kafka.
                if let Some(current) = self.member_for_instance(instance) {
                    if current != member_id {
                        return reject(GroupError::FencedInstanceId);
                    }
                }
            }
        }
        let full = self.members.len() + self.pending.len() >= self.limits.max_size;
        if member_id.is_empty() {
            if let Some(instance) = &args.instance_id {
                if let Some(old) = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(instance))
                {
                    // A static member restarting: it takes over its old slot.
                    let old_id = old.id.clone();
                    return self.rejoin_static(now, old_id, args, waiter);
                }
            }
            if full {
                return reject(GroupError::GroupMaxSizeReached);
            }
            member_id = self.new_member_id(&args.client_id);
            if args.require_known_member_id && args.instance_id.is_none() {
                self.pending
                    .insert(member_id.clone(), now + args.session_timeout_ms);
                return reject_with_id(waiter, GroupError::MemberIdRequired, member_id);
            }
        } else if self.pending.remove(&member_id).is_none()
            && !self.members.contains_key(&member_id)
        {
            return reject(GroupError::UnknownMemberId);
        }
        if let (Some(instance), Some(existing)) = (&args.instance_id, self.members.get(&member_id))
        {
            if existing.instance_id.as_ref() != Some(instance) {
                return reject(GroupError::FencedInstanceId);
            }
        }
        let mut replies = Vec::new();
        let assignment = match self.members.get_mut(&member_id) {
            Some(existing) => {
                // A JoinGroup (or SyncGroup) of this member still waits: it is answered
                // now, so that no request of its connection waits forever behind it.
                if let Some(old) = existing.join_waiter.take() {
                    replies.push(Reply::Join(
                        old,
                        JoinResult::error(GroupError::RebalanceInProgress, &member_id),
                    ));
                }
                if let Some(old) = existing.sync_waiter.take() {
                    replies.push(Reply::Sync(
                        old,
                        sync_error(GroupError::RebalanceInProgress),
                    ));
                }
                existing.assignment.clone()
            }
            None => Bytes::new(),
        };
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id,
                instance_id: args.instance_id,
                client_id: args.client_id,
                client_host: args.client_host,
                session_timeout_ms: args.session_timeout_ms,
                rebalance_timeout_ms: args.rebalance_timeout_ms,
                protocols: args.protocols,
                assignment,
                last_seen: now,
                join_waiter: Some(waiter),
                sync_waiter: None,
            },
        );
        if self.protocol_type.is_none() {
            self.protocol_type = Some(args.protocol_type);
        }
        if self.state != GroupState::PreparingRebalance {
            replies.extend(self.prepare_rebalance(now));
        }
        replies.extend(self.maybe_complete_join(now));
        replies
    }

    /// A static member (same `group.instance.id`) came back with a new member id. In a
    /// stable group it gets its old assignment back without a rebalance of the others.
    fn rejoin_static(
        &mut self,
        now: Millis,
        old_id: String,
        args: JoinArgs,
        waiter: Waiter,
    ) -> Vec<Reply> {
        let Some(mut member) = self.members.remove(&old_id) else {
            return vec![Reply::Join(
                waiter,
                JoinResult::error(GroupError::UnknownMemberId, ""),
            )];
        };
        // The replaced consumer's waiting requests are answered: it is fenced.
        let mut fenced = Vec::new();
        if let Some(old) = member.join_waiter.take() {
            fenced.push(Reply::Join(
                old,
                JoinResult::error(GroupError::FencedInstanceId, &old_id),
            ));
        }
        if let Some(old) = member.sync_waiter.take() {
            fenced.push(Reply::Sync(old, sync_error(GroupError::FencedInstanceId)));
        }
        let new_id = self.new_member_id(&args.client_id);
        member.id = new_id.clone();
        member.client_id = args.client_id;
        member.client_host = args.client_host;
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.last_seen = now;
        let protocols_changed = member.protocols != args.protocols;
        member.protocols = args.protocols;
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        let stable = self.state == GroupState::Stable && !protocols_changed;
        if stable {
            self.members.insert(new_id.clone(), member);
            let result = JoinResult {
                error: None,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol.clone(),
                leader: self.leader.clone().unwrap_or_default(),
                member_id: new_id,
                // The leader's assignment is current: it need not reassign (KIP-345).
                members: Vec::new(),
            };
            fenced.push(Reply::Join(waiter, result));
            return fenced;
        }
        member.join_waiter = Some(waiter);
        self.members.insert(new_id, member);
        let mut replies = fenced;
        if self.state != GroupState::PreparingRebalance {
            replies.extend(self.prepare_rebalance(now));
        }
        replies.extend(self.maybe_complete_join(now));
        replies
    }

    fn accepts_protocols(&self, args: &JoinArgs) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(args.protocol_type.as_str()) {
            return false;
        }
        // Some assignor must be common to every other member and this one.
        args.protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .filter(|m| m.id != args.member_id)
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn prepare_rebalance(&mut self, now: Millis) -> Vec<Reply> {
        let was_empty_or_new = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline = now + longest;
        self.initial_delay_until = if was_empty_or_new {
            now + self.limits.initial_rebalance_delay_ms.min(longest)
        } else {
            now
        };
        // Members waiting for an assignment of the old generation must rejoin.
        let mut replies = Vec::new();
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                replies.push(Reply::Sync(
                    waiter,
                    sync_error(GroupError::RebalanceInProgress),
                ));
            }
        }
        replies
    }

    fn maybe_complete_join(&mut self, now: Millis) -> Vec<Reply> {
        if self.state != GroupState::PreparingRebalance {
            return Vec::new();
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if (all_joined && now >= self.initial_delay_until) || now >= self.rebalance_deadline {
            return self.complete_join(now);
        }
        Vec::new()
    }

    fn complete_join(&mut self, now: Millis) -> Vec<Reply> {
        // Members that did not rejoin in time are out.
        self.members.retain(|_, m| m.join_waiter.is_some());
        if self.members.is_empty() {
            self.become_empty();
            return Vec::new();
        }
        self.generation += 1;
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let everyone: Vec<JoinedMember> = self
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        let mut replies = Vec::new();
        for member in self.members.values_mut() {
            member.last_seen = now;
            if let Some(waiter) = member.join_waiter.take() {
                replies.push(Reply::Join(
                    waiter,
                    JoinResult {
                        error: None,
                        generation: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: Some(protocol.clone()),
                        leader: leader.clone(),
                        member_id: member.id.clone(),
                        members: if member.id == leader {
                            everyone.clone()
                        } else {
                            Vec::new()
                        },
                    },
                ));
            }
        }
        replies
    }

    /// The assignor every member supports that most members prefer (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let common: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| &p == n))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| common.contains(&n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        common
            .iter()
            .max_by_key(|n| {
                (
                    votes.get(*n).copied().unwrap_or(0),
                    std::cmp::Reverse(common.iter().position(|c| c == *n)),
                )
            })
            .map(|n| (*n).clone())
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.leader = None;
        self.protocol = None;
        self.protocol_type = None;
    }

    /// SyncGroup. The leader's call carries every member's assignment.
    pub fn sync(
        &mut self,
        now: Millis,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        waiter: Waiter,
    ) -> Vec<Reply> {
        let Some(member) = self.members.get_mut(member_id) else {
            return vec![Reply::Sync(waiter, sync_error(GroupError::UnknownMemberId))];
        };
        if generation != self.generation {
            return vec![Reply::Sync(
                waiter,
                sync_error(GroupError::IllegalGeneration),
            )];
        }
        member.last_seen = now;
        match self.state {
            GroupState::Empty => vec![Reply::Sync(waiter, sync_error(GroupError::UnknownMemberId))],
            GroupState::PreparingRebalance => vec![Reply::Sync(
                waiter,
                sync_error(GroupError::RebalanceInProgress),
            )],
            GroupState::Stable => {
                let assignment = member.assignment.clone();
                vec![Reply::Sync(waiter, self.sync_ok(assignment))]
            }
            GroupState::CompletingRebalance => {
                let mut replaced = Vec::new();
                if let Some(old) = member.sync_waiter.replace(waiter) {
                    replaced.push(Reply::Sync(
                        old,
                        sync_error(GroupError::RebalanceInProgress),
                    ));
                }
                if self.leader.as_deref() != Some(member_id) {
                    return replaced;
                }
                let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = given.remove(&m.id).unwrap_or_default();
                }
                self.state = GroupState::Stable;
                let ok: Vec<(Waiter, Bytes)> = self
                    .members
                    .values_mut()
                    .filter_map(|m| m.sync_waiter.take().map(|w| (w, m.assignment.clone())))
                    .collect();
                replaced.extend(
                    ok.into_iter()
                        .map(|(w, assignment)| Reply::Sync(w, self.sync_ok(assignment))),
                );
                replaced
            }
        }
    }

    fn sync_ok(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    /// Heartbeat: keeps a member alive and tells it when to rejoin.
    pub fn heartbeat(
        &mut self,
        now: Millis,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        member.last_seen = now;
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ if generation != self.generation => Err(GroupError::IllegalGeneration),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for some members; the rest rebalance.
    pub fn leave(
        &mut self,
        now: Millis,
        member_ids: &[String],
    ) -> (Vec<Result<(), GroupError>>, Vec<Reply>) {
        let mut results = Vec::new();
        let mut replies = Vec::new();
        let mut any = false;
        for id in member_ids {
            match self.members.remove(id) {
                Some(member) => {
                    any = true;
                    if let Some(waiter) = member.join_waiter {
                        replies.push(Reply::Join(
                            waiter,
                            JoinResult::error(GroupError::UnknownMemberId, id),
                        ));
                    }
                    if let Some(waiter) = member.sync_waiter {
                        replies.push(Reply::Sync(waiter, sync_error(GroupError::UnknownMemberId)));
                    }
                    results.push(Ok(()));
                }
                // A member that got its id (MEMBER_ID_REQUIRED) and leaves before joining.
                None if self.pending.remove(id).is_some() => results.push(Ok(())),
                None => results.push(Err(GroupError::UnknownMemberId)),
            }
        }
        if any {
            replies.extend(self.membership_changed(now));
        }
        (results, replies)
    }

    /// Checks a request that names a `group.instance.id`: a static member replaced by a
    /// newer consumer with the same instance id is fenced (FENCED_INSTANCE_ID), as Kafka
    /// answers, so that the old consumer stops instead of rejoining.
    pub fn check_instance(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let Some(instance) = instance_id else {
            return Ok(());
        };
        match self.member_for_instance(instance) {
            Some(current) if current != member_id => Err(GroupError::FencedInstanceId),
            Some(_) => Ok(()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    /// No members and no member ids handed out: the coordinator may forget the group.
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Member id of the static member with `instance_id`, if any.
    pub fn member_for_instance(&self, instance_id: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
            .map(|m| m.id.clone())
    }

    fn membership_changed(&mut self, now: Millis) -> Vec<Reply> {
        if self.members.is_empty() {
            self.become_empty();
            return Vec::new();
        }
        let mut replies = Vec::new();
        if self.state != GroupState::PreparingRebalance {
            replies.extend(self.prepare_rebalance(now));
        }
        replies.extend(self.maybe_complete_join(now));
        replies
    }

    /// Expires silent members and overdue rebalances. Call it regularly (every 100 ms or so).
    pub fn tick(&mut self, now: Millis) -> Vec<Reply> {
        self.pending.retain(|_, expires| *expires > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && now > m.last_seen + m.session_timeout_ms)
            .map(|m| m.id.clone())
            .collect();
        let mut replies = Vec::new();
        if !expired.is_empty() {
            let (_, r) = self.leave(now, &expired);
            replies.extend(r);
        }
        replies.extend(self.maybe_complete_join(now));
        replies
    }

    /// May an offset commit from `member_id` at `generation` be accepted? Members of the
    /// current generation may commit (also while a rebalance waits for rejoins); so may a client outside any group (generation -1)
    /// when the group has no members (manual assignment, tools resetting offsets).
    pub fn check_commit(&self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        // As Kafka: while members rejoin (PreparingRebalance) the current generation may
        // still commit what it processed, which keeps redeliveries after a rebalance small;
        // once the new generation exists but is not handed out yet, commits wait.
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }
}

fn sync_error(error: GroupError) -> SyncResult {
    SyncResult {
        error: Some(error),
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

fn reject_with_id(waiter: Waiter, error: GroupError, member_id: String) -> Vec<Reply> {
    vec![Reply::Join(waiter, JoinResult::error(error, &member_id))]
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
