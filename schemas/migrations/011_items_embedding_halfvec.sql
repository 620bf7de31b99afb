-- 011 a half-precision HNSW index for the serving ANN (the taste-vector candidates).
-- Why: the serving query (serving/candidates.py ann_by_vector) ranks by
-- embedding::halfvec <=> taste::halfvec. Half the bytes per vector: the graph and the vectors
-- an HNSW search touches are half the pages (the 768-d index on 60k items: 234 MB as vector,
-- about half as halfvec), so the search fits in shared buffers and reads less per hop; the
-- cosine of 16-bit components differs from the 32-bit one by ~1e-3, well below what separates
-- the neighbours a recommendation list keeps. The full-precision index (001) stays: item-item
-- similarity, the demo and the embedding pipeline's checks use it.
SET LOCAL maintenance_work_mem = '512MB';
CREATE INDEX IF NOT EXISTS items_embedding_half_hnsw_idx ON items
    USING hnsw ((embedding::halfvec({{embedding_dim}})) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64);
