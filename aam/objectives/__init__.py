"""What training optimises and how predictions are scored: losses (``losses``), streaming metrics
(``metrics``), the metric names and their direction (``metric_names``, torch-free), scores of prediction
tables (``scoring``) and the target-loss registry (``registries``)."""
