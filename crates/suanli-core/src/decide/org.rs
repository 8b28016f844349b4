//! Admitting and renaming orgs, adding members, and creating and revoking API tokens.
//!
//! What the database keeps on its own, as constraints and not as decisions: a member's role is
//! `admin` or `member` (a CHECK; the API's `Role` enum is all that reaches it), members and tokens
//! belong to an org that exists (foreign keys), and no two tokens share a secret's hash (a unique
//! index; a secret is 256 random bits, so a clash is not a rule the market has). The unique index
//! on `orgs.name_key` backs [`decide_name`] when two exchange processes admit orgs at once.
//! Who may do each of these (the operator admits and renames orgs, an org's admins add members
//! and tokens) is [`super::access`]'s to decide, for the caller the API authenticated.

use super::{OrgKind, Refusal};
use crate::ledger::AccountKind;

/// The role an org's first member is given: its admin.
pub const FIRST_MEMBER_ROLE: &str = "admin";

/// An org whose name has the same key (`crate::validate::name_key`) as a name asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameHolder {
    pub org_id: String,
    pub name: String,
}

/// Decides whether org `org_id` may be named a name whose key `holders` share: only if none of
/// them is another org (an org keeps its own name's key when it is renamed to a variant of it).
/// Names are compared by key, so two orgs can never be told apart only by case, width, spacing,
/// invisible characters or look-alike letters.
pub fn decide_name(org_id: &str, holders: &[NameHolder]) -> Result<(), Refusal> {
    match holders.iter().find(|h| h.org_id != org_id) {
        Some(other) => Err(Refusal::Duplicate {
            field: "name",
            message: format!(
                "an org named {:?} already exists; names are compared ignoring case, width, \
                 spacing, invisible characters and look-alike letters",
                other.name
            ),
        }),
        None => Ok(()),
    }
}

/// Decides the kind of an org being admitted, and whether it has a consumer type: a consumer org
/// is an enterprise or a research institute (it must say which), other kinds have none, and the
/// exchange has exactly one operator org (made when it first starts), so none is admitted.
pub fn decide_new_org_kind(kind: OrgKind, has_consumer_type: bool) -> Result<(), Refusal> {
    match (kind, has_consumer_type) {
        (OrgKind::Consumer, false) => Err(Refusal::invalid(
            "consumer_type",
            "consumer orgs are an enterprise or a research_institute",
        )),
        (OrgKind::Provider | OrgKind::Operator, true) => Err(Refusal::invalid(
            "consumer_type",
            "only consumer orgs have a consumer_type",
        )),
        (OrgKind::Operator, false) => Err(Refusal::invalid(
            "kind",
            "the exchange has exactly one operator org",
        )),
        _ => Ok(()),
    }
}

/// What admitting an org does besides storing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrgPlan {
    /// The accounts it opens (by its kind: [`OrgKind::accounts`]).
    pub accounts: &'static [AccountKind],
    /// The role of the member created with it.
    pub first_member_role: &'static str,
}

/// Decides admitting org `org_id` of `kind` under a name whose key `holders` share: refused when
/// another org holds the name ([`decide_name`]); otherwise it opens its kind's accounts and gets a
/// first member, its admin.
pub fn decide_create_org(
    org_id: &str,
    kind: OrgKind,
    holders: &[NameHolder],
) -> Result<NewOrgPlan, Refusal> {
    decide_name(org_id, holders)?;
    Ok(NewOrgPlan {
        accounts: kind.accounts(),
        first_member_role: FIRST_MEMBER_ROLE,
    })
}

/// Decides renaming an org (`exists`: whether there is an org of that id) to a name whose key
/// `holders` share: a missing org is refused first, then a name another org holds.
pub fn decide_rename(org_id: &str, exists: bool, holders: &[NameHolder]) -> Result<(), Refusal> {
    if !exists {
        return Err(Refusal::NotFound("org"));
    }
    decide_name(org_id, holders)
}

