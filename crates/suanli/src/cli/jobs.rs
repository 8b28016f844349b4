//! Jobs: `launch` (quote a task file, buy the best offer that can run it, queue the job and
//! follow it), `exec` (another job on a lease), `jobs`, `job show`, `cancel` and `outputs`.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};

use anyhow::{bail, Context as _};
use serde::{Serialize, Serializer};
use suanli_api as api;

use super::args::{format_duration, ExecArgs, JobCommand, JobsArgs, LaunchArgs, OutputsArgs};
use super::format::{or_dash, price, unit_seconds, yuan};
use super::leases::metered_cost;
use super::logs::follow_logs;
use super::market::quote_text;
use super::render::{Output, Render, Row, Text};
use super::{id, task, Ctx, Result};
use crate::excluded;

pub(super) async fn list(ctx: &Ctx, args: JobsArgs, o: &mut Output) -> Result {
    let lease_id = match args.lease_id {
        Some(lease) => Some(id::<api::LeaseId>(&lease)?.into_string()),
        None => None,
    };
    let params = api::JobListParams {
        lease_id,
        state: args.state,
        limit: args.limit,
    };
    o.show(&ctx.client.list_jobs(&params).await?)
}

pub(super) async fn job(ctx: &Ctx, command: JobCommand, o: &mut Output) -> Result {
    match command {
        JobCommand::Show { id: job } => {
            o.show(&ctx.client.get_job(&id::<api::JobId>(&job)?).await?)
        }
    }
}

pub(super) async fn cancel(ctx: &Ctx, job: &str, o: &mut Output) -> Result {
    let job: api::JobId = id(job)?;
    o.show(&Cancelled(&ctx.client.cancel_job(&job, ctx.key()).await?))
}

pub(super) async fn outputs(ctx: &Ctx, args: OutputsArgs, o: &mut Output) -> Result {
    let job: api::JobId = id(&args.job_id)?;
    let files = ctx.client.list_outputs(&job).await?;
    let Some(dest) = &args.dest else {
        return o.show(&files);
    };
    for f in &files.items {
        // The exchange only keeps relative paths inside the job directory; check again here.
        let rel = std::path::Path::new(&f.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            bail!("refusing the output path {:?}", f.path);
        }
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let bytes = ctx.client.get_output(&job, &f.path).await?;
        std::fs::write(&target, bytes)?;
        o.line(&format!("{}  ({} bytes)", target.display(), f.size_bytes));
    }
    Ok(())
}

/// Error codes on which `launch` tries the next ranked offer.
const FAILOVER_CODES: [&str; 3] = [
    "capacity_unavailable",
    "offer_not_available",
    "price_above_limit",
];

/// Asks a yes/no question on the terminal; no unless the answer starts with `y`.
async fn confirm(question: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || -> Result<bool> {
        let mut stderr = std::io::stderr().lock();
        write!(stderr, "{question} [y/N] ")?;
        stderr.flush()?;
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        Ok(answer.trim().to_lowercase().starts_with('y'))
    })
    .await
    .context("the confirmation prompt failed")?
}

