-- 006 recommendations: the batch view (versioned runs + one active pointer), what was served
-- (recommendation_logs) and how users responded to it (recommendation_feedback).
-- Sources: 000/001/003 (batch_recommendations top-50 jsonb, recommendation_logs,
-- recommendation_feedback), 002 (predictions), 004 (user_recommendations). See docs/schema.md.

-- ---------------------------------------------------------------------------------------------
-- Batch view. Each batch run writes a complete new version into its own LIST partition of
-- batch_recommendations; publish_batch_recommendations() then flips the single "active" pointer
-- in one short transaction, so readers switch from the old full set to the new full set
-- atomically and never see a mix. The previous runs stay for instant rollback
-- (publish an older run again) until pruned.
--
--   SELECT * FROM begin_batch_recommendations('als', 'v42', now() + interval '2 days');  -- run_id
--   INSERT INTO batch_recommendations (run_id, user_id, recommendations) VALUES ...      -- or COPY
--   SELECT publish_batch_recommendations(run_id);
--   SELECT recommendations FROM current_batch_recommendations WHERE user_id = 'u1';
-- ---------------------------------------------------------------------------------------------
CREATE TABLE batch_recommendation_runs (
    run_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    algorithm       varchar(50)  NOT NULL,
    model_version   varchar(100) NOT NULL,
    status          varchar(16)  NOT NULL DEFAULT 'loading'
                        CHECK (status IN ('loading', 'active', 'retired', 'discarded')),
    user_count      integer,
    computed_at     timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,                  -- serving falls back to popularity after this
    activated_at    timestamptz,
    retired_at      timestamptz
);
CREATE UNIQUE INDEX batch_recommendation_runs_one_active ON batch_recommendation_runs ((true))
    WHERE status = 'active';

CREATE TABLE batch_recommendations (
    run_id          bigint NOT NULL,
    user_id         varchar(128) NOT NULL CHECK (user_id <> ''),
    -- top-N (50) as [{"item_id": "...", "score": 0.93}, ...], best first
    recommendations jsonb NOT NULL CHECK (jsonb_typeof(recommendations) = 'array'),
    PRIMARY KEY (run_id, user_id)
) PARTITION BY LIST (run_id);

CREATE VIEW current_batch_recommendations AS
SELECT b.user_id, b.recommendations, r.algorithm, r.model_version, r.computed_at, r.expires_at, b.run_id
  FROM batch_recommendations b
  JOIN batch_recommendation_runs r ON r.run_id = b.run_id
 WHERE b.run_id = (SELECT a.run_id FROM batch_recommendation_runs a WHERE a.status = 'active');

