//! Stored answers of requests with an idempotency key (see `crate::once`).

use super::*;

impl Tx<'_> {
    // ---------------------------------------------------------------- idempotency

    pub fn idempotent_response(
        &mut self,
        org_id: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let rows = self.b.query(
            "SELECT request_sha256, status, body FROM idempotency_keys WHERE org_id = $1 AND idempotency_key = $2",
            &[org_id.into(), key.into()],
        )?;
        rows.first()
            .map(|r| {
                Ok(StoredResponse {
                    request_sha256: r.str(0)?,
                    status: u16::try_from(r.u64(1)?).map_err(|_| {
                        StoreError::Corrupt("a stored response's status is not a status".into())
                    })?,
                    body: r.str(2)?,
                })
            })
            .transpose()
    }

    pub fn store_idempotent_response(
        &mut self,
        org_id: &str,
        key: &str,
        response: &StoredResponse,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.b.execute(
            "INSERT INTO idempotency_keys (org_id, idempotency_key, request_sha256, status, body, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                org_id.into(),
                key.into(),
                (&response.request_sha256).into(),
                i64::from(response.status).into(),
                (&response.body).into(),
                now_ms.into(),
            ],
        )?;
        Ok(())
    }
}
