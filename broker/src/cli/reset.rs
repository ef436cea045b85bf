//! `sluice group reset-offsets`: computes new committed offsets for an inactive group (state
//! Empty or Dead, as Kafka's kafka-consumer-groups requires), prints the plan, and commits
//! it only with `--execute` (OffsetCommit with generation -1 and an empty member id, as
//! Kafka's tool does). New offsets are kept within [earliest, latest] of each partition.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use super::client::{Client, EARLIEST, LATEST};
use super::format::{opt_num, parse_rfc3339, print_json, progress, Format, Table};
use super::group::{commit_offsets, committed_offsets, describe_group, Tp};

#[derive(Debug, clap::Args)]
pub(crate) struct ResetArgs {
    group: String,
    /// A topic (every partition) or TOPIC:P,P (those partitions); repeatable.
    #[arg(long = "topic", value_name = "TOPIC[:P,P]")]
    topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long, conflicts_with = "topics")]
    all_topics: bool,
    #[command(flatten)]
    target: Target,
    /// Commit the plan (without it only the plan is printed).
    #[arg(long)]
    execute: bool,
    /// Only print the plan (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
}

/// Where the offsets go; exactly one.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// The earliest offset still in the log.
    #[arg(long)]
    to_earliest: bool,
    /// The high watermark (nothing left to read).
    #[arg(long)]
    to_latest: bool,
    /// The first offset with a timestamp at or after this RFC 3339 time (the high
    /// watermark if none), e.g. 2024-05-01T12:00:00Z.
    #[arg(long, value_name = "RFC3339")]
    to_datetime: Option<String>,
    /// The committed offset plus N (N may be negative).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// Offset N.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
}

pub(crate) fn run(client: &mut Client, args: &ResetArgs, format: Format) -> Result<()> {
    let group = args.group.as_str();
    if args.topics.is_empty() && !args.all_topics {
        bail!("reset-offsets needs --topic TOPIC[:P,P] or --all-topics");
    }
    // parse the time before talking to anyone
    let datetime = args
        .target
        .to_datetime
        .as_deref()
        .map(parse_rfc3339)
        .transpose()?;
    let g = describe_group(client, group)?;
    let state = g.group_state.to_string();
    if state != "Empty" && state != "Dead" {
        bail!(
            "group '{group}' is {state} with {} member(s): offsets can only be reset while the group is inactive (Empty or Dead); stop its consumers first",
            g.members.len()
        );
    }
    let committed = committed_offsets(client, group)?;
    let tps = partitions(client, args, &committed)?;
    if tps.is_empty() {
        bail!("no partition to reset (the group has no committed offsets)");
    }
    if tps.len() > 100 {
        progress(&format!("listing the offsets of {} partitions", tps.len()));
    }
    let earliest = client.list_offsets(&tps, EARLIEST)?;
    let latest = client.list_offsets(&tps, LATEST)?;
    let at_time = match datetime {
        Some(ts) => Some(client.list_offsets(&tps, ts)?),
        None => None,
    };
    let mut plan: BTreeMap<Tp, i64> = BTreeMap::new();
    for tp in &tps {
        let lo = *earliest
            .get(tp)
            .context("ListOffsets left out a partition")?;
        let hi = *latest.get(tp).context("ListOffsets left out a partition")?;
        let t = &args.target;
        let wanted = if t.to_earliest {
            lo
        } else if t.to_latest {
            hi
        } else if let Some(found) = &at_time {
            match found.get(tp).copied() {
                Some(o) if o >= 0 => o,
                _ => hi,
            }
        } else if let Some(n) = t.shift_by {
            let Some(c) = committed.get(tp) else {
                bail!(
                    "cannot shift the offset of {}-{}: group '{group}' has no committed offset there",
                    tp.0,
                    tp.1
                );
            };
            c.saturating_add(n)
        } else if let Some(n) = t.to_offset {
            n
        } else {
            bail!("no reset target given");
        };
        plan.insert(tp.clone(), wanted.clamp(lo, hi.max(lo)));
    }
    if args.execute {
        let conn = client.coordinator(group)?;
        commit_offsets(conn, group, -1, "", &plan)?;
    } else {
        progress("dry run: nothing committed (add --execute to commit these offsets)");
    }
    match format {
        Format::Table => {
            let mut t = Table::new(&[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "NEW-OFFSET",
            ]);
            for (tp, o) in &plan {
                t.row(vec![
                    group.to_string(),
                    tp.0.clone(),
                    tp.1.to_string(),
                    opt_num(committed.get(tp).copied()),
                    o.to_string(),
                ]);
            }
            print!("{}", t.render());
        }
        Format::Json => print_json(&json!({
            "group": group,
            "executed": args.execute,
            "partitions": plan.iter().map(|(tp, o)| json!({
                "topic": tp.0,
                "partition": tp.1,
                "current_offset": committed.get(tp),
                "new_offset": o,
            })).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}

/// The partitions named by --topic / --all-topics, checked against Metadata.
fn partitions(
    client: &mut Client,
    args: &ResetArgs,
    committed: &BTreeMap<Tp, i64>,
) -> Result<Vec<Tp>> {
    if args.all_topics {
        return Ok(committed.keys().cloned().collect());
    }
    let mut wanted: Vec<(String, Option<Vec<i32>>)> = Vec::new();
    for spec in &args.topics {
        match spec.split_once(':') {
            None => wanted.push((spec.clone(), None)),
            Some((t, ps)) => {
                let ps = ps
                    .split(',')
                    .map(|p| p.trim().parse::<i32>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("--topic {spec}: partitions must be numbers"))?;
                wanted.push((t.to_string(), Some(ps)));
            }
        }
    }
    let names: Vec<String> = wanted.iter().map(|(t, _)| t.clone()).collect();
    let deadline = std::time::Instant::now() + client.timeout();
    let leaders = client.leaders(&names, false, deadline)?;
    let mut out = Vec::new();
    for (t, ps) in wanted {
        let all: Vec<i32> = leaders
            .keys()
            .filter(|(n, _)| *n == t)
            .map(|(_, p)| *p)
            .collect();
        match ps {
            None => out.extend(all.into_iter().map(|p| (t.clone(), p))),
            Some(ps) => {
                for p in ps {
                    if !all.contains(&p) {
                        bail!("topic '{t}' has no partition {p}");
                    }
                    out.push((t.clone(), p));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
