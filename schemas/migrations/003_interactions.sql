-- 003 rt_user_interactions: the speed layer's hot window of interaction events (48 h).
-- Sources: 000 (rt_user_interactions, 24-48 h retention), 001 (archive after 48 h), 002
-- (interactions: value, context), 004 (user_movie_interactions: source, more event types), and
-- the event contract schemas/events.py (InteractionEvent v1), which wins on every detail.
--
-- Range-partitioned by occurred_at into hourly partitions named rt_user_interactions_pYYYYMMDDHH
-- (UTC), plus a DEFAULT partition that catches events outside the prepared window so an insert
-- never fails. rt_interactions_maintain() creates upcoming partitions and drops expired ones, but
-- only below the archive watermark the lake advances with advance_archive_watermark().

CREATE TABLE rt_user_interactions (
    event_id            uuid NOT NULL,
    user_id             varchar(128) NOT NULL CHECK (user_id <> ''),
    item_id             varchar(128) NOT NULL CHECK (item_id <> ''),
    event_type          varchar(16) NOT NULL CHECK (event_type IN (
                            'view', 'click', 'play', 'rate', 'like', 'dislike', 'favorite',
                            'watchlist', 'purchase', 'save', 'share')),
    rating              real CHECK (rating BETWEEN 1 AND 5 AND rating * 2 = round(rating * 2)),
    value               double precision,
    watch_duration_sec  real CHECK (watch_duration_sec >= 0),
    session_id          varchar(128),
    source              varchar(16),
    rec_id              varchar(128),
    position            integer CHECK (position BETWEEN 0 AND 10000),   -- 0-based, as in the contract
    context             jsonb CHECK (context IS NULL OR jsonb_typeof(context) = 'object'),
    occurred_at         timestamptz NOT NULL,
    received_at         timestamptz DEFAULT now(),
    CONSTRAINT rt_user_interactions_rating_iff_rate CHECK ((event_type = 'rate') = (rating IS NOT NULL)),
    CONSTRAINT rt_user_interactions_rec_with_position CHECK ((rec_id IS NULL) = (position IS NULL)),
    -- idempotent inserts: INSERT ... ON CONFLICT (event_id, occurred_at) DO NOTHING. A retried
    -- event has the same occurred_at, so it always lands in the same partition as the original.
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX rt_user_interactions_user_idx ON rt_user_interactions (user_id, occurred_at DESC);
CREATE INDEX rt_user_interactions_item_idx ON rt_user_interactions (item_id, occurred_at DESC);

CREATE TABLE rt_user_interactions_default PARTITION OF rt_user_interactions DEFAULT;
-- Creating a partition checks the default partition for rows in the new range; keep that cheap.
CREATE INDEX rt_user_interactions_default_time_idx ON rt_user_interactions_default (occurred_at);

-- How far each hot table is safely in the lake: every row with occurred_at < archived_through
-- that will ever be in the table is archived. NULL = nothing archived yet = nothing is purged.
CREATE TABLE archive_watermarks (
    table_name        text PRIMARY KEY,
    archived_through  timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
INSERT INTO archive_watermarks (table_name) VALUES ('rt_user_interactions');

-- The lake calls this after a successful archive run. The watermark only moves forward.
CREATE FUNCTION advance_archive_watermark(p_table text, p_through timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    v_new timestamptz;
BEGIN
    IF p_through IS NULL OR p_through > now() THEN
        RAISE EXCEPTION 'archive watermark for % must be a time not in the future, got %', p_table, p_through
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE archive_watermarks
       SET archived_through = greatest(coalesce(archived_through, '-infinity'), p_through),
           updated_at = now()
     WHERE table_name = p_table
    RETURNING archived_through INTO v_new;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no archive watermark for table % (known: %)', p_table,
            (SELECT string_agg(table_name, ', ') FROM archive_watermarks)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v_new;
END;
$$;

-- Create the hourly partitions covering [p_now - p_retention, p_now + p_ahead] and drop those
-- entirely below min(p_now - p_retention, archived_through). Rows that waited in the DEFAULT
-- partition move into the partition created for their hour. Safe to call concurrently and as
-- often as you like (run it hourly); returns what it did.
CREATE FUNCTION rt_interactions_maintain(
    p_now        timestamptz DEFAULT now(),
    p_ahead      interval    DEFAULT '24 hours',
    p_retention  interval    DEFAULT '48 hours'
)
RETURNS TABLE (action text, partition_name text, range_start timestamptz, range_end timestamptz, moved_rows bigint)
LANGUAGE plpgsql
SET timezone = 'UTC'          -- partition names and bounds are UTC hours, whatever the session says
AS $$
#variable_conflict use_column
DECLARE
    v_watermark  timestamptz;
    v_cutoff     timestamptz;
    v_hour       timestamptz;
    v_name       text;
    v_moved      bigint;
    r            record;
BEGIN
    IF p_ahead < interval '0' OR p_retention < interval '1 hour' THEN
        RAISE EXCEPTION 'rt_interactions_maintain: p_ahead must be >= 0 and p_retention >= 1 hour'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- one maintainer at a time (partition DDL from two sessions would collide)
    PERFORM pg_advisory_xact_lock(7245010, 3);

    SELECT w.archived_through INTO v_watermark
      FROM archive_watermarks w WHERE w.table_name = 'rt_user_interactions';
    -- least() ignores NULLs, so "nothing archived" must be spelled out: drop nothing
    v_cutoff := CASE WHEN v_watermark IS NULL THEN '-infinity'::timestamptz
                     ELSE least(p_now - p_retention, v_watermark) END;

    -- 1. drop expired, archived partitions
    FOR r IN
        SELECT c.relname,
               make_timestamptz(substr(c.relname, 23, 4)::int, substr(c.relname, 27, 2)::int,
                                substr(c.relname, 29, 2)::int, substr(c.relname, 31, 2)::int, 0, 0, 'UTC') AS lo
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'rt_user_interactions'::regclass
           AND c.relname ~ '^rt_user_interactions_p[0-9]{10}$'
         ORDER BY c.relname
    LOOP
        IF r.lo + interval '1 hour' <= v_cutoff THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            action := 'dropped'; partition_name := r.relname;
            range_start := r.lo; range_end := r.lo + interval '1 hour'; moved_rows := NULL;
            RETURN NEXT;
        END IF;
    END LOOP;
    DELETE FROM rt_user_interactions_default d WHERE d.occurred_at < v_cutoff;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    IF v_moved > 0 THEN
        action := 'purged_default'; partition_name := 'rt_user_interactions_default';
        range_start := '-infinity'; range_end := v_cutoff; moved_rows := v_moved;
        RETURN NEXT;
    END IF;

    -- 2. create the window's missing partitions
    v_hour := date_trunc('hour', p_now - p_retention);
    WHILE v_hour <= date_trunc('hour', p_now + p_ahead) LOOP
        v_name := 'rt_user_interactions_p' || to_char(v_hour, 'YYYYMMDDHH24');
        IF v_hour + interval '1 hour' > v_cutoff AND to_regclass(v_name) IS NULL THEN
            IF EXISTS (SELECT 1 FROM rt_user_interactions_default d
                        WHERE d.occurred_at >= v_hour AND d.occurred_at < v_hour + interval '1 hour') THEN
                -- move the waiting rows out of DEFAULT, then attach (ATTACH re-checks DEFAULT)
                EXECUTE format('CREATE TABLE %I (LIKE rt_user_interactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                               v_name);
                EXECUTE format('WITH moved AS (DELETE FROM rt_user_interactions_default '
                               'WHERE occurred_at >= %L AND occurred_at < %L RETURNING *) '
                               'INSERT INTO %I SELECT * FROM moved',
                               v_hour, v_hour + interval '1 hour', v_name);
                GET DIAGNOSTICS v_moved = ROW_COUNT;
                EXECUTE format('ALTER TABLE rt_user_interactions ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               v_name, v_hour, v_hour + interval '1 hour');
            ELSE
                v_moved := 0;
                EXECUTE format('CREATE TABLE %I PARTITION OF rt_user_interactions FOR VALUES FROM (%L) TO (%L)',
                               v_name, v_hour, v_hour + interval '1 hour');
            END IF;
            action := 'created'; partition_name := v_name;
            range_start := v_hour; range_end := v_hour + interval '1 hour'; moved_rows := v_moved;
            RETURN NEXT;
        END IF;
        v_hour := v_hour + interval '1 hour';
    END LOOP;
END;
$$;

-- prepare the current window right away
SELECT count(*) FROM rt_interactions_maintain();
