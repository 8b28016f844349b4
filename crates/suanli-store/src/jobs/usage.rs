//! What an attempt leaves: signed usage (counted once, never faster than time), logs (within the
//! exchange's cap) and output files (within theirs).

use suanli_core::decide::job::{decide_outputs, fence_logs, fence_usage};
use suanli_core::job::{judge_usage, lease_room_unit_ms, LogCap, UsageWindow};

use super::{attempt_row, stale, JobRow, Tx, ATTEMPT_COLS};
use crate::database::{to_i64, StoreError, Value};

/// What became of a batch of usage records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageOutcome {
    /// Records counted now.
    pub accepted: u32,
    /// Records counted before (retries).
    pub duplicates: u32,
    /// Records refused for claiming more than time allows (now or before).
    pub refused: Vec<RefusedUsage>,
    /// The attempt's acknowledged use, in unit-milliseconds.
    pub unit_ms: u64,
}

/// A usage record refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedUsage {
    /// Its position in the batch.
    pub index: usize,
    pub seq: u64,
    pub reason: String,
}

/// A usage record whose signature the caller has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUsage {
    pub seq: u64,
    pub unit_ms: u64,
    pub cpu_ms: Option<u64>,
    pub peak_memory_mib: Option<u64>,
    pub signature_hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub seq: i64,
    pub attempt_id: String,
    pub stream: String,
    pub data: String,
    pub created_ms: i64,
}

