-- A change feed for retrievers that search from an in-memory mirror
-- (--pg-search codes): every inserted or updated row carries a new version,
-- every deleted id is logged with one, and a TRUNCATE logs a NULL id. The
-- triggers take one transaction-level lock per writing transaction, so
-- versions become visible in the order they were drawn: a replica that has
-- seen version v has seen every change up to v, whoever wrote it (the
-- retriever, psql or any other tool).
CREATE SEQUENCE IF NOT EXISTS lextral_clause_version;
-- Rows that exist before this migration keep version 0 (no table rewrite);
-- a mirror's first load reads every row anyway.
ALTER TABLE lextral_clauses ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
ALTER TABLE lextral_clauses ALTER COLUMN version SET DEFAULT nextval('lextral_clause_version');
CREATE INDEX IF NOT EXISTS lextral_clauses_version ON lextral_clauses (version);

CREATE TABLE IF NOT EXISTS lextral_clause_deletions (
    version bigint PRIMARY KEY DEFAULT nextval('lextral_clause_version'),
    -- NULL: the whole table was truncated.
    id      bigint
);

CREATE OR REPLACE FUNCTION lextral_feed_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Held to the end of the transaction: writers draw versions in turn.
    PERFORM pg_advisory_xact_lock(7526835911634298113);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION lextral_feed_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('lextral_clause_version');
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION lextral_feed_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lextral_clause_deletions (id) SELECT id FROM lextral_gone;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION lextral_feed_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lextral_clause_deletions (id) VALUES (NULL);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS lextral_feed_lock ON lextral_clauses;
CREATE TRIGGER lextral_feed_lock
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON lextral_clauses
    FOR EACH STATEMENT EXECUTE FUNCTION lextral_feed_lock();
DROP TRIGGER IF EXISTS lextral_feed_touch ON lextral_clauses;
CREATE TRIGGER lextral_feed_touch
    BEFORE UPDATE ON lextral_clauses
    FOR EACH ROW EXECUTE FUNCTION lextral_feed_touch();
DROP TRIGGER IF EXISTS lextral_feed_deleted ON lextral_clauses;
CREATE TRIGGER lextral_feed_deleted
    AFTER DELETE ON lextral_clauses REFERENCING OLD TABLE AS lextral_gone
    FOR EACH STATEMENT EXECUTE FUNCTION lextral_feed_deleted();
DROP TRIGGER IF EXISTS lextral_feed_truncated ON lextral_clauses;
CREATE TRIGGER lextral_feed_truncated
    AFTER TRUNCATE ON lextral_clauses
    FOR EACH STATEMENT EXECUTE FUNCTION lextral_feed_truncated();