/// Longest lifetime of an API token: one year (366 days).
pub const MAX_TOKEN_LIFETIME_MS: i64 = 366 * 24 * 3_600 * 1_000;
/// Shortest lifetime a token may be asked for: a minute.
pub const MIN_TOKEN_LIFETIME_S: u64 = 60;
/// Lifetime of an API token that asked for none: 90 days.
pub const DEFAULT_TOKEN_LIFETIME_MS: i64 = 90 * 24 * 3_600 * 1_000;

/// Decides the lifetime of a new token that asked for `expires_in_s` (`None`: the default), in
/// milliseconds: between a minute and [`MAX_TOKEN_LIFETIME_MS`].
pub fn decide_token_lifetime(expires_in_s: Option<u64>) -> Result<i64, Refusal> {
    const MAX_S: u64 = MAX_TOKEN_LIFETIME_MS as u64 / 1_000;
    match expires_in_s {
        None => Ok(DEFAULT_TOKEN_LIFETIME_MS),
        // At most a year of seconds: the product fits an i64.
        Some(s) if (MIN_TOKEN_LIFETIME_S..=MAX_S).contains(&s) => Ok(s as i64 * 1_000),
        Some(_) => Err(Refusal::invalid(
            "expires_in_s",
            "expires_in_s must be between 60 seconds and one year",
        )),
    }
}

/// What creating a token needs to know of the member it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMember {
    pub org_id: String,
    pub role: String,
}

/// Decides creating a token of org `org_id` for `member` (`None`: no such member): only for a
/// member of that org (another org's member reads as missing). Returns the role the token acts
/// with: its member's.
pub fn decide_create_token(member: Option<&TokenMember>, org_id: &str) -> Result<String, Refusal> {
    member
        .filter(|m| m.org_id == org_id)
        .map(|m| m.role.clone())
        .ok_or(Refusal::NotFound("member"))
}

/// What revoking a token needs to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSnapshot<'a> {
    pub org_id: &'a str,
    pub revoked_ms: Option<i64>,
}

/// What revoking a token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The token is revoked as of this instant.
    Now(i64),
    /// The token was revoked before, at this instant; it stays so (a retry finds it done).
    Already(i64),
}

