"""The lakehouse: Delta tables of everything the pipeline saw, kept by delta-rs (no JVM needed).

One module per table family, each exposing typed read/write functions over the Arrow schemas of
``schemas/lake.py``:

* ``storage``      lake root -> table URIs and delta-rs storage options (the one place)
* ``events``       bronze + silver interactions
* ``served``       served recommendation lists (impressions)
* ``feedback``     the feedback view (interactions that answer a served list)
* ``dead_letters`` records that failed decoding
* ``archiver``     Kafka -> those tables, exactly once (``lambdarec lake archive``)
* ``maintenance``  compaction, VACUUM, schema evolution, status
* ``gold``         daily aggregates (popularity, CTR, model metrics)
* ``retention``    the Postgres hot window purge and lake expiry
* ``gdpr``         export and erase one user across Postgres, Redis and the lake
"""
