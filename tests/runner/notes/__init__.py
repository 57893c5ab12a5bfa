"""notes: the throwaway target of tests/runner/test_recipe.py, built by the recipe in
docs/architecture.md ("A new service") and nothing else.

It is registered only while that test runs (one entry in `runner.registry.PACKAGES`); at
`coder.services.notes` it would be a real service. Org-scoped notes: create, list (paginated), get,
update, delete; creating one emits `notes.note.created`.
"""