CREATE FUNCTION begin_batch_recommendations(
    p_algorithm text, p_model_version text, p_expires_at timestamptz DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_run_id bigint;
BEGIN
    INSERT INTO batch_recommendation_runs (algorithm, model_version, expires_at)
    VALUES (p_algorithm, p_model_version, p_expires_at)
    RETURNING run_id INTO v_run_id;
    EXECUTE format('CREATE TABLE %I PARTITION OF batch_recommendations FOR VALUES IN (%s)',
                   'batch_recommendations_r' || v_run_id, v_run_id);
    RETURN v_run_id;
END;
$$;

-- Make run p_run_id the active one (a loading run, or a retired one to roll back), retire the
-- previous one, and drop the partitions of all but the p_keep_retired newest retired runs.
-- Returns the number of users in the now-active run.
CREATE FUNCTION publish_batch_recommendations(p_run_id bigint, p_keep_retired integer DEFAULT 2)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_status  varchar;
    v_part    text := 'batch_recommendations_r' || p_run_id;
    v_users   bigint;
    r         record;
BEGIN
    PERFORM pg_advisory_xact_lock(7245010, 4);
    SELECT status INTO v_status FROM batch_recommendation_runs WHERE run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no batch recommendation run %', p_run_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_status NOT IN ('loading', 'retired') THEN
        RAISE EXCEPTION 'batch recommendation run % is %; only a loading or retired run can be published',
            p_run_id, v_status USING ERRCODE = 'check_violation';
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', v_part) INTO v_users;
    IF v_users = 0 THEN
        RAISE EXCEPTION 'batch recommendation run % has no rows; refusing to publish an empty batch view', p_run_id
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE batch_recommendation_runs SET status = 'retired', retired_at = now() WHERE status = 'active';
    UPDATE batch_recommendation_runs
       SET status = 'active', activated_at = now(), retired_at = NULL, user_count = v_users
     WHERE run_id = p_run_id;
    FOR r IN SELECT run_id FROM batch_recommendation_runs
              WHERE status = 'retired' ORDER BY activated_at DESC NULLS LAST, run_id DESC
             OFFSET greatest(p_keep_retired, 0)
    LOOP
        PERFORM discard_batch_recommendations(r.run_id);
    END LOOP;
    RETURN v_users;
END;
$$;

-- Drop a run that is not active (a failed load, or an old retired run).
CREATE FUNCTION discard_batch_recommendations(p_run_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_status varchar;
BEGIN
    SELECT status INTO v_status FROM batch_recommendation_runs WHERE run_id = p_run_id FOR UPDATE;
    IF v_status = 'active' THEN
        RAISE EXCEPTION 'batch recommendation run % is active; publish another run first', p_run_id
            USING ERRCODE = 'check_violation';
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS %I', 'batch_recommendations_r' || p_run_id);
    UPDATE batch_recommendation_runs SET status = 'discarded' WHERE run_id = p_run_id;
END;
$$;

-- ---------------------------------------------------------------------------------------------
-- What we served. rec_id is chosen by the API and travels with the served list to the client,
-- which echoes it (with the 0-based position) on the events it sends about those items.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE recommendation_logs (
    rec_id              varchar(128) PRIMARY KEY CHECK (rec_id <> ''),
    user_id             varchar(128) NOT NULL,
    session_id          varchar(128),
    -- [{"item_id": "...", "score": 0.9, "source": "realtime"}, ...] in served order
    items               jsonb NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    algorithm_source    varchar(32) NOT NULL,     -- realtime | batch | popular | hybrid | cold_start
    model_version       varchar(100),
    experiment_id       bigint REFERENCES experiments (experiment_id) ON DELETE SET NULL,
    variant             varchar(64),
    context             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(context) = 'object'),
    computation_time_ms real CHECK (computation_time_ms >= 0),
    cache_hit           boolean NOT NULL DEFAULT false,
    served_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recommendation_logs_user_idx ON recommendation_logs (user_id, served_at DESC);
CREATE INDEX recommendation_logs_served_idx ON recommendation_logs (served_at);
CREATE INDEX recommendation_logs_experiment_idx ON recommendation_logs (experiment_id, variant)
    WHERE experiment_id IS NOT NULL;

-- How users responded to served lists: one row per interaction event that carries a rec_id.
-- rec_id is deliberately not a foreign key: the API logs served lists asynchronously, so
-- feedback can be written before its log row; joins tolerate the gap.
CREATE TABLE recommendation_feedback (
    feedback_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id            uuid NOT NULL UNIQUE,     -- idempotent: ON CONFLICT (event_id) DO NOTHING
    rec_id              varchar(128) NOT NULL,
    user_id             varchar(128) NOT NULL,
    item_id             varchar(128) NOT NULL,
    position            integer NOT NULL CHECK (position BETWEEN 0 AND 10000),   -- 0-based
    event_type          varchar(16) NOT NULL CHECK (event_type IN (
                            'view', 'click', 'play', 'rate', 'like', 'dislike', 'favorite',
                            'watchlist', 'purchase', 'save', 'share')),
    rating              real CHECK (rating BETWEEN 1 AND 5),
    watch_duration_sec  real CHECK (watch_duration_sec >= 0),
    time_to_event_sec   real,                     -- occurred_at - served_at (may be < 0 under clock skew)
    session_id          varchar(128),
    occurred_at         timestamptz NOT NULL,
    received_at         timestamptz DEFAULT now()
);
CREATE INDEX recommendation_feedback_rec_idx ON recommendation_feedback (rec_id);
CREATE INDEX recommendation_feedback_user_idx ON recommendation_feedback (user_id, occurred_at DESC);
CREATE INDEX recommendation_feedback_item_idx ON recommendation_feedback (item_id, occurred_at DESC);
