// KafkaJS against tern: create a topic, produce, consume in a group, commit, and resume
// from the committed offsets with a second consumer. Prints one JSON line of results.
//   node group_round_trip.js BROKER TOPIC COUNT
const { Kafka, logLevel } = require('kafkajs');

async function consume(kafka, topic, groupId, want, timeoutMs) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 6000, heartbeatInterval: 500, rebalanceTimeout: 5000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    consumer.run({
      autoCommit: true,
      eachMessage: async ({ partition, message }) => {
        seen.push(`${partition}:${message.offset}:${message.value.toString()}`);
        if (seen.length >= want) { clearTimeout(timer); resolve(); }
      },
    });
  });
  await consumer.commitOffsets([]).catch(() => {});
  await consumer.disconnect();
  return seen;
}

async function main() {
  const [broker, topic, countText] = process.argv.slice(2);
  const count = Number(countText);
  // Optional security (tests/e2e/test_listener_security.py): TLS with a CA file, SASL.
  const ssl = process.env.KAFKAJS_CA ? { ca: [require('fs').readFileSync(process.env.KAFKAJS_CA)] } : undefined;
  const sasl = process.env.KAFKAJS_SASL_MECHANISM
    ? { mechanism: process.env.KAFKAJS_SASL_MECHANISM, username: process.env.KAFKAJS_USER, password: process.env.KAFKAJS_PASSWORD }
    : undefined;
  const kafka = new Kafka({ clientId: 'kafkajs-e2e', brokers: [broker], logLevel: logLevel.ERROR, ssl, sasl });
  const admin = kafka.admin();
  await admin.connect();
  // KafkaJS cannot decompress lz4 without a codec plugin: the topic keeps batches as the
  // producer sent them (KafkaJS sends uncompressed) instead of tern's lz4 default.
  await admin.createTopics({
    topics: [{ topic, numPartitions: 3, configEntries: [{ name: 'compression.type', value: 'producer' }] }],
  });
  await admin.disconnect();

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) messages.push({ key: `k${i % 7}`, value: `v${i}` });
  for (let i = 0; i < messages.length; i += 500) {
    await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 500) });
  }
  await producer.disconnect();

  const first = await consume(kafka, topic, 'js-group', count, 30000);
  const second = await consume(kafka, topic, 'js-group', 1, 4000);
  const admin2 = kafka.admin();
  await admin2.connect();
  const offsets = await admin2.fetchOffsets({ groupId: 'js-group', topics: [topic] });
  const groups = await admin2.listGroups();
  await admin2.disconnect();
  const committed = offsets[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0);
  console.log(JSON.stringify({
    first: first.length,
    distinct: new Set(first).size,
    values: new Set(first.map((s) => s.split(':')[2])).size,
    second: second.length,
    committed,
    groups: groups.groups.map((g) => g.groupId),
  }));
}

main().catch((e) => { console.error(e); process.exit(1); });
