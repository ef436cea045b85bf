#!/usr/bin/env python3
"""TLS, SASL and ACLs with real clients against a `sluice` process this script starts.

Certificates (a CA, the broker's, a client's, one from another CA, an expired one) are
made here with `cryptography`; users are added before the first start with
`sluice user add`. Listeners: PLAINTEXT, SASL_SSL (SCRAM-SHA-512 / SCRAM-SHA-256 / PLAIN)
and SSL with required client certificates (mTLS). Checked:

1. confluent-kafka, kafka-python and kcat over SASL_SSL with SCRAM-SHA-512, and
   confluent-kafka and kafka-python over mTLS: produce, consume, a consumer group.
2. A wrong password, an untrusted certificate, an expired certificate and a plaintext
   client on the TLS port are each refused while other connections keep working.
3. With `StandardAuthorizer`: alice may write one topic and read it with one group and
   nothing else (TOPIC/GROUP/CLUSTER_AUTHORIZATION_FAILED), ACLs made with the
   confluent-kafka AdminClient; the ACLs survive a kill -9.
4. KafkaJS over SASL_SSL (SCRAM-SHA-512) when NODE_PATH has kafkajs.

Usage: security.py SLUICE_BIN [WORKDIR]. Every wait is bounded; any failure exits 1.
"""

import datetime
import faulthandler
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

