use super::*;
use proptest::prelude::*;
use AclOperation::*;
use AclPermissionType::{Allow, Deny};
use PatternType::{Literal, Prefixed};
use ResourceType::{Cluster, Group, Topic, TransactionalId};

fn acl(
    rt: ResourceType,
    name: &str,
    pt: PatternType,
    who: &str,
    host: &str,
    op: AclOperation,
    perm: AclPermissionType,
) -> AclBinding {
    AclBinding {
        resource_type: rt,
        resource_name: name.to_string(),
        pattern_type: pt,
        principal: who.to_string(),
        host: host.to_string(),
        operation: op,
        permission: perm,
    }
}

fn user(n: &str) -> KafkaPrincipal {
    KafkaPrincipal::user(n)
}

fn with(acls: &[AclBinding]) -> Authorizer {
    let mut a = Authorizer::new(vec![user("admin")], false);
    for r in a.add(acls.to_vec()) {
        r.unwrap();
    }
    a
}

const H: &str = "10.0.0.1";

#[test]
fn super_users_bypass_even_deny() {
    let a = with(&[acl(Topic, "*", Literal, "User:*", "*", All, Deny)]);
    assert!(a.authorize(&user("admin"), H, Write, Topic, "t"));
    assert!(!a.authorize(&user("alice"), H, Write, Topic, "t"));
}

#[test]
fn literal_wildcard_and_prefixed_patterns_apply() {
    let a = with(&[
        acl(Topic, "orders", Literal, "User:alice", "*", Read, Allow),
        acl(Topic, "*", Literal, "User:bob", "*", Read, Allow),
        acl(Topic, "logs-", Prefixed, "User:carol", "*", Read, Allow),
    ]);
    assert!(a.authorize(&user("alice"), H, Read, Topic, "orders"));
    assert!(!a.authorize(&user("alice"), H, Read, Topic, "orders2"));
    assert!(a.authorize(&user("bob"), H, Read, Topic, "anything"));
    assert!(a.authorize(&user("carol"), H, Read, Topic, "logs-app"));
    assert!(a.authorize(&user("carol"), H, Read, Topic, "logs-"));
    assert!(!a.authorize(&user("carol"), H, Read, Topic, "logs"));
    assert!(!a.authorize(&user("carol"), H, Read, Group, "logs-app"));
}

#[test]
fn deny_wins_over_allow_from_any_pattern() {
    let a = with(&[
        acl(Topic, "*", Literal, "User:*", "*", All, Allow),
        acl(Topic, "secret", Prefixed, "User:alice", "*", Read, Deny),
    ]);
    assert!(a.authorize(&user("alice"), H, Read, Topic, "public"));
    assert!(!a.authorize(&user("alice"), H, Read, Topic, "secret-x"));
    assert!(a.authorize(&user("alice"), H, Write, Topic, "secret-x"));
    assert!(a.authorize(&user("bob"), H, Read, Topic, "secret-x"));
}

#[test]
fn principal_and_host_matching() {
    let a = with(&[
        acl(Topic, "t", Literal, "User:*", H, Read, Allow),
        acl(Topic, "u", Literal, "Group:*", "*", Read, Allow),
    ]);
    assert!(a.authorize(&user("anyone"), H, Read, Topic, "t"));
    assert!(!a.authorize(&user("anyone"), "10.0.0.2", Read, Topic, "t"));
    // only User:* is a wildcard principal
    assert!(!a.authorize(&KafkaPrincipal::new("Group", "x"), H, Read, Topic, "u"));
}

#[test]
fn implied_operations_only_from_allow() {
    let a = with(&[
        acl(Topic, "r", Literal, "User:a", "*", Read, Allow),
        acl(Topic, "c", Literal, "User:a", "*", Create, Allow),
        acl(Topic, "ac", Literal, "User:a", "*", AlterConfigs, Allow),
        acl(Topic, "d", Literal, "User:a", "*", Read, Deny),
        acl(Topic, "d", Literal, "User:a", "*", Describe, Allow),
        acl(Topic, "all", Literal, "User:a", "*", All, Deny),
    ]);
    let a_ = user("a");
    assert!(a.authorize(&a_, H, Describe, Topic, "r"));
    assert!(!a.authorize(&a_, H, Describe, Topic, "c"));
    assert!(a.authorize(&a_, H, DescribeConfigs, Topic, "ac"));
    assert!(!a.authorize(&a_, H, Describe, Topic, "ac"));
    // DENY READ does not deny DESCRIBE
    assert!(a.authorize(&a_, H, Describe, Topic, "d"));
    assert!(!a.authorize(&a_, H, Read, Topic, "d"));
    assert!(!a.authorize(&a_, H, Describe, Topic, "all"));
    for op in [Write, Delete, Alter] {
        let z = with(&[acl(Topic, "t", Literal, "User:a", "*", op, Allow)]);
        assert!(z.authorize(&a_, H, Describe, Topic, "t"));
    }
}

