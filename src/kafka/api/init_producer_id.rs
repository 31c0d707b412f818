//! InitProducerId: a fresh producer id for an idempotent producer, or the same id with a
//! bumped epoch when the producer asks to re-initialise (KIP-360). Transactions are not
//! supported: a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::access::Access;
use crate::broker::Broker;

pub fn handle(access: &Access, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let broker = access.broker;
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        tracing::info!(
            "InitProducerId with a transactional id refused: tern does not support transactions"
        );
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if !access.may_write_idempotently() {
        return response.with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    if request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        // Epoch bump: batches of the old epoch are fenced from now on.
        let epoch = request.producer_epoch.checked_add(1);
        return match epoch {
            Some(epoch) if epoch < i16::MAX => response
                .with_producer_id(request.producer_id)
                .with_producer_epoch(epoch),
            _ => allocate(broker, response),
        };
    }
    allocate(broker, response)
}

fn allocate(broker: &Broker, response: InitProducerIdResponse) -> InitProducerIdResponse {
    match broker.producer_ids.allocate() {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            response.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}