T = 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_pki(d):
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn, org=None):
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def cert(subject, key, issuer, issuer_key, ca=False, san=None, start=None, end=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start or now - datetime.timedelta(days=1))
             .not_valid_after(end or now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def save(fname, obj):
        with open(os.path.join(d, fname), "wb") as f:
            if isinstance(obj, x509.Certificate):
                f.write(obj.public_bytes(serialization.Encoding.PEM))
            else:
                f.write(obj.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        return os.path.join(d, fname)

    key = lambda: ec.generate_private_key(ec.SECP256R1())
    ca_key, other_key = key(), key()
    ca = cert(name("test-ca"), ca_key, name("test-ca"), ca_key, ca=True)
    other = cert(name("other-ca"), other_key, name("other-ca"), other_key, ca=True)
    save("ca.pem", ca)
    sk = key()
    import ipaddress
    save("server.pem", cert(name("localhost"), sk, ca.subject, ca_key,
                            san=[x509.DNSName("localhost"),
                                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    save("server.key", sk)
    for fname, issuer, issuer_key, start, end in [
        ("alice", ca, ca_key, None, None),
        ("stranger", other, other_key, None, None),
        ("expired", ca, ca_key, now - datetime.timedelta(days=30), now - datetime.timedelta(days=10)),
    ]:
        k = key()
        save(f"{fname}.pem", cert(name("alice", "acme"), k, issuer.subject, issuer_key,
                                  start=start, end=end))
        save(f"{fname}.key", k)


class Broker:
    def __init__(self, binary, work):
        self.binary, self.work = binary, work
        self.data = os.path.join(work, "data")
        self.log = open(os.path.join(work, "broker.log"), "ab")
        self.plain, self.sasl, self.ssl = free_port(), free_port(), free_port()
        self.proc = None

    def start(self):
        w = self.work
        listeners = (f"PLAINTEXT://127.0.0.1:{self.plain},SASL_SSL://127.0.0.1:{self.sasl},"
                     f"SSL://127.0.0.1:{self.ssl}")
        self.proc = subprocess.Popen(
            [self.binary, "--listen", listeners, "--data-dir", self.data, "--cores", "2",
             "--set", "cpuset=none", "--set", "metrics.listen=",
             "--set", "offsets.topic.num.partitions=3",
             "--set", f"ssl.certificate.location={w}/server.pem",
             "--set", f"ssl.key.location={w}/server.key",
             "--set", f"ssl.ca.location={w}/ca.pem",
             "--set", "ssl.client.auth=required",
             "--set", "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
             "--set", "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
             "--set", "super.users=User:admin;User:CN=alice,O=acme",
             "--set", "allow.everyone.if.no.acl.found=false"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.sasl), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        sys.exit("broker did not listen within 30 s")

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


def sasl_conf(b, user, password, mech="SCRAM-SHA-512", **extra):
    c = {"bootstrap.servers": f"127.0.0.1:{b.sasl}", "security.protocol": "SASL_SSL",
         "ssl.ca.location": f"{b.work}/ca.pem", "sasl.mechanisms": mech,
         "sasl.username": user, "sasl.password": password}
    c.update(extra)
    return c


def mtls_conf(b, name="alice", **extra):
    c = {"bootstrap.servers": f"127.0.0.1:{b.ssl}", "security.protocol": "SSL",
         "ssl.ca.location": f"{b.work}/ca.pem",
         "ssl.certificate.location": f"{b.work}/{name}.pem",
         "ssl.key.location": f"{b.work}/{name}.key"}
    c.update(extra)
    return c


def roundtrip(conf, topic, group, n=200):
    """Produce n records with confluent-kafka, read them back in a group."""
    p = Producer(dict(conf, **{"linger.ms": 5}))
    for i in range(n):
        p.produce(topic, f"{topic}-{i}".encode())
    if p.flush(T) != 0:
        sys.exit(f"{topic}: records not delivered")
    c = Consumer(dict(conf, **{"group.id": group, "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    got, deadline = set(), time.time() + 60
    while len(got) < n and time.time() < deadline:
        for m in c.consume(100, 1.0):
            if m.error():
                sys.exit(f"{topic}: consume error {m.error()}")
            got.add(m.value().decode())
    c.close()
    if len(got) != n:
        sys.exit(f"{topic}: read {len(got)} of {n}")


def refused(conf, what):
    """A client with `conf` cannot even list topics; returns the error text."""
    a = AdminClient(dict(conf, **{"socket.timeout.ms": 5000}))
    try:
        a.list_topics(timeout=6)
    except KafkaException as e:
        return str(e)
    sys.exit(f"{what}: was served")


def admin_ok(b):
    """The plaintext listener and the admin over SASL_SSL still work."""
    AdminClient(sasl_conf(b, "admin", "admin-pw")).list_topics(timeout=T)


def kafka_python_roundtrip(b, topic, **security):
    from kafka import KafkaConsumer, KafkaProducer
    p = KafkaProducer(bootstrap_servers=f"127.0.0.1:{security.pop('port')}", **security)
    for i in range(100):
        p.send(topic, f"kp-{i}".encode())
    p.flush(T)
    p.close(T)
    c = KafkaConsumer(topic, bootstrap_servers=p.config["bootstrap_servers"], group_id=f"{topic}-g",
                      auto_offset_reset="earliest", consumer_timeout_ms=10000, **security)
    got = {m.value.decode() for m in c}
    c.close()
    want = {f"kp-{i}" for i in range(100)}
    if not want <= got:
        sys.exit(f"kafka-python {topic}: missing {len(want - got)}")


def main():
    faulthandler.dump_traceback_later(500)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    binary = sys.argv[1]
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="sluice-sec-")
    os.makedirs(work, exist_ok=True)
    make_pki(work)
    b = Broker(binary, work)
    for user, mech, pw in [("admin", "SCRAM-SHA-512", "admin-pw"),
                           ("alice", "SCRAM-SHA-512", "alice-pw"),
                           ("bob", "SCRAM-SHA-256", "bob-pw")]:
        with open(f"{work}/{user}.pw", "w") as f:
            f.write(pw + "\n")
        subprocess.run([binary, "user", "add", user, "--mechanism", mech,
                        "--password-file", f"{work}/{user}.pw", "--data-dir", b.data],
                       check=True, capture_output=True, timeout=T)
    b.start()
    try:
        admin = AdminClient(sasl_conf(b, "admin", "admin-pw"))
        for f in admin.create_topics([NewTopic(t, 2, 1) for t in
                                      ["sec-a", "sec-b", "mtls", "kp-sasl", "kp-mtls", "js-sec",
                                       "js-mtls", "kcat-mtls"]],
                                     operation_timeout=T).values():
            f.result(timeout=T)
        # 1. clients over SASL_SSL (SCRAM-SHA-512, the admin) and mTLS (CN=alice,O=acme is
        #    a super user here, so the certificate's principal is what authorizes it)
        roundtrip(sasl_conf(b, "admin", "admin-pw"), "sec-a", "g-admin")
        roundtrip(mtls_conf(b), "mtls", "g-mtls")
        ca = f"{work}/ca.pem"
        kafka_python_roundtrip(b, "kp-sasl", port=b.sasl, security_protocol="SASL_SSL",
                               ssl_cafile=ca, sasl_mechanism="SCRAM-SHA-512",
                               sasl_plain_username="admin", sasl_plain_password="admin-pw")
        kafka_python_roundtrip(b, "kp-mtls", port=b.ssl, security_protocol="SSL", ssl_cafile=ca,
                               ssl_certfile=f"{work}/alice.pem", ssl_keyfile=f"{work}/alice.key")
        # every partition: librdkafka's sticky partitioner may put all 200 records in one
        kcat = subprocess.run(
            ["kcat", "-b", f"127.0.0.1:{b.sasl}", "-X", "security.protocol=SASL_SSL",
             "-X", f"ssl.ca.location={ca}", "-X", "sasl.mechanisms=SCRAM-SHA-512",
             "-X", "sasl.username=admin", "-X", "sasl.password=admin-pw",
             "-C", "-t", "sec-a", "-o", "beginning", "-e", "-q"],
            capture_output=True, timeout=60)
        if kcat.returncode != 0 or b"sec-a-" not in kcat.stdout:
            sys.exit(f"kcat over SASL_SSL: {kcat.returncode} {kcat.stderr[-300:]!r}")
        # kcat over mTLS: produce, then read back in a consumer group (-G)
        mt = ["-b", f"127.0.0.1:{b.ssl}", "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={ca}",
              "-X", f"ssl.certificate.location={work}/alice.pem",
              "-X", f"ssl.key.location={work}/alice.key"]
        lines = "".join(f"kc-{i}\n" for i in range(100)).encode()
        p = subprocess.run(["kcat", *mt, "-P", "-t", "kcat-mtls"], input=lines,
                           capture_output=True, timeout=60)
        if p.returncode != 0:
            sys.exit(f"kcat produce over mTLS: {p.stderr[-300:]!r}")
        g = subprocess.run(["kcat", *mt, "-X", "auto.offset.reset=earliest", "-G", "kcat-g",
                            "kcat-mtls", "-c", "100", "-q", "-e"],
                           capture_output=True, timeout=90)
        got = set(g.stdout.decode().split())
        if len({f"kc-{i}" for i in range(100)} - got) != 0:
            sys.exit(f"kcat group over mTLS read {len(got)}: {g.stderr[-300:]!r}")
        print("clients over SASL_SSL (SCRAM-SHA-512) and mTLS: ok")

        # 2. refused cleanly, others keep working
        errs = {
            "wrong password": refused(sasl_conf(b, "alice", "nope"), "wrong password"),
            "unknown user": refused(sasl_conf(b, "mallory", "x"), "unknown user"),
            "untrusted certificate": refused(mtls_conf(b, "stranger"), "untrusted cert"),
            "expired certificate": refused(mtls_conf(b, "expired"), "expired cert"),
            "plaintext on the TLS port": refused(
                {"bootstrap.servers": f"127.0.0.1:{b.sasl}"}, "plaintext on TLS"),
        }
        admin_ok(b)
        print("refused cleanly: " + ", ".join(errs))

        # 3. ACLs: alice writes sec-b and reads it with group g-alice, nothing else
        binds = [
            AclBinding(ResourceType.TOPIC, "sec-b", ResourcePatternType.LITERAL, "User:alice",
                       "*", AclOperation.WRITE, AclPermissionType.ALLOW),
            AclBinding(ResourceType.TOPIC, "sec-b", ResourcePatternType.LITERAL, "User:alice",
                       "*", AclOperation.READ, AclPermissionType.ALLOW),
            AclBinding(ResourceType.GROUP, "g-alice", ResourcePatternType.LITERAL, "User:alice",
                       "*", AclOperation.READ, AclPermissionType.ALLOW),
        ]
        for f in admin.create_acls(binds, request_timeout=T).values():
            f.result(timeout=T)
        listed = admin.describe_acls(AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
            AclOperation.ANY, AclPermissionType.ANY), request_timeout=T).result(timeout=T)
        if len(listed) != 3:
            sys.exit(f"describe_acls: {listed}")

        def check_alice(stage):
            alice = sasl_conf(b, "alice", "alice-pw")
            roundtrip(alice, "sec-b", "g-alice", n=50)
            p = Producer(dict(alice, **{"message.timeout.ms": 5000}))
            errors = []
            p.produce("sec-a", b"x", on_delivery=lambda e, m: errors.append(e))
            p.flush(10)
            if not errors or errors[0] is None or \
                    errors[0].code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
                sys.exit(f"{stage}: alice wrote sec-a: {errors}")
            c = Consumer(dict(alice, **{"group.id": "g-other", "auto.offset.reset": "earliest"}))
            c.subscribe(["sec-b"])
            seen, deadline = None, time.time() + 20
            while seen is None and time.time() < deadline:
                for m in c.consume(10, 1.0):
                    if m.error():
                        seen = m.error().code()
            try:
                c.close()
            except KafkaException:
                pass
            if seen != KafkaError.GROUP_AUTHORIZATION_FAILED:
                sys.exit(f"{stage}: group g-other: {seen}")
            alice_admin = AdminClient(alice)
            fs = alice_admin.create_topics([NewTopic("alice-own", 1, 1)], operation_timeout=T)
            try:
                fs["alice-own"].result(timeout=T)
                sys.exit(f"{stage}: alice created a topic")
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    sys.exit(f"{stage}: create_topics: {e}")
            md = alice_admin.list_topics(timeout=T)
            if set(md.topics) != {"sec-b"}:
                sys.exit(f"{stage}: alice sees {sorted(md.topics)}")
            # KIP-430: what alice may do on sec-b, as the admin client reports it
            from confluent_kafka import TopicCollection
            desc = alice_admin.describe_topics(TopicCollection(["sec-b"]),
                                               include_authorized_operations=True)
            ops = set(desc["sec-b"].result(timeout=T).authorized_operations or [])
            if ops != {AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE}:
                sys.exit(f"{stage}: authorized operations on sec-b: {ops}")
            print(f"{stage}: alice can do exactly what her ACLs say")

        check_alice("acls")
        b.kill()
        b.start()
        check_alice("after kill -9")

        # 4. KafkaJS over SASL_SSL
        node_path = os.environ.get("NODE_PATH", "")
        if node_path and os.path.exists(os.path.join(node_path, "kafkajs")):
            js = subprocess.run(
                ["node", os.path.join(os.path.dirname(__file__), "kafkajs_security.js"),
                 f"127.0.0.1:{b.sasl}", ca, "admin", "admin-pw", "js-sec"],
                capture_output=True, timeout=120)
            if js.returncode != 0:
                sys.exit(f"kafkajs over SASL_SSL: {js.stdout[-500:]!r} {js.stderr[-500:]!r}")
            js = subprocess.run(
                ["node", os.path.join(os.path.dirname(__file__), "kafkajs_security.js"),
                 f"127.0.0.1:{b.ssl}", ca, "--mtls", f"{work}/alice.pem", f"{work}/alice.key",
                 "js-mtls"],
                capture_output=True, timeout=120)
            if js.returncode != 0:
                sys.exit(f"kafkajs over mTLS: {js.stdout[-500:]!r} {js.stderr[-500:]!r}")
            print("kafkajs over SASL_SSL (SCRAM-SHA-512) and mTLS: ok")
    finally:
        b.kill()
    print("ok")


if __name__ == "__main__":
    main()