#[test]
fn no_acl_default_only_when_no_acl_applies_to_the_resource() {
    let mut a = with(&[acl(Topic, "t", Literal, "User:bob", "*", Read, Allow)]);
    assert!(!a.authorize(&user("alice"), H, Read, Topic, "other"));
    a.set_config(vec![], true);
    assert!(a.authorize(&user("alice"), H, Read, Topic, "other"));
    assert!(a.authorize(&user("alice"), H, Read, Group, "g"));
    // an ACL exists on "t" (for bob): alice is denied although it does not name her
    assert!(!a.authorize(&user("alice"), H, Read, Topic, "t"));
}

#[test]
fn idempotent_write_via_write_on_any_topic() {
    let cluster = |a: &Authorizer, p: &KafkaPrincipal| {
        a.authorize(p, H, IdempotentWrite, Cluster, "kafka-cluster")
            || a.authorize_by_resource_type(p, H, Write, Topic)
    };
    let a = with(&[
        acl(Topic, "orders", Literal, "User:w", "*", Write, Allow),
        acl(
            Cluster,
            "kafka-cluster",
            Literal,
            "User:i",
            "*",
            IdempotentWrite,
            Allow,
        ),
        acl(Topic, "x", Prefixed, "User:d", "*", All, Allow),
        acl(Topic, "x", Prefixed, "User:d", "*", Write, Deny),
        acl(Topic, "y-1", Literal, "User:e", "*", Write, Allow),
        acl(Topic, "y", Prefixed, "User:e", "*", Write, Deny),
        acl(Topic, "z", Prefixed, "User:f", "*", Write, Allow),
        acl(Topic, "z", Literal, "User:f", "*", Write, Deny),
    ]);
    assert!(cluster(&a, &user("w")));
    assert!(cluster(&a, &user("i")));
    assert!(!cluster(&a, &user("nobody")));
    assert!(
        !cluster(&a, &user("d")),
        "the prefix DENY dominates the prefix ALLOW"
    );
    assert!(
        !cluster(&a, &user("e")),
        "the prefix DENY dominates the literal ALLOW"
    );
    assert!(
        cluster(&a, &user("f")),
        "a literal DENY does not dominate a prefix ALLOW"
    );
    assert!(cluster(&a, &user("admin")));
    // READ does not imply WRITE, and implied operations do not count here
    let r = with(&[acl(Topic, "t", Literal, "User:r", "*", Read, Allow)]);
    assert!(!r.authorize_by_resource_type(&user("r"), H, Describe, Topic));
    let wild_deny = with(&[
        acl(Topic, "t", Literal, "User:w", "*", Write, Allow),
        acl(Topic, "*", Literal, "User:*", "*", Write, Deny),
    ]);
    assert!(!wild_deny.authorize_by_resource_type(&user("w"), H, Write, Topic));
    assert!(!wild_deny.authorize_by_resource_type(&user("w"), H, Any, Topic));
    let txn = with(&[acl(
        TransactionalId,
        "*",
        Literal,
        "User:t",
        "*",
        Write,
        Allow,
    )]);
    assert!(txn.authorize_by_resource_type(&user("t"), H, Write, TransactionalId));
}

