"""The gateway as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Access, Dependency, Descriptor, Permission, admin, read

descriptor = Descriptor(
    name="gateway",
    port=3000,
    title="API gateway",
    package="coder.gateway",
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS}),
    # The actions gateway/roles.py names and its routes check (`actor.require(...)`).
    permissions={
        "members.read": read("List the organization's members and its roles"),
        "members.write": admin("Change members' roles and remove members"),
        "owners.write": Permission(
            Access.OWNER, "Grant, take away or invite with the owner role; remove an owner"
        ),
        "invitations.write": admin("List, send and revoke invitations into the organization"),
        "teams.write": admin("Create, change and delete teams and change their members"),
        "roles.write": admin("Create, change and delete the organization's custom roles"),
        "org.write": admin("Change the organization's name and settings"),
        "audit.read": admin("Read the organization's audit log"),
        "account.write": Permission(
            Access.SELF, "Change your profile and password; create, join or leave an organization"
        ),
        "tokens.read": Permission(Access.SELF, "List your personal access tokens"),
        "tokens.write": Permission(
            Access.SELF, "Create (never broader than the creating credential) and revoke your personal tokens"
        ),
        "sessions.write": Permission(Access.SELF, "End all your sessions at once (logout everywhere)"),
    },
    # The edge (middleware.py) in front of every route: rate limits, and fail-closed Redis checks;
    # documented on every operation.
    problems=frozenset({429, 503}),
    generated_secrets={
        "GATEWAY_KEY_ENCRYPTION_KEY": "Encrypts the token-signing keys at rest (32 random bytes, base64)",
    },
)
