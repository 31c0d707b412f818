//! The group coordinator: drives one [`Group`] state machine per group id from requests,
//! parks JoinGroup/SyncGroup requests until their group can answer, and ticks the groups
//! so that silent members expire. tern coordinates every group itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::offsets::DurableCommits;
use super::state::{
    Group, GroupError, GroupLimits, JoinArgs, JoinResult, Millis, Reply, SyncResult, Waiter,
};

enum Responder {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<SyncResult>),
}

pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    waiters: Mutex<HashMap<Waiter, Responder>>,
    next_waiter: AtomicU64,
    started: Instant,
    limits: GroupLimits,
    pub offsets: DurableCommits,
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
    pub fn new(limits: GroupLimits, offsets: DurableCommits) -> Arc<Coordinator> {
        Arc::new(Coordinator {
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

    /// JoinGroup; completes when the group's rebalance does.
    ///
    /// Cancel safety: dropping the future only drops the answer; the member stays in the
    /// group until it leaves or expires, as with a client that vanished.
    pub async fn join(&self, group_id: &str, args: JoinArgs) -> JoinResult {
        let (tx, rx) = oneshot::channel();
        let waiter = self.park(Responder::Join(tx));
        let member_id = args.member_id.clone();
        let replies = {
            let mut groups = self.groups();
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, self.limits));
            group.join(self.now(), args, waiter)
        };
        self.deliver(replies);
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

    /// SyncGroup; completes when the leader has sent the assignment.
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
    ) -> SyncResult {
        let (tx, rx) = oneshot::channel();
        let waiter = self.park(Responder::Sync(tx));
        let replies = match self.groups().get_mut(group_id) {
            Some(group) => group.sync(self.now(), member_id, generation, assignments, waiter),
            None => vec![Reply::Sync(
                waiter,
                SyncResult {
                    error: Some(GroupError::UnknownMemberId),
                    protocol_type: None,
                    protocol_name: None,
                    assignment: bytes::Bytes::new(),
                },
            )],
        };
        self.deliver(replies);
        rx.await.unwrap_or(SyncResult {
            error: Some(GroupError::UnknownMemberId),
            protocol_type: None,
            protocol_name: None,
            assignment: bytes::Bytes::new(),
        })
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        let now = self.now();
        self.groups()
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?
            .heartbeat(now, member_id, generation)
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
            let ids: Vec<String> = members
                .iter()
                .map(|(id, instance)| match (id.is_empty(), instance) {
                    (true, Some(instance)) => {
                        group.member_for_instance(instance).unwrap_or_default()
                    }
                    _ => id.clone(),
                })
                .collect();
            group.leave(now, &ids)
        };
        self.deliver(replies);
        results
    }

    /// May this member commit offsets now?
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        match self.groups().get(group_id) {
            Some(group) => group.check_commit(member_id, generation),
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
            let replies: Vec<Reply> = self
                .groups()
                .values_mut()
                .flat_map(|g| g.tick(now))
                .collect();
            self.deliver(replies);
        }
    }
}