/// Decides org `org_id` revoking `token` (`None`: no such token) at `now_ms`: only its own org's
/// (another org's token reads as missing); revoking twice keeps the first time.
pub fn decide_revoke(
    token: Option<TokenSnapshot<'_>>,
    org_id: &str,
    now_ms: i64,
) -> Result<Revocation, Refusal> {
    let token = token
        .filter(|t| t.org_id == org_id)
        .ok_or(Refusal::NotFound("token"))?;
    Ok(match token.revoked_ms {
        Some(at) => Revocation::Already(at),
        None => Revocation::Now(now_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(org_id: &str, name: &str) -> NameHolder {
        NameHolder {
            org_id: org_id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_free_name_admits_the_org_with_its_kinds_accounts_and_an_admin() {
        let plan = decide_create_org("org_a", OrgKind::Consumer, &[]).unwrap();
        assert_eq!(plan.accounts, OrgKind::Consumer.accounts());
        assert_eq!(plan.first_member_role, "admin");
        let plan = decide_create_org("org_o", OrgKind::Operator, &[]).unwrap();
        assert!(plan.accounts.contains(&AccountKind::External));
    }

    #[test]
    fn a_name_another_org_holds_is_refused_with_its_name() {
        let taken = [holder("org_a", "Tianjin Robotics")];
        match decide_create_org("org_b", OrgKind::Provider, &taken) {
            Err(Refusal::Duplicate { field, message }) => {
                assert_eq!(field, "name");
                assert!(message.contains("\"Tianjin Robotics\""), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(decide_name("org_b", &taken).is_err());
        // An org's own name is no obstacle to itself.
        assert_eq!(decide_name("org_a", &taken), Ok(()));
    }

    #[test]
    fn a_rename_needs_the_org_and_a_free_name() {
        let taken = [holder("org_a", "Tianjin Robotics")];
        assert_eq!(
            decide_rename("org_x", false, &[]),
            Err(Refusal::NotFound("org"))
        );
        // A missing org is refused as missing, whatever its name.
        assert_eq!(
            decide_rename("org_x", false, &taken),
            Err(Refusal::NotFound("org"))
        );
        assert!(matches!(
            decide_rename("org_b", true, &taken),
            Err(Refusal::Duplicate { field: "name", .. })
        ));
        assert_eq!(decide_rename("org_a", true, &taken), Ok(()));
        assert_eq!(decide_rename("org_b", true, &[]), Ok(()));
    }

    #[test]
    fn a_consumer_says_what_it_is_other_kinds_do_not_and_no_second_operator() {
        assert_eq!(decide_new_org_kind(OrgKind::Consumer, true), Ok(()));
        assert_eq!(decide_new_org_kind(OrgKind::Provider, false), Ok(()));
        assert_eq!(
            decide_new_org_kind(OrgKind::Consumer, false),
            Err(Refusal::invalid(
                "consumer_type",
                "consumer orgs are an enterprise or a research_institute"
            ))
        );
        let none_for_others = Err(Refusal::invalid(
            "consumer_type",
            "only consumer orgs have a consumer_type",
        ));
        assert_eq!(
            decide_new_org_kind(OrgKind::Provider, true),
            none_for_others
        );
        // An operator with a consumer type is refused for the type first.
        assert_eq!(
            decide_new_org_kind(OrgKind::Operator, true),
            none_for_others
        );
        assert_eq!(
            decide_new_org_kind(OrgKind::Operator, false),
            Err(Refusal::invalid(
                "kind",
                "the exchange has exactly one operator org"
            ))
        );
    }

    #[test]
    fn a_token_lives_a_minute_to_a_year() {
        assert_eq!(decide_token_lifetime(None), Ok(DEFAULT_TOKEN_LIFETIME_MS));
        assert_eq!(decide_token_lifetime(Some(60)), Ok(60_000));
        assert_eq!(
            decide_token_lifetime(Some(366 * 24 * 3_600)),
            Ok(MAX_TOKEN_LIFETIME_MS)
        );
        let refused = Err(Refusal::invalid(
            "expires_in_s",
            "expires_in_s must be between 60 seconds and one year",
        ));
        for s in [0, 59, 366 * 24 * 3_600 + 1, u64::MAX] {
            assert_eq!(decide_token_lifetime(Some(s)), refused, "{s}");
        }
    }

    #[test]
    fn a_token_is_for_a_member_of_the_org_and_takes_its_role() {
        let member = TokenMember {
            org_id: "org_a".into(),
            role: "member".into(),
        };
        assert_eq!(
            decide_create_token(Some(&member), "org_a"),
            Ok("member".into())
        );
        assert_eq!(
            decide_create_token(Some(&member), "org_b"),
            Err(Refusal::NotFound("member"))
        );
        assert_eq!(
            decide_create_token(None, "org_a"),
            Err(Refusal::NotFound("member"))
        );
    }

    #[test]
    fn revoking_keeps_the_first_time_and_only_the_org_revokes() {
        let live = TokenSnapshot {
            org_id: "org_a",
            revoked_ms: None,
        };
        assert_eq!(
            decide_revoke(Some(live), "org_a", 5),
            Ok(Revocation::Now(5))
        );
        let revoked = TokenSnapshot {
            revoked_ms: Some(3),
            ..live
        };
        assert_eq!(
            decide_revoke(Some(revoked), "org_a", 5),
            Ok(Revocation::Already(3))
        );
        assert_eq!(
            decide_revoke(Some(live), "org_b", 5),
            Err(Refusal::NotFound("token"))
        );
        assert_eq!(
            decide_revoke(None, "org_a", 5),
            Err(Refusal::NotFound("token"))
        );
    }
}
