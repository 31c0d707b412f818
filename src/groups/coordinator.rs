//! The group coordinator: drives one [`Group`] state machine per group id from requests,
//! parks JoinGroup/SyncGroup requests until their group can answer, and ticks the groups
//! so that silent members expire. tern coordinates every group itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::offsets::CommittedOffsets;
use super::state::{
    Group, GroupError, GroupLimits, JoinArgs, JoinResult, Millis, Reply, SyncResult, Waiter,
};

enum Responder {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<SyncResult>),
}

/// Longest member id, instance id, protocol type or client host kept per member.
const MAX_ID_BYTES: usize = 1024;
/// Client ids are informational; longer ones are cut to this many bytes.
const MAX_CLIENT_ID_BYTES: usize = 256;
/// Assignors one member may offer, and the bytes of their metadata together.
const MAX_PROTOCOLS: usize = 16;
const MAX_MEMBER_METADATA_BYTES: usize = 1 << 20;

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn sync_error(error: GroupError) -> SyncResult {
    SyncResult {
        error: Some(error),
        protocol_type: None,
        protocol_name: None,
        assignment: bytes::Bytes::new(),
    }
}

pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    waiters: Mutex<HashMap<Waiter, Responder>>,
    next_waiter: AtomicU64,
    started: Instant,
    limits: GroupLimits,
    /// Groups with members the coordinator holds at most (`groups.max_groups`).
    max_groups: usize,
    pub offsets: Arc<CommittedOffsets>,
}

/// A snapshot of one group for DescribeGroups / ListGroups / the CLI.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: bytes::Bytes,
    pub assignment: bytes::Bytes,
}

