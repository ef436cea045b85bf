//! The two things Sluice reads from a Kafka JAAS line (`sasl.jaas.config` and its
//! `listener.name.<listener>.<mechanism>.sasl.jaas.config` forms), e.g.
//!
//! ```text
//! org.apache.kafka.common.security.plain.PlainLoginModule required
//!     username="admin" password="admin-secret" user_admin="admin-secret" user_n2="x";
//! ```
//!
//! - `username` / `password`: this node's own login toward others;
//! - `user_<name>="<password>"`: the users a PLAIN server accepts (Kafka's PlainLoginModule).

use std::collections::HashMap;

/// `(name, value)` of every `name="value"` option of the line, in order.
fn options(jaas: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = jaas;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq]
            .rsplit(|c: char| c.is_whitespace() || c == ';')
            .next()
            .unwrap_or("");
        let value_and_more = &rest[eq + 2..];
        let Some(end) = value_and_more.find('"') else {
            break;
        };
        out.push((name, &value_and_more[..end]));
        rest = &value_and_more[end + 1..];
    }
    out
}

/// `username="…"` and `password="…"`; None without a non-empty user name and a password.
pub(crate) fn credentials(jaas: &str) -> Option<(String, String)> {
    let opts = options(jaas);
    let get = |key: &str| opts.iter().find(|(n, _)| *n == key).map(|(_, v)| *v);
    match (get("username"), get("password")) {
        (Some(u), Some(p)) if !u.is_empty() => Some((u.to_string(), p.to_string())),
        _ => None,
    }
}

/// The `user_<name>="<password>"` entries: user name → password.
pub(crate) fn users(jaas: &str) -> HashMap<String, String> {
    options(jaas)
        .into_iter()
        .filter_map(|(n, v)| {
            let user = n.strip_prefix("user_")?;
            (!user.is_empty()).then(|| (user.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule required \
        username=\"admin\" password=\"s3cret=\" user_admin=\"s3cret=\" user_n2=\"two\";";

    #[test]
    fn reads_login_and_users() {
        assert_eq!(
            credentials(LINE),
            Some(("admin".to_string(), "s3cret=".to_string()))
        );
        let users = users(LINE);
        assert_eq!(users.len(), 2);
        assert_eq!(users["admin"], "s3cret=");
        assert_eq!(users["n2"], "two");
    }

    #[test]
    fn missing_or_empty_login_is_none() {
        assert_eq!(credentials("x required password=\"p\";"), None);
        assert_eq!(
            credentials("x required username=\"\" password=\"p\";"),
            None
        );
        assert!(users("x required username=\"a\" password=\"p\";").is_empty());
        // an unterminated value ends the scan instead of reading past the line
        assert_eq!(credentials("x required username=\"a\" password=\"p"), None);
    }
}
