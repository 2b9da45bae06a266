//! Authorization: roles, token scopes, and the one pure function that decides every request.
//!
//! A request is allowed only when **both** the caller's role in the organization permits the
//! operation **and** the token carries the scope the operation needs (a token can narrow what its
//! user may do, never widen it). Tokens restricted to named workspaces see nothing else.
//! Deny by default: an operation missing from the tables below is refused.
//!
//! Workspaces the caller may not see answer "not found", never "forbidden", so that the existence
//! of another user's workspace is not disclosed.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A user's role in an organization, from most to least privileged.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including granting and removing the owner role.
    Owner,
    /// Everything except granting, changing or removing the owner role.
    Admin,
    /// Manages templates; has workspaces of their own.
    TemplateAdmin,
    /// Has workspaces of their own and reads templates.
    Member,
    /// Reads the audit log, templates and every workspace's record; changes nothing.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::TemplateAdmin,
        Role::Member,
        Role::Auditor,
    ];

    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::TemplateAdmin => "template-admin",
            Role::Member => "member",
            Role::Auditor => "auditor",
        }
    }

    /// The scopes this role can make use of: the default scopes of a new token.
    pub fn scopes(self) -> ScopeSet {
        let s: &[Scope] = match self {
            Role::Owner | Role::Admin => &Scope::ALL,
            Role::TemplateAdmin => &[
                Scope::WorkspaceRead,
                Scope::WorkspaceWrite,
                Scope::WorkspaceExec,
                Scope::TemplateRead,
                Scope::TemplateWrite,
            ],
            Role::Member => &[
                Scope::WorkspaceRead,
                Scope::WorkspaceWrite,
                Scope::WorkspaceExec,
                Scope::TemplateRead,
            ],
            Role::Auditor => &[Scope::WorkspaceRead, Scope::TemplateRead, Scope::AuditRead],
        };
        ScopeSet(s.iter().copied().collect())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role `{s}`: expected owner, admin, template-admin, member or auditor"
                )
            })
    }
}

/// What a token may be used for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Scope {
    /// Read workspaces, their jobs and logs.
    #[serde(rename = "workspace:read")]
    WorkspaceRead,
    /// Create, start, stop, restart, delete, extend workspaces; cancel their jobs.
    #[serde(rename = "workspace:write")]
    WorkspaceWrite,
    /// Run commands in workspaces.
    #[serde(rename = "workspace:exec")]
    WorkspaceExec,
    /// Read templates.
    #[serde(rename = "template:read")]
    TemplateRead,
    /// Push, activate and archive templates.
    #[serde(rename = "template:write")]
    TemplateWrite,
    /// Read and verify the audit log; read webhooks and their deliveries.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Manage users, teams, webhooks and other users' tokens and SSH keys.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 7] = [
        Scope::WorkspaceRead,
        Scope::WorkspaceWrite,
        Scope::WorkspaceExec,
        Scope::TemplateRead,
        Scope::TemplateWrite,
        Scope::AuditRead,
        Scope::Admin,
    ];

    /// The stable string form (`workspace:read`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::WorkspaceRead => "workspace:read",
            Scope::WorkspaceWrite => "workspace:write",
            Scope::WorkspaceExec => "workspace:exec",
            Scope::TemplateRead => "template:read",
            Scope::TemplateWrite => "template:write",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = Scope::ALL.iter().map(|x| x.as_str()).collect();
                format!("unknown scope `{s}`: expected one of {}", all.join(", "))
            })
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(pub BTreeSet<Scope>);

impl ScopeSet {
    /// Whether the set holds `s`.
    pub fn has(&self, s: Scope) -> bool {
        self.0.contains(&s)
    }
    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }
    /// Parses a list of scope names.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ScopeSet, String> {
        names
            .into_iter()
            .map(Scope::from_str)
            .collect::<Result<_, _>>()
            .map(ScopeSet)
    }
}

/// Whose workspace a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The caller's own.
    Own,
    /// Another user's (or a host-local workspace made by the embedded CLI).
    Other,
}