impl Tx<'_> {
    /// Counts signed usage of an attempt (signatures verified by the caller), once per sequence
    /// number. Each record is judged by `suanli_core::job::judge_usage`: one that would take the
    /// attempt past what time allows (its units × the time since its dispatch, bounded by its
    /// time limit and its lease's end, with the clock slack) is refused, never charged, kept in
    /// `usage_refusals` and counted against the agent; a refused sequence number stays refused
    /// when sent again. The lease's cap (`lease_room_unit_ms`) bounds the rest.
    pub fn record_usage(
        &mut self,
        org_id: &str,
        agent_id: &str,
        attempt_id: &str,
        records: &[VerifiedUsage],
        now_ms: i64,
    ) -> Result<UsageOutcome, StoreError> {
        self.touch_agent(org_id, agent_id, now_ms)?;
        let (attempt, job) = self.fence(agent_id, attempt_id)?;
        let mut lease = self.get_lease(None, &job.lease_id)?;
        fence_usage(lease.state)?;
        let window = UsageWindow {
            units: lease.units,
            dispatched_ms: attempt.dispatched_ms,
            time_limit_ms: job.time_limit_s.saturating_mul(1_000),
            lease_ends_ms: lease.ends_ms,
        };
        let mut out = UsageOutcome {
            unit_ms: attempt.unit_ms,
            ..UsageOutcome::default()
        };
        for (index, r) in records.iter().enumerate() {
            let seen = self.b.query(
                "SELECT 'counted', '' FROM usage_records WHERE attempt_id = $1 AND seq = $2 \
                 UNION ALL SELECT 'refused', reason FROM usage_refusals WHERE attempt_id = $1 AND seq = $2",
                &[attempt_id.into(), Value::from(to_i64(r.seq)?)],
            )?;
            if let Some(row) = seen.first() {
                if row.str(0)? == "counted" {
                    out.duplicates += 1;
                } else {
                    out.refused.push(RefusedUsage {
                        index,
                        seq: r.seq,
                        reason: row.str(1)?,
                    });
                }
                continue;
            }
            let room = lease_room_unit_ms(
                lease.metered_unit_ms,
                lease.units,
                lease.duration_limit_s,
                lease.hold.amount_micros,
                lease.price_micros_per_unit_hour,
            );
            let billable = match judge_usage(&window, out.unit_ms, r.unit_ms, room, now_ms) {
                Ok(billable) => billable,
                Err(refusal) => {
                    let reason = refusal.to_string();
                    self.b.execute(
                        "INSERT INTO usage_refusals (attempt_id, seq, agent_id, job_id, claimed_unit_ms, \
                         bound_unit_ms, reason, received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            attempt_id.into(),
                            Value::from(to_i64(r.seq)?),
                            agent_id.into(),
                            (&job.id).into(),
                            Value::from(to_i64(r.unit_ms)?),
                            Value::from(to_i64(refusal.bound_unit_ms)?),
                            reason.as_str().into(),
                            now_ms.into(),
                        ],
                    )?;
                    self.b.execute(
                        "UPDATE agents SET usage_refusals = usage_refusals + 1, last_usage_refusal = $2 \
                         WHERE id = $1",
                        &[agent_id.into(), reason.as_str().into()],
                    )?;
                    out.refused.push(RefusedUsage {
                        index,
                        seq: r.seq,
                        reason,
                    });
                    continue;
                }
            };
            self.b.execute(
                "INSERT INTO usage_records (attempt_id, seq, job_id, unit_ms, billed_unit_ms, cpu_ms, \
                 peak_memory_mib, signature_hex, received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    attempt_id.into(),
                    Value::from(to_i64(r.seq)?),
                    (&job.id).into(),
                    Value::from(to_i64(r.unit_ms)?),
                    Value::from(to_i64(billable)?),
                    r.cpu_ms.map(to_i64).transpose()?.into(),
                    r.peak_memory_mib.map(to_i64).transpose()?.into(),
                    (&r.signature_hex).into(),
                    now_ms.into(),
                ],
            )?;
            out.accepted += 1;
            // The attempt's total is what it claimed (the bound is on what it claims); what is
            // billed is capped by the lease.
            out.unit_ms += r.unit_ms;
            lease.metered_unit_ms += billable;
            let b = Value::from(to_i64(billable)?);
            self.b.execute(
                "UPDATE attempts SET unit_ms = unit_ms + $2 WHERE id = $1",
                &[attempt_id.into(), Value::from(to_i64(r.unit_ms)?)],
            )?;
            self.b.execute(
                "UPDATE jobs SET unit_ms = unit_ms + $2 WHERE id = $1",
                &[(&job.id).into(), b.clone()],
            )?;
            self.b.execute(
                "UPDATE leases SET metered_unit_ms = metered_unit_ms + $2 WHERE id = $1",
                &[(&lease.id).into(), b],
            )?;
        }
        Ok(out)
    }

    /// Appends an attempt's log chunks (repeats ignored). Refused for attempts that are no longer
    /// current, so an orphan's output never mixes into the job's log.
    ///
    /// A job's log is capped at `max_bytes` ([`LogCap`]): once its head is full, one notice marks
    /// the place and only the newest tail is kept behind it, the notice counting what was dropped.
    /// Chunks past the cap are acknowledged all the same, so the agent does not send them again.
    pub fn append_logs(
        &mut self,
        org_id: &str,
        agent_id: &str,
        attempt_id: &str,
        chunks: &[(u64, String, String)],
        max_bytes: u64,
        now_ms: i64,
    ) -> Result<u32, StoreError> {
        self.touch_agent(org_id, agent_id, now_ms)?;
        let rows = self.b.query(
            &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE id = $1"),
            &[attempt_id.into()],
        )?;
        let attempt = rows.first().map(attempt_row).transpose()?;
        fence_logs(
            attempt.as_ref().map(|a| (a.agent_id.as_str(), a.state)),
            agent_id,
        )?;
        let Some(attempt) = attempt else {
            unreachable!("fencing refuses an unknown attempt")
        };
        let job_id = attempt.job_id.as_str();
        let kept = self.b.query(
            "SELECT j.log_head_bytes, j.log_dropped_bytes, j.log_notice_seq, a.log_chunk_seq \
             FROM jobs j, attempts a WHERE j.id = $1 AND a.id = $2",
            &[job_id.into(), attempt_id.into()],
        )?;
        let Some(k) = kept.first() else {
            return Err(stale("unknown attempt"));
        };
        let (mut head_bytes, mut dropped, mut notice_seq) = (k.u64(0)?, k.u64(1)?, k.i64(2)?);
        let mut newest_chunk = k.i64(3)?;
        let cap = LogCap::new(max_bytes);
        let mut stored = 0;
        for (seq, stream, data) in chunks {
            let seq = to_i64(*seq)?;
            let len = data.len() as u64;
            if notice_seq == 0 && !cap.fits_head(head_bytes, len) {
                // The head is full: the notice goes here, once per job.
                self.b.execute(
                    "INSERT INTO job_logs (job_id, attempt_id, chunk_seq, stream, data, created_ms) \
                     VALUES ($1, $2, -1, 'system', $3, $4)",
                    &[
                        job_id.into(),
                        attempt_id.into(),
                        LogCap::notice(head_bytes, 0).into(),
                        now_ms.into(),
                    ],
                )?;
                let r = self.b.query(
                    "SELECT seq FROM job_logs WHERE attempt_id = $1 AND chunk_seq = -1",
                    &[attempt_id.into()],
                )?;
                notice_seq = r.first().map(|r| r.i64(0)).transpose()?.unwrap_or(0);
            }
            if notice_seq != 0 && seq <= newest_chunk {
                // Behind the notice a chunk may have been dropped already: never take it twice.
                continue;
            }
            let n = self.b.execute(
                "INSERT INTO job_logs (job_id, attempt_id, chunk_seq, stream, data, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (attempt_id, chunk_seq) DO NOTHING",
                &[
                    job_id.into(),
                    attempt_id.into(),
                    Value::from(seq),
                    stream.as_str().into(),
                    data.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            if n > 0 && notice_seq == 0 {
                head_bytes += len;
            }
            newest_chunk = newest_chunk.max(seq);
            stored += n as u32;
        }
        if notice_seq != 0 {
            // Keep only the newest tail behind the notice; count what goes.
            let tail = self.b.query(
                "SELECT seq, data FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq DESC",
                &[job_id.into(), notice_seq.into()],
            )?;
            let sizes: Vec<u64> = tail
                .iter()
                .map(|r| r.str(1).map(|d| d.len() as u64))
                .collect::<Result<_, StoreError>>()?;
            let keep = cap.tail_keeps(&sizes);
            if keep < tail.len() {
                let gone: u64 = sizes[keep..].iter().sum();
                let newest_gone = tail[keep].i64(0)?;
                self.b.execute(
                    "DELETE FROM job_logs WHERE job_id = $1 AND seq > $2 AND seq <= $3",
                    &[job_id.into(), notice_seq.into(), newest_gone.into()],
                )?;
                dropped += gone;
                self.b.execute(
                    "UPDATE job_logs SET data = $2 WHERE seq = $1",
                    &[
                        notice_seq.into(),
                        LogCap::notice(head_bytes, dropped).into(),
                    ],
                )?;
            }
        }
        self.b.execute(
            "UPDATE jobs SET log_head_bytes = $2, log_dropped_bytes = $3, log_notice_seq = $4 \
             WHERE id = $1",
            &[
                job_id.into(),
                Value::from(to_i64(head_bytes)?),
                Value::from(to_i64(dropped)?),
                notice_seq.into(),
            ],
        )?;
        self.b.execute(
            "UPDATE attempts SET log_chunk_seq = $2 WHERE id = $1",
            &[attempt_id.into(), newest_chunk.into()],
        )?;
        Ok(stored)
    }

    /// Ends a log that passed the exchange's cap with the final count of what was dropped (the
    /// notice at the cut counted only what was dropped until then, as a live reader saw it).
    pub(super) fn close_capped_log(&mut self, job_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let rows = self.b.query(
            "SELECT log_head_bytes, log_dropped_bytes, log_notice_seq FROM jobs WHERE id = $1",
            &[job_id.into()],
        )?;
        let Some(r) = rows.first() else {
            return Ok(());
        };
        if r.i64(2)? == 0 {
            return Ok(());
        }
        // One per job: keyed by the job's id where an attempt's would be.
        self.b.execute(
            "INSERT INTO job_logs (job_id, attempt_id, chunk_seq, stream, data, created_ms) \
             VALUES ($1, $1, -2, 'system', $2, $3) ON CONFLICT (attempt_id, chunk_seq) DO NOTHING",
            &[
                job_id.into(),
                LogCap::summary(r.u64(0)?, r.u64(1)?).into(),
                now_ms.into(),
            ],
        )?;
        Ok(())
    }

    /// Stores output files of an attempt (a file sent again replaces itself). Only the current
    /// attempt of a job that has not ended may send them ([`Tx::fence`]), and a job keeps at most
    /// `max_total_bytes` of outputs ([`decide_outputs`]).
    #[allow(clippy::too_many_arguments)]
    pub fn put_outputs(
        &mut self,
        org_id: &str,
        agent_id: &str,
        attempt_id: &str,
        files: &[(String, u64, String)],
        max_total_bytes: u64,
        now_ms: i64,
    ) -> Result<u32, StoreError> {
        self.touch_agent(org_id, agent_id, now_ms)?;
        let (_, job) = self.fence(agent_id, attempt_id)?;
        let kept = self
            .b
            .query(
                "SELECT path, size_bytes FROM job_outputs WHERE job_id = $1",
                &[(&job.id).into()],
            )?
            .iter()
            .map(|r| Ok((r.str(0)?, r.u64(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let asked: Vec<(&str, u64)> = files
            .iter()
            .map(|(p, size, _)| (p.as_str(), *size))
            .collect();
        decide_outputs(&kept, &asked, max_total_bytes)?;
        for (path, size, content) in files {
            self.b.execute(
                "DELETE FROM job_outputs WHERE job_id = $1 AND path = $2",
                &[(&job.id).into(), path.into()],
            )?;
            self.b.execute(
                "INSERT INTO job_outputs (job_id, attempt_id, path, size_bytes, content_base64, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    (&job.id).into(),
                    attempt_id.into(),
                    path.into(),
                    Value::from(to_i64(*size)?),
                    content.into(),
                    now_ms.into(),
                ],
            )?;
        }
        Ok(files.len() as u32)
    }

    /// The output files of a job of `org_id`: (path, size).
    pub fn list_outputs(
        &mut self,
        org_id: &str,
        job_id: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.get_job(org_id, job_id)?;
        let rows = self.b.query(
            "SELECT path, size_bytes FROM job_outputs WHERE job_id = $1 ORDER BY path",
            &[job_id.into()],
        )?;
        rows.iter()
            .map(|r| Ok((r.str(0)?, r.u64(1)?)))
            .collect::<Result<_, StoreError>>()
    }

    /// One output file of a job of `org_id`, base64.
    pub fn get_output(
        &mut self,
        org_id: &str,
        job_id: &str,
        path: &str,
    ) -> Result<String, StoreError> {
        self.get_job(org_id, job_id)?;
        let rows = self.b.query(
            "SELECT content_base64 FROM job_outputs WHERE job_id = $1 AND path = $2",
            &[job_id.into(), path.into()],
        )?;
        rows.first()
            .map(|r| r.str(0))
            .transpose()?
            .ok_or(StoreError::NotFound("output"))
    }

    /// A job's log after position `after`.
    pub fn job_logs(
        &mut self,
        org_id: &str,
        job_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<(JobRow, Vec<LogRow>), StoreError> {
        let job = self.get_job(org_id, job_id)?;
        let rows = self.b.query(
            "SELECT seq, attempt_id, stream, data, created_ms FROM job_logs WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
            &[job_id.into(), after.into(), i64::from(limit).into()],
        )?;
        let logs = rows
            .iter()
            .map(|r| {
                Ok(LogRow {
                    seq: r.i64(0)?,
                    attempt_id: r.str(1)?,
                    stream: r.str(2)?,
                    data: r.str(3)?,
                    created_ms: r.i64(4)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((job, logs))
    }
}
