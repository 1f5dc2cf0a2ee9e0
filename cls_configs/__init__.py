"""Classification config files (`target-ssl-train-cls --config NAME.py`), composed by import."""
