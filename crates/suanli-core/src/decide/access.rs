//! Who may do what. The API authenticates a caller (its token names its org and the role the token
//! acts with); what that caller may then do is decided here: which commands are an operator's, a
//! provider's or a consumer's, which are an org's admins' only, and which objects a caller may
//! read (another org's reads exactly like a missing one).
//!
//! What the database keeps on its own: a member's role is `admin` or `member` (a CHECK).

use super::{OrgKind, Refusal};

/// The role a token acts with: its member's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Manages the org's members and tokens, and does everything a member does.
    Admin,
    /// Uses the org's capabilities (buy, offer, run jobs) but manages no members or tokens.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// The authenticated caller, as the API found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    pub org_id: &'a str,
    pub kind: OrgKind,
    /// The role its token acts with (`None`: one that is not a role, which may do only what
    /// every caller may).
    pub role: Option<Role>,
}

/// A command only some callers may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Admitting (creating) an org: the operator's.
    AdmitOrg,
    /// Renaming an org: the operator's.
    RenameOrg,
    /// Adding an accelerator model to the registry: the operator's.
    ExtendRegistry,
    /// Recording money received for an org: the operator's.
    RecordDeposit,
    /// Paying money out of an org's account: the operator's.
    RecordWithdrawal,
    /// Checking the ledger's invariants over the whole book: the operator's.
    CheckLedger,
    /// Reading the exchange's market-wide metrics: the operator's.
    ReadMetrics,
    /// Registering a pool: a provider's.
    RegisterPool,
    /// Publishing an offer: a provider's.
    PublishOffer,
    /// Registering an agent: a provider's.
    RunAgent,
    /// Buying capacity: a consumer's.
    BuyCapacity,
    /// Queueing a job on a lease: a consumer's.
    RunJob,
    /// Adding a member to the caller's org: its admins'.
    AddMember,
    /// Listing the caller's org's tokens: its admins'.
    ListTokens,
    /// Creating a token for a member of the caller's org: its admins'.
    CreateToken,
    /// Revoking a token of the caller's org: its admins'.
    RevokeToken,
}

/// Who may send an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Orgs of these kinds (any of their members).
    Kinds(&'static [OrgKind]),
    /// An admin of the caller's org (of any kind).
    Admin,
}

impl Action {
    pub const ALL: [Action; 16] = [
        Action::AdmitOrg,
        Action::RenameOrg,
        Action::ExtendRegistry,
        Action::RecordDeposit,
        Action::RecordWithdrawal,
        Action::CheckLedger,
        Action::ReadMetrics,
        Action::RegisterPool,
        Action::PublishOffer,
        Action::RunAgent,
        Action::BuyCapacity,
        Action::RunJob,
        Action::AddMember,
        Action::ListTokens,
        Action::CreateToken,
        Action::RevokeToken,
    ];

    /// Who may send it.
    pub fn who(self) -> Who {
        const OPERATOR: &[OrgKind] = &[OrgKind::Operator];
        const PROVIDER: &[OrgKind] = &[OrgKind::Provider];
        const CONSUMER: &[OrgKind] = &[OrgKind::Consumer];
        match self {
            Action::AdmitOrg
            | Action::RenameOrg
            | Action::ExtendRegistry
            | Action::RecordDeposit
            | Action::RecordWithdrawal
            | Action::CheckLedger
            | Action::ReadMetrics => Who::Kinds(OPERATOR),
            Action::RegisterPool | Action::PublishOffer | Action::RunAgent => Who::Kinds(PROVIDER),
            Action::BuyCapacity | Action::RunJob => Who::Kinds(CONSUMER),
            Action::AddMember | Action::ListTokens | Action::CreateToken | Action::RevokeToken => {
                Who::Admin
            }
        }
    }

    /// What it does, as a refusal names it ("admitting orgs is for operator orgs").
    pub fn what(self) -> &'static str {
        match self {
            Action::AdmitOrg => "admitting orgs",
            Action::RenameOrg => "renaming orgs",
            Action::ExtendRegistry => "extending the accelerator registry",
            Action::RecordDeposit => "recording deposits",
            Action::RecordWithdrawal => "recording withdrawals",
            Action::CheckLedger => "checking the ledger",
            Action::ReadMetrics => "reading the exchange's metrics",
            Action::RegisterPool => "registering pools",
            Action::PublishOffer => "publishing offers",
            Action::RunAgent => "running agents",
            Action::BuyCapacity => "buying capacity",
            Action::RunJob => "running jobs",
            Action::AddMember => "adding members",
            Action::ListTokens => "listing tokens",
            Action::CreateToken => "creating tokens",
            Action::RevokeToken => "revoking tokens",
        }
    }
}

/// Decides whether `caller` may send `action`: refused (forbidden) when its org is of another kind
/// than the action's, or when the action is an admin's and its token does not act as one.
pub fn decide_access(caller: &Caller<'_>, action: Action) -> Result<(), Refusal> {
    match action.who() {
        Who::Kinds(kinds) if kinds.contains(&caller.kind) => Ok(()),
        Who::Kinds(kinds) => {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            Err(Refusal::Forbidden(format!(
                "{} is for {} orgs",
                action.what(),
                names.join(" and ")
            )))
        }
        Who::Admin if caller.role == Some(Role::Admin) => Ok(()),
        Who::Admin => Err(Refusal::Forbidden("this needs an admin of the org".into())),
    }
}

/// Whether `caller` reads every org's orgs and agents (the operator does), or only its own.
pub fn reads_every_org(caller: &Caller<'_>) -> bool {
    caller.kind == OrgKind::Operator
}