pub(super) async fn launch(ctx: &Ctx, args: LaunchArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    if !args.yes && !std::io::stdin().is_terminal() {
        bail!(
            "launch buys a lease and asks first: run it on a terminal, or pass --yes to buy \
             without asking"
        );
    }
    if ctx.key.len() > 160 {
        bail!(
            "with launch, --idempotency-key is at most 160 characters: it is extended per request"
        );
    }
    let task = task::Task::load(&args.task)?;
    let (spec, notes) = task.spec()?;
    for note in notes {
        o.note(&format!("[suanli] {note}"));
    }
    let (models, zones) = tokio::try_join!(client.list_accelerator_models(), client.list_zones())?;
    let need = task.need(task::Catalog {
        models: &models.items,
        zones: &zones.items,
    })?;
    let request = api::QuoteRequest {
        excluded_limit: Some(200),
        ..need.quote.clone()
    };
    let quote = client.quote(&request, Some(&ctx.sub_key("quote"))).await?;
    let mut table = quote_text(&request, &quote, false, excluded::Asked::TaskFile);
    table.push('\n');
    o.aside(&table);
    let mut offers: Vec<&api::QuotedOffer> = quote.offers.iter().collect();
    offers.sort_by_key(|q| q.rank);
    let Some(best) = offers.first() else {
        bail!(
            "no offer fits {}: loosen its resources, zone or max_price (`suanli quote --explain` \
             lists every offer with the reason it was excluded)",
            task.file
        );
    };
    if !args.yes {
        o.flush()?;
        let mut question = format!(
            "Buy {} units of {} from {} at {} for up to {} (at most {}, held until the lease \
             ends; you pay for what the job uses)",
            best.units,
            best.offer.class,
            best.offer.provider_name,
            price(best.offer.price_micros_per_unit_hour),
            format_duration(quote.duration_limit_s),
            yuan(best.total_micros),
        );
        if offers.len() > 1 {
            question.push_str(", or the next offers if it is gone");
        }
        question.push('?');
        if !confirm(question).await? {
            bail!("nothing was bought");
        }
    }

    // Buy the best offer, failing over to the next ranked ones.
    let mut bought = None;
    for (i, q) in offers.iter().enumerate() {
        let request = api::PurchaseRequest {
            offer_id: q.offer.id.clone(),
            units: q.units,
            duration_limit_s: quote.duration_limit_s,
            // Never more than the quoted price, which is within the task's max_price.
            max_price_micros_per_unit_hour: Some(q.offer.price_micros_per_unit_hour),
            auto_end: !args.keep,
        };
        let key = ctx.sub_key(&format!("buy-{}", q.offer.id));
        let skipped = match client.purchase(&request, Some(&key)).await {
            Ok(lease) if lease.billing != "metered" => {
                // No agent serves the pool: jobs cannot run there.
                let key = ctx.sub_key(&format!("cancel-{}", lease.id));
                let cancelled = client.cancel_lease(&lease.id, Some(&key)).await?;
                format!(
                    "offer {} has no agent to run jobs; its lease {} was cancelled ({})",
                    q.offer.id,
                    cancelled.id,
                    yuan(cancelled.cost_micros.unwrap_or(0))
                )
            }
            Ok(lease) => {
                bought = Some(lease);
                break;
            }
            Err(e) if e.code().is_some_and(|c| FAILOVER_CODES.contains(&c)) => {
                format!("offer {} ({}): {e}", q.offer.id, q.offer.provider_name)
            }
            Err(e) => return Err(e.into()),
        };
        let next = if i + 1 < offers.len() {
            "; trying the next offer"
        } else {
            ""
        };
        o.note(&format!("[suanli] {skipped}{next}"));
        o.flush()?;
    }
    let Some(lease) = bought else {
        bail!(
            "none of the {} offer(s) that fit could run the job; no lease is left open",
            offers.len()
        );
    };
    if !o.is_json() {
        o.line(&format!(
            "lease {}: {} units of {} in {} at {}, for up to {}",
            lease.id,
            lease.units,
            lease.class,
            lease.zone,
            price(lease.price_micros_per_unit_hour),
            format_duration(lease.duration_limit_s)
        ));
        o.line(&format!(
            "  {}",
            if lease.auto_end {
                "ends when its job ends".to_owned()
            } else {
                format!(
                    "kept after the job: run more with `suanli exec {0}`, end it with `suanli end {0}`",
                    lease.id
                )
            }
        ));
    }
    let request = api::CreateJobRequest { task: spec };
    let job = match client
        .create_job(&lease.id, &request, Some(&ctx.sub_key("job")))
        .await
    {
        Ok(job) => job,
        Err(e) => {
            if args.keep {
                return Err(anyhow::Error::new(e).context(format!(
                    "the job could not be queued; lease {0} is still yours (end it with `suanli \
                     end {0}`)",
                    lease.id
                )));
            }
            let ended = client.end_lease(&lease.id, Some(&ctx.sub_key("end"))).await;
            let what = match ended {
                Ok(l) => format!(
                    "lease {} was ended ({})",
                    l.id,
                    yuan(l.cost_micros.unwrap_or(0))
                ),
                Err(end_err) => format!(
                    "lease {0} could not be ended ({end_err}): end it with `suanli end {0}`",
                    lease.id
                ),
            };
            return Err(
                anyhow::Error::new(e).context(format!("the job could not be queued; {what}"))
            );
        }
    };
    follow_job(ctx, o, &lease, job, args.detach).await
}

