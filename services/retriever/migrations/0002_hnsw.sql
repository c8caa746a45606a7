-- Approximate nearest-neighbour index for cosine similarity.
CREATE INDEX IF NOT EXISTS lextral_clauses_embedding_hnsw
    ON lextral_clauses USING hnsw (embedding vector_cosine_ops)
    WITH (m = {hnsw_m}, ef_construction = {hnsw_ef_construction});
