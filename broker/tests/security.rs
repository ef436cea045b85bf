//! Security against a real broker process (issue 19): TLS listeners with client
//! certificates (certificates made here with rcgen, never committed keys), SASL SCRAM and
//! PLAIN with users added before the first start and managed online, and ACLs that let a
//! principal do exactly what they grant, surviving restarts and kill -9. Clients are the
//! `sluice` admin verbs with librdkafka's security settings (`-X`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use common::raw::RawClient;
use common::{free_port, BrokerProcess};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_producers_request;
use kafka_protocol::messages::incremental_alter_configs_request::{self, AlterableConfig};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, BrokerId, CreateAclsRequest, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    DescribeProducersRequest, DescribeTransactionsRequest, FindCoordinatorRequest, GroupId,
    IncrementalAlterConfigsRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProducerId, SaslAuthenticateRequest, SaslHandshakeRequest,
    TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;

/// Runs `sluice ARGS` (bounded by its --timeout), feeding `stdin`; (success, stdout+stderr).
fn sluice(args: &[&str], stdin: &str) -> Result<(bool, String)> {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["--timeout", "10s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn ok(args: &[&str], stdin: &str) -> Result<String> {
    let (success, out) = sluice(args, stdin)?;
    ensure!(success, "sluice {args:?} failed: {out}");
    Ok(out)
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A CA, a broker certificate for 127.0.0.1, a client certificate (CN=alice), one from
/// another CA and an expired one; PEM files in a temp dir.
fn make_pki() -> Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
    let ca = |cn: &str| -> Result<(rcgen::Certificate, rcgen::Issuer<'static, KeyPair>)> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok((cert, rcgen::Issuer::new(p, key)))
    };
    let (ca_cert, issuer) = ca("sluice-test-ca")?;
    let (_, other_issuer) = ca("someone-else")?;
    write("ca.pem", &ca_cert.pem())?;
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?
        .signed_by(&server_key, &issuer)?;
    write("server.pem", &server.pem())?;
    write("server.key", &server_key.serialize_pem())?;
    // a second broker certificate (another subject), for the reload test
    let mut second = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
    second
        .distinguished_name
        .push(DnType::CommonName, "reloaded");
    let second_key = KeyPair::generate()?;
    write(
        "server2.pem",
        &second.signed_by(&second_key, &issuer)?.pem(),
    )?;
    write("server2.key", &second_key.serialize_pem())?;
    let client =
        |cn: &str, expired: bool, by: &rcgen::Issuer<'_, KeyPair>| -> Result<(String, String)> {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.distinguished_name.push(DnType::OrganizationName, "acme");
            p.distinguished_name.push(DnType::CommonName, cn);
            if expired {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let key = KeyPair::generate()?;
            Ok((p.signed_by(&key, by)?.pem(), key.serialize_pem()))
        };
    for (name, cn, expired, by) in [
        ("alice", "alice", false, &issuer),
        ("expired", "alice", true, &issuer),
        ("stranger", "alice", false, &other_issuer),
    ] {
        let (cert, key) = client(cn, expired, by)?;
        write(&format!("{name}.pem"), &cert)?;
        write(&format!("{name}.key"), &key)?;
    }
    Ok(Pki { dir })
}

#[test]
fn tls_listener_with_client_certificates() -> Result<()> {
    let pki = make_pki()?;
    let ssl_port = free_port();
    let broker = BrokerProcess::spawn_full(
        2,
        &[
            ("ssl.certificate.location", &pki.path("server.pem")),
            ("ssl.key.location", &pki.path("server.key")),
            ("ssl.ca.location", &pki.path("ca.pem")),
            ("ssl.client.auth", "required"),
        ],
        Some(&format!("SSL://127.0.0.1:{ssl_port}")),
        |_| Ok(()),
    )?;
    let boot = format!("127.0.0.1:{ssl_port}");
    let ca = format!("ssl.ca.location={}", pki.path("ca.pem"));
    let with_cert = |name: &str| -> Vec<String> {
        vec![
            "-b".into(),
            boot.clone(),
            "-X".into(),
            "security.protocol=SSL".into(),
            "-X".into(),
            ca.clone(),
            "-X".into(),
            format!(
                "ssl.certificate.location={}",
                pki.path(&format!("{name}.pem"))
            ),
            "-X".into(),
            format!("ssl.key.location={}", pki.path(&format!("{name}.key"))),
        ]
    };
    let args = |extra: &[&str], sec: &[String]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(sec.iter().cloned())
            .collect()
    };
    let run =
        |a: Vec<String>, stdin: &str| ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), stdin);
    let alice = with_cert("alice");
    run(
        args(&["topic", "create", "tls-t", "--partitions", "1"], &alice),
        "",
    )?;
    run(args(&["produce", "tls-t"], &alice), "one\ntwo\n")?;
    let out = run(
        args(
            &[
                "consume",
                "tls-t",
                "--from-beginning",
                "--max-messages",
                "2",
            ],
            &alice,
        ),
        "",
    )?;
    ensure!(out.contains("one") && out.contains("two"), "{out}");
    // Metadata over the SSL listener names the SSL endpoint
    let info = run(args(&["cluster", "info", "--format", "json"], &alice), "")?;
    ensure!(info.contains(&format!("{ssl_port}")), "{info}");
    ensure!(
        !info.contains(&format!("{}", broker.port())),
        "plaintext port leaked: {info}"
    );
    // no certificate, an untrusted one, an expired one, a plaintext client: refused
    let no_cert = vec![
        "-b".to_string(),
        boot.clone(),
        "-X".into(),
        "security.protocol=SSL".into(),
        "-X".into(),
        ca.clone(),
    ];
    for (what, sec) in [
        ("no client certificate", no_cert),
        ("untrusted certificate", with_cert("stranger")),
        ("expired certificate", with_cert("expired")),
        ("plaintext client", vec!["-b".to_string(), boot.clone()]),
    ] {
        let a = args(&["topic", "list"], &sec);
        let (success, out) = sluice(&a.iter().map(String::as_str).collect::<Vec<_>>(), "")?;
        ensure!(!success, "{what} was served: {out}");
    }
    // the plaintext listener and the TLS one keep working
    ok(&["topic", "list", "-b", &broker.bootstrap()], "")?;
    run(args(&["topic", "list"], &alice), "")?;
    Ok(())
}

fn write_password(dir: &Path, name: &str, password: &str) -> Result<PathBuf> {
    let p = dir.join(format!("{name}.pw"));
    std::fs::write(&p, format!("{password}\n"))?;
    Ok(p)
}