pub(super) async fn exec(ctx: &Ctx, args: ExecArgs, o: &mut Output) -> Result {
    let client = &ctx.client;
    let spec = match (&args.task, args.run) {
        (Some(path), _) => {
            let task = task::Task::load(path)?;
            if task.says_what_to_buy() {
                o.note(&format!(
                    "[suanli] {}: resources, zone, max_price and duration are ignored: the job runs \
                     on lease {}",
                    task.file, args.lease_id
                ));
            }
            let (mut spec, notes) = task.spec()?;
            for note in notes {
                o.note(&format!("[suanli] {note}"));
            }
            if args.name.is_some() {
                spec.name = args.name;
            }
            spec
        }
        (None, Some(run)) => api::TaskSpec {
            name: args.name,
            run,
            ..api::TaskSpec::default()
        },
        (None, None) => bail!("give a task file or --run 'COMMANDS'"),
    };
    let lease = client
        .get_lease(&id::<api::LeaseId>(&args.lease_id)?)
        .await?;
    let job = client
        .create_job(&lease.id, &api::CreateJobRequest { task: spec }, ctx.key())
        .await?;
    follow_job(ctx, o, &lease, job, args.detach).await
}

/// After a job is queued: prints its id, then (unless `detach`) follows its output until it ends
/// and says how it ended and what it cost. Fails unless the job succeeded.
async fn follow_job(
    ctx: &Ctx,
    o: &mut Output,
    lease: &api::Lease,
    job: api::Job,
    detach: bool,
) -> Result {
    let client = &ctx.client;
    if detach {
        return o.show(&Queued { lease, job: &job });
    }
    if !o.is_json() {
        o.line(&format!(
            "job {} queued on lease {}; following its output (Ctrl-C stops following, not the job)",
            job.id, lease.id
        ));
    }
    o.flush()?;
    follow_logs(client, &job.id, !o.is_json()).await?;
    let job = client.get_job(&job.id).await?;
    let lease = client.get_lease(&lease.id).await?;
    o.show(&Ended {
        lease: &lease,
        job: &job,
    })?;
    if job.state != "succeeded" {
        bail!("job {} {}", job.id, job_outcome(&job));
    }
    Ok(())
}

/// `failed with exit code 3 (reason)`, `succeeded`.
fn job_outcome(job: &api::Job) -> String {
    let mut text = job.state.replace('_', " ");
    if let Some(code) = job.exit_code {
        write!(text, " with exit code {code}").expect("writing to a String cannot fail");
    }
    if let Some(reason) = &job.reason {
        write!(text, " ({reason})").expect("writing to a String cannot fail");
    }
    text
}

/// How a job ended and what it cost.
fn job_summary(job: &api::Job, lease: &api::Lease) -> Vec<String> {
    let mut first = format!("job {} {}", job.id, job_outcome(job));
    if let (Some(started), Some(ended)) = (&job.started_at, &job.ended_at) {
        if let Some(took) = elapsed(started, ended) {
            write!(first, " after {took}").expect("writing to a String cannot fail");
        }
    }
    let job_cost =
        suanli_core::money::cost_micros_of_unit_ms(lease.price_micros_per_unit_hour, job.unit_ms)
            .map(yuan)
            .unwrap_or_else(|_| "-".to_owned());
    let mut lines = vec![
        first,
        format!("job used {} ({job_cost})", unit_seconds(job.unit_ms)),
    ];
    lines.push(match lease.cost_micros {
        Some(cost) => format!("lease {} {}: cost {}", lease.id, lease.state, yuan(cost)),
        None if lease.billing == "metered" => format!(
            "lease {0} is still active: {1} so far ({2}); end it with `suanli end {0}`",
            lease.id,
            or_dash(metered_cost(lease).as_deref()),
            unit_seconds(lease.metered_unit_ms)
        ),
        None => format!(
            "lease {0} is still active; end it with `suanli end {0}`",
            lease.id
        ),
    });
    lines
}