impl Coordinator {
    pub fn new(
        limits: GroupLimits,
        max_groups: usize,
        offsets: Arc<CommittedOffsets>,
    ) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            max_groups,
            groups: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
            started: Instant::now(),
            limits,
            offsets,
        })
    }

    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn groups(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn park(&self, responder: Responder) -> Waiter {
        let waiter = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(waiter, responder);
        waiter
    }

    fn deliver(&self, replies: Vec<Reply>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for reply in replies {
            match reply {
                Reply::Join(w, result) => {
                    if let Some(Responder::Join(tx)) = waiters.remove(&w) {
                        let _ = tx.send(result);
                    }
                }
                Reply::Sync(w, result) => {
                    if let Some(Responder::Sync(tx)) = waiters.remove(&w) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }

    /// JoinGroup. The group changes now (in the caller's request order); the answer comes
    /// when the group's rebalance completes.
    ///
    /// Cancel safety: dropping the returned future only drops the answer; the member stays
    /// in the group until it leaves or expires, as with a client that vanished.
    pub fn join(
        &self,
        group_id: &str,
        mut args: JoinArgs,
    ) -> impl std::future::Future<Output = JoinResult> + Send + 'static {
        let member_id = args.member_id.clone();
        let refused = |error| {
            let result = JoinResult {
                error: Some(error),
                generation: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                member_id: member_id.clone(),
                members: Vec::new(),
            };
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(result);
            rx
        };
        // Validated before anything is stored: a refused join leaves nothing behind.
        let rx = if let Err(e) = self.validate_join(group_id, &mut args) {
            refused(e)
        } else {
            let (tx, rx) = oneshot::channel();
            let waiter = self.park(Responder::Join(tx));
            let mut groups = self.groups();
            if !groups.contains_key(group_id) && groups.len() >= self.max_groups {
                drop(groups);
                self.unpark(waiter);
                refused(GroupError::CoordinatorNotAvailable)
            } else {
                let group = groups
                    .entry(group_id.to_string())
                    .or_insert_with(|| Group::new(group_id, self.limits));
                let replies = group.join(self.now(), args, waiter);
                if group.is_idle() {
                    groups.remove(group_id);
                }
                drop(groups);
                self.deliver(replies);
                rx
            }
        };
        async move {
            rx.await.unwrap_or(JoinResult {
                error: Some(GroupError::UnknownMemberId),
                generation: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                member_id,
                members: Vec::new(),
            })
        }
    }

    /// Bounds what a JoinGroup may make the coordinator store.
    fn validate_join(&self, group_id: &str, args: &mut JoinArgs) -> Result<(), GroupError> {
        if !super::valid_group_id(group_id) {
            return Err(GroupError::InvalidGroupId);
        }
        if args.session_timeout_ms < self.limits.min_session_timeout_ms
            || args.session_timeout_ms > self.limits.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        let metadata: usize = args.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if args.member_id.len() > MAX_ID_BYTES
            || args
                .instance_id
                .as_ref()
                .is_some_and(|i| i.len() > MAX_ID_BYTES)
            || args.protocol_type.len() > MAX_ID_BYTES
            || args.protocols.len() > MAX_PROTOCOLS
            || metadata > MAX_MEMBER_METADATA_BYTES
        {
            return Err(GroupError::InvalidRequest);
        }
        // Informational only (DescribeGroups); member ids are built from it.
        truncate_utf8(&mut args.client_id, MAX_CLIENT_ID_BYTES);
        truncate_utf8(&mut args.client_host, MAX_ID_BYTES);
        Ok(())
    }

    fn unpark(&self, waiter: Waiter) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&waiter);
    }

    /// SyncGroup. Takes effect now; completes when the leader has sent the assignment.
    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
    ) -> impl std::future::Future<Output = SyncResult> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let waiter = self.park(Responder::Sync(tx));
        let replies = {
            let mut groups = self.groups();
            match groups.get_mut(group_id) {
                Some(group) => match group.check_instance(member_id, instance_id) {
                    Ok(()) => group.sync(self.now(), member_id, generation, assignments, waiter),
                    Err(e) => vec![Reply::Sync(waiter, sync_error(e))],
                },
                None => vec![Reply::Sync(waiter, sync_error(GroupError::UnknownMemberId))],
            }
        };
        self.deliver(replies);
        async move {
            rx.await
                .unwrap_or_else(|_| sync_error(GroupError::UnknownMemberId))
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        let now = self.now();
        let mut groups = self.groups();
        let group = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        group.check_instance(member_id, instance_id)?;
        group.heartbeat(now, member_id, generation)
    }

    /// LeaveGroup by member id, or by `group.instance.id` for static members.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<(), GroupError>> {
        let now = self.now();
        let (results, replies) = {
            let mut groups = self.groups();
            let Some(group) = groups.get_mut(group_id) else {
                return members
                    .iter()
                    .map(|_| Err(GroupError::UnknownMemberId))
                    .collect();
            };
            // A member id that does not match its instance's current member is fenced.
            let checked: Vec<Result<String, GroupError>> = members
                .iter()
                .map(|(id, instance)| match (id.is_empty(), instance) {
                    (true, Some(instance)) => {
                        Ok(group.member_for_instance(instance).unwrap_or_default())
                    }
                    (false, Some(instance)) => {
                        group.check_instance(id, Some(instance)).map(|_| id.clone())
                    }
                    _ => Ok(id.clone()),
                })
                .collect();
            let ids: Vec<String> = checked
                .iter()
                .filter_map(|c| c.as_ref().ok().cloned())
                .collect();
            let (mut left, replies) = group.leave(now, &ids);
            if group.is_idle() {
                groups.remove(group_id);
            }
            left.reverse();
            let results = checked
                .into_iter()
                .map(|c| match c {
                    Ok(_) => left.pop().unwrap_or(Err(GroupError::UnknownMemberId)),
                    Err(e) => Err(e),
                })
                .collect();
            (results, replies)
        };
        self.deliver(replies);
        results
    }

    /// May this member commit offsets now?
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        match self.groups().get(group_id) {
            Some(group) => {
                if !member_id.is_empty() {
                    group.check_instance(member_id, instance_id)?;
                }
                group.check_commit(member_id, generation)
            }
            None if generation < 0 => Ok(()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let groups = self.groups();
        let group = groups.get(group_id)?;
        let protocol = group.protocol().unwrap_or_default().to_string();
        Some(GroupView {
            state: group.state().kafka_name(),
            protocol_type: group.protocol_type().unwrap_or_default().to_string(),
            members: group
                .members()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        })
    }

    /// Ids of the groups with members.
    pub fn active_groups(&self) -> Vec<String> {
        self.groups()
            .iter()
            .filter(|(_, g)| !g.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups().get(group_id).is_some_and(|g| !g.is_empty())
    }

    /// Forgets an empty group (DeleteGroups). Refused while it has members.
    pub fn remove_if_empty(&self, group_id: &str) -> bool {
        let mut groups = self.groups();
        match groups.get(group_id) {
            Some(group) if !group.is_empty() => false,
            _ => {
                groups.remove(group_id);
                true
            }
        }
    }

    /// Expires silent members and overdue rebalances until `shutdown`.
    pub async fn run_ticker(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let now = self.now();
            let replies: Vec<Reply> = {
                let mut groups = self.groups();
                let replies = groups.values_mut().flat_map(|g| g.tick(now)).collect();
                // Groups without members are forgotten (their offsets live on in
                // __consumer_offsets): memory follows the groups in use, not every id seen.
                groups.retain(|_, g| !g.is_idle());
                replies
            };
            self.deliver(replies);
        }
    }
}
