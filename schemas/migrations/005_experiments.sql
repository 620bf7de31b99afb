-- 005 experiments (A/B tests) and their variants.
-- Sources: 002 (experiments, model_variants: traffic_percent, experiment_status enum), 004
-- (recommendation_experiments: target metric, sample size, confidence, statistical results).
-- 004's fixed algorithm_a/algorithm_b pair is generalised to N variants with a config each.

CREATE TABLE experiments (
    experiment_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    varchar(100) NOT NULL UNIQUE,
    description             text,
    status                  varchar(16) NOT NULL DEFAULT 'draft'
                                CHECK (status IN ('draft', 'running', 'analyzing', 'concluded')),
    target_metric           varchar(50) NOT NULL DEFAULT 'ctr',   -- ctr, engagement, retention, rating, ...
    minimum_sample_size     integer NOT NULL DEFAULT 1000 CHECK (minimum_sample_size > 0),
    confidence_level        real NOT NULL DEFAULT 0.95 CHECK (confidence_level BETWEEN 0.8 AND 0.99),
    config                  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),  -- e.g. assignment salt
    planned_end_at          timestamptz,
    started_at              timestamptz,
    ended_at                timestamptz,
    -- results (written by the analysis)
    winner_variant          varchar(64),
    p_value                 double precision CHECK (p_value BETWEEN 0 AND 1),
    effect_size             double precision,
    statistical_significance double precision,
    results                 jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(results) = 'object'),
    created_by              varchar(128),        -- an operator, not an end user
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT experiments_end_after_start CHECK (ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX experiments_status_idx ON experiments (status);
CREATE TRIGGER experiments_set_updated_at BEFORE UPDATE ON experiments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE experiment_variants (
    variant_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id   bigint NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    name            varchar(64) NOT NULL,
    is_control      boolean NOT NULL DEFAULT false,
    traffic_percent numeric(5, 2) NOT NULL CHECK (traffic_percent > 0 AND traffic_percent <= 100),
    -- what the variant serves: {"blend": {"realtime": 0.5, "batch": 0.3, "popular": 0.2},
    --                           "model_version": "...", "diversity": 0.3}
    config          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    model_id        bigint REFERENCES models (model_id) ON DELETE SET NULL,
    -- results
    impressions     bigint NOT NULL DEFAULT 0 CHECK (impressions >= 0),
    clicks          bigint NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    conversions     bigint NOT NULL DEFAULT 0 CHECK (conversions >= 0),
    ctr             double precision GENERATED ALWAYS AS
                        (CASE WHEN impressions > 0 THEN clicks::double precision / impressions END) STORED,
    metrics         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    UNIQUE (experiment_id, name)
);
CREATE UNIQUE INDEX experiment_variants_one_control ON experiment_variants (experiment_id) WHERE is_control;

-- Legal status moves: draft -> running -> analyzing -> concluded, plus analyzing -> running
-- (collect more data) and draft|running -> concluded (cancelled / stopped early).
CREATE TABLE experiment_status_transitions (
    from_status varchar(16) NOT NULL,
    to_status   varchar(16) NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
INSERT INTO experiment_status_transitions VALUES
    ('draft', 'running'), ('draft', 'concluded'),
    ('running', 'analyzing'), ('running', 'concluded'),
    ('analyzing', 'running'), ('analyzing', 'concluded');

CREATE FUNCTION experiments_enforce_lifecycle() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_total numeric;
    v_count integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'draft' THEN
            RAISE EXCEPTION 'a new experiment starts as draft, not % (experiment %)', NEW.status, NEW.name
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM experiment_status_transitions t
                    WHERE t.from_status = OLD.status AND t.to_status = NEW.status) THEN
        RAISE EXCEPTION 'illegal experiment status transition % -> % (experiment %)', OLD.status, NEW.status, NEW.name
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status = 'running' THEN
        SELECT coalesce(sum(v.traffic_percent), 0), count(*) INTO v_total, v_count
          FROM experiment_variants v WHERE v.experiment_id = NEW.experiment_id;
        IF v_count < 2 OR v_total <> 100 THEN
            RAISE EXCEPTION 'experiment % cannot run: needs >= 2 variants whose traffic_percent sums to 100 (has % variants, % %%)',
                NEW.name, v_count, v_total
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.started_at := coalesce(NEW.started_at, now());
    ELSIF NEW.status = 'concluded' THEN
        NEW.ended_at := coalesce(NEW.ended_at, now());
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER experiments_lifecycle BEFORE INSERT OR UPDATE OF status ON experiments
    FOR EACH ROW EXECUTE FUNCTION experiments_enforce_lifecycle();

-- Allocation (name, traffic, config, model, control flag) is frozen once the experiment left
-- draft: changing it mid-test would mix two designs in one result. Result columns stay writable.
CREATE FUNCTION experiment_variants_freeze() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_exp_id  bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.experiment_id ELSE NEW.experiment_id END;
    v_status  varchar;
    v_total   numeric;
BEGIN
    SELECT e.status INTO v_status FROM experiments e WHERE e.experiment_id = v_exp_id;
    IF NOT FOUND THEN   -- cascading delete of the experiment itself
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF v_status <> 'draft' AND (
           TG_OP IN ('INSERT', 'DELETE')
        OR (NEW.name, NEW.is_control, NEW.traffic_percent, NEW.config, NEW.model_id, NEW.experiment_id)
           IS DISTINCT FROM (OLD.name, OLD.is_control, OLD.traffic_percent, OLD.config, OLD.model_id, OLD.experiment_id)
    ) THEN
        RAISE EXCEPTION 'experiment % is %: its variants can only change while it is draft', v_exp_id, v_status
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT coalesce(sum(v.traffic_percent), 0) INTO v_total FROM experiment_variants v
         WHERE v.experiment_id = NEW.experiment_id AND v.variant_id IS DISTINCT FROM NEW.variant_id;
        IF v_total + NEW.traffic_percent > 100 THEN
            RAISE EXCEPTION 'variants of experiment % would get % %% of traffic (max 100)',
                NEW.experiment_id, v_total + NEW.traffic_percent
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER experiment_variants_freeze BEFORE INSERT OR UPDATE OR DELETE ON experiment_variants
    FOR EACH ROW EXECUTE FUNCTION experiment_variants_freeze();