/// librdkafka's SASL settings for the admin verbs.
fn sasl(boot: &str, mechanism: &str, user: &str, password: &str) -> Vec<String> {
    [
        "-b",
        boot,
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        &format!("sasl.mechanism={mechanism}"),
        "-X",
        &format!("sasl.username={user}"),
        "-X",
        &format!("sasl.password={password}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn call(args: &[&str], sec: &[String], stdin: &str) -> Result<(bool, String)> {
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(sec.iter().map(String::as_str))
        .collect();
    sluice(&all, stdin)
}

#[test]
fn sasl_users_and_acls_survive_restarts() -> Result<()> {
    let pw_dir = tempfile::tempdir()?;
    let admin_pw = write_password(pw_dir.path(), "admin", "admin-secret")?;
    let alice_pw = write_password(pw_dir.path(), "alice", "alice-secret")?;
    let sasl_port = free_port();
    let mut broker = BrokerProcess::spawn_full(
        2,
        &[
            (
                "sasl.enabled.mechanisms",
                "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            ),
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            ("super.users", "User:admin"),
        ],
        Some(&format!("SASL_PLAINTEXT://127.0.0.1:{sasl_port}")),
        |data| {
            let d = data.display().to_string();
            for (user, mech, pw) in [
                ("admin", "SCRAM-SHA-512", &admin_pw),
                ("alice", "SCRAM-SHA-256", &alice_pw),
            ] {
                let (success, out) = sluice(
                    &[
                        "user",
                        "add",
                        user,
                        "--mechanism",
                        mech,
                        "--password-file",
                        &pw.display().to_string(),
                        "--data-dir",
                        &d,
                    ],
                    "",
                )?;
                if !success {
                    bail!("user add {user}: {out}");
                }
            }
            Ok(())
        },
    )?;
    let boot = format!("127.0.0.1:{sasl_port}");
    let admin = sasl(&boot, "SCRAM-SHA-512", "admin", "admin-secret");
    let alice = sasl(&boot, "SCRAM-SHA-256", "alice", "alice-secret");
    let alice_plain = sasl(&boot, "PLAIN", "alice", "alice-secret");
    let run_ok = |args: &[&str], sec: &[String], stdin: &str| -> Result<String> {
        let (success, out) = call(args, sec, stdin)?;
        ensure!(success, "{args:?} failed: {out}");
        Ok(out)
    };
    let run_refused = |args: &[&str], sec: &[String], want: &str| -> Result<()> {
        let (success, out) = call(args, sec, "x\n")?;
        ensure!(
            !success && out.contains(want),
            "{args:?}: expected {want}, got: {out}"
        );
        Ok(())
    };
    // the admin (a super user) sets up topics and ACLs
    for t in ["orders", "payments", "pre-a"] {
        run_ok(&["topic", "create", t, "--partitions", "1"], &admin, "")?;
    }
    run_ok(
        &[
            "acl",
            "add",
            "--topic",
            "orders",
            "--principal",
            "User:alice",
            "--operation",
            "READ",
            "--operation",
            "WRITE",
        ],
        &admin,
        "",
    )?;
    run_ok(
        &[
            "acl",
            "add",
            "--group",
            "g1",
            "--principal",
            "User:alice",
            "--operation",
            "READ",
        ],
        &admin,
        "",
    )?;
    run_ok(
        &[
            "acl",
            "add",
            "--topic",
            "pre-",
            "--prefixed",
            "--principal",
            "User:alice",
            "--operation",
            "READ",
        ],
        &admin,
        "",
    )?;
    run_ok(
        &[
            "acl",
            "add",
            "--topic",
            "pre-a",
            "--principal",
            "User:alice",
            "--operation",
            "READ",
            "--deny",
        ],
        &admin,
        "",
    )?;
    let listed = run_ok(&["acl", "list", "--format", "json"], &admin, "")?;
    ensure!(listed.matches("User:alice").count() == 5, "{listed}");

    let check_alice = |round: &str| -> Result<()> {
        run_ok(
            &["produce", "orders"],
            &alice,
            &format!("{round}-1\n{round}-2\n"),
        )
        .with_context(|| format!("{round}: alice writes orders"))?;
        run_refused(
            &["produce", "payments"],
            &alice,
            "TOPIC_AUTHORIZATION_FAILED",
        )?;
        let out = run_ok(
            &[
                "consume",
                "orders",
                "--group",
                "g1",
                "--from-beginning",
                "--max-messages",
                "2",
            ],
            &alice,
            "",
        )?;
        ensure!(out.contains(&format!("{round}-2")), "{round}: {out}");
        run_refused(
            &["consume", "orders", "--group", "g2", "--max-messages", "1"],
            &alice,
            "GROUP_AUTHORIZATION_FAILED",
        )?;
        run_refused(
            &["topic", "create", "mine", "--partitions", "1"],
            &alice,
            "TOPIC_AUTHORIZATION_FAILED",
        )?;
        run_refused(
            &[
                "topic",
                "alter-config",
                "orders",
                "--set",
                "retention.ms=60000",
            ],
            &alice,
            "TOPIC_AUTHORIZATION_FAILED",
        )?;
        let topics = run_ok(&["topic", "list"], &alice, "")?;
        ensure!(
            topics.contains("orders") && !topics.contains("payments"),
            "{round}: {topics}"
        );
        // the prefixed READ implies DESCRIBE; the DENY READ on pre-a does not deny it (Kafka)
        ensure!(topics.contains("pre-a"), "{round}: {topics}");
        run_refused(
            &[
                "consume",
                "pre-a",
                "--from-beginning",
                "--max-messages",
                "1",
            ],
            &alice,
            "TOPIC_AUTHORIZATION_FAILED",
        )?;
        // the same user with PLAIN, a wrong password, an unknown user
        run_ok(&["topic", "list"], &alice_plain, "")?;
        run_refused(
            &["topic", "list"],
            &sasl(&boot, "SCRAM-SHA-256", "alice", "wrong"),
            "SASL_AUTHENTICATION_FAILED",
        )?;
        run_refused(
            &["topic", "list"],
            &sasl(&boot, "SCRAM-SHA-512", "mallory", "x"),
            "SASL_AUTHENTICATION_FAILED",
        )?;
        Ok(())
    };
    check_alice("r1")?;
    run_ok(
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=60000",
        ],
        &admin,
        "",
    )?;
    let anonymous = vec!["-b".to_string(), broker.bootstrap()];
    run_refused(
        &["produce", "orders"],
        &anonymous,
        "TOPIC_AUTHORIZATION_FAILED",
    )?;
    // users managed online: bob is set by the admin, logs in, is deleted
    let bob_pw = write_password(pw_dir.path(), "bob", "bob-secret")?;
    run_ok(
        &[
            "user",
            "set",
            "bob",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password-file",
            &bob_pw.display().to_string(),
        ],
        &admin,
        "",
    )?;
    let bob = sasl(&boot, "SCRAM-SHA-512", "bob", "bob-secret");
    run_ok(&["topic", "list"], &bob, "")?;
    run_refused(
        &[
            "user",
            "set",
            "eve",
            "--password-file",
            &bob_pw.display().to_string(),
        ],
        &alice,
        "CLUSTER_AUTHORIZATION_FAILED",
    )?;
    let users = run_ok(&["user", "list"], &admin, "")?;
    ensure!(
        users.contains("admin") && users.contains("alice") && users.contains("bob"),
        "{users}"
    );
    run_ok(
        &["user", "delete", "bob", "--mechanism", "SCRAM-SHA-512"],
        &admin,
        "",
    )?;
    run_refused(&["topic", "list"], &bob, "SASL_AUTHENTICATION_FAILED")?;
    ensure!(
        broker
            .data_dir()
            .join("bootstrap-users.bin.applied")
            .exists(),
        "the bootstrap file is kept as applied"
    );
    // a clean restart and a kill -9 keep users and ACLs; bob stays deleted
    broker.sigterm()?;
    broker.restart()?;
    check_alice("r2")?;
    run_refused(&["topic", "list"], &bob, "SASL_AUTHENTICATION_FAILED")?;
    broker.kill9()?;
    broker.restart()?;
    check_alice("r3")?;
    run_ok(
        &[
            "acl",
            "remove",
            "--topic",
            "orders",
            "--principal",
            "User:alice",
        ],
        &admin,
        "",
    )?;
    std::thread::sleep(Duration::from_millis(200));
    run_refused(&["produce", "orders"], &alice, "TOPIC_AUTHORIZATION_FAILED")?;
    Ok(())
}

/// Three brokers whose inter-broker listener is SASL_SSL and whose controller listeners
/// speak mutual TLS: the quorum forms, replication (acks=all with min.insync.replicas=2
/// needs the followers' fetches) works once the brokers' own user exists, and both
/// survive the leader's kill -9.
#[test]
fn brokers_replicate_over_sasl_ssl() -> Result<()> {
    let pki = make_pki()?;
    let config = pki.dir.path().join("secure.toml");
    std::fs::write(
        &config,
        format!(
            "\"ssl.certificate.location\" = \"{}\"\n\"ssl.key.location\" = \"{}\"\n\"ssl.ca.location\" = \"{}\"\n\"sasl.enabled.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.mechanism.inter.broker.protocol\" = \"SCRAM-SHA-512\"\n\"sasl.jaas.config\" = 'org.apache.kafka.common.security.scram.ScramLoginModule required username=\"broker\" password=\"broker-secret\";'\n\"listener.name.controller.plain.sasl.jaas.config\" = 'org.apache.kafka.common.security.plain.PlainLoginModule required username=\"ctl\" password=\"ctl-secret\" user_ctl=\"ctl-secret\";'\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem"),
        ),
    )?;
    let mut cluster = common::cluster::Cluster::start_env(
        3,
        &[
            ("min.insync.replicas", "2"),
            ("broker.session.timeout.ms", "3000"),
            ("broker.heartbeat.interval.ms", "300"),
        ],
        &[
            ("SLUICE_CLUSTER_INTERNAL", "SASL_SSL"),
            ("SLUICE_CLUSTER_CONTROLLER", "SASL_SSL"),
            ("SLUICE_CLUSTER_CONFIG", &config.display().to_string()),
        ],
    )?;
    let boot = cluster.bootstrap();
    let pw = write_password(pki.dir.path(), "broker", "broker-secret")?;
    ok(
        &[
            "user",
            "set",
            "broker",
            "--password-file",
            &pw.display().to_string(),
            "-b",
            &boot,
        ],
        "",
    )?;
    ok(
        &[
            "topic",
            "create",
            "replicated",
            "--partitions",
            "2",
            "--replication-factor",
            "3",
            "-b",
            &boot,
        ],
        "",
    )?;
    let lines: String = (0..50).map(|i| format!("r-{i}\n")).collect();
    ok(&["produce", "replicated", "-b", &boot], &lines)?;
    let described = ok(
        &[
            "topic",
            "describe",
            "replicated",
            "--format",
            "json",
            "-b",
            &boot,
        ],
        "",
    )?;
    ensure!(described.contains("\"isr\""), "{described}");
    // the leader of partition 0 dies; the others (in sync over SASL_SSL) take over
    let leader = cluster
        .view(1)?
        .topic("replicated")?
        .partitions
        .first()
        .map(|p| p.leader)
        .context("no partition 0")?;
    ensure!(leader > 0, "no leader for partition 0");
    cluster.kill9(leader as u32)?;
    let survivors: Vec<u32> = cluster
        .ids()
        .into_iter()
        .filter(|&i| i != leader as u32)
        .collect();
    let boot2 = cluster.bootstrap_of(&survivors);
    let more: String = (50..80).map(|i| format!("r-{i}\n")).collect();
    let mut produced = false;
    for _ in 0..60 {
        if sluice(&["produce", "replicated", "-b", &boot2], &more)?.0 {
            produced = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(produced, "no produce after the leader's kill -9");
    // read to the end (a produce attempt that failed for one partition may have written
    // the other's records, which the retry writes again: the CLI is not idempotent across
    // runs; `sluice` exits after 10 s without a record), then check every record is there
    let out = ok(
        &["consume", "replicated", "--from-beginning", "-b", &boot2],
        "",
    )?;
    for i in 0..80 {
        ensure!(
            out.contains(&format!("r-{i}\n")),
            "r-{i} missing after failover ({} lines read: {out})",
            out.lines().count()
        );
    }
    Ok(())
}

/// `ssl.cipher.suites` (Kafka's setting): only the listed suites are negotiated, the
/// listed order beating the client's (rustls's client puts AES-256-GCM first).
#[test]
fn tls_cipher_suites_are_the_operators_choice() -> Result<()> {
    let pki = make_pki()?;
    let ssl_port = free_port();
    let _broker = BrokerProcess::spawn_full(
        1,
        &[
            ("ssl.certificate.location", &pki.path("server.pem")),
            ("ssl.key.location", &pki.path("server.key")),
            ("ssl.ca.location", &pki.path("ca.pem")),
            ("ssl.client.auth", "required"),
            (
                "ssl.cipher.suites",
                "TLS_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ),
        ],
        Some(&format!("SSL://127.0.0.1:{ssl_port}")),
        |_| Ok(()),
    )?;
    let (stream, _) = tls_connect(&pki, ssl_port)?;
    let suite = stream
        .conn
        .negotiated_cipher_suite()
        .context("no suite negotiated")?
        .suite();
    ensure!(
        suite == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        "negotiated {suite:?}"
    );
    // a name the broker does not know stops the start with the setting named
    let data = tempfile::tempdir()?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--set", "ssl.cipher.suites=TLS_RSA_WITH_RC4_128_MD5"])
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            bail!("a broker ran with ssl.cipher.suites=TLS_RSA_WITH_RC4_128_MD5");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    ensure!(!out.status.success(), "exit status {}", out.status);
    ensure!(
        text.contains("ssl.cipher.suites: TLS_RSA_WITH_RC4_128_MD5 is not supported"),
        "start failed without naming the setting: {text}"
    );
    Ok(())
}

/// A raw TLS connection (rustls) to `port` that trusts the test CA and presents alice's
/// certificate; returns it with the subject CN of the broker's certificate.
fn tls_connect(
    pki: &Pki,
    port: u16,
) -> Result<(
    rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    String,
)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem"))? {
        roots.add(c?)?;
    }
    let chain: Vec<_> =
        CertificateDer::pem_file_iter(pki.path("alice.pem"))?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(pki.path("alice.key"))?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    api_versions(&mut stream, 1)?; // completes the handshake
    let der = stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no server certificate")?
        .to_vec();
    // the second certificate's subject is CN=reloaded; the first has none
    let cn = if der.windows(8).any(|w| w == b"reloaded") {
        "reloaded"
    } else {
        "first"
    }
    .to_string();
    Ok((stream, cn))
}

/// Sends ApiVersions v0 with `correlation` and checks the answer echoes it.
fn api_versions<S: std::io::Read + std::io::Write>(stream: &mut S, correlation: i32) -> Result<()> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.push(b't');
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut answer = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer)?;
    ensure!(
        answer[..4] == correlation.to_be_bytes(),
        "wrong correlation id"
    );
    Ok(())
}

