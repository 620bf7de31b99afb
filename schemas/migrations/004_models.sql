-- 004 model registry: models (lifecycle-enforced) and model_performance_logs.
-- Sources: 002 (ml_models: algorithm, version, hyperparameters, metrics, status enum),
-- 000/001/003 (model_performance_logs: RMSE, coverage, users trained; MinIO model snapshots).

CREATE TABLE models (
    model_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    algorithm           varchar(50)  NOT NULL,     -- als, content, popularity, ...
    version             varchar(100) NOT NULL,
    status              varchar(16)  NOT NULL DEFAULT 'training' CHECK (status IN (
                            'training', 'registered', 'staging', 'production', 'deprecated')),
    hyperparameters     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(hyperparameters) = 'object'),
    metrics             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    snapshot_uri        text,                      -- s3://lambdarec-models/... (object store)
    trained_at          timestamptz,
    registered_at       timestamptz,
    promoted_at         timestamptz,
    deprecated_at       timestamptz,
    status_changed_at   timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (algorithm, version),
    -- past training, a model is an artifact: it must say where its snapshot is
    CONSTRAINT models_snapshot_after_training
        CHECK (status IN ('training', 'deprecated') OR snapshot_uri IS NOT NULL)
);
-- at most one production model per algorithm
CREATE UNIQUE INDEX models_one_production_per_algorithm ON models (algorithm) WHERE status = 'production';
CREATE INDEX models_status_idx ON models (algorithm, status);

-- The legal lifecycle moves, as data (documented in docs/schema.md):
--   training -> registered -> staging -> production -> deprecated
--   plus: training -> deprecated (abandoned), registered|staging -> deprecated (rejected),
--   staging -> registered (sent back), deprecated -> staging (re-qualify an old model to roll back)
CREATE TABLE model_status_transitions (
    from_status varchar(16) NOT NULL,
    to_status   varchar(16) NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
INSERT INTO model_status_transitions VALUES
    ('training', 'registered'), ('training', 'deprecated'),
    ('registered', 'staging'), ('registered', 'deprecated'),
    ('staging', 'production'), ('staging', 'registered'), ('staging', 'deprecated'),
    ('production', 'deprecated'),
    ('deprecated', 'staging');

CREATE FUNCTION models_enforce_lifecycle() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status NOT IN ('training', 'registered') THEN
            RAISE EXCEPTION 'a new model starts as training or registered, not % (model % %)',
                NEW.status, NEW.algorithm, NEW.version
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT EXISTS (SELECT 1 FROM model_status_transitions t
                        WHERE t.from_status = OLD.status AND t.to_status = NEW.status) THEN
            RAISE EXCEPTION 'illegal model status transition % -> % (model % %); allowed from %: %',
                OLD.status, NEW.status, NEW.algorithm, NEW.version, OLD.status,
                (SELECT coalesce(string_agg(t.to_status, ', ' ORDER BY t.to_status), 'nothing')
                   FROM model_status_transitions t WHERE t.from_status = OLD.status)
                USING ERRCODE = 'check_violation';
        END IF;
    ELSE
        RETURN NEW;
    END IF;
    NEW.status_changed_at := now();
    CASE NEW.status
        WHEN 'registered' THEN NEW.registered_at := coalesce(NEW.registered_at, now());
        WHEN 'production' THEN NEW.promoted_at := now();
        WHEN 'deprecated' THEN NEW.deprecated_at := now();
        ELSE NULL;
    END CASE;
    RETURN NEW;
END;
$$;

CREATE TRIGGER models_lifecycle BEFORE INSERT OR UPDATE OF status ON models
    FOR EACH ROW EXECUTE FUNCTION models_enforce_lifecycle();

-- Promote a staging model to production in one transaction, deprecating the algorithm's current
-- production model. Returns the model_id that was deprecated (NULL if there was none).
CREATE FUNCTION promote_model(p_model_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_algorithm varchar;
    v_status    varchar;
    v_previous  bigint;
BEGIN
    SELECT algorithm, status INTO v_algorithm, v_status FROM models WHERE model_id = p_model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no model with model_id %', p_model_id USING ERRCODE = 'no_data_found';
    END IF;
    -- serialize promotions per algorithm (each statement below then sees the other's commit)
    PERFORM pg_advisory_xact_lock(7245010, hashtext(v_algorithm));
    SELECT status INTO v_status FROM models WHERE model_id = p_model_id FOR UPDATE;
    IF v_status <> 'staging' THEN
        RAISE EXCEPTION 'model % is %, only a staging model can be promoted', p_model_id, v_status
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE models SET status = 'deprecated'
     WHERE algorithm = v_algorithm AND status = 'production'
    RETURNING model_id INTO v_previous;
    UPDATE models SET status = 'production' WHERE model_id = p_model_id;
    RETURN v_previous;
END;
$$;

CREATE TABLE model_performance_logs (
    log_id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id                bigint NOT NULL REFERENCES models (model_id) ON DELETE CASCADE,
    phase                   varchar(16) NOT NULL DEFAULT 'offline'
                                CHECK (phase IN ('training', 'validation', 'offline', 'online')),
    k                       integer CHECK (k > 0),               -- cut-off of the @k metrics
    rmse                    double precision CHECK (rmse >= 0),
    mae                     double precision CHECK (mae >= 0),
    precision_at_k          double precision CHECK (precision_at_k BETWEEN 0 AND 1),
    recall_at_k             double precision CHECK (recall_at_k BETWEEN 0 AND 1),
    ndcg_at_k               double precision CHECK (ndcg_at_k BETWEEN 0 AND 1),
    map_at_k                double precision CHECK (map_at_k BETWEEN 0 AND 1),
    coverage                double precision CHECK (coverage BETWEEN 0 AND 1),   -- share of users covered
    catalog_coverage        double precision CHECK (catalog_coverage BETWEEN 0 AND 1),
    total_users_trained     integer CHECK (total_users_trained >= 0),
    total_items_trained     integer CHECK (total_items_trained >= 0),
    training_duration_sec   double precision CHECK (training_duration_sec >= 0),
    metrics                 jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    logged_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_performance_logs_model_idx ON model_performance_logs (model_id, logged_at DESC);
