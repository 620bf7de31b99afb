-- 002 user_profiles: taste vectors, counters, preferences and consent of each user.
-- Sources: 000 (user_profiles), 002 (users.demographics, preferences), 004 (users: the
-- recommendation preference, onboarding and privacy fields). No credentials or contact data:
-- authentication belongs to the client application (see docs/schema.md).

CREATE TABLE user_profiles (
    user_id                 varchar(128) PRIMARY KEY CHECK (user_id <> ''),
    -- speed layer: running content-taste vector in the item embedding space
    preference_vector       vector({{embedding_dim}}),
    preference_updated_at   timestamptz,
    -- batch layer: ALS user factors; the rank is a hyper-parameter, so no fixed dimension
    als_factors             vector,
    als_model_version       varchar(100),
    -- counters
    total_interactions      bigint NOT NULL DEFAULT 0 CHECK (total_interactions >= 0),
    last_interaction_at     timestamptz,
    -- preferences
    favorite_genres         jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(favorite_genres) = 'array'),
    algorithm_preference    varchar(50),
    diversity_preference    real NOT NULL DEFAULT 0.5 CHECK (diversity_preference BETWEEN 0 AND 1),
    novelty_preference      real NOT NULL DEFAULT 0.5 CHECK (novelty_preference BETWEEN 0 AND 1),
    content_rating_preference varchar(10),
    preferred_decade        smallint CHECK (preferred_decade % 10 = 0 AND preferred_decade BETWEEN 1880 AND 2200),
    demographics            jsonb CHECK (demographics IS NULL OR jsonb_typeof(demographics) = 'object'),
    -- onboarding
    onboarding_completed    boolean NOT NULL DEFAULT false,
    onboarding_completed_at timestamptz,
    cold_start_preferences_collected boolean NOT NULL DEFAULT false,
    -- consent (demographics may only be used with allow_demographic_targeting)
    allow_demographic_targeting boolean NOT NULL DEFAULT true,
    data_usage_consent      boolean NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_profiles_onboarding_time
        CHECK (onboarding_completed OR onboarding_completed_at IS NULL)
);

CREATE INDEX user_profiles_last_interaction_idx ON user_profiles (last_interaction_at DESC);

CREATE TRIGGER user_profiles_set_updated_at BEFORE UPDATE ON user_profiles
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
