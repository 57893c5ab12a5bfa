"""knowledge: collections of Markdown documents and code sources, indexed for hybrid search
(PostgreSQL full text plus vectors in `embeddings`) with cited snippets (Outline; Tabby's answer engine)."""