#[test]
fn add_remove_describe() {
    let mut a = with(&[]);
    let b1 = acl(Topic, "t", Literal, "User:a", "*", Read, Allow);
    let b2 = acl(Topic, "t", Prefixed, "User:a", "*", Read, Allow);
    let bad = acl(Topic, "", Literal, "User:a", "*", Read, Allow);
    let res = a.add(vec![b1.clone(), b1.clone(), b2.clone(), bad]);
    assert!(res[0].is_ok() && res[1].is_ok() && res[2].is_ok() && res[3].is_err());
    assert_eq!(a.len(), 2);
    assert_eq!(
        a.describe(&AclBindingFilter::any()),
        vec![b1.clone(), b2.clone()]
    );
    let mut only_prefixed = AclBindingFilter::any();
    only_prefixed.pattern_type = Prefixed;
    assert_eq!(a.remove(&only_prefixed), vec![b2.clone()]);
    assert_eq!(a.len(), 1);
    assert!(a.remove(&only_prefixed).is_empty());
    assert!(a.remove_one(&b1));
    assert!(!a.remove_one(&b1));
    assert_eq!(a.len(), 0);
    assert!(a.bindings().next().is_none());
}

#[test]
fn thousands_of_acls() {
    let mut acls = Vec::new();
    for i in 0..3000 {
        acls.push(acl(
            Topic,
            &format!("team{i}-"),
            Prefixed,
            &format!("User:u{i}"),
            "*",
            Read,
            Allow,
        ));
        acls.push(acl(
            Topic,
            &format!("team{i}-x"),
            Literal,
            &format!("User:u{i}"),
            "*",
            Write,
            Allow,
        ));
    }
    let a = with(&acls);
    assert_eq!(a.len(), 6000);
    for i in (0..3000).step_by(7) {
        let u = user(&format!("u{i}"));
        assert!(a.authorize(&u, H, Read, Topic, &format!("team{i}-orders")));
        assert!(a.authorize(&u, H, Write, Topic, &format!("team{i}-x")));
        assert!(!a.authorize(&u, H, Write, Topic, &format!("team{i}-y")));
        assert!(!a.authorize(&u, H, Read, Topic, &format!("team{}-orders", i + 1)));
    }
}

// ---- model test: the indexed authorizer against a linear scan written from Kafka's rules ----

fn model_decide(b: &AclBinding, p: &KafkaPrincipal, host: &str, op: AclOperation) -> Option<bool> {
    let who = b.principal == p.to_string() || b.principal == "User:*";
    let from = b.host == "*" || b.host == host;
    let allow = b.permission == Allow;
    let op_ok = b.operation == All
        || b.operation == op
        || (allow && op == Describe && [Read, Write, Delete, Alter].contains(&b.operation))
        || (allow && op == DescribeConfigs && b.operation == AlterConfigs);
    (who && from && op_ok).then_some(allow)
}

/// The ACL list and the authorizer's configuration, for the model functions.
struct Model<'a> {
    acls: &'a [AclBinding],
    supers: &'a [KafkaPrincipal],
    everyone: bool,
}

fn model_authorize(
    m: &Model<'_>,
    p: &KafkaPrincipal,
    host: &str,
    op: AclOperation,
    rt: ResourceType,
    name: &str,
) -> bool {
    let (acls, supers, everyone) = (m.acls, m.supers, m.everyone);
    if supers.contains(p) {
        return true;
    }
    let applying: Vec<&AclBinding> = acls
        .iter()
        .filter(|b| b.resource_type == rt)
        .filter(|b| match b.pattern_type {
            Literal => b.resource_name == name || b.resource_name == "*",
            Prefixed => name.starts_with(&b.resource_name),
            _ => false,
        })
        .collect();
    if applying.is_empty() {
        return everyone;
    }
    let results: Vec<bool> = applying
        .iter()
        .filter_map(|b| model_decide(b, p, host, op))
        .collect();
    !results.contains(&false) && results.contains(&true)
}

