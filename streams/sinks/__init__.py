"""Where the speed layer writes: Postgres (:mod:`.postgres`) and the Redis cache (:mod:`.redis`)."""
