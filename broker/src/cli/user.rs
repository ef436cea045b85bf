//! `sluice user`: SCRAM users. `add` writes a user into a data dir before the broker's first
//! start (offline, as Kafka's `kafka-storage format --add-scram`); `set`, `delete` and `list`
//! use AlterUserScramCredentials / DescribeUserScramCredentials on a running cluster. The
//! password is read from a file (first line), never from the command line, and only its
//! salted form leaves this process.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use sluice_broker::security::client::{salt_password, scram_name, scram_type_code};

use super::client::Client;
use super::format::{kafka_error, print_json, Format, Table};
use super::ClientArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum UserVerb {
    /// Before the first start: add a SCRAM user to a data dir (no broker needed).
    Add {
        name: String,
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// File whose first line is the password.
        #[arg(long)]
        password_file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// Set (create or change) a user's SCRAM credential on a running cluster.
    Set {
        name: String,
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        #[arg(long)]
        password_file: PathBuf,
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// Delete a user's SCRAM credential for one mechanism.
    Delete {
        name: String,
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
    },
    /// Users and their SCRAM mechanisms.
    List,
}

fn password(file: &PathBuf) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("{} has an empty first line", file.display());
    }
    Ok(line)
}

fn type_code(mechanism: &str) -> Result<i8> {
    scram_type_code(mechanism)
        .with_context(|| format!("--mechanism {mechanism} is not SCRAM-SHA-256 or SCRAM-SHA-512"))
}

pub(crate) fn run(verb: &UserVerb, args: &ClientArgs) -> Result<()> {
    match verb {
        UserVerb::Add {
            name,
            mechanism,
            password_file,
            data_dir,
            iterations,
        } => {
            sluice_broker::add_bootstrap_user(
                data_dir,
                name,
                mechanism,
                &password(password_file)?,
                *iterations,
            )?;
            println!(
                "user {name} ({}) will exist at the next start of the broker with data dir {}",
                mechanism.to_ascii_uppercase(),
                data_dir.display()
            );
            Ok(())
        }
        UserVerb::Set {
            name,
            mechanism,
            password_file,
            iterations,
        } => {
            let code = type_code(mechanism)?;
            let (salt, salted) = salt_password(mechanism, &password(password_file)?, *iterations)
                .with_context(|| format!("unknown mechanism {mechanism}"))?;
            let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_mechanism(code)
                    .with_iterations(i32::try_from(*iterations).unwrap_or(i32::MAX))
                    .with_salt(Bytes::from(salt))
                    .with_salted_password(Bytes::from(salted)),
            ]);
            alter(args, req)
        }
        UserVerb::Delete { name, mechanism } => {
            let req = AlterUserScramCredentialsRequest::default().with_deletions(vec![
                ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_mechanism(type_code(mechanism)?),
            ]);
            alter(args, req)
        }
        UserVerb::List => {
            let mut client = Client::connect(args)?;
            let req =
                DescribeUserScramCredentialsRequest::default().with_users(None::<Vec<UserName>>);
            let (_, resp) = client.any().call(0, &req)?;
            if resp.error_code != 0 {
                return Err(kafka_error(
                    resp.error_code,
                    "DescribeUserScramCredentials",
                    resp.error_message.as_deref(),
                ));
            }
            let rows: Vec<(String, String)> = resp
                .results
                .iter()
                .flat_map(|r| {
                    r.credential_infos.iter().map(move |c| {
                        (
                            r.user.to_string(),
                            format!("{} ({} iterations)", scram_name(c.mechanism), c.iterations),
                        )
                    })
                })
                .collect();
            match args.format {
                Format::Json => print_json(&json!(rows
                    .iter()
                    .map(|(u, m)| json!({"user": u, "credential": m}))
                    .collect::<Vec<_>>())),
                Format::Table => {
                    let mut t = Table::new(&["USER", "CREDENTIAL"]);
                    for (u, m) in rows {
                        t.row(vec![u, m]);
                    }
                    print!("{}", t.render());
                }
            }
            Ok(())
        }
    }
}

fn alter(args: &ClientArgs, req: AlterUserScramCredentialsRequest) -> Result<()> {
    let mut client = Client::connect(args)?;
    let (_, resp) = client.any().call(0, &req)?;
    for r in &resp.results {
        if r.error_code != 0 {
            return Err(kafka_error(
                r.error_code,
                &format!("user {}", r.user),
                r.error_message.as_deref(),
            ));
        }
        println!("user {}: done", r.user);
    }
    Ok(())
}