/// Every kind of operation the API performs, as the authorization tables know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read a workspace, its jobs, logs, events.
    WorkspaceRead(Owner),
    /// Create (own only), start, stop, restart, delete, extend, cancel a job.
    WorkspaceWrite(Owner),
    /// Run a command in a workspace.
    WorkspaceExec(Owner),
    /// List or read templates and their versions.
    TemplateRead,
    /// Create templates and versions, activate, archive; upload template files.
    TemplateWrite,
    /// Query, export and verify the audit log.
    AuditRead,
    /// Create, list, change and suspend users; manage teams.
    UserAdmin,
    /// Grant or revoke the owner role.
    OwnerAdmin,
    /// List or revoke another user's tokens and SSH keys.
    TokenAdmin,
    /// List webhooks and their deliveries (never their secrets).
    WebhookRead,
    /// Create, delete and test webhooks.
    WebhookAdmin,
    /// Read quota status and usage and cost reports: one's own (and one's teams'), or everyone's.
    UsageRead(Owner),
    /// Set and remove quotas and budgets; grant and revoke overrides.
    QuotaAdmin,
}

impl Op {
    /// The token scope this operation needs.
    pub fn scope(self) -> Scope {
        match self {
            Op::WorkspaceRead(_) => Scope::WorkspaceRead,
            Op::WorkspaceWrite(_) => Scope::WorkspaceWrite,
            Op::WorkspaceExec(_) => Scope::WorkspaceExec,
            Op::TemplateRead => Scope::TemplateRead,
            Op::TemplateWrite => Scope::TemplateWrite,
            Op::AuditRead | Op::WebhookRead => Scope::AuditRead,
            Op::UsageRead(_) => Scope::WorkspaceRead,
            Op::UserAdmin | Op::OwnerAdmin | Op::TokenAdmin | Op::WebhookAdmin | Op::QuotaAdmin => {
                Scope::Admin
            }
        }
    }
}

/// Whether the role permits the operation (before token scopes are considered).
pub fn role_permits(role: Role, op: Op) -> bool {
    use Owner::*;
    match role {
        Role::Owner => true,
        Role::Admin => !matches!(op, Op::OwnerAdmin),
        Role::TemplateAdmin | Role::Member => match op {
            Op::WorkspaceRead(Own) | Op::WorkspaceWrite(Own) | Op::WorkspaceExec(Own) => true,
            Op::TemplateRead | Op::UsageRead(Own) => true,
            Op::TemplateWrite => role == Role::TemplateAdmin,
            _ => false,
        },
        Role::Auditor => matches!(
            op,
            Op::WorkspaceRead(_)
                | Op::TemplateRead
                | Op::AuditRead
                | Op::WebhookRead
                | Op::UsageRead(_)
        ),
    }
}

/// The outcome of an authorization check, mapped by the server to HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 404: the caller may not even know the target exists.
    Hidden,
    /// 403: the caller knows the target but may not do this (names the missing scope or role).
    Forbidden(Forbidden),
}

/// Why a request was refused with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// The role does not permit the operation.
    Role,
    /// The token lacks this scope.
    Scope(Scope),
}

/// What the server knows about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Role in the organization.
    pub role: Role,
    /// The token's scopes.
    pub scopes: ScopeSet,
    /// If set, the token may act only on these workspace ids.
    pub workspaces: Option<BTreeSet<String>>,
}