/// `1h 2m 3s` between two RFC 3339 times.
fn elapsed(from: &str, to: &str) -> Option<String> {
    let from = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let to = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    let millis = u64::try_from((to - from).num_milliseconds()).ok()?;
    let seconds = millis / 1_000;
    let (h, m, s) = (seconds / 3_600, seconds / 60 % 60, seconds % 60);
    Some(match (h, m) {
        // A short job's own time, to the tenth: "0.1s", not "0s".
        (0, 0) => format!("{}.{}s", s, millis % 1_000 / 100),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    })
}

// --- rendering -----------------------------------------------------------------------------------

impl Row for api::Job {
    const HEADER: &'static [&'static str] = &[
        "ID", "NAME", "STATE", "LEASE", "ATTEMPT", "EXIT", "USE", "STARTED", "ENDED",
    ];

    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.state.clone(),
            self.lease_id.clone(),
            self.attempts
                .iter()
                .map(|a| a.number)
                .max()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".to_owned()),
            self.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".to_owned()),
            unit_seconds(self.unit_ms),
            or_dash(self.started_at.as_deref()),
            or_dash(self.ended_at.as_deref()),
        ]
    }
}

/// A job and its attempts.
impl Render for api::Job {
    fn render(&self, text: &mut Text) {
        let job = self;
        let mut pairs = vec![
            ("job", job.id.clone()),
            ("name", job.name.clone()),
            ("state", job.state.clone()),
            ("lease", job.lease_id.clone()),
            (
                "restartable",
                if job.restartable { "yes" } else { "no" }.to_owned(),
            ),
        ];
        if let Some(code) = job.exit_code {
            pairs.push(("exit code", code.to_string()));
        }
        if let Some(reason) = &job.reason {
            pairs.push(("reason", reason.clone()));
        }
        pairs.push(("created", job.created_at.clone()));
        if let Some(started) = &job.started_at {
            pairs.push(("started", started.clone()));
        }
        if let Some(ended) = &job.ended_at {
            pairs.push(("ended", ended.clone()));
            if let Some(took) = job.started_at.as_deref().and_then(|s| elapsed(s, ended)) {
                pairs.push(("ran", took));
            }
        }
        pairs.push(("used", unit_seconds(job.unit_ms)));
        text.pairs(&pairs);
        text.line("");
        let rows: Vec<Vec<String>> = job
            .attempts
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.number.to_string(),
                    a.agent_id.clone(),
                    a.state.clone(),
                    a.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                    or_dash(a.reason.as_deref()),
                    a.dispatched_at.clone(),
                    or_dash(a.started_at.as_deref()),
                    or_dash(a.ended_at.as_deref()),
                    or_dash(a.backend_id.as_deref()),
                ]
            })
            .collect();
        text.table(
            &[
                "ATTEMPT",
                "#",
                "AGENT",
                "STATE",
                "EXIT",
                "REASON",
                "DISPATCHED",
                "STARTED",
                "ENDED",
                "BACKEND ID",
            ],
            &rows,
        );
    }
}

/// A job just cancelled: its state, and a note when its processes are still to be stopped.
#[derive(Serialize)]
#[serde(transparent)]
struct Cancelled<'a>(&'a api::Job);

impl Render for Cancelled<'_> {
    fn render(&self, text: &mut Text) {
        let job = self.0;
        text.pairs(&[
            ("job", job.id.clone()),
            ("state", job.state.clone()),
            ("reason", or_dash(job.reason.as_deref())),
        ]);
        if !job.attempts.is_empty() {
            text.note("its agent stops the job's processes at its next heartbeat");
        }
    }
}

/// `{"lease": …, "job": …}`, as `launch` and `exec` answer with `--json`.
fn lease_and_job<S: Serializer>(
    lease: &api::Lease,
    job: &api::Job,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serde_json::json!({ "lease": lease, "job": job }).serialize(serializer)
}