/// Kafka's default `Authorizer.authorizeByResourceType`, transcribed over a list.
fn model_by_type(
    m: &Model<'_>,
    p: &KafkaPrincipal,
    host: &str,
    op: AclOperation,
    rt: ResourceType,
) -> bool {
    use std::collections::HashSet;
    if model_authorize(m, p, host, op, rt, "hardcode") {
        return true;
    }
    let (mut deny_lit, mut deny_pre, mut allow_lit, mut allow_pre) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    let mut wildcard_allow = false;
    for b in m.acls.iter().filter(|b| b.resource_type == rt) {
        if (b.host != host && b.host != "*")
            || (b.principal != p.to_string() && b.principal != "User:*")
            || (b.operation != op && b.operation != All)
        {
            continue;
        }
        let name = b.resource_name.as_str();
        match (b.permission, b.pattern_type) {
            (Deny, Literal) if name == "*" => return false,
            (Deny, Literal) => drop(deny_lit.insert(name)),
            (Deny, Prefixed) if name.is_empty() => return false,
            (Deny, Prefixed) => drop(deny_pre.insert(name)),
            (Allow, Literal) if name == "*" => wildcard_allow = true,
            (Allow, Literal) => drop(allow_lit.insert(name)),
            (Allow, Prefixed) => drop(allow_pre.insert(name)),
            _ => {}
        }
    }
    if wildcard_allow {
        return true;
    }
    for (literal, set) in [(true, &allow_lit), (false, &allow_pre)] {
        for s in set {
            if literal && deny_lit.contains(s) {
                continue;
            }
            let mut prefix = String::new();
            let dominated = s.chars().any(|c| {
                prefix.push(c);
                deny_pre.contains(prefix.as_str())
            });
            if !dominated {
                return true;
            }
        }
    }
    false
}

fn binding_strategy() -> impl Strategy<Value = AclBinding> {
    (
        prop::sample::select(vec![Topic, Group]),
        prop_oneof![Just("*".to_string()), "[abé]{1,4}"],
        prop::sample::select(vec![Literal, Prefixed]),
        prop::sample::select(vec!["User:alice", "User:bob", "User:*", "Group:alice"]),
        prop::sample::select(vec!["*", "1.1.1.1"]),
        prop::sample::select(vec![
            All,
            Read,
            Write,
            Delete,
            Alter,
            Create,
            Describe,
            AlterConfigs,
            DescribeConfigs,
        ]),
        prop::sample::select(vec![Allow, Allow, Deny]),
    )
        .prop_map(|(rt, name, pt, who, host, op, perm)| acl(rt, &name, pt, who, host, op, perm))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn authorize_matches_a_linear_scan(
        acls in prop::collection::vec(binding_strategy(), 0..40),
        everyone in any::<bool>(),
        queries in prop::collection::vec((
            prop::sample::select(vec!["alice", "bob", "carol", "admin"]),
            prop::sample::select(vec!["1.1.1.1", "2.2.2.2"]),
            prop::sample::select(vec![Read, Write, Delete, Alter, Create, Describe, AlterConfigs, DescribeConfigs]),
            prop::sample::select(vec![Topic, Group]),
            prop_oneof![Just("*".to_string()), "[abé]{0,5}"],
        ), 1..30),
        removals in prop::collection::vec(binding_strategy(), 0..10),
    ) {
        let supers = vec![user("admin")];
        let mut a = Authorizer::new(supers.clone(), everyone);
        a.add(acls.clone());
        let mut model: Vec<AclBinding> = acls.clone();
        model.sort();
        model.dedup();
        // remove some, by exact binding and by filter
        for r in &removals {
            let in_model = model.contains(r);
            prop_assert_eq!(a.remove_one(r), in_model);
            model.retain(|b| b != r);
        }
        let mut filter = AclBindingFilter::any();
        filter.resource_type = Group;
        let gone = a.remove(&filter);
        prop_assert!(gone.iter().all(|b| b.resource_type == Group));
        model.retain(|b| b.resource_type != Group || !gone.contains(b));
        prop_assert!(model.iter().all(|b| b.resource_type != Group));
        prop_assert_eq!(a.describe(&AclBindingFilter::any()), model.clone());
        prop_assert_eq!(a.len(), model.len());
        // re-add everything so the queries see Group ACLs too
        a.add(acls.clone());
        let mut model = acls.clone();
        model.sort();
        model.dedup();
        let m = Model { acls: &model, supers: &supers, everyone };
        for (who, host, op, rt, name) in &queries {
            let p = user(who);
            prop_assert_eq!(
                a.authorize(&p, host, *op, *rt, name),
                model_authorize(&m, &p, host, *op, *rt, name),
                "{} {} {:?} {:?} {:?}", who, host, op, rt, name
            );
            prop_assert_eq!(
                a.authorize_by_resource_type(&p, host, *op, *rt),
                model_by_type(&m, &p, host, *op, *rt),
                "by type: {} {} {:?} {:?}", who, host, op, rt
            );
        }
    }
}