/// SIGHUP reloads the certificates: new connections get the new one, open connections
/// keep working, and a broken file leaves the old certificates in use.
#[test]
fn tls_certificates_reload_on_sighup() -> Result<()> {
    let pki = make_pki()?;
    let ssl_port = free_port();
    let broker = BrokerProcess::spawn_full(
        1,
        &[
            ("ssl.certificate.location", &pki.path("server.pem")),
            ("ssl.key.location", &pki.path("server.key")),
            ("ssl.ca.location", &pki.path("ca.pem")),
            ("ssl.client.auth", "required"),
        ],
        Some(&format!("SSL://127.0.0.1:{ssl_port}")),
        |_| Ok(()),
    )?;
    let (mut old, cn) = tls_connect(&pki, ssl_port)?;
    ensure!(cn == "first", "{cn}");
    let hup = |pid: u32| -> Result<()> {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?
            .success();
        ensure!(ok, "kill -HUP failed");
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    };
    std::fs::copy(pki.path("server2.pem"), pki.path("server.pem"))?;
    std::fs::copy(pki.path("server2.key"), pki.path("server.key"))?;
    hup(broker.pid().context("broker not running")?)?;
    let (_, cn) = tls_connect(&pki, ssl_port)?;
    ensure!(
        cn == "reloaded",
        "a new connection still gets the old certificate"
    );
    api_versions(&mut old, 2).context("the connection opened before the reload")?;
    // a broken key: the reload is refused and the current certificate stays
    std::fs::write(pki.path("server.key"), "not a key")?;
    hup(broker.pid().context("broker not running")?)?;
    let (_, cn) = tls_connect(&pki, ssl_port)?;
    ensure!(cn == "reloaded", "{cn}");
    api_versions(&mut old, 3)?;
    Ok(())
}

