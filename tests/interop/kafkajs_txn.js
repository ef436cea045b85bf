// KafkaJS transactions against Sluice: a transactional producer commits and aborts
// alternately over 3 partitions, one transaction also commits a group's offsets
// (sendOffsets); a read-committed consumer group reads every committed record once and no
// aborted one, and the group's offset committed in the transaction is what the admin sees.
// Usage: node kafkajs_txn.js HOST:PORT TOPIC   (kafkajs from NODE_PATH)
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const [broker, topic] = process.argv.slice(2);
const PARTS = 3;

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

async function main() {
  const kafka = new Kafka({
    clientId: 'sluice-interop-txn',
    brokers: [broker],
    logLevel: logLevel.ERROR,
    retry: { retries: 8 },
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic, numPartitions: PARTS, replicationFactor: 1 }],
    waitForLeaders: true,
  });

  const producer = kafka.producer({
    transactionalId: `${topic}-txid`,
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  const committed = new Set();
  const aborted = new Set();
  for (let t = 0; t < 10; t++) {
    const txn = await producer.transaction();
    const messages = [];
    for (let i = 0; i < 20; i++) messages.push({ value: `t${t}-r${i}`, partition: i % PARTS });
    await txn.send({ topic, messages });
    if (t === 4) {
      await txn.sendOffsets({
        consumerGroupId: `${topic}-source-group`,
        topics: [{ topic, partitions: [{ partition: 0, offset: '42' }] }],
      });
    }
    if (t % 2 === 0) {
      await txn.commit();
      messages.forEach((m) => committed.add(m.value));
    } else {
      await txn.abort();
      messages.forEach((m) => aborted.add(m.value));
    }
  }
  await producer.disconnect();

  const offsets = await admin.fetchOffsets({ groupId: `${topic}-source-group`, topics: [topic] });
  const p0 = offsets[0].partitions.find((p) => p.partition === 0);
  check(p0 && p0.offset === '42', `offset committed in a transaction: ${JSON.stringify(offsets)}`);

  const consumer = kafka.consumer({ groupId: `${topic}-reader`, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${seen.length} of ${committed.size}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.push(message.value.toString());
        if (seen.length >= committed.size) {
          // a little longer, so that an aborted record after the last one would show
          setTimeout(() => { clearTimeout(timer); resolve(); }, 1500);
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  check(seen.length === committed.size, `read ${seen.length} records, want ${committed.size}`);
  check(new Set(seen).size === seen.length, 'a committed record was read twice');
  check(seen.every((v) => committed.has(v)), `read an aborted record: ${seen.filter((v) => aborted.has(v))}`);
  await admin.disconnect();
  console.log(`kafkajs transactions: ${committed.size} committed read once, ${aborted.size} aborted hidden`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
