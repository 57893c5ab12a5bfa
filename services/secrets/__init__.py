"""secrets: versioned, encrypted key/value secrets by path, scoped to org / project / environment.

Modelled on HashiCorp Vault's KV v2: check-and-set writes, soft delete, undelete, destroy, metadata,
every value read audited, values never logged.
"""
