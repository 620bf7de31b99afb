"""Batch layer: the daily Spark pipeline (validate, train ALS, evaluate, gate, register, top-50)."""
