//! The one place where tern's errors become Kafka error codes.

use kafka_protocol::ResponseError;

use crate::log::LogError;
use crate::topics::{ConfigError, TopicError};

pub fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::Io { .. } | LogError::NotDurable(_) | LogError::Fenced(_) => {
            ResponseError::KafkaStorageError
        }
        LogError::Corrupt(_) => ResponseError::CorruptMessage,
        LogError::Damaged { .. } => ResponseError::KafkaStorageError,
        LogError::InvalidRecords(_) => ResponseError::InvalidRecord,
        LogError::MirrorOverlap { .. } => ResponseError::InvalidRecord,
        LogError::NotEnoughReplicas(_) => ResponseError::NotEnoughReplicas,
        LogError::TooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::ShuttingDown => ResponseError::NotLeaderOrFollower,
        LogError::Sequence(crate::log::producer_state::SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        LogError::Sequence(crate::log::producer_state::SequenceError::Fenced { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
    }
}

pub fn topic_error_code(e: &TopicError) -> ResponseError {
    match e {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) | TopicError::CannotShrink { .. } => {
            ResponseError::InvalidPartitions
        }
        TopicError::Config(ConfigError::UnknownKey(_))
        | TopicError::Config(ConfigError::InvalidValue { .. }) => ResponseError::InvalidConfig,
        TopicError::Log(e) => log_error_code(e),
        TopicError::Mirrored(_) => ResponseError::TopicAuthorizationFailed,
        TopicError::Io { .. } | TopicError::BadMetadata { .. } => ResponseError::KafkaStorageError,
    }
}

/// Error code and message for response fields that carry both.
pub fn code_and_message(e: &TopicError) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    (
        topic_error_code(e).code(),
        Some(kafka_protocol::protocol::StrBytes::from_string(
            e.to_string(),
        )),
    )
}

pub fn group_error_code(e: crate::groups::state::GroupError) -> ResponseError {
    use crate::groups::state::GroupError as G;
    match e {
        G::UnknownMemberId => ResponseError::UnknownMemberId,
        G::IllegalGeneration => ResponseError::IllegalGeneration,
        G::RebalanceInProgress => ResponseError::RebalanceInProgress,
        G::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        G::MemberIdRequired => ResponseError::MemberIdRequired,
        G::FencedInstanceId => ResponseError::FencedInstanceId,
        G::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        G::InvalidGroupId => ResponseError::InvalidGroupId,
        G::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        G::InvalidRequest => ResponseError::InvalidRequest,
        G::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
    }
}

/// 0 for success, the Kafka code otherwise.
pub fn group_result_code(r: Result<(), crate::groups::state::GroupError>) -> i16 {
    r.err().map(|e| group_error_code(e).code()).unwrap_or(0)
}
