-- 007 popularity_metrics: daily per-item aggregates (trending, popularity fallback, CTR).
-- Source: 004 (popularity_metrics). movies.views / like_count from 004 are not kept as hot
-- counters on items; they are these daily rows (summed when needed). See docs/schema.md.

CREATE TABLE popularity_metrics (
    item_id                     varchar(128) NOT NULL,
    date                        date NOT NULL,
    view_count                  integer NOT NULL DEFAULT 0 CHECK (view_count >= 0),
    click_count                 integer NOT NULL DEFAULT 0 CHECK (click_count >= 0),
    play_count                  integer NOT NULL DEFAULT 0 CHECK (play_count >= 0),
    like_count                  integer NOT NULL DEFAULT 0 CHECK (like_count >= 0),
    rating_count                integer NOT NULL DEFAULT 0 CHECK (rating_count >= 0),
    average_rating              real CHECK (average_rating BETWEEN 1 AND 5),
    recommendation_count        integer NOT NULL DEFAULT 0 CHECK (recommendation_count >= 0),  -- times served
    recommendation_click_count  integer NOT NULL DEFAULT 0 CHECK (recommendation_click_count >= 0),
    ctr                         double precision GENERATED ALWAYS AS (
                                    CASE WHEN recommendation_count > 0
                                         THEN recommendation_click_count::double precision / recommendation_count
                                    END) STORED,
    popularity_score            double precision,
    computed_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, date),
    CONSTRAINT popularity_metrics_rating_needs_count CHECK (average_rating IS NULL OR rating_count > 0)
);
CREATE INDEX popularity_metrics_date_score_idx ON popularity_metrics (date, popularity_score DESC NULLS LAST);