/// Decides whether `who` may perform `op`. `workspace` is the target workspace's id, for
/// workspace operations. This function is the whole authorization policy.
pub fn decide(who: &Principal, op: Op, workspace: Option<&str>) -> Decision {
    let is_ws_op = matches!(
        op,
        Op::WorkspaceRead(_) | Op::WorkspaceWrite(_) | Op::WorkspaceExec(_)
    );
    // A token restricted to named workspaces sees no other workspace, and does nothing that is
    // not about one of them.
    if let Some(allowed) = &who.workspaces {
        match workspace {
            Some(id) if allowed.contains(id) => {}
            Some(_) => return Decision::Hidden,
            None if is_ws_op => {} // listing: the server filters the list to the allowed ids
            None => return Decision::Forbidden(Forbidden::Scope(op.scope())),
        }
    }
    // Another user's workspace that the role cannot read is hidden, whatever the operation.
    if let Op::WorkspaceRead(Owner::Other)
    | Op::WorkspaceWrite(Owner::Other)
    | Op::WorkspaceExec(Owner::Other) = op
    {
        if !role_permits(who.role, Op::WorkspaceRead(Owner::Other)) {
            return Decision::Hidden;
        }
    }
    if !role_permits(who.role, op) {
        return Decision::Forbidden(Forbidden::Role);
    }
    if !who.scopes.has(op.scope()) {
        return Decision::Forbidden(Forbidden::Scope(op.scope()));
    }
    Decision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, scopes: &[Scope]) -> Principal {
        Principal {
            role,
            scopes: ScopeSet(scopes.iter().copied().collect()),
            workspaces: None,
        }
    }

    const ALL_OPS: [Op; 18] = [
        Op::WorkspaceRead(Owner::Own),
        Op::WorkspaceRead(Owner::Other),
        Op::WorkspaceWrite(Owner::Own),
        Op::WorkspaceWrite(Owner::Other),
        Op::WorkspaceExec(Owner::Own),
        Op::WorkspaceExec(Owner::Other),
        Op::TemplateRead,
        Op::TemplateWrite,
        Op::AuditRead,
        Op::UserAdmin,
        Op::OwnerAdmin,
        Op::TokenAdmin,
        Op::TemplateRead,
        Op::WebhookRead,
        Op::WebhookAdmin,
        Op::UsageRead(Owner::Own),
        Op::UsageRead(Owner::Other),
        Op::QuotaAdmin,
    ];

    /// The full role table, written out so a change to the policy shows up as a diff here.
    #[test]
    fn role_table() {
        use Owner::*;
        let expect = |role: Role, op: Op| -> bool {
            match (role, op) {
                (Role::Owner, _) => true,
                (Role::Admin, Op::OwnerAdmin) => false,
                (Role::Admin, _) => true,
                (Role::TemplateAdmin, Op::WorkspaceRead(Own))
                | (Role::TemplateAdmin, Op::WorkspaceWrite(Own))
                | (Role::TemplateAdmin, Op::WorkspaceExec(Own))
                | (Role::TemplateAdmin, Op::TemplateRead)
                | (Role::TemplateAdmin, Op::TemplateWrite)
                | (Role::TemplateAdmin, Op::UsageRead(Own)) => true,
                (Role::Member, Op::WorkspaceRead(Own))
                | (Role::Member, Op::WorkspaceWrite(Own))
                | (Role::Member, Op::WorkspaceExec(Own))
                | (Role::Member, Op::TemplateRead)
                | (Role::Member, Op::UsageRead(Own)) => true,
                (Role::Auditor, Op::WorkspaceRead(_))
                | (Role::Auditor, Op::UsageRead(_))
                | (Role::Auditor, Op::TemplateRead)
                | (Role::Auditor, Op::AuditRead)
                | (Role::Auditor, Op::WebhookRead) => true,
                _ => false,
            }
        };
        for role in Role::ALL {
            for op in ALL_OPS {
                assert_eq!(role_permits(role, op), expect(role, op), "{role} {op:?}");
            }
        }
    }

    /// Webhooks send every matching event (any user's) to a URL of the admin's choosing: owners
    /// and admins manage them, auditors may read them, nobody else sees them.
    #[test]
    fn webhooks_are_managed_by_admins_and_read_by_auditors() {
        for role in Role::ALL {
            let who = p(role, &role.scopes().0.into_iter().collect::<Vec<_>>());
            let read = decide(&who, Op::WebhookRead, None);
            let admin = decide(&who, Op::WebhookAdmin, None);
            match role {
                Role::Owner | Role::Admin => {
                    assert_eq!((read, admin), (Decision::Allow, Decision::Allow), "{role}")
                }
                Role::Auditor => assert_eq!(
                    (read, admin),
                    (Decision::Allow, Decision::Forbidden(Forbidden::Role)),
                    "{role}"
                ),
                Role::TemplateAdmin | Role::Member => assert_eq!(
                    (read, admin),
                    (
                        Decision::Forbidden(Forbidden::Role),
                        Decision::Forbidden(Forbidden::Role)
                    ),
                    "{role}"
                ),
            }
        }
        // An admin token without the scopes may not.
        let narrow = p(Role::Admin, &[Scope::WorkspaceRead]);
        assert_eq!(
            decide(&narrow, Op::WebhookRead, None),
            Decision::Forbidden(Forbidden::Scope(Scope::AuditRead))
        );
        assert_eq!(
            decide(&narrow, Op::WebhookAdmin, None),
            Decision::Forbidden(Forbidden::Scope(Scope::Admin))
        );
    }

    #[test]
    fn full_scopes_follow_the_role_table() {
        for role in Role::ALL {
            let who = p(role, &Scope::ALL);
            for op in ALL_OPS {
                let d = decide(&who, op, Some("ws1"));
                if role_permits(role, op) {
                    assert_eq!(d, Decision::Allow, "{role} {op:?}");
                } else {
                    assert_ne!(d, Decision::Allow, "{role} {op:?}");
                }
            }
        }
    }

    #[test]
    fn others_workspaces_are_hidden_from_members_not_forbidden() {
        for role in [Role::Member, Role::TemplateAdmin] {
            let who = p(role, &Scope::ALL);
            for op in [
                Op::WorkspaceRead(Owner::Other),
                Op::WorkspaceWrite(Owner::Other),
                Op::WorkspaceExec(Owner::Other),
            ] {
                assert_eq!(decide(&who, op, Some("x")), Decision::Hidden);
            }
        }
        // An auditor sees other workspaces, so writing them is forbidden, not hidden.
        let who = p(Role::Auditor, &Scope::ALL);
        assert_eq!(
            decide(&who, Op::WorkspaceWrite(Owner::Other), Some("x")),
            Decision::Forbidden(Forbidden::Role)
        );
    }

    #[test]
    fn a_missing_scope_forbids_whatever_the_role() {
        for role in Role::ALL {
            for op in ALL_OPS {
                if !role_permits(role, op) {
                    continue;
                }
                let scopes: Vec<Scope> = Scope::ALL
                    .into_iter()
                    .filter(|s| *s != op.scope())
                    .collect();
                let d = decide(&p(role, &scopes), op, Some("ws1"));
                assert_eq!(
                    d,
                    Decision::Forbidden(Forbidden::Scope(op.scope())),
                    "{role} {op:?}"
                );
            }
        }
    }

    #[test]
    fn workspace_restricted_tokens_see_only_their_workspaces() {
        let mut who = p(Role::Owner, &Scope::ALL);
        who.workspaces = Some(["ws1".to_string()].into());
        assert_eq!(
            decide(&who, Op::WorkspaceExec(Owner::Own), Some("ws1")),
            Decision::Allow
        );
        assert_eq!(
            decide(&who, Op::WorkspaceExec(Owner::Own), Some("ws2")),
            Decision::Hidden
        );
        assert_eq!(
            decide(&who, Op::WorkspaceRead(Owner::Own), None),
            Decision::Allow
        );
        for op in [Op::TemplateWrite, Op::UserAdmin, Op::AuditRead] {
            assert!(matches!(decide(&who, op, None), Decision::Forbidden(_)));
        }
    }

    #[test]
    fn role_default_scopes_cover_exactly_what_the_role_may_do() {
        for role in Role::ALL {
            let scopes = role.scopes();
            for op in ALL_OPS {
                if role_permits(role, op) {
                    assert!(scopes.has(op.scope()), "{role} {op:?}");
                }
            }
        }
    }

    #[test]
    fn strings_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("root".parse::<Role>().is_err());
        assert!("workspace:delete".parse::<Scope>().is_err());
    }
}
