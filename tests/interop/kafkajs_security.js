// KafkaJS over SASL_SSL with SCRAM-SHA-512 (or over mTLS) against Sluice: produce 200
// records to an existing topic, read them back in a consumer group; a wrong password is
// refused (SASL mode).
// Usage: node kafkajs_security.js HOST:PORT CA_PEM USER PASSWORD TOPIC
//        node kafkajs_security.js HOST:PORT CA_PEM --mtls CERT_PEM KEY_PEM TOPIC
// (kafkajs from NODE_PATH)
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const [broker, caFile, user, password, topic] = process.argv.slice(2);
const mtls = user === '--mtls';
const N = 200;

function client(pw) {
  const ssl = { ca: [fs.readFileSync(caFile, 'utf-8')], rejectUnauthorized: true };
  if (mtls) {
    ssl.cert = fs.readFileSync(password, 'utf-8');
    ssl.key = fs.readFileSync(topicKey(), 'utf-8');
  }
  return new Kafka({
    clientId: 'sluice-security',
    brokers: [broker],
    logLevel: logLevel.NOTHING,
    ssl,
    sasl: mtls ? undefined : { mechanism: 'scram-sha-512', username: user, password: pw },
    retry: { retries: 2 },
  });
}

// in --mtls mode the arguments are CERT KEY TOPIC
function topicKey() { return process.argv[6]; }
const theTopic = mtls ? process.argv[7] : topic;

async function main() {
  const kafka = client(password);
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < N; i++) messages.push({ value: `js-${i}` });
  await producer.send({ topic: theTopic, messages });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: `${theTopic}-g` });
  await consumer.connect();
  await consumer.subscribe({ topic: theTopic, fromBeginning: true });
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${seen.size} of ${N}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.add(message.value.toString());
        if (seen.size === N) { clearTimeout(timer); resolve(); }
      },
    });
  });
  await consumer.disconnect();
  if (mtls) {
    console.log(`kafkajs: ${N} records over mTLS`);
    return;
  }
  const bad = client('wrong').admin();
  let refused = false;
  try { await bad.connect(); await bad.listTopics(); } catch (e) { refused = /SASL|[Aa]uthentication/.test(String(e)); }
  try { await bad.disconnect(); } catch (e) { /* already closed */ }
  if (!refused) throw new Error('a wrong password was not refused with an authentication error');
  console.log(`kafkajs: ${N} records over SASL_SSL, wrong password refused`);
}

main().catch((e) => { console.error(e); process.exit(1); });
