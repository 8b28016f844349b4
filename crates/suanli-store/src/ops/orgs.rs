//! Orgs, members, API tokens and the accelerator registry.

use super::*;
use suanli_core::decide::org::{self, NameHolder, Revocation, TokenMember, TokenSnapshot};

impl Tx<'_> {
    // ---------------------------------------------------------------- orgs, members, tokens

    /// The orgs whose names have the key of `name` (`suanli_core::validate::name_key`), and the
    /// key: what deciding a name needs ([`org::decide_name`]). Orgs stored before names had to be
    /// unique and not yet renamed have no key and hold none.
    fn name_holders(&mut self, name: &str) -> Result<(String, Vec<NameHolder>), StoreError> {
        let key = suanli_core::validate::name_key(name);
        let rows = self.b.query(
            "SELECT id, name FROM orgs WHERE name_key = $1",
            &[key.as_str().into()],
        )?;
        let holders = rows
            .iter()
            .map(|r| {
                Ok(NameHolder {
                    org_id: r.str(0)?,
                    name: r.str(1)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((key, holders))
    }

    /// Creates an org with its accounts and first admin member; returns them. Its name must not
    /// be another org's under `name_key` (refused with [`StoreError::Duplicate`]; see
    /// [`org::decide_create_org`]).
    pub fn create_org(
        &mut self,
        org: &OrgRow,
        admin_name: &str,
        admin_email: Option<&str>,
    ) -> Result<MemberRow, StoreError> {
        let (key, holders) = self.name_holders(&org.name)?;
        let plan = org::decide_create_org(&org.id, org.kind, &holders)?;
        self.b.execute(
            &format!("INSERT INTO orgs ({ORG_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &[
                (&org.id).into(),
                (&org.name).into(),
                org.kind.as_str().into(),
                org.consumer_type.clone().into(),
                (&org.zone).into(),
                (&org.origin_region).into(),
                org.created_ms.into(),
                key.into(),
            ],
        )?;
        for &kind in plan.accounts {
            self.b.execute(
                "INSERT INTO accounts (id, org_id, kind) VALUES ($1, $2, $3)",
                &[
                    account_id(&org.id, kind).into(),
                    (&org.id).into(),
                    kind.as_str().into(),
                ],
            )?;
        }
        self.create_member(
            &org.id,
            admin_name,
            admin_email,
            plan.first_member_role,
            org.created_ms,
        )
    }

    /// Adds a member to an org. No rule of the market's is decided here: the role is one the
    /// database's CHECK allows and the org one that exists (a foreign key); see [`org`].
    pub fn create_member(
        &mut self,
        org_id: &str,
        name: &str,
        email: Option<&str>,
        role: &str,
        now_ms: i64,
    ) -> Result<MemberRow, StoreError> {
        let m = MemberRow {
            id: new_id("mem"),
            org_id: org_id.into(),
            name: name.into(),
            email: email.map(Into::into),
            role: role.into(),
            created_ms: now_ms,
        };
        self.b.execute(
            "INSERT INTO members (id, org_id, name, email, role, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                (&m.id).into(),
                (&m.org_id).into(),
                (&m.name).into(),
                m.email.clone().into(),
                (&m.role).into(),
                now_ms.into(),
            ],
        )?;
        Ok(m)
    }

    pub fn get_org(&mut self, org_id: &str) -> Result<OrgRow, StoreError> {
        if let Memory::Batch(m) = &self.memory {
            if let Some(org) = m.orgs.committed.get(org_id) {
                return Ok(org.clone());
            }
        }
        let rows = self.b.query(
            &format!("SELECT {ORG_COLS} FROM orgs WHERE id = $1"),
            &[org_id.into()],
        )?;
        let org = rows
            .first()
            .map(org_row)
            .transpose()?
            .ok_or(StoreError::NotFound("org"))?;
        if let Memory::Batch(m) = &mut self.memory {
            m.orgs.read_uncommitted.insert(org.id.clone(), org.clone());
        }
        Ok(org)
    }

    /// Renames an org (the operator's remedy for names that cannot be told apart). The new name
    /// must be free under `name_key`. The writer's kept copy of the org is dropped and the offer
    /// book re-reads the org's offers, which show the provider's name.
    pub fn rename_org(&mut self, org_id: &str, name: &str) -> Result<OrgRow, StoreError> {
        let exists = match self.get_org(org_id) {
            Ok(_) => true,
            Err(StoreError::NotFound(_)) => false,
            Err(e) => return Err(e),
        };
        let (key, holders) = self.name_holders(name)?;
        org::decide_rename(org_id, exists, &holders)?;
        self.b.execute(
            "UPDATE orgs SET name = $2, name_key = $3 WHERE id = $1",
            &[org_id.into(), name.into(), key.into()],
        )?;
        if let Memory::Batch(m) = &mut self.memory {
            m.orgs.committed.remove(org_id);
            m.orgs.read_uncommitted.remove(org_id);
        }
        let pools = self
            .b
            .query("SELECT id FROM pools WHERE org_id = $1", &[org_id.into()])?;
        for p in &pools {
            self.dirty_pools.insert(p.str(0)?);
        }
        self.get_org(org_id)
    }

    pub fn list_orgs(&mut self) -> Result<Vec<OrgRow>, StoreError> {
        let rows = self.b.query(
            &format!("SELECT {ORG_COLS} FROM orgs ORDER BY created_ms, id"),
            &[],
        )?;
        rows.iter().map(org_row).collect::<Result<_, StoreError>>()
    }

    /// The operator org, which owns the fee and external accounts.
    pub fn operator_org_id(&mut self) -> Result<Option<String>, StoreError> {
        let rows = self.b.query(
            "SELECT id FROM orgs WHERE kind = 'operator' ORDER BY created_ms, id LIMIT 1",
            &[],
        )?;
        rows.first().map(|r| r.str(0)).transpose()
    }

    pub fn get_member(&mut self, org_id: &str, member_id: &str) -> Result<MemberRow, StoreError> {
        let rows = self.b.query(
            "SELECT id, org_id, name, email, role, created_ms FROM members WHERE id = $1 AND org_id = $2",
            &[member_id.into(), org_id.into()],
        )?;
        rows.first()
            .map(member_row)
            .transpose()?
            .ok_or(StoreError::NotFound("member"))
    }

    pub fn list_members(&mut self, org_id: &str) -> Result<Vec<MemberRow>, StoreError> {
        let rows = self.b.query(
            "SELECT id, org_id, name, email, role, created_ms FROM members WHERE org_id = $1 ORDER BY created_ms, id",
            &[org_id.into()],
        )?;
        rows.iter()
            .map(member_row)
            .collect::<Result<_, StoreError>>()
    }

    pub fn create_token(
        &mut self,
        org_id: &str,
        member_id: &str,
        name: &str,
        secret_sha256: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<TokenRow, StoreError> {
        let member = match self.get_member(org_id, member_id) {
            Ok(m) => Some(TokenMember {
                org_id: m.org_id,
                role: m.role,
            }),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let role = org::decide_create_token(member.as_ref(), org_id)?;
        let t = TokenRow {
            id: new_id("tok"),
            org_id: org_id.into(),
            member_id: member_id.into(),
            name: name.into(),
            role,
            created_ms: now_ms,
            expires_ms,
            revoked_ms: None,
        };
        self.b.execute(
            "INSERT INTO api_tokens (id, org_id, member_id, name, secret_sha256, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                (&t.id).into(),
                org_id.into(),
                member_id.into(),
                name.into(),
                secret_sha256.into(),
                now_ms.into(),
                expires_ms.into(),
            ],
        )?;
        Ok(t)
    }

    const TOKEN_SELECT: &'static str = "SELECT t.id, t.org_id, t.member_id, t.name, m.role, \
        t.created_ms, t.expires_ms, t.revoked_ms FROM api_tokens t JOIN members m ON m.id = t.member_id";

    /// The token whose secret hashes to `secret_sha256` (revoked or expired ones included) with
    /// its org, in one query: what authenticating a request reads.
    pub fn caller_by_token_hash(
        &mut self,
        secret_sha256: &str,
    ) -> Result<Option<(TokenRow, OrgRow)>, StoreError> {
        let rows = self.b.query(
            "SELECT t.id, t.org_id, t.member_id, t.name, m.role, t.created_ms, t.expires_ms, \
             t.revoked_ms, o.id, o.name, o.kind, o.consumer_type, o.zone, o.origin_region, \
             o.created_ms, o.name_key FROM api_tokens t JOIN members m ON m.id = t.member_id \
             JOIN orgs o ON o.id = t.org_id WHERE t.secret_sha256 = $1",
            &[secret_sha256.into()],
        )?;
        rows.first()
            .map(|r| Ok((token_row(r)?, org_row_at(r, 8)?)))
            .transpose()
    }

    pub fn get_token(&mut self, org_id: &str, token_id: &str) -> Result<TokenRow, StoreError> {
        let rows = self.b.query(
            &format!("{} WHERE t.id = $1 AND t.org_id = $2", Self::TOKEN_SELECT),
            &[token_id.into(), org_id.into()],
        )?;
        rows.first()
            .map(token_row)
            .transpose()?
            .ok_or(StoreError::NotFound("token"))
    }

    pub fn list_tokens(&mut self, org_id: &str) -> Result<Vec<TokenRow>, StoreError> {
        let rows = self.b.query(
            &format!(
                "{} WHERE t.org_id = $1 ORDER BY t.created_ms, t.id",
                Self::TOKEN_SELECT
            ),
            &[org_id.into()],
        )?;
        rows.iter()
            .map(token_row)
            .collect::<Result<_, StoreError>>()
    }

    /// Revokes a token (idempotent: revoking twice keeps the first time; see
    /// [`org::decide_revoke`]).
    pub fn revoke_token(
        &mut self,
        org_id: &str,
        token_id: &str,
        now_ms: i64,
    ) -> Result<TokenRow, StoreError> {
        let token = match self.get_token(org_id, token_id) {
            Ok(t) => Some(t),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let snapshot = token.as_ref().map(|t| TokenSnapshot {
            org_id: &t.org_id,
            revoked_ms: t.revoked_ms,
        });
        match org::decide_revoke(snapshot, org_id, now_ms)? {
            // Conditional: a revocation committed meanwhile keeps its time.
            Revocation::Now(at_ms) => {
                self.b.execute(
                    "UPDATE api_tokens SET revoked_ms = $3 WHERE id = $1 AND org_id = $2 AND revoked_ms IS NULL",
                    &[token_id.into(), org_id.into(), at_ms.into()],
                )?;
                self.get_token(org_id, token_id)
            }
            Revocation::Already(_) => {
                let Some(token) = token else {
                    unreachable!("the decision refuses revoking no token")
                };
                Ok(token)
            }
        }
    }

    // ---------------------------------------------------------------- accelerator models

    pub fn list_accelerator_models(&mut self) -> Result<Vec<(String, String, u32)>, StoreError> {
        let rows = self.b.query(
            "SELECT name, vendor, memory_gib FROM accelerator_models ORDER BY name",
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((r.str(0)?, r.str(1)?, r.u32(2)?)))
            .collect::<Result<_, StoreError>>()
    }

    pub fn accelerator_memory_gib(&mut self, model: &str) -> Result<Option<u32>, StoreError> {
        let rows = self.b.query(
            "SELECT memory_gib FROM accelerator_models WHERE name = $1",
            &[model.into()],
        )?;
        rows.first().map(|r| r.u32(0)).transpose()
    }

    /// Adds a model; an existing name is a conflict.
    pub fn add_accelerator_model(
        &mut self,
        name: &str,
        vendor: &str,
        memory_gib: u32,
    ) -> Result<(), StoreError> {
        self.b.execute(
            "INSERT INTO accelerator_models (name, vendor, memory_gib) VALUES ($1, $2, $3)",
            &[name.into(), vendor.into(), i64::from(memory_gib).into()],
        )?;
        Ok(())
    }

    /// Adds the models that are not yet known, leaving existing ones as the operator set them.
    pub fn seed_accelerator_models(
        &mut self,
        models: &[(String, String, u32)],
    ) -> Result<(), StoreError> {
        for (name, vendor, mem) in models {
            self.b.execute(
                "INSERT INTO accelerator_models (name, vendor, memory_gib) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
                &[name.into(), vendor.into(), i64::from(*mem).into()],
            )?;
        }
        Ok(())
    }
}