/// One frame of the controller listener's own wire: u32 length | u8 kind | payload.
fn controller_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

/// What the controller listener does with `frame` as a connection's first: the kind of
/// the frame it answers with, or None when it closes the connection unanswered.
fn controller_answer(port: u16, frame: &[u8]) -> Result<Option<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(frame)?;
    let mut header = [0u8; 5];
    match s.read_exact(&mut header) {
        Ok(()) => Ok(Some(header[4])),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
        Err(e) => Err(e).context("no answer and no close from the controller listener"),
    }
}

/// `CONTROLLER:SASL_PLAINTEXT`: the controller listener serves nothing before a SASL PLAIN
/// login of one of its JAAS users; a raft frame first, an unknown user or a wrong password
/// gets the connection closed, the right login gets AUTH_OK. The node itself (a quorum of
/// one with a controller listener) works meanwhile.
#[test]
fn controller_listener_requires_a_sasl_login() -> Result<()> {
    let ctl = free_port();
    let voters = format!("1@127.0.0.1:{ctl}");
    let map = "PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT";
    let jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required \
                username=\"n1\" password=\"n1-secret\" user_n1=\"n1-secret\" user_n2=\"n2-secret\";";
    let broker = BrokerProcess::spawn_full(
        1,
        &[
            ("controller.quorum.voters", &voters),
            ("listener.security.protocol.map", map),
            ("listener.name.controller.plain.sasl.jaas.config", jaas),
            ("connection.failed.authentication.delay.ms", "200"),
        ],
        None,
        |_| Ok(()),
    )?;
    let boot = broker.bootstrap();
    ok(
        &["topic", "create", "t", "--partitions", "1", "-b", &boot],
        "",
    )?;
    ok(&["produce", "t", "-b", &boot], "a\nb\n")?;

    let raft_first = controller_frame(0, b"not a login");
    ensure!(
        controller_answer(ctl, &raft_first)?.is_none(),
        "a raft frame before the login was not refused"
    );
    // a huge frame announced before the login is refused without reading it
    let huge = [&(32u32 << 20).to_be_bytes()[..], &[3u8]].concat();
    ensure!(
        controller_answer(ctl, &huge)?.is_none(),
        "a 32 MiB login frame was read"
    );
    let call_first = controller_frame(1, b"x");
    ensure!(
        controller_answer(ctl, &call_first)?.is_none(),
        "a call before the login was not refused"
    );
    for (user, password) in [("n2", "wrong"), ("nobody", "n2-secret"), ("n2", "")] {
        let login = controller_frame(3, format!("\0{user}\0{password}").as_bytes());
        ensure!(
            controller_answer(ctl, &login)?.is_none(),
            "{user}/{password}: a bad login was accepted"
        );
    }
    let login = controller_frame(3, b"\0n2\0n2-secret");
    ensure!(
        controller_answer(ctl, &login)? == Some(4),
        "the right login did not get AUTH_OK"
    );
    // the listener's secret stays out of DescribeConfigs: sensitive, no value
    {
        use common::raw::RawClient;
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::DescribeConfigsRequest;
        use kafka_protocol::protocol::StrBytes;
        let mut raw = RawClient::connect(broker.addr())?;
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1")),
        ]);
        let resp = raw.call(4, &req)?;
        let configs = &resp.results.first().context("no result")?.configs;
        let entry = configs
            .iter()
            .find(|c| &*c.name == "listener.name.controller.plain.sasl.jaas.config")
            .context("the controller JAAS setting is not described")?;
        ensure!(entry.is_sensitive && entry.value.is_none(), "{entry:?}");
        ensure!(
            !format!("{resp:?}").contains("n1-secret"),
            "a secret in DescribeConfigs"
        );
    }
    ok(
        &[
            "consume",
            "t",
            "--from-beginning",
            "--max-messages",
            "2",
            "-b",
            &boot,
        ],
        "",
    )?;
    Ok(())
}

/// Adds SCRAM users to a data dir before the broker's first start (`sluice user add`).
fn add_users(data: &Path, users: &[(&str, &str, &Path)]) -> Result<()> {
    let d = data.display().to_string();
    for (user, mechanism, pw) in users {
        let (success, out) = sluice(
            &[
                "user",
                "add",
                user,
                "--mechanism",
                mechanism,
                "--password-file",
                &pw.display().to_string(),
                "--data-dir",
                &d,
            ],
            "",
        )?;
        ensure!(success, "user add {user}: {out}");
    }
    Ok(())
}

/// SaslHandshake v1 and SaslAuthenticate v2 with PLAIN on an open connection (a first
/// login or a re-authentication); the session lifetime the broker gave.
fn plain_login(c: &mut RawClient, user: &str, password: &str) -> Result<i64> {
    let hs = c.call(
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    )?;
    ensure!(hs.error_code == 0, "SaslHandshake: error {}", hs.error_code);
    let token = format!("\0{user}\0{password}");
    let auth = c.call(
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token.into_bytes())),
    )?;
    ensure!(
        auth.error_code == 0,
        "SaslAuthenticate: error {} {:?}",
        auth.error_code,
        auth.error_message
    );
    Ok(auth.session_lifetime_ms)
}

