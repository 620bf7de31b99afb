-- 008 GDPR helpers. Every table that holds data about an end user has a user_id column (and an
-- index led by it, or the primary key); these functions find such tables from the catalog, so a
-- table added later is covered without touching them. The lake (Delta) and Redis need their own
-- erasure: see docs/schema.md.

-- Tables (not partitions, not views) of the current schema that have a user_id column.
CREATE FUNCTION gdpr_user_tables() RETURNS SETOF regclass
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
     WHERE n.nspname = current_schema()
       AND c.relkind IN ('r', 'p')
       AND NOT c.relispartition
     ORDER BY c.relname;
$$;

-- Everything we hold about one user, as {"table": [rows...]}.
CREATE FUNCTION gdpr_export_user(p_user_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_table regclass;
    v_rows  jsonb;
    v_out   jsonb := '{}';
BEGIN
    FOR v_table IN SELECT gdpr_user_tables() LOOP
        EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t)), ''[]'') FROM %s t WHERE t.user_id = $1', v_table)
           INTO v_rows USING p_user_id;
        v_out := v_out || jsonb_build_object(v_table::text, v_rows);
    END LOOP;
    RETURN v_out;
END;
$$;

-- Delete everything we hold about one user; returns rows deleted per table.
CREATE FUNCTION gdpr_forget_user(p_user_id text)
RETURNS TABLE (table_name text, deleted_rows bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_table regclass;
    v_count bigint;
BEGIN
    FOR v_table IN SELECT gdpr_user_tables() LOOP
        EXECUTE format('DELETE FROM %s WHERE user_id = $1', v_table) USING p_user_id;
        GET DIAGNOSTICS v_count = ROW_COUNT;
        table_name := v_table::text;
        deleted_rows := v_count;
        RETURN NEXT;
    END LOOP;
END;
$$;
