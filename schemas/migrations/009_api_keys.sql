-- 009 api_keys: keys of API clients allowed to write (POST /v1/events, PUT preferences).
-- Only a sha256 of the secret is stored; the 12-character prefix (lrk_ + 8) is the lookup key,
-- so a leaked table does not leak usable keys. revoked_at set = key refused.
CREATE TABLE api_keys (
    key_id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix                  varchar(16) NOT NULL UNIQUE,
    key_hash                char(64) NOT NULL CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    name                    varchar(100) NOT NULL,
    scopes                  text[] NOT NULL DEFAULT '{write}',
    rate_limit_per_minute   integer CHECK (rate_limit_per_minute > 0),   -- NULL: serving default
    created_at              timestamptz NOT NULL DEFAULT now(),
    revoked_at              timestamptz
);