/// A raw connection to a SASL_PLAINTEXT listener, logged in with PLAIN.
fn raw_login(port: u16, user: &str, password: &str) -> Result<(RawClient, i64)> {
    let mut c = RawClient::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    c.negotiate()?;
    let lifetime = plain_login(&mut c, user, password)?;
    Ok((c, lifetime))
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Kafka's error codes the ACL tests expect.
const UNKNOWN_TOPIC: i16 = 3;
const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;
const TXN_DENIED: i16 = 53;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const GROUP_ID_NOT_FOUND: i16 = 69;

/// DescribeConfigs results: (resource name, error code, [(config, value)]).
type Described = Vec<(String, i16, Vec<(String, String)>)>;

/// The topics the admin sees.
fn topic_names(admin: &mut RawClient) -> Result<Vec<String>> {
    Ok(admin
        .metadata(None, false)?
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect())
}

/// Each resource of one request gets its own ACL answer (Kafka's): in one CreateTopics,
/// DeleteTopics, DescribeConfigs, IncrementalAlterConfigs, CreatePartitions, OffsetDelete
/// and DeleteGroups request an allowed resource is acted on and a denied one gets its
/// *_AUTHORIZATION_FAILED and is left as it was (TxnOffsetCommit, DescribeProducers,
/// OffsetForLeaderEpoch, FindCoordinator v4 and DescribeTransactions likewise);
/// AddPartitionsToTxn stays all or nothing.
#[test]
fn acls_answer_each_resource_of_a_request() -> Result<()> {
    let pw_dir = tempfile::tempdir()?;
    let admin_pw = write_password(pw_dir.path(), "admin", "admin-secret")?;
    let alice_pw = write_password(pw_dir.path(), "alice", "alice-secret")?;
    let sasl_port = free_port();
    let _broker = BrokerProcess::spawn_full(
        2,
        &[
            ("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512"),
            ("authorizer.class.name", "StandardAuthorizer"),
            ("super.users", "User:admin"),
        ],
        Some(&format!("SASL_PLAINTEXT://127.0.0.1:{sasl_port}")),
        |data| {
            add_users(
                data,
                &[
                    ("admin", "SCRAM-SHA-512", &admin_pw),
                    ("alice", "SCRAM-SHA-512", &alice_pw),
                ],
            )
        },
    )?;
    let (mut admin, _) = raw_login(sasl_port, "admin", "admin-secret")?;
    let (mut alice, _) = raw_login(sasl_port, "alice", "alice-secret")?;
    for (topic, code) in admin.create_topics(&[
        ("del-ok", 1),
        ("del-no", 1),
        ("del-read", 1),
        ("cfg-ok", 1),
        ("cfg-no", 1),
    ])? {
        ensure!(code == 0, "admin creating {topic}: error {code}");
    }
    // two groups with a committed offset (simple commits)
    for group in ["grp-ok", "grp-no"] {
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(
                ["cfg-ok", "del-read"]
                    .iter()
                    .map(|t| {
                        OffsetCommitRequestTopic::default()
                            .with_name(name(t))
                            .with_partitions(vec![OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(0)])
                    })
                    .collect(),
            );
        let v = admin.version_for::<OffsetCommitRequest>(8)?;
        let resp = admin.call(v, &commit)?;
        let codes: Vec<i16> = resp
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        ensure!(codes == [0, 0], "committing for {group}: {codes:?}");
    }
    // alice's ACLs (resource types: topic 2, group 3, transactional id 5; patterns:
    // literal 3, prefixed 4; operations: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7,
    // DESCRIBE 8, ALTER_CONFIGS 11)
    let acl = |rt: i8, resource: &str, pattern: i8, op: i8| {
        AclCreation::default()
            .with_resource_type(rt)
            .with_resource_name(StrBytes::from_string(resource.to_string()))
            .with_resource_pattern_type(pattern)
            .with_principal(StrBytes::from_static_str("User:alice"))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(op)
            .with_permission_type(3)
    };
    let created = admin.call(
        admin.version_for::<CreateAclsRequest>(3)?,
        &CreateAclsRequest::default().with_creations(vec![
            acl(2, "alice-new", 3, 5),
            acl(2, "del-ok", 3, 6),
            acl(2, "del-read", 3, 3),
            acl(2, "ghost", 4, 8),
            acl(2, "cfg-ok", 3, 11),
            acl(2, "cfg-ok", 3, 7),
            acl(2, "cfg-ok", 3, 4),
            acl(3, "grp-ok", 3, 6),
            acl(5, "tx-a", 3, 4),
            acl(3, "grp-tx", 3, 3),
        ]),
    )?;
    ensure!(
        created.results.iter().all(|r| r.error_code == 0),
        "CreateAcls: {:?}",
        created.results
    );
    // every shard applies the ACLs: wait (bounded) until alice may describe cfg-ok's configs
    let describe = |c: &mut RawClient, resources: &[(i8, &str)]| -> Result<Described> {
        let req = DescribeConfigsRequest::default().with_resources(
            resources
                .iter()
                .map(|(rt, n)| {
                    DescribeConfigsResource::default()
                        .with_resource_type(*rt)
                        .with_resource_name(StrBytes::from_string(n.to_string()))
                        .with_configuration_keys(Some(vec![StrBytes::from_static_str(
                            "retention.ms",
                        )]))
                })
                .collect(),
        );
        let resp = c.call(c.version_for::<DescribeConfigsRequest>(4)?, &req)?;
        Ok(resp
            .results
            .iter()
            .map(|r| {
                (
                    r.resource_name.to_string(),
                    r.error_code,
                    r.configs
                        .iter()
                        .map(|e| {
                            (
                                e.name.to_string(),
                                e.value.as_ref().map_or(String::new(), |v| v.to_string()),
                            )
                        })
                        .collect(),
                )
            })
            .collect())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while describe(&mut alice, &[(2, "cfg-ok")])?[0].1 != 0 {
        ensure!(
            std::time::Instant::now() < deadline,
            "alice's ACLs never applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // CreateTopics: CREATE on alice-new only. The created topic's configs are hidden
    // (no DESCRIBE_CONFIGS on it), as Kafka does from v5.
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(15_000)
        .with_topics(
            ["alice-new", "forbidden-new"]
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(name(n))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                })
                .collect(),
        );
    let resp = alice.call(alice.version_for::<CreateTopicsRequest>(7)?, &req)?;
    let mut got: Vec<(String, i16, i16)> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.error_code,
                t.topic_config_error_code,
            )
        })
        .collect();
    got.sort();
    ensure!(
        got == [
            ("alice-new".to_string(), 0, TOPIC_DENIED),
            ("forbidden-new".to_string(), TOPIC_DENIED, 0)
        ],
        "CreateTopics: {got:?}"
    );
    let names = topic_names(&mut admin)?;
    ensure!(
        names.contains(&"alice-new".to_string()) && !names.contains(&"forbidden-new".to_string()),
        "after CreateTopics: {names:?}"
    );

    // DeleteRecords needs DELETE on each topic: del-ok's empty partition moves to 0,
    // del-read (READ only) and del-no are refused
    let delete_records = |topics: &[&str]| {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        kafka_protocol::messages::DeleteRecordsRequest::default()
            .with_timeout_ms(15_000)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        DeleteRecordsTopic::default()
                            .with_name(name(t))
                            .with_partitions(vec![DeleteRecordsPartition::default()
                                .with_partition_index(0)
                                .with_offset(-1)])
                    })
                    .collect(),
            )
    };
    let resp = alice.call(2, &delete_records(&["del-ok", "del-read", "del-no"]))?;
    let got: Vec<(String, i16, i64)> = resp
        .topics
        .iter()
        .map(|t| {
            let p = &t.partitions[0];
            (t.name.0.to_string(), p.error_code, p.low_watermark)
        })
        .collect();
    ensure!(
        got == [
            ("del-ok".to_string(), 0, 0),
            ("del-read".to_string(), TOPIC_DENIED, -1),
            ("del-no".to_string(), TOPIC_DENIED, -1)
        ],
        "DeleteRecords by alice: {got:?}"
    );

    // DeleteTopics by name: DELETE on del-ok; del-read is describable (READ) but not
    // deletable; a missing topic alice may describe is unknown, one she may not is denied
    let ids: std::collections::HashMap<String, uuid::Uuid> = admin
        .metadata(None, false)?
        .topics
        .iter()
        .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t.topic_id)))
        .collect();
    let by_name = |names: &[&str]| {
        DeleteTopicsRequest::default()
            .with_timeout_ms(15_000)
            .with_topics(
                names
                    .iter()
                    .map(|n| DeleteTopicState::default().with_name(Some(name(n))))
                    .collect(),
            )
    };
    let v = alice.version_for::<DeleteTopicsRequest>(6)?;
    ensure!(v == 6, "DeleteTopics v{v}");
    let resp = alice.call(
        v,
        &by_name(&[
            "del-ok",
            "del-no",
            "del-read",
            "ghost-missing",
            "nobody-missing",
        ]),
    )?;
    let mut got: Vec<(String, i16)> = resp
        .responses
        .iter()
        .map(|r| {
            (
                r.name.as_ref().map_or(String::new(), |n| n.0.to_string()),
                r.error_code,
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, i16)> = [
        ("del-no", TOPIC_DENIED),
        ("del-ok", 0),
        ("del-read", TOPIC_DENIED),
        ("ghost-missing", UNKNOWN_TOPIC),
        ("nobody-missing", TOPIC_DENIED),
    ]
    .iter()
    .map(|(n, c)| (n.to_string(), *c))
    .collect();
    ensure!(got == want, "DeleteTopics by name: {got:?}");
    // by id: the name of a topic alice may not describe is not revealed
    let by_id = DeleteTopicsRequest::default()
        .with_timeout_ms(15_000)
        .with_topics(
            ["del-no", "del-read"]
                .iter()
                .map(|n| DeleteTopicState::default().with_topic_id(ids[*n]))
                .collect(),
        );
    let resp = alice.call(v, &by_id)?;
    let mut got: Vec<(Option<String>, i16)> = resp
        .responses
        .iter()
        .map(|r| (r.name.as_ref().map(|n| n.0.to_string()), r.error_code))
        .collect();
    got.sort();
    ensure!(
        got == [
            (None, TOPIC_DENIED),
            (Some("del-read".to_string()), TOPIC_DENIED)
        ],
        "DeleteTopics by id: {got:?}"
    );
    let names = topic_names(&mut admin)?;
    ensure!(
        !names.contains(&"del-ok".to_string())
            && names.contains(&"del-no".to_string())
            && names.contains(&"del-read".to_string()),
        "after DeleteTopics: {names:?}"
    );

    // DescribeConfigs: a topic with DESCRIBE_CONFIGS (implied by ALTER_CONFIGS), one
    // without, and the broker (DESCRIBE_CONFIGS on the cluster)
    let mut got = describe(&mut alice, &[(2, "cfg-ok"), (2, "cfg-no"), (4, "")])?;
    got.sort();
    let codes: Vec<(&str, i16)> = got.iter().map(|(n, c, _)| (n.as_str(), *c)).collect();
    ensure!(
        codes
            == [
                ("", CLUSTER_DENIED),
                ("cfg-no", TOPIC_DENIED),
                ("cfg-ok", 0)
            ],
        "DescribeConfigs: {got:?}"
    );
    ensure!(
        got[2].2.iter().any(|(k, _)| k == "retention.ms") && got[1].2.is_empty(),
        "DescribeConfigs entries: {got:?}"
    );

    // IncrementalAlterConfigs: ALTER_CONFIGS on cfg-ok only
    let set = |topic: &str| {
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str("12345")))])
    };
    let resp = alice.call(
        alice.version_for::<IncrementalAlterConfigsRequest>(1)?,
        &IncrementalAlterConfigsRequest::default()
            .with_resources(vec![set("cfg-ok"), set("cfg-no")]),
    )?;
    let mut got: Vec<(String, i16)> = resp
        .responses
        .iter()
        .map(|r| (r.resource_name.to_string(), r.error_code))
        .collect();
    got.sort();
    ensure!(
        got == [
            ("cfg-no".to_string(), TOPIC_DENIED),
            ("cfg-ok".to_string(), 0)
        ],
        "IncrementalAlterConfigs: {got:?}"
    );
    let retention = describe(&mut admin, &[(2, "cfg-ok"), (2, "cfg-no")])?;
    let value = |i: usize| {
        retention[i]
            .2
            .iter()
            .find(|(k, _)| k == "retention.ms")
            .map(|(_, v)| v.clone())
    };
    ensure!(
        value(0).as_deref() == Some("12345") && value(1).as_deref() != Some("12345"),
        "retention.ms after IncrementalAlterConfigs: {retention:?}"
    );

    // CreatePartitions: ALTER on cfg-ok only
    let resp = alice.call(
        alice.version_for::<CreatePartitionsRequest>(3)?,
        &CreatePartitionsRequest::default()
            .with_timeout_ms(15_000)
            .with_topics(
                ["cfg-ok", "cfg-no"]
                    .iter()
                    .map(|t| {
                        CreatePartitionsTopic::default()
                            .with_name(name(t))
                            .with_count(2)
                    })
                    .collect(),
            ),
    )?;
    let mut got: Vec<(String, i16)> = resp
        .results
        .iter()
        .map(|r| (r.name.0.to_string(), r.error_code))
        .collect();
    got.sort();
    ensure!(
        got == [
            ("cfg-no".to_string(), TOPIC_DENIED),
            ("cfg-ok".to_string(), 0)
        ],
        "CreatePartitions: {got:?}"
    );
    let counts: std::collections::HashMap<String, usize> = admin
        .metadata(Some(&["cfg-ok", "cfg-no"]), false)?
        .topics
        .iter()
        .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t.partitions.len())))
        .collect();
    ensure!(
        counts.get("cfg-ok") == Some(&2) && counts.get("cfg-no") == Some(&1),
        "partitions after CreatePartitions: {counts:?}"
    );

    // OffsetDelete in grp-ok (DELETE on it): READ on del-read, not on cfg-ok
    let resp = alice.call(
        alice.version_for::<OffsetDeleteRequest>(0)?,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("grp-ok")))
            .with_topics(
                ["del-read", "cfg-ok"]
                    .iter()
                    .map(|t| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(name(t))
                            .with_partitions(vec![
                                OffsetDeleteRequestPartition::default().with_partition_index(0)
                            ])
                    })
                    .collect(),
            ),
    )?;
    let mut got: Vec<(String, Vec<i16>)> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.error_code).collect(),
            )
        })
        .collect();
    got.sort();
    ensure!(
        resp.error_code == 0
            && got
                == [
                    ("cfg-ok".to_string(), vec![TOPIC_DENIED]),
                    ("del-read".to_string(), vec![0])
                ],
        "OffsetDelete: {} {got:?}",
        resp.error_code
    );
    let fetched = admin.call(
        admin.version_for::<OffsetFetchRequest>(7)?,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("grp-ok")))
            .with_topics(Some(
                ["del-read", "cfg-ok"]
                    .iter()
                    .map(|t| {
                        OffsetFetchRequestTopic::default()
                            .with_name(name(t))
                            .with_partition_indexes(vec![0])
                    })
                    .collect(),
            )),
    )?;
    let mut offsets: Vec<(String, i64)> = fetched
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.committed_offset))
        })
        .collect();
    offsets.sort();
    ensure!(
        offsets == [("cfg-ok".to_string(), 0), ("del-read".to_string(), -1)],
        "grp-ok's offsets after OffsetDelete: {offsets:?}"
    );

    // AddPartitionsToTxn v3 is all or nothing: with cfg-no denied, cfg-ok is not added
    let resp = alice.call(
        alice.version_for::<AddPartitionsToTxnRequest>(3)?,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str("tx-a")))
            .with_v3_and_below_producer_id(ProducerId(0))
            .with_v3_and_below_producer_epoch(0)
            .with_v3_and_below_topics(
                ["cfg-ok", "cfg-no"]
                    .iter()
                    .map(|t| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(name(t))
                            .with_partitions(vec![0])
                    })
                    .collect(),
            ),
    )?;
    let mut got: Vec<(String, Vec<i16>)> = resp
        .results_by_topic_v3_and_below
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
                    .collect(),
            )
        })
        .collect();
    got.sort();
    ensure!(
        got == [
            ("cfg-no".to_string(), vec![TOPIC_DENIED]),
            ("cfg-ok".to_string(), vec![OPERATION_NOT_ATTEMPTED])
        ],
        "AddPartitionsToTxn: {got:?}"
    );

    // the read-only APIs that name several resources answer each one too: READ on
    // del-read (DescribeProducers), DESCRIBE implied by it (OffsetForLeaderEpoch), by
    // DELETE on grp-ok (FindCoordinator v4) and by WRITE on tx-a (DescribeTransactions)
    let resp = alice.call(
        0,
        &DescribeProducersRequest::default().with_topics(
            ["del-read", "cfg-no"]
                .iter()
                .map(|t| {
                    describe_producers_request::TopicRequest::default()
                        .with_name(name(t))
                        .with_partition_indexes(vec![0])
                })
                .collect(),
        ),
    )?;
    let mut got: Vec<(String, Vec<i16>)> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.error_code).collect(),
            )
        })
        .collect();
    got.sort();
    ensure!(
        got == [
            ("cfg-no".to_string(), vec![TOPIC_DENIED]),
            ("del-read".to_string(), vec![0])
        ],
        "DescribeProducers: {got:?}"
    );
    let resp = alice.call(
        alice.version_for::<OffsetForLeaderEpochRequest>(4)?,
        &OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                ["del-read", "cfg-no"]
                    .iter()
                    .map(|t| {
                        OffsetForLeaderTopic::default()
                            .with_topic(name(t))
                            .with_partitions(vec![OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(0)])
                    })
                    .collect(),
            ),
    )?;
    let mut got: Vec<(String, Vec<i16>)> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.topic.0.to_string(),
                t.partitions.iter().map(|p| p.error_code).collect(),
            )
        })
        .collect();
    got.sort();
    ensure!(
        got == [
            ("cfg-no".to_string(), vec![TOPIC_DENIED]),
            ("del-read".to_string(), vec![0])
        ],
        "OffsetForLeaderEpoch: {got:?}"
    );
    let resp = alice.call(
        4,
        &FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![
                StrBytes::from_static_str("grp-ok"),
                StrBytes::from_static_str("grp-no"),
            ]),
    )?;
    let mut got: Vec<(String, i16)> = resp
        .coordinators
        .iter()
        .map(|c| (c.key.to_string(), c.error_code))
        .collect();
    got.sort();
    ensure!(
        got == [
            ("grp-no".to_string(), GROUP_DENIED),
            ("grp-ok".to_string(), 0)
        ],
        "FindCoordinator v4: {got:?}"
    );
    let resp = alice.call(
        0,
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![
            TransactionalId(StrBytes::from_static_str("tx-a")),
            TransactionalId(StrBytes::from_static_str("tx-b")),
        ]),
    )?;
    let codes: std::collections::HashMap<String, i16> = resp
        .transaction_states
        .iter()
        .map(|t| (t.transactional_id.to_string(), t.error_code))
        .collect();
    ensure!(
        codes.len() == 2
            && codes.get("tx-b") == Some(&TXN_DENIED)
            && codes.get("tx-a").is_some_and(|c| *c != TXN_DENIED),
        "DescribeTransactions: {codes:?}"
    );

    // TxnOffsetCommit (WRITE on tx-a, READ on grp-tx): READ on del-read, not on cfg-no.
    // The transaction was never begun, so the coordinator refuses del-read its own way.
    let resp = alice.call(
        alice.version_for::<TxnOffsetCommitRequest>(3)?,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx-a")))
            .with_group_id(GroupId(StrBytes::from_static_str("grp-tx")))
            .with_producer_id(ProducerId(0))
            .with_producer_epoch(0)
            .with_generation_id(-1)
            .with_topics(
                ["del-read", "cfg-no"]
                    .iter()
                    .map(|t| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(name(t))
                            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1)])
                    })
                    .collect(),
            ),
    )?;
    let codes: std::collections::HashMap<String, Vec<i16>> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.error_code).collect(),
            )
        })
        .collect();
    ensure!(
        codes.len() == 2
            && codes.get("cfg-no") == Some(&vec![TOPIC_DENIED])
            && codes
                .get("del-read")
                .is_some_and(|c| c.len() == 1 && c[0] != TOPIC_DENIED),
        "TxnOffsetCommit: {codes:?}"
    );

    // DeleteGroups: DELETE on grp-ok only; the admin then finds grp-ok gone, grp-no there
    let delete_groups = |c: &mut RawClient| -> Result<Vec<(String, i16)>> {
        let resp = c.call(
            c.version_for::<DeleteGroupsRequest>(2)?,
            &DeleteGroupsRequest::default().with_groups_names(vec![
                GroupId(StrBytes::from_static_str("grp-ok")),
                GroupId(StrBytes::from_static_str("grp-no")),
            ]),
        )?;
        let mut got: Vec<(String, i16)> = resp
            .results
            .iter()
            .map(|r| (r.group_id.to_string(), r.error_code))
            .collect();
        got.sort();
        Ok(got)
    };
    let got = delete_groups(&mut alice)?;
    ensure!(
        got == [
            ("grp-no".to_string(), GROUP_DENIED),
            ("grp-ok".to_string(), 0)
        ],
        "DeleteGroups: {got:?}"
    );
    let got = delete_groups(&mut admin)?;
    ensure!(
        got == [
            ("grp-no".to_string(), 0),
            ("grp-ok".to_string(), GROUP_ID_NOT_FOUND)
        ],
        "DeleteGroups by the admin afterwards: {got:?}"
    );
    // DescribeLogDirs needs DESCRIBE on the cluster: alice has none (v3+ say so in the
    // error code, v1-2 only by the missing directory); the admin sees the data dir
    let all = kafka_protocol::messages::DescribeLogDirsRequest::default().with_topics(None);
    let denied = alice.call(4, &all)?;
    ensure!(
        denied.error_code == CLUSTER_DENIED && denied.results.is_empty(),
        "DescribeLogDirs v4 by alice: {denied:?}"
    );
    let denied = alice.call(2, &all)?;
    ensure!(
        denied.error_code == 0 && denied.results.is_empty(),
        "DescribeLogDirs v2 by alice: {denied:?}"
    );
    let allowed = admin.call(4, &all)?;
    ensure!(
        allowed.error_code == 0
            && allowed.results.len() == 1
            && allowed.results[0]
                .topics
                .iter()
                .any(|t| t.name.0.as_str() == "cfg-ok"),
        "DescribeLogDirs v4 by the admin: {allowed:?}"
    );
    Ok(())
}