/// Decides `caller` reading the org `org_id` (`None`: an id that names no org): its own, or any
/// for the operator; another org reads exactly like a missing one.
pub fn decide_read_org(caller: &Caller<'_>, org_id: Option<&str>) -> Result<(), Refusal> {
    if reads_every_org(caller) || org_id == Some(caller.org_id) {
        Ok(())
    } else {
        Err(Refusal::NotFound("org"))
    }
}

/// Decides `caller` reading an offer of org `owner_org_id` that is `active` or not: any active
/// offer of the market, or one of its own in any state; another org's withdrawn offer reads
/// exactly like a missing one.
pub fn decide_read_offer(
    caller: &Caller<'_>,
    owner_org_id: &str,
    active: bool,
) -> Result<(), Refusal> {
    if active || owner_org_id == caller.org_id {
        Ok(())
    } else {
        Err(Refusal::NotFound("offer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(kind: OrgKind, role: Option<Role>) -> Caller<'static> {
        Caller {
            org_id: "org_a",
            kind,
            role,
        }
    }

    const KINDS: [OrgKind; 3] = [OrgKind::Consumer, OrgKind::Provider, OrgKind::Operator];
    const ROLES: [Option<Role>; 3] = [Some(Role::Admin), Some(Role::Member), None];

    #[test]
    fn roles_round_trip_and_unknown_ones_do_not_parse() {
        for r in [Role::Admin, Role::Member] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse("owner"), None);
    }

    #[test]
    fn an_orgs_kind_decides_its_commands_whatever_the_role() {
        for action in Action::ALL {
            let Who::Kinds(kinds) = action.who() else {
                continue;
            };
            for kind in KINDS {
                for role in ROLES {
                    let got = decide_access(&caller(kind, role), action);
                    if kinds.contains(&kind) {
                        assert_eq!(got, Ok(()), "{action:?} by {kind:?}");
                    } else {
                        assert_eq!(
                            got,
                            Err(Refusal::Forbidden(format!(
                                "{} is for {} orgs",
                                action.what(),
                                kinds[0].as_str()
                            ))),
                            "{action:?} by {kind:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_refusals_name_the_action_and_who_may() {
        let consumer = caller(OrgKind::Consumer, Some(Role::Admin));
        let provider = caller(OrgKind::Provider, Some(Role::Admin));
        let operator = caller(OrgKind::Operator, Some(Role::Admin));
        let forbidden = |m: &str| Err(Refusal::Forbidden(m.into()));
        assert_eq!(
            decide_access(&consumer, Action::AdmitOrg),
            forbidden("admitting orgs is for operator orgs")
        );
        assert_eq!(
            decide_access(&provider, Action::RenameOrg),
            forbidden("renaming orgs is for operator orgs")
        );
        assert_eq!(
            decide_access(&consumer, Action::RegisterPool),
            forbidden("registering pools is for provider orgs")
        );
        assert_eq!(
            decide_access(&operator, Action::BuyCapacity),
            forbidden("buying capacity is for consumer orgs")
        );
        assert_eq!(
            decide_access(&provider, Action::RunJob),
            forbidden("running jobs is for consumer orgs")
        );
        assert_eq!(
            decide_access(&consumer, Action::ReadMetrics),
            forbidden("reading the exchange's metrics is for operator orgs")
        );
        assert_eq!(decide_access(&operator, Action::AdmitOrg), Ok(()));
        assert_eq!(decide_access(&provider, Action::RunAgent), Ok(()));
        assert_eq!(decide_access(&consumer, Action::BuyCapacity), Ok(()));
    }

    #[test]
    fn members_and_tokens_are_managed_by_admins_of_any_kind() {
        for action in [
            Action::AddMember,
            Action::ListTokens,
            Action::CreateToken,
            Action::RevokeToken,
        ] {
            assert_eq!(action.who(), Who::Admin);
            for kind in KINDS {
                assert_eq!(
                    decide_access(&caller(kind, Some(Role::Admin)), action),
                    Ok(())
                );
                for role in [Some(Role::Member), None] {
                    assert_eq!(
                        decide_access(&caller(kind, role), action),
                        Err(Refusal::Forbidden("this needs an admin of the org".into()))
                    );
                }
            }
        }
    }

    #[test]
    fn an_org_reads_its_own_org_and_the_operator_every_one() {
        let consumer = caller(OrgKind::Consumer, Some(Role::Member));
        let operator = caller(OrgKind::Operator, Some(Role::Member));
        assert!(!reads_every_org(&consumer));
        assert!(reads_every_org(&operator));
        assert_eq!(decide_read_org(&consumer, Some("org_a")), Ok(()));
        assert_eq!(
            decide_read_org(&consumer, Some("org_b")),
            Err(Refusal::NotFound("org"))
        );
        assert_eq!(
            decide_read_org(&consumer, None),
            Err(Refusal::NotFound("org"))
        );
        assert_eq!(decide_read_org(&operator, Some("org_b")), Ok(()));
        // The operator goes on to look the id up: one that names no org is missing there.
        assert_eq!(decide_read_org(&operator, None), Ok(()));
    }

    #[test]
    fn an_offer_is_read_while_active_or_by_its_own_org() {
        let consumer = caller(OrgKind::Consumer, None);
        assert_eq!(decide_read_offer(&consumer, "org_p", true), Ok(()));
        assert_eq!(decide_read_offer(&consumer, "org_a", false), Ok(()));
        assert_eq!(
            decide_read_offer(&consumer, "org_p", false),
            Err(Refusal::NotFound("offer"))
        );
        // Not even the operator reads another org's withdrawn offer.
        let operator = caller(OrgKind::Operator, Some(Role::Admin));
        assert_eq!(
            decide_read_offer(&operator, "org_p", false),
            Err(Refusal::NotFound("offer"))
        );
    }
}
