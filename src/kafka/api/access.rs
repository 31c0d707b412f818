//! What the connection's principal may do, asked by the handlers in Kafka's terms (the
//! rules are in `crate::acls`). With `[kafka.authorization]` off, everything is allowed.

use std::sync::Arc;

use crate::acls::{Operation, ResourceType, Session, CLUSTER_NAME};
use crate::broker::Broker;
use crate::topics::{Topic, TopicError};

pub struct Access<'a> {
    pub broker: &'a Arc<Broker>,
    pub session: &'a Session,
}

impl Access<'_> {
    pub fn topic(&self, operation: Operation, name: &str) -> bool {
        self.broker
            .authorizer
            .authorize(self.session, operation, ResourceType::Topic, name)
    }

    pub fn group(&self, operation: Operation, name: &str) -> bool {
        self.broker
            .authorizer
            .authorize(self.session, operation, ResourceType::Group, name)
    }

    pub fn cluster(&self, operation: Operation) -> bool {
        self.broker.authorizer.authorize(
            self.session,
            operation,
            ResourceType::Cluster,
            CLUSTER_NAME,
        )
    }

    /// CREATE on the cluster, or on the topic itself (Kafka accepts either).
    pub fn may_create_topic(&self, name: &str) -> bool {
        self.cluster_quietly(Operation::Create) || self.topic(Operation::Create, name)
    }

    fn cluster_quietly(&self, operation: Operation) -> bool {
        let authorizer = &self.broker.authorizer;
        authorizer.authorized_operations(
            self.session,
            ResourceType::Cluster,
            CLUSTER_NAME,
            &[operation],
        ) != 0
    }

    /// The topic, auto-created only where the principal may create it.
    pub fn topic_or_auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>, TopicError> {
        if let Some(topic) = self.broker.topics.get(name) {
            return Ok(Some(topic));
        }
        if self.may_create_topic(name) {
            self.broker.topic_or_auto_create(name)
        } else {
            Ok(None)
        }
    }

    /// Kafka's authorized-operations bits for a resource.
    pub fn operations(
        &self,
        resource_type: ResourceType,
        name: &str,
        supported: &[Operation],
    ) -> i32 {
        self.broker
            .authorizer
            .authorized_operations(self.session, resource_type, name, supported)
    }

    /// Idempotent producers: IDEMPOTENT_WRITE on the cluster or WRITE on any topic
    /// (Kafka 3's rule, KIP-679).
    pub fn may_write_idempotently(&self) -> bool {
        self.cluster_quietly(Operation::IdempotentWrite)
            || self.broker.authorizer.authorize_any(
                self.session,
                Operation::Write,
                ResourceType::Topic,
            )
    }
}
