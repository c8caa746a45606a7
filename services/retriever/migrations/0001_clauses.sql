-- Labelled clauses with their embeddings. {dimension} is the embedder's.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS lextral_clauses (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    split        text        NOT NULL,
    label        text        NOT NULL,
    text         text        NOT NULL,
    -- sha256(split || 0x00 || text): re-ingesting the same clause is a no-op.
    content_hash bytea       NOT NULL UNIQUE,
    embedding    vector({dimension}) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS lextral_clauses_split_label ON lextral_clauses (split, label);
