"""A/B experiments: lifecycle (``store``), assignment (``assignment``, ``running``), the statistics
(``stats``, pure) and the analysis of served logs + feedback (``analysis``). See docs/experiments.md."""