/// The value of a counter family without labels in the broker's /metrics.
fn counter(metrics_port: u16, family: &str) -> Result<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        format!("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:{metrics_port}\r\n\r\n").as_bytes(),
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(family))
        .with_context(|| format!("no {family} in /metrics"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

/// KIP-368 with `connections.max.reauth.ms` = 3000: librdkafka clients re-authenticate
/// on their open connections and keep producing and consuming over several session
/// lifetimes; a raw client that re-authenticates in time keeps its connection, and one
/// that does not is closed at its first request after the session ended (a late
/// SaslHandshake included), as Kafka does.
#[test]
fn sasl_sessions_end_unless_reauthenticated() -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::Message;
    // librdkafka re-authenticates at 90 % of the lifetime: 300 ms of slack on a busy machine
    const LIFETIME_MS: i64 = 3000;
    let pw_dir = tempfile::tempdir()?;
    let alice_pw = write_password(pw_dir.path(), "alice", "alice-secret")?;
    let sasl_port = free_port();
    let metrics_port = free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let broker = BrokerProcess::spawn_full(
        1,
        &[
            ("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512"),
            ("connections.max.reauth.ms", &LIFETIME_MS.to_string()),
            ("metrics.listen", &metrics_listen),
        ],
        Some(&format!("SASL_PLAINTEXT://127.0.0.1:{sasl_port}")),
        |data| add_users(data, &[("alice", "SCRAM-SHA-512", &alice_pw)]),
    )?;
    broker.create_topic("reauth", 1, &[])?;
    let logins = || counter(metrics_port, "sluice_sasl_authentications_total");
    let expired = || counter(metrics_port, "sluice_sasl_expired_connections_total");
    let before = logins()?;

    // librdkafka over 3.5 session lifetimes: every message produced is consumed
    let mut cfg = rdkafka::ClientConfig::new();
    cfg.set("bootstrap.servers", format!("127.0.0.1:{sasl_port}"))
        .set("broker.address.family", "v4")
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", "alice")
        .set("sasl.password", "alice-secret")
        .set("log_level", "4");
    let producer: BaseProducer = cfg.clone().set("linger.ms", "0").create()?;
    // short long-polls: librdkafka re-authenticates once the request in flight is answered
    let consumer: BaseConsumer = cfg
        .clone()
        .set("group.id", "reauth-g")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("reauth", 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let start = std::time::Instant::now();
    let run = Duration::from_millis(LIFETIME_MS as u64 * 7 / 2);
    let (mut sent, mut received) = (0u32, Vec::new());
    while start.elapsed() < run {
        let value = format!("m-{sent}");
        producer
            .send(BaseRecord::<(), _>::to("reauth").payload(&value))
            .map_err(|(e, _)| e)?;
        sent += 1;
        producer.poll(Duration::ZERO);
        let until = std::time::Instant::now() + Duration::from_millis(200);
        while std::time::Instant::now() < until {
            if let Some(m) = consumer.poll(Duration::from_millis(50)) {
                let m = m?;
                received.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            }
        }
    }
    producer.flush(Duration::from_secs(10))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received.len() < sent as usize && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            received.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
        }
    }
    let want: Vec<String> = (0..sent).map(|i| format!("m-{i}")).collect();
    ensure!(
        received == want,
        "sent {sent}, received {} ({:?}…)",
        received.len(),
        received.iter().take(5).collect::<Vec<_>>()
    );
    // two clients with at least one connection each, each re-authenticated at least
    // three times; none was closed for an expired session
    let grown = logins()? - before;
    ensure!(
        grown >= 8.0,
        "only {grown} SASL logins in 3.5 session lifetimes"
    );
    ensure!(
        expired()? == 0.0,
        "a librdkafka connection outlived its session"
    );
    drop((producer, consumer));

    // raw clients: the session lifetime is announced; a re-authentication renews it
    let lifetime = Duration::from_millis(LIFETIME_MS as u64);
    let metadata_ok = |c: &mut RawClient| -> Result<()> {
        let md = c.metadata(Some(&["reauth"]), false)?;
        ensure!(
            md.topics.first().is_some_and(|t| t.error_code == 0),
            "{md:?}"
        );
        Ok(())
    };
    let (mut renewing, got) = raw_login(sasl_port, "alice", "alice-secret")?;
    let (mut lapsing, _) = raw_login(sasl_port, "alice", "alice-secret")?;
    let (mut late, _) = raw_login(sasl_port, "alice", "alice-secret")?;
    // every session above ends by t0 + lifetime
    let t0 = std::time::Instant::now();
    ensure!(got == LIFETIME_MS, "session lifetime {got}");
    metadata_ok(&mut renewing)?;
    metadata_ok(&mut lapsing)?;
    std::thread::sleep(lifetime / 2);
    // renewed until t0 + 1.5 lifetimes at the earliest, `renewed` + lifetime at the latest
    ensure!(plain_login(&mut renewing, "alice", "alice-secret")? == LIFETIME_MS);
    let renewed = std::time::Instant::now();
    let closed = |c: &mut RawClient, what: &str| -> Result<()> {
        match c.read_frame()? {
            common::raw::FrameRead::Closed => Ok(()),
            other => bail!("{what}: the connection is still open ({other:?})"),
        }
    };
    let metadata = kafka_protocol::messages::MetadataRequest::default();
    let v = lapsing.version_for::<kafka_protocol::messages::MetadataRequest>(12)?;
    std::thread::sleep((lifetime + Duration::from_millis(100)).saturating_sub(t0.elapsed()));
    lapsing.send(v, &metadata)?;
    closed(&mut lapsing, "a Metadata request after the session ended")?;
    late.send(
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    )?;
    closed(
        &mut late,
        "a re-authentication begun after the session ended",
    )?;
    // past the first session's end, within the renewed one
    metadata_ok(&mut renewing).context("a re-authenticated connection")?;
    // and the renewed session ends too, unless renewed again
    std::thread::sleep((lifetime + Duration::from_millis(100)).saturating_sub(renewed.elapsed()));
    renewing.send(v, &metadata)?;
    closed(&mut renewing, "a request after the renewed session ended")?;
    ensure!(expired()? == 3.0, "expired connections: {}", expired()?);
    Ok(())
}
