-- 012 rt_user_interactions by day instead of by hour.
-- Why: lookups by user (serving's profile statement, the speed layer's recent items) are not keyed
-- by time, so each visits every partition. 48 h back and 24 h ahead by the hour is 74 index scans
-- per lookup: serving's profile statement cost 0.27 ms of Postgres CPU, 0.13 ms against one
-- partition. By day it is 4. The price: a partition is dropped when its whole day is past the
-- window (and archived), so rows stay up to a day longer than rt_retention_hours.
-- Partitions are named rt_user_interactions_pYYYYMMDD (UTC days). Existing hourly partitions are
-- merged into daily ones below (their rows move, with waiting DEFAULT rows of the same day).

-- Create the daily partitions covering [p_now - p_retention, p_now + p_ahead] and drop those
-- entirely below min(p_now - p_retention, archived_through). Rows that waited in the DEFAULT
-- partition move into the partition created for their day. Safe to call concurrently and as
-- often as you like (run it hourly); returns what it did.
CREATE OR REPLACE FUNCTION rt_interactions_maintain(
    p_now        timestamptz DEFAULT now(),
    p_ahead      interval    DEFAULT '24 hours',
    p_retention  interval    DEFAULT '48 hours'
)
RETURNS TABLE (action text, partition_name text, range_start timestamptz, range_end timestamptz, moved_rows bigint)
LANGUAGE plpgsql
SET timezone = 'UTC'          -- partition names and bounds are UTC days, whatever the session says
AS $$
#variable_conflict use_column
DECLARE
    v_watermark  timestamptz;
    v_cutoff     timestamptz;
    v_day        timestamptz;
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
                                substr(c.relname, 29, 2)::int, 0, 0, 0, 'UTC') AS lo
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'rt_user_interactions'::regclass
           AND c.relname ~ '^rt_user_interactions_p[0-9]{8}$'
         ORDER BY c.relname
    LOOP
        IF r.lo + interval '1 day' <= v_cutoff THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            action := 'dropped'; partition_name := r.relname;
            range_start := r.lo; range_end := r.lo + interval '1 day'; moved_rows := NULL;
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
    v_day := date_trunc('day', p_now - p_retention);
    WHILE v_day <= date_trunc('day', p_now + p_ahead) LOOP
        v_name := 'rt_user_interactions_p' || to_char(v_day, 'YYYYMMDD');
        IF v_day + interval '1 day' > v_cutoff AND to_regclass(v_name) IS NULL THEN
            v_moved := rt_interactions_attach_day(v_day, ARRAY[]::text[]);
            action := 'created'; partition_name := v_name;
            range_start := v_day; range_end := v_day + interval '1 day'; moved_rows := v_moved;
            RETURN NEXT;
        END IF;
        v_day := v_day + interval '1 day';
    END LOOP;
END;
$$;

-- The daily partition of p_day (UTC midnight), filled with the day's rows waiting in DEFAULT and
-- in the detached tables p_from (which are dropped); returns how many rows moved in. The table is
-- filled before ATTACH, which re-checks DEFAULT, so an insert never meets a missing partition.
CREATE FUNCTION rt_interactions_attach_day(p_day timestamptz, p_from text[])
RETURNS bigint
LANGUAGE plpgsql
SET timezone = 'UTC'
AS $$
DECLARE
    v_name   text := 'rt_user_interactions_p' || to_char(p_day, 'YYYYMMDD');
    v_moved  bigint := 0;
    v_n      bigint;
    v_from   text;
BEGIN
    IF p_day <> date_trunc('day', p_day) THEN
        RAISE EXCEPTION 'rt_interactions_attach_day: % is not a UTC midnight', p_day
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM rt_user_interactions_default d
                    WHERE d.occurred_at >= p_day AND d.occurred_at < p_day + interval '1 day')
       AND cardinality(p_from) = 0 THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF rt_user_interactions FOR VALUES FROM (%L) TO (%L)',
                       v_name, p_day, p_day + interval '1 day');
        RETURN 0;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE rt_user_interactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   v_name);
    EXECUTE format('WITH moved AS (DELETE FROM rt_user_interactions_default '
                   'WHERE occurred_at >= %L AND occurred_at < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved',
                   p_day, p_day + interval '1 day', v_name);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_moved := v_n;
    FOREACH v_from IN ARRAY p_from LOOP
        EXECUTE format('INSERT INTO %I SELECT * FROM %I', v_name, v_from);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_moved := v_moved + v_n;
        EXECUTE format('DROP TABLE %I', v_from);
    END LOOP;
    EXECUTE format('ALTER TABLE rt_user_interactions ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   v_name, p_day, p_day + interval '1 day');
    RETURN v_moved;
END;
$$;

-- Merge the hourly partitions 003 made into daily ones: detach a day's hours, then build its
-- daily partition from them (and from DEFAULT).
DO $$
DECLARE
    d  record;
    h  text;
BEGIN
    PERFORM pg_advisory_xact_lock(7245010, 3);
    FOR d IN
        SELECT make_timestamptz(substr(c.relname, 23, 4)::int, substr(c.relname, 27, 2)::int,
                                substr(c.relname, 29, 2)::int, 0, 0, 0, 'UTC') AS day,
               array_agg(c.relname::text ORDER BY c.relname) AS hours
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'rt_user_interactions'::regclass
           AND c.relname ~ '^rt_user_interactions_p[0-9]{10}$'
         GROUP BY 1
         ORDER BY 1
    LOOP
        FOREACH h IN ARRAY d.hours LOOP
            EXECUTE format('ALTER TABLE rt_user_interactions DETACH PARTITION %I', h);
        END LOOP;
        PERFORM rt_interactions_attach_day(d.day, d.hours);
    END LOOP;
END;
$$;

-- prepare the current window right away
SELECT count(*) FROM rt_interactions_maintain();
