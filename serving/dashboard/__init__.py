"""The operator dashboard served by the API (``/dashboard``): jinja2 pages with plotly charts.

Data comes from Postgres (served logs, feedback, models, experiments, the hot interaction window),
from Kafka offsets (consumer lag, dead letters) and from Prometheus metrics (this process's, and
the stream worker's ``/metrics`` when it is reachable). plotly.js is served from the installed
package (``/dashboard/static/plotly.min.js``): no CDN, the dashboard works offline.
"""