/// A job just queued on its lease (`--detach`): how to follow or cancel it.
struct Queued<'a> {
    lease: &'a api::Lease,
    job: &'a api::Job,
}

impl Serialize for Queued<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        lease_and_job(self.lease, self.job, serializer)
    }
}

impl Render for Queued<'_> {
    fn render(&self, text: &mut Text) {
        let (job, lease) = (self.job, self.lease);
        text.line(&format!("job {} queued on lease {}", job.id, lease.id));
        text.line(&format!("  follow it: suanli logs -f {}", job.id));
        text.line(&format!("  cancel it: suanli cancel {}", job.id));
    }
}

/// A job that ended, and its lease: how it ended and what it cost, as notes after its output.
struct Ended<'a> {
    lease: &'a api::Lease,
    job: &'a api::Job,
}

impl Serialize for Ended<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        lease_and_job(self.lease, self.job, serializer)
    }
}

impl Render for Ended<'_> {
    fn render(&self, text: &mut Text) {
        for line in job_summary(self.job, self.lease) {
            text.note(&format!("[suanli] {line}"));
        }
    }
}

/// A job's output files; a note instead of an empty table.
impl Render for api::List<api::OutputFile> {
    fn render(&self, text: &mut Text) {
        if self.items.is_empty() {
            text.note(
                "the job left no output files (its task's outputs: paths, collected when it ends)",
            );
            return;
        }
        let rows: Vec<Vec<String>> = self
            .items
            .iter()
            .map(|f| vec![f.path.clone(), f.size_bytes.to_string()])
            .collect();
        text.table(&["PATH", "BYTES"], &rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::leases::lease_pairs;

    #[test]
    fn job_outcomes_and_costs_read_well() {
        let lease: api::Lease = serde_json::from_value(serde_json::json!({
            "id": "lease_1", "consumer_org_id": "c", "provider_org_id": "p", "offer_id": "o",
            "pool_id": "pool", "class": "general", "zone": "z", "units": 2,
            "price_micros_per_unit_hour": 3_600_000, "duration_limit_s": 600,
            "started_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-01T00:10:00Z",
            "state": "active",
            "hold": {"id": "h", "amount_micros": 1_200_000, "state": "pending", "posted_micros": 0},
            "billing": "metered", "auto_end": false, "metered_unit_ms": 90_500,
            "allocations": []
        }))
        .unwrap();
        let job: api::Job = serde_json::from_value(serde_json::json!({
            "id": "job_1", "org_id": "c", "lease_id": "lease_1", "name": "n", "state": "timed_out",
            "restartable": false, "exit_code": 137, "reason": "time limit",
            "created_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:01Z",
            "ended_at": "2026-01-01T01:02:04Z", "unit_ms": 60_250, "attempts": []
        }))
        .unwrap();
        assert_eq!(
            job_outcome(&job),
            "timed out with exit code 137 (time limit)"
        );
        assert_eq!(
            job_summary(&job, &lease),
            [
                "job job_1 timed out with exit code 137 (time limit) after 1h 2m 3s",
                "job used 60.250 unit-s (¥0.060250)",
                "lease lease_1 is still active: ¥0.090500 so far (90.500 unit-s); end it with \
                 `suanli end lease_1`",
            ]
        );
        let pairs = lease_pairs(&lease);
        let get = |label: &str| {
            pairs
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("billing").as_deref(),
            Some("metered (the unit-seconds its jobs used)")
        );
        assert_eq!(get("metered").as_deref(), Some("90.500 unit-s"));
        assert_eq!(get("cost so far").as_deref(), Some("¥0.090500"));
        assert_eq!(
            elapsed("2026-01-01T00:00:00Z", "2026-01-01T00:00:59Z").as_deref(),
            Some("59.0s")
        );
        assert_eq!(
            elapsed("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.137Z").as_deref(),
            Some("0.1s")
        );
        assert_eq!(
            elapsed("2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z").as_deref(),
            Some("1m 0s")
        );
        assert_eq!(elapsed("x", "2026-01-01T00:01:00Z"), None);
    }
}
