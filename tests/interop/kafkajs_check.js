// KafkaJS against Sluice: admin (create, metadata, offsets, groups, configs, delete
// records, delete), an idempotent gzip producer with keys and headers, and a consumer group
// that reads everything, commits, and whose committed offsets the admin then sees. Any
// mismatch throws; exit status 0 means every step checked out.
// Usage: node kafkajs_check.js HOST:PORT TOPIC COUNT   (kafkajs from NODE_PATH)
'use strict';
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [broker, topic, countArg] = process.argv.slice(2);
const N = Number(countArg || 2000);
const PARTS = 3;
const group = `${topic}-group`;

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

async function main() {
  const kafka = new Kafka({
    clientId: 'sluice-interop',
    brokers: [broker],
    logLevel: logLevel.ERROR,
    retry: { retries: 5 },
  });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTS, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  check(created === true, `createTopics returned ${created}`);
  const again = await admin.createTopics({ topics: [{ topic, numPartitions: PARTS }] });
  check(again === false, 'creating an existing topic reports false');
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  check(md.topics[0].partitions.length === PARTS, `metadata: ${JSON.stringify(md)}`);
  check((await admin.listTopics()).includes(topic), 'listTopics includes the topic');

  // Idempotent producer, gzip batches, keys spread over the partitions, headers.
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const sent = new Map();
  for (let i = 0; i < N; i += 250) {
    const messages = [];
    for (let j = i; j < Math.min(i + 250, N); j++) {
      const m = { key: `k${j % 50}`, value: `v${j}`, headers: { n: String(j) } };
      sent.set(m.value, m.key);
      messages.push(m);
    }
    const res = await producer.send({
      topic,
      acks: -1,
      compression: CompressionTypes.GZIP,
      messages,
    });
    check(res.every((r) => r.errorCode === 0), `send: ${JSON.stringify(res)}`);
  }
  await producer.disconnect();

  const ends = await admin.fetchTopicOffsets(topic);
  const total = ends.reduce((s, p) => s + Number(p.high) - Number(p.low), 0);
  check(total === N, `topic offsets sum to ${total}, want ${N}`);

  // Consumer group: read everything from the beginning, commit as we go.
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map();
  const keyPartition = new Map();
  let done;
  const allSeen = new Promise((resolve) => (done = resolve));
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const v = message.value.toString();
      const k = message.key.toString();
      check(!seen.has(v), `duplicate ${v}`);
      check(message.headers.n.toString() === v.slice(1), `header of ${v}`);
      const p = keyPartition.get(k);
      check(p === undefined || p === partition, `key ${k} on partitions ${p} and ${partition}`);
      keyPartition.set(k, partition);
      seen.set(v, k);
      if (seen.size === N) done();
    },
  });
  const timer = setTimeout(() => done(new Error('timeout')), 60000);
  const err = await allSeen;
  clearTimeout(timer);
  check(!err, `consumed ${seen.size} of ${N} within 60 s`);
  for (const [v, k] of sent) check(seen.get(v) === k, `record ${v} missing or re-keyed`);
  await consumer.disconnect(); // commits the last offsets and leaves the group

  const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  for (const p of committed[0].partitions) {
    const end = ends.find((e) => e.partition === p.partition);
    check(p.offset === end.high, `committed ${p.offset} != end ${end.high} on ${p.partition}`);
  }
  const groups = await admin.listGroups();
  check(groups.groups.some((g) => g.groupId === group), `listGroups: ${JSON.stringify(groups)}`);
  const desc = await admin.describeGroups([group]);
  check(desc.groups[0].state === 'Empty', `group state after leave: ${desc.groups[0].state}`);

  const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, 0);
  check(byTime.every((p) => Number(p.offset) === 0), `offsets by timestamp 0: ${JSON.stringify(byTime)}`);
  const cfg = await admin.describeConfigs({
    resources: [{ type: 2, name: topic }],
    includeSynonyms: false,
  });
  check(cfg.resources[0].errorCode === 0, `describeConfigs: ${JSON.stringify(cfg.resources[0])}`);

  // DeleteRecords: the busiest partition loses its first half
  const busiest = ends.reduce((a, b) => (Number(b.high) > Number(a.high) ? b : a));
  const cut = Math.floor(Number(busiest.high) / 2);
  await admin.deleteTopicRecords({
    topic,
    partitions: [{ partition: busiest.partition, offset: String(cut) }],
  });
  const after = await admin.fetchTopicOffsets(topic);
  const moved = after.find((p) => p.partition === busiest.partition);
  check(Number(moved.low) === cut && moved.high === busiest.high,
    `offsets after deleteTopicRecords: ${JSON.stringify(moved)}, want low ${cut}`);

  await admin.deleteGroups([group]);
  await admin.deleteTopics({ topics: [topic] });
  check(!(await admin.listTopics()).includes(topic), 'topic gone after deleteTopics');
  await admin.disconnect();
  console.log(`kafkajs: ${N} records over ${PARTS} partitions, group committed and deleted`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
